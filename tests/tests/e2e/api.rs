//! Every HTTP route of the contract: its success shape and each of its error codes.

use std::collections::BTreeSet;

use chat_tests::{App, Backend, backends, ids, texts};
use serde_json::json;

use crate::now_ms;

const A: &str = "+14155550101";
const B: &str = "+14155550102";
const C: &str = "+14155550103";

backends!(
    register_normalises_and_refreshes,
    register_refuses_bad_phones,
    registrations_are_rate_limited,
    api_routes_need_a_token,
    online_users_pages_with_cursor_and_limit,
    online_users_refuses_bad_cursor_and_limit,
    send_request_and_its_errors,
    crossed_request_accepts,
    incoming_request_lists_both_directions,
    respond_request_accept_and_decline,
    concurrent_accepts_make_one_room,
    cancel_request,
    active_chatrooms_and_reconnect,
    messages_paging,
    messages_errors,
    close_room,
    operations_endpoints,
    unknown_routes_and_methods,
);

async fn register_normalises_and_refreshes(b: Backend) {
    let app = App::start(b, &["--session-idle-secs", "777"]).await;
    let r = app
        .post(
            "/register_user",
            None,
            &json!({"phone": "+1 (415) 555-0100", "name": "Asha"}),
        )
        .await;
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "content-type {:?}",
        r.header("content-type")
    );
    let v = r.ok();
    assert_eq!(v["message"], true, "{v}");
    assert_eq!(v["phone"], "+14155550100", "{v}");
    assert_eq!(v["expires_in"], 777, "{v}");
    let token = v["token"].as_str().expect("token").to_owned();
    assert!(token.len() >= 22, "token too short for 128 bits: {token}");

    // The same phone, spelled differently, is the same identity: in use.
    for spelling in ["+14155550100", "+1 415-555-0100", "+1(415)5550100"] {
        app.post("/register_user", None, &json!({ "phone": spelling }))
            .await
            .err(409, "phone_in_use");
    }
    // Refresh: the session's own token gets the same token back.
    let v = app
        .post(
            "/register_user",
            Some(&token),
            &json!({"phone": "+1 415 555 0100"}),
        )
        .await
        .ok();
    assert_eq!(
        v["token"],
        token.as_str(),
        "refresh must keep the token: {v}"
    );
    assert_eq!(v["phone"], "+14155550100");
    assert_eq!(v["expires_in"], 777);

    // The `+` is kept: without it, another phone.
    let other = app.register("14155550100").await;
    assert_eq!(other.phone, "14155550100");
    assert_ne!(other.token, token);
    // Somebody else's token does not refresh this phone.
    app.post(
        "/register_user",
        Some(&other.token),
        &json!({"phone": "+14155550100"}),
    )
    .await
    .err(409, "phone_in_use");

    // A 64-character name is fine, the name is optional, 65 is refused.
    app.post(
        "/register_user",
        None,
        &json!({"phone": "+442071234567", "name": "n".repeat(64)}),
    )
    .await
    .ok();
    let r = app
        .post(
            "/register_user",
            None,
            &json!({"phone": "+442071234568", "name": "n".repeat(65)}),
        )
        .await;
    assert_eq!(r.status, 400, "65-char name: {}", r.text());
    assert_eq!(r.json()["success"], false);

    // The token works on the API.
    app.get("/active_chatrooms", Some(&token)).await.ok();
}

async fn register_refuses_bad_phones(b: Backend) {
    let app = App::start(b, &[]).await;
    for bad in [
        "",
        "abc",
        "123456",            // 6 digits
        "+1234567890123456", // 16 digits
        "++14155550100",
        "14155550100x",
        "+",
        "1415.555.0100",
        "+1 415 555 0100 ext 2",
        "١٢٣٤٥٦٧٨٩", // non-ASCII digits
        "1415555\u{0}0100",
    ] {
        app.post("/register_user", None, &json!({ "phone": bad }))
            .await
            .err(400, "invalid_phone");
    }
    // Edges that are fine: 7 and 15 digits.
    assert_eq!(app.register("1234567").await.phone, "1234567");
    assert_eq!(
        app.register("+123456789012345").await.phone,
        "+123456789012345"
    );
}

async fn registrations_are_rate_limited(b: Backend) {
    let app = App::start(b, &["--registrations-per-min", "3"]).await;
    // Every attempt counts, failed ones too.
    let a = app.register(A).await;
    app.post("/register_user", None, &json!({"phone": "nope"}))
        .await
        .err(400, "invalid_phone");
    app.register(B).await;
    let r = app
        .post("/register_user", None, &json!({ "phone": C }))
        .await;
    r.err(429, "rate_limited");
    let retry: u64 = r
        .header("retry-after")
        .unwrap_or_else(|| panic!("429 without Retry-After: {:?}", r.headers))
        .parse()
        .expect("Retry-After in whole seconds");
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    // The rate limit is checked before the body's shape.
    app.post_raw("/register_user", None, b"not json")
        .await
        .err(429, "rate_limited");
    // Other routes are not limited by it.
    app.get("/online_users", Some(&a.token)).await.ok();
}

async fn api_routes_need_a_token(b: Backend) {
    let app = App::start(b, &[]).await;
    let a = app.register(A).await;
    let bogus = "0".repeat(64);
    for (method, path) in [
        ("GET", "/online_users"),
        ("GET", "/incoming_request"),
        ("GET", "/active_chatrooms"),
        ("POST", "/send_request"),
        ("POST", "/respond_request"),
        ("POST", "/cancel_request"),
        ("POST", "/close_room"),
        ("POST", "/reconnect"),
        (
            "GET",
            "/chatrooms/00000000-0000-4000-8000-000000000000/messages",
        ),
    ] {
        let body = (method == "POST").then_some(&b"{}"[..]);
        for token in [None, Some(bogus.as_str()), Some("short"), Some("")] {
            app.request(method, path, token, body)
                .await
                .err(401, "unauthorized");
        }
        // Not a Bearer token.
        let basic = format!("Basic {}", a.token);
        chat_tests::http::request(app.addr, method, path, &[("Authorization", &basic)], body)
            .await
            .err(401, "unauthorized");
    }
}

async fn online_users_pages_with_cursor_and_limit(b: Backend) {
    let app = App::start(b, &[]).await;
    let mut users = Vec::new();
    for i in 0..7 {
        users.push(app.register(&format!("+1415555020{i}")).await);
    }
    let me = &users[0];
    let all: BTreeSet<String> = users.iter().map(|u| u.phone.clone()).collect();

    // Default page: everybody (the caller too).
    let v = app.get("/online_users", Some(&me.token)).await.ok();
    let first: BTreeSet<String> = v["online_users"]
        .as_array()
        .expect("online_users")
        .iter()
        .map(|p| p.as_str().expect("phone").to_owned())
        .collect();
    assert!(
        v["next_cursor"].is_null() || v["next_cursor"].is_string(),
        "{v}"
    );
    if v["next_cursor"].is_null() {
        assert_eq!(first, all, "one page of 7 with limit 100");
    }

    // Walk with limit=2: short pages, every user at least once.
    let mut seen = BTreeSet::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/online_users?cursor={c}&limit=2"),
            None => "/online_users?limit=2".to_owned(),
        };
        let v = app.get(&path, Some(&me.token)).await.ok();
        let page = v["online_users"].as_array().expect("online_users");
        assert!(page.len() <= 2, "limit 2 exceeded: {v}");
        seen.extend(page.iter().map(|p| p.as_str().expect("phone").to_owned()));
        pages += 1;
        assert!(pages < 50, "walk does not end");
        match v["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => {
                assert!(v["next_cursor"].is_null(), "{v}");
                break;
            }
        }
    }
    assert_eq!(seen, all, "walking the pages must list everyone");
    assert!(pages >= 4, "7 users in pages of 2 took {pages} pages");

    // A limit over 1000 is cut, not refused.
    let v = app
        .get("/online_users?limit=5000", Some(&me.token))
        .await
        .ok();
    assert!(
        v["online_users"].as_array().expect("list").len() <= 1000,
        "{v}"
    );
    // The helper walk agrees.
    let walked: BTreeSet<String> = app.online(&me.token).await.into_iter().collect();
    assert_eq!(walked, all);
    // The contract writes the first page as `?cursor=&limit=`: an empty cursor is no cursor.
    let v = app
        .get("/online_users?cursor=&limit=2", Some(&me.token))
        .await
        .ok();
    assert!(v["online_users"].as_array().is_some_and(|p| p.len() <= 2));
}

async fn online_users_refuses_bad_cursor_and_limit(b: Backend) {
    let app = App::start(b, &[]).await;
    let a = app.register(A).await;
    for q in [
        "limit=0",
        "limit=-1",
        "limit=abc",
        "limit=1.5",
        "cursor=not-a-cursor",
        "cursor=%00%01",
    ] {
        app.get(&format!("/online_users?{q}"), Some(&a.token))
            .await
            .err(400, "bad_request");
    }
    app.get("/online_users?limit=1", Some(&a.token)).await.ok();
    // A positive integer over 1000 is cut, however large.
    app.get(
        "/online_users?limit=99999999999999999999999",
        Some(&a.token),
    )
    .await
    .ok();
}

async fn send_request_and_its_errors(b: Backend) {
    let app = App::start(b, &[]).await;
    let a = app.register(A).await;
    let bu = app.register(B).await;
    let mut b_ws = app.ws(&bu).await;

    let before = now_ms();
    let v = app
        .post(
            "/send_request",
            Some(&a.token),
            &json!({"phone1": A, "phone2": "+1 (415) 555-0102"}),
        )
        .await
        .ok();
    assert_eq!(
        v,
        json!({"success": true, "message": "Request sent successfully"})
    );
    let ev = b_ws.recv_event("chat_request").await;
    assert_eq!(ev["data"]["from"], A, "{ev}");
    assert_eq!(ev["data"]["to"], B, "{ev}");
    let created = ev["data"]["created_at"].as_u64().expect("created_at ms");
    assert!(
        created + 5_000 >= before && created <= now_ms() + 5_000,
        "created_at {created} is not unix ms near {before}"
    );

    // The same request again.
    app.post("/send_request", Some(&a.token), &json!({ "phone2": B }))
        .await
        .err(409, "already_pending");
    // To oneself (phone1 may be left out).
    app.post("/send_request", Some(&a.token), &json!({ "phone2": A }))
        .await
        .err(400, "self_request");
    // To somebody who is not registered.
    app.post(
        "/send_request",
        Some(&a.token),
        &json!({"phone2": "+19995550000"}),
    )
    .await
    .err(404, "user_not_found");
    // A phone2 that is not a phone.
    app.post("/send_request", Some(&a.token), &json!({"phone2": "abc"}))
        .await
        .err(400, "invalid_phone");
    // phone1 naming somebody else.
    app.post(
        "/send_request",
        Some(&a.token),
        &json!({"phone1": B, "phone2": C}),
    )
    .await
    .err(403, "forbidden");

    // Once they share a room: room_exists with its chat_id, in both directions.
    let v = app
        .post(
            "/respond_request",
            Some(&bu.token),
            &json!({"phone1": A, "action": "accept"}),
        )
        .await
        .ok();
    let chat_id = v["message"]["chat_id"]
        .as_str()
        .expect("chat_id")
        .to_owned();
    for (from, to) in [(&a, B), (&bu, A)] {
        let e = app
            .post("/send_request", Some(&from.token), &json!({ "phone2": to }))
            .await
            .err(409, "room_exists");
        assert_eq!(e["chat_id"], chat_id.as_str(), "{e}");
    }
}

async fn crossed_request_accepts(b: Backend) {
    let app = App::start(b, &[]).await;
    let a = app.register(A).await;
    let bu = app.register(B).await;
    let mut a_ws = app.ws(&a).await;
    let mut b_ws = app.ws(&bu).await;
    app.post("/send_request", Some(&a.token), &json!({ "phone2": B }))
        .await
        .ok();
    b_ws.recv_event("chat_request").await;
    // B asks A while A's request to B is pending: that accepts it.
    let v = app
        .post(
            "/send_request",
            Some(&bu.token),
            &json!({"phone1": B, "phone2": A}),
        )
        .await
        .ok();
    assert_eq!(v["message"]["accepted"], true, "{v}");
    let chat_id = v["message"]["chat_id"]
        .as_str()
        .expect("chat_id")
        .to_owned();
    let ea = a_ws.recv_event("request_accepted").await;
    assert_eq!(
        ea["data"],
        json!({"chat_id": chat_id, "from_user": B, "to_user": A, "names": {}})
    );
    let eb = b_ws.recv_event("request_accepted").await;
    assert_eq!(
        eb["data"],
        json!({"chat_id": chat_id, "from_user": A, "to_user": B, "names": {}})
    );
    // Nothing is pending any more.
    for u in [&a, &bu] {
        let v = app.get("/incoming_request", Some(&u.token)).await.ok();
        assert_eq!(v["incoming_request"], json!([]), "{v}");
        assert_eq!(v["sent_request"], json!([]), "{v}");
    }
}

async fn incoming_request_lists_both_directions(b: Backend) {
    let app = App::start(b, &[]).await;
    let a = app.register(A).await;
    let bu = app.register(B).await;
    let c = app.register(C).await;
    for u in [&a, &c] {
        app.post("/send_request", Some(&u.token), &json!({ "phone2": B }))
            .await
            .ok();
    }
    app.post(
        "/send_request",
        Some(&bu.token),
        &json!({ "phone2": "+14155550104" }),
    )
    .await
    .err(404, "user_not_found");
    let v = app.get("/incoming_request", Some(&bu.token)).await.ok();
    let mut incoming: Vec<String> = serde_json::from_value(v["incoming_request"].clone())
        .unwrap_or_else(|e| panic!("incoming_request: {e}: {v}"));
    incoming.sort();
    assert_eq!(incoming, vec![A.to_owned(), C.to_owned()], "{v}");
    assert_eq!(v["sent_request"], json!([]), "{v}");
    let v = app.get("/incoming_request", Some(&a.token)).await.ok();
    assert_eq!(
        v,
        json!({"success": true, "incoming_request": [], "sent_request": [B], "names": {}})
    );
}

async fn respond_request_accept_and_decline(b: Backend) {
    let app = App::start(b, &[]).await;
    let a = app.register(A).await;
    let bu = app.register(B).await;
    let c = app.register(C).await;
    let mut a_ws = app.ws(&a).await;
    let mut b_ws = app.ws(&bu).await;
    let mut c_ws = app.ws(&c).await;

    // No such request.
    app.post(
        "/respond_request",
        Some(&bu.token),
        &json!({"phone1": A, "phone2": B, "action": "accept"}),
    )
    .await
    .err(404, "request_not_found");
    app.post(
        "/respond_request",
        Some(&bu.token),
        &json!({"phone1": A, "phone2": B, "action": "decline"}),
    )
    .await
    .err(404, "request_not_found");

    app.post("/send_request", Some(&a.token), &json!({ "phone2": B }))
        .await
        .ok();
    app.post("/send_request", Some(&c.token), &json!({ "phone2": B }))
        .await
        .ok();
    // Another action, with the request pending: 400, and still pending.
    for action in [json!("maybe"), json!("ACCEPT"), json!("")] {
        app.post(
            "/respond_request",
            Some(&bu.token),
            &json!({"phone1": A, "action": action}),
        )
        .await
        .err(400, "bad_request");
    }
    // The requester cannot answer their own request.
    app.post(
        "/respond_request",
        Some(&a.token),
        &json!({"phone1": B, "action": "accept"}),
    )
    .await
    .err(404, "request_not_found");
    // phone2 naming somebody else.
    app.post(
        "/respond_request",
        Some(&a.token),
        &json!({"phone1": A, "phone2": B, "action": "accept"}),
    )
    .await
    .err(403, "forbidden");

    // Decline C.
    let v = app
        .post(
            "/respond_request",
            Some(&bu.token),
            &json!({"phone1": C, "phone2": B, "action": "decline"}),
        )
        .await
        .ok();
    assert_eq!(v, json!({"success": true, "message": {"accepted": false}}));
    let ev = c_ws.recv_event("request_declined").await;
    assert_eq!(
        ev["data"],
        json!({"from_user": B, "to_user": C, "names": {}})
    );

    // Accept A.
    let v = app
        .post(
            "/respond_request",
            Some(&bu.token),
            &json!({"phone1": A, "phone2": B, "action": "accept"}),
        )
        .await
        .ok();
    assert_eq!(v["message"]["accepted"], true, "{v}");
    let chat_id = v["message"]["chat_id"]
        .as_str()
        .expect("chat_id")
        .to_owned();
    assert!(is_uuid(&chat_id), "chat_id {chat_id} is not a UUID");
    assert_eq!(v.as_object().map(|o| o.len()), Some(2), "{v}");
    let ea = a_ws.recv_event("request_accepted").await;
    assert_eq!(
        ea["data"],
        json!({"chat_id": chat_id, "from_user": B, "to_user": A, "names": {}})
    );
    let eb = b_ws.recv_event("request_accepted").await;
    assert_eq!(
        eb["data"],
        json!({"chat_id": chat_id, "from_user": A, "to_user": B, "names": {}})
    );
    // Answered requests are gone.
    for who in [A, C] {
        app.post(
            "/respond_request",
            Some(&bu.token),
            &json!({"phone1": who, "action": "accept"}),
        )
        .await
        .err(404, "request_not_found");
    }
    let v = app.get("/incoming_request", Some(&bu.token)).await.ok();
    assert_eq!(v["incoming_request"], json!([]), "{v}");
    // (v3) After a decline C may not ask again before the cooldown (default 600 s) ends.
    let r = app
        .post("/send_request", Some(&c.token), &json!({ "phone2": B }))
        .await;
    r.err(429, "rate_limited");
    assert!(r.header("retry-after").is_some(), "429 without Retry-After");
}

async fn concurrent_accepts_make_one_room(b: Backend) {
    let app = App::start(b, &[]).await;
    let a = app.register(A).await;
    let bu = app.register(B).await;
    app.post("/send_request", Some(&a.token), &json!({ "phone2": B }))
        .await
        .ok();
    let body = json!({"phone1": A, "action": "accept"});
    let calls = (0..6).map(|_| app.post("/respond_request", Some(&bu.token), &body));
    let results = futures_util::future::join_all(calls).await;
    let mut rooms = Vec::new();
    for r in &results {
        if r.status == 200 {
            rooms.push(r.ok()["message"]["chat_id"].clone());
        } else {
            r.err(404, "request_not_found");
        }
    }
    assert_eq!(
        rooms.len(),
        1,
        "concurrent accepts made {} rooms",
        rooms.len()
    );
    let v = app.get("/active_chatrooms", Some(&a.token)).await.ok();
    assert_eq!(v["chatrooms"].as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(v["chatrooms"][0]["chat_id"], rooms[0]);

    // An accept racing a crossed request: one room.
    let c = app.register(C).await;
    app.post("/send_request", Some(&a.token), &json!({ "phone2": C }))
        .await
        .ok();
    let accept_body = json!({"phone1": A, "action": "accept"});
    let crossed_body = json!({ "phone2": A });
    let accept = app.post("/respond_request", Some(&c.token), &accept_body);
    let crossed = app.post("/send_request", Some(&c.token), &crossed_body);
    let (r1, r2) = futures_util::future::join(accept, crossed).await;
    let ok = [&r1, &r2]
        .iter()
        .filter(|r| r.status == 200 && r.json()["message"]["accepted"] == true)
        .count();
    assert_eq!(
        ok,
        1,
        "accept vs crossed request: {} {} / {} {}",
        r1.status,
        r1.text(),
        r2.status,
        r2.text()
    );
    for r in [&r1, &r2] {
        assert!(
            matches!(r.status, 200 | 404 | 409),
            "loser of the race: {} {}",
            r.status,
            r.text()
        );
    }
    let v = app.get("/active_chatrooms", Some(&c.token)).await.ok();
    assert_eq!(v["chatrooms"].as_array().map(Vec::len), Some(1), "{v}");
}

async fn cancel_request(b: Backend) {
    let app = App::start(b, &[]).await;
    let a = app.register(A).await;
    let bu = app.register(B).await;
    let mut b_ws = app.ws(&bu).await;
    app.post("/cancel_request", Some(&a.token), &json!({ "phone2": B }))
        .await
        .err(404, "request_not_found");
    app.post("/send_request", Some(&a.token), &json!({ "phone2": B }))
        .await
        .ok();
    b_ws.recv_event("chat_request").await;
    // The recipient cannot cancel it.
    app.post("/cancel_request", Some(&bu.token), &json!({ "phone2": A }))
        .await
        .err(404, "request_not_found");
    let v = app
        .post(
            "/cancel_request",
            Some(&a.token),
            &json!({"phone2": "+1 415 555 0102"}),
        )
        .await
        .ok();
    assert_eq!(v, json!({"success": true, "message": "Request cancelled"}));
    let ev = b_ws.recv_event("request_cancelled").await;
    assert_eq!(
        ev["data"],
        json!({"from_user": A, "to_user": B, "names": {}})
    );
    app.post("/cancel_request", Some(&a.token), &json!({ "phone2": B }))
        .await
        .err(404, "request_not_found");
    let v = app.get("/incoming_request", Some(&bu.token)).await.ok();
    assert_eq!(v["incoming_request"], json!([]), "{v}");
    app.post(
        "/respond_request",
        Some(&bu.token),
        &json!({"phone1": A, "action": "accept"}),
    )
    .await
    .err(404, "request_not_found");
    app.post("/cancel_request", Some(&a.token), &json!({"phone2": "x"}))
        .await
        .err(400, "invalid_phone");
}

async fn active_chatrooms_and_reconnect(b: Backend) {
    let app = App::start(b, &["--room-ttl-secs", "3600"]).await;
    let a = app.register(A).await;
    let bu = app.register(B).await;
    let v = app.get("/active_chatrooms", Some(&a.token)).await.ok();
    assert_eq!(v, json!({"success": true, "chatrooms": [], "names": {}}));
    let before = now_ms();
    let room = app.make_room(&a, &bu).await;
    let v = app.get("/active_chatrooms", Some(&a.token)).await.ok();
    let rooms = v["chatrooms"].as_array().expect("chatrooms");
    assert_eq!(rooms.len(), 1, "{v}");
    assert_eq!(rooms[0]["chat_id"], room.as_str());
    assert_eq!(rooms[0]["other_user"], B);
    let exp = rooms[0]["expires_at"].as_u64().expect("expires_at ms");
    assert!(
        exp >= before + 3_590_000 && exp <= now_ms() + 3_610_000,
        "expires_at {exp} is not creation + room_ttl (now {before})"
    );
    let vb = app.get("/active_chatrooms", Some(&bu.token)).await.ok();
    assert_eq!(vb["chatrooms"][0]["other_user"], A, "{vb}");
    assert_eq!(vb["chatrooms"][0]["chat_id"], room.as_str(), "{vb}");

    // Reconnect: any body, the same rooms.
    for body in [&b"{}"[..], b"not json at all", b""] {
        let r = app
            .request("POST", "/reconnect", Some(&a.token), Some(body))
            .await;
        let v = r.ok();
        assert_eq!(v["data"]["status"], "reconnected", "{v}");
        assert_eq!(v["data"]["chatrooms"], json!(rooms), "{v}");
    }
    let r = app
        .request("POST", "/reconnect", Some(&a.token), None)
        .await;
    assert_eq!(r.ok()["data"]["status"], "reconnected");
}

async fn messages_paging(b: Backend) {
    let app = App::start(b, &[]).await;
    let a = app.register(A).await;
    let bu = app.register(B).await;
    let room = app.make_room(&a, &bu).await;
    let path = |q: &str| format!("/chatrooms/{room}/messages{q}");

    let v = app.get(&path(""), Some(&a.token)).await.ok();
    assert_eq!(v, json!({"success": true, "messages": [], "more": false}));

    let mut ws = app.ws(&a).await;
    let mut sent = Vec::new();
    for i in 0..5 {
        let m = ws.say(&room, &format!("m{i}")).await;
        chat_tests::assert_message(&m, &room, A, &format!("m{i}"));
        sent.push(m);
    }
    let all_ids: Vec<String> = sent
        .iter()
        .map(|m| m["id"].as_str().expect("id").to_owned())
        .collect();

    let v = app.get(&path(""), Some(&bu.token)).await.ok();
    assert_eq!(v["messages"], json!(sent), "history equals what was acked");
    assert_eq!(v["more"], false);
    // The latest `limit`, oldest first; more: older exist.
    let v = app.get(&path("?limit=2"), Some(&a.token)).await.ok();
    assert_eq!(texts(&v["messages"]), ["m3", "m4"], "{v}");
    assert_eq!(v["more"], true);
    let v = app.get(&path("?limit=5"), Some(&a.token)).await.ok();
    assert_eq!(texts(&v["messages"]), ["m0", "m1", "m2", "m3", "m4"]);
    assert_eq!(v["more"], false);
    // After an id: strictly after; more: newer exist.
    let v = app
        .get(
            &path(&format!("?after={}&limit=2", all_ids[0])),
            Some(&a.token),
        )
        .await
        .ok();
    assert_eq!(texts(&v["messages"]), ["m1", "m2"], "{v}");
    assert_eq!(v["more"], true);
    let v = app
        .get(
            &path(&format!("?after={}&limit=2", all_ids[2])),
            Some(&a.token),
        )
        .await
        .ok();
    assert_eq!(texts(&v["messages"]), ["m3", "m4"], "{v}");
    assert_eq!(v["more"], false);
    let v = app
        .get(&path(&format!("?after={}", all_ids[4])), Some(&a.token))
        .await
        .ok();
    assert_eq!(v["messages"], json!([]));
    assert_eq!(v["more"], false);
    // Over 500 is cut, not refused.
    let v = app.get(&path("?limit=100000"), Some(&a.token)).await.ok();
    assert_eq!(ids(&v["messages"]), all_ids);
    // Walking forward from the first id reaches everything, in order.
    let mut walked = vec![all_ids[0].clone()];
    loop {
        let last = walked.last().expect("non-empty");
        let v = app
            .get(&path(&format!("?after={last}&limit=2")), Some(&a.token))
            .await
            .ok();
        walked.extend(ids(&v["messages"]));
        if v["more"] == false {
            break;
        }
        assert!(walked.len() <= 10, "walk does not end");
    }
    assert_eq!(walked, all_ids);
}

async fn messages_errors(b: Backend) {
    let app = App::start(b, &[]).await;
    let a = app.register(A).await;
    let bu = app.register(B).await;
    let c = app.register(C).await;
    let room = app.make_room(&a, &bu).await;
    let mut ws = app.ws(&a).await;
    let m = ws.say(&room, "hello").await;
    let id = m["id"].as_str().expect("id");
    for q in [
        "?limit=0",
        "?limit=-3",
        "?limit=x",
        "?limit=2.5",
        "?after=nonsense",
        "?after=12",
        "?after=1-2-3",
        "?after=-1",
        "?after=a-b",
    ] {
        app.get(&format!("/chatrooms/{room}/messages{q}"), Some(&a.token))
            .await
            .err(400, "bad_request");
    }
    app.get(
        &format!("/chatrooms/{room}/messages?after={id}"),
        Some(&a.token),
    )
    .await
    .ok();
    // Not a member (the checks for membership come before the query's values).
    app.get(&format!("/chatrooms/{room}/messages"), Some(&c.token))
        .await
        .err(403, "forbidden");
    app.get(
        &format!("/chatrooms/{room}/messages?limit=0"),
        Some(&c.token),
    )
    .await
    .err(403, "forbidden");
    // Unknown, and not a UUID.
    for bad in [
        "6f1c1a34-0b5e-4c37-9a56-0e8c2f9d2b11",
        "not-a-uuid",
        "1234",
        "%00",
    ] {
        app.get(&format!("/chatrooms/{bad}/messages"), Some(&a.token))
            .await
            .err(404, "room_not_found");
    }
}

async fn close_room(b: Backend) {
    let app = App::start(b, &[]).await;
    let a = app.register(A).await;
    let bu = app.register(B).await;
    let c = app.register(C).await;
    let room = app.make_room(&a, &bu).await;
    let mut a_ws = app.ws(&a).await;
    let mut b_ws = app.ws(&bu).await;
    a_ws.say(&room, "bye soon").await;

    app.post("/close_room", Some(&c.token), &json!({ "chat_id": room }))
        .await
        .err(403, "forbidden");
    for bad in ["6f1c1a34-0b5e-4c37-9a56-0e8c2f9d2b11", "nope", ""] {
        app.post("/close_room", Some(&a.token), &json!({ "chat_id": bad }))
            .await
            .err(404, "room_not_found");
    }
    let v = app
        .post("/close_room", Some(&a.token), &json!({ "chat_id": room }))
        .await
        .ok();
    assert_eq!(v, json!({"success": true}));
    for ws in [&mut a_ws, &mut b_ws] {
        let ev = ws.recv_event("room_closed").await;
        assert_eq!(ev["data"], json!({"room": room, "by": A}));
    }
    // Gone everywhere.
    app.post("/close_room", Some(&bu.token), &json!({ "chat_id": room }))
        .await
        .err(404, "room_not_found");
    app.get(&format!("/chatrooms/{room}/messages"), Some(&a.token))
        .await
        .err(404, "room_not_found");
    for u in [&a, &bu] {
        let v = app.get("/active_chatrooms", Some(&u.token)).await.ok();
        assert_eq!(v["chatrooms"], json!([]), "{v}");
    }
    a_ws.call_err("join_room", json!({ "room": room }), "room_not_found")
        .await;
    a_ws.call_err(
        "send_message",
        json!({"room": room, "message": "hi"}),
        "room_not_found",
    )
    .await;
    let r = app.get(&format!("/chatroom/{room}"), None).await;
    assert_eq!(r.status, 404, "page of a closed room");
    // They may start again.
    let again = app.make_room(&bu, &a).await;
    assert_ne!(again, room);
    let v = app
        .get(&format!("/chatrooms/{again}/messages"), Some(&a.token))
        .await
        .ok();
    assert_eq!(v["messages"], json!([]), "a new room starts empty: {v}");
}

async fn operations_endpoints(b: Backend) {
    let app = App::start(b, &[]).await;
    let v = app.get("/healthz", None).await.ok();
    assert_eq!(v, json!({"success": true, "status": "ok"}));
    let v = app.get("/readyz", None).await.ok();
    assert_eq!(v, json!({"success": true, "store": "ok"}));

    // Some traffic so counters have samples.
    let a = app.register(A).await;
    let bu = app.register(B).await;
    let room = app.make_room(&a, &bu).await;
    let mut ws = app.ws(&a).await;
    ws.say(&room, "counted").await;
    let text = app.metrics().await;
    for name in [
        "chat_connections",
        "chat_messages_total",
        "chat_http_requests_total",
        "chat_store_errors_total",
        "chat_store_latency_seconds",
        "chat_slow_consumers_closed_total",
    ] {
        assert!(
            text.lines()
                .any(|l| !l.starts_with('#') && l.starts_with(name))
                || text.contains(&format!("# TYPE {name}")),
            "metric {name} missing from /metrics:\n{text}"
        );
    }
    let gauge =
        chat_tests::metric_value(&text, "chat_connections").expect("chat_connections sample");
    assert!(gauge >= 1.0, "chat_connections {gauge} with a socket open");
    let msgs =
        chat_tests::metric_value(&text, "chat_messages_total").expect("chat_messages_total sample");
    assert!(msgs >= 1.0, "chat_messages_total {msgs} after a message");
    assert!(
        text.lines()
            .any(|l| l.starts_with("chat_http_requests_total{")),
        "chat_http_requests_total has route/status labels:\n{text}"
    );
    // Routes are labelled by template: ids and unknown paths never become label values (which
    // would grow the metric without bound).
    let c = app.register(C).await;
    for i in 0..3 {
        app.get(&format!("/no-such-route-{i}x"), None).await;
        app.get(
            &format!("/chatrooms/{room}/messages?limit={}", i + 1),
            Some(&a.token),
        )
        .await
        .ok();
    }
    app.get(&format!("/chatrooms/{room}/messages"), Some(&c.token))
        .await
        .err(403, "forbidden");
    app.get("/chatroom/00000000-0000-4000-8000-00000000abcd", None)
        .await;
    let text = app.metrics().await;
    for leaked in [room.as_str(), "no-such-route-1x", "00000000abcd", A, B] {
        assert!(
            !text.contains(leaked),
            "/metrics carries the request-specific value {leaked:?}:\n{text}"
        );
    }
    // The gauge follows sockets closing.
    ws.close().await;
    let back = chat_tests::eventually(std::time::Duration::from_secs(5), || async {
        chat_tests::metric_value(&app.metrics().await, "chat_connections") == Some(0.0)
    })
    .await;
    assert!(
        back,
        "chat_connections did not return to 0 after the socket closed"
    );
    // The metrics are public; healthz works with any (even a bogus) token too.
    app.get("/healthz", Some("bogus")).await.ok();
}

async fn unknown_routes_and_methods(b: Backend) {
    let app = App::start(b, &[]).await;
    let a = app.register(A).await;
    // Unknown query parameters are ignored.
    app.get("/active_chatrooms?foo=bar&x", Some(&a.token))
        .await
        .ok();
    for path in ["/nope", "/register_user/x", "/chatrooms", "/static/nope.js"] {
        let r = app.get(path, Some(&a.token)).await;
        assert_eq!(r.status, 404, "GET {path}: {}", r.text());
        if !path.starts_with("/static") {
            r.err(404, "not_found");
        }
    }
    for (method, path) in [
        ("GET", "/register_user"),
        ("GET", "/send_request"),
        ("GET", "/respond_request"),
        ("GET", "/cancel_request"),
        ("GET", "/close_room"),
        ("GET", "/reconnect"),
        ("POST", "/online_users"),
        ("POST", "/incoming_request"),
        ("POST", "/active_chatrooms"),
        ("DELETE", "/register_user"),
        ("PUT", "/send_request"),
        ("POST", "/healthz"),
    ] {
        let body = (method != "GET").then_some(&b"{}"[..]);
        app.request(method, path, Some(&a.token), body)
            .await
            .err(405, "method_not_allowed");
    }
    // GET /ws without an upgrade: 400, with or without a token.
    app.get("/ws", Some(&a.token)).await.err(400, "bad_request");
    app.get("/ws", None).await.err(400, "bad_request");
}

/// `8-4-4-4-12` hex.
fn is_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.iter().map(|p| p.len()).collect::<Vec<_>>() == [8, 4, 4, 4, 12]
        && parts
            .iter()
            .all(|p| p.bytes().all(|c| c.is_ascii_hexdigit()))
}
