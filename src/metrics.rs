//! Prometheus metrics, served at `/tether/metrics` in the text format.
//! Every deliberate drop (a request not recorded, a recording cut short, a
//! history write that failed) is counted here and logged where it happens.

use std::sync::OnceLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

pub struct Metrics {
    registry: Registry,
    /// Requests on a recorded path that were forwarded but not recorded.
    pub recording_skipped: Family<ReasonLabel, Counter>,
    /// Recordings stored with `"complete": false`, by why.
    pub recording_incomplete: Family<ReasonLabel, Counter>,
    /// Turns and messages written to history.
    pub history_turns: Counter,
    pub history_messages: Counter,
    /// History writes that failed and were dropped (logged with the session id).
    pub history_dropped: Counter,
    /// Sessions the embedded store evicted to stay under `store.memory_max_mb`.
    pub history_evicted: Counter,
    /// Stream events written to the checkpoint store.
    pub checkpointed_events: Counter,
    /// Streams whose checkpoints stopped, by why (they stay resumable on their own replica).
    pub checkpoint_dropped: Family<ReasonLabel, Counter>,
    /// Resumes served, by where from (`memory`, `store`).
    pub resumes: Family<SourceLabel, Counter>,
    /// Streams cancelled through `DELETE /tether/streams/{id}`.
    pub cancels: Counter,
    /// History turns waiting in the write-behind queue.
    pub history_queue_depth: Gauge,
    pub history_queue_bytes: Gauge,
    /// Store commands that failed (each retry counts).
    pub store_errors: Counter,
    /// Requests by route class, status and upstream status class.
    pub requests: Family<RequestLabels, Counter>,
    /// Whole request duration, to the end of the response body.
    pub request_duration: Family<ClassLabel, Histogram>,
    /// Time until the upstream's response headers.
    pub upstream_latency: Histogram,
    /// Time until the first response byte was handed to the client.
    pub time_to_first_byte: Family<ClassLabel, Histogram>,
    /// tether's own part of the time to the response headers: total minus upstream.
    pub overhead: Family<ClassLabel, Histogram>,
    /// Recorded streams whose upstream is still being read.
    pub active_streams: Gauge,
    /// Streams read on after their clients left.
    pub detached_streams: Gauge,
    /// Response bytes handed to recorders.
    pub recorded_bytes: Counter,
    /// Handles of the per-class series a request updates, taken from their
    /// families on first use (a series appears when first used, as before)
    /// and kept, so a request does not hash label sets and take the
    /// families' locks four times.
    by_class: [ClassSeries; CLASSES.len()],
}

/// The route classes, as their labels read.
const CLASSES: [&str; 4] = ["recorded", "proxy", "own", "rejected"];

#[derive(Default)]
struct ClassSeries {
    /// `requests{class, status="200", upstream="2xx"}`, the usual one.
    ok: OnceLock<Counter>,
    duration: OnceLock<Histogram>,
    overhead: OnceLock<Histogram>,
    time_to_first_byte: OnceLock<Histogram>,
}

/// The figures of one finished request (see [`Metrics::request_done`]).
pub struct RequestFigures {
    pub class: &'static str,
    pub status: u16,
    /// The upstream's status class, or `none`.
    pub upstream: &'static str,
    pub total_secs: f64,
    pub overhead_secs: f64,
    pub first_byte_secs: Option<f64>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    pub source: &'static str,
}

/// Which part of tether answered: `recorded` (a recorded API, forwarded),
/// `proxy` (forwarded as is), `own` (tether's routes), `rejected` (refused
/// before anything was forwarded).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassLabel {
    pub class: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub class: &'static str,
    pub status: u16,
    /// The upstream's status class (`2xx` ...), or `none` when tether answered.
    pub upstream: &'static str,
}

/// Latency buckets from 50 µs to 60 s: tether's overhead lives at the low
/// end, whole streams at the high end.
fn latency_buckets() -> impl Iterator<Item = f64> {
    [
        0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
        1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    ]
    .into_iter()
}

fn histogram_family() -> Family<ClassLabel, Histogram> {
    Family::new_with_constructor(|| Histogram::new(latency_buckets()))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tether");
        let recording_skipped = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "recording_skipped",
            "Requests on recorded paths forwarded without recording, by reason",
            recording_skipped.clone(),
        );
        let recording_incomplete = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "recording_incomplete",
            "Replies recorded cut short, by reason",
            recording_incomplete.clone(),
        );
        let history_turns = Counter::default();
        registry.register(
            "history_turns",
            "Turns appended to chat history",
            history_turns.clone(),
        );
        let history_messages = Counter::default();
        registry.register(
            "history_messages",
            "Messages appended to chat history",
            history_messages.clone(),
        );
        let history_dropped = Counter::default();
        registry.register(
            "history_dropped",
            "History turns that could not be written and were dropped",
            history_dropped.clone(),
        );
        let history_evicted = Counter::default();
        registry.register(
            "history_evicted",
            "Sessions the embedded store evicted, least recently written first, to stay under store.memory_max_mb",
            history_evicted.clone(),
        );
        let checkpointed_events = Counter::default();
        registry.register(
            "checkpointed_events",
            "Stream events written to the checkpoint store",
            checkpointed_events.clone(),
        );
        let checkpoint_dropped = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "checkpoint_dropped",
            "Streams whose checkpoints stopped (still resumable on their own replica), by reason",
            checkpoint_dropped.clone(),
        );
        let resumes = Family::<SourceLabel, Counter>::default();
        registry.register(
            "resumes",
            "Stream resumes served, by source",
            resumes.clone(),
        );
        let cancels = Counter::default();
        registry.register("cancels", "Streams cancelled by request", cancels.clone());
        let history_queue_depth = Gauge::default();
        registry.register(
            "history_queue_depth",
            "History turns waiting in the write-behind queue",
            history_queue_depth.clone(),
        );
        let history_queue_bytes = Gauge::default();
        registry.register(
            "history_queue_bytes",
            "What the history turns waiting in the write-behind queue weigh (their messages, and 256 bytes a turn), bounded by store.queue_max_mb",
            history_queue_bytes.clone(),
        );
        let store_errors = Counter::default();
        registry.register(
            "store_errors",
            "Store operations that failed (each retry counts)",
            store_errors.clone(),
        );
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests by route class, status and upstream status",
            requests.clone(),
        );
        let request_duration = histogram_family();
        registry.register(
            "request_duration_seconds",
            "Request duration to the end of the response body, by route class",
            request_duration.clone(),
        );
        let upstream_latency = Histogram::new(latency_buckets());
        registry.register(
            "upstream_latency_seconds",
            "Time until the upstream's response headers",
            upstream_latency.clone(),
        );
        let time_to_first_byte = histogram_family();
        registry.register(
            "time_to_first_byte_seconds",
            "Time until the first response byte went to the client, by route class",
            time_to_first_byte.clone(),
        );
        let overhead = histogram_family();
        registry.register(
            "overhead_seconds",
            "tether's own time until the response headers (total minus upstream), by route class",
            overhead.clone(),
        );
        let active_streams = Gauge::default();
        registry.register(
            "active_streams",
            "Recorded streams whose upstream is still read",
            active_streams.clone(),
        );
        let detached_streams = Gauge::default();
        registry.register(
            "detached_streams",
            "Streams read on after their clients left",
            detached_streams.clone(),
        );
        let recorded_bytes = Counter::default();
        registry.register(
            "recorded_bytes",
            "Response bytes handed to recorders",
            recorded_bytes.clone(),
        );
        Self {
            registry,
            requests,
            request_duration,
            upstream_latency,
            time_to_first_byte,
            overhead,
            active_streams,
            detached_streams,
            recorded_bytes,
            history_queue_depth,
            history_queue_bytes,
            store_errors,
            checkpointed_events,
            checkpoint_dropped,
            resumes,
            cancels,
            recording_skipped,
            recording_incomplete,
            history_turns,
            history_messages,
            history_dropped,
            history_evicted,
            by_class: Default::default(),
        }
    }

    /// Counts a finished request and observes its durations.
    pub fn request_done(&self, r: &RequestFigures) {
        let class = ClassLabel { class: r.class };
        let labels = RequestLabels {
            class: r.class,
            status: r.status,
            upstream: r.upstream,
        };
        let Some(series) = CLASSES
            .iter()
            .position(|c| *c == r.class)
            .map(|i| &self.by_class[i])
        else {
            self.requests.get_or_create(&labels).inc();
            self.request_duration
                .get_or_create(&class)
                .observe(r.total_secs);
            self.overhead.get_or_create(&class).observe(r.overhead_secs);
            if let Some(first) = r.first_byte_secs {
                self.time_to_first_byte.get_or_create(&class).observe(first);
            }
            return;
        };
        if r.status == 200 && r.upstream == "2xx" {
            series
                .ok
                .get_or_init(|| self.requests.get_or_create(&labels).clone())
                .inc();
        } else {
            self.requests.get_or_create(&labels).inc();
        }
        series
            .duration
            .get_or_init(|| self.request_duration.get_or_create(&class).clone())
            .observe(r.total_secs);
        series
            .overhead
            .get_or_init(|| self.overhead.get_or_create(&class).clone())
            .observe(r.overhead_secs);
        if let Some(first) = r.first_byte_secs {
            series
                .time_to_first_byte
                .get_or_init(|| self.time_to_first_byte.get_or_create(&class).clone())
                .observe(first);
        }
    }

    pub fn skipped(&self, reason: &'static str) {
        self.recording_skipped
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    pub fn incomplete(&self, reason: &'static str) {
        self.recording_incomplete
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    pub fn checkpoint_dropped(&self, reason: &'static str) {
        self.checkpoint_dropped
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    pub fn resumed(&self, source: &'static str) {
        self.resumes.get_or_create(&SourceLabel { source }).inc();
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
