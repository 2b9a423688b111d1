//! The Redis store, through the redis crate's connection manager, which
//! multiplexes commands over one connection and reconnects by itself.
//!
//! The manager is created lazily so that a Redis that is down at start does
//! not stop tether from serving: the first ping only decides what is logged.

use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{Store, StoreError, StoreHealth, StoreKind};

pub struct RedisStore {
    conn: ConnectionManager,
    command_timeout: Duration,
}

impl RedisStore {
    /// Sets up the connection and pings once; a failed ping is logged, not returned.
    pub async fn connect(
        url: &str,
        connect_timeout: Duration,
        command_timeout: Duration,
    ) -> Result<Self, StoreError> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(connect_timeout))
            .set_response_timeout(Some(command_timeout))
            // Reconnects back off up to a second, so a dead Redis is retried
            // often enough to notice its return and rarely enough to cost nothing.
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1))
            .set_number_of_retries(3);
        let conn = ConnectionManager::new_lazy_with_config(client, config)?;
        let store = RedisStore {
            conn,
            command_timeout,
        };
        match store.ping().await {
            Ok(()) => tracing::info!(redis = %redacted(url), "redis answered"),
            Err(e) => tracing::warn!(
                redis = %redacted(url), error = %e,
                "redis does not answer; serving anyway and retrying in the background"
            ),
        }
        Ok(store)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let cmd = redis::cmd("PING");
        let ping = cmd.query_async::<String>(&mut conn);
        match tokio::time::timeout(self.command_timeout, ping).await {
            Ok(result) => result.map(drop).map_err(StoreError::from),
            Err(_) => Err(StoreError::Timeout(self.command_timeout)),
        }
    }
}

#[async_trait]
impl Store for RedisStore {
    fn kind(&self) -> StoreKind {
        StoreKind::Redis
    }

    async fn health(&self) -> StoreHealth {
        let result = self.ping().await;
        StoreHealth {
            store: StoreKind::Redis,
            connected: result.is_ok(),
            error: result.err().map(|e| e.to_string()),
        }
    }
}

/// The URL with any password replaced, for logs.
pub fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(parsed) => parsed.to_string(),
        Err(_) => "<unparsable url>".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::redacted;

    #[test]
    fn passwords_never_reach_the_log() {
        let shown = redacted("redis://:hunter2@redis.internal:6380/2");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("redis.internal:6380/2"), "{shown}");
    }
}
