//! Process lifecycle: graceful shutdown on SIGTERM/SIGINT, and a restart on the same Redis that
//! loses nothing.

use std::time::Duration;

use chat_tests::{App, Backend, Server, bounded};
use serde_json::json;

const A: &str = "+14155550151";
const B: &str = "+14155550152";

/// The contract's bound on a graceful exit.
const EXIT_BOUND: Duration = Duration::from_secs(10);

async fn shuts_down_gracefully(signal: &str) {
    let mut app = App::start(Backend::Memory, &[]).await;
    let a = app.register(A).await;
    let bu = app.register(B).await;
    let room = app.make_room(&a, &bu).await;
    let mut a_ws = app.ws(&a).await;
    let mut b_ws = app.ws(&bu).await;
    a_ws.join(&room).await;
    match signal {
        "TERM" => app.server.sigterm(),
        _ => app.server.sigint(),
    }
    for ws in [&mut a_ws, &mut b_ws] {
        let code = ws.expect_close(EXIT_BOUND).await;
        assert_eq!(code, Some(1001), "[{}] close code on shutdown", ws.phone);
    }
    let status = app
        .server
        .wait_exit(EXIT_BOUND)
        .await
        .unwrap_or_else(|| panic!("still running {EXIT_BOUND:?} after SIG{signal}"));
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIG{signal}: {status}"
    );
    // Every log went to stderr.
    assert_eq!(app.server.stdout.text(), "", "the server wrote to stdout");
    assert!(app.server.log.contains("listening on"));
    // Nobody listens any more.
    assert!(
        tokio::net::TcpStream::connect(app.addr).await.is_err(),
        "still accepting after exit"
    );
}

#[tokio::test]
async fn sigterm_closes_sockets_1001_and_exits_0() {
    bounded(shuts_down_gracefully("TERM")).await
}

#[tokio::test]
async fn sigint_closes_sockets_1001_and_exits_0() {
    bounded(shuts_down_gracefully("INT")).await
}

#[tokio::test]
async fn restart_on_the_same_redis_loses_nothing() {
    bounded(async {
        let mut app = App::start(Backend::Redis, &[]).await;
        let a = app.register(A).await;
        let bu = app.register(B).await;
        let room = app.make_room(&a, &bu).await;
        let mut a_ws = app.ws(&a).await;
        let mut b_ws = app.ws(&bu).await;
        a_ws.join(&room).await;
        let first = b_ws.say(&room, "before").await;
        assert_eq!(a_ws.recv_event("receive_message").await["data"], first);
        // A stops listening; B goes on.
        a_ws.close().await;
        let missed = vec![
            b_ws.say(&room, "while away 1").await,
            b_ws.say(&room, "while away 2").await,
        ];
        // A pending request survives too.
        let c = app.register("+14155550153").await;
        app.post("/send_request", Some(&c.token), &json!({ "phone2": A }))
            .await
            .ok();

        app.server.sigterm();
        assert_eq!(b_ws.expect_close(EXIT_BOUND).await, Some(1001));
        let status = app
            .server
            .wait_exit(EXIT_BOUND)
            .await
            .expect("exits within 10 s of SIGTERM");
        assert_eq!(status.code(), Some(0), "{status}");

        let new = Server::start(&app.server.args).await;
        let old = app.replace_server(new);
        drop(old);
        // The token still works, the room and its history are there.
        let v = app.get("/active_chatrooms", Some(&a.token)).await.ok();
        assert_eq!(v["chatrooms"][0]["chat_id"], room.as_str(), "{v}");
        let v = app.get("/incoming_request", Some(&a.token)).await.ok();
        assert_eq!(v["incoming_request"], json!([c.phone]), "{v}");
        let h = app
            .get(&format!("/chatrooms/{room}/messages"), Some(&bu.token))
            .await
            .ok();
        let mut all = vec![first.clone()];
        all.extend(missed.iter().cloned());
        assert_eq!(h["messages"], json!(all));
        // Resuming with `since` misses nothing, and new messages follow in order.
        let mut a_ws = app.ws(&a).await;
        let hist = a_ws
            .join_with(json!({"room": room, "since": first["id"]}))
            .await;
        assert_eq!(hist["messages"], json!(missed));
        let mut b_ws = app.ws(&bu).await;
        let after = b_ws.say(&room, "after restart").await;
        assert_eq!(a_ws.recv_event("receive_message").await["data"], after);
        let ids = chat_tests::ids(
            &app.get(&format!("/chatrooms/{room}/messages"), Some(&a.token))
                .await
                .ok()["messages"],
        );
        assert_eq!(ids.len(), 4);
        assert_eq!(ids.last(), after["id"].as_str().map(str::to_owned).as_ref());
        // Phones in use stay in use.
        app.post("/register_user", None, &json!({ "phone": A }))
            .await
            .err(409, "phone_in_use");
    })
    .await
}

/// Redis goes away: calls answer 503 / `store_unavailable` within 2 s, sockets stay open,
/// `/readyz` says so; Redis comes back (with everything it acknowledged, AOF `always`): the node
/// serves again by itself, and nothing acknowledged is lost or duplicated.
#[tokio::test]
async fn store_outage_answers_503_and_recovers() {
    bounded(async {
        let redis = chat_tests::start_redis_persistent().await;
        let app = App::start_on(Some(redis), &[]).await;
        let a = app.register(A).await;
        let bu = app.register(B).await;
        let room = app.make_room(&a, &bu).await;
        let mut a_ws = app.ws(&a).await;
        let mut b_ws = app.ws(&bu).await;
        b_ws.join(&room).await;
        let m1 = a_ws.say(&room, "before the outage").await;
        assert_eq!(b_ws.recv_event("receive_message").await["data"], m1);

        let r = app.redis();
        r.kill(); // blocking, briefly: nothing else on this thread needs to run meanwhile
        // Within 2 s (plus slack for this client), every call that needs the store says so.
        let timed = |started: std::time::Instant, what: &str| {
            let took = started.elapsed();
            assert!(took < Duration::from_millis(3000), "{what} took {took:?}");
        };
        let t = std::time::Instant::now();
        let v = app.get("/readyz", None).await;
        timed(t, "readyz");
        let body = v.err(503, "store_unavailable");
        assert_eq!(body["store"], "unavailable", "{body}");
        let t = std::time::Instant::now();
        app.get("/active_chatrooms", Some(&a.token))
            .await
            .err(503, "store_unavailable");
        timed(t, "active_chatrooms");
        let t = std::time::Instant::now();
        a_ws.call_err(
            "send_message",
            json!({"room": room, "message": "during the outage"}),
            "store_unavailable",
        )
        .await;
        timed(t, "send_message");
        // The first step that needs the store answers: the token check comes before the body's
        // shape; a registration's shape is checked before any store access.
        app.post_raw("/send_request", Some(&a.token), b"not json")
            .await
            .err(503, "store_unavailable");
        app.post_raw("/register_user", None, b"not json")
            .await
            .err(400, "bad_request");
        app.post("/register_user", None, &json!({"phone": "+14155550159"}))
            .await
            .err(503, "store_unavailable");
        // The process is alive and the sockets stay open.
        app.get("/healthz", None).await.ok();
        assert_eq!(a_ws.call("ping", json!({})).await["event"], "pong");

        r.restart();
        let ready = chat_tests::eventually(Duration::from_secs(15), || async {
            app.get("/readyz", None).await.status == 200
        })
        .await;
        assert!(ready, "/readyz did not recover after Redis came back");
        // Serving again: the same token, the same room, live delivery through the bus. A socket
        // joined to the room gets every message acknowledged once the node says it is ready.
        let m2 = a_ws.say(&room, "after the outage").await;
        let mut m3 = None;
        let delivered = match b_ws.next(Duration::from_secs(5)).await {
            chat_tests::Next::Event(e) if e["event"] == "receive_message" => Some(e),
            other => {
                // Tell a message lost in the reconnection window from a bus that never came back.
                let later = a_ws.say(&room, "later still").await;
                let got = matches!(
                    b_ws.next(Duration::from_secs(5)).await,
                    chat_tests::Next::Event(e) if e["data"] == later
                );
                m3 = Some((later, got, other));
                None
            }
        };
        if let Some((later, got, other)) = m3 {
            panic!(
                "m2 {}, acknowledged after /readyz answered 200 again, never reached the joined \
                 socket (it got {other:?}); a later message {} was {}",
                m2["id"],
                later["id"],
                if got {
                    "delivered"
                } else {
                    "not delivered either"
                }
            );
        }
        assert_eq!(
            delivered.expect("checked")["data"],
            m2,
            "delivery after the bus reconnected"
        );
        let h = app
            .get(&format!("/chatrooms/{room}/messages"), Some(&a.token))
            .await
            .ok();
        assert_eq!(h["messages"], json!([m1, m2]), "nothing lost or duplicated");
        assert!(!a_ws.is_closed() && !b_ws.is_closed());
    })
    .await
}

/// Every flag can be an environment variable `CHAT_<FLAG>`; the flag wins.
#[tokio::test]
async fn flags_come_from_the_environment_too() {
    bounded(async {
        let s = Server::start_with_env(&[], &[("CHAT_SESSION_IDLE_SECS", "123")]).await;
        let c = chat_tests::Client::new(s.addr);
        let v = c
            .post("/register_user", None, &json!({ "phone": A }))
            .await
            .ok();
        assert_eq!(v["expires_in"], 123, "{v}");
        let s2 = Server::start_with_env(
            &["--session-idle-secs".to_owned(), "77".to_owned()],
            &[("CHAT_SESSION_IDLE_SECS", "123")],
        )
        .await;
        let v = chat_tests::Client::new(s2.addr)
            .post("/register_user", None, &json!({ "phone": A }))
            .await
            .ok();
        assert_eq!(v["expires_in"], 77, "the flag wins: {v}");
    })
    .await
}

/// Past `max_connections_per_address`, new connections are closed at once, unanswered.
#[tokio::test]
async fn connections_per_address_are_capped() {
    bounded(async {
        let app = App::start(Backend::Memory, &["--max-connections-per-address", "3"]).await;
        let a = app.register(A).await;
        let w1 = app.ws(&a).await;
        let _w2 = app.ws(&a).await;
        let _w3 = app.ws(&a).await;
        let mut extra = tokio::net::TcpStream::connect(app.addr)
            .await
            .expect("the TCP handshake itself completes");
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let _ = extra
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await;
        let mut buf = [0u8; 256];
        let n = tokio::time::timeout(Duration::from_secs(5), extra.read(&mut buf))
            .await
            .expect("closed at once")
            .unwrap_or(0);
        assert_eq!(
            n,
            0,
            "a 4th connection was answered: {:?}",
            String::from_utf8_lossy(&buf[..n])
        );
        // One closes: there is room again.
        w1.close().await;
        let ok = chat_tests::eventually(Duration::from_secs(5), || async {
            let mut s = tokio::net::TcpStream::connect(app.addr)
                .await
                .expect("connect");
            let _ = s
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await;
            let mut buf = [0u8; 64];
            matches!(
                tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await,
                Ok(Ok(n)) if buf[..n].starts_with(b"HTTP/1.1 200")
            )
        })
        .await;
        assert!(ok, "no connection accepted after one closed");
    })
    .await
}
