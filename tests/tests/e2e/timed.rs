//! What time produces: room expiry, presence going offline, sessions ending, requests expiring,
//! idle and slow sockets, slow request headers. The contract's flags make each take seconds.

use std::time::{Duration, Instant};

use chat_tests::{App, Backend, RawWs, backends, bounded, eventually};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const A: &str = "+14155550131";
const B: &str = "+14155550132";
const C: &str = "+14155550133";

/// Generous bound for anything a sweep does "after N seconds".
const SWEEP_WAIT: Duration = Duration::from_secs(10);

backends!(
    abrupt_disconnect_leaves_rooms_and_goes_offline,
    room_expires_at_its_ttl,
    room_expires_when_both_members_are_idle,
    presence_goes_offline_after_the_last_socket,
    the_upgrade_is_not_an_http_request_for_presence,
    session_end_closes_rooms_and_frees_the_phone,
    a_session_lives_while_its_user_is_online,
    pending_requests_expire_silently,
);

/// A client that vanishes without a close frame is cleaned up like one that closed.
async fn abrupt_disconnect_leaves_rooms_and_goes_offline(b: Backend) {
    let app = App::start(b, &["--presence-secs", "1"]).await;
    let a = app.register(A).await;
    let bu = app.register(B).await;
    let room = app.make_room(&a, &bu).await;
    let mut b_ws = app.ws(&bu).await;
    b_ws.join(&room).await;
    // A's HTTP presence lapses first, so only the raw socket keeps A online.
    let ev = b_ws.recv_event_within("presence", SWEEP_WAIT).await;
    assert_eq!(
        ev["data"],
        json!({"phone": A, "online": false, "names": {}})
    );
    let mut raw = RawWs::connect(app.addr, &a.token, None).await;
    let ev = b_ws.recv_event("presence").await;
    assert_eq!(ev["data"], json!({"phone": A, "online": true, "names": {}}));
    raw.send_frame(
        1,
        json!({"event": "join_room", "data": {"room": room}})
            .to_string()
            .as_bytes(),
    )
    .await
    .expect("join");
    let ev = b_ws
        .recv_where("A joined", chat_tests::EVENT_TIMEOUT, |v| {
            v["event"] == "user_joined" && v["data"]["user"] == A
        })
        .await;
    assert_eq!(ev["data"]["room"], room.as_str());
    raw.drop_connection();
    let ev = b_ws.recv_event_within("user_left", SWEEP_WAIT).await;
    assert_eq!(ev["data"], json!({"room": room, "user": A}));
    let ev = b_ws.recv_event_within("presence", SWEEP_WAIT).await;
    assert_eq!(
        ev["data"],
        json!({"phone": A, "online": false, "names": {}})
    );
    let gauge_back = eventually(SWEEP_WAIT, || async {
        chat_tests::metric_value(&app.metrics().await, "chat_connections") == Some(1.0)
    })
    .await;
    assert!(
        gauge_back,
        "chat_connections did not drop back to the one open socket"
    );
}

async fn room_expires_at_its_ttl(b: Backend) {
    let app = App::start(b, &["--room-ttl-secs", "2"]).await;
    let a = app.register(A).await;
    let bu = app.register(B).await;
    let mut a_ws = app.ws(&a).await;
    let mut b_ws = app.ws(&bu).await;
    let room = app.make_room(&a, &bu).await;
    a_ws.join(&room).await;
    a_ws.say(&room, "short-lived").await;
    let started = Instant::now();
    for ws in [&mut a_ws, &mut b_ws] {
        let ev = ws.recv_event_within("room_expired", SWEEP_WAIT).await;
        assert_eq!(ev["data"], json!({ "room": room }));
    }
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "expired too early"
    );
    // Its messages went with it.
    app.get(&format!("/chatrooms/{room}/messages"), Some(&a.token))
        .await
        .err(404, "room_not_found");
    let v = app.get("/active_chatrooms", Some(&bu.token)).await.ok();
    assert_eq!(v["chatrooms"], json!([]));
    a_ws.call_err("join_room", json!({ "room": room }), "room_not_found")
        .await;
    let page = app.get(&format!("/chatroom/{room}"), None).await;
    assert_eq!(page.status, 404);
    // The two may make a new one.
    app.make_room(&bu, &a).await;
}

async fn room_expires_when_both_members_are_idle(b: Backend) {
    let app = App::start(b, &["--presence-secs", "1", "--room-idle-secs", "1"]).await;
    let a = app.register(A).await;
    let bu = app.register(B).await;
    let room = app.make_room(&a, &bu).await;
    // While a member is online (a socket), the room lives.
    let mut a_ws = app.ws(&a).await;
    tokio::time::sleep(Duration::from_secs(3)).await; // past presence + idle for B alone
    assert_eq!(
        app.get(&format!("/chatroom/{room}"), None).await.status,
        200,
        "the room expired while A was online"
    );
    a_ws.say(&room, "still here").await;
    a_ws.close().await;
    // Both offline: within presence + idle (+ sweep), gone. The page is public and does not
    // refresh anybody's presence, so polling it does not keep the room alive.
    let gone = eventually(SWEEP_WAIT, || async {
        app.get(&format!("/chatroom/{room}"), None).await.status == 404
    })
    .await;
    assert!(gone, "room {room} still there with both members offline");
    app.get(&format!("/chatrooms/{room}/messages"), Some(&a.token))
        .await
        .err(404, "room_not_found");
}

async fn presence_goes_offline_after_the_last_socket(b: Backend) {
    let app = App::start(b, &["--presence-secs", "1"]).await;
    let a = app.register(A).await;
    let bu = app.register(B).await;
    let mut b_ws = app.ws(&bu).await;
    // A shares a pending request with B, so B hears about A's presence.
    app.post("/send_request", Some(&a.token), &json!({ "phone2": B }))
        .await
        .ok();
    b_ws.recv_event("chat_request").await;
    // A's last HTTP request lapses: offline.
    let ev = b_ws.recv_event_within("presence", SWEEP_WAIT).await;
    assert_eq!(
        ev["data"],
        json!({"phone": A, "online": false, "names": {}})
    );
    assert!(!app.online(&bu.token).await.contains(&A.to_owned()));
    // A socket makes A online (the upgrade itself is not an HTTP request, the socket is).
    let a1 = app.ws(&a).await;
    let a2 = app.ws(&a).await;
    let ev = b_ws.recv_event("presence").await;
    assert_eq!(ev["data"], json!({"phone": A, "online": true, "names": {}}));
    assert!(app.online(&bu.token).await.contains(&A.to_owned()));
    // One socket closes: still online. The last one closes: offline.
    a1.close().await;
    b_ws.expect_no_event("presence", Duration::from_millis(1500))
        .await;
    assert!(app.online(&bu.token).await.contains(&A.to_owned()));
    a2.close().await;
    let ev = b_ws.recv_event_within("presence", SWEEP_WAIT).await;
    assert_eq!(
        ev["data"],
        json!({"phone": A, "online": false, "names": {}})
    );
    assert!(!app.online(&bu.token).await.contains(&A.to_owned()));
    // An HTTP API request brings A back online too, and B hears of it.
    app.get("/active_chatrooms", Some(&a.token)).await.ok();
    let ev = b_ws.recv_event("presence").await;
    assert_eq!(ev["data"], json!({"phone": A, "online": true, "names": {}}));
    let ev = b_ws.recv_event_within("presence", SWEEP_WAIT).await;
    assert_eq!(
        ev["data"],
        json!({"phone": A, "online": false, "names": {}})
    );
    // Offline users are not found for requests.
    let c = app.register(C).await;
    app.post("/send_request", Some(&c.token), &json!({ "phone2": A }))
        .await
        .err(404, "user_not_found");
}

/// Presence lasts `presence_secs` after the last HTTP API request, and the WebSocket upgrade is
/// not one: a user whose HTTP presence lapsed goes offline as soon as their only socket closes.
async fn the_upgrade_is_not_an_http_request_for_presence(b: Backend) {
    let app = App::start(b, &["--presence-secs", "3"]).await;
    let a = app.register(A).await;
    let bu = app.register(B).await;
    let mut b_ws = app.ws(&bu).await;
    app.post("/send_request", Some(&a.token), &json!({ "phone2": B }))
        .await
        .ok();
    let ev = b_ws.recv_event_within("presence", SWEEP_WAIT).await;
    assert_eq!(
        ev["data"],
        json!({"phone": A, "online": false, "names": {}})
    );
    let a_ws = app.ws(&a).await;
    let ev = b_ws.recv_event("presence").await;
    assert_eq!(ev["data"], json!({"phone": A, "online": true, "names": {}}));
    let closed_at = Instant::now();
    a_ws.close().await;
    let ev = b_ws.recv_event_within("presence", SWEEP_WAIT).await;
    assert_eq!(
        ev["data"],
        json!({"phone": A, "online": false, "names": {}})
    );
    assert!(
        closed_at.elapsed() < Duration::from_millis(2500),
        "offline {:?} after the last socket closed: the upgrade counted as an HTTP request \
         (presence_secs is 3)",
        closed_at.elapsed()
    );
}

async fn session_end_closes_rooms_and_frees_the_phone(b: Backend) {
    let app = App::start(b, &["--presence-secs", "1", "--session-idle-secs", "2"]).await;
    let a = app.register(A).await;
    let bu = app.register(B).await;
    let c = app.register(C).await;
    let mut b_ws = app.ws(&bu).await;
    let _c_ws = app.ws(&c).await; // keeps C's session alive
    let d = app.register("+14155550134").await;
    let _d_ws = app.ws(&d).await; // keeps D's session alive
    let room = app.make_room(&a, &bu).await;
    // Requests to and from A.
    app.post("/send_request", Some(&c.token), &json!({ "phone2": A }))
        .await
        .ok();
    app.post("/send_request", Some(&a.token), &json!({"phone2": d.phone}))
        .await
        .ok();
    // A goes away: offline after 1 s, session over 2 s later.
    let ev = b_ws.recv_event_within("room_closed", SWEEP_WAIT).await;
    assert_eq!(ev["data"], json!({"room": room, "by": A}));
    // The token is dead; the phone is free and starts fresh.
    app.get("/active_chatrooms", Some(&a.token))
        .await
        .err(401, "unauthorized");
    let a2 = app.register(A).await;
    assert_ne!(a2.token, a.token);
    let v = app.get("/active_chatrooms", Some(&a2.token)).await.ok();
    assert_eq!(v["chatrooms"], json!([]), "a new session inherits no rooms");
    let v = app.get("/incoming_request", Some(&a2.token)).await.ok();
    assert_eq!(
        v,
        json!({"success": true, "incoming_request": [], "sent_request": [], "names": {}}),
        "a new session inherits no requests"
    );
    let v = app.get("/incoming_request", Some(&c.token)).await.ok();
    assert_eq!(
        v,
        json!({"success": true, "incoming_request": [], "sent_request": [], "names": {}}),
        "the ended session's requests were dropped"
    );
    let v = app.get("/incoming_request", Some(&d.token)).await.ok();
    assert_eq!(
        v["incoming_request"],
        json!([]),
        "the ended session's sent requests were dropped"
    );
    let v = app.get("/active_chatrooms", Some(&bu.token)).await.ok();
    assert_eq!(v["chatrooms"], json!([]));
    app.get(&format!("/chatrooms/{room}/messages"), Some(&bu.token))
        .await
        .err(404, "room_not_found");
    // The old token cannot open a socket either.
    assert!(
        chat_tests::Ws::open(app.addr, &a.token, chat_tests::Auth::Header, &[])
            .await
            .is_err()
    );
}

/// `session_idle_secs` counts from the user's last moment online, not from registration.
async fn a_session_lives_while_its_user_is_online(b: Backend) {
    let app = App::start(b, &["--presence-secs", "1", "--session-idle-secs", "1"]).await;
    let a = app.register(A).await;
    let bu = app.register(B).await;
    let room = app.make_room(&a, &bu).await;
    let mut a_ws = app.ws(&a).await;
    let mut b_ws = app.ws(&bu).await;
    // Well past presence + session idle, both still online through their sockets.
    b_ws.expect_no_event("room_closed", Duration::from_secs(4))
        .await;
    a_ws.call_ok("ping", json!({})).await;
    assert!(a_ws.drain_backlog("room_closed").is_empty());
    let v = app.get("/active_chatrooms", Some(&a.token)).await.ok();
    assert_eq!(v["chatrooms"][0]["chat_id"], room.as_str(), "{v}");
    app.post("/register_user", None, &json!({ "phone": A }))
        .await
        .err(409, "phone_in_use");
}

async fn pending_requests_expire_silently(b: Backend) {
    let app = App::start(b, &["--request-ttl-secs", "1"]).await;
    let a = app.register(A).await;
    let bu = app.register(B).await;
    let mut a_ws = app.ws(&a).await;
    let mut b_ws = app.ws(&bu).await;
    app.post("/send_request", Some(&a.token), &json!({ "phone2": B }))
        .await
        .ok();
    b_ws.recv_event("chat_request").await;
    let expired = eventually(SWEEP_WAIT, || async {
        let v = app.get("/incoming_request", Some(&bu.token)).await.ok();
        v["incoming_request"] == json!([])
    })
    .await;
    assert!(expired, "request still pending after its ttl");
    let v = app.get("/incoming_request", Some(&a.token)).await.ok();
    assert_eq!(v["sent_request"], json!([]));
    app.post(
        "/respond_request",
        Some(&bu.token),
        &json!({"phone1": A, "action": "accept"}),
    )
    .await
    .err(404, "request_not_found");
    // Silently: nobody was told.
    for ws in [&mut a_ws, &mut b_ws] {
        ws.call_ok("ping", json!({})).await;
        for name in ["request_cancelled", "request_declined", "request_accepted"] {
            assert!(ws.drain_backlog(name).is_empty(), "{name} after expiry");
        }
    }
    // A may ask again.
    app.post("/send_request", Some(&a.token), &json!({ "phone2": B }))
        .await
        .ok();
}

#[tokio::test]
async fn a_socket_that_answers_no_ping_is_closed_1000() {
    bounded(async {
        let app = App::start(
            Backend::Memory,
            &["--ping-interval-secs", "1", "--idle-timeout-secs", "2"],
        )
        .await;
        let a = app.register(A).await;
        // A well-behaved client (tungstenite answers pings while it reads) stays.
        let mut good = app.ws(&a).await;
        // A raw client that reads but never answers.
        let mut raw = RawWs::connect(app.addr, &a.token, None).await;
        // A raw client that never answers a ping but keeps sending frames is not idle.
        let chatty = RawWs::connect(app.addr, &a.token, None).await;
        let started = Instant::now();
        // The good client keeps reading (and so answering pings) meanwhile.
        let ((code, frames), (), chatty_closed) = tokio::join!(
            raw.until_close(Duration::from_secs(10)),
            good.expect_no_event("never-sent", Duration::from_secs(5)),
            keep_sending_without_pongs(chatty, Duration::from_secs(5))
        );
        assert_eq!(
            chatty_closed, None,
            "a socket sending frames (but no pongs) was closed as idle"
        );
        assert_eq!(code, Some(1000), "idle close code");
        assert!(
            frames.iter().any(|f| f.opcode == 9),
            "the server sent no ping before closing (opcodes {:?})",
            frames.iter().map(|f| f.opcode).collect::<Vec<_>>()
        );
        assert!(
            started.elapsed() >= Duration::from_millis(1500),
            "closed after {:?}, before idle_timeout",
            started.elapsed()
        );
        good.expect_no_event("never-sent", Duration::from_secs(1))
            .await;
        assert!(
            !good.is_closed(),
            "a client answering pings was closed; received:\n  {}",
            good.received()
        );
        good.call_ok("ping", json!({})).await;
    })
    .await
}

/// Sends a `ping` event every 300 ms for `span`, reading everything but never answering a
/// WebSocket ping; returns the close code if the server closed the socket.
async fn keep_sending_without_pongs(mut raw: RawWs, span: Duration) -> Option<Option<u16>> {
    let end = Instant::now() + span;
    while Instant::now() < end {
        if raw.send_frame(1, br#"{"event": "ping"}"#).await.is_err() {
            return Some(None);
        }
        let step = Instant::now() + Duration::from_millis(300);
        while Instant::now() < step {
            match raw.read_frame(step - Instant::now()).await {
                Ok(Some(f)) if f.opcode == 8 => return Some(f.close_code()),
                Ok(Some(_)) => {}
                Ok(None) => return Some(None),
                Err(_) => break, // nothing more within this step
            }
        }
    }
    None
}

#[tokio::test]
async fn a_socket_that_does_not_read_is_closed_1008() {
    bounded(async {
        let app = App::start(
            Backend::Memory,
            &[
                "--frames-per-sec",
                "100000",
                "--frame-burst",
                "100000",
                "--history-max",
                "50",
            ],
        )
        .await;
        let a = app.register(A).await;
        let bu = app.register(B).await;
        let room = app.make_room(&a, &bu).await;
        // The slow reader: joins, then never reads (with a tiny kernel receive buffer).
        let mut slow = RawWs::connect(app.addr, &bu.token, Some(4096)).await;
        slow.send_frame(
            1,
            json!({"event": "join_room", "data": {"room": room}})
                .to_string()
                .as_bytes(),
        )
        .await
        .expect("join");
        let mut sender = app.ws(&a).await;
        // The outgoing queue may be bounded in frames rather than bytes: flood with many
        // kilobyte-sized messages, checking the counter between batches.
        let frame =
            json!({"event": "send_message", "data": {"room": room, "message": "x".repeat(1000)}})
                .to_string();
        let mut counted = false;
        for _batch in 0..50 {
            for _ in 0..100 {
                assert!(
                    sender.try_send_text(&frame).await,
                    "the sender's socket was closed"
                );
            }
            sender.call_ok("ping", json!({})).await;
            let metrics = app.metrics().await;
            if chat_tests::metric_value(&metrics, "chat_slow_consumers_closed_total")
                .is_some_and(|v| v >= 1.0)
            {
                counted = true;
                break;
            }
        }
        let (code, frames) = slow.until_close(Duration::from_secs(10)).await;
        assert_eq!(
            code,
            Some(1008),
            "slow consumer close code (after {} frames)",
            frames.len()
        );
        assert!(
            counted,
            "chat_slow_consumers_closed_total did not count the close"
        );
        assert!(
            sender.drain_backlog("error").is_empty(),
            "the sender got errors"
        );
        // Everybody else is fine.
        sender.call_ok("ping", json!({})).await;
    })
    .await
}

#[tokio::test]
async fn connections_that_send_no_headers_are_closed() {
    bounded(async {
        let app = App::start(Backend::Memory, &["--header-timeout-secs", "1"]).await;
        // Nothing at all.
        let started = Instant::now();
        let mut s = TcpStream::connect(app.addr).await.expect("connect");
        assert_closed(&mut s, Duration::from_secs(5)).await;
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(500),
            "closed after {took:?}, before the header timeout"
        );
        // Half a request head.
        let mut s = TcpStream::connect(app.addr).await.expect("connect");
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .await
            .expect("write");
        assert_closed(&mut s, Duration::from_secs(5)).await;
        // An idle keep-alive connection after a response.
        let mut s = TcpStream::connect(app.addr).await.expect("connect");
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("answer in time")
            .expect("read");
        assert!(
            buf[..n].starts_with(b"HTTP/1.1 200"),
            "{:?}",
            String::from_utf8_lossy(&buf[..n])
        );
        assert_closed(&mut s, Duration::from_secs(5)).await;
        // The server still answers.
        app.get("/healthz", None).await.ok();
    })
    .await
}

/// Reads until the server ends the connection, within `wait`.
async fn assert_closed(s: &mut TcpStream, wait: Duration) {
    let mut buf = [0u8; 1024];
    let res = tokio::time::timeout(wait, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {} // e.g. a 408 before closing
            }
        }
    })
    .await;
    assert!(
        res.is_ok(),
        "the server kept the connection open past {wait:?}"
    );
}
