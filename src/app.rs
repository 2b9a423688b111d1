//! What every request handler shares: the checked settings, the proxy with
//! its pooled upstream client, the store, and the tracker of background work.

use std::sync::Arc;

use tokio_util::task::TaskTracker;

use crate::config::Settings;
use crate::metrics::Metrics;
use crate::proxy::{ClientError, Proxy};
use crate::store::{self, Store, StoreError};

pub struct App {
    pub settings: Settings,
    pub proxy: Proxy,
    pub store: Arc<dyn Store>,
    pub metrics: Arc<Metrics>,
    /// Background work (recording, checkpoints) that shutdown waits for.
    pub tracker: TaskTracker,
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
        let store = store::connect(&settings.store, retention).await?;
        Ok(Arc::new(App {
            settings,
            proxy,
            store,
            metrics: Arc::new(Metrics::new()),
            tracker: TaskTracker::new(),
        }))
    }
}
