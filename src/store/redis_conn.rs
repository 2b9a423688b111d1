//! One connection type for a standalone Redis, a Redis Cluster and a
//! Sentinel-managed master, so the store's commands are written once.
//! Standalone: the redis crate's connection manager (multiplexed,
//! reconnecting). Cluster: the crate's cluster connection, made on first use
//! (a cluster that is down at start does not stop tether) and routing each
//! command by its key's slot. Sentinel: [`SentinelMaster`], which asks the
//! Sentinels again after a failover.

use std::sync::Arc;

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};
use tokio::sync::OnceCell;

use super::redis_sentinel::SentinelMaster;

#[derive(Clone)]
pub enum RedisConn {
    Single(ConnectionManager),
    Cluster(Arc<LazyCluster>),
    Sentinel(Arc<SentinelMaster>),
}

impl RedisConn {
    /// A command of this connection's timed out: a master behind a network
    /// partition answers nothing, so a Sentinel-managed one is looked up
    /// again. The others reconnect by themselves.
    pub fn timed_out(&self) {
        if let RedisConn::Sentinel(master) = self {
            master.forget_current();
        }
    }
}

/// Where the store's connections of their own go: blocking reads of live
/// tails (which must not hold up the shared connection) and the
/// subscription to control requests.
pub enum Nodes {
    Standalone(Box<redis::Client>),
    /// Some of a cluster's nodes: a tail starts at the first and follows
    /// MOVED; the subscription takes whichever answers (a cluster
    /// broadcasts every PUBLISH).
    Cluster(Vec<redis::Client>),
    /// The current master (a demoted one still passes PUBLISH on, as
    /// replicas receive what their master publishes).
    Sentinel(Arc<SentinelMaster>),
}

/// A cluster connection made when first needed, and again after a failed attempt.
pub struct LazyCluster {
    client: ClusterClient,
    conn: OnceCell<ClusterConnection>,
}

impl LazyCluster {
    pub fn new(client: ClusterClient) -> LazyCluster {
        LazyCluster {
            client,
            conn: OnceCell::new(),
        }
    }

    async fn get(&self) -> redis::RedisResult<ClusterConnection> {
        self.conn
            .get_or_try_init(|| self.client.get_async_connection())
            .await
            .cloned()
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConn::Single(conn) => conn.req_packed_command(cmd),
            RedisConn::Cluster(lazy) => {
                Box::pin(async move { lazy.get().await?.req_packed_command(cmd).await })
            }
            RedisConn::Sentinel(master) => Box::pin(async move { master.command(cmd).await }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConn::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            RedisConn::Cluster(lazy) => Box::pin(async move {
                lazy.get()
                    .await?
                    .req_packed_commands(pipeline, offset, count)
                    .await
            }),
            RedisConn::Sentinel(master) => {
                Box::pin(async move { master.pipeline(pipeline, offset, count).await })
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConn::Single(conn) => conn.get_db(),
            RedisConn::Cluster(_) => 0,
            RedisConn::Sentinel(master) => master.db(),
        }
    }
}
