//! Stream checkpoints: the numbered SSE events of every recorded stream and
//! its state, kept where another replica can read them. Only Redis has this
//! interface: with the embedded store there are no other replicas, and the
//! local hub registry (`stream::hub`) is where events live.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde::Serialize;

use super::StoreError;
use crate::tenant::Tenant;

/// The life of a stream: `active` until the upstream finishes (`done`), a
/// client cancels it (`cancelled`), or the upstream or the owning replica
/// fails (`interrupted`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamState {
    Active,
    Done,
    Cancelled,
    Interrupted,
}

impl StreamState {
    pub fn as_str(self) -> &'static str {
        match self {
            StreamState::Active => "active",
            StreamState::Done => "done",
            StreamState::Cancelled => "cancelled",
            StreamState::Interrupted => "interrupted",
        }
    }

    pub fn parse(raw: &str) -> Option<StreamState> {
        Some(match raw {
            "active" => StreamState::Active,
            "done" => StreamState::Done,
            "cancelled" => StreamState::Cancelled,
            "interrupted" => StreamState::Interrupted,
            _ => return None,
        })
    }

    pub fn is_final(self) -> bool {
        self != StreamState::Active
    }
}

/// What is known about a stream, as stored beside its events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamRecord {
    pub id: String,
    pub tenant: Tenant,
    pub session: String,
    pub state: StreamState,
    /// Data events checkpointed so far.
    pub events: u64,
    pub created_ms: u64,
    /// Refreshed by the owning replica while the stream is active (by its
    /// heartbeat, or by the time of its latest batch, whichever is later); a
    /// stream whose heartbeat lapses is reported `interrupted`.
    pub heartbeat_ms: u64,
}

impl StreamRecord {
    /// The state a reader should see: an `active` stream whose owner stopped
    /// beating for longer than `lapse` is `interrupted`.
    pub fn effective_state(&self, now_ms: u64, lapse: Duration) -> StreamState {
        if self.state == StreamState::Active
            && now_ms.saturating_sub(self.heartbeat_ms) > lapse.as_millis() as u64
        {
            StreamState::Interrupted
        } else {
            self.state
        }
    }
}

/// Consecutive events, the first of them number `first` (0-based).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventBatch {
    pub first: u64,
    pub events: Vec<Bytes>,
}

/// Checkpointed events read back: events from the asked position on, the
/// end if it was read (the trailing bytes after the last event, empty when
/// there are none), and where a live follower continues.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventsRead {
    pub events: Vec<Bytes>,
    pub tail: Option<Bytes>,
    pub cursor: String,
}

/// What of a stream is in the store: its events numbered below `events`,
/// and whether its end (the final state, with its trailing bytes) too.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Checkpointed {
    pub events: u64,
    pub closed: bool,
}

/// Where another replica reads what this one streams.
#[async_trait]
pub trait CheckpointStore: Send + Sync + 'static {
    /// Writes a new stream's record, whose checkpoints then live for `ttl`,
    /// and makes it the session's latest stream. Writing it again changes
    /// nothing (a retry of an opening whose answer was lost).
    async fn open_stream(
        &self,
        record: &StreamRecord,
        ttl: Duration,
        history_ttl: Duration,
    ) -> Result<(), StoreError>;

    /// Appends a batch (one command). The batch carries the time it was
    /// written, which readers take as a heartbeat.
    async fn append_events(&self, id: &str, batch: &EventBatch) -> Result<(), StoreError>;

    /// Refreshes the heartbeat and the event count when no batch did; what
    /// it writes lives for `ttl`, when given (the first beat gives it, the
    /// next ones leave it).
    async fn heartbeat(
        &self,
        id: &str,
        heartbeat_ms: u64,
        events: u64,
        ttl: Option<Duration>,
    ) -> Result<(), StoreError>;

    /// True when a cancel was requested for the stream (the owner missed its broadcast).
    async fn cancel_requested(&self, id: &str) -> Result<bool, StoreError>;

    /// Writes the last batch (if any, numbered up to `record.events`), the
    /// trailing bytes and the final state, in one round trip where the
    /// store allows; everything then expires after `retention`. `beaten`:
    /// heartbeats were written, or a cancel request may have been (what
    /// they wrote expires then too).
    async fn close_stream(
        &self,
        record: &StreamRecord,
        last: Option<&EventBatch>,
        tail: Option<Bytes>,
        retention: Duration,
        beaten: bool,
    ) -> Result<(), StoreError>;

    async fn stream_record(&self, id: &str) -> Result<Option<StreamRecord>, StoreError>;

    /// How far a stream's checkpoints got: asked by a writer after a failed
    /// write, which may have landed although its answer was lost (a batch
    /// written twice would be refused, and one written with fewer events
    /// than the retry holds would leave a gap).
    async fn checkpointed(&self, id: &str) -> Result<Checkpointed, StoreError>;

    /// Events from number `from` (0-based) on.
    async fn read_events(&self, id: &str, from: u64) -> Result<EventsRead, StoreError>;

    /// Waits up to `block` for batches after `cursor`, on a connection of
    /// the follower's own (a blocking read holds up its connection).
    async fn follower(&self) -> Result<Box<dyn Follower>, StoreError>;

    /// Requests to the replicas that own streams, as they are broadcast.
    async fn control_requests(&self) -> Result<ControlRequests, StoreError>;

    /// Asks the owning replica to cancel.
    async fn request_cancel(&self, id: &str) -> Result<(), StoreError>;

    /// Asks the owning replica to write the stream's new events now (a
    /// reader on another replica is about to follow it).
    async fn request_flush(&self, id: &str) -> Result<(), StoreError>;

    /// The session's latest stream (the route asks its record for its state).
    async fn session_stream(
        &self,
        tenant: &Tenant,
        session: &str,
    ) -> Result<Option<String>, StoreError>;
}

/// What another replica asks of a stream's owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    Cancel(String),
    Flush(String),
}

/// Control requests as they are broadcast.
pub type ControlRequests = std::pin::Pin<Box<dyn futures_util::Stream<Item = Control> + Send>>;

/// A live tail on a stream's checkpoints.
#[async_trait]
pub trait Follower: Send {
    /// New events numbered `from` or later after `cursor` (advanced past
    /// them), the end if it came (as [`EventsRead::tail`]), or nothing when
    /// `block` passed first. A
    /// resume may start past what was checkpointed, so the first batches it
    /// reads can hold events the client already has.
    async fn next(
        &mut self,
        id: &str,
        cursor: &mut String,
        from: u64,
        block: Duration,
    ) -> Result<(Vec<Bytes>, Option<Bytes>), StoreError>;
}
