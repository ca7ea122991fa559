//! A closed-loop load generator: `clients` tasks each send one request at a time for a while;
//! latencies go into an HDR histogram.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// What a load run measured.
#[derive(Clone)]
pub struct LoadReport {
    pub requests: u64,
    pub errors: u64,
    pub seconds: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Every request's latency in microseconds, so runs can be merged.
    pub latencies: Histogram<u64>,
}

impl LoadReport {
    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.seconds
    }

    /// The runs together, as one run of their summed time (`None` without runs).
    pub fn merge(runs: &[LoadReport]) -> Option<LoadReport> {
        let mut latencies = runs.first()?.latencies.clone();
        latencies.reset();
        let (mut errors, mut seconds) = (0, 0.0);
        for run in runs {
            latencies.add(&run.latencies).expect("same histogram bounds");
            errors += run.errors;
            seconds += run.seconds;
        }
        Some(Self::from_histogram(latencies, errors, seconds))
    }

    fn from_histogram(latencies: Histogram<u64>, errors: u64, seconds: f64) -> Self {
        LoadReport {
            requests: latencies.len(),
            errors,
            seconds,
            p50_ms: latencies.value_at_quantile(0.50) as f64 / 1000.0,
            p99_ms: latencies.value_at_quantile(0.99) as f64 / 1000.0,
            latencies,
        }
    }
}

impl std::fmt::Display for LoadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:>9.0} req/s  p50 {:>7.2} ms  p99 {:>7.2} ms  ({} requests, {} errors, {:.1} s)",
            self.rps(),
            self.p50_ms,
            self.p99_ms,
            self.requests,
            self.errors,
            self.seconds
        )
    }
}

/// Runs `request` from `clients` concurrent loops for `duration`; `request` answers whether
/// the request succeeded.
pub async fn run<F, Fut>(clients: usize, duration: Duration, request: F) -> LoadReport
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send,
{
    let request = Arc::new(request);
    let start = Instant::now();
    let deadline = start + duration;
    let tasks: Vec<_> = (0..clients)
        .map(|client| {
            let request = request.clone();
            tokio::spawn(async move {
                let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
                let mut errors = 0u64;
                let mut i = client as u64 * 1_000_000_000;
                while Instant::now() < deadline {
                    i += 1;
                    let sent = Instant::now();
                    let ok = request(i).await;
                    histogram.saturating_record(sent.elapsed().as_micros() as u64);
                    if !ok {
                        errors += 1;
                    }
                }
                (histogram, errors)
            })
        })
        .collect();
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let mut errors = 0;
    for task in tasks {
        let (h, e) = task.await.expect("load task");
        histogram.add(h).expect("merge histograms");
        errors += e;
    }
    LoadReport::from_histogram(histogram, errors, start.elapsed().as_secs_f64())
}

/// Peak resident memory (VmHWM) of a process, in MiB.
pub fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}
