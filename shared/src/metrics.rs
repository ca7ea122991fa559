//! Prometheus metrics: one process-wide registry, the HTTP middleware that counts and times
//! every request by matched route and status, and the `/metrics` route that exposes it all in
//! the text format.
//!
//! The families are listed in `docs/deployment.md` (`## Metrics`). Backends record what happens where it
//! happens (publish confirms and settlements in the queue adapters, seeding in the counter
//! adapters); queue depth is sampled at scrape time from the queues a service registered with
//! [`watch_queue_depth`], so it is fresh whoever runs the consumer.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

use crate::backends::queue::Queue;

/// Every metric family chatmesh exposes.
pub struct Metrics {
    registry: Registry,
    /// `chatmesh_http_requests_total{method,route,status}`.
    pub http_requests: IntCounterVec,
    /// `chatmesh_http_request_duration_seconds{method,route,status}`.
    pub http_duration: HistogramVec,
    /// `chatmesh_queue_publish_total{queue,result}`: `confirmed`, `failed`, or `handed_over`
    /// (taken straight by a consumer of the same process and acked after its store commit).
    pub queue_publish: IntCounterVec,
    /// `chatmesh_queue_settled_total{queue,outcome}`: `ack`, `retry` or `dead_letter`.
    pub queue_settled: IntCounterVec,
    /// `chatmesh_queue_depth{queue}`: messages waiting, sampled at scrape.
    pub queue_depth: IntGaugeVec,
    /// `chatmesh_counter_seeds_total{backend}`: counters seeded from the store.
    pub counter_seeds: IntCounterVec,
    /// `chatmesh_search_duration_seconds{result}`.
    pub search_duration: HistogramVec,
    /// `chatmesh_cron_runs_total{job,outcome}`: `flushed`, `skipped` or `failed`.
    pub cron_runs: IntCounterVec,
    /// `chatmesh_consumer_conflicts_total{kind}`: commands whose (parent, number) the store
    /// already holds with other content (`chat` or `message`), parked in the dead-letter queue.
    pub consumer_conflicts: IntCounterVec,
    /// `chatmesh_stream_subscribers{transport}`: live-stream subscriptions open now, `sse` or
    /// `websocket` (one per chat a socket follows).
    pub stream_subscribers: IntGaugeVec,
    /// `chatmesh_stream_overflows_total`: WebSocket clients disconnected for leaving their queue
    /// full (each told its resume cursors).
    pub stream_overflows: IntCounterVec,
}

const LATENCY_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

impl Metrics {
    fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let metric = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry.register(Box::new(metric.clone())).expect("metric registered once");
            metric
        };
        let histogram = |name: &str, help: &str, labels: &[&str]| {
            let opts = HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec());
            let metric = HistogramVec::new(opts, labels).expect("valid metric");
            registry.register(Box::new(metric.clone())).expect("metric registered once");
            metric
        };
        let http_requests = counter(
            "chatmesh_http_requests_total",
            "HTTP requests answered, by method, matched route and status",
            &["method", "route", "status"],
        );
        let http_duration = histogram(
            "chatmesh_http_request_duration_seconds",
            "HTTP request latency, by method, matched route and status",
            &["method", "route", "status"],
        );
        let queue_publish = counter(
            "chatmesh_queue_publish_total",
            "Commands published, by queue and whether the queue confirmed them (handed_over: acked by a consumer of this process without queueing)",
            &["queue", "result"],
        );
        let queue_settled = counter(
            "chatmesh_queue_settled_total",
            "Deliveries settled by consumers: ack, retry or dead_letter",
            &["queue", "outcome"],
        );
        let queue_depth = IntGaugeVec::new(
            Opts::new("chatmesh_queue_depth", "Messages waiting in the queue, sampled at scrape"),
            &["queue"],
        )
        .expect("valid metric");
        registry.register(Box::new(queue_depth.clone())).expect("metric registered once");
        let counter_seeds = counter(
            "chatmesh_counter_seeds_total",
            "Number counters seeded from the store's highest number",
            &["backend"],
        );
        let search_duration = histogram("chatmesh_search_duration_seconds", "Message search latency", &["result"]);
        let cron_runs =
            counter("chatmesh_cron_runs_total", "Scheduled job runs, by job and outcome", &["job", "outcome"]);
        let consumer_conflicts = counter(
            "chatmesh_consumer_conflicts_total",
            "Commands whose number the store already holds with other content, dead-lettered",
            &["kind"],
        );
        let stream_subscribers = IntGaugeVec::new(
            Opts::new("chatmesh_stream_subscribers", "Live-stream subscriptions open, by transport"),
            &["transport"],
        )
        .expect("valid metric");
        registry.register(Box::new(stream_subscribers.clone())).expect("metric registered once");
        let stream_overflows = counter(
            "chatmesh_stream_overflows_total",
            "WebSocket clients disconnected for leaving their send queue full",
            &[],
        );
        Self {
            registry,
            stream_subscribers,
            stream_overflows,
            consumer_conflicts,
            http_requests,
            http_duration,
            queue_publish,
            queue_settled,
            queue_depth,
            counter_seeds,
            search_duration,
            cron_runs,
        }
    }

    /// The text exposition of every family.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buffer).expect("text encoding cannot fail");
        String::from_utf8(buffer).expect("text exposition is UTF-8")
    }
}

/// The process-wide metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// Counts a live-stream subscription of `transport` while the returned guard lives.
pub fn stream_subscription(transport: &'static str) -> StreamSubscription {
    let gauge = metrics().stream_subscribers.with_label_values(&[transport]);
    gauge.inc();
    StreamSubscription(gauge)
}

/// See [`stream_subscription`].
pub struct StreamSubscription(prometheus::IntGauge);

impl Drop for StreamSubscription {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Counts a WebSocket client disconnected for leaving its queue full.
pub fn record_stream_overflow() {
    metrics().stream_overflows.with_label_values(&[] as &[&str]).inc();
}

/// Records a publish and whether the queue confirmed it.
pub fn record_publish(queue: &str, confirmed: bool) {
    let result = if confirmed { "confirmed" } else { "failed" };
    metrics().queue_publish.with_label_values(&[queue, result]).inc();
}

/// Records a command a consumer of this process took straight and acked (no queueing).
pub fn record_handed_over(queue: &str) {
    metrics().queue_publish.with_label_values(&[queue, "handed_over"]).inc();
}

/// Records `count` deliveries settled with `outcome` (`ack`, `retry`, `dead_letter`).
pub fn record_settled(queue: &str, outcome: &str, count: usize) {
    metrics().queue_settled.with_label_values(&[queue, outcome]).inc_by(count as u64);
}

/// Records a counter seeded from the store.
pub fn record_counter_seed(backend: &str) {
    metrics().counter_seeds.with_label_values(&[backend]).inc();
}

/// Records one search and how long it took.
pub fn record_search(elapsed: Duration, ok: bool) {
    let result = if ok { "ok" } else { "error" };
    metrics().search_duration.with_label_values(&[result]).observe(elapsed.as_secs_f64());
}

/// Records a command whose (parent, number) the store holds with other content.
pub fn record_consumer_conflict(kind: &str) {
    metrics().consumer_conflicts.with_label_values(&[kind]).inc();
}

/// Records one run of a scheduled job.
pub fn record_cron_run(job: &str, outcome: &str) {
    metrics().cron_runs.with_label_values(&[job, outcome]).inc();
}

type DepthProbe = (String, Arc<dyn Queue>);

fn depth_probes() -> &'static Mutex<Vec<DepthProbe>> {
    static PROBES: OnceLock<Mutex<Vec<DepthProbe>>> = OnceLock::new();
    PROBES.get_or_init(Mutex::default)
}

/// Samples the depth of `queue` on every scrape.
pub fn watch_queue_depth(queue: Arc<dyn Queue>, name: impl Into<String>) {
    let name = name.into();
    let mut probes = depth_probes().lock().expect("depth probes lock poisoned");
    probes.retain(|(existing, _)| *existing != name);
    probes.push((name, queue));
}

async fn sample_queue_depths() {
    let probes: Vec<DepthProbe> = depth_probes().lock().expect("depth probes lock poisoned").clone();
    for (name, queue) in probes {
        // A scrape never hangs on a broker that is down: the gauge keeps its last value.
        if let Ok(Ok(depth)) = tokio::time::timeout(Duration::from_secs(2), queue.depth(&name)).await {
            metrics().queue_depth.with_label_values(&[&name]).set(depth.min(i64::MAX as u64) as i64);
        }
    }
}

/// `GET /metrics` in the Prometheus text format.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().route("/metrics", get(scrape))
}

async fn scrape() -> Response {
    sample_queue_depths().await;
    ([(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], metrics().render()).into_response()
}

/// Middleware counting and timing every request by method, matched route (the pattern, never
/// the raw path, so ids do not explode the label set) and status. Apply it with
/// `router.layer(axum::middleware::from_fn(shared::metrics::track))`.
pub async fn track(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    let labels = [method.as_str(), route.as_str(), status.as_str()];
    let metrics = metrics();
    metrics.http_requests.with_label_values(&labels).inc();
    metrics.http_duration.with_label_values(&labels).observe(started.elapsed().as_secs_f64());
    response
}

/// Adds `/metrics` and the request middleware to a service's router.
pub fn instrument(router: Router) -> Router {
    router.merge(self::router()).layer(axum::middleware::from_fn(track))
}
