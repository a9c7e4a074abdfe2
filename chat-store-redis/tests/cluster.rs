//! What the conformance suite on a cluster cannot see: where the keys are (the directory in one
//! slot, each room in its own, rooms spread over the shards), the function library loaded
//! again on every master after the masters forgot it, and a room closed between the two steps
//! of an accept staying closed.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chat_core::store::prelude::*;
use chat_core::{NewMessage, NodeId, Phone, RoomId, Session, Token};
use chat_store_redis::test_server::RedisCluster;
use chat_store_redis::{RedisConfig, RedisStore};
use common::{make_room, now, prefix};
use redis::aio::MultiplexedConnection;

fn phone(n: u32) -> Phone {
    Phone::parse(&format!("+1777{:07}", n)).expect("phone")
}

async fn store(cluster: &RedisCluster, prefix: &str) -> RedisStore {
    RedisStore::connect_config(
        &RedisConfig::cluster(&cluster.urls()),
        prefix,
        NodeId::random(),
    )
    .await
    .expect("connect to the cluster")
}

async fn start() -> Arc<RedisCluster> {
    Arc::new(
        tokio::task::spawn_blocking(RedisCluster::start)
            .await
            .expect("start the cluster"),
    )
}

/// A plain connection to one node (no cluster routing), for looking at it. No response
/// timeout: a busy machine must not fail the test's own look.
async fn direct(port: u16) -> MultiplexedConnection {
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
    redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .expect("client")
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .expect("connect to a node")
}

async fn register(store: &RedisStore, p: &Phone, t: u64) -> Session {
    let session = Session {
        phone: p.clone(),
        name: None,
        token_digest: Token::generate().expect("token").digest(),
        created_at: t,
    };
    store
        .create_session(session.clone(), None, t + 600_000)
        .await
        .expect("create_session");
    session
}

fn message(sender: &Phone, text: &str) -> NewMessage {
    NewMessage {
        sender: sender.clone(),
        message: text.into(),
        timestamp: now(),
        client_id: Some(text.into()),
    }
}

/// Every key of `prefix` on each master.
async fn keys_by_master(cluster: &RedisCluster, prefix: &str) -> BTreeMap<u16, Vec<String>> {
    let mut out = BTreeMap::new();
    for port in cluster.masters() {
        let mut con = direct(port).await;
        // A private cluster of a test: KEYS is fine here (the store never scans).
        let mut keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("*{prefix}*"))
            .query_async(&mut con)
            .await
            .expect("KEYS");
        keys.sort();
        out.insert(port, keys);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_directory_is_one_slot_and_rooms_spread_over_the_shards() {
    let cluster = start().await;
    let p = prefix();
    let store = store(&cluster, &p).await;
    let t = now();
    let mut rooms = Vec::new();
    for i in 0..30 {
        let (a, b) = (phone(2 * i), phone(2 * i + 1));
        register(&store, &a, t).await;
        register(&store, &b, t).await;
        let room = make_room(&store, &a, &b, t, 600_000).await;
        store
            .append_message(&room, message(&a, "hello"), 100)
            .await
            .expect("append");
        rooms.push(room);
    }
    let by_master = keys_by_master(&cluster, &p).await;
    let directory = format!("{{{p}}}");
    let masters_with_directory: Vec<u16> = by_master
        .iter()
        .filter(|(_, keys)| keys.iter().any(|k| k.starts_with(&directory)))
        .map(|(port, _)| *port)
        .collect();
    assert_eq!(masters_with_directory.len(), 1, "{by_master:?}");
    let mut room_masters = BTreeMap::<u16, usize>::new();
    for room in &rooms {
        let tag = format!("{p}{{{room}}}:");
        let holders: BTreeSet<u16> = by_master
            .iter()
            .filter(|(_, keys)| keys.iter().any(|k| k.starts_with(&tag)))
            .map(|(port, _)| *port)
            .collect();
        assert_eq!(holders.len(), 1, "room {room} is on one shard: {holders:?}");
        let port = *holders.first().expect("a holder");
        assert_eq!(port, cluster.master_of_key(&format!("{tag}m")));
        *room_masters.entry(port).or_default() += 1;
        // Meta and history (and dedupe: the message had a client id) under the room's tag.
        let parts: BTreeSet<String> = by_master[&port]
            .iter()
            .filter_map(|k| k.strip_prefix(&tag).map(str::to_owned))
            .collect();
        assert_eq!(
            parts,
            ["d", "h", "m"].into_iter().map(String::from).collect(),
            "{room}"
        );
    }
    // 30 rooms over 3 shards: each shard holds some (all on one is 3^-29 likely).
    assert_eq!(room_masters.len(), 3, "{room_masters:?}");
    // Every key is the directory's or a room's: nothing else.
    for keys in by_master.values() {
        for k in keys {
            assert!(
                k.starts_with(&directory) || k.starts_with(&format!("{p}{{")),
                "{k}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn functions_come_back_on_every_master_after_they_forget_them() {
    let cluster = start().await;
    let p = prefix();
    let store = store(&cluster, &p).await;
    let t = now();
    let (a, b) = (phone(100), phone(101));
    register(&store, &a, t).await;
    register(&store, &b, t).await;
    let room = make_room(&store, &a, &b, t, 600_000).await;
    for port in cluster.masters() {
        let mut con = direct(port).await;
        redis::cmd("FUNCTION")
            .arg("FLUSH")
            .query_async::<()>(&mut con)
            .await
            .expect("FUNCTION FLUSH");
    }
    // A directory function, then the room's hot path: each loads the library again.
    assert!(store.presence(&a).await.expect("presence").is_some());
    store
        .append_message(&room, message(&a, "after"), 100)
        .await
        .expect("append after the flush");
    for port in cluster.masters() {
        let mut con = direct(port).await;
        let libraries: Vec<redis::Value> = redis::cmd("FUNCTION")
            .arg("LIST")
            .query_async(&mut con)
            .await
            .expect("FUNCTION LIST");
        assert_eq!(libraries.len(), 1, "master {port} has the library again");
    }
}

/// A block between the accept's directory step and its room step (here: the room closed by
/// hand between them, as a block would) leaves the room closed: the late open is refused by
/// the tombstone and no message can be stored in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_closed_before_it_opened_stays_closed() {
    let cluster = start().await;
    let p = prefix();
    let store = store(&cluster, &p).await;
    let t = now();
    let (a, b) = (phone(200), phone(201));
    register(&store, &a, t).await;
    register(&store, &b, t).await;
    let room = make_room(&store, &a, &b, t, 600_000).await;
    // Close it (directory step and room step), then replay an open as a slow accept would.
    assert!(store.delete_room(&room).await.expect("delete").is_some());
    let tag = format!("{p}{{{room}}}:");
    let mut con = direct(cluster.master_of_key(&format!("{tag}m"))).await;
    let tombstone: Option<String> = redis::cmd("GET")
        .arg(format!("{tag}z"))
        .query_async(&mut con)
        .await
        .expect("GET");
    assert_eq!(tombstone.as_deref(), Some("1"));
    let meta: i64 = redis::cmd("EXISTS")
        .arg(format!("{tag}m"))
        .query_async(&mut con)
        .await
        .expect("EXISTS");
    assert_eq!(meta, 0);
    // The room step of an accept that arrives now: refused, nothing made.
    let list: redis::Value = redis::cmd("FUNCTION")
        .arg("LIST")
        .query_async(&mut con)
        .await
        .expect("FUNCTION LIST");
    let open_room = format!("{list:?}")
        .split('"')
        .find(|s| s.starts_with("chat_") && s.ends_with("_open_room"))
        .map(str::to_owned)
        .expect("the open_room function is loaded");
    let opened: i64 = redis::cmd("FCALL")
        .arg(&open_room)
        .arg(2)
        .arg(format!("{tag}m"))
        .arg(format!("{tag}z"))
        .arg(a.as_str())
        .arg(b.as_str())
        .arg(t)
        .arg(t + 600_000)
        .query_async(&mut con)
        .await
        .expect("FCALL open_room");
    assert_eq!(opened, 0, "a closed room does not open again");
    assert_eq!(
        redis::cmd("EXISTS")
            .arg(format!("{tag}m"))
            .query_async::<i64>(&mut con)
            .await
            .expect("EXISTS"),
        0
    );
    assert!(matches!(
        store.append_message(&room, message(&a, "late"), 100).await,
        Err(chat_core::Error::RoomNotFound)
    ));
    assert!(store.room(&room).await.expect("room").is_none());
    assert!(store.rooms_of(&a).await.expect("rooms").is_empty());
}

/// An accept whose room step never ran (the room's shard failing over, the node dying between
/// the steps) leaves a room the directory holds and its slot does not: it opens at its first
/// use (a message, a look-up, history), not at its expiry hours later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_whose_open_was_lost_opens_at_its_first_use() {
    let cluster = start().await;
    let p = prefix();
    let store = store(&cluster, &p).await;
    let t = now();
    let (a, b) = (phone(300), phone(301));
    register(&store, &a, t).await;
    register(&store, &b, t).await;
    let lose_open = |room: RoomId| {
        let key = format!("{p}{{{room}}}:m");
        let port = cluster.master_of_key(&key);
        async move {
            let mut con = direct(port).await;
            let n: i64 = redis::cmd("DEL")
                .arg(&key)
                .query_async(&mut con)
                .await
                .expect("DEL");
            assert_eq!(n, 1);
        }
    };
    let room = make_room(&store, &a, &b, t, 600_000).await;
    lose_open(room).await;
    let m = store
        .append_message(&room, message(&a, "first"), 100)
        .await
        .expect("the first message opens the room");
    assert_eq!(m.into_message().message, "first");
    let found = store.room(&room).await.expect("room").expect("open");
    assert_eq!(found.members, [a.clone(), b.clone()]);

    // The same through a look-up, and through a batch of messages.
    assert!(store.delete_room(&room).await.expect("close").is_some());
    let room = make_room(&store, &a, &b, t, 600_000).await;
    lose_open(room).await;
    assert!(store.room(&room).await.expect("room").is_some());
    lose_open(room).await;
    let results = store
        .append_messages(
            vec![(room, message(&b, "x")), (room, message(&a, "y"))],
            100,
        )
        .await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let page = store.history(&room, None, 10).await.expect("history");
    let texts: Vec<_> = page.messages.iter().map(|m| m.message.as_str()).collect();
    assert_eq!(texts, ["x", "y"]);
    // A closed room stays closed: nothing reopens it.
    assert!(store.delete_room(&room).await.expect("close").is_some());
    assert!(store.room(&room).await.expect("room").is_none());
}
