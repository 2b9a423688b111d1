//! The master that Redis Sentinels name, found again after a failover.
//!
//! The redis crate asks the Sentinels for a master and checks its `ROLE`,
//! but hands back a plain client: a connection to it stays on that node
//! after a failover (refusing writes with `READONLY` once demoted, or dead).
//! [`SentinelMaster`] keeps one multiplexed connection to the master it was
//! last told about and forgets it when a command shows the node is gone or
//! no longer the master, so the next command asks the Sentinels again.
//! Lookups are serialised (one at a time, whoever waits gets its result)
//! and bounded in time, so a failover never stalls a caller for longer than
//! the connect and command timeouts.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::sentinel::{Sentinel, SentinelNodeConnectionInfo};
use redis::{
    AsyncConnectionConfig, Cmd, ErrorKind, Pipeline, RedisError, RedisResult, ServerErrorKind,
    Value,
};

use crate::config::SentinelSettings;

pub struct SentinelMaster {
    /// Also the lock that makes lookups one at a time.
    sentinel: tokio::sync::Mutex<Sentinel>,
    name: String,
    node: SentinelNodeConnectionInfo,
    db: i64,
    connect_timeout: Duration,
    command_timeout: Duration,
    current: Mutex<Option<Master>>,
    lookups: AtomicU64,
}

/// The master as last looked up; `generation` tells lookups apart so a
/// failure on an old connection does not throw away a newer one.
#[derive(Clone)]
pub struct Master {
    generation: u64,
    pub client: redis::Client,
    pub conn: MultiplexedConnection,
}

impl SentinelMaster {
    pub fn new(
        settings: &SentinelSettings,
        connect_timeout: Duration,
        command_timeout: Duration,
    ) -> RedisResult<SentinelMaster> {
        let auth = settings
            .sentinel_password
            .as_deref()
            .map(|p| format!(":{}@", url_escape(p)))
            .unwrap_or_default();
        let sentinels: Vec<String> = settings
            .sentinels
            .iter()
            .map(|host| format!("redis://{auth}{host}"))
            .collect();
        let mut redis_info = redis::RedisConnectionInfo::default().set_db(settings.db);
        if let Some(username) = &settings.username {
            redis_info = redis_info.set_username(username);
        }
        if let Some(password) = &settings.password {
            redis_info = redis_info.set_password(password);
        }
        Ok(SentinelMaster {
            sentinel: tokio::sync::Mutex::new(Sentinel::build(sentinels)?),
            name: settings.master.clone(),
            node: SentinelNodeConnectionInfo::default().set_redis_connection_info(redis_info),
            db: settings.db,
            connect_timeout,
            command_timeout,
            current: Mutex::new(None),
            lookups: AtomicU64::new(0),
        })
    }

    /// The master's connection, looked up first if there is none.
    pub async fn get(&self) -> RedisResult<Master> {
        if let Some(master) = self.cached() {
            return Ok(master);
        }
        let mut sentinel = self.sentinel.lock().await;
        // Somebody else's lookup may have finished while this one waited.
        if let Some(master) = self.cached() {
            return Ok(master);
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.command_timeout));
        let lookup = async {
            let client = sentinel
                .async_master_for(&self.name, Some(&self.node))
                .await?;
            let conn = client
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            Ok::<_, RedisError>((client, conn))
        };
        // Asking every Sentinel, checking the ROLE of what they name and
        // connecting: each step has its own bound, this is the sum's.
        let bound = self.connect_timeout * 2 + self.command_timeout;
        let (client, conn) = tokio::time::timeout(bound, lookup)
            .await
            .map_err(|_| RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut)))??;
        let master = Master {
            generation: self.lookups.fetch_add(1, Ordering::Relaxed) + 1,
            client,
            conn,
        };
        tracing::info!(
            master = %self.name,
            addr = %master.client.get_connection_info().addr(),
            "the Sentinels name the redis master"
        );
        *self.current.lock().expect("not poisoned") = Some(master.clone());
        Ok(master)
    }

    fn cached(&self) -> Option<Master> {
        self.current.lock().expect("not poisoned").clone()
    }

    /// Drops the connection of lookup `generation` (if it is still the
    /// current one): the next command asks the Sentinels again.
    pub fn forget(&self, generation: u64) {
        let mut current = self.current.lock().expect("not poisoned");
        if current.as_ref().is_some_and(|m| m.generation == generation) {
            tracing::warn!(master = %self.name, "lost the redis master; asking the Sentinels again");
            *current = None;
        }
    }

    /// Forgets whichever connection is current (after a command timed out
    /// on it: a master behind a partition answers nothing, not an error).
    pub fn forget_current(&self) {
        if let Some(master) = self.cached() {
            self.forget(master.generation);
        }
    }

    /// Runs a command on the master. On a sign of failover the master is
    /// looked up again and the command sent once more, so the first command
    /// after a failover does not fail for nothing: every command the store
    /// sends may run twice (writes carry their ids). Not after a timeout,
    /// which may mean a slow master rather than a gone one.
    pub async fn command(&self, cmd: &Cmd) -> RedisResult<Value> {
        let master = self.get().await?;
        let result = master.conn.clone().req_packed_command(cmd).await;
        if !self.lost(&master, &result) {
            return result;
        }
        self.get().await?.conn.req_packed_command(cmd).await
    }

    pub async fn pipeline(
        &self,
        pipeline: &Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        let master = self.get().await?;
        let result = master
            .conn
            .clone()
            .req_packed_commands(pipeline, offset, count)
            .await;
        if !self.lost(&master, &result) {
            return result;
        }
        self.get()
            .await?
            .conn
            .req_packed_commands(pipeline, offset, count)
            .await
    }

    /// Forgets `master` if `result` shows it is gone or demoted; true when
    /// the command is worth sending again to whatever is master now.
    fn lost<T>(&self, master: &Master, result: &RedisResult<T>) -> bool {
        match result {
            Err(e) if not_the_master(e) => {
                self.forget(master.generation);
                !e.is_timeout()
            }
            _ => false,
        }
    }

    pub fn db(&self) -> i64 {
        self.db
    }
}

/// Errors after which the node is not (or no longer) the master to use.
pub fn not_the_master(e: &RedisError) -> bool {
    e.is_unrecoverable_error()
        || e.is_io_error()
        || e.is_timeout()
        || matches!(
            e.kind(),
            ErrorKind::Server(ServerErrorKind::ReadOnly | ServerErrorKind::MasterDown)
        )
}

fn url_escape(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}
