//! The embedded store, used when no Redis is configured. It lives in the
//! process: nothing survives a restart, and replicas do not share it.

use async_trait::async_trait;

use super::{Store, StoreHealth, StoreKind};

#[derive(Debug, Default)]
pub struct MemoryStore {}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl Store for MemoryStore {
    fn kind(&self) -> StoreKind {
        StoreKind::Memory
    }

    async fn health(&self) -> StoreHealth {
        StoreHealth {
            store: StoreKind::Memory,
            connected: true,
            error: None,
        }
    }
}
