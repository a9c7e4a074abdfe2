//! One Redis, or a Redis Cluster: the two connections the store and the bus use, behind one
//! type each, so the rest of the crate sends commands without knowing which it talks to.
//!
//! - [`Conn`]: commands. On one Redis a `ConnectionManager` (it reconnects by itself); on a
//!   cluster the redis crate's cluster connection, which routes each command by its first key's
//!   hash slot (an `FCALL` by its first declared key), follows `MOVED`/`ASK` redirections, and
//!   refreshes its slot map after a failover or a resharding. A pipeline goes to one node: on a
//!   cluster all its commands must be in one slot.
//! - The subscriber is a [`Conn`] too, on RESP3 with a push sender. On one Redis it uses
//!   `SUBSCRIBE` (the channels are those of every earlier version, so nodes of two versions
//!   hear each other during a rolling upgrade); on a cluster sharded pub/sub, `SSUBSCRIBE`, so a
//!   channel's messages travel only inside the shard that owns its slot.

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

/// A command connection (or the subscriber) to one Redis or to a cluster. Clones share it.
#[derive(Clone)]
pub(crate) enum Conn {
    /// One Redis (or a replica set's primary behind one address).
    Single(ConnectionManager),
    /// A Redis Cluster.
    Cluster(ClusterConnection),
}

impl Conn {
    /// Whether this is a cluster connection.
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self, Conn::Cluster(_))
    }

    /// Subscribes `channels`: `SUBSCRIBE` on one Redis, `SSUBSCRIBE` on a cluster.
    pub(crate) async fn subscribe(&mut self, channels: &[String]) -> RedisResult<()> {
        match self {
            Conn::Single(c) => c.subscribe(channels).await,
            Conn::Cluster(c) => per_channel(c, channels, true).await,
        }
    }

    /// Unsubscribes `channels`: `UNSUBSCRIBE` on one Redis, `SUNSUBSCRIBE` on a cluster.
    pub(crate) async fn unsubscribe(&mut self, channels: &[String]) -> RedisResult<()> {
        match self {
            Conn::Single(c) => c.unsubscribe(channels).await,
            Conn::Cluster(c) => per_channel(c, channels, false).await,
        }
    }
}

/// `SSUBSCRIBE` (or `SUNSUBSCRIBE`) each channel with a command of its own, all at once: one
/// command naming channels of different slots is refused (`CROSSSLOT`), and each slot may live
/// on another shard. The first failure is returned once every command has answered.
async fn per_channel(
    c: &ClusterConnection,
    channels: &[String],
    subscribe: bool,
) -> RedisResult<()> {
    let calls = channels.iter().map(|ch| {
        let mut c = c.clone();
        async move {
            if subscribe {
                c.ssubscribe(ch).await
            } else {
                c.sunsubscribe(ch).await
            }
        }
    });
    futures_util::future::join_all(calls)
        .await
        .into_iter()
        .collect::<RedisResult<Vec<()>>>()
        .map(drop)
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}
