//! The WebSocket upgrade as the HTTP side does it: 101 with the right accept key, the socket
//! handed to the hub, counted as an open connection of its address, and closed with 1001 at
//! shutdown. Frames are read raw (the server's are unmasked), enough for these checks.

#![allow(clippy::unwrap_used)] // helpers too (clippy.toml covers #[test] fns only)

mod support;

use std::time::Duration;

use chat_http::HttpConfig;
use support::TestServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const A: &str = "+14155550100";
/// The sample key of RFC 6455 §1.3 and its accept value.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// Opens a socket for `token`; returns the stream and the response head.
async fn open(s: &TestServer, token: &str) -> (TcpStream, String) {
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    let req = format!(
        "GET /ws?token={token} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\nOrigin: http://t\r\n\r\n"
    );
    c.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        c.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    (c, String::from_utf8(head).unwrap())
}

/// Reads one server frame: (opcode, payload).
async fn frame(c: &mut TcpStream) -> (u8, Vec<u8>) {
    let read = async {
        let mut h = [0u8; 2];
        c.read_exact(&mut h).await.unwrap();
        assert_eq!(h[1] & 0x80, 0, "server frames are not masked");
        let len = match h[1] & 0x7f {
            126 => u64::from(c.read_u16().await.unwrap()),
            127 => c.read_u64().await.unwrap(),
            n => u64::from(n),
        };
        let mut payload = vec![0u8; usize::try_from(len).unwrap()];
        c.read_exact(&mut payload).await.unwrap();
        (h[0] & 0x0f, payload)
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("a frame within 10 s")
}

#[tokio::test]
async fn upgrade_serves_the_socket_and_shutdown_closes_it_with_1001() {
    let mut s = TestServer::start().await;
    let a = s.register(A).await;
    let (mut c, head) = open(&s, &a).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains("upgrade: websocket"), "{head}");
    assert!(
        head.contains(&format!("sec-websocket-accept: {ACCEPT}")),
        "{head}"
    );

    let (op, payload) = frame(&mut c).await;
    assert_eq!(op, 1, "a text frame");
    let event: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(event["event"], "connection_status");
    assert_eq!(event["data"]["phone"], A);

    s.stop();
    loop {
        let (op, payload) = frame(&mut c).await;
        if op == 8 {
            assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1001);
            // Answer the close (masked, with a zero mask) as a client does.
            c.write_all(&[0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe9])
                .await
                .unwrap();
            break;
        }
    }
    let task = s.task.take().unwrap();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("serve returned")
        .unwrap();
}

#[tokio::test]
async fn an_upgraded_socket_still_counts_as_an_open_connection() {
    let s = TestServer::with(HttpConfig {
        max_connections_per_address: 1,
        registrations_per_min: 100,
        ..HttpConfig::default()
    })
    .await;
    let a = s.register(A).await;
    let (mut c, head) = open(&s, &a).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    frame(&mut c).await;

    let mut other = TcpStream::connect(s.addr).await.unwrap();
    let _ = other
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .await;
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), other.read_to_end(&mut buf))
        .await
        .expect("closed at once");
    assert!(read.is_err() || buf.is_empty(), "answered: {buf:?}");
}
