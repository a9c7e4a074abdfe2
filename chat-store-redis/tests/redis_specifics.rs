//! What the conformance suite cannot see: key expiry, bounded dedupe, freed keys, no keyspace
//! scans, cursor validation, numeric id order, the compact message entry (separators, the
//! older one-field-per-part layout), the function library reloaded after Redis forgot it, and
//! the bus's receive path (full queue, undecodable payloads, a killed subscriber connection).

mod common;

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use chat_core::store::prelude::*;
use chat_core::store::{Appended, NewRoom, RequestOutcome};
use chat_core::{
    Audience, ChatRequest, ConnKey, Delivery, Error, Event, EventBus, EventSink, NewMessage,
    NodeId, Phone, RoomId, Session, Token,
};
use chat_store_redis::bus::DELIVERY_QUEUE;
use chat_store_redis::test_server::RedisServer;
use chat_store_redis::{ConnectError, RedisStore};
use common::{Waiter, make_room, node, now, prefix, raw};
use redis::aio::MultiplexedConnection;

const MARGIN: u64 = 3_600_000;
const WAIT: Duration = Duration::from_secs(5);

fn phone(n: u32) -> Phone {
    Phone::parse(&format!("+1666{:07}", n)).expect("phone")
}

async fn register(store: &RedisStore, p: &Phone, created_at: u64, http_until: u64) -> Session {
    let session = Session {
        phone: p.clone(),
        name: Some("N".into()),
        token_digest: Token::generate().expect("token").digest(),
        created_at,
    };
    store
        .create_session(session.clone(), None, http_until)
        .await
        .expect("create_session");
    session
}

async fn pexpiretime(con: &mut MultiplexedConnection, key: &str) -> i64 {
    redis::cmd("PEXPIRETIME")
        .arg(key)
        .query_async(con)
        .await
        .expect("PEXPIRETIME")
}

async fn keys(con: &mut MultiplexedConnection, prefix: &str) -> Vec<String> {
    let mut k: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(con)
        .await
        .expect("KEYS");
    k.sort();
    k
}

fn msg(sender: &Phone, text: &str, cid: Option<&str>) -> NewMessage {
    NewMessage {
        sender: sender.clone(),
        message: text.into(),
        timestamp: now(),
        client_id: cid.map(Into::into),
    }
}

fn assert_near(actual: i64, expected: u64, what: &str) {
    let diff = (actual - expected as i64).abs();
    assert!(
        diff < 10_000,
        "{what}: expires at {actual}, expected about {expected}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_expire_a_margin_after_the_callers_deadlines() {
    let server = RedisServer::start();
    let p = prefix();
    let (store, _) = node(&server, &p).await;
    let mut con = raw(&server).await;
    let (a, b) = (phone(1), phone(2));
    let t = now();
    let sa = register(&store, &a, t, t + 60_000).await;
    register(&store, &b, t, t + 60_000).await;

    // Online through HTTP only: the session keys expire a week after the window, not before.
    let week = 7 * 24 * 3_600_000;
    assert_near(
        pexpiretime(&mut con, &format!("{p}s:{a}")).await,
        t + 60_000 + week,
        "session",
    );
    assert_near(
        pexpiretime(&mut con, &format!("{p}t:{}", sa.token_digest.hex())).await,
        t + 60_000 + week,
        "token",
    );

    // A socket holds the session: no expiry at all.
    let conn = ConnKey {
        node: NodeId("n1".into()),
        id: 1,
    };
    store.add_conn(&a, &conn).await.expect("add_conn");
    assert_eq!(pexpiretime(&mut con, &format!("{p}s:{a}")).await, -1);
    store
        .remove_conn(&a, &conn, t + 1, u64::MAX / 2)
        .await
        .expect("remove_conn");
    assert_near(
        pexpiretime(&mut con, &format!("{p}s:{a}")).await,
        t + 60_000 + week,
        "session",
    );

    // Offline: freed a margin after the session's end.
    assert!(
        store
            .go_offline(&a, t + 60_000, t + 120_000)
            .await
            .expect("go_offline")
    );
    assert_near(
        pexpiretime(&mut con, &format!("{p}s:{a}")).await,
        t + 120_000 + MARGIN,
        "offline",
    );

    // A room and everything under its hash tag expire with it.
    let room = make_room(&store, &b, &a, t, 300_000).await;
    // With `history_max` 1 the second client id moves the first generation of the dedupe hash
    // to `:o` and starts a new `:d`: both keep the room's expiry.
    for cid in ["k1", "k2"] {
        store
            .append_message(&room, msg(&b, "hi", Some(cid)), 1)
            .await
            .expect("append");
    }
    for part in ["m", "h", "d", "o"] {
        let key = format!("{p}{{{room}}}:{part}");
        assert_near(
            pexpiretime(&mut con, &key).await,
            t + 300_000 + MARGIN,
            &key,
        );
    }
    // A pending request expires a margin after its own deadline.
    let c = phone(3);
    register(&store, &c, t, t + 60_000).await;
    let req = ChatRequest {
        from: c.clone(),
        to: b.clone(),
        created_at: t,
        expires_at: t + 30_000,
    };
    let unused = NewRoom {
        id: RoomId::generate(),
        created_at: t,
        expires_at: t + 300_000,
        names: Default::default(),
    };
    store.send_request(req, unused).await.expect("send");
    assert_near(
        pexpiretime(&mut con, &format!("{p}rq:{c}:{b}")).await,
        t + 30_000 + MARGIN,
        "request",
    );

    // A caller clock far behind Redis's never makes data vanish early: expiry counts from
    // Redis's now instead.
    let old = 1_000_000;
    let d = phone(4);
    register(&store, &d, old, old + 1).await;
    assert!(store.presence(&d).await.expect("presence").is_some());
    assert_near(
        pexpiretime(&mut con, &format!("{p}s:{d}")).await,
        now() + week,
        "old clock",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ended_sessions_and_rooms_leave_no_keys_and_nothing_scans_the_keyspace() {
    let server = RedisServer::start();
    let p = prefix();
    let (store, _) = node(&server, &p).await;
    let mut con = raw(&server).await;
    let (a, b, c) = (phone(11), phone(12), phone(13));
    let t = now();
    for x in [&a, &b, &c] {
        register(&store, x, t, t + 1).await;
    }
    let ab = make_room(&store, &a, &b, t, 300_000).await;
    let bc = make_room(&store, &b, &c, t, 300_000).await;
    for i in 0..5 {
        let cid = format!("c{i}");
        store
            .append_message(&ab, msg(&a, "x", Some(&cid)), 100)
            .await
            .expect("append");
        store
            .append_message(&bc, msg(&c, "y", None), 100)
            .await
            .expect("append");
    }
    let req = ChatRequest {
        from: a.clone(),
        to: c.clone(),
        created_at: t,
        expires_at: t + 60_000,
    };
    let unused = NewRoom {
        id: RoomId::generate(),
        created_at: t,
        expires_at: t + 300_000,
        names: Default::default(),
    };
    store.send_request(req, unused).await.expect("send");
    let conn = ConnKey {
        node: NodeId("n".into()),
        id: 1,
    };
    store
        .heartbeat(&conn.node, t + 10_000)
        .await
        .expect("heartbeat");
    store.add_conn(&c, &conn).await.expect("add_conn");
    store
        .remove_conn(&c, &conn, t + 2, u64::MAX / 2)
        .await
        .expect("remove_conn");
    store
        .remove_node(&conn.node, t + 2, u64::MAX / 2)
        .await
        .expect("remove_node");
    store.online_page(None, 10, t).await.expect("online");
    store.requests(&a, t).await.expect("requests");
    store.rooms_of(&a).await.expect("rooms_of");

    // Nothing above (nor the store's background tasks) walked the keyspace.
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut con)
        .await
        .expect("INFO");
    for banned in ["cmdstat_keys:", "cmdstat_scan:"] {
        assert!(!stats.contains(banned), "the store ran {banned}\n{stats}");
    }

    for x in [&a, &b, &c] {
        assert!(
            store
                .go_offline(x, t + 5, t + 10)
                .await
                .expect("go_offline")
        );
    }
    for x in [&a, &b, &c] {
        // b's and c's shared room may already be gone with the first ended member.
        store
            .end_session(x, t + 5)
            .await
            .expect("end_session")
            .expect("ended");
    }
    let left: Vec<String> = keys(&mut con, &p)
        .await
        .into_iter()
        .filter(|k| *k != format!("{p}nodes"))
        .collect();
    assert!(left.is_empty(), "ended sessions and rooms left {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedupe_and_history_stay_bounded() {
    let server = RedisServer::start();
    let p = prefix();
    let (store, _) = node(&server, &p).await;
    let con = raw(&server).await;
    let (a, b) = (phone(21), phone(22));
    let t = now();
    register(&store, &a, t, t + 60_000).await;
    register(&store, &b, t, t + 60_000).await;
    let room = make_room(&store, &a, &b, t, 300_000).await;
    // History is trimmed by whole stream nodes (`MAXLEN ~`): it keeps at least `MAX` messages
    // and at most `MAX` plus one node (100 entries by default). Enough messages to trim often.
    const MAX: usize = 10;
    const NODE: usize = 100;
    let total = 3 * NODE + 7;
    let mut ids = Vec::new();
    for i in 0..total {
        let cid = format!("k{i}");
        let m = store
            .append_message(&room, msg(&a, &format!("m{i}"), Some(&cid)), MAX)
            .await
            .expect("append");
        ids.push(m.into_message().id);
    }
    let len = |cmd: &'static str, part: &'static str| {
        let key = format!("{p}{{{room}}}:{part}");
        let mut con = con.clone();
        async move {
            redis::cmd(cmd)
                .arg(key)
                .query_async::<usize>(&mut con)
                .await
                .expect("len")
        }
    };
    let kept = len("XLEN", "h").await;
    assert!(
        (MAX..=MAX + NODE).contains(&kept),
        "history trimmed to history_max plus at most a node: {kept}"
    );
    let (newer, older) = (len("HLEN", "d").await, len("HLEN", "o").await);
    assert!(
        newer <= MAX && older <= MAX,
        "dedupe hashes capped: {newer}, {older}"
    );
    assert!(newer + older >= MAX, "the newest client ids are covered");
    // Every client id of the newest `MAX` messages is still a duplicate; one long trimmed is
    // new again.
    for back in 1..=MAX {
        let i = total - back;
        let again = store
            .append_message(&room, msg(&a, "again", Some(&format!("k{i}"))), MAX)
            .await
            .expect("append");
        let Appended::Duplicate(first) = again else {
            panic!("k{i} is a duplicate: {again:?}");
        };
        assert_eq!((first.id, first.message), (ids[i], format!("m{i}")));
    }
    let old = store
        .append_message(&room, msg(&a, "old", Some("k0")), MAX)
        .await
        .expect("append");
    assert!(matches!(old, Appended::New(_)));
    let page = store.history(&room, None, 1000).await.expect("history");
    assert!(page.messages.len() >= MAX);
    assert_eq!(
        page.messages.last().map(|m| m.message.as_str()),
        Some("old")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_ids_order_numerically_not_as_text() {
    let server = RedisServer::start();
    let (store, _) = node(&server, &prefix()).await;
    let (a, b) = (phone(31), phone(32));
    let t = now();
    register(&store, &a, t, t + 60_000).await;
    register(&store, &b, t, t + 60_000).await;
    let room = make_room(&store, &a, &b, t, 300_000).await;
    // Concurrent appends land many messages in one millisecond: seq 9 → 10 → 11 ...
    let mut tasks = Vec::new();
    for w in 0..8 {
        let store = store.clone();
        let a = a.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..40 {
                store
                    .append_message(&room, msg(&a, &format!("{w}-{i}"), None), 10_000)
                    .await
                    .expect("append");
            }
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    let all = store
        .history(&room, None, 500)
        .await
        .expect("history")
        .messages;
    assert_eq!(all.len(), 320);
    for w in all.windows(2) {
        assert!(w[0].id < w[1].id);
    }
    for (i, m) in all.iter().enumerate() {
        let rest = store
            .history(&room, Some(m.id), 500)
            .await
            .expect("history");
        assert_eq!(rest.messages, all[i + 1..].to_vec(), "after {}", m.id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_cursor_must_be_one_the_store_gave() {
    let server = RedisServer::start();
    let (store, _) = node(&server, &prefix()).await;
    let t = now();
    let phones: Vec<Phone> = (40..45).map(phone).collect();
    for x in &phones {
        register(&store, x, t, t + 60_000).await;
    }
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = store.online_page(cursor, 2, t).await.expect("page");
        seen.extend(page.phones);
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    seen.sort();
    assert_eq!(seen, phones);
    for bad in [
        "",
        "xyz",
        "o2.",
        "o2.notaphone",
        "o2.p1 666 000 0040",
        "o2.+16660000040",
        // The listing cursors of earlier versions.
        "o1.+16660000040",
        "m2.p16660000040",
    ] {
        assert!(
            matches!(
                store.online_page(Some(bad.into()), 2, t).await,
                Err(Error::BadRequest(_))
            ),
            "cursor {bad:?} must be refused"
        );
    }
}

/// A sink that blocks until released, to fill the delivery queue.
struct Gate {
    open: Mutex<bool>,
    opened: Condvar,
    inner: Waiter,
}

impl EventSink for Gate {
    fn deliver(&self, d: &Delivery) {
        // A stuck consumer. `block_in_place` lets the runtime move this worker's other tasks
        // (the Redis connection's among them) elsewhere, as a real stuck thread would not
        // hold them; bounded, so a failing test cannot hang the runtime's shutdown.
        tokio::task::block_in_place(|| {
            let open = self.open.lock().expect("lock");
            let _ = self
                .opened
                .wait_timeout_while(open, Duration::from_secs(30), |open| !*open)
                .expect("wait");
        });
        self.inner.deliver(d);
    }
}

impl Gate {
    fn release(&self) {
        *self.open.lock().expect("lock") = true;
        self.opened.notify_all();
    }
}

/// Opens the gate however the test ends.
struct Release(Arc<Gate>);

impl Drop for Release {
    fn drop(&mut self) {
        self.0.release();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_delivery_queue_drops_and_counts_without_blocking_redis() {
    let server = RedisServer::start();
    let p = prefix();
    let store = RedisStore::connect(&server.url(), &p, NodeId::random())
        .await
        .expect("connect");
    let gate = Arc::new(Gate {
        open: Mutex::new(false),
        opened: Condvar::new(),
        inner: Waiter::default(),
    });
    store.attach(gate.clone());
    let _release = Release(gate.clone());
    let u = phone(51);
    let aud = Audience::User(u.clone());
    store.subscribe(aud.clone()).await.expect("subscribe");
    let event = |n: u32| {
        Delivery::to_user(
            u.clone(),
            Event::Presence {
                names: Default::default(),
                phone: phone(n),
                online: true,
            },
        )
    };
    let payload = serde_json::to_vec(&event(52)).expect("json");
    let total = DELIVERY_QUEUE + 4_000;
    let mut con = raw(&server).await;
    let mut pipe = redis::pipe();
    for _ in 0..total {
        pipe.cmd("PUBLISH")
            .arg(format!("{p}u:{u}"))
            .arg(&payload)
            .ignore();
    }
    pipe.query_async::<()>(&mut con)
        .await
        .expect("publish burst");

    // The sink is stuck on its first delivery, yet the store keeps reading Redis: it queues
    // what fits and drops and counts the rest, to the end of the burst.
    let stats = store.bus_stats();
    let delivered = || stats.delivered.load(std::sync::atomic::Ordering::Relaxed);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while store.dropped_deliveries() + delivered() + (DELIVERY_QUEUE as u64) < total as u64 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the burst was not read: {} dropped",
            store.dropped_deliveries()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(delivered() <= 1, "the sink is stuck");
    assert!(store.ping().await.is_ok(), "commands are unaffected");
    gate.release();
    // What was queued is delivered before the next publish, so that one finds room.
    let queued = total as u64 - store.dropped_deliveries();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while delivered() < queued {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the queue did not drain"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let last = event(53);
    store.publish(last.clone()).await.expect("publish");
    assert!(
        gate.inner
            .wait_for(Duration::from_secs(20), |d| d == &last)
            .await
    );
    let delivered = delivered();
    let dropped = store.dropped_deliveries();
    assert_eq!(
        delivered + dropped,
        total as u64 + 1,
        "every delivery handed over or counted"
    );
    assert!(delivered > DELIVERY_QUEUE as u64 / 2);
    // The drops reach /metrics.
    let text = bus_exposition(&store);
    assert!(
        text.contains(&format!("\nchat_bus_dropped_total {dropped}\n")),
        "{dropped} dropped, but\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_payloads_are_counted_and_skipped() {
    let server = RedisServer::start();
    let p = prefix();
    let (store, waiter) = node(&server, &p).await;
    let u = phone(61);
    store
        .subscribe(Audience::User(u.clone()))
        .await
        .expect("subscribe");
    let mut con = raw(&server).await;
    redis::cmd("PUBLISH")
        .arg(format!("{p}u:{u}"))
        .arg("not json")
        .query_async::<()>(&mut con)
        .await
        .expect("publish");
    let good = Delivery::to_user(
        u.clone(),
        Event::Presence {
            names: Default::default(),
            phone: phone(62),
            online: true,
        },
    );
    store.publish(good.clone()).await.expect("publish");
    assert!(waiter.wait_for(WAIT, |d| d == &good).await);
    assert_eq!(
        store
            .bus_stats()
            .undecodable
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_eq!(waiter.all(), vec![good]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_connections_come_back_with_their_subscriptions() {
    let server = RedisServer::start();
    let p = prefix();
    let (store, waiter) = node(&server, &p).await;
    let u = phone(71);
    store
        .subscribe(Audience::User(u.clone()))
        .await
        .expect("subscribe");
    let mut con = raw(&server).await;
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut con)
        .await
        .expect("CLIENT KILL");
    assert_eq!(killed, 1);
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .arg("SKIPME")
        .arg("yes")
        .query_async(&mut con)
        .await
        .expect("CLIENT KILL");
    assert!(killed >= 1);
    // Resubscription has no event to wait on: publish until one arrives, bounded.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    for n in 0.. {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no delivery after the kill"
        );
        let probe = Delivery::to_user(
            u.clone(),
            Event::Presence {
                names: Default::default(),
                phone: phone(72),
                online: n % 2 == 0,
            },
        );
        if store.publish(probe.clone()).await.is_ok()
            && waiter
                .wait_for(Duration::from_millis(300), |d| d == &probe)
                .await
        {
            break;
        }
    }
    // Ready again once the watchdog has resubscribed too (the delivery above may have come
    // through the connection manager's own resubscription first).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while let Err(e) = store.ping().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not ready after the kill: {e}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The bus's counters tell the story on /metrics: the loss, the resubscription, the
    // deliveries.
    let text = bus_exposition(&store);
    for (name, at_least) in [
        ("chat_bus_delivered_total", 1),
        ("chat_bus_dropped_total", 0),
        ("chat_bus_undecodable_total", 0),
        ("chat_bus_disconnects_total", 1),
        ("chat_bus_losses_total", 1),
        ("chat_bus_resubscriptions_total", 1),
    ] {
        let value = text
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<u64>().ok());
        assert!(
            value.is_some_and(|v| v >= at_least),
            "{name} missing or below {at_least} in\n{text}"
        );
        assert!(text.contains(&format!("# TYPE {name} counter\n")), "{text}");
    }
}

/// The bus's collector rendered alone, as chat-server's `/metrics` renders it with the rest.
fn bus_exposition(store: &RedisStore) -> String {
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register_collector(Box::new(store.bus_collector()));
    let mut text = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut text, &registry).expect("encode");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_refuses_bad_input_and_fails_fast_without_redis() {
    let server = RedisServer::start();
    let url = server.url();
    for (bad_url, prefix) in [("not a url", "chat:"), (url.as_str(), "chat:{x}:")] {
        assert!(matches!(
            RedisStore::connect(bad_url, prefix, NodeId::random()).await,
            Err(ConnectError::Config(_))
        ));
    }
    server.kill();
    let started = std::time::Instant::now();
    let refused = RedisStore::connect(&url, "chat:", NodeId::random()).await;
    let Err(ConnectError::Unavailable(cause)) = refused else {
        panic!("connected to a killed redis, or refused otherwise");
    };
    assert!(cause.is_unavailable());
    let why = std::error::Error::source(&cause).map(ToString::to_string);
    assert!(why.is_some(), "the cause is kept for the logs: {cause:?}");
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_keep_their_separators_through_history_and_the_bus() {
    let server = RedisServer::start();
    let p = prefix();
    let (store, waiter) = node(&server, &p).await;
    let (a, b) = (phone(81), phone(82));
    let t = now();
    register(&store, &a, t, t + 60_000).await;
    register(&store, &b, t, t + 60_000).await;
    let room = make_room(&store, &a, &b, t, 300_000).await;
    store
        .subscribe(Audience::Room(room))
        .await
        .expect("subscribe");
    // The compact entry delimits with `|` and measures the client id: neither may leak.
    let cases = [
        ("|a|b||", None),
        ("", Some("|")),
        ("x|y|", Some("12|")),
        ("ünï|cödé \"{}\"\n", Some("ü|ö")),
    ];
    let mut sent = Vec::new();
    for (text, cid) in cases {
        let m = store
            .append_message(&room, msg(&a, text, cid), 100)
            .await
            .expect("append")
            .into_message();
        assert_eq!((m.message.as_str(), m.client_id.as_deref()), (text, cid));
        let delivery = Delivery::to_room(room, Event::ReceiveMessage(m.clone()));
        assert!(
            waiter.wait_for(WAIT, |d| d == &delivery).await,
            "{text:?} delivered as stored"
        );
        sent.push(m);
    }
    let page = store.history(&room, None, 100).await.expect("history");
    assert_eq!(page.messages, sent);
    // A repeated client id answers with the stored message, separators and all.
    let again = store
        .append_message(&room, msg(&a, "other", Some("12|")), 100)
        .await
        .expect("append");
    assert_eq!(again, Appended::Duplicate(sent[2].clone()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_reads_entries_stored_one_field_per_part() {
    let server = RedisServer::start();
    let p = prefix();
    let (store, _) = node(&server, &p).await;
    let mut con = raw(&server).await;
    let (a, b) = (phone(91), phone(92));
    let t = now();
    register(&store, &a, t, t + 60_000).await;
    register(&store, &b, t, t + 60_000).await;
    let room = make_room(&store, &a, &b, t, 300_000).await;
    // The layout history had before the compact `v` field, as a running deployment holds it.
    let key = format!("{p}{{{room}}}:h");
    let old: String = redis::cmd("XADD")
        .arg(&key)
        .arg("*")
        .arg(&[
            "s",
            a.as_str(),
            "m",
            "before",
            "t",
            "1700000000000",
            "c",
            "k",
        ])
        .query_async(&mut con)
        .await
        .expect("XADD");
    let new = store
        .append_message(&room, msg(&b, "after", None), 100)
        .await
        .expect("append")
        .into_message();
    let page = store.history(&room, None, 10).await.expect("history");
    assert_eq!(page.messages.len(), 2);
    let first = &page.messages[0];
    assert_eq!(first.id.to_string(), old);
    assert_eq!(
        (
            &first.sender,
            first.message.as_str(),
            first.timestamp,
            first.client_id.as_deref()
        ),
        (&a, "before", 1_700_000_000_000, Some("k"))
    );
    assert_eq!(page.messages[1], new);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn functions_come_back_after_redis_forgets_them() {
    let server = RedisServer::start();
    let p = prefix();
    let (store, _) = node(&server, &p).await;
    let mut con = raw(&server).await;
    let (a, b) = (phone(95), phone(96));
    let t = now();
    register(&store, &a, t, t + 60_000).await;
    register(&store, &b, t, t + 60_000).await;
    let room = make_room(&store, &a, &b, t, 300_000).await;
    let flush = |mut con: MultiplexedConnection| async move {
        redis::cmd("FUNCTION")
            .arg("FLUSH")
            .query_async::<()>(&mut con)
            .await
            .expect("FUNCTION FLUSH");
        let libraries: Vec<redis::Value> = redis::cmd("FUNCTION")
            .arg("LIST")
            .query_async(&mut con)
            .await
            .expect("FUNCTION LIST");
        assert!(libraries.is_empty());
    };
    // A function of the prelude family first, then the room's hot path: each reloads the
    // library by itself.
    flush(con.clone()).await;
    assert!(store.presence(&a).await.expect("presence").is_some());
    flush(con.clone()).await;
    let m = store
        .append_message(&room, msg(&a, "hi", None), 100)
        .await
        .expect("append after the flush");
    let page = store.history(&room, None, 10).await.expect("history");
    assert_eq!(page.messages, vec![m.into_message()]);
    // One library, named after its code, whatever the prefix.
    let (other, _) = node(&server, &prefix()).await;
    assert!(other.presence(&a).await.expect("presence").is_none());
    let libraries: Vec<Vec<redis::Value>> = redis::cmd("FUNCTION")
        .arg("LIST")
        .query_async(&mut con)
        .await
        .expect("FUNCTION LIST");
    assert_eq!(libraries.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_session_inherits_nothing_redis_expired_under_its_phone() {
    let server = RedisServer::start();
    let p = prefix();
    let (store, _) = node(&server, &p).await;
    let mut con = raw(&server).await;
    let (a, b, c) = (phone(101), phone(102), phone(103));
    let t = now();
    let sa = register(&store, &a, t, t + 60_000).await;
    register(&store, &b, t, t + 60_000).await;
    register(&store, &c, t, t + 60_000).await;
    let room = make_room(&store, &a, &c, t, 300_000).await;
    let request = ChatRequest {
        from: a.clone(),
        to: b.clone(),
        created_at: t,
        expires_at: t + 60_000,
    };
    let spare = NewRoom {
        id: RoomId::generate(),
        created_at: t,
        expires_at: t + 300_000,
        names: Default::default(),
    };
    assert_eq!(
        store.send_request(request, spare).await.expect("send"),
        RequestOutcome::Sent
    );
    // Redis frees a's session keys (their expiry came first) while its requests, rooms, timers
    // and indexes are still there.
    redis::cmd("DEL")
        .arg(format!("{p}s:{a}"))
        .arg(format!("{p}t:{}", sa.token_digest.hex()))
        .query_async::<()>(&mut con)
        .await
        .expect("DEL");
    redis::cmd("ZADD")
        .arg(format!("{p}timers"))
        .arg(t + 1)
        .arg(format!("s|{a}"))
        .query_async::<()>(&mut con)
        .await
        .expect("ZADD");
    register(&store, &a, t + 10, t + 60_000).await;
    let for_a = store.requests(&a, t + 10).await.expect("requests");
    assert!(for_a.incoming.is_empty() && for_a.sent.is_empty());
    assert!(
        store
            .requests(&b, t + 10)
            .await
            .expect("requests")
            .incoming
            .is_empty()
    );
    assert!(store.rooms_of(&a).await.expect("rooms").is_empty());
    assert!(store.rooms_of(&c).await.expect("rooms").is_empty());
    assert_eq!(store.room(&room).await.expect("room"), None);
    let end_timer: Option<u64> = redis::cmd("ZSCORE")
        .arg(format!("{p}timers"))
        .arg(format!("s|{a}"))
        .query_async(&mut con)
        .await
        .expect("ZSCORE");
    assert_eq!(end_timer, None, "the old session's end timer is gone");

    // With nothing left but a timer, the new session is as clean.
    let d = phone(104);
    register(&store, &d, t, t + 60_000).await;
    redis::cmd("DEL")
        .arg(format!("{p}s:{d}"))
        .query_async::<()>(&mut con)
        .await
        .expect("DEL");
    let again = register(&store, &d, t + 10, t + 60_000).await;
    assert_eq!(
        store.session(&again.token_digest).await.expect("session"),
        Some(again.clone())
    );
    assert!(store.presence(&d).await.expect("presence").is_some());
}
