//! What an idle socket costs: opens many real sockets in this process and reads the resident
//! set size before and after. Ignored by default (it takes a few seconds and wants a release
//! build to mean anything):
//!
//! ```text
//! cargo test -p chat-ws --release --test memory -- --ignored --nocapture
//! ```
//!
//! The clients are bare TCP streams that did the upgrade by hand, so nearly all of the growth
//! is the server's: its task, tungstenite state and buffers, queue and registry entries, and
//! tokio's per-socket I/O registration.

#![allow(clippy::unwrap_used)] // helpers too (clippy.toml covers #[test] fns only)

use std::sync::Arc;
use std::time::Duration;

use chat_core::{ChatService, Config, MemoryStore, NodeId, SystemClock};
use chat_ws::{Hub, WsConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Sockets opened; two file descriptors each in this process.
const SOCKETS: usize = 4000;

fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

async fn read_until(tcp: &mut TcpStream, done: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    while !done(&got) {
        let n = tcp.read(&mut buf).await.unwrap();
        assert!(n > 0, "connection closed early");
        got.extend_from_slice(&buf[..n]);
    }
    got
}

fn head_done(b: &[u8]) -> bool {
    b.windows(4).any(|w| w == b"\r\n\r\n")
}

async fn upgrade(mut tcp: TcpStream, service: ChatService, hub: Hub) {
    let head = String::from_utf8(read_until(&mut tcp, head_done).await).unwrap();
    let token = head
        .split(' ')
        .nth(1)
        .unwrap()
        .split_once("token=")
        .unwrap()
        .1;
    let key = head
        .lines()
        .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
        .unwrap();
    let accept = Hub::accept_key(key).unwrap();
    let session = service.authenticate_socket(token).await.unwrap();
    tcp.write_all(
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {accept}\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    hub.serve(tcp, session).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measures memory; run in release with --ignored"]
async fn idle_socket_memory() {
    let store = MemoryStore::new();
    let service = ChatService::new(
        Arc::new(store.clone()),
        Arc::new(store),
        Arc::new(SystemClock),
        Config::default(),
        NodeId::random(),
    );
    let hub = Hub::new(service.clone(), WsConfig::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (s, h) = (service.clone(), hub.clone());
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            tokio::spawn(upgrade(tcp, s.clone(), h.clone()));
        }
    });

    let mut tokens = Vec::with_capacity(SOCKETS);
    for i in 0..SOCKETS {
        let phone = format!("+1555{i:07}");
        let reg = service.register(&phone, None, None).await.unwrap();
        tokens.push(reg.token.as_str().to_owned());
    }
    // Warm up allocator arenas and tokio's I/O slabs with a first batch, then measure.
    let mut clients = Vec::with_capacity(SOCKETS);
    let mut before = 0;
    for (i, token) in tokens.iter().enumerate() {
        if i == SOCKETS / 4 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            before = rss_bytes();
        }
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(
            format!(
                "GET /ws?token={token} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        // The 101, then the connection_status frame (it ends with `}}`).
        read_until(&mut tcp, |b| head_done(b) && b.ends_with(b"}}")).await;
        clients.push(tcp);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = rss_bytes();
    // The socket task's own size (its future, before any boxed work).
    let probe = hub.serve(
        tokio::io::duplex(64).0,
        service.authenticate_socket(&tokens[0]).await.unwrap(),
    );
    println!("serve future: {} bytes", std::mem::size_of_val(&probe));
    drop(probe);
    let measured = SOCKETS - SOCKETS / 4;
    let per_socket = after.saturating_sub(before) / measured;
    println!(
        "{} open sockets; {measured} measured: {} KiB of RSS, {per_socket} bytes per socket \
         (client side included)",
        hub.connections(),
        after.saturating_sub(before) / 1024
    );
    assert_eq!(hub.connections(), SOCKETS);
    assert!(
        per_socket <= 12 * 1024,
        "{per_socket} bytes per idle socket"
    );
    hub.shutdown();
    drop(clients);
    tokio::time::timeout(Duration::from_secs(30), hub.closed())
        .await
        .unwrap();
}
