//! Redis dies mid-traffic and comes back: calls fail fast with `StoreUnavailable` while it is
//! down, the store and its subscriber resume by themselves, and no acknowledged message is lost
//! (AOF with `appendfsync always`). The subscriber alone fails (Redis's ACL forbids channels):
//! `ping` fails until every wanted channel is subscribed again, and a failed `subscribe` stays
//! counted, so its paired `unsubscribe` never takes a channel from another holder.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chat_core::store::NewRoom;
use chat_core::store::prelude::*;
use chat_core::{
    Audience, ChatRequest, Delivery, Error, Event, EventBus, Message, NewMessage, Phone, RoomId,
    Session, Token,
};
use chat_store_redis::test_server::RedisServer;
use common::{node, now, prefix, raw};
use redis::Value;
use redis::aio::MultiplexedConnection;
use tokio::sync::watch;

/// The contract gives clients an answer within 2 s; the store must fail well inside that.
const FAIL_FAST: Duration = Duration::from_millis(1500);

fn phone(n: u32) -> Phone {
    Phone::parse(&format!("+1777{:07}", n)).expect("phone")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_traffic_fails_fast_recovers_and_loses_no_acked_message() {
    let server = RedisServer::start_persistent();
    let p = prefix();
    let (store, waiter) = node(&server, &p).await;
    let (a, b) = (phone(1), phone(2));
    let t = now();
    let mut sessions = Vec::new();
    for x in [&a, &b] {
        let s = Session {
            phone: x.clone(),
            name: None,
            token_digest: Token::generate().expect("token").digest(),
            created_at: t,
        };
        store
            .create_session(s.clone(), None, t + 600_000)
            .await
            .expect("session");
        sessions.push(s);
    }
    let new_room = NewRoom {
        id: RoomId::generate(),
        created_at: t,
        expires_at: t + 3_600_000,
        names: Default::default(),
    };
    let req = ChatRequest {
        from: a.clone(),
        to: b.clone(),
        created_at: t,
        expires_at: t + 600_000,
    };
    store
        .send_request(req, new_room.clone())
        .await
        .expect("send");
    let room = store
        .accept_request(&a, &b, new_room, t)
        .await
        .expect("accept")
        .expect("pending")
        .id;
    store
        .subscribe(Audience::Room(room))
        .await
        .expect("subscribe");

    // Traffic: a client that sends numbered messages and, like a real one, retries a failed
    // send with the same client_id until it is acknowledged.
    let acked: Arc<Mutex<Vec<Message>>> = Arc::default();
    let failures: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let (acks_tx, mut acks) = watch::channel(0usize);
    let (fails_tx, mut fails) = watch::channel(0usize);
    let traffic = {
        let (store, acked, failures, stop, a) = (
            store.clone(),
            acked.clone(),
            failures.clone(),
            stop.clone(),
            a.clone(),
        );
        tokio::spawn(async move {
            let mut i = 0u32;
            while !stop.load(Ordering::SeqCst) {
                let m = NewMessage {
                    sender: a.clone(),
                    message: format!("message {i}"),
                    timestamp: now(),
                    client_id: Some(format!("c{i}")),
                };
                let started = Instant::now();
                match store.append_message(&room, m, 10_000).await {
                    Ok(appended) => {
                        let n = {
                            let mut acked = acked.lock().expect("lock");
                            acked.push(appended.into_message());
                            acked.len()
                        };
                        acks_tx.send_replace(n);
                        i += 1;
                    }
                    Err(e) => {
                        assert_eq!(e, Error::unavailable("down"));
                        let n = {
                            let mut failures = failures.lock().expect("lock");
                            failures.push(started.elapsed());
                            failures.len()
                        };
                        fails_tx.send_replace(n);
                        tokio::task::yield_now().await;
                    }
                }
            }
        })
    };
    let bounded = Duration::from_secs(15);
    tokio::time::timeout(bounded, acks.wait_for(|n| *n >= 30))
        .await
        .expect("traffic flows")
        .expect("watch");

    server.kill();

    // While Redis is down every kind of call fails fast.
    for _round in 0..3 {
        let probe = Delivery::to_room(
            room,
            Event::Typing {
                room,
                user: a.clone(),
                typing: true,
            },
        );
        let calls: Vec<(&str, Duration, Result<(), Error>)> = vec![
            timed("ping", store.ping()).await,
            timed("session", async {
                store.session(&sessions[0].token_digest).await.map(|_| ())
            })
            .await,
            timed("history", async {
                store.history(&room, None, 10).await.map(|_| ())
            })
            .await,
            timed("publish", store.publish(probe)).await,
            timed("subscribe", store.subscribe(Audience::User(b.clone()))).await,
            timed("touch", async {
                store
                    .touch(&sessions[1].token_digest, now() + 1000)
                    .await
                    .map(|_| ())
            })
            .await,
        ];
        for (name, took, result) in calls {
            assert_eq!(result, Err(Error::unavailable("down")), "{name} while down");
            assert!(took < FAIL_FAST, "{name} took {took:?} to fail");
        }
    }
    tokio::time::timeout(bounded, fails.wait_for(|n| *n >= 3))
        .await
        .expect("traffic fails while down")
        .expect("watch");
    let acked_before_restart = *acks.borrow();

    server.restart();

    // The store resumes by itself: the same traffic task gets acknowledgements again.
    tokio::time::timeout(bounded, acks.wait_for(|n| *n >= acked_before_restart + 30))
        .await
        .expect("traffic resumes after the restart")
        .expect("watch");

    // The subscriber resumes by itself. Resubscription has no event to wait on: publish until
    // one arrives, bounded.
    let deadline = Instant::now() + bounded;
    for n in 0.. {
        assert!(
            Instant::now() < deadline,
            "the subscriber did not come back"
        );
        let probe = Delivery::to_room(
            room,
            Event::Typing {
                room,
                user: b.clone(),
                typing: n % 2 == 0,
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

    stop.store(true, Ordering::SeqCst);
    traffic.await.expect("traffic task");

    let acked = acked.lock().expect("lock").clone();
    let failures = failures.lock().expect("lock").clone();
    for took in &failures {
        assert!(*took < FAIL_FAST, "an append took {took:?} to fail");
    }
    // Messages after the subscriber came back are delivered, in history order.
    let last = acked.last().expect("acked").clone();
    assert!(
        waiter
            .wait_for(Duration::from_secs(5), |d| d.event
                == Event::ReceiveMessage(last.clone()))
            .await
    );

    let history = store
        .history(&room, None, 10_000)
        .await
        .expect("history after recovery")
        .messages;
    let stored: HashSet<_> = history.iter().map(|m| m.id).collect();
    for m in &acked {
        assert!(stored.contains(&m.id), "acknowledged {} lost", m.id);
        let kept = history.iter().find(|h| h.id == m.id).expect("kept");
        assert_eq!(kept, m, "stored as acknowledged");
    }
    let client_ids: Vec<_> = history.iter().filter_map(|m| m.client_id.clone()).collect();
    let unique: HashSet<_> = client_ids.iter().collect();
    assert_eq!(unique.len(), client_ids.len(), "no client_id stored twice");
    assert_eq!(
        history.len(),
        acked.len(),
        "nothing stored that was not acknowledged"
    );
    assert!(!failures.is_empty());
}

async fn timed(
    name: &str,
    call: impl Future<Output = Result<(), Error>>,
) -> (&str, Duration, Result<(), Error>) {
    let started = Instant::now();
    let result = call.await;
    (name, started.elapsed(), result)
}

/// Subscribers on one channel, by Redis's count.
async fn numsub(con: &mut MultiplexedConnection, channel: &str) -> i64 {
    let (_, n): (String, i64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(channel)
        .query_async(con)
        .await
        .expect("PUBSUB NUMSUB");
    n
}

/// `ACL SETUSER default <rule>`: the store connects as `default`.
async fn acl_default(con: &mut MultiplexedConnection, rule: &str) {
    redis::cmd("ACL")
        .arg("SETUSER")
        .arg("default")
        .arg(rule)
        .query_async::<()>(con)
        .await
        .expect("ACL SETUSER");
}

/// How many times Redis refused a channel to `channel`'s subscriber (ACL LOG, reason
/// `channel`; Redis folds repeats of one refusal into one entry's `count`).
async fn channel_refusals(con: &mut MultiplexedConnection, channel: &str) -> i64 {
    let entries: Vec<Vec<Value>> = redis::cmd("ACL")
        .arg("LOG")
        .query_async(con)
        .await
        .expect("ACL LOG");
    let text = |v: &Value| match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        _ => String::new(),
    };
    entries
        .iter()
        .filter_map(|entry| {
            let field = |name: &str| {
                entry
                    .chunks(2)
                    .find(|kv| text(&kv[0]) == name)
                    .map(|kv| kv[1].clone())
            };
            let refused = field("reason").is_some_and(|r| text(&r) == "channel")
                && field("object").is_some_and(|o| text(&o) == channel);
            match field("count") {
                Some(Value::Int(n)) if refused => Some(n),
                _ => None,
            }
        })
        .sum()
}

/// Calls `ping` until it answers `Ok`, at most `bound`; fails the test otherwise.
async fn ping_until_ok(store: &chat_store_redis::RedisStore, bound: Duration) {
    let deadline = Instant::now() + bound;
    while store.ping().await.is_err() {
        assert!(Instant::now() < deadline, "ping did not recover");
        // No event tells when the watchdog's next round ran: poll, bounded.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn presence_to(to: &Phone, n: u32) -> Delivery {
    Delivery::to_user(
        to.clone(),
        Event::Presence {
            names: Default::default(),
            phone: phone(900),
            online: n.is_multiple_of(2),
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_fails_until_the_subscriber_has_resubscribed() {
    let server = RedisServer::start();
    let p = prefix();
    let (store, waiter) = node(&server, &p).await;
    let mut con = raw(&server).await;
    let (u, v) = (phone(10), phone(11));
    let (u_ch, v_ch) = (format!("{p}u:{u}"), format!("{p}u:{v}"));
    store
        .subscribe(Audience::User(u.clone()))
        .await
        .expect("subscribe");
    store.ping().await.expect("serving");

    // Redis stays up and the command connection with it, but channels are forbidden: Redis
    // disconnects the subscriber (it held a channel it may no longer have) and refuses its
    // resubscription.
    acl_default(&mut con, "resetchannels").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.bus_stats().disconnects.load(Ordering::SeqCst) == 0 {
        assert!(
            Instant::now() < deadline,
            "the subscriber was not disconnected"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(store.ping().await, Err(Error::unavailable("down")));
    // A subscribe meanwhile fails, and is counted: the watchdog subscribes it later.
    assert_eq!(
        store.subscribe(Audience::User(v.clone())).await,
        Err(Error::unavailable("down"))
    );
    // The watchdog tries again and again (its refusals are logged by Redis); ping keeps failing.
    // One refusal each so far: `u` on reconnection, `v` by the call above. The watchdog
    // subscribes both in one command, and Redis logs only the first channel it refuses, which
    // may be either (they come from a hash map): count both, and wait for two more rounds.
    let deadline = Instant::now() + Duration::from_secs(10);
    while channel_refusals(&mut con, &u_ch).await + channel_refusals(&mut con, &v_ch).await < 4 {
        assert!(Instant::now() < deadline, "the watchdog did not retry");
        assert_eq!(store.ping().await, Err(Error::unavailable("down")));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(store.ping().await, Err(Error::unavailable("down")));
    assert_eq!(numsub(&mut con, &u_ch).await, 0);

    // Channels allowed again: the first ping that passes finds every wanted channel
    // subscribed, and what is published after it is delivered.
    acl_default(&mut con, "allchannels").await;
    ping_until_ok(&store, Duration::from_secs(10)).await;
    assert_eq!(numsub(&mut con, &u_ch).await, 1, "{u_ch} resubscribed");
    assert_eq!(numsub(&mut con, &v_ch).await, 1, "{v_ch} subscribed");
    for to in [&u, &v] {
        let d = presence_to(to, 1);
        store.publish(d.clone()).await.expect("publish");
        assert!(
            waiter
                .wait_for(Duration::from_secs(5), |got| got == &d)
                .await,
            "a publish after a successful ping reaches the node"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_subscribe_stays_counted_until_its_unsubscribe() {
    let server = RedisServer::start();
    let p = prefix();
    let (store, waiter) = node(&server, &p).await;
    let mut con = raw(&server).await;
    let x = phone(20);
    let x_ch = format!("{p}u:{x}");
    let audience = Audience::User(x.clone());

    // The first holder's subscribe fails (nothing was subscribed, so nobody is disconnected).
    acl_default(&mut con, "resetchannels").await;
    assert_eq!(
        store.subscribe(audience.clone()).await,
        Err(Error::unavailable("down"))
    );
    assert_eq!(
        store.ping().await,
        Err(Error::unavailable("down")),
        "a wanted channel is not subscribed: not serving"
    );

    // Once Redis allows it, the watchdog subscribes it without another call.
    acl_default(&mut con, "allchannels").await;
    ping_until_ok(&store, Duration::from_secs(10)).await;
    assert_eq!(numsub(&mut con, &x_ch).await, 1);
    let first = presence_to(&x, 1);
    store.publish(first.clone()).await.expect("publish");
    assert!(waiter.wait_for(WAIT, |d| d == &first).await);

    // A second holder, then the first holder's unsubscribe (chat-ws pairs it with the failed
    // subscribe): the second still receives.
    store.subscribe(audience.clone()).await.expect("subscribe");
    store
        .unsubscribe(audience.clone())
        .await
        .expect("unsubscribe");
    assert_eq!(numsub(&mut con, &x_ch).await, 1, "still held by the second");
    let second = presence_to(&x, 2);
    store.publish(second.clone()).await.expect("publish");
    assert!(waiter.wait_for(WAIT, |d| d == &second).await);

    // The last holder leaves: unsubscribed.
    store
        .unsubscribe(audience.clone())
        .await
        .expect("unsubscribe");
    assert_eq!(numsub(&mut con, &x_ch).await, 0);
    // Unpaired calls are ignored: nothing below zero.
    store
        .unsubscribe(audience.clone())
        .await
        .expect("unsubscribe");
    store.subscribe(audience.clone()).await.expect("subscribe");
    assert_eq!(numsub(&mut con, &x_ch).await, 1);
    store.ping().await.expect("serving");
}

const WAIT: Duration = Duration::from_secs(5);
