//! Real sockets: a loopback listener that answers the upgrade by hand (with `Hub::accept_key`)
//! and hands the TCP stream to `Hub::serve`, and tokio-tungstenite clients.

#![allow(clippy::unwrap_used)] // helpers too (clippy.toml covers #[test] fns only)

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chat_core::{ChatService, Config, MemoryStore, NodeId, RoomId, SystemClock};
use chat_ws::{Hub, WsConfig};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const WAIT: Duration = Duration::from_secs(10);

/// Reads an upgrade request, answers 101, and serves the socket.
async fn upgrade(mut tcp: TcpStream, service: ChatService, hub: Hub) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    // The client sends nothing after its request until it has the 101, so reading up to the
    // blank line takes no WebSocket bytes.
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tcp.read(&mut buf).await.unwrap();
        assert!(n > 0 && head.len() < 16 * 1024, "incomplete request");
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8(head).unwrap();
    let target = head.split(' ').nth(1).unwrap();
    let token = target.split_once("token=").unwrap().1;
    let key = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("sec-websocket-key")
                .then(|| value.trim())
        })
        .unwrap();
    let accept = Hub::accept_key(key).expect("a valid key");
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

struct Server {
    addr: SocketAddr,
    service: ChatService,
    hub: Hub,
}

async fn server() -> Server {
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
    Server { addr, service, hub }
}

impl Server {
    async fn client(&self, token: &str) -> Ws {
        let tcp = TcpStream::connect(self.addr).await.unwrap();
        let url = format!("ws://{}/ws?token={token}", self.addr);
        let (mut ws, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(tcp))
            .await
            .unwrap();
        let hello = next_json(&mut ws).await;
        assert_eq!(hello["event"], "connection_status");
        assert_eq!(hello["data"]["status"], "connected");
        ws
    }
}

async fn next_json(ws: &mut Ws) -> Value {
    loop {
        let m = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame in time")
            .expect("socket open")
            .unwrap();
        match m {
            Message::Text(t) => return serde_json::from_str(&t).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected text, got {other:?}"),
        }
    }
}

async fn close_code(ws: &mut Ws) -> CloseCode {
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame in time")
        {
            Some(Ok(Message::Close(Some(frame)))) => return frame.code,
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).await.unwrap();
}

#[tokio::test]
async fn join_send_and_leave_over_real_sockets() {
    let s = server().await;
    let a = s
        .service
        .register("+14155550100", None, None)
        .await
        .unwrap();
    let b = s
        .service
        .register("+14155550101", None, None)
        .await
        .unwrap();
    s.service
        .send_request(&a.session.phone, b.session.phone.as_str())
        .await
        .unwrap();
    let room: RoomId = s
        .service
        .respond_request(
            &b.session.phone,
            a.session.phone.as_str(),
            chat_core::Answer::Accept,
        )
        .await
        .unwrap()
        .unwrap();
    let r = room.to_string();

    let mut ca = s.client(a.token.as_str()).await;
    let mut cb = s.client(b.token.as_str()).await;
    assert_eq!(s.hub.connections(), 2);
    assert_eq!(s.service.metrics().connections.load(Ordering::Relaxed), 2);

    send(
        &mut ca,
        json!({"event": "join_room", "data": {"room": r}, "ack": 1}),
    )
    .await;
    assert_eq!(
        next_json(&mut ca).await,
        json!({"event": "room_history", "ack": 1, "data": {
            "room": r, "messages": [], "more": false,
            "read": {a.session.phone.as_str(): null, b.session.phone.as_str(): null},
        }})
    );
    let a_joined = json!({"event": "user_joined", "data": {"room": r, "user": a.session.phone.as_str(), "names": {}}});
    assert_eq!(next_json(&mut ca).await, a_joined);

    send(
        &mut cb,
        json!({"event": "join_room", "data": {"room": r, "phone": b.session.phone.as_str()}, "ack": "j"}),
    )
    .await;
    let v = next_json(&mut cb).await;
    assert_eq!(
        (v["event"].as_str(), v["ack"].as_str()),
        (Some("room_history"), Some("j"))
    );
    let b_joined = json!({"event": "user_joined", "data": {"room": r, "user": b.session.phone.as_str(), "names": {}}});
    assert_eq!(next_json(&mut cb).await, b_joined);
    assert_eq!(next_json(&mut ca).await, b_joined);

    send(
        &mut ca,
        json!({"event": "send_message", "data": {"room": r, "message": "héllo 👋"}, "ack": 2}),
    )
    .await;
    let first = next_json(&mut ca).await;
    let second = next_json(&mut ca).await;
    let (ack, echo) = if first["event"] == "ack" {
        (first, second)
    } else {
        (second, first)
    };
    assert_eq!(ack["ack"], 2);
    assert_eq!(echo["event"], "receive_message");
    assert_eq!(ack["data"], echo["data"]);
    let m = &echo["data"];
    assert_eq!(m["room"], r.as_str());
    assert_eq!(m["sender"], a.session.phone.as_str());
    assert_eq!(m["message"], "héllo 👋");
    assert_eq!(m["client_id"], Value::Null);
    assert_eq!(next_json(&mut cb).await, echo);

    send(
        &mut cb,
        json!({"event": "leave_room", "data": {"room": r}, "ack": 3}),
    )
    .await;
    assert_eq!(
        next_json(&mut cb).await,
        json!({"event": "ack", "ack": 3, "data": {}})
    );
    assert_eq!(
        next_json(&mut ca).await,
        json!({"event": "user_left", "data": {"room": r, "user": b.session.phone.as_str()}})
    );

    // A rejoin with `since` gets exactly what it missed.
    send(
        &mut ca,
        json!({"event": "send_message", "data": {"room": r, "message": "missed"}}),
    )
    .await;
    assert_eq!(next_json(&mut ca).await["data"]["message"], "missed");
    send(
        &mut cb,
        json!({"event": "join_room", "data": {"room": r, "since": m["id"]}}),
    )
    .await;
    let v = next_json(&mut cb).await;
    assert_eq!(v["data"]["messages"].as_array().unwrap().len(), 1);
    assert_eq!(v["data"]["messages"][0]["message"], "missed");

    // Closing a socket makes it leave its rooms.
    ca.close(None).await.unwrap();
    assert_eq!(next_json(&mut cb).await, b_joined);
    assert_eq!(
        next_json(&mut cb).await,
        json!({"event": "user_left", "data": {"room": r, "user": a.session.phone.as_str()}})
    );

    // Shutdown says 1001 and waits for the sockets.
    s.hub.shutdown();
    assert_eq!(close_code(&mut cb).await, CloseCode::Away);
    drop(cb);
    tokio::time::timeout(WAIT, s.hub.closed()).await.unwrap();
    assert_eq!(s.hub.connections(), 0);
    assert_eq!(s.service.metrics().connections.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn bad_frames_close_with_their_codes_over_real_sockets() {
    let s = server().await;
    let a = s
        .service
        .register("+14155550100", None, None)
        .await
        .unwrap();

    // Over max_frame_bytes: 1009, without the server reading it all into memory first.
    let mut c = s.client(a.token.as_str()).await;
    let big = format!(r#"{{"event":"ping","pad":"{}"}}"#, "x".repeat(70_000));
    // The server may close before the client finishes writing; only the close code matters.
    let _ = c.send(Message::text(big)).await;
    assert_eq!(close_code(&mut c).await, CloseCode::Size);
    drop(c);

    // Just under the limit is fine.
    let mut c = s.client(a.token.as_str()).await;
    let fits = format!(
        r#"{{"event":"ping","ack":1,"pad":"{}"}}"#,
        "x".repeat(65_000)
    );
    c.send(Message::text(fits)).await.unwrap();
    assert_eq!(next_json(&mut c).await["event"], "pong");

    // Binary: 1003.
    c.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    assert_eq!(close_code(&mut c).await, CloseCode::Unsupported);
    drop(c);

    // Text that is not UTF-8: 1007.
    let mut c = s.client(a.token.as_str()).await;
    c.send(Message::Frame(Frame::message(
        vec![b'{', 0xff, 0xfe, b'}'],
        OpCode::Data(Data::Text),
        true,
    )))
    .await
    .unwrap();
    assert_eq!(close_code(&mut c).await, CloseCode::Invalid);
    drop(c);

    // A bad JSON frame is only an error.
    let mut c = s.client(a.token.as_str()).await;
    c.send(Message::text("{not json")).await.unwrap();
    let v = next_json(&mut c).await;
    assert_eq!(v["data"]["code"], "bad_request");
    c.send(Message::text(r#"{"event":"ping","ack":"still"}"#))
        .await
        .unwrap();
    assert_eq!(
        next_json(&mut c).await,
        json!({"event": "pong", "ack": "still", "data": {}})
    );
    drop(c);

    // Every closed socket was cleaned up: after a shutdown, nothing is left to close.
    s.hub.shutdown();
    tokio::time::timeout(WAIT, s.hub.closed())
        .await
        .expect("all sockets cleaned up");
    assert_eq!(s.hub.connections(), 0);
}

/// The server writes its frames straight into a write-coalescing buffer, tungstenite only its
/// own (pongs, pings, the close): a frame far larger than that buffer, a burst of small ones
/// and pongs to the client's pings must all arrive whole and in order.
#[tokio::test]
async fn large_and_small_frames_and_pongs_arrive_whole_over_real_sockets() {
    let s = server().await;
    let a = s
        .service
        .register("+14155550100", None, None)
        .await
        .unwrap();
    let b = s
        .service
        .register("+14155550101", None, None)
        .await
        .unwrap();
    s.service
        .send_request(&a.session.phone, b.session.phone.as_str())
        .await
        .unwrap();
    let room = s
        .service
        .respond_request(
            &b.session.phone,
            a.session.phone.as_str(),
            chat_core::Answer::Accept,
        )
        .await
        .unwrap()
        .unwrap();
    // 50 messages of 4000 characters, escaped to 6 bytes each: a ~1.2 MB room_history.
    let long: String = "\u{1}".repeat(4000);
    for _ in 0..50 {
        s.service
            .send_message(&a.session.phone, &room.to_string(), long.clone(), None)
            .await
            .unwrap();
    }
    let mut c = s.client(b.token.as_str()).await;
    send(
        &mut c,
        json!({"event": "join_room", "data": {"room": room.to_string()}, "ack": "j"}),
    )
    .await;
    // Pings and small frames while the large one is being written.
    for i in 0..20 {
        c.send(Message::Ping(vec![i].into())).await.unwrap();
        send(&mut c, json!({"event": "ping", "ack": i})).await;
    }
    let mut pongs = Vec::new();
    let mut acks = Vec::new();
    let mut history = None;
    while pongs.len() < 20 || acks.len() < 20 || history.is_none() {
        let m = tokio::time::timeout(WAIT, c.next())
            .await
            .expect("a frame in time")
            .expect("socket open")
            .unwrap();
        match m {
            Message::Pong(p) => pongs.push(p[0]),
            Message::Text(t) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                match v["event"].as_str().unwrap() {
                    "room_history" => history = Some(v),
                    "pong" => acks.push(v["ack"].as_u64().unwrap()),
                    "user_joined" => {}
                    other => panic!("unexpected {other}"),
                }
            }
            Message::Ping(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    let history = history.unwrap();
    let messages = history["data"]["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 50);
    assert!(messages.iter().all(|m| m["message"] == long.as_str()));
    assert_eq!(pongs, (0..20).collect::<Vec<u8>>());
    assert_eq!(acks, (0..20).collect::<Vec<u64>>());
    s.hub.shutdown();
    assert_eq!(close_code(&mut c).await, CloseCode::Away);
}
