//! docs/openapi.json against a real server: the server serves the document as it is in the
//! repository, and every documented operation is driven with real requests, its success and
//! its error answers, each answer checked against the document: the status is one the
//! operation lists, the content type one that status lists, headers it lists are there, and a
//! JSON body validates against the schema (`additionalProperties: false` on answers, so a field
//! the document does not name fails too). Request bodies sent for a success are validated
//! against the operation's request schema. At the end, every documented (operation, status)
//! must have been seen: the 503s by `store_down_answers_match_the_document` (Redis killed),
//! everything else by `answers_match_the_document`.

mod schema;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use chat_tests::{App, Backend, Response, User, backends, bounded, http};
use futures_util::future::join_all;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use self::schema::{resolve, validate};

/// The document in the repository; the server must serve exactly this.
const DOCUMENT: &str = include_str!("../../../docs/openapi.json");

const A: &str = "+14155550301";
const B: &str = "+14155550302";
const C: &str = "+14155550303";
const D: &str = "+14155550304";
/// SessionCreated by nobody.
const NOBODY: &str = "+14155550399";
/// A UUID no room has.
const NO_ROOM: &str = "00000000-0000-4000-8000-000000000000";
const ALLOWED_ORIGIN: &str = "http://allowed.example";

backends!(answers_match_the_document);

/// What the document says, and which (path, method, status) answers were checked against it.
struct Contract {
    doc: Value,
    seen: BTreeSet<(String, String, String)>,
}

impl Contract {
    fn new() -> Contract {
        Contract {
            doc: serde_json::from_str(DOCUMENT).expect("docs/openapi.json is JSON"),
            seen: BTreeSet::new(),
        }
    }

    fn operation(&self, method: &str, path: &str) -> &Value {
        self.doc["paths"]
            .get(path)
            .and_then(|item| item.get(method.to_ascii_lowercase()))
            .unwrap_or_else(|| panic!("{method} {path} is not in docs/openapi.json"))
    }

    /// Checks a body a test sends for a success against the operation's request schema, and
    /// returns it.
    #[track_caller]
    fn req(&self, method: &str, path: &str, body: Value) -> Value {
        let op = self.operation(method, path);
        let schema = &op["requestBody"]["content"]["application/json"]["schema"];
        assert!(!schema.is_null(), "{method} {path} documents no JSON body");
        if let Err(errors) = validate(&self.doc, schema, &body) {
            panic!(
                "{method} {path}: the request body {body} does not match the document: {errors:#?}"
            );
        }
        body
    }

    /// Checks `r`, the answer to `method path` (`path` as the document writes it), against
    /// the document; returns its JSON body (null when it has none).
    #[track_caller]
    fn check(&mut self, method: &str, path: &str, r: &Response) -> Value {
        let status = r.status.to_string();
        let op = self.operation(method, path);
        let documented = op["responses"].get(&status).unwrap_or_else(|| {
            panic!(
                "{method} {path} answered {status}, which the document does not list: {}",
                r.text()
            )
        });
        let documented = resolve(&self.doc, documented).clone();
        self.seen
            .insert((path.to_owned(), method.to_ascii_lowercase(), status.clone()));
        self.check_response(&format!("{method} {path} {status}"), &documented, r)
    }

    /// Checks `r` against a response object of the document.
    #[track_caller]
    fn check_response(&self, what: &str, documented: &Value, r: &Response) -> Value {
        for (name, h) in documented["headers"].as_object().into_iter().flatten() {
            let value = r
                .header(name)
                .unwrap_or_else(|| panic!("{what}: no `{name}` header"));
            let as_json = match h["schema"]["type"].as_str() {
                Some("integer") => value
                    .parse::<u64>()
                    .map(Value::from)
                    .unwrap_or_else(|_| panic!("{what}: `{name}: {value}` is not an integer")),
                _ => Value::String(value.to_owned()),
            };
            if let Err(errors) = validate(&self.doc, &h["schema"], &as_json) {
                panic!("{what}: header `{name}: {value}`: {errors:#?}");
            }
        }
        let Some(content) = documented.get("content").and_then(Value::as_object) else {
            assert!(
                r.body.is_empty(),
                "{what}: the document lists no body, got {:?}",
                r.text()
            );
            return Value::Null;
        };
        let ct = r
            .header("content-type")
            .unwrap_or_else(|| panic!("{what}: no content-type"));
        let essence = ct.split(';').next().unwrap_or_default().trim();
        let media = content.get(essence).unwrap_or_else(|| {
            panic!(
                "{what}: content-type {ct}, the document lists {:?}",
                content.keys().collect::<Vec<_>>()
            )
        });
        let body = if essence == "application/json" {
            r.json()
        } else {
            Value::String(r.text())
        };
        if let Err(errors) = validate(&self.doc, &media["schema"], &body) {
            panic!("{what}: the answer does not match the document: {errors:#?}\n{body}");
        }
        body
    }

    /// Checks a 404 for an unknown path or a 405 for a method a path does not list, against
    /// `components/responses/<name>`.
    #[track_caller]
    fn check_generic(&self, name: &str, r: &Response) -> Value {
        let documented = self.doc["components"]["responses"][name].clone();
        self.check_response(&format!("{} ({name})", r.request), &documented, r)
    }

    /// Every (path, method, status) the document lists that `wanted` selects and no answer
    /// was checked against.
    fn unseen(&self, wanted: impl Fn(&str) -> bool) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        for (path, item) in self.doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("path item") {
                for status in op["responses"].as_object().expect("responses").keys() {
                    let key = (path.clone(), method.clone(), status.clone());
                    if wanted(status) && !self.seen.contains(&key) {
                        out.push(key);
                    }
                }
            }
        }
        out
    }
}

/// `HEAD path`: the shared client waits for a body a HEAD answer never has.
async fn head(addr: SocketAddr, path: &str) -> Response {
    let what = format!("HEAD {path}");
    let exchange = async {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        let req = format!("HEAD {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.expect("write");
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.expect("read");
        raw
    };
    let raw = tokio::time::timeout(http::REQUEST_TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer"));
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("{what}: no complete head"));
    let head = std::str::from_utf8(&raw[..end]).expect("a UTF-8 head");
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{what}: bad status line"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Response {
        status,
        headers,
        body: raw[end + 4..].to_vec(),
        request: what,
    }
}

/// `GET /ws` as an upgrade, with these extra headers.
async fn upgrade(addr: SocketAddr, extra: &[(&str, &str)]) -> Response {
    let mut headers = vec![
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];
    headers.extend_from_slice(extra);
    http::request(addr, "GET", "/ws", &headers, None).await
}

/// The token routes, each with a body of the right shape (for the checks after the body's).
fn token_routes(room: &str) -> Vec<(&'static str, &'static str, String, Option<Value>)> {
    vec![
        ("GET", "/online_users", "/online_users".into(), None),
        ("POST", "/reconnect", "/reconnect".into(), Some(json!({}))),
        (
            "POST",
            "/send_request",
            "/send_request".into(),
            Some(json!({"phone2": NOBODY})),
        ),
        ("GET", "/incoming_request", "/incoming_request".into(), None),
        (
            "POST",
            "/respond_request",
            "/respond_request".into(),
            Some(json!({"phone1": NOBODY, "action": "accept"})),
        ),
        (
            "POST",
            "/cancel_request",
            "/cancel_request".into(),
            Some(json!({"phone2": NOBODY})),
        ),
        ("GET", "/active_chatrooms", "/active_chatrooms".into(), None),
        (
            "GET",
            "/chatrooms/{room_id}/messages",
            format!("/chatrooms/{room}/messages"),
            None,
        ),
        (
            "POST",
            "/close_room",
            "/close_room".into(),
            Some(json!({ "chat_id": room })),
        ),
        ("POST", "/ws_ticket", "/ws_ticket".into(), Some(json!({}))),
        (
            "POST",
            "/block",
            "/block".into(),
            Some(json!({"phone": NOBODY})),
        ),
        (
            "POST",
            "/unblock",
            "/unblock".into(),
            Some(json!({"phone": NOBODY})),
        ),
        ("GET", "/blocked", "/blocked".into(), None),
    ]
}

/// A `respond_request` body.
fn respond(me: &User, requester: &str, action: &str) -> Value {
    json!({"phone1": requester, "phone2": me.phone, "action": action})
}

async fn answers_match_the_document(b: Backend) {
    let app = App::start(
        b,
        &[
            "--allowed-origins",
            ALLOWED_ORIGIN,
            // Few, so the bucket refills slowly (one every 5 s) and the 429 at the end comes
            // however slow the machine: 8 attempts count before it.
            "--registrations-per-min",
            "12",
        ],
    )
    .await;
    let mut c = Contract::new();
    let addr = app.addr;

    // ------------------------------------------------------------ operations and pages
    let r = app.get("/openapi.json", None).await;
    let served = c.check("GET", "/openapi.json", &r);
    assert_eq!(
        served, c.doc,
        "the server serves docs/openapi.json as it is"
    );
    for path in ["/openapi.json", "/healthz", "/readyz", "/metrics", "/"] {
        let r = app.get(path, None).await;
        c.check("GET", path, &r);
        let r = head(addr, path).await;
        assert_eq!(r.status, 200, "HEAD {path}");
        c.check("HEAD", path, &r);
    }

    // ------------------------------------------------------------ registration
    let mut users: Vec<User> = Vec::new();
    for (phone, name) in [(A, Some("Asha")), (B, Some("Ben")), (C, None), (D, None)] {
        let body = c.req(
            "POST",
            "/register_user",
            json!({"phone": phone, "name": name}),
        );
        let r = app.post("/register_user", None, &body).await;
        let v = c.check("POST", "/register_user", &r);
        users.push(User {
            phone: v["phone"].as_str().expect("phone").to_owned(),
            token: v["token"].as_str().expect("token").to_owned(),
        });
    }
    let [a, bu, cu, du] = <[User; 4]>::try_from(users).expect("four users");
    // A refresh, with the session's token; without it, the phone is in use.
    let body = c.req(
        "POST",
        "/register_user",
        json!({"phone": A, "name": "Asha"}),
    );
    let r = app.post("/register_user", Some(&a.token), &body).await;
    assert_eq!(c.check("POST", "/register_user", &r)["token"], a.token);
    let r = app.post("/register_user", None, &body).await;
    r.err(409, "phone_in_use");
    c.check("POST", "/register_user", &r);
    let r = app
        .post("/register_user", None, &json!({"phone": "12"}))
        .await;
    r.err(400, "invalid_phone");
    c.check("POST", "/register_user", &r);
    let r = app.post_raw("/register_user", None, b"[\"phone\"]").await;
    r.err(400, "bad_request");
    c.check("POST", "/register_user", &r);

    // ------------------------------------------- every token route's common failures
    let big = vec![b' '; 64 * 1024 + 1];
    for (method, path, concrete, body) in token_routes(NO_ROOM) {
        let bytes = body.as_ref().map(|b| b.to_string().into_bytes());
        let r = app.request(method, &concrete, None, bytes.as_deref()).await;
        r.err(401, "unauthorized");
        c.check(method, path, &r);
        let r = app
            .request(method, &concrete, Some("not-a-token"), bytes.as_deref())
            .await;
        r.err(401, "unauthorized");
        c.check(method, path, &r);
        let r = app
            .request(method, &format!("{concrete}?x=%zz"), Some(&a.token), None)
            .await;
        r.err(400, "bad_request");
        c.check(method, path, &r);
        let r = app
            .request(
                method,
                &format!("{concrete}?phone=%2B19995550100"),
                Some(&a.token),
                bytes.as_deref(),
            )
            .await;
        r.err(403, "forbidden");
        c.check(method, path, &r);
        let r = app.request(method, &concrete, None, Some(&big)).await;
        r.err(413, "payload_too_large");
        c.check(method, path, &r);
    }
    let r = app
        .request("POST", "/register_user", None, Some(&big))
        .await;
    r.err(413, "payload_too_large");
    c.check("POST", "/register_user", &r);

    // ------------------------------------------------------------ requests
    let send = |from: &User, to: &str| json!({"phone1": from.phone, "phone2": to});
    let body = c.req("POST", "/send_request", send(&a, &bu.phone));
    let r = app.post("/send_request", Some(&a.token), &body).await;
    assert_eq!(
        c.check("POST", "/send_request", &r)["message"],
        "Request sent successfully"
    );
    for (body, status, code) in [
        (send(&a, &bu.phone), 409, "already_pending"),
        (send(&a, &a.phone), 400, "self_request"),
        (send(&a, "12"), 400, "invalid_phone"),
        (send(&a, NOBODY), 404, "user_not_found"),
        (
            json!({"phone1": bu.phone, "phone2": cu.phone}),
            403,
            "forbidden",
        ),
        (json!({"phone2": 5}), 400, "bad_request"),
    ] {
        let r = app.post("/send_request", Some(&a.token), &body).await;
        r.err(status, code);
        c.check("POST", "/send_request", &r);
    }
    let r = app.get("/incoming_request", Some(&bu.token)).await;
    let v = c.check("GET", "/incoming_request", &r);
    assert_eq!(v["incoming_request"], json!([a.phone]), "{v}");
    assert_eq!(v["names"], json!({A: "Asha"}), "{v}");

    let body = c.req("POST", "/respond_request", respond(&bu, &a.phone, "accept"));
    let r = app.post("/respond_request", Some(&bu.token), &body).await;
    let v = c.check("POST", "/respond_request", &r);
    let room = v["message"]["chat_id"]
        .as_str()
        .expect("chat_id")
        .to_owned();
    for (body, status, code) in [
        (respond(&bu, &a.phone, "accept"), 404, "request_not_found"),
        (
            json!({"phone1": a.phone, "action": "maybe"}),
            400,
            "bad_request",
        ),
        (
            json!({"phone1": "x", "action": "accept"}),
            400,
            "invalid_phone",
        ),
        (
            json!({"phone1": a.phone, "phone2": cu.phone, "action": "accept"}),
            403,
            "forbidden",
        ),
    ] {
        let r = app.post("/respond_request", Some(&bu.token), &body).await;
        r.err(status, code);
        c.check("POST", "/respond_request", &r);
    }
    // The two share a room now.
    let r = app
        .post("/send_request", Some(&a.token), &send(&a, &bu.phone))
        .await;
    assert_eq!(r.err(409, "room_exists")["chat_id"], room.as_str());
    c.check("POST", "/send_request", &r);
    // A decline, and a crossed request that accepts.
    app.post("/send_request", Some(&cu.token), &send(&cu, &du.phone))
        .await
        .ok();
    let body = c.req(
        "POST",
        "/respond_request",
        respond(&du, &cu.phone, "decline"),
    );
    let r = app.post("/respond_request", Some(&du.token), &body).await;
    assert_eq!(
        c.check("POST", "/respond_request", &r)["message"],
        json!({"accepted": false})
    );
    // The decline's cooldown.
    let r = app
        .post("/send_request", Some(&cu.token), &send(&cu, &du.phone))
        .await;
    r.err(429, "rate_limited");
    c.check("POST", "/send_request", &r);
    app.post("/send_request", Some(&du.token), &send(&du, &cu.phone))
        .await
        .ok();
    let r = app
        .post("/send_request", Some(&cu.token), &send(&cu, &du.phone))
        .await;
    let v = c.check("POST", "/send_request", &r);
    let other_room = v["message"]["chat_id"]
        .as_str()
        .expect("a crossed request accepts")
        .to_owned();

    let cancel = |to: &str| json!({ "phone2": to });
    app.post("/send_request", Some(&a.token), &send(&a, &cu.phone))
        .await
        .ok();
    let body = c.req("POST", "/cancel_request", cancel(&cu.phone));
    let r = app.post("/cancel_request", Some(&a.token), &body).await;
    c.check("POST", "/cancel_request", &r);
    for (body, status, code) in [
        (cancel(&cu.phone), 404, "request_not_found"),
        (json!({"phone2": "x"}), 400, "invalid_phone"),
        (json!({}), 400, "bad_request"),
    ] {
        let r = app.post("/cancel_request", Some(&a.token), &body).await;
        r.err(status, code);
        c.check("POST", "/cancel_request", &r);
    }

    // ------------------------------------------------------------ presence and rooms
    let r = app.get("/online_users?limit=1", Some(&a.token)).await;
    let v = c.check("GET", "/online_users", &r);
    assert!(v["next_cursor"].is_string(), "more than one online: {v}");
    let r = app
        .get("/online_users?cursor=&limit=1000", Some(&a.token))
        .await;
    let v = c.check("GET", "/online_users", &r);
    assert_eq!(v["names"], json!({A: "Asha", B: "Ben"}), "{v}");
    let r = app.get("/online_users?limit=0", Some(&a.token)).await;
    r.err(400, "bad_request");
    c.check("GET", "/online_users", &r);

    for (method, path) in [("POST", "/reconnect"), ("GET", "/active_chatrooms")] {
        let r = if method == "POST" {
            let body = c.req(method, path, json!({"anything": [1]}));
            app.post(path, Some(&a.token), &body).await
        } else {
            app.get(path, Some(&a.token)).await
        };
        let v = c.check(method, path, &r);
        let rooms = v
            .get("chatrooms")
            .or_else(|| v["data"].get("chatrooms"))
            .expect("chatrooms");
        assert_eq!(rooms[0]["chat_id"], room.as_str(), "{v}");
        assert_eq!(v["names"], json!({B: "Ben"}), "{v}");
    }

    let mut ws = app.ws(&a).await;
    ws.say(&room, "hello <b>Ben</b>").await;
    let messages = "/chatrooms/{room_id}/messages";
    let r = app
        .get(
            &format!("/chatrooms/{room}/messages?limit=10"),
            Some(&a.token),
        )
        .await;
    let v = c.check("GET", messages, &r);
    assert_eq!(v["messages"][0]["message"], "hello <b>Ben</b>", "{v}");
    let first = v["messages"][0]["id"].as_str().expect("id").to_owned();
    let r = app
        .get(
            &format!("/chatrooms/{room}/messages?after={first}"),
            Some(&bu.token),
        )
        .await;
    assert_eq!(c.check("GET", messages, &r)["messages"], json!([]));
    for (path, user, status, code) in [
        (
            format!("/chatrooms/{room}/messages?limit=x"),
            &a,
            400,
            "bad_request",
        ),
        (
            format!("/chatrooms/{room}/messages?after=zz"),
            &a,
            400,
            "bad_request",
        ),
        (format!("/chatrooms/{room}/messages"), &cu, 403, "forbidden"),
        (
            format!("/chatrooms/{NO_ROOM}/messages"),
            &a,
            404,
            "room_not_found",
        ),
        (
            "/chatrooms/not-a-uuid/messages".to_owned(),
            &a,
            404,
            "room_not_found",
        ),
    ] {
        let r = app.get(&path, Some(&user.token)).await;
        r.err(status, code);
        c.check("GET", messages, &r);
    }

    // ------------------------------------------------------------ the WebSocket upgrade
    let bearer = format!("Bearer {}", a.token);
    let r = upgrade(addr, &[("Authorization", &bearer)]).await;
    assert_eq!(r.status, 101, "{}", r.text());
    c.check("GET", "/ws", &r);
    let r = upgrade(
        addr,
        &[("Authorization", &bearer), ("Origin", ALLOWED_ORIGIN)],
    )
    .await;
    c.check("GET", "/ws", &r);
    let r = upgrade(addr, &[("Authorization", "Bearer nope")]).await;
    r.err(401, "unauthorized");
    c.check("GET", "/ws", &r);
    let r = upgrade(
        addr,
        &[
            ("Authorization", &bearer),
            ("Origin", "http://elsewhere.example"),
        ],
    )
    .await;
    r.err(403, "forbidden");
    c.check("GET", "/ws", &r);
    let r = app.get("/ws", Some(&a.token)).await;
    r.err(400, "bad_request");
    c.check("GET", "/ws", &r);
    let r = app.post("/ws_ticket", Some(&a.token), &json!({})).await;
    let ticket = c.check("POST", "/ws_ticket", &r)["ticket"]
        .as_str()
        .expect("ticket")
        .to_owned();
    let r = upgrade(addr, &[]).await;
    r.err(401, "unauthorized");
    c.check("GET", "/ws", &r);
    let r = http::request(
        addr,
        "GET",
        &format!("/ws?ticket={ticket}"),
        &[
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ],
        None,
    )
    .await;
    assert_eq!(r.status, 101, "a ticket opens a socket: {}", r.text());
    c.check("GET", "/ws", &r);

    // ------------------------------------------------------------ pages
    for (template, live, gone) in [
        (
            "/chatroom",
            format!("/chatroom?room_id={other_room}"),
            format!("/chatroom?room_id={NO_ROOM}"),
        ),
        (
            "/chatroom/{room_id}",
            format!("/chatroom/{other_room}"),
            format!("/chatroom/{NO_ROOM}"),
        ),
    ] {
        for (path, status) in [(live, 200), (gone, 404)] {
            let r = app.get(&path, None).await;
            assert_eq!(r.status, status, "GET {path}");
            c.check("GET", template, &r);
            let r = head(addr, &path).await;
            assert_eq!(r.status, status, "HEAD {path}");
            c.check("HEAD", template, &r);
        }
    }
    let r = app.get("/chatroom", None).await;
    assert_eq!(r.status, 404, "no room id: the not-found page");
    c.check("GET", "/chatroom", &r);
    for (path, status) in [("/static/common.js", 200), ("/static/nope.js", 404)] {
        let r = app.get(path, None).await;
        assert_eq!(r.status, status, "GET {path}");
        c.check("GET", "/static/{name}", &r);
        let r = head(addr, path).await;
        assert_eq!(r.status, status, "HEAD {path}");
        c.check("HEAD", "/static/{name}", &r);
    }

    // ------------------------------------------------------------ closing a room
    let close = |chat_id: &str| json!({ "chat_id": chat_id });
    for (user, body, status, code) in [
        (&cu, close(&room), 403, "forbidden"),
        (&a, json!({"chat_id": 5}), 400, "bad_request"),
        (&a, close(NO_ROOM), 404, "room_not_found"),
    ] {
        let r = app.post("/close_room", Some(&user.token), &body).await;
        r.err(status, code);
        c.check("POST", "/close_room", &r);
    }
    let body = c.req("POST", "/close_room", close(&room));
    let r = app.post("/close_room", Some(&a.token), &body).await;
    c.check("POST", "/close_room", &r);
    ws.close().await;

    // ------------------------------------------------------------ unknown routes, methods
    let r = app.get("/no-such-route", None).await;
    r.err(404, "not_found");
    c.check_generic("NotFound", &r);
    let paths: Vec<(String, Vec<String>)> = c.doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .map(|(p, item)| {
            let methods = item.as_object().expect("item").keys().cloned().collect();
            (p.clone(), methods)
        })
        .collect();
    for (path, methods) in paths {
        let concrete = path
            .replace("{room_id}", NO_ROOM)
            .replace("{name}", "common.js");
        for method in ["GET", "POST", "PUT", "DELETE", "PATCH"] {
            if methods.contains(&method.to_ascii_lowercase()) {
                continue;
            }
            let r = app.request(method, &concrete, Some(&a.token), None).await;
            r.err(405, "method_not_allowed");
            c.check_generic("MethodNotAllowed", &r);
            let allow: Vec<String> = methods.iter().map(|m| m.to_ascii_uppercase()).collect();
            assert_eq!(
                r.header("allow"),
                Some(allow.join(", ").as_str()),
                "{method} {path}"
            );
        }
    }

    // ------------------------------------------------------------ blocking
    for path in ["/block", "/unblock"] {
        let body = c.req("POST", path, json!({ "phone": NOBODY }));
        let r = app.post(path, Some(&du.token), &body).await;
        c.check("POST", path, &r);
        for (body, code) in [
            (json!({ "phone": du.phone }), "bad_request"),
            (json!({ "phone": "x" }), "invalid_phone"),
        ] {
            let r = app.post(path, Some(&du.token), &body).await;
            r.err(400, code);
            c.check("POST", path, &r);
        }
    }
    // The contract's most blocked phones per session, then one more.
    for i in 0..1000 {
        app.post(
            "/block",
            Some(&du.token),
            &json!({ "phone": format!("+1212{i:07}") }),
        )
        .await
        .ok();
    }
    let r = app
        .post("/block", Some(&du.token), &json!({ "phone": NOBODY }))
        .await;
    r.err(409, "too_many_blocked");
    c.check("POST", "/block", &r);
    let r = app.get("/blocked", Some(&du.token)).await;
    let v = c.check("GET", "/blocked", &r);
    assert_eq!(v["blocked"].as_array().map(Vec::len), Some(1000));

    // ------------------------------------------------------------ the rate limit, last
    let mut limited = None;
    for _ in 0..60 {
        let r = app
            .post("/register_user", None, &json!({"phone": "1"}))
            .await;
        if r.status == 429 {
            limited = Some(r);
            break;
        }
    }
    let r = limited.expect("12 registrations a minute run out within 60 attempts");
    r.err(429, "rate_limited");
    c.check("POST", "/register_user", &r);

    let unseen = c.unseen(|status| status != "503");
    assert!(
        unseen.is_empty(),
        "documented answers no request of this test produced: {unseen:#?}"
    );
}

/// Every documented 503: the store (Redis) killed, each operation that needs it answers 503
/// `store_unavailable` in the documented shape.
#[tokio::test]
async fn store_down_answers_match_the_document() {
    bounded(async {
        let app = App::start(Backend::Redis, &[]).await;
        let a = app.register(A).await;
        app.redis().kill();
        let mut c = Contract::new();
        let addr = app.addr;
        let bearer = format!("Bearer {}", a.token);

        // (method, path as documented, path, body)
        let mut calls: Vec<(&str, &str, String, Option<Vec<u8>>)> = token_routes(NO_ROOM)
            .into_iter()
            .map(|(m, p, concrete, body)| (m, p, concrete, body.map(|b| b.to_string().into())))
            .collect();
        let register = json!({ "phone": B }).to_string().into_bytes();
        calls.push((
            "POST",
            "/register_user",
            "/register_user".into(),
            Some(register),
        ));
        calls.push(("GET", "/ws", "/ws".into(), None));
        for (template, path) in [
            ("/readyz", "/readyz".to_owned()),
            ("/chatroom", format!("/chatroom?room_id={NO_ROOM}")),
            ("/chatroom/{room_id}", format!("/chatroom/{NO_ROOM}")),
        ] {
            calls.push(("GET", template, path.clone(), None));
            calls.push(("HEAD", template, path, None));
        }
        // Together: each may take the store deadline (2 s).
        let (app, token, bearer) = (&app, a.token.as_str(), bearer.as_str());
        let answers = join_all(
            calls
                .iter()
                .map(|(method, template, path, body)| async move {
                    match (*method, *template) {
                        ("HEAD", _) => head(addr, path).await,
                        (_, "/ws") => upgrade(addr, &[("Authorization", bearer)]).await,
                        _ => {
                            app.request(method, path, Some(token), body.as_deref())
                                .await
                        }
                    }
                }),
        );
        let answers = tokio::time::timeout(Duration::from_secs(20), answers)
            .await
            .expect("every call answers within the store deadline");
        let what = calls.iter().map(|(m, p, ..)| (*m, (*p).to_owned()));
        for ((method, path), r) in what.into_iter().zip(answers) {
            assert_eq!(r.status, 503, "{method} {path}: {}", r.text());
            let v = c.check(method, &path, &r);
            if method != "HEAD" {
                assert_eq!(v["code"], "store_unavailable", "{method} {path}: {v}");
            }
        }
        let unseen = c.unseen(|status| status == "503");
        assert!(
            unseen.is_empty(),
            "documented 503s this test did not produce: {unseen:#?}"
        );
    })
    .await
}
