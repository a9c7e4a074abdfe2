//! The WebSocket: upgrade and authentication, every client event, acks, bad frames and the
//! close codes.

use std::time::Duration;

use chat_tests::{App, Auth, Backend, Next, RawWs, Ws, assert_message, backends, bounded, texts};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const A: &str = "+14155550121";
const B: &str = "+14155550122";
const C: &str = "+14155550123";

backends!(
    upgrade_authenticates,
    tickets_open_one_socket_each,
    register_user_socket_replies,
    join_room_history_and_user_joined,
    join_room_errors,
    history_window_and_since,
    rejoin_with_since_gets_exactly_what_was_missed,
    send_message_reaches_every_joined_socket,
    send_message_errors,
    client_id_is_idempotent,
    typing_goes_to_the_other_member_only,
    leave_room_and_socket_close,
    requests_reach_every_socket_of_the_user,
    concurrent_senders_see_one_order,
    history_keeps_at_least_history_max,
    paging_is_exact_through_a_burst,
);

/// Rooms and users for a test: A and B share `room`; C is outside.
struct Fixture {
    app: App,
    a: chat_tests::User,
    b: chat_tests::User,
    c: chat_tests::User,
    room: String,
}

async fn fixture(backend: Backend, flags: &[&str]) -> Fixture {
    let app = App::start(backend, flags).await;
    let a = app.register(A).await;
    let b = app.register(B).await;
    let c = app.register(C).await;
    let room = app.make_room(&a, &b).await;
    Fixture { app, a, b, c, room }
}

async fn upgrade_authenticates(b: Backend) {
    let app = App::start(b, &[]).await;
    let a = app.register(A).await;
    // Header and query string both work.
    let ws = Ws::connect(app.addr, &a.token, A).await;
    let mut q = Ws::open(app.addr, &a.token, Auth::Query, &[])
        .await
        .unwrap_or_else(|r| panic!("?token= refused: {} {}", r.status, r.body));
    q.phone = A.into();
    let st = q.recv_event("connection_status").await;
    assert_eq!(
        st,
        json!({"event": "connection_status", "data": {"status": "connected", "phone": A}})
    );
    // Bad tokens: HTTP 401, no upgrade.
    for token in ["", "nope", &"a".repeat(64)] {
        for auth in [Auth::Header, Auth::Query] {
            match Ws::open(app.addr, token, auth, &[]).await {
                Ok(_) => panic!("upgrade with token {token:?} ({auth:?}) was accepted"),
                Err(r) => {
                    assert_eq!(r.status, 401, "token {token:?} ({auth:?}): {}", r.body);
                    assert!(r.body.contains("\"unauthorized\""), "401 body: {}", r.body);
                }
            }
        }
    }
    // The upgrade does not need an Origin; any Origin is fine by default.
    let mut o = Ws::open(
        app.addr,
        &a.token,
        Auth::Header,
        &[("Origin", "http://elsewhere.example")],
    )
    .await
    .unwrap_or_else(|r| panic!("Origin refused by default: {} {}", r.status, r.body));
    o.phone = A.into();
    o.recv_event("connection_status").await;
    ws.close().await;
}

/// `POST /ws_ticket` gives a single-use ticket for `GET /ws?ticket=`, bound to the session.
async fn tickets_open_one_socket_each(b: Backend) {
    let app = App::start(b, &[]).await;
    let a = app.register(A).await;
    app.post("/ws_ticket", None, &json!({}))
        .await
        .err(401, "unauthorized");
    let v = app.post_raw("/ws_ticket", Some(&a.token), b"").await.ok();
    assert_eq!(v["expires_in"], 30, "{v}");
    let ticket = v["ticket"].as_str().expect("ticket").to_owned();
    assert!(ticket.len() >= 22 && ticket != a.token, "{v}");
    let mut ws = Ws::open(app.addr, &ticket, Auth::Ticket, &[])
        .await
        .unwrap_or_else(|r| panic!("?ticket= refused: {} {}", r.status, r.body));
    ws.phone = A.into();
    let st = ws.recv_event("connection_status").await;
    assert_eq!(st["data"]["phone"], A);
    // The socket works like any other.
    ws.call_ok("ping", json!({})).await;
    // Used once: refused the second time, as is a ticket that was never given, or a token
    // passed as a ticket.
    for bad in [
        ticket.as_str(),
        "0".repeat(64).as_str(),
        a.token.as_str(),
        "x",
    ] {
        let r = Ws::open(app.addr, bad, Auth::Ticket, &[])
            .await
            .err()
            .unwrap_or_else(|| panic!("ticket {bad:?} was accepted"));
        assert_eq!(r.status, 401, "{}", r.body);
    }
    // A ticket of a session that was refreshed is still the same session's.
    let t2 = app
        .post("/ws_ticket", Some(&a.token), &json!({"x": 1}))
        .await
        .ok()["ticket"]
        .as_str()
        .expect("ticket")
        .to_owned();
    let mut ws2 = Ws::open(app.addr, &t2, Auth::Ticket, &[])
        .await
        .unwrap_or_else(|r| panic!("second ticket refused: {} {}", r.status, r.body));
    ws2.phone = A.into();
    ws2.recv_event("connection_status").await;
}

async fn register_user_socket_replies(b: Backend) {
    let f = fixture(b, &[]).await;
    let mut ws = f.app.ws(&f.a).await;
    for data in [
        json!({}),
        json!({"phone": A}),
        json!({"phone": "+1 (415) 555-0121"}),
    ] {
        let r = ws.call("register_user_socket", data.clone()).await;
        assert_eq!(r["event"], "user_registered", "{data}: {r}");
        assert_eq!(r["data"], json!({"status": "registered"}), "{r}");
    }
    // Without data at all.
    ws.send_text(r#"{"event": "register_user_socket", "ack": "r"}"#)
        .await;
    let r = ws.recv_ack(&json!("r")).await;
    assert_eq!(r["event"], "user_registered", "{r}");
    for phone in [json!(B), json!("garbage")] {
        ws.call_err(
            "register_user_socket",
            json!({ "phone": phone }),
            "forbidden",
        )
        .await;
    }
    ws.call_err("register_user_socket", json!({"phone": 5}), "bad_request")
        .await;
}

async fn join_room_history_and_user_joined(b: Backend) {
    let f = fixture(b, &[]).await;
    let mut a1 = f.app.ws(&f.a).await;
    let mut a2 = f.app.ws(&f.a).await;
    let mut b1 = f.app.ws(&f.b).await;
    let h = a1.join(&f.room).await;
    assert_eq!(
        h,
        json!({"room": f.room, "messages": [], "more": false, "read": {A: null, B: null}})
    );
    // A second socket of the same user, with the optional caller fields.
    let h = a2
        .join_with(json!({"room": f.room, "phone": A, "user": "+1 415 555 0121"}))
        .await;
    assert_eq!(h["messages"], json!([]));
    let ev = a1.recv_event("user_joined").await;
    assert_eq!(ev["data"], json!({"room": f.room, "user": A, "names": {}}));
    let m = a1.say(&f.room, "before b").await;
    b1.join(&f.room).await;
    for ws in [&mut a1, &mut a2] {
        let ev = ws
            .recv_where("user_joined of B", chat_tests::EVENT_TIMEOUT, |v| {
                v["event"] == "user_joined" && v["data"]["user"] == B
            })
            .await;
        assert_eq!(ev["data"], json!({"room": f.room, "user": B, "names": {}}));
    }
    // B's history has A's message.
    let mut b2 = f.app.ws(&f.b).await;
    let h = b2.join(&f.room).await;
    assert_eq!(h["messages"], json!([m]));
    assert_eq!(h["more"], false);
    // The reply carries the ack; join without ack still gets room_history.
    b2.send("join_room", json!({"room": f.room}), None).await;
    let h = b2.recv_event("room_history").await;
    assert!(h.get("ack").is_none() || h["ack"].is_null(), "{h}");
}

async fn join_room_errors(b: Backend) {
    let f = fixture(b, &[]).await;
    let mut c = f.app.ws(&f.c).await;
    c.call_err("join_room", json!({"room": f.room}), "forbidden")
        .await;
    let mut a = f.app.ws(&f.a).await;
    for room in [
        json!("00000000-0000-4000-8000-000000000000"),
        json!("not-a-uuid"),
        json!(""),
    ] {
        a.call_err("join_room", json!({ "room": room }), "room_not_found")
            .await;
    }
    for data in [
        json!({}),
        json!({"room": 5}),
        json!({"room": f.room, "since": 5}),
        json!({"room": f.room, "phone": 5}),
        json!({"room": [f.room]}),
    ] {
        a.call_err("join_room", data, "bad_request").await;
    }
    a.call_err(
        "join_room",
        json!({"room": f.room, "since": "garbage"}),
        "bad_request",
    )
    .await;
    a.call_err(
        "join_room",
        json!({"room": f.room, "phone": B}),
        "forbidden",
    )
    .await;
    a.call_err("join_room", json!({"room": f.room, "user": B}), "forbidden")
        .await;
    // A failed join does not join: no room events arrive.
    let mut b_ws = f.app.ws(&f.b).await;
    b_ws.say(&f.room, "not for unjoined sockets").await;
    a.call_ok("ping", json!({})).await;
    a.expect_no_event("receive_message", Duration::from_millis(300))
        .await;
}

async fn history_window_and_since(b: Backend) {
    let f = fixture(b, &["--frames-per-sec", "1000", "--frame-burst", "1000"]).await;
    let mut a = f.app.ws(&f.a).await;
    let mut sent = Vec::new();
    for i in 0..56 {
        sent.push(a.say(&f.room, &format!("n{i}")).await);
    }
    let mut b_ws = f.app.ws(&f.b).await;
    let h = b_ws.join(&f.room).await;
    assert_eq!(h["messages"], json!(sent[6..]), "the last 50");
    assert_eq!(h["more"], true, "older ones exist");
    // Since an id: everything after it.
    let mut b2 = f.app.ws(&f.b).await;
    let h = b2
        .join_with(json!({"room": f.room, "since": sent[9]["id"]}))
        .await;
    assert_eq!(h["messages"], json!(sent[10..]));
    assert_eq!(h["more"], false);
    let mut b3 = f.app.ws(&f.b).await;
    let h = b3
        .join_with(json!({"room": f.room, "since": sent[55]["id"]}))
        .await;
    assert_eq!(h["messages"], json!([]));
    assert_eq!(h["more"], false);
    // Up to 500 after `since`; `more` says the rest is to be fetched over REST.
    for i in 0..460 {
        a.send(
            "send_message",
            json!({"room": f.room, "message": format!("bulk{i}")}),
            None,
        )
        .await;
    }
    let last = a.say(&f.room, "bulk-end").await;
    let mut b4 = f.app.ws(&f.b).await;
    let h = b4
        .join_with(json!({"room": f.room, "since": sent[0]["id"]}))
        .await;
    let got = h["messages"].as_array().expect("messages");
    assert_eq!(got.len(), 500, "up to 500 after since");
    assert_eq!(got[0], sent[1], "oldest first, strictly after since");
    assert_eq!(h["more"], true);
    let rest = f
        .app
        .get(
            &format!(
                "/chatrooms/{}/messages?after={}&limit=500",
                f.room,
                got[499]["id"].as_str().expect("id")
            ),
            Some(&f.b.token),
        )
        .await
        .ok();
    let rest = rest["messages"].as_array().expect("messages").clone();
    assert_eq!(rest.len(), 56 + 461 - 501, "the rest over REST");
    assert_eq!(rest.last(), Some(&last));
}

async fn concurrent_senders_see_one_order(b: Backend) {
    let f = fixture(b, &["--frames-per-sec", "1000", "--frame-burst", "1000"]).await;
    let mut a1 = f.app.ws(&f.a).await;
    let mut b1 = f.app.ws(&f.b).await;
    let mut a_send = f.app.ws(&f.a).await;
    let mut b_send = f.app.ws(&f.b).await;
    a1.join(&f.room).await;
    b1.join(&f.room).await;
    tokio::join!(
        a_send.send_burst(&f.room, "a", 25),
        b_send.send_burst(&f.room, "b", 25)
    );
    let mut orders = Vec::new();
    for ws in [&mut a1, &mut b1] {
        let mut got = Vec::new();
        for _ in 0..50 {
            got.push(ws.recv_event("receive_message").await["data"].clone());
        }
        orders.push(got);
    }
    assert_eq!(orders[0], orders[1], "two joined sockets saw two orders");
    let h = f
        .app
        .get(
            &format!("/chatrooms/{}/messages?limit=500", f.room),
            Some(&f.a.token),
        )
        .await
        .ok();
    assert_eq!(
        h["messages"],
        json!(orders[0]),
        "delivery order is history order"
    );
    // Each sender's own messages keep their order.
    let texts = texts(&h["messages"]);
    for who in ["a", "b"] {
        let mine: Vec<&String> = texts.iter().filter(|t| t.starts_with(who)).collect();
        let expected: Vec<String> = (0..25).map(|i| format!("{who}{i}")).collect();
        assert_eq!(mine, expected.iter().collect::<Vec<_>>(), "{who}'s order");
    }
}

/// Many messages in the same millisecond (ids `<ms>-0` … `<ms>-12` compare as numbers, not as
/// text): `after` and `since` still step through them one by one.
async fn paging_is_exact_through_a_burst(b: Backend) {
    let f = fixture(b, &["--frames-per-sec", "10000", "--frame-burst", "10000"]).await;
    let mut a = f.app.ws(&f.a).await;
    for i in 0..150 {
        a.send(
            "send_message",
            json!({"room": f.room, "message": format!("b{i}")}),
            None,
        )
        .await;
    }
    a.say(&f.room, "end").await;
    let all = f
        .app
        .get(
            &format!("/chatrooms/{}/messages?limit=500", f.room),
            Some(&f.a.token),
        )
        .await
        .ok();
    let all_ids = chat_tests::ids(&all["messages"]);
    assert_eq!(all_ids.len(), 151);
    let expected: Vec<String> = (0..150)
        .map(|i| format!("b{i}"))
        .chain(["end".to_owned()])
        .collect();
    assert_eq!(
        texts(&all["messages"]),
        expected,
        "history in sending order"
    );
    for w in all_ids.windows(2) {
        let v = f
            .app
            .get(
                &format!("/chatrooms/{}/messages?after={}&limit=1", f.room, w[0]),
                Some(&f.a.token),
            )
            .await
            .ok();
        assert_eq!(
            chat_tests::ids(&v["messages"]),
            [w[1].clone()],
            "after {}",
            w[0]
        );
    }
    // The same through join_room's since, at a few points.
    for at in [0, 9, 10, 11, 99, 100, 149] {
        let mut ws = f.app.ws(&f.b).await;
        let h = ws
            .join_with(json!({"room": f.room, "since": all_ids[at]}))
            .await;
        assert_eq!(
            chat_tests::ids(&h["messages"]),
            all_ids[at + 1..].to_vec(),
            "since {}",
            all_ids[at]
        );
        ws.close().await;
    }
}

async fn history_keeps_at_least_history_max(b: Backend) {
    let f = fixture(
        b,
        &[
            "--history-max",
            "5",
            "--frames-per-sec",
            "1000",
            "--frame-burst",
            "1000",
        ],
    )
    .await;
    let mut a = f.app.ws(&f.a).await;
    let mut sent = Vec::new();
    for i in 0..12 {
        sent.push(a.say(&f.room, &format!("h{i}")).await);
    }
    let h = f
        .app
        .get(
            &format!("/chatrooms/{}/messages?limit=500", f.room),
            Some(&f.a.token),
        )
        .await
        .ok();
    let kept = h["messages"].as_array().expect("messages");
    assert!(kept.len() >= 5, "kept only {}", kept.len());
    assert_eq!(
        kept[..],
        sent[sent.len() - kept.len()..],
        "a contiguous tail, in order"
    );
    let mut b_ws = f.app.ws(&f.b).await;
    let joined = b_ws.join(&f.room).await;
    assert_eq!(joined["messages"], json!(kept));
}

async fn rejoin_with_since_gets_exactly_what_was_missed(b: Backend) {
    let f = fixture(b, &[]).await;
    let mut a = f.app.ws(&f.a).await;
    let mut b_ws = f.app.ws(&f.b).await;
    a.join(&f.room).await;
    let first = b_ws.say(&f.room, "one").await;
    let got = a.recv_event("receive_message").await;
    assert_eq!(got["data"], first);
    let last_seen = first["id"].clone();
    a.close().await;
    let missed = vec![
        b_ws.say(&f.room, "two").await,
        b_ws.say(&f.room, "three").await,
    ];
    let mut a = f.app.ws(&f.a).await;
    let h = a
        .join_with(json!({"room": f.room, "since": last_seen}))
        .await;
    assert_eq!(h["messages"], json!(missed), "exactly what was missed");
    assert_eq!(h["more"], false);
    // And the stream continues live after the history.
    let four = b_ws.say(&f.room, "four").await;
    let got = a.recv_event("receive_message").await;
    assert_eq!(got["data"], four);
}

async fn send_message_reaches_every_joined_socket(b: Backend) {
    let f = fixture(b, &[]).await;
    let mut a1 = f.app.ws(&f.a).await;
    let mut a2 = f.app.ws(&f.a).await;
    let mut a_unjoined = f.app.ws(&f.a).await;
    let mut b1 = f.app.ws(&f.b).await;
    let mut b_unjoined = f.app.ws(&f.b).await;
    for ws in [&mut a1, &mut a2, &mut b1] {
        ws.join(&f.room).await;
    }
    let text = "  <b>hi</b> & \"quotes\" \u{1F600}\r\n\u{0}\t\u{200B}  ";
    let ack = a1
        .call_ok(
            "send_message",
            json!({"room": f.room, "message": text, "sender": A}),
        )
        .await;
    assert_eq!(ack["event"], "ack", "{ack}");
    let m = ack["data"].clone();
    assert_message(&m, &f.room, A, text);
    assert_eq!(m["client_id"], Value::Null);
    for ws in [&mut a1, &mut a2, &mut b1] {
        let got = ws.recv_event("receive_message").await;
        assert_eq!(got["data"], m, "[{}] echo equals the ack", ws.phone);
        assert!(got.get("ack").is_none() || got["ack"].is_null(), "{got}");
    }
    // Sending without joining is allowed; the sender's unjoined socket gets no echo.
    let m2 = b_unjoined.say(&f.room, "from outside the room").await;
    assert_message(&m2, &f.room, B, "from outside the room");
    for ws in [&mut a1, &mut a2, &mut b1] {
        let got = ws.recv_event("receive_message").await;
        assert_eq!(got["data"], m2);
    }
    a_unjoined.call_ok("ping", json!({})).await;
    a_unjoined
        .expect_no_event("receive_message", Duration::from_millis(300))
        .await;
    b_unjoined
        .expect_no_event("receive_message", Duration::from_millis(100))
        .await;
    // Ids order the history.
    let h = f
        .app
        .get(&format!("/chatrooms/{}/messages", f.room), Some(&f.a.token))
        .await
        .ok();
    assert_eq!(h["messages"], json!([m, m2]));
}

async fn send_message_errors(b: Backend) {
    let f = fixture(b, &["--max-message-chars", "10"]).await;
    let mut a = f.app.ws(&f.a).await;
    let mut c = f.app.ws(&f.c).await;
    let room = f.room.as_str();
    for text in ["", "   ", "\n\t", "\u{3000}\u{2003}"] {
        a.call_err(
            "send_message",
            json!({"room": room, "message": text}),
            "empty_message",
        )
        .await;
    }
    a.call_err(
        "send_message",
        json!({"room": room, "message": "12345678901"}),
        "message_too_long",
    )
    .await;
    // Ten scalar values, many bytes: fine. Counted as sent, surrounding spaces included.
    a.say(room, "éééééééééé").await;
    a.say(room, "\u{1F600}".repeat(10).as_str()).await;
    a.call_err(
        "send_message",
        json!({"room": room, "message": " 123456789 "}),
        "message_too_long",
    )
    .await;
    for client_id in [json!(""), json!("x".repeat(65)), json!(5), json!({})] {
        a.call_err(
            "send_message",
            json!({"room": room, "message": "hi", "client_id": client_id}),
            "bad_request",
        )
        .await;
    }
    let ok = a
        .call_ok(
            "send_message",
            json!({"room": room, "message": "hi", "client_id": "é".repeat(64)}),
        )
        .await;
    assert_eq!(ok["data"]["client_id"], "é".repeat(64));
    for data in [
        json!({"room": room}),
        json!({"message": "hi"}),
        json!({"room": room, "message": 5}),
        json!({"room": 5, "message": "hi"}),
        json!({"room": room, "message": "hi", "sender": 5}),
    ] {
        a.call_err("send_message", data, "bad_request").await;
    }
    a.call_err(
        "send_message",
        json!({"room": room, "message": "hi", "sender": B}),
        "forbidden",
    )
    .await;
    c.call_err(
        "send_message",
        json!({"room": room, "message": "hi"}),
        "forbidden",
    )
    .await;
    for bad_room in ["00000000-0000-4000-8000-000000000000", "zzz"] {
        a.call_err(
            "send_message",
            json!({"room": bad_room, "message": "hi"}),
            "room_not_found",
        )
        .await;
    }
    // Only the accepted ones were stored.
    let h = f
        .app
        .get(&format!("/chatrooms/{room}/messages"), Some(&f.b.token))
        .await
        .ok();
    assert_eq!(h["messages"].as_array().map(Vec::len), Some(3), "{h}");
    // An error without ack has no ack.
    a.send("send_message", json!({"room": room, "message": ""}), None)
        .await;
    let e = a.recv_event("error").await;
    assert_eq!(e["data"]["code"], "empty_message");
    assert!(e.get("ack").is_none() || e["ack"].is_null(), "{e}");
}

async fn client_id_is_idempotent(b: Backend) {
    let f = fixture(b, &[]).await;
    let mut a = f.app.ws(&f.a).await;
    let mut b_ws = f.app.ws(&f.b).await;
    b_ws.join(&f.room).await;
    let data = json!({"room": f.room, "message": "once", "client_id": "c-1"});
    let first = a.call_ok("send_message", data.clone()).await;
    assert_eq!(first["data"]["client_id"], "c-1");
    let again = a.call_ok("send_message", data.clone()).await;
    assert_eq!(
        again["data"], first["data"],
        "a repeat is acked with the first message"
    );
    // Even with other text, the same client_id is the same message.
    let changed = a
        .call_ok(
            "send_message",
            json!({"room": f.room, "message": "other", "client_id": "c-1"}),
        )
        .await;
    assert_eq!(changed["data"]["id"], first["data"]["id"]);
    // Another sender with the same client_id: a new message.
    let theirs = b_ws
        .call_ok(
            "send_message",
            json!({"room": f.room, "message": "mine", "client_id": "c-1"}),
        )
        .await;
    assert_ne!(theirs["data"]["id"], first["data"]["id"]);
    let marker = a.say(&f.room, "marker").await;
    // B's joined socket saw each message exactly once, in order.
    let mut seen = Vec::new();
    loop {
        let m = b_ws.recv_event("receive_message").await;
        let done = m["data"]["id"] == marker["id"];
        seen.push(m["data"]["message"].as_str().unwrap_or_default().to_owned());
        if done {
            break;
        }
    }
    assert_eq!(seen, ["once", "mine", "marker"]);
    let h = f
        .app
        .get(&format!("/chatrooms/{}/messages", f.room), Some(&f.a.token))
        .await
        .ok();
    assert_eq!(texts(&h["messages"]), ["once", "mine", "marker"]);
}

async fn typing_goes_to_the_other_member_only(b: Backend) {
    let f = fixture(b, &[]).await;
    let mut a1 = f.app.ws(&f.a).await;
    let mut a2 = f.app.ws(&f.a).await;
    let mut b1 = f.app.ws(&f.b).await;
    let mut b_unjoined = f.app.ws(&f.b).await;
    for ws in [&mut a1, &mut a2, &mut b1] {
        ws.join(&f.room).await;
    }
    let r = a1
        .call_ok("typing", json!({"room": f.room, "typing": true}))
        .await;
    assert_eq!(r, json!({"event": "ack", "ack": r["ack"], "data": {}}));
    let ev = b1.recv_event("typing").await;
    assert_eq!(
        ev["data"],
        json!({"room": f.room, "user": A, "typing": true})
    );
    a1.send("typing", json!({"room": f.room, "typing": false}), None)
        .await;
    let ev = b1.recv_event("typing").await;
    assert_eq!(ev["data"]["typing"], false);
    // A's sockets get no typing of A's own: a later message arrives with none before it.
    let m = a1.say(&f.room, "after typing").await;
    for ws in [&mut a1, &mut a2] {
        let got = ws.recv_event("receive_message").await;
        assert_eq!(got["data"], m);
        assert!(
            ws.drain_backlog("typing").is_empty(),
            "[{}] got its own typing",
            ws.phone
        );
    }
    b_unjoined.call_ok("ping", json!({})).await;
    b_unjoined
        .expect_no_event("typing", Duration::from_millis(200))
        .await;
    // Not stored.
    let h = f
        .app
        .get(&format!("/chatrooms/{}/messages", f.room), Some(&f.a.token))
        .await
        .ok();
    assert_eq!(texts(&h["messages"]), ["after typing"]);
    let mut c = f.app.ws(&f.c).await;
    c.call_err(
        "typing",
        json!({"room": f.room, "typing": true}),
        "forbidden",
    )
    .await;
    a1.call_err(
        "typing",
        json!({"room": f.room, "typing": "yes"}),
        "bad_request",
    )
    .await;
    a1.call_err("typing", json!({"room": f.room}), "bad_request")
        .await;
}

async fn leave_room_and_socket_close(b: Backend) {
    let f = fixture(b, &[]).await;
    let mut a1 = f.app.ws(&f.a).await;
    let mut a2 = f.app.ws(&f.a).await;
    let mut b1 = f.app.ws(&f.b).await;
    for ws in [&mut a1, &mut a2, &mut b1] {
        ws.join(&f.room).await;
    }
    // Drain the joins of the others.
    b1.call_ok("ping", json!({})).await;
    let r = a1.call_ok("leave_room", json!({"room": f.room})).await;
    assert_eq!(r["event"], "ack", "{r}");
    assert_eq!(r["data"], json!({}));
    for ws in [&mut a2, &mut b1] {
        let ev = ws.recv_event("user_left").await;
        assert_eq!(ev["data"], json!({"room": f.room, "user": A}));
    }
    let m = b1.say(&f.room, "after a1 left").await;
    a2.recv_event("receive_message").await;
    b1.recv_event("receive_message").await;
    a1.call_ok("ping", json!({})).await;
    a1.expect_no_event("receive_message", Duration::from_millis(300))
        .await;
    assert!(
        a1.drain_backlog("user_left").is_empty(),
        "the leaving socket is not told it left"
    );
    // A socket that closes leaves the same way.
    a2.close().await;
    let ev = b1.recv_event("user_left").await;
    assert_eq!(ev["data"], json!({"room": f.room, "user": A}));
    let mut c = f.app.ws(&f.c).await;
    c.call_err("leave_room", json!({}), "bad_request").await;
    c.call_err("leave_room", json!({"room": 5}), "bad_request")
        .await;
    let h = f
        .app
        .get(&format!("/chatrooms/{}/messages", f.room), Some(&f.a.token))
        .await
        .ok();
    assert_eq!(h["messages"], json!([m]));
}

async fn requests_reach_every_socket_of_the_user(b: Backend) {
    let app = App::start(b, &[]).await;
    let a = app.register(A).await;
    let bu = app.register(B).await;
    let mut b1 = app.ws(&bu).await;
    let mut b2 = app.ws(&bu).await;
    let mut a1 = app.ws(&a).await;
    app.post("/send_request", Some(&a.token), &json!({ "phone2": B }))
        .await
        .ok();
    for ws in [&mut b1, &mut b2] {
        let ev = ws.recv_event("chat_request").await;
        assert_eq!(ev["data"]["from"], A);
    }
    let room = app
        .post(
            "/respond_request",
            Some(&bu.token),
            &json!({"phone1": A, "action": "accept"}),
        )
        .await
        .ok()["message"]["chat_id"]
        .clone();
    for ws in [&mut b1, &mut b2, &mut a1] {
        let ev = ws.recv_event("request_accepted").await;
        assert_eq!(ev["data"]["chat_id"], room);
    }
}

// ---- frame-level behaviour: independent of the store, memory only ----

#[tokio::test]
async fn ping_pong_and_acks() {
    bounded(async {
        let app = App::start(Backend::Memory, &[]).await;
        let a = app.register(A).await;
        let mut ws = app.ws(&a).await;
        // Acks come back exactly as sent: big integers are not rounded through floats.
        for ack in [
            json!(7),
            json!("seven"),
            json!(0),
            json!(-1.5),
            json!(""),
            json!(u64::MAX),
            json!(-9_007_199_254_740_993_i64),
            json!("é\n\"<x>"),
        ] {
            ws.send("ping", json!({}), Some(ack.clone())).await;
            let r = ws.recv_ack(&ack).await;
            assert_eq!(r, json!({"event": "pong", "ack": ack, "data": {}}));
        }
        // data may be left out; ack null means none.
        ws.send_text(r#"{"event": "ping", "ack": 9}"#).await;
        assert_eq!(ws.recv_ack(&json!(9)).await["event"], "pong");
        ws.send_text(r#"{"event": "ping", "ack": null}"#).await;
        let r = ws.recv_event("pong").await;
        assert!(r.get("ack").is_none() || r["ack"].is_null(), "{r}");
        ws.send_text(r#"{"event": "ping"}"#).await;
        let r = ws.recv_event("pong").await;
        assert_eq!(r["data"], json!({}));
        assert!(r.get("ack").is_none() || r["ack"].is_null(), "{r}");
        // The reply event named by the table carries the ack.
        let r = ws.call("register_user_socket", json!({})).await;
        assert_eq!(r["event"], "user_registered");
    })
    .await
}

#[tokio::test]
async fn bad_frames_get_errors_and_keep_the_socket() {
    bounded(async {
        let app = App::start(
            Backend::Memory,
            &["--frames-per-sec", "1000", "--frame-burst", "1000"],
        )
        .await;
        let a = app.register(A).await;
        let mut ws = app.ws(&a).await;
        // Without ack: an error without ack.
        for text in [
            "not json",
            "{",
            "[1,2]",
            "\"ping\"",
            "42",
            "null",
            "{}",
            r#"{"data": {}}"#,
            r#"{"event": 5}"#,
            r#"{"event": null}"#,
            r#"{"event": ["ping"]}"#,
            r#"{"event": "ping", "ack": {}}"#,
            r#"{"event": "ping", "ack": [1]}"#,
            r#"{"event": "ping", "ack": true}"#,
            r#"{"event": "ping", "data": 5}"#,
            r#"{"event": "ping", "data": "x"}"#,
        ] {
            ws.send_text(text).await;
            let e = ws.recv_event("error").await;
            assert_eq!(e["data"]["code"], "bad_request", "{text}: {e}");
            assert!(e.get("ack").is_none() || e["ack"].is_null(), "{text}: {e}");
            assert!(e["data"]["message"].is_string(), "{e}");
            // Keep the bad-frame run short of 20.
            ws.call_ok("ping", json!({})).await;
        }
        // With a usable ack: the error carries it.
        ws.send_text(r#"{"event": "join_room", "data": {"room": 5}, "ack": 3}"#)
            .await;
        let e = ws.recv_ack(&json!(3)).await;
        assert_eq!(e["event"], "error");
        assert_eq!(e["data"]["code"], "bad_request");
        ws.send_text(r#"{"event": "ping", "data": [], "ack": "d"}"#)
            .await;
        let e = ws.recv_ack(&json!("d")).await;
        assert_eq!(e["data"]["code"], "bad_request", "{e}");
        // Unknown events.
        for (name, ack) in [("nope", json!("u")), ("PING", json!(4)), ("", json!(5))] {
            ws.send(name, json!({}), Some(ack.clone())).await;
            let e = ws.recv_ack(&ack).await;
            assert_eq!(
                (e["event"].as_str(), e["data"]["code"].as_str()),
                (Some("error"), Some("unknown_event")),
                "{name}: {e}"
            );
        }
        // A lone surrogate (valid JSON syntax, not a Unicode string): an answer either way, the
        // socket stays open.
        ws.send_text(r#"{"event": "ping", "ack": "s", "data": {"x": "\ud800"}}"#)
            .await;
        let r = ws.recv_ack(&json!("s")).await;
        assert!(
            r["event"] == "pong" || r["data"]["code"] == "bad_request",
            "{r}"
        );
        // Deep nesting is refused, not recursed into (and ignored where it is ignorable).
        for deep in [
            format!("{}{}", "[".repeat(5000), "]".repeat(5000)),
            format!(
                r#"{{"event": "join_room", "data": {{"room": {}{}}}}}"#,
                "[".repeat(5000),
                "]".repeat(5000)
            ),
        ] {
            ws.send_text(&deep).await;
            let e = ws.recv_event("error").await;
            assert_eq!(e["data"]["code"], "bad_request", "{e}");
            ws.call_ok("ping", json!({})).await;
        }
        // Events with fields need their data.
        ws.send_text(r#"{"event": "join_room", "ack": 11}"#).await;
        let e = ws.recv_ack(&json!(11)).await;
        assert_eq!(e["data"]["code"], "bad_request", "{e}");
        ws.send("receive_message", json!({}), None).await;
        assert_eq!(
            ws.recv_event("error").await["data"]["code"],
            "unknown_event"
        );
        // Still open.
        ws.call_ok("ping", json!({})).await;
        assert!(!ws.is_closed());
    })
    .await
}

#[tokio::test]
async fn twenty_bad_frames_in_a_row_close_1008() {
    bounded(async {
        let app = App::start(
            Backend::Memory,
            &["--frames-per-sec", "1000", "--frame-burst", "1000"],
        )
        .await;
        let a = app.register(A).await;
        let mut ws = app.ws(&a).await;
        // 19 bad, a good one ends the run, 19 more bad: still open.
        for round in 0..2 {
            for i in 0..19 {
                let frame = if i % 2 == 0 {
                    "garbage".to_owned()
                } else {
                    json!({"event": "nope"}).to_string()
                };
                ws.send_text(&frame).await;
            }
            let pong = ws.call("ping", json!({})).await;
            assert_eq!(pong["event"], "pong", "round {round}: {pong}");
            let errors = ws.drain_backlog("error");
            assert_eq!(errors.len(), 19, "round {round}: every bad frame answered");
        }
        // A run of 20: closed with 1008.
        for _ in 0..20 {
            if !ws.try_send_text("garbage").await {
                break;
            }
        }
        let code = ws.expect_close(Duration::from_secs(5)).await;
        assert_eq!(code, Some(1008), "received:\n  {}", ws.received());
        let errors = ws.drain_backlog("error");
        assert!(
            errors.len() >= 19,
            "the bad frames before the close were answered: {errors:?}"
        );
    })
    .await
}

#[tokio::test]
async fn oversize_binary_and_non_utf8_frames_close_the_socket() {
    bounded(async {
        let app = App::start(Backend::Memory, &["--max-frame-bytes", "1024"]).await;
        let a = app.register(A).await;

        // Just under the limit is fine.
        let mut ws = app.ws(&a).await;
        let mut ok = json!({"event": "ping", "ack": 1, "data": {}}).to_string();
        let pad = 1000 - ok.len();
        ok = format!(
            r#"{{"event": "ping", "ack": 1, "data": {{"pad": "{}"}}}}"#,
            "p".repeat(pad)
        );
        assert!(ok.len() <= 1024);
        ws.send_text(&ok).await;
        let r = ws.recv_ack(&json!(1)).await;
        assert_eq!(r["event"], "pong", "{r}");

        // Over max_frame_bytes: 1009.
        let big = format!(
            r#"{{"event": "ping", "data": {{"pad": "{}"}}}}"#,
            "p".repeat(2000)
        );
        ws.send_text(&big).await;
        assert_eq!(ws.expect_close(Duration::from_secs(5)).await, Some(1009));

        // Binary: 1003.
        let mut ws = app.ws(&a).await;
        ws.send_msg(Message::binary(b"{\"event\":\"ping\"}".to_vec()))
            .await;
        assert_eq!(ws.expect_close(Duration::from_secs(5)).await, Some(1003));

        // Text that is not UTF-8: 1007.
        let mut raw = RawWs::connect(app.addr, &a.token, None).await;
        raw.send_frame(1, b"{\"event\":\"ping\",\"data\":{\"x\":\"\xff\xfe\"}}")
            .await
            .expect("send");
        let (code, _) = raw.until_close(Duration::from_secs(5)).await;
        assert_eq!(code, Some(1007));

        // A fragmented message is one message: small ones are served...
        let mut raw = RawWs::connect(app.addr, &a.token, None).await;
        raw.send_fragment(1, br#"{"event": "pi"#, false)
            .await
            .expect("send");
        raw.send_fragment(0, br#"ng", "ack": 5}"#, true)
            .await
            .expect("send");
        let mut answered = false;
        for _ in 0..5 {
            match raw.read_frame(Duration::from_secs(5)).await {
                Ok(Some(f)) if f.opcode == 1 => {
                    let v: Value = serde_json::from_slice(&f.payload).expect("json");
                    if v["ack"] == 5 {
                        assert_eq!(v["event"], "pong", "{v}");
                        answered = true;
                        break;
                    }
                }
                Ok(Some(_)) => {}
                other => panic!("fragmented ping: {other:?}"),
            }
        }
        assert!(answered, "a fragmented ping got no pong");
        // ...and fragments adding up past max_frame_bytes close with 1009.
        let mut raw = RawWs::connect(app.addr, &a.token, None).await;
        raw.send_fragment(1, br#"{"event": "ping", "x": ""#, false)
            .await
            .expect("send");
        for _ in 0..3 {
            if raw.send_fragment(0, &[b'x'; 600], false).await.is_err() {
                break;
            }
        }
        let (code, _) = raw.until_close(Duration::from_secs(5)).await;
        assert_eq!(code, Some(1009), "fragments past max_frame_bytes");

        // The server still serves.
        let mut ws = app.ws(&a).await;
        ws.call_ok("ping", json!({})).await;
    })
    .await
}

#[tokio::test]
async fn frames_past_the_bucket_are_rate_limited() {
    bounded(async {
        let app = App::start(
            Backend::Memory,
            &["--frames-per-sec", "1", "--frame-burst", "5"],
        )
        .await;
        let a = app.register(A).await;
        let mut ws = app.ws(&a).await;
        for i in 0..12 {
            ws.send("ping", json!({}), Some(json!(i))).await;
        }
        let (mut pongs, mut limited) = (0, 0);
        for i in 0..12 {
            let r = ws.recv_ack(&json!(i)).await;
            match (r["event"].as_str(), r["data"]["code"].as_str()) {
                (Some("pong"), _) => pongs += 1,
                (Some("error"), Some("rate_limited")) => limited += 1,
                _ => panic!("frame {i}: {r}"),
            }
        }
        assert!((5..=7).contains(&pongs), "burst 5 allowed {pongs} pongs");
        assert_eq!(pongs + limited, 12);
        // Rate limiting is not a bad frame: the socket stays open, and the bucket refills (one
        // frame a second here).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
        loop {
            let r = ws.call("ping", json!({})).await;
            if r["event"] == "pong" {
                break;
            }
            assert_eq!(r["data"]["code"], "rate_limited", "{r}");
            assert!(
                tokio::time::Instant::now() < deadline,
                "the bucket never refilled"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    })
    .await
}

#[tokio::test]
async fn allowed_origins_restricts_browser_upgrades() {
    bounded(async {
        let app = App::start(
            Backend::Memory,
            &[
                "--allowed-origins",
                "http://good.example,https://also.example",
            ],
        )
        .await;
        let a = app.register(A).await;
        match Ws::open(
            app.addr,
            &a.token,
            Auth::Header,
            &[("Origin", "http://evil.example")],
        )
        .await
        {
            Ok(_) => panic!("upgrade from a foreign Origin was accepted"),
            Err(r) => {
                assert_eq!(r.status, 403, "{}", r.body);
                assert!(r.body.contains("\"forbidden\""), "403 body: {}", r.body);
            }
        }
        for origin in ["http://good.example", "https://also.example"] {
            let mut ws = Ws::open(app.addr, &a.token, Auth::Header, &[("Origin", origin)])
                .await
                .unwrap_or_else(|r| panic!("{origin} refused: {} {}", r.status, r.body));
            ws.phone = A.into();
            ws.recv_event("connection_status").await;
        }
        // Without Origin (not a browser): allowed.
        let mut ws = app.ws(&a).await;
        ws.call_ok("ping", json!({})).await;
    })
    .await
}

/// A socket whose session is refreshed (registered again with its token) keeps working.
#[tokio::test]
async fn refresh_keeps_open_sockets() {
    bounded(async {
        let app = App::start(Backend::Memory, &[]).await;
        let a = app.register(A).await;
        let mut ws = app.ws(&a).await;
        app.post("/register_user", Some(&a.token), &json!({ "phone": A }))
            .await
            .ok();
        ws.call_ok("ping", json!({})).await;
        match ws.next(Duration::from_millis(100)).await {
            Next::Timeout => {}
            other => panic!("unexpected after refresh: {other:?}"),
        }
    })
    .await
}

/// An upgrade with a malformed `Sec-WebSocket-Key` is refused with a 4xx, not upgraded.
#[tokio::test]
async fn malformed_upgrades_are_refused() {
    bounded(async {
        let app = App::start(Backend::Memory, &[]).await;
        let a = app.register(A).await;
        let auth = format!("Bearer {}", a.token);
        for key in [
            "short",
            "",
            "!!!!!!!!!!!!!!!!!!!!!!!!",
            "dGhlIHNhbXBsZSBub25jZQ==extra",
        ] {
            let r = chat_tests::http::request(
                app.addr,
                "GET",
                "/ws",
                &[
                    ("Authorization", &auth),
                    ("Upgrade", "websocket"),
                    ("Connection", "Upgrade"),
                    ("Sec-WebSocket-Version", "13"),
                    ("Sec-WebSocket-Key", key),
                ],
                None,
            )
            .await;
            assert!(
                (400..500).contains(&r.status),
                "key {key:?}: {} {}",
                r.status,
                r.text()
            );
        }
    })
    .await
}
