//! Prometheus metrics, served at `/tether/metrics` in the text format.
//! Every deliberate drop (a request not recorded, a recording cut short, a
//! history write that failed) is counted here and logged where it happens.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
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
    /// Store commands that failed (each retry counts).
    pub store_errors: Counter,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    pub source: &'static str,
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
        let store_errors = Counter::default();
        registry.register(
            "store_errors",
            "Store operations that failed (each retry counts)",
            store_errors.clone(),
        );
        Self {
            registry,
            history_queue_depth,
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
