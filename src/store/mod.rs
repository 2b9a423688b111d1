//! The store behind chat history and stream checkpoints: one trait, two
//! implementations, chosen once at start. Redis when a URL is configured,
//! else an embedded in-memory store (history then lives as long as the
//! process, which is what a laptop in front of a local model wants).
//!
//! The interface is at the level of the domain: append a turn, read
//! messages, list sessions. Paging filters that need every message (role,
//! text search) run above the store, in `api::history`.

mod checkpoints;
mod keys;
mod memory;
mod recently;
mod redis;
mod redis_checkpoints;
mod redis_conn;
mod redis_sentinel;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use serde_json::Value;

pub use checkpoints::{
    CheckpointStore, Checkpointed, Control, ControlRequests, EventBatch, EventsRead, Follower,
    StreamRecord, StreamState,
};
pub use keys::Key;
pub use memory::MemoryStore;
pub use redis::RedisStore;

use crate::config::StoreSettings;
use crate::session::SessionId;
use crate::tenant::Tenant;

/// Which implementation is in use, as `/tether/readyz` and the start log name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    Redis,
    Memory,
}

impl std::fmt::Display for StoreKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StoreKind::Redis => "redis",
            StoreKind::Memory => "memory",
        })
    }
}

/// The store's state as a readiness probe reports it.
#[derive(Debug, Clone, Serialize)]
pub struct StoreHealth {
    pub store: StoreKind,
    pub connected: bool,
    /// Why the store is not connected; never contains a password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Token counts summed over a session's replies, whatever the provider calls them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct UsageTotals {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
}

/// What one recorded exchange adds to a session: messages in order (each
/// already in the stored shape, with its timestamp), and what the session's
/// info sums up.
#[derive(Debug, Clone, Default)]
pub struct Turn {
    /// Names the turn, so a store can tell a retry of a write it already
    /// applied from a new turn.
    pub id: String,
    /// Messages that go first, and only when the session is new (its
    /// system prompt); deciding it in the append itself saves a round trip.
    pub if_new: Vec<StoredMessage>,
    pub messages: Vec<StoredMessage>,
    pub usage: UsageTotals,
    pub model: Option<String>,
    /// Wall-clock time of the write, in milliseconds since the epoch.
    pub at_ms: u64,
}

impl Turn {
    /// The bytes of its messages, first ones included.
    pub fn message_bytes(&self) -> usize {
        self.if_new
            .iter()
            .chain(&self.messages)
            .map(|m| m.as_bytes().len())
            .sum()
    }
}

/// A message as stored: its JSON, serialized once by the recorder beside
/// its response, so that the history writer tasks only copy bytes
/// into their batches (serializing there made it the bottleneck of a busy
/// replica), and the embedded store keeps compact text, not `Value` trees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage(bytes::Bytes);

impl StoredMessage {
    pub fn new(message: &Value) -> Self {
        // `to_vec` writes straight from the serializer; `to_string` would go
        // through `fmt`.
        StoredMessage(serde_json::to_vec(message).unwrap_or_default().into())
    }

    /// A message already written as JSON text.
    pub fn from_json(json: bytes::Bytes) -> Self {
        StoredMessage(json)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The message as a JSON value again (what the history routes return).
    pub fn to_value(&self) -> Value {
        serde_json::from_slice(&self.0).unwrap_or(Value::Null)
    }
}

impl From<Value> for StoredMessage {
    fn from(message: Value) -> Self {
        StoredMessage::new(&message)
    }
}

/// Which messages of a session to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageRange {
    All,
    /// `len` messages after skipping `offset`, counted from the oldest
    /// (`from_end = false`) or the newest (`from_end = true`); oldest first.
    Slice {
        offset: usize,
        len: usize,
        from_end: bool,
    },
}

/// Messages read back, with the session's total count.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Messages {
    pub messages: Vec<Value>,
    /// Position of the first returned message in the whole session.
    pub first_index: usize,
    pub total: usize,
}

/// A session's summary, for `GET /tether/sessions/{id}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SessionInfo {
    pub message_count: usize,
    pub created_at_ms: u64,
    pub last_message_ms: u64,
    pub models: Vec<String>,
    pub usage: UsageTotals,
    /// The session's latest recorded stream (Redis only), whatever its state:
    /// the route asks the stream's record whether it is still active.
    pub last_stream: Option<String>,
}

/// One row of a session listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionEntry {
    pub tenant: Tenant,
    pub session_id: String,
    pub last_activity_ms: u64,
}

/// Whose sessions a listing covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Tenant(Tenant),
    /// The admin token: every tenant.
    All,
}

/// A page of sessions, most recently active first.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionPage {
    pub entries: Vec<SessionEntry>,
    pub total: usize,
}

/// What tether keeps. Implementations never block the caller for longer than
/// their configured command timeout.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    fn kind(&self) -> StoreKind;

    /// Asks the backend whether it answers right now.
    async fn health(&self) -> StoreHealth;

    /// True when the session has history (it exists and has not expired).
    async fn session_exists(
        &self,
        tenant: &Tenant,
        session: &SessionId,
    ) -> Result<bool, StoreError>;

    /// Appends several turns, in order. Stores that can send them together
    /// (one round trip) do; the default appends them one by one. On an error
    /// some may be applied: a retry of the whole batch is safe, as appending
    /// a turn twice (same `Turn::id`) changes nothing.
    async fn append_turns(&self, turns: &[(Tenant, SessionId, Turn)]) -> Result<(), StoreError> {
        for (tenant, session, turn) in turns {
            self.append_turn(tenant, session, turn).await?;
        }
        Ok(())
    }

    /// Appends a turn's messages, updates the session's info and its place in
    /// the session index, and refreshes the history TTL.
    async fn append_turn(
        &self,
        tenant: &Tenant,
        session: &SessionId,
        turn: &Turn,
    ) -> Result<(), StoreError>;

    /// A recorded stream of the session has begun: from now on the session
    /// is listed and found (with no messages until its first turn is
    /// written), so a console sees a conversation while its first answer
    /// streams, and the admin token can find that answer by session id.
    /// A checkpoint store lists the session in the round trip that opens
    /// the stream's record instead (`CheckpointStore::open_stream`), so
    /// only the stores without one (the embedded store) do it here.
    async fn stream_started(
        &self,
        _tenant: &Tenant,
        _session: &SessionId,
        _at_ms: u64,
    ) -> Result<(), StoreError> {
        Ok(())
    }

    /// `None` when the session does not exist or has no messages yet.
    async fn read_messages(
        &self,
        tenant: &Tenant,
        session: &SessionId,
        range: MessageRange,
    ) -> Result<Option<Messages>, StoreError>;

    /// `None` when the session does not exist; a session whose first
    /// answer is still streaming has no messages and `last_message_ms` 0.
    async fn session_info(
        &self,
        tenant: &Tenant,
        session: &SessionId,
    ) -> Result<Option<SessionInfo>, StoreError>;

    /// Sessions most recently active first, after dropping index entries
    /// whose history has expired.
    async fn list_sessions(
        &self,
        scope: &Scope,
        offset: usize,
        limit: usize,
    ) -> Result<SessionPage, StoreError>;

    /// Deletes the session's history; false when there was none.
    async fn delete_session(
        &self,
        tenant: &Tenant,
        session: &SessionId,
    ) -> Result<bool, StoreError>;

    /// The tenants that have a session with this id (for the admin token,
    /// which names sessions without a tenant).
    async fn tenants_of(&self, session: &SessionId) -> Result<Vec<Tenant>, StoreError>;
}

/// History TTL and what it means for the session index.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub history_ttl: Duration,
}

/// How much history the embedded store may hold (`store.memory_max_mb`),
/// and where it counts the sessions it evicts to stay under it.
pub struct MemoryBudget {
    pub max_bytes: usize,
    pub evicted: prometheus_client::metrics::counter::Counter,
}

/// The configured store, and where stream checkpoints go (Redis only).
pub struct Stores {
    pub history: Arc<dyn Store>,
    pub checkpoints: Option<Arc<dyn CheckpointStore>>,
}

/// Builds the configured store. A Redis that does not answer yet is not an
/// error: tether serves anyway and the connection is retried in the background.
pub async fn connect(
    settings: &StoreSettings,
    retention: Retention,
    memory: MemoryBudget,
) -> Result<Stores, StoreError> {
    Ok(match settings {
        StoreSettings::Memory => Stores {
            history: Arc::new(MemoryStore::new(
                retention,
                memory.max_bytes,
                memory.evicted,
            )),
            checkpoints: None,
        },
        StoreSettings::Redis {
            url,
            connect_timeout,
            command_timeout,
            ca_file,
        } => {
            let tls = redis::private_ca(ca_file.as_deref())?;
            let redis = Arc::new(
                RedisStore::connect(url, tls, *connect_timeout, *command_timeout, retention)
                    .await?,
            );
            Stores {
                history: redis.clone(),
                checkpoints: Some(redis),
            }
        }
        StoreSettings::RedisCluster {
            nodes,
            connect_timeout,
            command_timeout,
            ca_file,
        } => {
            let tls = redis::private_ca(ca_file.as_deref())?;
            let redis = Arc::new(
                RedisStore::connect_cluster(
                    nodes,
                    tls,
                    *connect_timeout,
                    *command_timeout,
                    retention,
                )
                .await?,
            );
            Stores {
                history: redis.clone(),
                checkpoints: Some(redis),
            }
        }
        StoreSettings::RedisSentinel {
            sentinel,
            connect_timeout,
            command_timeout,
        } => {
            let redis = Arc::new(
                RedisStore::connect_sentinel(
                    sentinel,
                    *connect_timeout,
                    *command_timeout,
                    retention,
                )
                .await?,
            );
            Stores {
                history: redis.clone(),
                checkpoints: Some(redis),
            }
        }
    })
}

/// Failures at the store boundary.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("redis.ca_file {path}: {reason}")]
    CaFile { path: String, reason: String },
}

impl StoreError {
    /// Errors that go away when the store comes back: timeouts; lost,
    /// refused or not yet made connections; a cluster or a Sentinel-managed
    /// master failing over (a demoted master refusing writes, Sentinels that
    /// name no master for a moment); a server still loading its data.
    pub fn is_transient(&self) -> bool {
        use ::redis::{ErrorKind, ServerErrorKind};
        match self {
            StoreError::Timeout(_) => true,
            StoreError::Redis(e) => {
                e.is_io_error()
                    || e.is_timeout()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || e.is_cluster_error()
                    || matches!(
                        e.kind(),
                        ErrorKind::Server(
                            ServerErrorKind::ReadOnly
                                | ServerErrorKind::MasterDown
                                | ServerErrorKind::BusyLoading
                        ) | ErrorKind::MasterNameNotFoundBySentinel
                            | ErrorKind::NoValidReplicasFoundBySentinel
                    )
            }
            StoreError::Corrupt(_) | StoreError::CaFile { .. } => false,
        }
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}
