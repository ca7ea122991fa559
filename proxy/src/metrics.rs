//! The gateway's Prometheus metrics: one registry per gateway, rendered as text on the admin
//! port. Per-pool and per-upstream series are children of the registry's families, keyed by
//! their labels, so a reload keeps their counts.

use std::sync::Arc;
use std::time::Duration;

use prometheus::core::Collector;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Upper bounds (seconds) of the latency histogram buckets.
const BUCKETS: [f64; 14] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// The `class` label of `gateway_requests_total` by status / 100; "none" when no response went
/// out (the client left).
const CLASSES: [&str; 6] = ["none", "1xx", "2xx", "3xx", "4xx", "5xx"];

/// Requests of one pool (or `gateway` for what the gateway answers itself).
pub struct PoolMetrics {
    /// By status class, as [`CLASSES`].
    responses: [IntCounter; 6],
    duration: Histogram,
    /// Requests sent again to another upstream.
    pub retries: IntCounter,
}

impl PoolMetrics {
    pub fn observe(&self, status: u16, elapsed: Duration) {
        self.responses[usize::from(status / 100).min(5)].inc();
        self.duration.observe(elapsed.as_secs_f64());
    }
}

/// Traffic to one upstream address of one pool.
pub struct UpstreamMetrics {
    /// Requests sent (including attempts that failed to connect).
    pub requests: IntCounter,
    pub connect_failures: IntCounter,
    pub health_check_failures: IntCounter,
}

/// Everything the gateway counts.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    retries: IntCounterVec,
    upstream_requests: IntCounterVec,
    upstream_connect_failures: IntCounterVec,
    upstream_health_check_failures: IntCounterVec,
    /// Set from the live pools at each scrape.
    upstream_healthy: IntGaugeVec,
    pub in_flight: IntGauge,
    pub reloads_ok: IntCounter,
    pub reloads_failed: IntCounter,
    /// What the gateway answers itself.
    own: Arc<PoolMetrics>,
}

impl Default for Metrics {
    fn default() -> Self {
        let registry = Registry::new();
        fn register<M: Collector + Clone + 'static>(registry: &Registry, metric: prometheus::Result<M>) -> M {
            let metric = metric.expect("valid metric");
            registry.register(Box::new(metric.clone())).expect("metric registered once");
            metric
        }
        let counters = |name: &str, help: &str, labels: &[&str]| {
            register(&registry, IntCounterVec::new(Opts::new(name, help), labels))
        };
        let upstream = ["pool", "upstream"];
        let requests =
            counters("gateway_requests_total", "Requests answered, by pool and status class.", &["pool", "class"]);
        let duration = register(
            &registry,
            HistogramVec::new(
                HistogramOpts::new("gateway_request_duration_seconds", "Time from request to the end of the response.")
                    .buckets(BUCKETS.to_vec()),
                &["pool"],
            ),
        );
        let retries = counters("gateway_retries_total", "Requests sent again to another upstream.", &["pool"]);
        let upstream_requests = counters("gateway_upstream_requests_total", "Requests sent to an upstream.", &upstream);
        let upstream_connect_failures =
            counters("gateway_upstream_connect_failures_total", "Connections to an upstream that failed.", &upstream);
        let upstream_health_check_failures =
            counters("gateway_upstream_health_check_failures_total", "Failed active health checks.", &upstream);
        let upstream_healthy = register(
            &registry,
            IntGaugeVec::new(Opts::new("gateway_upstream_healthy", "1 while the upstream takes traffic."), &upstream),
        );
        let in_flight = register(&registry, IntGauge::new("gateway_in_flight_requests", "Requests being served."));
        let reloads = counters("gateway_config_reloads_total", "Configuration reloads, by result.", &["result"]);
        let own = Arc::new(pool_metrics(&requests, &duration, &retries, "gateway"));
        Self {
            reloads_ok: reloads.with_label_values(&["ok"]),
            reloads_failed: reloads.with_label_values(&["error"]),
            registry,
            requests,
            duration,
            retries,
            upstream_requests,
            upstream_connect_failures,
            upstream_health_check_failures,
            upstream_healthy,
            in_flight,
            own,
        }
    }
}

/// The series of `pool`, every one of them created (and so rendered) from the start.
fn pool_metrics(requests: &IntCounterVec, duration: &HistogramVec, retries: &IntCounterVec, pool: &str) -> PoolMetrics {
    PoolMetrics {
        responses: CLASSES.map(|class| requests.with_label_values(&[pool, class])),
        duration: duration.with_label_values(&[pool]),
        retries: retries.with_label_values(&[pool]),
    }
}

impl Metrics {
    pub fn pool(&self, pool: &str) -> Arc<PoolMetrics> {
        Arc::new(pool_metrics(&self.requests, &self.duration, &self.retries, pool))
    }

    /// The requests the gateway answers itself (pool label `gateway`).
    pub fn own(&self) -> &PoolMetrics {
        &self.own
    }

    pub fn upstream(&self, pool: &str, upstream: &str) -> Arc<UpstreamMetrics> {
        let labels = [pool, upstream];
        Arc::new(UpstreamMetrics {
            requests: self.upstream_requests.with_label_values(&labels),
            connect_failures: self.upstream_connect_failures.with_label_values(&labels),
            health_check_failures: self.upstream_health_check_failures.with_label_values(&labels),
        })
    }

    /// The Prometheus text format. `health` lists (pool, upstream, healthy) of the live pools.
    pub fn render(&self, health: &[(String, String, bool)]) -> String {
        self.upstream_healthy.reset();
        for (pool, upstream, healthy) in health {
            self.upstream_healthy.with_label_values(&[pool, upstream]).set(i64::from(*healthy));
        }
        let mut families = self.registry.gather();
        // The crate sorts labels by name; the gateway has always listed `pool` first.
        for family in &mut families {
            for metric in family.mut_metric() {
                metric.mut_label().sort_by_key(|label| label.name() != "pool");
            }
        }
        let mut text = Vec::with_capacity(4096);
        // Only a writer's error fails the encoding, and a Vec does not fail.
        let _ = TextEncoder::new().encode(&families, &mut text);
        String::from_utf8(text).unwrap_or_default()
    }
}

/// Counts a request as in flight until dropped, whichever way the request ends.
pub struct InFlight(IntGauge);

impl InFlight {
    pub fn new(metrics: &Metrics) -> Self {
        metrics.in_flight.inc();
        Self(metrics.in_flight.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
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
        metrics.upstream("chat-write", "127.0.0.1:1").requests.inc_by(2);
        let text = metrics.render(&[("chat-write".into(), "127.0.0.1:1".into(), true)]);
        for line in [
            "# HELP gateway_requests_total Requests answered, by pool and status class.",
            "# TYPE gateway_requests_total counter",
            "gateway_requests_total{pool=\"chat-write\",class=\"2xx\"} 1",
            "gateway_requests_total{pool=\"chat-write\",class=\"5xx\"} 1",
            "gateway_requests_total{pool=\"chat-write\",class=\"none\"} 0",
            "gateway_requests_total{pool=\"gateway\",class=\"4xx\"} 0",
            "# TYPE gateway_request_duration_seconds histogram",
            "gateway_request_duration_seconds_bucket{pool=\"chat-write\",le=\"0.0005\"} 1",
            "gateway_request_duration_seconds_bucket{pool=\"chat-write\",le=\"0.05\"} 2",
            "gateway_request_duration_seconds_bucket{pool=\"chat-write\",le=\"+Inf\"} 2",
            "gateway_request_duration_seconds_count{pool=\"chat-write\"} 2",
            "gateway_retries_total{pool=\"chat-write\"} 0",
            "gateway_upstream_requests_total{pool=\"chat-write\",upstream=\"127.0.0.1:1\"} 2",
            "gateway_upstream_connect_failures_total{pool=\"chat-write\",upstream=\"127.0.0.1:1\"} 0",
            "# TYPE gateway_upstream_healthy gauge",
            "gateway_upstream_healthy{pool=\"chat-write\",upstream=\"127.0.0.1:1\"} 1",
            "gateway_in_flight_requests 0",
            "gateway_config_reloads_total{result=\"ok\"} 0",
            "gateway_config_reloads_total{result=\"error\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing from:\n{text}");
        }
        let text = metrics.render(&[]);
        assert!(!text.contains("gateway_upstream_healthy{"), "only live pools' upstreams: {text}");
    }
}
