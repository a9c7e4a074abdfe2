//! Two `RedisStore`s ("two nodes") on one Redis: events cross nodes by subscription, presence
//! is shared, and a node that stops heartbeating is reaped by the other.

mod common;

use std::sync::Arc;
use std::time::Duration;

use chat_core::store::Appended;
use chat_core::store::prelude::*;
use chat_core::{
    Audience, ChatService, Config, ConnKey, Delivery, Event, EventBus, ManualClock, NewMessage,
    NodeId, Phone, Session, Store, Token,
};
use std::sync::atomic::Ordering;

use chat_store_redis::bus;
use chat_store_redis::test_server::RedisServer;
use common::{node, node_with_format, now, prefix, raw};

const WAIT: Duration = Duration::from_secs(5);

fn phone(n: u32) -> Phone {
    Phone::parse(&format!("+1555{:07}", n)).expect("phone")
}

fn presence_event(who: &Phone, to: &Phone, online: bool) -> Delivery {
    Delivery::to_user(
        to.clone(),
        Event::Presence {
            names: Default::default(),
            phone: who.clone(),
            online,
        },
    )
}

async fn numsub(con: &mut redis::aio::MultiplexedConnection, channel: &str) -> i64 {
    let (_, n): (String, i64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(channel)
        .query_async(con)
        .await
        .expect("PUBSUB NUMSUB");
    n
}

async fn register(store: &dyn Store, p: &Phone, http_until: u64) -> Session {
    let session = Session {
        phone: p.clone(),
        name: None,
        token_digest: Token::generate().expect("token").digest(),
        created_at: now(),
    };
    store
        .create_session(session.clone(), None, http_until)
        .await
        .expect("create_session");
    session
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_cross_nodes_by_subscription_with_counted_calls() {
    let server = RedisServer::start();
    let prefix = prefix();
    let (a, wa) = node(&server, &prefix).await;
    let (b, wb) = node(&server, &prefix).await;
    let mut con = raw(&server).await;
    let (alice, bob, carol) = (phone(1), phone(2), phone(3));
    let to_alice = Audience::User(alice.clone());
    let channel = format!("{prefix}u:{alice}");

    // B has a socket for Alice: A's publish reaches B's sink, and not A's (A has none).
    b.subscribe(to_alice.clone()).await.expect("subscribe");
    let first = presence_event(&bob, &alice, true);
    a.publish(first.clone()).await.expect("publish");
    assert!(wb.wait_for(WAIT, |d| d == &first).await, "B got A's event");
    let sentinel = presence_event(&bob, &carol, true);
    a.subscribe(Audience::User(carol.clone()))
        .await
        .expect("subscribe");
    a.publish(sentinel.clone()).await.expect("publish");
    assert!(wa.wait_for(WAIT, |d| d == &sentinel).await);
    assert!(
        !wa.all().contains(&first),
        "a node without sockets for the audience does not receive it"
    );

    // A subscribes twice: one Redis subscription per node, however many sockets.
    a.subscribe(to_alice.clone()).await.expect("subscribe");
    a.subscribe(to_alice.clone()).await.expect("subscribe");
    assert_eq!(numsub(&mut con, &channel).await, 2, "A and B, once each");

    // A's own publish reaches its own sink exactly once (through its subscription).
    let own = presence_event(&carol, &alice, false);
    a.publish(own.clone()).await.expect("publish");
    assert!(wa.wait_for(WAIT, |d| d == &own).await);
    assert!(wb.wait_for(WAIT, |d| d == &own).await);
    let later = presence_event(&carol, &alice, true);
    a.publish(later.clone()).await.expect("publish");
    assert!(wa.wait_for(WAIT, |d| d == &later).await);
    assert_eq!(wa.all().iter().filter(|d| **d == own).count(), 1);
    assert_eq!(wb.all().iter().filter(|d| **d == own).count(), 1);

    // Calls are counted: the first unsubscribe keeps A subscribed, the second ends it.
    a.unsubscribe(to_alice.clone()).await.expect("unsubscribe");
    assert_eq!(numsub(&mut con, &channel).await, 2);
    a.unsubscribe(to_alice.clone()).await.expect("unsubscribe");
    assert_eq!(numsub(&mut con, &channel).await, 1);
    // An unmatched unsubscribe is ignored.
    a.unsubscribe(to_alice.clone()).await.expect("unsubscribe");
    b.unsubscribe(to_alice.clone()).await.expect("unsubscribe");
    assert_eq!(numsub(&mut con, &channel).await, 0);

    let unheard = presence_event(&bob, &alice, false);
    b.publish(unheard.clone()).await.expect("publish");
    let sentinel2 = presence_event(&alice, &carol, true);
    b.publish(sentinel2.clone()).await.expect("publish");
    assert!(wa.wait_for(WAIT, |d| d == &sentinel2).await);
    assert_eq!(wa.all().iter().filter(|d| **d == unheard).count(), 0);
    assert_eq!(wb.all().iter().filter(|d| **d == unheard).count(), 0);
    assert_eq!(a.dropped_deliveries() + b.dropped_deliveries(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_nodes_see_a_rooms_messages_in_history_order() {
    history_order(bus::FORMAT, bus::FORMAT).await;
}

/// A rolling upgrade from a release before bus format versions: a node writing format 1 (as
/// the old release, and the new one with `--bus-format 1`) and a node writing format 2 hear
/// each other's requests, accepts and messages, and neither counts a payload it could not read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_writing_bus_formats_1_and_2_hear_each_other() {
    history_order(1, 2).await;
}

async fn history_order(format_a: u8, format_b: u8) {
    let server = RedisServer::start();
    let prefix = prefix();
    let (a, wa) = node_with_format(&server, &prefix, format_a).await;
    let (b, wb) = node_with_format(&server, &prefix, format_b).await;
    let (p1, p2) = (phone(11), phone(12));
    let t = now();
    register(&a, &p1, t + 60_000).await;
    register(&b, &p2, t + 60_000).await;
    let request = chat_core::ChatRequest {
        from: p1.clone(),
        to: p2.clone(),
        created_at: t,
        expires_at: t + 60_000,
    };
    let new_room = chat_core::store::NewRoom {
        id: chat_core::RoomId::generate(),
        created_at: t,
        expires_at: t + 600_000,
        names: Default::default(),
    };
    a.send_request(request, new_room.clone())
        .await
        .expect("send");
    let room = b
        .accept_request(&p1, &p2, new_room, t)
        .await
        .expect("accept")
        .expect("pending");
    let audience = Audience::Room(room.id);
    a.subscribe(audience.clone()).await.expect("subscribe");
    b.subscribe(audience.clone()).await.expect("subscribe");

    let send = |store: chat_store_redis::RedisStore, sender: Phone, tag: &'static str| async move {
        let mut ids = Vec::new();
        for i in 0..25 {
            let m = NewMessage {
                sender: sender.clone(),
                message: format!("{tag}{i}"),
                timestamp: now(),
                client_id: Some(format!("{tag}{i}")),
            };
            match store
                .append_message(&room.id, m, 1000)
                .await
                .expect("append")
            {
                Appended::New(m) => ids.push(m.id),
                Appended::Duplicate(m) => panic!("duplicate {m:?}"),
            }
        }
        ids
    };
    let (ra, rb) = tokio::join!(
        tokio::spawn(send(a.clone(), p1.clone(), "a")),
        tokio::spawn(send(b.clone(), p2.clone(), "b"))
    );
    assert_eq!(ra.expect("task").len() + rb.expect("task").len(), 50);
    let history = a.history(&room.id, None, 100).await.expect("history");
    assert_eq!(history.messages.len(), 50);
    let expected: Vec<Event> = history
        .messages
        .iter()
        .cloned()
        .map(Event::ReceiveMessage)
        .collect();
    for w in [&wa, &wb] {
        let last = expected.last().cloned();
        assert!(
            w.wait_for(WAIT, |d| Some(&d.event) == last.as_ref()).await,
            "every message arrives"
        );
        let got: Vec<Event> = w
            .all()
            .into_iter()
            .filter(|d| d.audience == audience)
            .map(|d| d.event)
            .collect();
        assert_eq!(got, expected, "each node sees history order, once each");
    }
    for store in [&a, &b] {
        let stats = store.bus_stats();
        assert_eq!(stats.undecodable.load(Ordering::Relaxed), 0);
        assert_eq!(stats.unknown_format.load(Ordering::Relaxed), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_is_shared_between_nodes() {
    let server = RedisServer::start();
    let prefix = prefix();
    let (a, _) = node(&server, &prefix).await;
    let (b, _) = node(&server, &prefix).await;
    let u = phone(21);
    let t = now();
    register(&a, &u, t + 1).await;
    let conn = ConnKey {
        node: NodeId("node-b".into()),
        id: 7,
    };
    assert!(
        !b.add_conn(&u, &conn).await.expect("add_conn"),
        "already online"
    );
    let p = a.presence(&u).await.expect("presence").expect("session");
    assert_eq!(p.conns, 1);
    let page = a.online_page(None, 100, t + 10).await.expect("online");
    assert_eq!(page.phones, vec![u.clone()], "online by the socket on B");
    b.remove_conn(&u, &conn, t + 10, u64::MAX / 2)
        .await
        .expect("remove_conn");
    assert_eq!(
        a.presence(&u)
            .await
            .expect("presence")
            .expect("session")
            .conns,
        0
    );
    let page = a.online_page(None, 100, t + 10).await.expect("online");
    assert!(page.phones.is_empty(), "window over and no socket");
}

/// Node A stops heartbeating while it holds U's only socket; node B's tick reaps A, U goes
/// offline, and U's peer (whose socket is on B) is told, all within node_ttl of A's last beat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_node_is_reaped_by_the_other_within_node_ttl() {
    let server = RedisServer::start();
    let prefix = prefix();
    let (a, _) = node(&server, &prefix).await;
    let (b, wb) = node(&server, &prefix).await;
    let clock = ManualClock::new(now());
    let config = Config {
        presence_secs: 1,
        node_ttl_secs: 10,
        ..Config::default()
    };
    let service = |store: &chat_store_redis::RedisStore, node: &str| {
        ChatService::new(
            Arc::new(store.clone()),
            Arc::new(store.clone()),
            Arc::new(clock.clone()),
            config.clone(),
            NodeId(node.into()),
        )
    };
    let (na, nb) = (service(&a, "a"), service(&b, "b"));
    na.tick().await.expect("tick a");
    nb.tick().await.expect("tick b");

    let (u, p) = (phone(31), phone(32));
    na.register(u.as_str(), None, None)
        .await
        .expect("register u");
    nb.register(p.as_str(), None, None)
        .await
        .expect("register p");
    nb.send_request(&p, u.as_str()).await.expect("request");
    let conn_u = na.new_conn();
    na.connect(&u, &conn_u).await.expect("connect u on A");
    let conn_p = nb.new_conn();
    // What chat-ws does for P's socket on B.
    b.subscribe(Audience::User(p.clone()))
        .await
        .expect("subscribe");
    nb.connect(&p, &conn_p).await.expect("connect p on B");

    // U's HTTP window ends, but the socket on A holds U online.
    clock.advance(2_000);
    na.tick().await.expect("tick a");
    nb.tick().await.expect("tick b");
    assert!(nb.is_online(&u).await.expect("online"));

    // A dies (no more ticks). Just past node_ttl, B's tick reaps it.
    clock.advance(10_001);
    let report = nb.tick().await.expect("tick b");
    assert_eq!(report.orphaned_users, 1, "U's last socket was on A");
    assert!(!nb.is_online(&u).await.expect("online"));
    assert_eq!(
        b.presence(&u)
            .await
            .expect("presence")
            .expect("session")
            .conns,
        0
    );
    let offline = presence_event(&u, &p, false);
    assert!(
        wb.wait_for(WAIT, |d| d == &offline).await,
        "P, on B, hears that U went offline"
    );
    // A later reap finds nothing more.
    assert!(
        b.reap_dead_nodes(clock_now(&clock), u64::MAX / 2)
            .await
            .expect("reap")
            .is_empty()
    );
}

fn clock_now(clock: &ManualClock) -> u64 {
    use chat_core::Clock;
    clock.now()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_prefixes_isolate_deployments() {
    let server = RedisServer::start();
    let (x, wx) = node(&server, &prefix()).await;
    let (y, wy) = node(&server, &prefix()).await;
    let u = phone(41);
    let t = now();
    register(&x, &u, t + 60_000).await;
    register(&y, &u, t + 60_000).await;
    let aud = Audience::User(u.clone());
    x.subscribe(aud.clone()).await.expect("subscribe");
    y.subscribe(aud.clone()).await.expect("subscribe");
    let from_x = presence_event(&phone(42), &u, true);
    x.publish(from_x.clone()).await.expect("publish");
    let from_y = presence_event(&phone(43), &u, true);
    y.publish(from_y.clone()).await.expect("publish");
    assert!(wx.wait_for(WAIT, |d| d == &from_x).await);
    assert!(wy.wait_for(WAIT, |d| d == &from_y).await);
    assert!(!wx.all().contains(&from_y));
    assert!(!wy.all().contains(&from_x));
}
