//! The REST API over real HTTP: shapes, statuses, codes and the order of checks.

#![allow(clippy::unwrap_used)] // helpers too (clippy.toml covers #[test] fns only)

mod support;

use chat_http::HttpConfig;
use serde_json::json;
use support::{Mode, TestServer};

const A: &str = "+14155550100";
const B: &str = "+14155550101";
const C: &str = "+14155550102";

/// Registers A and B, has A ask B and B accept: returns (server, token A, token B, room).
async fn two_in_a_room() -> (TestServer, String, String, String) {
    let s = TestServer::start().await;
    let a = s.register(A).await;
    let b = s.register(B).await;
    let r = s
        .call(
            "POST",
            "/send_request",
            Some(&a),
            Some(&json!({"phone1": A, "phone2": B}).to_string()),
        )
        .await;
    assert_eq!(
        r.json,
        json!({"success": true, "message": "Request sent successfully"})
    );
    let r = s
        .call(
            "POST",
            "/respond_request",
            Some(&b),
            Some(&json!({"phone1": A, "phone2": B, "action": "accept"}).to_string()),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["message"]["accepted"], true);
    let room = r.json["message"]["chat_id"].as_str().unwrap().to_owned();
    (s, a, b, room)
}

#[tokio::test]
async fn register_and_refresh() {
    let s = TestServer::start().await;
    let r = s
        .call(
            "POST",
            "/register_user",
            None,
            Some(r#"{"phone": "+1 (415) 555-0100", "name": "Asha"}"#),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.json["success"], true);
    assert_eq!(r.json["message"], true);
    assert_eq!(r.json["phone"], A);
    assert_eq!(r.json["expires_in"], 21_600);
    let token = r.json["token"].as_str().unwrap().to_owned();
    assert!(token.len() >= 32);

    // Same phone without its token: in use.
    let r = s
        .call(
            "POST",
            "/register_user",
            None,
            Some(&json!({"phone": A}).to_string()),
        )
        .await;
    assert_eq!((r.status, r.code()), (409, "phone_in_use"));
    // With it: a refresh, same token.
    let r = s
        .call(
            "POST",
            "/register_user",
            Some(&token),
            Some(&json!({"phone": A}).to_string()),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json["token"], token.as_str());
}

#[tokio::test]
async fn register_body_errors() {
    let s = TestServer::start().await;
    for (body, code) in [
        ("not json", "bad_request"),
        ("[1, 2]", "bad_request"),
        ("{}", "bad_request"),
        (r#"{"phone": 14155550100}"#, "bad_request"),
        (r#"{"phone": "+14155550100", "name": 7}"#, "bad_request"),
        (r#"{"phone": "12ab"}"#, "invalid_phone"),
    ] {
        let r = s.call("POST", "/register_user", None, Some(body)).await;
        assert_eq!((r.status, r.code()), (400, code), "{body}");
    }
    let long = "x".repeat(65);
    let r = s
        .call(
            "POST",
            "/register_user",
            None,
            Some(&json!({"phone": C, "name": long}).to_string()),
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "bad_request"));
    // Unknown fields are ignored, and the Content-Type is not looked at.
    let r = s
        .raw(
            "POST",
            "/register_user",
            &[("Content-Type".into(), "text/plain".into())],
            Some(
                json!({"phone": C, "extra": {"a": 1}})
                    .to_string()
                    .as_bytes(),
            ),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
}

#[tokio::test]
async fn registration_rate_limit_counts_every_attempt() {
    let s = TestServer::with(HttpConfig {
        registrations_per_min: 3,
        ..HttpConfig::default()
    })
    .await;
    // Bad attempts count too.
    for _ in 0..3 {
        let r = s.call("POST", "/register_user", None, Some("nope")).await;
        assert_eq!(r.status, 400);
    }
    let r = s
        .call(
            "POST",
            "/register_user",
            None,
            Some(&json!({"phone": A}).to_string()),
        )
        .await;
    assert_eq!((r.status, r.code()), (429, "rate_limited"));
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    // Order: body size comes before the rate limit.
    let big = "x".repeat(70 * 1024);
    let r = s.call("POST", "/register_user", None, Some(&big)).await;
    assert_eq!((r.status, r.code()), (413, "payload_too_large"));
}

#[tokio::test]
async fn tokens_are_required() {
    let s = TestServer::start().await;
    for (method, path) in [
        ("GET", "/online_users"),
        ("POST", "/reconnect"),
        ("POST", "/send_request"),
        ("GET", "/incoming_request"),
        ("POST", "/respond_request"),
        ("POST", "/cancel_request"),
        ("GET", "/active_chatrooms"),
        ("GET", "/chatrooms/x/messages"),
        ("POST", "/close_room"),
    ] {
        let r = s.call(method, path, None, Some("{}")).await;
        assert_eq!((r.status, r.code()), (401, "unauthorized"), "{path}");
        let r = s
            .call(method, path, Some(&"0".repeat(64)), Some("{}"))
            .await;
        assert_eq!((r.status, r.code()), (401, "unauthorized"), "{path}");
        let r = s
            .raw(
                method,
                path,
                &[("Authorization".into(), "Basic abc".into())],
                None,
            )
            .await;
        assert_eq!(r.status, 401, "{path}");
    }
}

#[tokio::test]
async fn checks_run_in_the_contracts_order() {
    let s = TestServer::start().await;
    let a = s.register(A).await;
    s.register(B).await;
    // Body size before token.
    let big = format!(r#"{{"phone2": "{}"}}"#, "1".repeat(70 * 1024));
    let r = s.call("POST", "/send_request", None, Some(&big)).await;
    assert_eq!((r.status, r.code()), (413, "payload_too_large"));
    // Token before body shape.
    let r = s
        .call("POST", "/send_request", Some("bad"), Some("not json"))
        .await;
    assert_eq!((r.status, r.code()), (401, "unauthorized"));
    // Body shape before identity.
    let r = s
        .call(
            "POST",
            "/send_request",
            Some(&a),
            Some(&json!({"phone1": B, "phone2": 5}).to_string()),
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "bad_request"));
    // Identity before field values: someone else's phone1, or an invalid one.
    for phone1 in [B, "garbage"] {
        let r = s
            .call(
                "POST",
                "/send_request",
                Some(&a),
                Some(&json!({"phone1": phone1, "phone2": "bad phone"}).to_string()),
            )
            .await;
        assert_eq!((r.status, r.code()), (403, "forbidden"), "{phone1}");
    }
    // `?phone=` names the caller too; its normalised form counts.
    let r = s
        .call(
            "GET",
            &format!("/incoming_request?phone={B}"),
            Some(&a),
            None,
        )
        .await;
    assert_eq!((r.status, r.code()), (403, "forbidden"));
    let r = s
        .call(
            "GET",
            "/incoming_request?phone=%2B1%20415%20555%200100",
            Some(&a),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    // Field values before state.
    let r = s
        .call(
            "POST",
            "/send_request",
            Some(&a),
            Some(&json!({"phone2": "bad phone"}).to_string()),
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "invalid_phone"));
    let r = s
        .call(
            "POST",
            "/send_request",
            Some(&a),
            Some(&json!({"phone1": A, "phone2": A}).to_string()),
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "self_request"));
    let r = s
        .call(
            "POST",
            "/send_request",
            Some(&a),
            Some(&json!({"phone2": C}).to_string()),
        )
        .await;
    assert_eq!((r.status, r.code()), (404, "user_not_found"));
}

#[tokio::test]
async fn chunked_oversize_body_is_413() {
    let s = TestServer::start().await;
    let chunk = "x".repeat(8 * 1024);
    let mut req = String::from(
        "POST /send_request HTTP/1.1\r\nHost: t\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    for _ in 0..9 {
        req.push_str(&format!("{:x}\r\n{chunk}\r\n", chunk.len()));
    }
    req.push_str("0\r\n\r\n");
    let r = s.send_bytes(req.as_bytes()).await;
    assert_eq!((r.status, r.code()), (413, "payload_too_large"));
}

#[tokio::test]
async fn request_lifecycle() {
    let (s, a, b, room) = two_in_a_room().await;
    // Already in a room: 409 with the room.
    let r = s
        .call(
            "POST",
            "/send_request",
            Some(&a),
            Some(&json!({"phone2": B}).to_string()),
        )
        .await;
    assert_eq!((r.status, r.code()), (409, "room_exists"));
    assert_eq!(r.json["chat_id"], room.as_str());

    let c = s.register(C).await;
    let send = |tok: String, to: &str| {
        let body = json!({"phone2": to}).to_string();
        let s = &s;
        async move {
            s.call("POST", "/send_request", Some(&tok), Some(&body))
                .await
        }
    };
    assert_eq!(send(c.clone(), A).await.status, 200);
    let r = send(c.clone(), A).await;
    assert_eq!((r.status, r.code()), (409, "already_pending"));

    let r = s.call("GET", "/incoming_request", Some(&a), None).await;
    assert_eq!(
        r.json,
        json!({"success": true, "incoming_request": [C], "sent_request": [], "names": {}})
    );
    let r = s.call("GET", "/incoming_request", Some(&c), None).await;
    assert_eq!(
        r.json,
        json!({"success": true, "incoming_request": [], "sent_request": [A], "names": {}})
    );

    // Bad action, then decline.
    let respond = |action: &str| json!({"phone1": C, "phone2": A, "action": action}).to_string();
    let r = s
        .call(
            "POST",
            "/respond_request",
            Some(&a),
            Some(&respond("maybe")),
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "bad_request"));
    let r = s
        .call(
            "POST",
            "/respond_request",
            Some(&b),
            Some(&respond("accept")),
        )
        .await;
    assert_eq!((r.status, r.code()), (403, "forbidden"));
    let r = s
        .call(
            "POST",
            "/respond_request",
            Some(&a),
            Some(&respond("decline")),
        )
        .await;
    assert_eq!(
        r.json,
        json!({"success": true, "message": {"accepted": false}})
    );
    let r = s
        .call(
            "POST",
            "/respond_request",
            Some(&a),
            Some(&respond("accept")),
        )
        .await;
    assert_eq!((r.status, r.code()), (404, "request_not_found"));

    // Send then cancel.
    assert_eq!(send(c.clone(), B).await.status, 200);
    let r = s
        .call(
            "POST",
            "/cancel_request",
            Some(&c),
            Some(&json!({"phone2": B}).to_string()),
        )
        .await;
    assert_eq!(
        r.json,
        json!({"success": true, "message": "Request cancelled"})
    );
    let r = s
        .call(
            "POST",
            "/cancel_request",
            Some(&c),
            Some(&json!({"phone2": B}).to_string()),
        )
        .await;
    assert_eq!((r.status, r.code()), (404, "request_not_found"));

    // A crossed request accepts: C asks B, B asks C.
    assert_eq!(send(c.clone(), B).await.status, 200);
    let r = send(b.clone(), C).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["success"], true);
    assert_eq!(r.json["message"]["accepted"], true);
    assert!(r.json["message"]["chat_id"].is_string());
}

#[tokio::test]
async fn rooms_and_messages() {
    let (s, a, b, room) = two_in_a_room().await;
    let r = s.call("GET", "/active_chatrooms", Some(&a), None).await;
    assert_eq!(r.status, 200);
    let rooms = r.json["chatrooms"].as_array().unwrap();
    assert_eq!(rooms.len(), 1);
    assert_eq!(rooms[0]["chat_id"], room.as_str());
    assert_eq!(rooms[0]["other_user"], B);
    assert!(rooms[0]["expires_at"].as_u64().unwrap() > 1_700_000_000_000);

    let r = s
        .call("POST", "/reconnect", Some(&b), Some("anything at all"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["success"], true);
    assert_eq!(r.json["data"]["status"], "reconnected");
    assert_eq!(r.json["data"]["chatrooms"][0]["other_user"], A);

    let path = format!("/chatrooms/{room}/messages");
    let r = s.call("GET", &path, Some(&a), None).await;
    assert_eq!(
        r.json,
        json!({"success": true, "messages": [], "more": false})
    );

    let me = chat_core::Phone::parse(A).unwrap();
    let first = s
        .service
        .send_message(&me, &room, "hello".into(), Some("c1".into()))
        .await
        .unwrap();
    s.service
        .send_message(&me, &room, "two".into(), None)
        .await
        .unwrap();
    let r = s
        .call("GET", &format!("{path}?limit=1"), Some(&b), None)
        .await;
    assert_eq!(r.json["more"], true);
    assert_eq!(r.json["messages"][0]["message"], "two");
    assert_eq!(r.json["messages"][0]["client_id"], serde_json::Value::Null);
    let r = s.call("GET", &path, Some(&b), None).await;
    let m = &r.json["messages"][0];
    assert_eq!(m["id"], first.id.to_string());
    assert_eq!(m["room"], room.as_str());
    assert_eq!(m["sender"], A);
    assert_eq!(m["message"], "hello");
    assert_eq!(m["client_id"], "c1");
    assert_eq!(m["timestamp"], chat_core::time::rfc3339(first.timestamp));
    assert!(m["timestamp"].as_str().unwrap().ends_with('Z'));
    let r = s
        .call("GET", &format!("{path}?after={}", first.id), Some(&b), None)
        .await;
    assert_eq!(r.json["messages"].as_array().unwrap().len(), 1);
    assert_eq!(r.json["more"], false);

    // An empty `limit=` is not a positive integer; an empty `after=` is none.
    let r = s
        .call("GET", &format!("{path}?after=&limit="), Some(&b), None)
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    let r = s
        .call("GET", &format!("{path}?after="), Some(&b), None)
        .await;
    assert_eq!(
        r.json["messages"].as_array().unwrap().len(),
        2,
        "{}",
        r.text
    );
    for q in ["limit=0", "limit=abc", "limit=-1", "after=zzz", "limit=%zz"] {
        let r = s.call("GET", &format!("{path}?{q}"), Some(&a), None).await;
        assert_eq!((r.status, r.code()), (400, "bad_request"), "{q}");
    }
    let r = s
        .call("GET", "/chatrooms/not-a-uuid/messages", Some(&a), None)
        .await;
    assert_eq!((r.status, r.code()), (404, "room_not_found"));
    let c = s.register(C).await;
    let r = s.call("GET", &path, Some(&c), None).await;
    assert_eq!((r.status, r.code()), (403, "forbidden"));
    let close = json!({"chat_id": room}).to_string();
    let r = s.call("POST", "/close_room", Some(&c), Some(&close)).await;
    assert_eq!((r.status, r.code()), (403, "forbidden"));
    let r = s
        .call("POST", "/close_room", Some(&a), Some(r#"{"chat_id": 5}"#))
        .await;
    assert_eq!((r.status, r.code()), (400, "bad_request"));

    let r = s.call("POST", "/close_room", Some(&a), Some(&close)).await;
    assert_eq!(r.json, json!({"success": true}));
    let r = s.call("POST", "/close_room", Some(&a), Some(&close)).await;
    assert_eq!((r.status, r.code()), (404, "room_not_found"));
    let r = s.call("GET", &path, Some(&a), None).await;
    assert_eq!((r.status, r.code()), (404, "room_not_found"));
}

#[tokio::test]
async fn online_users_pages() {
    let s = TestServer::start().await;
    let a = s.register(A).await;
    s.register(B).await;
    s.register(C).await;
    let r = s.call("GET", "/online_users", Some(&a), None).await;
    assert_eq!(r.status, 200);
    let mut all: Vec<String> = r.json["online_users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_owned())
        .collect();
    all.sort();
    assert_eq!(all, [A, B, C]);
    assert_eq!(r.json["next_cursor"], serde_json::Value::Null);

    // Walk one by one.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let path = match &cursor {
            None => "/online_users?limit=1".to_owned(),
            Some(c) => format!("/online_users?limit=1&cursor={c}"),
        };
        let r = s.call("GET", &path, Some(&a), None).await;
        assert_eq!(r.status, 200, "{}", r.text);
        for p in r.json["online_users"].as_array().unwrap() {
            seen.push(p.as_str().unwrap().to_owned());
        }
        match r.json["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen, [A, B, C]);

    for q in ["limit=0", "limit=x", "cursor=not-ours"] {
        let r = s
            .call("GET", &format!("/online_users?{q}"), Some(&a), None)
            .await;
        assert_eq!((r.status, r.code()), (400, "bad_request"), "{q}");
    }
    let r = s
        .call("GET", "/online_users?limit=5000", Some(&a), None)
        .await;
    assert_eq!(r.status, 200);
    // An empty cursor is none; an empty limit is not a positive integer; an empty phone is a
    // phone that is not the caller's.
    let r = s.call("GET", "/online_users?cursor=", Some(&a), None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["online_users"].as_array().unwrap().len(), 3);
    for (q, status) in [("cursor=&limit=", 400), ("phone=", 403)] {
        let r = s
            .call("GET", &format!("/online_users?{q}"), Some(&a), None)
            .await;
        assert_eq!(r.status, status, "{q}: {}", r.text);
    }
}

#[tokio::test]
async fn unknown_routes_and_methods() {
    let s = TestServer::start().await;
    let r = s.call("GET", "/nope", None, None).await;
    assert_eq!((r.status, r.code()), (404, "not_found"));
    let r = s.call("GET", "/static/nope.js", None, None).await;
    assert_eq!((r.status, r.code()), (404, "not_found"));
    let r = s.call("GET", "/register_user", None, None).await;
    assert_eq!((r.status, r.code()), (405, "method_not_allowed"));
    assert_eq!(r.header("allow"), Some("POST"));
    let r = s.call("DELETE", "/online_users", None, None).await;
    assert_eq!((r.status, r.code()), (405, "method_not_allowed"));
    let r = s.call("POST", "/healthz", None, Some("{}")).await;
    assert_eq!((r.status, r.code()), (405, "method_not_allowed"));
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
}

#[tokio::test]
async fn store_down_is_503_and_recovers() {
    let s = TestServer::start().await;
    let a = s.register(A).await;
    s.store.set(Mode::Down);
    let r = s.call("GET", "/active_chatrooms", Some(&a), None).await;
    assert_eq!((r.status, r.code()), (503, "store_unavailable"));
    let r = s
        .call(
            "POST",
            "/register_user",
            None,
            Some(&json!({"phone": B}).to_string()),
        )
        .await;
    assert_eq!((r.status, r.code()), (503, "store_unavailable"));
    let r = s.call("GET", "/readyz", None, None).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json["success"], false);
    assert_eq!(r.json["store"], "unavailable");
    assert_eq!(r.json["code"], "store_unavailable");
    assert!(r.json["error"].is_string());
    // The pages that need no store still work; the one that does says 503.
    assert_eq!(s.call("GET", "/", None, None).await.status, 200);
    let r = s
        .call(
            "GET",
            &format!("/chatroom/{}", uuid::Uuid::nil()),
            None,
            None,
        )
        .await;
    assert_eq!(r.status, 503);

    s.store.set(Mode::Up);
    let r = s.call("GET", "/active_chatrooms", Some(&a), None).await;
    assert_eq!(
        r.json,
        json!({"success": true, "chatrooms": [], "names": {}})
    );
    let r = s.call("GET", "/readyz", None, None).await;
    assert_eq!(r.json, json!({"success": true, "store": "ok"}));
}

#[tokio::test]
async fn a_panicking_handler_answers_503_and_the_server_lives_on() {
    let s = TestServer::start().await;
    let a = s.register(A).await;
    s.store.set(Mode::Panics);
    let r = s.call("GET", "/incoming_request", Some(&a), None).await;
    assert_eq!((r.status, r.code()), (503, "store_unavailable"));
    let r = s.call("GET", "/readyz", None, None).await;
    assert_eq!(r.status, 503);
    s.store.set(Mode::Up);
    assert_eq!(s.call("GET", "/healthz", None, None).await.status, 200);
    assert_eq!(
        s.call("GET", "/incoming_request", Some(&a), None)
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn a_hanging_store_answers_503_within_2_s() {
    let s = TestServer::start().await;
    let a = s.register(A).await;
    s.store.set(Mode::Hangs);
    for (path, token) in [("/active_chatrooms", Some(a.as_str())), ("/readyz", None)] {
        let started = std::time::Instant::now();
        let r = s.call("GET", path, token, None).await;
        assert_eq!(r.status, 503, "{path}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(2),
            "{path}"
        );
    }
    s.store.set(Mode::Up);
}
