//! Prometheus metrics, kept in atomics (no lock on the request path) and rendered as text on
//! the admin port. Per-pool and per-upstream series live in a registry keyed by name, so a
//! reload keeps their counts.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Upper bounds (seconds) of the latency histogram buckets.
const BUCKETS: [f64; 14] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Requests of one pool (or `gateway` for what the gateway answers itself).
#[derive(Default)]
pub struct PoolMetrics {
    /// By status class: 1xx..5xx, and index 0 for "no response" (client gone).
    responses: [AtomicU64; 6],
    buckets: [AtomicU64; BUCKETS.len()],
    duration_micros: AtomicU64,
    count: AtomicU64,
    /// Requests sent again to another upstream.
    pub retries: AtomicU64,
}

impl PoolMetrics {
    pub fn observe(&self, status: u16, elapsed: Duration) {
        let class = usize::from(status / 100).min(5);
        self.responses[class].fetch_add(1, Relaxed);
        let seconds = elapsed.as_secs_f64();
        if let Some(bucket) = BUCKETS.iter().position(|bound| seconds <= *bound) {
            self.buckets[bucket].fetch_add(1, Relaxed);
        }
        self.duration_micros.fetch_add(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX), Relaxed);
        self.count.fetch_add(1, Relaxed);
    }
}

/// Traffic to one upstream address of one pool.
#[derive(Default)]
pub struct UpstreamMetrics {
    /// Requests sent (including attempts that failed to connect).
    pub requests: AtomicU64,
    pub connect_failures: AtomicU64,
    pub health_check_failures: AtomicU64,
}

/// Everything the gateway counts.
#[derive(Default)]
pub struct Metrics {
    pools: Mutex<BTreeMap<String, Arc<PoolMetrics>>>,
    upstreams: Mutex<BTreeMap<(String, String), Arc<UpstreamMetrics>>>,
    pub in_flight: AtomicI64,
    pub reloads_ok: AtomicU64,
    pub reloads_failed: AtomicU64,
}

impl Metrics {
    pub fn pool(&self, pool: &str) -> Arc<PoolMetrics> {
        let mut pools = self.pools.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        pools.entry(pool.to_owned()).or_default().clone()
    }

    pub fn upstream(&self, pool: &str, upstream: &str) -> Arc<UpstreamMetrics> {
        let mut upstreams = self.upstreams.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        upstreams.entry((pool.to_owned(), upstream.to_owned())).or_default().clone()
    }

    /// The Prometheus text format. `health` lists (pool, upstream, healthy) of the live pools.
    pub fn render(&self, health: &[(String, String, bool)]) -> String {
        let mut out = String::with_capacity(4096);
        let pools = self.pools.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let upstreams = self.upstreams.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();

        out.push_str("# HELP gateway_requests_total Requests answered, by pool and status class.\n");
        out.push_str("# TYPE gateway_requests_total counter\n");
        for (pool, m) in &pools {
            for (index, class) in ["none", "1xx", "2xx", "3xx", "4xx", "5xx"].iter().enumerate() {
                let value = m.responses[index].load(Relaxed);
                let _ = writeln!(out, "gateway_requests_total{{pool=\"{pool}\",class=\"{class}\"}} {value}");
            }
        }
        out.push_str("# HELP gateway_request_duration_seconds Time from request to the end of the response.\n");
        out.push_str("# TYPE gateway_request_duration_seconds histogram\n");
        for (pool, m) in &pools {
            let mut cumulative = 0;
            for (index, bound) in BUCKETS.iter().enumerate() {
                cumulative += m.buckets[index].load(Relaxed);
                let _ = writeln!(
                    out,
                    "gateway_request_duration_seconds_bucket{{pool=\"{pool}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            let count = m.count.load(Relaxed);
            let _ = writeln!(out, "gateway_request_duration_seconds_bucket{{pool=\"{pool}\",le=\"+Inf\"}} {count}");
            #[allow(clippy::cast_precision_loss)] // microsecond sums fit f64 for centuries
            let sum = m.duration_micros.load(Relaxed) as f64 / 1e6;
            let _ = writeln!(out, "gateway_request_duration_seconds_sum{{pool=\"{pool}\"}} {sum}");
            let _ = writeln!(out, "gateway_request_duration_seconds_count{{pool=\"{pool}\"}} {count}");
        }
        out.push_str("# HELP gateway_retries_total Requests sent again to another upstream.\n");
        out.push_str("# TYPE gateway_retries_total counter\n");
        for (pool, m) in &pools {
            let _ = writeln!(out, "gateway_retries_total{{pool=\"{pool}\"}} {}", m.retries.load(Relaxed));
        }
        for (name, help, read) in [
            (
                "gateway_upstream_requests_total",
                "Requests sent to an upstream.",
                (|m: &UpstreamMetrics| m.requests.load(Relaxed)) as fn(&UpstreamMetrics) -> u64,
            ),
            ("gateway_upstream_connect_failures_total", "Connections to an upstream that failed.", |m| {
                m.connect_failures.load(Relaxed)
            }),
            ("gateway_upstream_health_check_failures_total", "Failed active health checks.", |m| {
                m.health_check_failures.load(Relaxed)
            }),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for ((pool, upstream), m) in &upstreams {
                let _ = writeln!(out, "{name}{{pool=\"{pool}\",upstream=\"{upstream}\"}} {}", read(m));
            }
        }
        out.push_str("# HELP gateway_upstream_healthy 1 while the upstream takes traffic.\n");
        out.push_str("# TYPE gateway_upstream_healthy gauge\n");
        for (pool, upstream, healthy) in health {
            let _ = writeln!(
                out,
                "gateway_upstream_healthy{{pool=\"{pool}\",upstream=\"{upstream}\"}} {}",
                u8::from(*healthy)
            );
        }
        out.push_str("# HELP gateway_in_flight_requests Requests being served.\n");
        out.push_str("# TYPE gateway_in_flight_requests gauge\n");
        let _ = writeln!(out, "gateway_in_flight_requests {}", self.in_flight.load(Relaxed));
        out.push_str("# HELP gateway_config_reloads_total Configuration reloads, by result.\n");
        out.push_str("# TYPE gateway_config_reloads_total counter\n");
        let _ = writeln!(out, "gateway_config_reloads_total{{result=\"ok\"}} {}", self.reloads_ok.load(Relaxed));
        let _ = writeln!(out, "gateway_config_reloads_total{{result=\"error\"}} {}", self.reloads_failed.load(Relaxed));
        out
    }
}

/// Counts a request as in flight until dropped, whichever way the request ends.
pub struct InFlight(Arc<Metrics>);

impl InFlight {
    pub fn new(metrics: &Arc<Metrics>) -> Self {
        metrics.in_flight.fetch_add(1, Relaxed);
        Self(metrics.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_and_a_cumulative_histogram() {
        let metrics = Metrics::default();
        let pool = metrics.pool("chat-write");
        pool.observe(201, Duration::from_micros(300));
        pool.observe(502, Duration::from_millis(30));
        metrics.upstream("chat-write", "127.0.0.1:1").requests.fetch_add(2, Relaxed);
        let text = metrics.render(&[("chat-write".into(), "127.0.0.1:1".into(), true)]);
        assert!(text.contains("gateway_requests_total{pool=\"chat-write\",class=\"2xx\"} 1"), "{text}");
        assert!(text.contains("gateway_requests_total{pool=\"chat-write\",class=\"5xx\"} 1"));
        assert!(text.contains("gateway_request_duration_seconds_bucket{pool=\"chat-write\",le=\"0.0005\"} 1"));
        assert!(text.contains("gateway_request_duration_seconds_bucket{pool=\"chat-write\",le=\"0.05\"} 2"));
        assert!(text.contains("gateway_request_duration_seconds_count{pool=\"chat-write\"} 2"));
        assert!(text.contains("gateway_upstream_requests_total{pool=\"chat-write\",upstream=\"127.0.0.1:1\"} 2"));
        assert!(text.contains("gateway_upstream_healthy{pool=\"chat-write\",upstream=\"127.0.0.1:1\"} 1"));
    }
}
