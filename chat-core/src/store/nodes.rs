//! Nodes: the server processes sharing the store, each alive while it heartbeats; a dead
//! node's sockets are reaped by another. Also whether the store itself answers.

use crate::error::Result;
use crate::types::{Millis, NodeId, Phone};

/// The nodes sharing this store, and whether the store answers.
///
/// Part of the [`Store`](super::Store) port; its contract holds for every method here.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait::async_trait]
pub trait NodeStore: Send + Sync + 'static {
    /// Records that `node` is alive until `alive_until`.
    async fn heartbeat(&self, node: &NodeId, alive_until: Millis) -> Result<()>;

    /// Claims every node whose heartbeat ran out before `now` (each dead node is claimed by one
    /// caller once), forgets its sockets as [`PresenceStore::remove_conn`](super::PresenceStore::remove_conn) does (with `grace_until`),
    /// and returns the users left with no socket.
    async fn reap_dead_nodes(&self, now: Millis, grace_until: Millis) -> Result<Vec<Phone>>;

    /// Forgets `node` and its sockets, as on a clean shutdown; same result as a reap.
    async fn remove_node(
        &self,
        node: &NodeId,
        now: Millis,
        grace_until: Millis,
    ) -> Result<Vec<Phone>>;

    /// Whether the store answers (for `/readyz`).
    async fn ping(&self) -> Result<()>;
}
