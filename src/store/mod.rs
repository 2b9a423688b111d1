//! The store behind chat history and stream checkpoints: one trait, two
//! implementations, chosen once at start. Redis when a URL is configured,
//! else an embedded in-memory store (history then lives as long as the
//! process, which is what a laptop in front of a local model wants).

mod memory;
mod redis;

use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;

pub use memory::MemoryStore;
pub use redis::RedisStore;

use crate::config::StoreSettings;

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

/// What tether keeps: grows with recording and resume. Implementations never
/// block the caller for longer than their configured command timeout.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    fn kind(&self) -> StoreKind;

    /// Asks the backend whether it answers right now.
    async fn health(&self) -> StoreHealth;
}

/// Builds the configured store. A Redis that does not answer yet is not an
/// error: tether serves anyway and the connection is retried in the background.
pub async fn connect(settings: &StoreSettings) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match settings {
        StoreSettings::Memory => Arc::new(MemoryStore::new()),
        StoreSettings::Redis {
            url,
            connect_timeout,
            command_timeout,
        } => Arc::new(RedisStore::connect(url, *connect_timeout, *command_timeout).await?),
    })
}

/// Failures at the store boundary.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    #[error("redis did not answer within {0:?}")]
    Timeout(std::time::Duration),
}
