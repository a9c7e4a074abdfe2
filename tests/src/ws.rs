//! WebSocket clients: [`Ws`], a well-behaved client over tokio-tungstenite (it answers pings
//! whenever it reads), and [`RawWs`], a hand-rolled one that does exactly what the test says and
//! nothing else (never answers pings, sends invalid UTF-8, reads only when asked).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::ClientRequestBuilder;
use tokio_tungstenite::tungstenite::http::Uri;
use tokio_tungstenite::tungstenite::{self, Message};

/// How long a test waits for an event it expects.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(5);
/// How many received frames a client keeps for failure messages.
const LOG_FRAMES: usize = 300;

/// How a client authenticates at the upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// `Authorization: Bearer <token>`.
    Header,
    /// `/ws?token=<token>`.
    Query,
    /// `/ws?ticket=<ticket>` (the `token` argument is the ticket).
    Ticket,
}

/// What happened next on a socket.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// A JSON text frame.
    Event(Value),
    /// The server closed (close code and reason, if it sent a close frame), or the connection ended.
    Closed(Option<(u16, String)>),
    /// Nothing within the wait.
    Timeout,
}

/// A tokio-tungstenite client with an event backlog: frames that a wait skips are kept, in order,
/// for later waits.
pub struct Ws {
    stream: WebSocketStream<TcpStream>,
    backlog: VecDeque<Value>,
    log: VecDeque<String>,
    closed: Option<Option<(u16, String)>>,
    next_ack: u64,
    /// The phone this socket belongs to (for messages).
    pub phone: String,
}

impl std::fmt::Debug for Ws {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ws").field("phone", &self.phone).finish()
    }
}

/// An upgrade the server refused.
#[derive(Debug)]
pub struct Refused {
    /// The HTTP status it answered.
    pub status: u16,
    /// Its body.
    pub body: String,
}

impl Ws {
    /// Opens `/ws` with `token` (and extra headers); does not read anything yet.
    pub async fn open(
        addr: SocketAddr,
        token: &str,
        auth: Auth,
        extra: &[(&str, &str)],
    ) -> Result<Ws, Refused> {
        let uri: Uri = match auth {
            Auth::Header => format!("ws://{addr}/ws"),
            Auth::Query => format!("ws://{addr}/ws?token={token}"),
            Auth::Ticket => format!("ws://{addr}/ws?ticket={token}"),
        }
        .parse()
        .expect("ws uri");
        let mut req = ClientRequestBuilder::new(uri);
        if auth == Auth::Header {
            req = req.with_header("Authorization", format!("Bearer {token}"));
        }
        for (k, v) in extra {
            req = req.with_header(*k, *v);
        }
        let tcp = TcpStream::connect(addr).await.expect("connect for ws");
        let handshake = tokio_tungstenite::client_async(req, tcp);
        match tokio::time::timeout(EVENT_TIMEOUT, handshake).await {
            Err(_) => panic!("ws upgrade to {addr}: no answer within {EVENT_TIMEOUT:?}"),
            Ok(Ok((stream, _resp))) => Ok(Ws {
                stream,
                backlog: VecDeque::new(),
                log: VecDeque::new(),
                closed: None,
                next_ack: 1,
                phone: String::new(),
            }),
            Ok(Err(tungstenite::Error::Http(resp))) => Err(Refused {
                status: resp.status().as_u16(),
                body: resp
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default(),
            }),
            Ok(Err(e)) => panic!("ws upgrade to {addr} failed: {e}"),
        }
    }

    /// Opens `/ws` and consumes `connection_status`, checking it names `phone`.
    pub async fn connect(addr: SocketAddr, token: &str, phone: &str) -> Ws {
        let mut ws = match Ws::open(addr, token, Auth::Header, &[]).await {
            Ok(ws) => ws,
            Err(r) => panic!("ws upgrade refused: {} {}", r.status, r.body),
        };
        ws.phone = phone.to_owned();
        // On open, before anything else.
        let status = match ws.next(EVENT_TIMEOUT).await {
            Next::Event(v) => v,
            other => panic!("[{phone}] expected connection_status first, got {other:?}"),
        };
        assert_eq!(
            status,
            json!({"event": "connection_status", "data": {"status": "connected", "phone": phone}}),
            "the first frame on a socket"
        );
        ws
    }

    fn note(&mut self, what: String) {
        if self.log.len() == LOG_FRAMES {
            self.log.pop_front();
        }
        self.log.push_back(what);
    }

    /// Everything this socket received so far (bounded), for failure messages.
    pub fn received(&self) -> String {
        self.log.iter().cloned().collect::<Vec<_>>().join("\n  ")
    }

    /// Sends a raw message.
    pub async fn send_msg(&mut self, msg: Message) {
        if let Err(e) = self.stream.send(msg).await {
            panic!(
                "[{}] send failed: {e}; received:\n  {}",
                self.phone,
                self.received()
            );
        }
    }

    /// Sends a text frame; returns false when the socket is already closed.
    pub async fn try_send_text(&mut self, text: &str) -> bool {
        self.stream
            .send(Message::text(text.to_owned()))
            .await
            .is_ok()
    }

    /// Sends a text frame.
    pub async fn send_text(&mut self, text: &str) {
        self.send_msg(Message::text(text.to_owned())).await;
    }

    /// Sends `{"event", "data", "ack"?}`.
    pub async fn send(&mut self, event: &str, data: Value, ack: Option<Value>) {
        let mut frame = json!({"event": event, "data": data});
        if let Some(ack) = ack {
            frame["ack"] = ack;
        }
        self.send_text(&frame.to_string()).await;
    }

    /// Sends an event with a fresh numeric ack and returns the one frame that carries that ack.
    pub async fn call(&mut self, event: &str, data: Value) -> Value {
        let ack = self.next_ack;
        self.next_ack += 1;
        self.send(event, data, Some(json!(ack))).await;
        self.recv_ack(&json!(ack)).await
    }

    /// Like [`Ws::call`], asserting the answer is not an `error`; returns the frame.
    pub async fn call_ok(&mut self, event: &str, data: Value) -> Value {
        let f = self.call(event, data.clone()).await;
        assert_ne!(
            f["event"], "error",
            "[{}] {event} {data} answered with an error: {f}",
            self.phone
        );
        f
    }

    /// Like [`Ws::call`], asserting an `error` with this code; returns the frame.
    pub async fn call_err(&mut self, event: &str, data: Value, code: &str) -> Value {
        let f = self.call(event, data.clone()).await;
        assert_eq!(
            (f["event"].as_str(), f["data"]["code"].as_str()),
            (Some("error"), Some(code)),
            "[{}] {event} {data}: expected error {code}, got {f}",
            self.phone
        );
        assert!(
            f["data"]["message"].as_str().is_some_and(|m| !m.is_empty()),
            "error without a message: {f}"
        );
        f
    }

    /// Reads the next frame from the wire (not the backlog), answering pings.
    async fn read_wire(&mut self, wait: Duration) -> Next {
        if let Some(c) = &self.closed {
            return Next::Closed(c.clone());
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let msg = match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Err(_) => return Next::Timeout,
                Ok(m) => m,
            };
            match msg {
                None => {
                    self.note("<end of stream>".into());
                    self.closed = Some(None);
                    return Next::Closed(None);
                }
                Some(Err(e)) => {
                    self.note(format!("<error {e}>"));
                    self.closed = Some(None);
                    return Next::Closed(None);
                }
                Some(Ok(Message::Text(t))) => {
                    self.note(t.to_string());
                    let v: Value = serde_json::from_str(&t).unwrap_or_else(|e| {
                        panic!(
                            "[{}] server sent a text frame that is not JSON ({e}): {t:?}",
                            self.phone
                        )
                    });
                    assert!(v.is_object(), "server frame is not an object: {v}");
                    return Next::Event(v);
                }
                Some(Ok(Message::Close(frame))) => {
                    let c = frame.map(|f| (u16::from(f.code), f.reason.to_string()));
                    self.note(format!("<close {c:?}>"));
                    self.closed = Some(c.clone());
                    return Next::Closed(c);
                }
                Some(Ok(Message::Binary(b))) => {
                    panic!(
                        "[{}] server sent a binary frame ({} bytes)",
                        self.phone,
                        b.len()
                    )
                }
                Some(Ok(_)) => {} // ping/pong: tungstenite answers pings itself
            }
        }
    }

    /// The next event from the backlog or the wire, or a close, or a timeout.
    pub async fn next(&mut self, wait: Duration) -> Next {
        if let Some(v) = self.backlog.pop_front() {
            return Next::Event(v);
        }
        self.read_wire(wait).await
    }

    /// Waits for the first frame matching `pred` (backlog first), keeping the others.
    pub async fn recv_where(
        &mut self,
        what: &str,
        wait: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        if let Some(i) = self.backlog.iter().position(&pred) {
            return self.backlog.remove(i).expect("index from position");
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.read_wire(left).await {
                Next::Event(v) if pred(&v) => return v,
                Next::Event(v) => self.backlog.push_back(v),
                Next::Closed(c) => panic!(
                    "[{}] waiting for {what}: socket closed ({c:?}); received:\n  {}",
                    self.phone,
                    self.received()
                ),
                Next::Timeout => panic!(
                    "[{}] waiting for {what}: nothing within {wait:?}; received:\n  {}",
                    self.phone,
                    self.received()
                ),
            }
        }
    }

    /// Waits (5 s) for the next event called `name`.
    pub async fn recv_event(&mut self, name: &str) -> Value {
        self.recv_event_within(name, EVENT_TIMEOUT).await
    }

    /// Waits up to `wait` for the next event called `name`.
    pub async fn recv_event_within(&mut self, name: &str, wait: Duration) -> Value {
        self.recv_where(&format!("event {name}"), wait, |v| v["event"] == name)
            .await
    }

    /// Waits for the frame carrying `ack`.
    pub async fn recv_ack(&mut self, ack: &Value) -> Value {
        let f = self
            .recv_where(&format!("a frame with ack {ack}"), EVENT_TIMEOUT, |v| {
                v.get("ack") == Some(ack)
            })
            .await;
        assert!(
            !self.backlog.iter().any(|v| v.get("ack") == Some(ack)),
            "ack {ack} answered twice"
        );
        f
    }

    /// Asserts that no event called `name` arrives within `wait` (others are kept).
    pub async fn expect_no_event(&mut self, name: &str, wait: Duration) {
        if let Some(v) = self.backlog.iter().find(|v| v["event"] == name) {
            panic!("[{}] unexpected {name}: {v}", self.phone);
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.read_wire(left).await {
                Next::Event(v) if v["event"] == name => {
                    panic!("[{}] unexpected {name}: {v}", self.phone)
                }
                Next::Event(v) => self.backlog.push_back(v),
                Next::Timeout => return,
                Next::Closed(c) => panic!(
                    "[{}] socket closed ({c:?}) while checking that no {name} arrives; received:\n  {}",
                    self.phone,
                    self.received()
                ),
            }
        }
    }

    /// Removes every backlog event called `name`, returning them.
    pub fn drain_backlog(&mut self, name: &str) -> Vec<Value> {
        let (out, keep): (VecDeque<Value>, VecDeque<Value>) =
            self.backlog.drain(..).partition(|v| v["event"] == name);
        self.backlog = keep;
        out.into()
    }

    /// The kept, not yet consumed events.
    pub fn backlog(&self) -> &VecDeque<Value> {
        &self.backlog
    }

    /// Waits up to `wait` for the server to close the socket; returns the close code (`None` if
    /// the connection ended without a close frame). Events before the close are kept.
    pub async fn expect_close(&mut self, wait: Duration) -> Option<u16> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.read_wire(left).await {
                Next::Event(v) => self.backlog.push_back(v),
                Next::Closed(c) => return c.map(|(code, _)| code),
                Next::Timeout => panic!(
                    "[{}] expected the server to close the socket within {wait:?}; received:\n  {}",
                    self.phone,
                    self.received()
                ),
            }
        }
    }

    /// Whether the server closed this socket (as far as has been read).
    pub fn is_closed(&self) -> bool {
        self.closed.is_some()
    }

    /// Closes from the client side (code 1000) and waits briefly for the server's answer.
    pub async fn close(mut self) {
        let _ = self.stream.close(None).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(Ok(_)) = self.stream.next().await {}
        })
        .await;
    }

    /// Joins `room` and returns `room_history`'s data (after also consuming this socket's own
    /// `user_joined`).
    pub async fn join(&mut self, room: &str) -> Value {
        self.join_with(json!({"room": room})).await
    }

    /// Joins with arbitrary `join_room` data; returns `room_history`'s data.
    pub async fn join_with(&mut self, data: Value) -> Value {
        let room = data["room"].as_str().unwrap_or_default().to_owned();
        let before = self.backlog.len();
        let f = self.call("join_room", data.clone()).await;
        let own_joined = |v: &Value| {
            v["event"] == "user_joined"
                && v["data"]["room"] == room.as_str()
                && v["data"]["user"] == self.phone.as_str()
        };
        assert!(
            !self.backlog.iter().skip(before).any(own_joined),
            "[{}] user_joined arrived before room_history",
            self.phone
        );
        assert_eq!(
            f["event"], "room_history",
            "[{}] join_room {data}: expected room_history, got {f}",
            self.phone
        );
        assert_eq!(f["data"]["room"], room.as_str(), "room_history room: {f}");
        let phone = self.phone.clone();
        let joined = self
            .recv_where("own user_joined", EVENT_TIMEOUT, |v| {
                v["event"] == "user_joined"
                    && v["data"]["room"] == room.as_str()
                    && v["data"]["user"] == phone.as_str()
            })
            .await;
        // `names` holds the joiner's display name, if it has one.
        let names = joined["data"]["names"].clone();
        assert!(
            names
                .as_object()
                .is_some_and(|n| n.keys().all(|k| *k == phone)),
            "own user_joined names: {joined}"
        );
        assert_eq!(
            joined["data"],
            json!({"room": room, "user": phone, "names": names}),
            "own user_joined"
        );
        f["data"].clone()
    }

    /// Sends `<prefix>0`..`<prefix>{n-1}` to `room` back to back (acks `burst-<prefix>-<i>`),
    /// then waits for every ack; returns the stored messages in sending order.
    pub async fn send_burst(&mut self, room: &str, prefix: &str, n: usize) -> Vec<Value> {
        for i in 0..n {
            self.send(
                "send_message",
                json!({"room": room, "message": format!("{prefix}{i}")}),
                Some(json!(format!("burst-{prefix}-{i}"))),
            )
            .await;
        }
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let r = self.recv_ack(&json!(format!("burst-{prefix}-{i}"))).await;
            assert_eq!(r["event"], "ack", "[{}] burst message {i}: {r}", self.phone);
            out.push(r["data"].clone());
        }
        out
    }

    /// Sends `message` to `room` and returns the stored message from the ack.
    pub async fn say(&mut self, room: &str, message: &str) -> Value {
        let f = self
            .call_ok("send_message", json!({"room": room, "message": message}))
            .await;
        assert_eq!(f["event"], "ack", "send_message answer: {f}");
        f["data"].clone()
    }
}

/// A frame read by [`RawWs`].
#[derive(Debug, Clone)]
pub struct RawFrame {
    /// The opcode (1 text, 2 binary, 8 close, 9 ping, 10 pong).
    pub opcode: u8,
    /// The payload.
    pub payload: Vec<u8>,
}

impl RawFrame {
    /// The close code of a close frame.
    pub fn close_code(&self) -> Option<u16> {
        (self.opcode == 8 && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

/// A hand-rolled WebSocket client: it never answers pings and reads only when told to.
pub struct RawWs {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl std::fmt::Debug for RawWs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawWs").finish()
    }
}

impl RawWs {
    /// Upgrades `/ws?token=` by hand. `recv_buffer` shrinks the socket's kernel receive buffer
    /// (to make a slow reader fill up quickly).
    pub async fn connect(addr: SocketAddr, token: &str, recv_buffer: Option<u32>) -> RawWs {
        let socket = TcpSocket::new_v4().expect("socket");
        if let Some(size) = recv_buffer {
            socket.set_recv_buffer_size(size).expect("SO_RCVBUF");
        }
        let mut stream = socket.connect(addr).await.expect("connect");
        let req = format!(
            "GET /ws?token={token} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n"
        );
        stream
            .write_all(req.as_bytes())
            .await
            .expect("write upgrade");
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            let n = tokio::time::timeout(EVENT_TIMEOUT, stream.read(&mut chunk))
                .await
                .expect("upgrade answer in time")
                .expect("read upgrade answer");
            assert!(n > 0, "connection closed during the upgrade");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        assert!(
            head.starts_with("HTTP/1.1 101"),
            "raw upgrade refused: {head}"
        );
        assert!(
            head.to_ascii_lowercase()
                .contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
            "bad Sec-WebSocket-Accept in {head}"
        );
        buf.drain(..head_end);
        RawWs { stream, buf }
    }

    /// Sends one masked frame with this opcode and payload (FIN set).
    pub async fn send_frame(&mut self, opcode: u8, payload: &[u8]) -> std::io::Result<()> {
        self.send_fragment(opcode, payload, true).await
    }

    /// Sends one masked frame; `fin: false` starts or continues a fragmented message (continue
    /// it with opcode 0).
    pub async fn send_fragment(
        &mut self,
        opcode: u8,
        payload: &[u8],
        fin: bool,
    ) -> std::io::Result<()> {
        let mut out = vec![if fin { 0x80 } else { 0 } | (opcode & 0x0f)];
        let len = payload.len();
        if len < 126 {
            out.push(0x80 | u8::try_from(len).expect("small"));
        } else if let Ok(l) = u16::try_from(len) {
            out.push(0x80 | 126);
            out.extend_from_slice(&l.to_be_bytes());
        } else {
            out.push(0x80 | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        let mask = [0x37u8, 0xfa, 0x21, 0x3d];
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.stream.write_all(&out).await
    }

    /// Reads one frame; `Ok(None)` at the end of the connection, `Err` on timeout or reset.
    pub async fn read_frame(&mut self, wait: Duration) -> Result<Option<RawFrame>, String> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some((frame, used)) = parse_frame(&self.buf)? {
                self.buf.drain(..used);
                return Ok(Some(frame));
            }
            let mut chunk = vec![0u8; 64 * 1024];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => return Err(format!("no frame within {wait:?}")),
                Ok(Ok(0)) => return Ok(None),
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(None),
                Ok(Err(e)) => return Err(format!("read: {e}")),
            }
        }
    }

    /// Ends the TCP connection without a close frame, as a crashed client would.
    pub fn drop_connection(self) {
        drop(self.stream);
    }

    /// Reads (never answering pings) until a close frame or the end of the connection; returns
    /// the close code (`None`: ended without a close frame) and the frames before it.
    pub async fn until_close(&mut self, wait: Duration) -> (Option<u16>, Vec<RawFrame>) {
        let deadline = tokio::time::Instant::now() + wait;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.read_frame(left).await {
                Ok(Some(f)) if f.opcode == 8 => return (f.close_code(), seen),
                Ok(Some(f)) => seen.push(f),
                Ok(None) => return (None, seen),
                Err(e) => panic!(
                    "raw socket: expected a close within {wait:?}: {e}; saw {} frames (opcodes {:?})",
                    seen.len(),
                    seen.iter().map(|f| f.opcode).collect::<Vec<_>>()
                ),
            }
        }
    }
}

fn parse_frame(buf: &[u8]) -> Result<Option<(RawFrame, usize)>, String> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let opcode = buf[0] & 0x0f;
    if buf[1] & 0x80 != 0 {
        return Err("server sent a masked frame".into());
    }
    let (len, mut at) = match buf[1] & 0x7f {
        126 if buf.len() >= 4 => (usize::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
        127 if buf.len() >= 10 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            (
                usize::try_from(u64::from_be_bytes(b)).map_err(|_| "huge frame")?,
                10,
            )
        }
        126 | 127 => return Ok(None),
        l => (usize::from(l), 2),
    };
    if buf.len() < at + len {
        return Ok(None);
    }
    let payload = buf[at..at + len].to_vec();
    at += len;
    Ok(Some((RawFrame { opcode, payload }, at)))
}
