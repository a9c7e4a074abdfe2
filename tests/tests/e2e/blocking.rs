//! Keeping unwanted people out: `/block`, `/unblock`, `/blocked`, what a block does to the
//! two users' requests, room and listing, and the request limits (pending cap, decline
//! cooldown), over HTTP and WebSocket, on each backend and across two nodes.

use chat_tests::{App, Backend, Client, User, backends};
use serde_json::json;

const A: &str = "+14155550161";
const B: &str = "+14155550162";
const C: &str = "+14155550163";
const D: &str = "+14155550164";

backends!(
    block_unblock_and_list,
    block_refuses_own_and_invalid_phones,
    block_during_a_pending_request,
    block_during_a_chat,
    online_users_hides_blocked_users,
    pending_requests_are_capped,
    decline_starts_a_cooldown,
);

async fn block(c: &Client, me: &User, whom: &str) {
    let v = c
        .post("/block", Some(&me.token), &json!({ "phone": whom }))
        .await
        .ok();
    assert_eq!(v, json!({"success": true}));
}

async fn blocked(c: &Client, me: &User) -> serde_json::Value {
    c.get("/blocked", Some(&me.token)).await.ok()["blocked"].clone()
}

async fn block_unblock_and_list(backend: Backend) {
    let app = App::start(backend, &[]).await;
    let a = app.register(A).await;
    app.register(B).await;
    assert_eq!(blocked(&app, &a).await, json!([]));
    block(&app, &a, "+1 415 555 0162").await;
    // A phone nobody registered: 200 all the same, blocking reveals nothing.
    block(&app, &a, "+14155550199").await;
    block(&app, &a, B).await;
    assert_eq!(blocked(&app, &a).await, json!([B, "+14155550199"]));
    let v = app
        .post("/unblock", Some(&a.token), &json!({ "phone": B }))
        .await
        .ok();
    assert_eq!(v, json!({"success": true}));
    app.post("/unblock", Some(&a.token), &json!({ "phone": D }))
        .await
        .ok();
    assert_eq!(blocked(&app, &a).await, json!(["+14155550199"]));
    // The caller is named by `?phone=` only; someone else's is 403.
    app.get(
        &format!("/blocked?phone={}", "%2B14155550162"),
        Some(&a.token),
    )
    .await
    .err(403, "forbidden");
    app.post("/block", None, &json!({ "phone": B }))
        .await
        .err(401, "unauthorized");
    app.get("/block", Some(&a.token))
        .await
        .err(405, "method_not_allowed");
}

async fn block_refuses_own_and_invalid_phones(backend: Backend) {
    let app = App::start(backend, &[]).await;
    let a = app.register(A).await;
    for path in ["/block", "/unblock"] {
        app.post(
            path,
            Some(&a.token),
            &json!({ "phone": "+1 (415) 555-0161" }),
        )
        .await
        .err(400, "bad_request");
        app.post(path, Some(&a.token), &json!({ "phone": "12ab" }))
            .await
            .err(400, "invalid_phone");
        app.post(path, Some(&a.token), &json!({}))
            .await
            .err(400, "bad_request");
        app.post(path, Some(&a.token), &json!({ "phone": 5 }))
            .await
            .err(400, "bad_request");
    }
    assert_eq!(blocked(&app, &a).await, json!([]));
}

async fn block_during_a_pending_request(backend: Backend) {
    let app = App::start(backend, &[]).await;
    let a = app.register(A).await;
    let b = app.register(B).await;
    let c = app.register(C).await;
    let mut b_ws = app.ws(&b).await;

    // A's own request to B is cancelled: B is told.
    app.post("/send_request", Some(&a.token), &json!({ "phone2": B }))
        .await
        .ok();
    b_ws.recv_event("chat_request").await;
    block(&app, &a, B).await;
    let ev = b_ws.recv_event("request_cancelled").await;
    assert_eq!(
        ev["data"],
        json!({"from_user": A, "to_user": B, "names": {}})
    );
    let v = app.get("/incoming_request", Some(&b.token)).await.ok();
    assert_eq!(v["incoming_request"], json!([]));

    // B's request to A answers as if A were offline.
    app.post("/send_request", Some(&b.token), &json!({ "phone2": A }))
        .await
        .err(404, "user_not_found");
    app.post("/send_request", Some(&a.token), &json!({ "phone2": B }))
        .await
        .err(404, "user_not_found");

    // B's pending request to A is dropped silently.
    app.post("/unblock", Some(&a.token), &json!({ "phone": B }))
        .await
        .ok();
    app.post("/send_request", Some(&b.token), &json!({ "phone2": A }))
        .await
        .ok();
    block(&app, &a, B).await;
    for (who, field) in [(&a, "incoming_request"), (&b, "sent_request")] {
        let v = app.get("/incoming_request", Some(&who.token)).await.ok();
        assert_eq!(v[field], json!([]), "{v}");
    }
    app.post(
        "/respond_request",
        Some(&a.token),
        &json!({"phone1": B, "action": "accept"}),
    )
    .await
    .err(404, "request_not_found");
    // Nothing reached B about it: the next event B gets is C's request.
    app.post("/send_request", Some(&c.token), &json!({ "phone2": B }))
        .await
        .ok();
    b_ws.recv_event("chat_request").await;
    assert!(
        b_ws.backlog()
            .iter()
            .all(|e| e["event"] != "request_cancelled"),
        "{}",
        b_ws.received()
    );
}

async fn block_during_a_chat(backend: Backend) {
    let app = App::start(backend, &[]).await;
    let a = app.register(A).await;
    let b = app.register(B).await;
    let room = app.make_room(&a, &b).await;
    let mut a_ws = app.ws(&a).await;
    let mut b_ws = app.ws(&b).await;
    a_ws.join(&room).await;
    b_ws.join(&room).await;
    block(&app, &b, A).await;
    for ws in [&mut a_ws, &mut b_ws] {
        let ev = ws.recv_event("room_closed").await;
        assert_eq!(ev["data"], json!({"room": room, "by": B}));
    }
    let v = app.get("/active_chatrooms", Some(&a.token)).await.ok();
    assert_eq!(v["chatrooms"], json!([]));
    a_ws.call_err(
        "send_message",
        json!({"room": room, "message": "still there?"}),
        "room_not_found",
    )
    .await;
    app.post("/send_request", Some(&a.token), &json!({ "phone2": B }))
        .await
        .err(404, "user_not_found");
}

async fn online_users_hides_blocked_users(backend: Backend) {
    let app = App::start(backend, &[]).await;
    let a = app.register(A).await;
    let b = app.register(B).await;
    let c = app.register(C).await;
    block(&app, &a, B).await;
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(sorted(app.online(&a.token).await), [A, C]);
    assert_eq!(sorted(app.online(&b.token).await), [B, C]);
    assert_eq!(sorted(app.online(&c.token).await), [A, B, C]);
    // Page by page (one a page): a page may come back short, the walk still ends.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let path = match &cursor {
            Some(c) => format!("/online_users?limit=1&cursor={c}"),
            None => "/online_users?limit=1".to_owned(),
        };
        let v = app.get(&path, Some(&b.token)).await.ok();
        for p in v["online_users"].as_array().expect("array") {
            seen.push(p.as_str().expect("phone").to_owned());
        }
        match v["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(sorted(seen), [B, C]);
    app.post("/unblock", Some(&a.token), &json!({ "phone": B }))
        .await
        .ok();
    assert_eq!(sorted(app.online(&b.token).await), [A, B, C]);
}

async fn pending_requests_are_capped(backend: Backend) {
    let app = App::start(backend, &["--max-pending-requests", "2"]).await;
    let a = app.register(A).await;
    for p in [B, C, D] {
        app.register(p).await;
    }
    for p in [B, C] {
        app.post("/send_request", Some(&a.token), &json!({ "phone2": p }))
            .await
            .ok();
    }
    app.post("/send_request", Some(&a.token), &json!({ "phone2": D }))
        .await
        .err(409, "too_many_pending");
    app.post("/cancel_request", Some(&a.token), &json!({ "phone2": C }))
        .await
        .ok();
    app.post("/send_request", Some(&a.token), &json!({ "phone2": D }))
        .await
        .ok();
}

async fn decline_starts_a_cooldown(backend: Backend) {
    let app = App::start(backend, &["--decline-cooldown-secs", "600"]).await;
    let a = app.register(A).await;
    let b = app.register(B).await;
    app.post("/send_request", Some(&a.token), &json!({ "phone2": B }))
        .await
        .ok();
    app.post(
        "/respond_request",
        Some(&b.token),
        &json!({"phone1": A, "action": "decline"}),
    )
    .await
    .ok();
    let r = app
        .post("/send_request", Some(&a.token), &json!({ "phone2": B }))
        .await;
    r.err(429, "rate_limited");
    let secs: u64 = r
        .header("retry-after")
        .and_then(|s| s.parse().ok())
        .expect("Retry-After in whole seconds");
    assert!((590..=600).contains(&secs), "Retry-After {secs}");
    // One way only: B may ask A.
    app.post("/send_request", Some(&b.token), &json!({ "phone2": A }))
        .await
        .ok();
}

/// A block made through one node holds on the other: the room closes for sockets on both,
/// requests through either node are refused, and both nodes hide the two from each other.
#[tokio::test]
async fn block_across_two_nodes() {
    chat_tests::bounded(async {
        let app = App::start(Backend::Redis, &[]).await;
        let node2 = app.another_node().await;
        let (n1, n2) = (Client::new(app.server.addr), Client::new(node2.addr));
        let a = n1.register(A).await;
        let b = n2.register(B).await;
        let c = n2.register(C).await;
        let room = n1.make_room(&a, &b).await;
        let mut a_ws = n1.ws(&a).await;
        let mut b_ws = n2.ws(&b).await;
        n1.post("/send_request", Some(&a.token), &json!({ "phone2": C }))
            .await
            .ok();
        let mut c_ws = n2.ws(&c).await;
        // B blocks A through node 2; A's socket is on node 1.
        block(&n2, &b, A).await;
        let ev = a_ws.recv_event("room_closed").await;
        assert_eq!(ev["data"], json!({"room": room, "by": B}));
        b_ws.recv_event("room_closed").await;
        n1.post("/send_request", Some(&a.token), &json!({ "phone2": B }))
            .await
            .err(404, "user_not_found");
        // C blocks A through node 2: A's pending request to C is dropped; nothing reaches C.
        block(&n2, &c, A).await;
        let v = n1.get("/incoming_request", Some(&a.token)).await.ok();
        assert_eq!(v["sent_request"], json!([]));
        n1.post("/send_request", Some(&b.token), &json!({ "phone2": C }))
            .await
            .ok();
        c_ws.recv_event("chat_request").await;
        assert!(
            c_ws.backlog()
                .iter()
                .all(|e| e["event"] != "request_cancelled"),
            "{}",
            c_ws.received()
        );
        for node in [&n1, &n2] {
            let mut listed = node.online(&a.token).await;
            listed.sort();
            assert_eq!(listed, [A]);
            assert!(!node.online(&b.token).await.contains(&A.to_owned()));
        }
        assert_eq!(blocked(&n1, &b).await, json!([A]));
    })
    .await;
}
