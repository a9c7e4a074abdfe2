//! Pages, operations endpoints, the WebSocket upgrade checks and connection handling, over
//! real HTTP.

#![allow(clippy::unwrap_used)] // helpers too (clippy.toml covers #[test] fns only)

mod support;

use std::time::{Duration, Instant};

use chat_http::HttpConfig;
use serde_json::json;
use support::{TestServer, parse_reply, read_reply};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

const A: &str = "+14155550100";
const B: &str = "+14155550101";

#[tokio::test]
async fn health_and_readiness() {
    let s = TestServer::start().await;
    let r = s.call("GET", "/healthz", None, None).await;
    assert_eq!(r.json, json!({"success": true, "status": "ok"}));
    let r = s.call("GET", "/readyz", None, None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json, json!({"success": true, "store": "ok"}));
}

#[tokio::test]
async fn pages_carry_the_csp() {
    let s = TestServer::start().await;
    let r = s.call("GET", "/", None, None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(r.header("content-security-policy"), Some(CSP));
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert!(r.text.contains("/static/home.js"));

    for (name, ct) in [
        ("common.js", "text/javascript; charset=utf-8"),
        ("home.js", "text/javascript; charset=utf-8"),
        ("chatroom.js", "text/javascript; charset=utf-8"),
        ("style.css", "text/css; charset=utf-8"),
    ] {
        let r = s.call("GET", &format!("/static/{name}"), None, None).await;
        assert_eq!(r.status, 200, "{name}");
        assert_eq!(r.header("content-type"), Some(ct), "{name}");
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
        assert!(!r.text.is_empty());
    }
    // HEAD: the headers without a body.
    let r = s.call("HEAD", "/static/style.css", None, None).await;
    assert_eq!(r.status, 200);
    assert!(r.text.is_empty());
}

#[tokio::test]
async fn chatroom_page_only_for_live_rooms() {
    let s = TestServer::start().await;
    let a = s.register(A).await;
    let b = s.register(B).await;
    s.call(
        "POST",
        "/send_request",
        Some(&a),
        Some(&json!({"phone2": B}).to_string()),
    )
    .await;
    let r = s
        .call(
            "POST",
            "/respond_request",
            Some(&b),
            Some(&json!({"phone1": A, "action": "accept"}).to_string()),
        )
        .await;
    let room = r.json["message"]["chat_id"].as_str().unwrap().to_owned();

    for path in [
        format!("/chatroom/{room}"),
        format!("/chatroom?room_id={room}"),
        format!("/chatroom/{room}/"),
    ] {
        let r = s.call("GET", &path, None, None).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.header("content-security-policy"), Some(CSP));
        assert!(r.text.contains("/static/chatroom.js"), "{path}");
    }
    let missing = uuid::Uuid::new_v4();
    for path in [
        format!("/chatroom/{missing}"),
        "/chatroom/not-a-uuid".to_owned(),
        "/chatroom".to_owned(),
        "/chatroom?room_id=".to_owned(),
    ] {
        let r = s.call("GET", &path, None, None).await;
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
        assert_eq!(r.header("content-security-policy"), Some(CSP));
        assert!(r.text.contains("Not found"), "{path}");
    }
}

#[tokio::test]
async fn metrics_are_prometheus_text_by_route_pattern() {
    let s = TestServer::start().await;
    let a = s.register(A).await;
    s.call(
        "GET",
        &format!("/chatrooms/{}/messages", uuid::Uuid::new_v4()),
        Some(&a),
        None,
    )
    .await;
    s.call("GET", "/nope/1", None, None).await;
    s.call("GET", "/nope/2", None, None).await;
    let r = s.call("GET", "/metrics", None, None).await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/plain"));
    let text = &r.text;
    for family in [
        "# TYPE chat_connections gauge",
        "# TYPE chat_messages_total counter",
        "# TYPE chat_http_requests_total counter",
        "# TYPE chat_store_errors_total counter",
        "# TYPE chat_store_latency_seconds histogram",
        "# TYPE chat_slow_consumers_closed_total counter",
        "chat_store_latency_seconds_bucket{op=\"",
        "le=\"+Inf\"}",
        "chat_store_latency_seconds_count{op=\"",
    ] {
        assert!(text.contains(family), "{family} missing from\n{text}");
    }
    assert!(text.contains("chat_http_requests_total{route=\"/register_user\",status=\"200\"} 1\n"));
    assert!(text.contains(
        "chat_http_requests_total{route=\"/chatrooms/{room_id}/messages\",status=\"404\"} 1\n"
    ));
    assert!(text.contains("chat_http_requests_total{route=\"unmatched\",status=\"404\"} 2\n"));
    assert!(!text.contains("/nope"));
}

#[tokio::test]
async fn websocket_upgrade_checks() {
    let s = TestServer::with(HttpConfig {
        allowed_origins: Some(vec!["http://good.example".into()]),
        ..HttpConfig::default()
    })
    .await;
    let a = s.register(A).await;
    let upgrade = |extra: &[(&str, &str)]| {
        let mut h: Vec<(String, String)> = vec![
            ("Upgrade".into(), "websocket".into()),
            ("Connection".into(), "Upgrade".into()),
            ("Sec-WebSocket-Version".into(), "13".into()),
        ];
        h.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        h
    };
    // Not an upgrade.
    let r = s.call("GET", "/ws", Some(&a), None).await;
    assert_eq!((r.status, r.code()), (400, "bad_request"));
    // No token, bad token (header or query).
    let key = ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==");
    let r = s.raw("GET", "/ws", &upgrade(&[key]), None).await;
    assert_eq!((r.status, r.code()), (401, "unauthorized"));
    let r = s
        .raw(
            "GET",
            &format!("/ws?token={}", "f".repeat(64)),
            &upgrade(&[key]),
            None,
        )
        .await;
    assert_eq!((r.status, r.code()), (401, "unauthorized"));
    let auth = format!("Bearer {}", "0".repeat(64));
    let r = s
        .raw(
            "GET",
            "/ws",
            &upgrade(&[key, ("Authorization", &auth)]),
            None,
        )
        .await;
    assert_eq!((r.status, r.code()), (401, "unauthorized"));
    // A good token from a foreign origin.
    let r = s
        .raw(
            "GET",
            &format!("/ws?token={a}"),
            &upgrade(&[key, ("Origin", "http://evil.example")]),
            None,
        )
        .await;
    assert_eq!((r.status, r.code()), (403, "forbidden"));
    // A good token with a bad key.
    let r = s
        .raw(
            "GET",
            &format!("/ws?token={a}"),
            &upgrade(&[("Sec-WebSocket-Key", "short")]),
            None,
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "bad_request"));
    let r = s
        .raw("GET", &format!("/ws?token={a}"), &upgrade(&[]), None)
        .await;
    assert_eq!((r.status, r.code()), (400, "bad_request"));
}

#[tokio::test]
async fn header_timeout_closes_idle_and_slow_connections() {
    let s = TestServer::with(HttpConfig {
        header_timeout: Duration::from_millis(500),
        ..HttpConfig::default()
    })
    .await;
    // Silent from the start.
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut buf))
        .await
        .expect("closed within 5 s")
        .ok();
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert!(
        buf.is_empty() || buf.starts_with(b"HTTP/1.1 408"),
        "{buf:?}"
    );

    // Headers that never finish.
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut buf))
        .await
        .expect("closed within 5 s")
        .ok();
    assert!(!buf.starts_with(b"HTTP/1.1 200"));

    // Idle after a response on a kept-alive connection.
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut buf))
        .await
        .expect("closed within 5 s")
        .ok();
    let r = parse_reply(&buf).unwrap();
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn connections_per_address_are_capped() {
    let s = TestServer::with(HttpConfig {
        max_connections_per_address: 2,
        ..HttpConfig::default()
    })
    .await;
    let mut first = TcpStream::connect(s.addr).await.unwrap();
    let _second = TcpStream::connect(s.addr).await.unwrap();
    // Make sure the server has accepted both before the third arrives.
    first
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let n = first.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));

    let mut third = TcpStream::connect(s.addr).await.unwrap();
    let _ = third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), third.read_to_end(&mut buf))
        .await
        .expect("closed at once");
    assert!(read.is_err() || buf.is_empty(), "answered: {buf:?}");

    // Once one closes, a new one is served.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut c = TcpStream::connect(s.addr).await.unwrap();
        let _ = c
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await;
        let mut buf = Vec::new();
        let _ = c.read_to_end(&mut buf).await;
        if buf.starts_with(b"HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "never served again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn shutdown_finishes_in_flight_requests_then_stops() {
    let mut s = TestServer::start().await;
    let body = json!({"phone": A}).to_string();
    // A request in flight when the shutdown starts: `100 Continue` tells that the server is
    // reading its body; the body follows only after the shutdown began.
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    let head = format!(
        "POST /register_user HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    c.write_all(head.as_bytes()).await.unwrap();
    let mut interim = Vec::new();
    while !interim.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        c.read_exact(&mut byte).await.unwrap();
        interim.push(byte[0]);
    }
    assert!(interim.starts_with(b"HTTP/1.1 100"), "{interim:?}");
    s.stop();
    c.write_all(body.as_bytes()).await.unwrap();
    let r = read_reply(&mut c).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["phone"], A);

    let task = s.task.take().unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("serve returned")
        .unwrap();
    assert!(TcpStream::connect(s.addr).await.is_err());
}
