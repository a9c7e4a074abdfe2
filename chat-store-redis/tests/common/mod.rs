//! Helpers shared by this crate's integration tests.

#![allow(dead_code)] // each test binary uses a different subset

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chat_core::store::RequestStore;
use chat_core::{Delivery, EventBus, EventSink, NodeId};
use chat_store_redis::RedisStore;
use chat_store_redis::test_server::RedisServer;
use tokio::sync::Notify;

/// A sink that records deliveries and wakes waiters, so tests wait on events, not on sleeps.
#[derive(Default)]
pub struct Waiter {
    got: Mutex<Vec<Delivery>>,
    notify: Notify,
}

impl EventSink for Waiter {
    fn deliver(&self, delivery: &Delivery) {
        self.got.lock().expect("lock").push(delivery.clone());
        self.notify.notify_waiters();
    }
}

impl Waiter {
    /// Everything received so far.
    pub fn all(&self) -> Vec<Delivery> {
        self.got.lock().expect("lock").clone()
    }

    /// Waits (at most `timeout`) until some delivery matches `pred`; false on timeout.
    pub async fn wait_for(&self, timeout: Duration, pred: impl Fn(&Delivery) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let mut woken = std::pin::pin!(self.notify.notified());
            woken.as_mut().enable();
            if self.all().iter().any(&pred) {
                return true;
            }
            if tokio::time::timeout_at(deadline, woken).await.is_err() {
                return false;
            }
        }
    }
}

/// A fresh key prefix, so tests never share keys or channels.
pub fn prefix() -> String {
    format!("t{}:", uuid::Uuid::new_v4().simple())
}

/// A store on `server` under `prefix` with a recording sink attached.
pub async fn node(server: &RedisServer, prefix: &str) -> (RedisStore, Arc<Waiter>) {
    let store = RedisStore::connect(&server.url(), prefix, NodeId::random())
        .await
        .expect("connect");
    let waiter = Arc::new(Waiter::default());
    store.attach(waiter.clone());
    (store, waiter)
}

/// [`node`] writing bus format `format`.
pub async fn node_with_format(
    server: &RedisServer,
    prefix: &str,
    format: u8,
) -> (RedisStore, Arc<Waiter>) {
    let config = chat_store_redis::RedisConfig {
        bus_format: format,
        ..chat_store_redis::RedisConfig::single(&server.url())
    };
    let store = RedisStore::connect_config(&config, prefix, NodeId::random())
        .await
        .expect("connect");
    let waiter = Arc::new(Waiter::default());
    store.attach(waiter.clone());
    (store, waiter)
}

/// A plain connection for looking at Redis directly.
pub async fn raw(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
    redis::Client::open(server.url())
        .expect("client")
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .expect("raw connection")
}

/// Unix ms now.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
}

/// A room of `a` and `b` made by a request from `a` and its accept at `t`, ending at `t + ttl`.
pub async fn make_room(
    store: &RedisStore,
    a: &chat_core::Phone,
    b: &chat_core::Phone,
    t: u64,
    ttl: u64,
) -> chat_core::RoomId {
    let new_room = chat_core::store::NewRoom {
        id: chat_core::RoomId::generate(),
        created_at: t,
        expires_at: t + ttl,
        names: Default::default(),
    };
    let req = chat_core::ChatRequest {
        from: a.clone(),
        to: b.clone(),
        created_at: t,
        expires_at: t + 60_000,
    };
    assert_eq!(
        store
            .send_request(req, new_room.clone())
            .await
            .expect("send"),
        chat_core::store::RequestOutcome::Sent
    );
    store
        .accept_request(a, b, new_room, t)
        .await
        .expect("accept")
        .expect("pending")
        .id
}
