//! What every request handler shares: the checked settings, the proxy with
//! its pooled upstream client, the stores, this replica's stream hubs, the
//! metrics, and the tracker of background work.

use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use crate::config::Settings;
use crate::metrics::Metrics;
use crate::proxy::{ClientError, Proxy};
use crate::record::history_writer::{HistoryWriter, QueueBounds};
use crate::store::{self, CheckpointStore, Store, StoreError};
use crate::stream::Registry;

pub struct App {
    pub settings: Settings,
    pub proxy: Proxy,
    pub store: Arc<dyn Store>,
    /// The write-behind queue in front of `store` for recorded turns.
    pub history: Arc<HistoryWriter>,
    /// Where stream checkpoints go for other replicas; `None` with the embedded store.
    pub checkpoints: Option<Arc<dyn CheckpointStore>>,
    /// This replica's stream hubs.
    pub streams: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    /// Background work (recording, checkpoints) that shutdown waits for.
    pub tracker: TaskTracker,
    /// One permit per open client connection or switched tunnel, up to
    /// `server.max_connections`.
    pub connections: Arc<Semaphore>,
}

/// Why tether could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl App {
    pub async fn build(settings: Settings) -> Result<Arc<App>, StartError> {
        let proxy = Proxy::new(&settings.upstream, settings.server.max_request_bytes)?;
        let retention = store::Retention {
            history_ttl: settings.history_ttl,
        };
        let metrics = Arc::new(Metrics::new());
        let memory = store::MemoryBudget {
            max_bytes: settings.store_memory_max_bytes,
            evicted: metrics.history_evicted.clone(),
        };
        let stores = store::connect(&settings.store, retention, memory).await?;
        let streams = Arc::new(Registry::new(
            settings.streams.retention,
            settings.streams.max_detached,
            metrics.detached_streams.clone(),
        ));
        if let Some(checkpoints) = &stores.checkpoints {
            crate::stream::cancels::spawn(
                checkpoints.clone(),
                Arc::downgrade(&streams),
                streams.control_link(),
            );
        }
        let history = Arc::new(HistoryWriter::spawn(
            stores.history.clone(),
            metrics.clone(),
            QueueBounds {
                turns: settings.store_queue_capacity,
                bytes: settings.store_queue_max_bytes,
            },
            settings.store_writers,
        ));
        Ok(Arc::new(App {
            proxy,
            store: stores.history,
            history,
            checkpoints: stores.checkpoints,
            streams,
            metrics,
            tracker: TaskTracker::new(),
            connections: Arc::new(Semaphore::new(settings.server.max_connections)),
            settings,
        }))
    }
}
