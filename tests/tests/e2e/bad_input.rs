//! Bad input on every POST route (and the caller-naming query of GET routes): each answers a
//! clear 4xx with the contract's code, in the contract's order of checks, and never a 500.

use chat_tests::{App, Backend, Client, User, backends};
use serde_json::{Value, json};

const A: &str = "+14155550111";
const B: &str = "+14155550112";
const C: &str = "+14155550113";

backends!(
    post_bodies_of_the_wrong_shape,
    oversize_bodies,
    caller_fields_naming_someone_else,
    room_fields,
    order_of_checks,
    extra_fields_and_content_type_are_ignored,
    queries_are_form_encoded,
);

/// A POST route, a body that passes every check (or fails only on state), and its required fields.
struct Route {
    path: &'static str,
    needs_token: bool,
    /// Bodies missing a required field.
    missing: Vec<Value>,
    /// Bodies with a field of the wrong type.
    wrong_type: Vec<Value>,
}

fn routes() -> Vec<Route> {
    vec![
        Route {
            path: "/register_user",
            needs_token: false,
            missing: vec![json!({}), json!({"name": "x"})],
            wrong_type: vec![
                json!({"phone": 14155550100_u64}),
                json!({"phone": null}),
                json!({"phone": ["+14155550100"]}),
                json!({"phone": "+14155550199", "name": 5}),
                json!({"phone": "+14155550199", "name": {}}),
            ],
        },
        Route {
            path: "/send_request",
            needs_token: true,
            missing: vec![json!({}), json!({ "phone1": A })],
            wrong_type: vec![
                json!({"phone2": 14155550112_u64}),
                json!({"phone2": null}),
                json!({"phone2": B, "phone1": 5}),
                json!({"phone2": {"p": B}}),
            ],
        },
        Route {
            path: "/respond_request",
            needs_token: true,
            missing: vec![
                json!({}),
                json!({ "phone1": B }),
                json!({"action": "accept"}),
            ],
            wrong_type: vec![
                json!({"phone1": B, "action": true}),
                json!({"phone1": B, "action": null}),
                json!({"phone1": 1, "action": "accept"}),
                json!({"phone1": B, "phone2": 1, "action": "accept"}),
            ],
        },
        Route {
            path: "/cancel_request",
            needs_token: true,
            missing: vec![json!({}), json!({"phone1": A})],
            wrong_type: vec![json!({"phone2": 1}), json!({"phone2": [B]})],
        },
        Route {
            path: "/close_room",
            needs_token: true,
            missing: vec![json!({}), json!({"room": "x"})],
            wrong_type: vec![
                json!({"chat_id": 1}),
                json!({"chat_id": null}),
                json!({"chat_id": {}}),
            ],
        },
    ]
}

async fn two_users(app: &App) -> (User, User) {
    (app.register(A).await, app.register(B).await)
}

async fn post_bodies_of_the_wrong_shape(b: Backend) {
    let app = App::start(b, &[]).await;
    let (a, _b) = two_users(&app).await;
    for route in routes() {
        let token = route.needs_token.then_some(a.token.as_str());
        let raw_bad: [&[u8]; 11] = [
            b"",
            b"{",
            b"not json",
            b"{\"phone\": }",
            b"{\"a\":1} trailing",
            b"\xff\xfe{}",
            b"[1, 2]",
            b"\"a string\"",
            b"null",
            b"42",
            b"true",
        ];
        for body in raw_bad {
            let r = app.post_raw(route.path, token, body).await;
            r.err(400, "bad_request");
        }
        for body in route.missing.iter().chain(route.wrong_type.iter()) {
            let r = app.post(route.path, token, body).await;
            assert_eq!(
                (r.status, r.json()["code"].as_str()),
                (400, Some("bad_request")),
                "POST {} {body}: {} {}",
                route.path,
                r.status,
                r.text()
            );
        }
        if route.needs_token {
            for token in [None, Some("x"), Some(&"f".repeat(64)[..])] {
                app.post(route.path, token, &json!({}))
                    .await
                    .err(401, "unauthorized");
            }
        }
    }
    // Deep nesting: refused, not recursed into.
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    app.post_raw("/send_request", Some(&a.token), deep.as_bytes())
        .await
        .err(400, "bad_request");
    let deep_field = format!(
        r#"{{"phone2": {}{}}}"#,
        "{\"a\":".repeat(3000),
        "}".repeat(3000)
    );
    app.post_raw("/send_request", Some(&a.token), deep_field.as_bytes())
        .await
        .err(400, "bad_request");
    // /reconnect takes any body.
    for body in [&b"not json"[..], b"[1]", b"", b"\xff"] {
        let v = app.post_raw("/reconnect", Some(&a.token), body).await.ok();
        assert_eq!(v["data"]["status"], "reconnected");
    }
}

async fn oversize_bodies(b: Backend) {
    let app = App::start(b, &[]).await;
    let (a, _b) = two_users(&app).await;
    let big = |fields: Value| {
        let mut v = fields;
        v["pad"] = json!("x".repeat(70 * 1024));
        v.to_string().into_bytes()
    };
    let cases: Vec<(&str, Option<&str>, Vec<u8>)> = vec![
        (
            "/register_user",
            None,
            big(json!({"phone": "+14155550177"})),
        ),
        ("/send_request", Some(&a.token), big(json!({ "phone2": B }))),
        (
            "/respond_request",
            Some(&a.token),
            big(json!({"phone1": B, "action": "accept"})),
        ),
        (
            "/cancel_request",
            Some(&a.token),
            big(json!({ "phone2": B })),
        ),
        ("/close_room", Some(&a.token), big(json!({"chat_id": "x"}))),
        ("/reconnect", Some(&a.token), big(json!({}))),
        // Not even JSON: the size is checked first.
        ("/send_request", Some(&a.token), vec![b'x'; 65 * 1024 + 1]),
    ];
    for (path, token, body) in cases {
        let r = app.post_raw(path, token, &body).await;
        r.err(413, "payload_too_large");
    }
    // The phone was not registered by the refused body.
    app.register("+14155550177").await;
    // Just under 64 KiB is read.
    let mut v = json!({ "phone2": B });
    let base = v.to_string().len() + r#","pad":"""#.len();
    v["pad"] = json!("y".repeat(64 * 1024 - base - 8));
    let body = v.to_string();
    assert!(body.len() < 64 * 1024);
    app.post_raw("/send_request", Some(&a.token), body.as_bytes())
        .await
        .ok();
}

async fn caller_fields_naming_someone_else(b: Backend) {
    let app = App::start(b, &[]).await;
    let (a, bu) = two_users(&app).await;
    let _c = app.register(C).await;
    for phone1 in [json!(B), json!("abc"), json!(""), json!("+1 415 555 0113")] {
        app.post(
            "/send_request",
            Some(&a.token),
            &json!({"phone1": phone1, "phone2": C}),
        )
        .await
        .err(403, "forbidden");
    }
    // The caller's own phone in another spelling is fine.
    app.post(
        "/send_request",
        Some(&a.token),
        &json!({"phone1": "+1 (415) 555-0111", "phone2": B}),
    )
    .await
    .ok();
    for phone2 in [json!(A), json!("nope"), json!(C)] {
        app.post(
            "/respond_request",
            Some(&bu.token),
            &json!({"phone1": A, "phone2": phone2, "action": "accept"}),
        )
        .await
        .err(403, "forbidden");
    }
    // Query parameters naming the caller.
    for path in ["/incoming_request", "/active_chatrooms"] {
        app.get(&format!("{path}?phone=%2B14155550112"), Some(&a.token))
            .await
            .err(403, "forbidden");
        app.get(&format!("{path}?phone=garbage"), Some(&a.token))
            .await
            .err(403, "forbidden");
        app.get(&format!("{path}?phone=%2B14155550111"), Some(&a.token))
            .await
            .ok();
    }
    app.post(
        "/respond_request",
        Some(&bu.token),
        &json!({"phone1": A, "phone2": "+1-415-555-0112", "action": "accept"}),
    )
    .await
    .ok();
}

async fn room_fields(b: Backend) {
    let app = App::start(b, &[]).await;
    let (a, bu) = two_users(&app).await;
    let c = app.register(C).await;
    let room = app.make_room(&a, &bu).await;
    app.post("/close_room", Some(&c.token), &json!({ "chat_id": room }))
        .await
        .err(403, "forbidden");
    for bad in [
        "00000000-0000-4000-8000-000000000000",
        "not-a-uuid",
        "",
        "../../etc/passwd",
        &room.to_uppercase().replace('-', "")[..5],
    ] {
        app.post("/close_room", Some(&a.token), &json!({ "chat_id": bad }))
            .await
            .err(404, "room_not_found");
        if bad.is_empty() {
            continue; // `/chatrooms//messages` is another route
        }
        app.get(
            &format!("/chatrooms/{}/messages", urlencode(bad)),
            Some(&a.token),
        )
        .await
        .err(404, "room_not_found");
    }
    app.get(&format!("/chatrooms/{room}/messages"), Some(&c.token))
        .await
        .err(403, "forbidden");
    // Still open for its members.
    app.get(&format!("/chatrooms/{room}/messages"), Some(&bu.token))
        .await
        .ok();
}

/// Route and method, body size, token, (rate limit), body shape, caller identity, field values,
/// state: the first failing check answers.
async fn order_of_checks(b: Backend) {
    let app = App::start(b, &[]).await;
    let (a, bu) = two_users(&app).await;
    let c = app.register(C).await;
    let room = app.make_room(&a, &bu).await;
    let huge = vec![b'{'; 65 * 1024 + 10];
    // Size before token.
    app.post_raw("/send_request", Some("bogus"), &huge)
        .await
        .err(413, "payload_too_large");
    // Token before shape.
    app.post_raw("/send_request", Some("bogus"), b"not json")
        .await
        .err(401, "unauthorized");
    // Shape before identity.
    app.post(
        "/send_request",
        Some(&a.token),
        &json!({"phone1": B, "phone2": 5}),
    )
    .await
    .err(400, "bad_request");
    // Identity before field values.
    app.post(
        "/send_request",
        Some(&a.token),
        &json!({"phone1": B, "phone2": "abc"}),
    )
    .await
    .err(403, "forbidden");
    // Field values before state.
    app.post(
        "/respond_request",
        Some(&c.token),
        &json!({"phone1": "abc", "action": "accept"}),
    )
    .await
    .err(400, "invalid_phone");
    app.post(
        "/respond_request",
        Some(&c.token),
        &json!({"phone1": A, "action": "nope"}),
    )
    .await
    .err(400, "bad_request");
    // Membership before the query's values.
    app.get(
        &format!("/chatrooms/{room}/messages?limit=0"),
        Some(&c.token),
    )
    .await
    .err(403, "forbidden");
    // Method before token.
    app.get("/send_request", None)
        .await
        .err(405, "method_not_allowed");
}

async fn extra_fields_and_content_type_are_ignored(b: Backend) {
    let app = App::start(b, &[]).await;
    let (a, _bu) = two_users(&app).await;
    let body = json!({"phone2": B, "extra": {"deep": [1, 2]}, "phone3": 5}).to_string();
    let auth = format!("Bearer {}", a.token);
    let r = chat_tests::http::request(
        app.addr,
        "POST",
        "/send_request",
        &[("Authorization", &auth), ("Content-Type", "text/plain")],
        Some(body.as_bytes()),
    )
    .await;
    r.ok();
    let r = chat_tests::http::request(
        app.addr,
        "POST",
        "/register_user",
        &[],
        Some(br#"{"phone": "+14155550166", "name": "x", "role": "admin"}"#),
    )
    .await;
    r.ok();
    let client = Client::new(app.addr);
    client.register("+14155550167").await;
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'-' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A chunked body is held to the same 64 KiB; a small chunked body is read like any other.
#[tokio::test]
async fn chunked_bodies_are_limited_too() {
    chat_tests::bounded(async {
        let app = App::start(Backend::Memory, &[]).await;
        let (a, _b) = two_users(&app).await;
        let chunked = |body: &[u8]| {
            let mut out = format!(
                "POST /send_request HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
                 Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
                a.token
            )
            .into_bytes();
            for chunk in body.chunks(4096) {
                out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                out.extend_from_slice(chunk);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"0\r\n\r\n");
            out
        };
        let mut big = json!({ "phone2": B });
        big["pad"] = json!("z".repeat(80 * 1024));
        chat_tests::http::request_raw(app.addr, &chunked(big.to_string().as_bytes()))
            .await
            .err(413, "payload_too_large");
        let small = json!({ "phone2": B }).to_string();
        chat_tests::http::request_raw(app.addr, &chunked(small.as_bytes()))
            .await
            .ok();
    })
    .await
}

/// Several requests on one keep-alive connection are each answered.
#[tokio::test]
async fn keep_alive_connections_serve_several_requests() {
    chat_tests::bounded(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let app = App::start(Backend::Memory, &[]).await;
        let mut s = tokio::net::TcpStream::connect(app.addr)
            .await
            .expect("connect");
        for i in 0..3 {
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .expect("write");
            let mut got = Vec::new();
            let mut buf = [0u8; 1024];
            while !String::from_utf8_lossy(&got).contains("\"ok\"") {
                let n = tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut buf))
                    .await
                    .expect("answer in time")
                    .expect("read");
                assert!(n > 0, "connection closed after {i} answers");
                got.extend_from_slice(&buf[..n]);
            }
            assert!(got.starts_with(b"HTTP/1.1 200"), "request {i}: {got:?}");
        }
    })
    .await
}

/// Query strings as HTTP libraries and browsers write them (`URLSearchParams`, httpx, requests,
/// Go's `url.Values`): `+` is a space, `%2B` a `+`; bad escapes and non-UTF-8 are 400; an empty
/// `limit=` is 400 and an empty `cursor=`/`after=` is none. A JSON `null` optional field is
/// absent.
async fn queries_are_form_encoded(b: Backend) {
    let app = App::start(b, &[]).await;
    // SessionCreated as a person types it; `"name": null` is the same as no name.
    let me = app
        .post(
            "/register_user",
            None,
            &json!({"phone": "+1 (555) 721-0199", "name": null}),
        )
        .await
        .ok();
    assert_eq!(me["phone"], "+15557210199", "{me}");
    let token = me["token"].as_str().expect("token").to_owned();
    let other = app.register(B).await;
    let room = app
        .make_room(
            &chat_tests::User {
                phone: "+15557210199".into(),
                token: token.clone(),
            },
            &other,
        )
        .await;
    for path in ["/incoming_request", "/active_chatrooms", "/online_users"] {
        // What `URLSearchParams({phone: "+1 (555) 721-0199"})` writes.
        app.get(
            &format!("{path}?phone=%2B1+%28555%29+721-0199"),
            Some(&token),
        )
        .await
        .ok();
        app.get(&format!("{path}?phone=%2B15557210199&x=a+b"), Some(&token))
            .await
            .ok();
        // A `+` written unencoded is a space: " 15557210199" is another phone.
        app.get(&format!("{path}?phone=+15557210199"), Some(&token))
            .await
            .err(403, "forbidden");
        for bad in ["phone=%2", "phone=%zz", "x=%ff", "x=%C3", "%ff=1"] {
            app.get(&format!("{path}?{bad}"), Some(&token))
                .await
                .err(400, "bad_request");
        }
    }
    // Empty values: `limit=` is not a positive integer; `cursor=` and `after=` are none.
    app.get("/online_users?limit=", Some(&token))
        .await
        .err(400, "bad_request");
    let v = app.get("/online_users?cursor=", Some(&token)).await.ok();
    assert!(
        v["online_users"].as_array().is_some_and(|l| !l.is_empty()),
        "{v}"
    );
    let msgs = format!("/chatrooms/{room}/messages");
    app.get(&format!("{msgs}?limit="), Some(&token))
        .await
        .err(400, "bad_request");
    app.get(&format!("{msgs}?after=&limit=5"), Some(&token))
        .await
        .ok();
    // The page route reads its query the same way.
    let page = app
        .get(&format!("/chatroom?room_id={room}&x=a+b"), None)
        .await;
    assert_eq!(page.status, 200, "chatroom page: {}", page.text());
}
