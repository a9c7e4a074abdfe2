//! The socket loop driven through channels: a test client pushes frames into the socket's
//! `Stream` and reads what it writes to its `Sink`, with a gate that stops the sink to play a
//! client that does not read. The service is the real one over `MemoryStore`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use chat_core::{
    ChatService, Clock, Config, EventBus, ManualClock, MemoryStore, NodeId, Phone, Store,
    SystemClock, Token,
};
use futures_util::task::AtomicWaker;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::error::CapacityError;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::*;
use crate::registry::{BeginJoin, CloseReason, Completed, Conn, Offer, Registry};

// ------------------------------------------------------------------------------ harness

/// Open until closed by the test: while closed, the socket's sink is never ready.
#[derive(Default)]
struct Gate {
    closed: AtomicBool,
    waker: AtomicWaker,
}

impl Gate {
    fn set(&self, closed: bool) {
        self.closed.store(closed, Ordering::SeqCst);
        self.waker.wake();
    }

    fn poll(&self, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        self.waker.register(cx.waker());
        if self.closed.load(Ordering::SeqCst) {
            Poll::Pending
        } else {
            Poll::Ready(Ok(()))
        }
    }
}

/// The server's end of a test socket.
struct TestSocket {
    incoming: mpsc::UnboundedReceiver<Result<Message, WsError>>,
    outgoing: mpsc::UnboundedSender<Message>,
    gate: Arc<Gate>,
}

impl Stream for TestSocket {
    type Item = Result<Message, WsError>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.incoming.poll_recv(cx)
    }
}

impl Sink<Message> for TestSocket {
    type Error = WsError;
    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        self.gate.poll(cx)
    }
    fn start_send(self: Pin<&mut Self>, item: Message) -> Result<(), WsError> {
        self.outgoing
            .send(item)
            .map_err(|_| WsError::ConnectionClosed)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        self.gate.poll(cx)
    }
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        Poll::Ready(Ok(()))
    }
}

use std::pin::Pin;

/// The client's end.
struct Client {
    to_server: Option<mpsc::UnboundedSender<Result<Message, WsError>>>,
    from_server: mpsc::UnboundedReceiver<Message>,
    gate: Arc<Gate>,
    task: JoinHandle<()>,
}

const WAIT: Duration = Duration::from_secs(30);

impl Client {
    fn push(&self, m: Result<Message, WsError>) {
        self.to_server
            .as_ref()
            .expect("still connected")
            .send(m)
            .expect("socket task alive");
    }

    fn send(&self, text: &str) {
        self.push(Ok(Message::text(text)));
    }

    fn send_json(&self, v: Value) {
        self.send(&v.to_string());
    }

    /// The next frame, pings included.
    async fn next(&mut self) -> Message {
        tokio::time::timeout(WAIT, self.from_server.recv())
            .await
            .expect("a frame in time")
            .expect("socket still sending")
    }

    /// The next text frame as raw text, skipping pings.
    async fn text(&mut self) -> String {
        loop {
            match self.next().await {
                Message::Text(t) => return t.as_str().to_owned(),
                Message::Ping(_) => continue,
                other => panic!("expected text, got {other:?}"),
            }
        }
    }

    async fn json(&mut self) -> Value {
        serde_json::from_str(&self.text().await).unwrap()
    }

    /// Reads up to a close frame (skipping anything before it) and returns its code.
    async fn close_code(&mut self) -> CloseCode {
        loop {
            match self.next().await {
                Message::Close(Some(f)) => return f.code,
                Message::Close(None) => panic!("close without a code"),
                _ => {}
            }
        }
    }

    /// The client goes away; resolves when the socket's task has finished its cleanup.
    async fn hang_up(mut self) {
        self.to_server = None;
        tokio::time::timeout(WAIT, &mut self.task)
            .await
            .expect("socket task ends")
            .unwrap();
    }

    /// Asserts that nothing but `expected` arrives before the answer to a ping.
    async fn only_then_pong(&mut self, expected: &[&str]) {
        self.send(r#"{"event":"ping","ack":"sync"}"#);
        let mut seen = Vec::new();
        loop {
            let v = self.json().await;
            if v["event"] == "pong" && v["ack"] == "sync" {
                break;
            }
            seen.push(v["event"].as_str().unwrap_or_default().to_owned());
        }
        assert_eq!(seen, expected);
    }
}

/// Subscribes and unsubscribes made so far for one audience.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Subs {
    subscribed: usize,
    unsubscribed: usize,
}

/// `MemoryStore`'s bus, counting every subscribe and unsubscribe per audience; tests wait on
/// the counts (some unsubscribes run on tasks of their own).
struct CountingBus {
    inner: MemoryStore,
    counts: watch::Sender<HashMap<Audience, Subs>>,
}

#[async_trait::async_trait]
impl EventBus for CountingBus {
    async fn publish(&self, delivery: Delivery) -> chat_core::Result<()> {
        self.inner.publish(delivery).await
    }

    async fn subscribe(&self, audience: Audience) -> chat_core::Result<()> {
        self.counts
            .send_modify(|c| c.entry(audience.clone()).or_default().subscribed += 1);
        self.inner.subscribe(audience).await
    }

    async fn unsubscribe(&self, audience: Audience) -> chat_core::Result<()> {
        self.counts
            .send_modify(|c| c.entry(audience.clone()).or_default().unsubscribed += 1);
        self.inner.unsubscribe(audience).await
    }

    fn attach(&self, sink: Arc<dyn EventSink>) {
        self.inner.attach(sink);
    }
}

struct World {
    service: ChatService,
    hub: Hub,
    clock: Option<ManualClock>,
    /// The counts of a [`CountingBus`], for worlds built over one.
    subs: Option<watch::Receiver<HashMap<Audience, Subs>>>,
}

impl World {
    fn new(config: WsConfig) -> World {
        let store = MemoryStore::new();
        World::with_store(
            Arc::new(store.clone()),
            Arc::new(store),
            Arc::new(SystemClock),
            config,
            None,
        )
    }

    fn manual(config: WsConfig) -> World {
        let store = MemoryStore::new();
        let clock = ManualClock::new(1_800_000_000_000);
        World::with_store(
            Arc::new(store.clone()),
            Arc::new(store),
            Arc::new(clock.clone()),
            config,
            Some(clock),
        )
    }

    /// Over a [`CountingBus`], on a manual clock.
    fn counting() -> World {
        let store = MemoryStore::new();
        let clock = ManualClock::new(1_800_000_000_000);
        let (counts, subs) = watch::channel(HashMap::new());
        let bus = CountingBus {
            inner: store.clone(),
            counts,
        };
        let mut w = World::with_store(
            Arc::new(store),
            Arc::new(bus),
            Arc::new(clock.clone()),
            WsConfig::default(),
            Some(clock),
        );
        w.subs = Some(subs);
        w
    }

    /// The subscribes and unsubscribes so far for `audience` (of a counting world).
    fn subs(&self, audience: &Audience) -> Subs {
        let subs = self.subs.as_ref().expect("a counting world");
        subs.borrow().get(audience).copied().unwrap_or_default()
    }

    /// Waits until `audience` has seen `unsubscribed` unsubscribes (of a counting world).
    async fn unsubscribed(&self, audience: &Audience, unsubscribed: usize) {
        let mut subs = self.subs.clone().expect("a counting world");
        let seen = subs.wait_for(|c| {
            c.get(audience)
                .is_some_and(|s| s.unsubscribed >= unsubscribed)
        });
        tokio::time::timeout(WAIT, seen)
            .await
            .expect("the unsubscribe in time")
            .unwrap();
    }

    fn with_store(
        store: Arc<dyn Store>,
        bus: Arc<dyn EventBus>,
        clock: Arc<dyn Clock>,
        config: WsConfig,
        manual: Option<ManualClock>,
    ) -> World {
        let service = ChatService::new(store, bus, clock, Config::default(), NodeId::random());
        let hub = Hub::new(service.clone(), config);
        World {
            service,
            hub,
            clock: manual,
            subs: None,
        }
    }

    async fn user(&self, phone: &str) -> Session {
        self.service
            .register(phone, None, None)
            .await
            .unwrap()
            .session
    }

    async fn room(&self, a: &Session, b: &Session) -> RoomId {
        self.service
            .send_request(&a.phone, b.phone.as_str())
            .await
            .unwrap();
        self.service
            .respond_request(&b.phone, a.phone.as_str(), chat_core::Answer::Accept)
            .await
            .unwrap()
            .unwrap()
    }

    fn connect(&self, session: &Session) -> Client {
        let (to_server, incoming) = mpsc::unbounded_channel();
        let (outgoing, from_server) = mpsc::unbounded_channel();
        let gate = Arc::new(Gate::default());
        let socket = TestSocket {
            incoming,
            outgoing,
            gate: Arc::clone(&gate),
        };
        let hub = self.hub.clone();
        let session = session.clone();
        let task = tokio::spawn(async move { hub.serve_socket(socket, session).await });
        Client {
            to_server: Some(to_server),
            from_server,
            gate,
            task,
        }
    }

    /// A connected client past its `connection_status`.
    async fn open(&self, session: &Session) -> Client {
        let mut c = self.connect(session);
        let v = c.json().await;
        assert_eq!(v["event"], "connection_status");
        c
    }
}

const A: &str = "+14155550100";
const B: &str = "+14155550101";

fn events(values: &[Value]) -> Vec<&str> {
    values
        .iter()
        .map(|v| v["event"].as_str().unwrap_or_default())
        .collect()
}

// ------------------------------------------------------------------------------ tests

#[tokio::test(start_paused = true)]
async fn open_says_connected_first_and_close_cleans_up() {
    let w = World::new(WsConfig::default());
    let a = w.user(A).await;
    let mut c = w.connect(&a);
    assert_eq!(
        c.json().await,
        json!({"event": "connection_status", "data": {"status": "connected", "phone": A}})
    );
    assert_eq!(w.hub.connections(), 1);
    assert_eq!(w.service.metrics().connections.load(Ordering::Relaxed), 1);
    assert!(w.service.is_online(&a.phone).await.unwrap());
    c.hang_up().await;
    assert_eq!(w.hub.connections(), 0);
    assert_eq!(w.service.metrics().connections.load(Ordering::Relaxed), 0);
}

#[tokio::test(start_paused = true)]
async fn acks_are_echoed_exactly() {
    let w = World::new(WsConfig::default());
    let a = w.user(A).await;
    let mut c = w.open(&a).await;

    c.send(r#"{"event":"ping","ack":7}"#);
    assert_eq!(
        c.json().await,
        json!({"event": "pong", "ack": 7, "data": {}})
    );
    c.send(r#"{"event":"ping","ack":"k-1","data":{}}"#);
    assert_eq!(
        c.json().await,
        json!({"event": "pong", "ack": "k-1", "data": {}})
    );
    // Numbers come back as written, not as re-printed floats.
    c.send(r#"{"event":"ping","ack":1.5e3}"#);
    assert!(c.text().await.contains(r#""ack":1.5e3"#));
    c.send(r#"{"event":"ping","ack":123456789012345678901234567890}"#);
    assert!(
        c.text()
            .await
            .contains(r#""ack":123456789012345678901234567890"#)
    );
    // null means no ack.
    c.send(r#"{"event":"ping","ack":null}"#);
    assert_eq!(c.json().await, json!({"event": "pong", "data": {}}));

    c.send_json(
        json!({"event": "register_user_socket", "data": {"phone": "+1 415 555 0100"}, "ack": 2}),
    );
    assert_eq!(
        c.json().await,
        json!({"event": "user_registered", "ack": 2, "data": {"status": "registered"}})
    );
    c.send_json(json!({"event": "register_user_socket", "data": {"phone": B}, "ack": 3}));
    let v = c.json().await;
    assert_eq!(v["event"], "error");
    assert_eq!(v["ack"], 3);
    assert_eq!(v["data"]["code"], "forbidden");

    // A bad ack type: bad_request without any ack.
    c.send(r#"{"event":"ping","ack":true}"#);
    let v = c.json().await;
    assert_eq!(v["data"]["code"], "bad_request");
    assert!(v.get("ack").is_none());
    // Unknown event keeps the ack.
    c.send(r#"{"event":"fly","ack":4}"#);
    let v = c.json().await;
    assert_eq!(
        (v["data"]["code"].as_str(), v["ack"].as_i64()),
        (Some("unknown_event"), Some(4))
    );
    c.hang_up().await;
}

#[tokio::test(start_paused = true)]
async fn twenty_bad_frames_in_a_row_close_with_1008() {
    let w = World::new(WsConfig {
        frame_burst: 1000,
        ..WsConfig::default()
    });
    let a = w.user(A).await;
    let mut c = w.open(&a).await;
    // 19 bad ones, then a good one ends the run.
    for i in 0..19 {
        c.send(if i % 2 == 0 {
            "nope"
        } else {
            r#"{"event":"fly"}"#
        });
        assert_eq!(c.json().await["event"], "error");
    }
    c.send(r#"{"event":"ping"}"#);
    assert_eq!(c.json().await["event"], "pong");
    // A failure that is not bad_request/unknown_event also ends a run.
    for _ in 0..19 {
        c.send("[]");
        assert_eq!(c.json().await["data"]["code"], "bad_request");
    }
    c.send_json(json!({"event": "join_room", "data": {"room": RoomId::generate().to_string()}}));
    assert_eq!(c.json().await["data"]["code"], "room_not_found");
    // Now twenty in a row: every one is answered, then the socket closes.
    for _ in 0..20 {
        c.send(r#"{"event":"join_room","data":{"room":5}}"#);
        assert_eq!(c.json().await["data"]["code"], "bad_request");
    }
    assert_eq!(c.close_code().await, CloseCode::Policy);
    c.hang_up().await;
    assert_eq!(w.hub.connections(), 0);
}

#[tokio::test(start_paused = true)]
async fn frames_past_the_bucket_are_rate_limited() {
    let w = World::manual(WsConfig {
        frames_per_sec: 1,
        frame_burst: 3,
        ..WsConfig::default()
    });
    let clock = w.clock.clone().unwrap();
    let a = w.user(A).await;
    let mut c = w.open(&a).await;
    for _ in 0..3 {
        c.send(r#"{"event":"ping"}"#);
        assert_eq!(c.json().await["event"], "pong");
    }
    c.send(r#"{"event":"ping","ack":9}"#);
    let v = c.json().await;
    assert_eq!(v["event"], "error");
    assert_eq!(v["ack"], 9);
    assert_eq!(v["data"]["code"], "rate_limited");
    // Bad frames are limited too (and get no ack when none is readable).
    c.send("garbage");
    let v = c.json().await;
    assert_eq!(v["data"]["code"], "rate_limited");
    assert!(v.get("ack").is_none());
    clock.advance(1000);
    c.send(r#"{"event":"ping","ack":10}"#);
    assert_eq!(
        c.json().await,
        json!({"event": "pong", "ack": 10, "data": {}})
    );
    c.hang_up().await;
}

#[tokio::test(start_paused = true)]
async fn a_slow_reader_is_closed_alone() {
    let w = World::new(WsConfig {
        send_queue: 8,
        ..WsConfig::default()
    });
    let a = w.user(A).await;
    let mut slow = w.connect(&a);
    slow.gate.set(true);
    let mut fine = w.open(&a).await;
    // Both registered: the fine one answered, the slow one is counted.
    assert_eq!(w.hub.connections(), 2);

    // The slow one still holds its connection_status, so eight more overflow it, and just
    // fill the fine one's queue.
    for i in 0..8 {
        w.hub.deliver(&Delivery::to_user(
            a.phone.clone(),
            Event::Presence {
                names: Default::default(),
                phone: Phone::parse(&format!("+1555000{i:04}")).unwrap(),
                online: true,
            },
        ));
    }
    for i in 0..8 {
        let v = fine.json().await;
        assert_eq!(v["event"], "presence");
        assert_eq!(v["data"]["phone"], format!("+1555000{i:04}"));
    }
    assert_eq!(
        w.service
            .metrics()
            .slow_consumers_closed_total
            .load(Ordering::Relaxed),
        1
    );
    // Its queue was dropped: once it reads again, the close is all it gets.
    slow.gate.set(false);
    assert_eq!(
        slow.next().await,
        Message::Close(Some(CloseFrame {
            code: CloseCode::Policy,
            reason: "not reading fast enough".into(),
        }))
    );
    slow.hang_up().await;
    assert_eq!(w.hub.connections(), 1);
    fine.send(r#"{"event":"ping"}"#);
    assert_eq!(fine.json().await["event"], "pong");
    fine.hang_up().await;
}

#[tokio::test(start_paused = true)]
async fn room_events_reach_joined_sockets_only_with_their_exceptions() {
    let w = World::new(WsConfig::default());
    let a = w.user(A).await;
    let b = w.user(B).await;
    let room = w.room(&a, &b).await;
    let mut a1 = w.open(&a).await;
    let mut a2 = w.open(&a).await;
    let mut b1 = w.open(&b).await;
    let mut lurker = w.open(&b).await; // never joins

    for (c, who) in [(&mut a1, A), (&mut a2, A), (&mut b1, B)] {
        c.send_json(json!({"event": "join_room", "data": {"room": room.to_string(), "user": who}, "ack": 1}));
        let v = c.json().await;
        assert_eq!(v["event"], "room_history");
        assert_eq!(v["ack"], 1);
        assert_eq!(
            v["data"],
            json!({"room": room.to_string(), "messages": [], "more": false, "read": {A: null, B: null}})
        );
        assert_eq!(
            c.json().await,
            json!({"event": "user_joined", "data": {"room": room.to_string(), "user": who, "names": {}}})
        );
    }
    // Earlier joiners saw the later ones join.
    a1.only_then_pong(&["user_joined", "user_joined"]).await;
    a2.only_then_pong(&["user_joined"]).await;
    b1.only_then_pong(&[]).await;

    // typing goes to the other member's joined sockets only.
    a1.send_json(
        json!({"event": "typing", "data": {"room": room.to_string(), "typing": true}, "ack": "t"}),
    );
    assert_eq!(
        a1.json().await,
        json!({"event": "ack", "ack": "t", "data": {}})
    );
    assert_eq!(
        b1.json().await,
        json!({"event": "typing", "data": {"room": room.to_string(), "user": A, "typing": true}})
    );
    a1.only_then_pong(&[]).await;
    a2.only_then_pong(&[]).await;

    // A message reaches every joined socket, the sender's own included; the ack has it too.
    b1.send_json(json!({"event": "send_message", "data": {"room": room.to_string(), "message": "hi", "client_id": "c1"}, "ack": 5}));
    let mut got = vec![b1.json().await, b1.json().await];
    got.sort_by_key(|v| v["event"].as_str().unwrap_or_default().to_owned());
    assert_eq!(events(&got), ["ack", "receive_message"]);
    assert_eq!(got[0]["data"], got[1]["data"]);
    let m = got[1]["data"].clone();
    assert_eq!(m["sender"], B);
    assert_eq!(m["message"], "hi");
    assert_eq!(m["client_id"], "c1");
    assert!(m["timestamp"].as_str().unwrap().ends_with('Z'));
    for c in [&mut a1, &mut a2] {
        assert_eq!(
            c.json().await,
            json!({"event": "receive_message", "data": m})
        );
    }
    lurker.only_then_pong(&[]).await;

    // A read mark goes to the other member's joined sockets only; acked with `{}`; a repeat
    // tells nobody; a bad id is `bad_request`.
    let read = json!({"event": "mark_read", "data": {"room": room.to_string(), "id": m["id"]}, "ack": "r"});
    a1.send_json(read.clone());
    assert_eq!(
        a1.json().await,
        json!({"event": "ack", "ack": "r", "data": {}})
    );
    assert_eq!(
        b1.json().await,
        json!({"event": "read", "data": {"room": room.to_string(), "user": A, "id": m["id"]}})
    );
    a2.send_json(read);
    assert_eq!(
        a2.json().await,
        json!({"event": "ack", "ack": "r", "data": {}})
    );
    a2.send_json(
        json!({"event": "mark_read", "data": {"room": room.to_string(), "id": "1-0"}, "ack": "x"}),
    );
    let bad = a2.json().await;
    assert_eq!(
        (&bad["event"], &bad["ack"], &bad["data"]["code"]),
        (&json!("error"), &json!("x"), &json!("bad_request"))
    );
    a2.send_json(json!({"event": "mark_read", "data": {"room": room.to_string()}, "ack": "y"}));
    assert_eq!(a2.json().await["data"]["code"], "bad_request");
    a1.only_then_pong(&[]).await;
    a2.only_then_pong(&[]).await;
    b1.only_then_pong(&[]).await;
    lurker.only_then_pong(&[]).await;

    // Leaving: the others hear it, the leaver does not.
    a1.send_json(json!({"event": "leave_room", "data": {"room": room.to_string()}, "ack": 6}));
    assert_eq!(
        a1.json().await,
        json!({"event": "ack", "ack": 6, "data": {}})
    );
    for c in [&mut a2, &mut b1] {
        assert_eq!(
            c.json().await,
            json!({"event": "user_left", "data": {"room": room.to_string(), "user": A}})
        );
    }
    a1.only_then_pong(&[]).await;
    // And no longer receives the room.
    b1.send_json(json!({"event": "send_message", "data": {"room": room.to_string(), "message": "still there?"}}));
    assert_eq!(b1.json().await["event"], "receive_message");
    assert_eq!(a2.json().await["event"], "receive_message");
    a1.only_then_pong(&[]).await;

    // A socket that closes leaves its rooms the same way.
    a2.hang_up().await;
    assert_eq!(
        b1.json().await,
        json!({"event": "user_left", "data": {"room": room.to_string(), "user": A}})
    );
    // User events go to every socket of the user, joined or not.
    w.service
        .close_room(&a.phone, &room.to_string())
        .await
        .unwrap();
    for c in [&mut b1, &mut lurker] {
        assert_eq!(
            c.json().await,
            json!({"event": "room_closed", "data": {"room": room.to_string(), "by": A}})
        );
    }
    assert_eq!(a1.json().await["event"], "room_closed");
    for c in [a1, b1, lurker] {
        c.hang_up().await;
    }
    assert_eq!(w.hub.connections(), 0);
    assert!(w.hub.read().rooms.is_empty());
    assert!(w.hub.read().users.is_empty());
}

/// How the room ends in [`a_room_that_ends_keeps_no_socket_and_no_subscription`].
#[derive(Debug, Clone, Copy)]
enum Ending {
    Closed,
    Expired,
}

/// A room that is closed or expires leaves no socket registered in it and unsubscribes the
/// node exactly once, however long its sockets stay open; no `user_left` is sent for it.
async fn a_room_that_ends_keeps_no_socket_and_no_subscription(ending: Ending) {
    let w = World::counting();
    let a = w.user(A).await;
    let b = w.user(B).await;
    let room = w.room(&a, &b).await;
    let r = room.to_string();
    let audience = Audience::Room(room);
    let mut a1 = w.open(&a).await;
    let mut a2 = w.open(&a).await; // never joins
    let mut b1 = w.open(&b).await;
    for (c, who) in [(&mut a1, A), (&mut b1, B)] {
        c.send_json(json!({"event": "join_room", "data": {"room": r}, "ack": 1}));
        assert_eq!(c.json().await["event"], "room_history");
        assert_eq!(
            c.json().await,
            json!({"event": "user_joined", "data": {"room": r, "user": who, "names": {}}})
        );
    }
    a1.only_then_pong(&["user_joined"]).await;
    assert_eq!(w.hub.read().rooms.get(&room).map(Vec::len), Some(2));
    assert_eq!(
        w.subs(&audience),
        Subs {
            subscribed: 1,
            unsubscribed: 0
        }
    );

    let told = match ending {
        Ending::Closed => {
            w.service.close_room(&a.phone, &r).await.unwrap();
            json!({"event": "room_closed", "data": {"room": r, "by": A}})
        }
        Ending::Expired => {
            let ttl_ms = Config::default().room_ttl_secs * 1000;
            w.clock.as_ref().unwrap().advance(ttl_ms);
            w.service.tick().await.unwrap();
            json!({"event": "room_expired", "data": {"room": r}})
        }
    };
    for c in [&mut a1, &mut a2, &mut b1] {
        assert_eq!(c.json().await, told);
    }
    w.unsubscribed(&audience, 1).await;
    {
        let registry = w.hub.read();
        assert!(registry.rooms.is_empty());
        assert_eq!(registry.all().count(), 3);
        assert!(registry.all().all(|c| c.room_count() == 0));
    }
    // Nobody hears anyone leave: the room is gone for everyone.
    for c in [&mut a1, &mut a2, &mut b1] {
        c.only_then_pong(&[]).await;
    }
    // Leaving it now is answered as for a room never joined, and announces nothing.
    a1.send_json(json!({"event": "leave_room", "data": {"room": r}, "ack": 2}));
    assert_eq!(
        a1.json().await,
        json!({"event": "ack", "ack": 2, "data": {}})
    );
    b1.only_then_pong(&[]).await;

    // Closing the sockets that were in the room does not unsubscribe a second time.
    a1.hang_up().await;
    a2.hang_up().await;
    assert_eq!(
        w.subs(&audience),
        Subs {
            subscribed: 1,
            unsubscribed: 1
        }
    );
    // A join of the ended room is refused and leaves nothing behind either.
    b1.send_json(json!({"event": "join_room", "data": {"room": r}, "ack": 3}));
    let v = b1.json().await;
    assert_eq!(
        (v["event"].as_str(), v["ack"].as_i64()),
        (Some("error"), Some(3))
    );
    assert_eq!(v["data"]["code"], "room_not_found");
    b1.hang_up().await;
    assert_eq!(
        w.subs(&audience),
        Subs {
            subscribed: 2,
            unsubscribed: 2
        }
    );
    for user in [&a, &b] {
        assert_eq!(
            w.subs(&Audience::User(user.phone.clone())),
            Subs {
                subscribed: 1,
                unsubscribed: 1
            }
        );
    }
    assert_eq!(w.hub.connections(), 0);
    assert!(w.hub.read().rooms.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_closed_room_keeps_no_socket_and_no_subscription() {
    a_room_that_ends_keeps_no_socket_and_no_subscription(Ending::Closed).await;
}

#[tokio::test(start_paused = true)]
async fn an_expired_room_keeps_no_socket_and_no_subscription() {
    a_room_that_ends_keeps_no_socket_and_no_subscription(Ending::Expired).await;
}

#[test]
fn a_room_that_ends_during_a_join_is_left_when_the_join_ends() {
    let session = |phone: &str| Session {
        phone: Phone::parse(phone).unwrap(),
        name: None,
        token_digest: Token::generate().unwrap().digest(),
        created_at: 0,
    };
    let joining = Arc::new(Conn::new(1, session(A), 16, SEND_QUEUE_BYTES));
    let joined = Arc::new(Conn::new(2, session(B), 16, SEND_QUEUE_BYTES));
    let mut registry = Registry::default();
    registry.add(&joining);
    registry.add(&joined);
    let room = RoomId::generate();
    let f = |s: &'static str| Utf8Bytes::from_static(s);

    // `joining` made the node subscribe (maybe still in flight); `joined` is fully in.
    assert!(matches!(
        registry.begin_join(&joining, room),
        BeginJoin::Joining(s) if s.is_first()
    ));
    assert!(matches!(
        registry.begin_join(&joined, room),
        BeginJoin::Joining(s) if !s.is_first()
    ));
    assert_eq!(
        registry.complete_join(&joined, room, f("history"), None),
        Completed::Joined(Offer::Queued)
    );
    joining.offer(&f("held"), Some((room, None)));
    // The joined socket is out at once; the joining one keeps the node in the room, so the
    // unsubscribe cannot overtake its subscribe. The other member's event changes nothing.
    assert!(!registry.end_room(room));
    assert!(!registry.end_room(room));
    assert_eq!(joined.room_count(), 0);
    assert_eq!(joining.room_count(), 1);
    // Its history arrives after all: it is not queued, and its join unsubscribes the node.
    assert_eq!(
        registry.complete_join(&joining, room, f("history"), None),
        Completed::Ended { last: true }
    );
    assert_eq!(joining.pop(), None);
    assert_eq!(joining.room_count(), 0);
    assert!(registry.rooms.is_empty());

    // A join that fails because the room is gone does the same through `abort_join`.
    assert!(matches!(
        registry.begin_join(&joining, room),
        BeginJoin::Joining(s) if s.is_first()
    ));
    assert!(!registry.end_room(room));
    assert!(registry.abort_join(&joining, room));
    assert!(registry.rooms.is_empty());

    // A joined socket re-reading the history while the room ends: out already, nothing owed.
    assert!(matches!(
        registry.begin_join(&joined, room),
        BeginJoin::Joining(s) if s.is_first()
    ));
    registry.complete_join(&joined, room, f("history"), None);
    assert_eq!(registry.begin_join(&joined, room), BeginJoin::AlreadyJoined);
    assert!(registry.end_room(room));
    assert_eq!(
        registry.complete_join(&joined, room, f("history"), None),
        Completed::Ended { last: false }
    );
    // Closing either socket owes the room nothing more.
    for conn in [&joining, &joined] {
        assert!(registry.remove(conn).unwrap().rooms.is_empty());
    }
    assert!(registry.rooms.is_empty() && registry.users.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_burst_of_frames_is_answered_in_order() {
    let w = World::new(WsConfig::default());
    let a = w.user(A).await;
    let b = w.user(B).await;
    let room = w.room(&a, &b).await.to_string();
    let mut c = w.open(&a).await;
    let send = |text: &str, ack: u32| json!({"event": "send_message", "data": {"room": room, "message": text}, "ack": ack});
    // All queued before the socket reads any: one burst, with other frames inside it.
    let frames = [
        send("one", 1),
        json!({"event": "send_message", "data": {"room": room, "message": "x", "sender": B}, "ack": 2}),
        send(" ", 3),
        send("two", 4),
        json!({"event": "ping", "ack": 5}),
        send("three", 6),
        json!({"event": "send_message", "data": {"room": "not-a-room", "message": "x"}, "ack": 7}),
        json!({"event": "fly", "ack": 8}),
        send("four", 9),
    ];
    for frame in frames.iter() {
        c.send_json(frame.clone());
    }
    let mut answers = Vec::new();
    while answers.len() < frames.len() {
        let v = c.json().await;
        let kind = match v["event"].as_str() {
            Some("ack") => v["data"]["message"].as_str().unwrap_or_default().to_owned(),
            Some("error") => v["data"]["code"].as_str().unwrap_or_default().to_owned(),
            Some("pong") => "pong".to_owned(),
            _ => continue,
        };
        answers.push((v["ack"].as_u64().unwrap_or_default(), kind));
    }
    let expected = [
        (1, "one"),
        (2, "forbidden"),
        (3, "empty_message"),
        (4, "two"),
        (5, "pong"),
        (6, "three"),
        (7, "room_not_found"),
        (8, "unknown_event"),
        (9, "four"),
    ];
    let expected: Vec<(u64, String)> = expected.iter().map(|(n, k)| (*n, k.to_string())).collect();
    assert_eq!(answers, expected, "every frame answered once, in order");
    let page = w
        .service
        .history(&b.phone, &room, None, None)
        .await
        .unwrap();
    let texts: Vec<&str> = page.messages.iter().map(|m| m.message.as_str()).collect();
    assert_eq!(texts, ["one", "two", "three", "four"], "stored in order");
    c.hang_up().await;
}

#[tokio::test(start_paused = true)]
async fn service_errors_are_error_events_and_the_socket_stays() {
    let w = World::new(WsConfig::default());
    let a = w.user(A).await;
    let b = w.user(B).await;
    let c_user = w.user("+14155550102").await;
    let room = w.room(&a, &b).await;
    let mut c = w.open(&c_user).await;
    let cases = [
        (
            json!({"event": "join_room", "data": {"room": room.to_string()}, "ack": 1}),
            "forbidden",
        ),
        (
            json!({"event": "join_room", "data": {"room": "not-a-room"}, "ack": 1}),
            "room_not_found",
        ),
        (
            json!({"event": "join_room", "data": {"room": room.to_string(), "user": A}, "ack": 1}),
            "forbidden",
        ),
        (
            json!({"event": "send_message", "data": {"room": room.to_string(), "message": "x", "sender": A}, "ack": 1}),
            "forbidden",
        ),
        (
            json!({"event": "send_message", "data": {"room": room.to_string(), "message": "x"}, "ack": 1}),
            "forbidden",
        ),
        (
            json!({"event": "typing", "data": {"room": room.to_string(), "typing": true}, "ack": 1}),
            "forbidden",
        ),
        (
            json!({"event": "leave_room", "data": {"room": "nope"}, "ack": 1}),
            "room_not_found",
        ),
    ];
    for (frame, code) in cases {
        c.send_json(frame.clone());
        let v = c.json().await;
        assert_eq!(
            (v["event"].as_str(), v["ack"].as_i64()),
            (Some("error"), Some(1)),
            "{frame}"
        );
        assert_eq!(v["data"]["code"], code, "{frame}");
        assert!(v["data"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    // Member errors from the service's own rules.
    let mut a1 = w.open(&a).await;
    a1.send_json(
        json!({"event": "send_message", "data": {"room": room.to_string(), "message": "  "}}),
    );
    assert_eq!(a1.json().await["data"]["code"], "empty_message");
    a1.send_json(json!({"event": "join_room", "data": {"room": room.to_string(), "since": "x"}}));
    assert_eq!(a1.json().await["data"]["code"], "bad_request");
    // Leaving a room this socket never joined is harmless.
    a1.send_json(json!({"event": "leave_room", "data": {"room": room.to_string()}, "ack": 2}));
    assert_eq!(a1.json().await["event"], "ack");
    c.only_then_pong(&[]).await;
    a1.only_then_pong(&[]).await;
    c.hang_up().await;
    a1.hang_up().await;
    assert!(w.hub.read().rooms.is_empty());
}

#[tokio::test(start_paused = true)]
async fn rejoining_with_since_gets_what_was_missed() {
    let w = World::new(WsConfig::default());
    let a = w.user(A).await;
    let b = w.user(B).await;
    let room = w.room(&a, &b).await;
    let r = room.to_string();
    let first = w
        .service
        .send_message(&b.phone, &r, "one".into(), None)
        .await
        .unwrap();
    w.service
        .send_message(&b.phone, &r, "two".into(), None)
        .await
        .unwrap();
    let mut c = w.open(&a).await;
    c.send_json(json!({"event": "join_room", "data": {"room": r, "since": first.id.to_string()}}));
    let v = c.json().await;
    assert_eq!(v["event"], "room_history");
    let texts: Vec<&str> = v["data"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["message"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["two"]);
    assert_eq!(v["data"]["more"], false);
    c.hang_up().await;
}

#[test]
fn room_events_during_a_join_wait_behind_the_history() {
    let a = Session {
        phone: Phone::parse(A).unwrap(),
        name: None,
        token_digest: Token::generate().unwrap().digest(),
        created_at: 0,
    };
    let conn = Arc::new(Conn::new(1, a, 16, SEND_QUEUE_BYTES));
    let mut registry = Registry::default();
    assert!(registry.add(&conn).is_some_and(|s| s.is_first()));
    let room = RoomId::generate();
    assert!(matches!(
        registry.begin_join(&conn, room),
        BeginJoin::Joining(s) if s.is_first()
    ));
    let id = |ms| Some(chat_core::MessageId { ms, seq: 0 });
    let f = |s: &'static str| Utf8Bytes::from_static(s);
    // Arrive while the history is being read: one message it holds, one it does not.
    conn.offer(&f("old"), Some((room, id(1))));
    conn.offer(&f("joined"), Some((room, None)));
    conn.offer(&f("new"), Some((room, id(2))));
    // Not the room's: straight through.
    conn.offer(&f("user"), None);
    assert_eq!(conn.pop().as_deref(), Some("user"));
    assert_eq!(conn.pop(), None);
    assert_eq!(
        registry.complete_join(&conn, room, f("history"), id(1)),
        Completed::Joined(Offer::Queued)
    );
    assert!(conn.joined(room));
    let queued: Vec<String> = std::iter::from_fn(|| conn.pop())
        .map(|f| f.to_string())
        .collect();
    assert_eq!(queued, ["history", "joined", "new"]);
    // A message the history held that was still on its way through the bus when the join
    // completed is not sent again; newer ones flow.
    assert_eq!(conn.offer(&f("late old"), Some((room, id(1)))), Offer::Seen);
    conn.offer(&f("later"), Some((room, id(3))));
    assert_eq!(conn.pop().as_deref(), Some("later"));
    assert_eq!(conn.pop(), None);
    assert_eq!(registry.begin_join(&conn, room), BeginJoin::AlreadyJoined);
    let removed = registry.remove(&conn).unwrap();
    assert!(removed.user_last);
    assert_eq!(removed.rooms, vec![(room, true, true)]);
    assert!(registry.rooms.is_empty() && registry.users.is_empty());
}

#[test]
fn the_queue_is_bounded_in_bytes_behind_its_head() {
    let session = |phone: &str| Session {
        phone: Phone::parse(phone).unwrap(),
        name: None,
        token_digest: Token::generate().unwrap().digest(),
        created_at: 0,
    };
    let frame = |n: usize| Utf8Bytes::from("x".repeat(n));
    let conn = Conn::new(1, session(A), 1024, 1000);
    // A frame larger than the bound goes to an empty queue: it is the head, written next.
    assert_eq!(conn.offer(&frame(5000), None), Offer::Queued);
    // Behind it, up to the bound.
    for _ in 0..10 {
        assert_eq!(conn.offer(&frame(100), None), Offer::Queued);
    }
    // Taking the head makes room for what was behind it.
    assert_eq!(conn.pop().map(|f| f.len()), Some(5000));
    assert_eq!(conn.offer(&frame(100), None), Offer::Queued);
    // One byte past the bound behind the head: a slow consumer, its queue dropped.
    assert_eq!(conn.offer(&frame(1), None), Offer::Overflowed);
    assert_eq!(conn.closing(), Some(CloseReason::SlowConsumer));
    assert_eq!(conn.pop(), None);
    assert_eq!(conn.offer(&frame(1), None), Offer::Dropped);

    // Held room events count; a history larger than the bound still completes the join.
    let conn = Arc::new(Conn::new(2, session(B), 1024, 1000));
    let mut registry = Registry::default();
    registry.add(&conn);
    let room = RoomId::generate();
    assert!(matches!(
        registry.begin_join(&conn, room),
        BeginJoin::Joining(s) if s.is_first()
    ));
    for _ in 0..9 {
        assert_eq!(conn.offer(&frame(100), Some((room, None))), Offer::Queued);
    }
    assert_eq!(
        registry.complete_join(&conn, room, frame(50_000), None),
        Completed::Joined(Offer::Queued)
    );
    assert_eq!(conn.offer(&frame(100), None), Offer::Queued);
    assert_eq!(conn.offer(&frame(1), None), Offer::Overflowed);

    // Held events past the bound overflow while the join is still in progress.
    let conn = Arc::new(Conn::new(3, session(A), 1024, 1000));
    registry.add(&conn);
    registry.begin_join(&conn, room);
    for _ in 0..10 {
        assert_eq!(conn.offer(&frame(100), Some((room, None))), Offer::Queued);
    }
    assert_eq!(conn.offer(&frame(1), Some((room, None))), Offer::Overflowed);
}

#[tokio::test(start_paused = true)]
async fn a_reader_too_slow_for_the_byte_bound_is_closed_with_1008() {
    let w = World::new(WsConfig {
        send_queue_bytes: 2000,
        ..WsConfig::default()
    });
    let a = w.user(A).await;
    let mut slow = w.open(&a).await;
    slow.gate.set(true);
    let mut fine = w.open(&a).await;
    let presence = |i: usize| {
        Delivery::to_user(
            a.phone.clone(),
            Event::Presence {
                names: Default::default(),
                phone: Phone::parse(&format!("+1555000{i:04}")).unwrap(),
                online: true,
            },
        )
    };
    let size = wire::event_frame(&presence(0).event).len();
    // Far fewer frames than `send_queue`, but more bytes than the bound.
    let frames = 2000 / size + 2;
    assert!(frames < WsConfig::default().send_queue);
    for i in 0..frames {
        w.hub.deliver(&presence(i));
        // The fine socket reads as it goes.
        assert_eq!(
            fine.json().await["data"]["phone"],
            format!("+1555000{i:04}")
        );
    }
    assert_eq!(
        w.service
            .metrics()
            .slow_consumers_closed_total
            .load(Ordering::Relaxed),
        1
    );
    slow.gate.set(false);
    assert_eq!(
        slow.next().await,
        Message::Close(Some(CloseFrame {
            code: CloseCode::Policy,
            reason: "not reading fast enough".into(),
        }))
    );
    slow.hang_up().await;
    assert_eq!(w.hub.connections(), 1);
    fine.hang_up().await;
}

#[tokio::test(start_paused = true)]
async fn quiet_sockets_are_pinged_then_closed_and_answering_ones_stay() {
    let w = World::new(WsConfig {
        ping_interval: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(3),
        ..WsConfig::default()
    });
    let a = w.user(A).await;
    let mut quiet = w.open(&a).await;
    let mut alive = w.open(&a).await;
    let start = tokio::time::Instant::now();
    // The other one answers every ping and outlives the timeout several times over.
    let answering = tokio::spawn(async move {
        let mut pongs = 0;
        while start.elapsed() < Duration::from_secs(10) {
            match alive.next().await {
                Message::Ping(p) => {
                    alive.push(Ok(Message::Pong(p)));
                    pongs += 1;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        (alive, pongs)
    });
    assert!(matches!(quiet.next().await, Message::Ping(_)));
    assert!(matches!(quiet.next().await, Message::Ping(_)));
    assert_eq!(quiet.close_code().await, CloseCode::Normal);
    let closed_after = start.elapsed();
    assert!(
        closed_after >= Duration::from_secs(3) && closed_after < Duration::from_secs(4),
        "{closed_after:?}"
    );
    quiet.hang_up().await;

    let (mut alive, pongs) = answering.await.unwrap();
    assert!(pongs >= 9, "{pongs}");
    alive.send(r#"{"event":"ping","ack":1}"#);
    assert_eq!(alive.json().await["event"], "pong");
    alive.hang_up().await;
}

#[tokio::test(start_paused = true)]
async fn pings_due_within_one_timer_slot_go_out_together() {
    let w = World::new(WsConfig {
        ping_interval: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(30),
        ..WsConfig::default()
    });
    let slot = Duration::from_millis(100); // a tenth of the ping interval
    let a = w.user(A).await;
    // Slots are counted from the hub's making: both pings fall due inside the one ending at
    // 1.1 s.
    tokio::time::advance(Duration::from_millis(20)).await;
    let mut first = w.open(&a).await;
    let opened_first = tokio::time::Instant::now();
    tokio::time::advance(Duration::from_millis(30)).await;
    let mut second = w.open(&a).await;
    let opened_second = tokio::time::Instant::now();
    assert!(matches!(first.next().await, Message::Ping(_)));
    let first_at = tokio::time::Instant::now();
    assert!(matches!(second.next().await, Message::Ping(_)));
    let second_at = tokio::time::Instant::now();
    assert_eq!(first_at, second_at, "one wake-up for both");
    for (opened, at) in [(opened_first, first_at), (opened_second, second_at)] {
        let waited = at - opened;
        assert!(
            waited >= Duration::from_secs(1) && waited < Duration::from_secs(1) + slot,
            "pinged {waited:?} after opening"
        );
    }
    first.hang_up().await;
    second.hang_up().await;
}

#[tokio::test(start_paused = true)]
async fn frame_errors_close_with_their_codes() {
    let w = World::new(WsConfig::default());
    let a = w.user(A).await;
    let cases: [(Result<Message, WsError>, CloseCode); 4] = [
        (Ok(Message::binary(vec![1, 2, 3])), CloseCode::Unsupported),
        (
            Err(WsError::Capacity(CapacityError::MessageTooLong {
                size: 70_000,
                max_size: 65_536,
            })),
            CloseCode::Size,
        ),
        (Err(WsError::Utf8("invalid".into())), CloseCode::Invalid),
        (
            Err(WsError::Protocol(
                tokio_tungstenite::tungstenite::error::ProtocolError::UnmaskedFrameFromClient,
            )),
            CloseCode::Protocol,
        ),
    ];
    for (frame, code) in cases {
        let mut c = w.open(&a).await;
        c.push(frame);
        assert_eq!(c.close_code().await, code);
        c.hang_up().await;
    }
    // A client that closes first is let go without a second close frame.
    let mut c = w.open(&a).await;
    c.push(Ok(Message::Close(None)));
    c.push(Err(WsError::ConnectionClosed));
    tokio::time::timeout(WAIT, &mut c.task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(w.hub.connections(), 0);
}

#[tokio::test(start_paused = true)]
async fn shutdown_closes_every_socket_with_1001() {
    let w = World::new(WsConfig::default());
    let a = w.user(A).await;
    let b = w.user(B).await;
    let mut c1 = w.open(&a).await;
    let mut c2 = w.open(&b).await;
    w.hub.shutdown();
    assert_eq!(c1.close_code().await, CloseCode::Away);
    assert_eq!(c2.close_code().await, CloseCode::Away);
    // A socket arriving now is turned away the same way, before saying it is connected.
    let mut late = w.connect(&a);
    assert_eq!(late.close_code().await, CloseCode::Away);
    c1.hang_up().await;
    late.hang_up().await;
    // closed() waits for the last one, which lingers until its deadline without an answer.
    let waited = tokio::time::Instant::now();
    tokio::time::timeout(WAIT, w.hub.closed()).await.unwrap();
    assert!(waited.elapsed() <= CLOSE_LINGER);
    assert_eq!(w.hub.connections(), 0);
    drop(c2);
}

#[test]
fn accept_keys() {
    // RFC 6455's example.
    assert_eq!(
        Hub::accept_key("dGhlIHNhbXBsZSBub25jZQ==").as_deref(),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );
    for bad in [
        "",
        "dGhlIHNhbXBsZSBub25jZQ",
        "dGhlIHNhbXBsZSBub25jZQ=",
        "dGhlIHNhbXBsZSBub25jZQ===",
        "dGhlIHNhbXBsZSBub25jZ===",
        "dGhlIHNhbXBsZSBub25j*Q==",
        "dGhlIHNhbXBsZSBub25jZQAA",
        " dGhlIHNhbXBsZSBub25jZQ==",
        "dGhlIHNhbXBsZSBub25jZSBub25jZQ==",
    ] {
        assert_eq!(Hub::accept_key(bad), None, "{bad:?}");
    }
}

#[test]
fn tungstenite_limits_are_explicit() {
    let store = MemoryStore::new();
    let service = ChatService::new(
        Arc::new(store.clone()),
        Arc::new(store),
        Arc::new(SystemClock),
        Config::default(),
        NodeId::random(),
    );
    let hub = Hub::new(
        service,
        WsConfig {
            max_frame_bytes: 1000,
            ..WsConfig::default()
        },
    );
    let c = hub.websocket_config();
    assert_eq!(c.max_message_size, Some(1000));
    assert_eq!(c.max_frame_size, Some(1000));
    assert_eq!(c.read_buffer_size, READ_BUFFER_BYTES);
    assert_eq!(c.write_buffer_size, 0);
    assert!(c.max_write_buffer_size < 64 << 20);
    assert!(c.max_write_buffer_size > largest_server_frame(4096));
}

// ------------------------------------------------------------------ a store that goes down

/// `MemoryStore` that answers `store_unavailable` to everything while `down` is set.
struct Flaky {
    inner: MemoryStore,
    down: Arc<AtomicBool>,
}

impl Flaky {
    fn check(&self) -> chat_core::Result<()> {
        if self.down.load(Ordering::SeqCst) {
            Err(chat_core::Error::unavailable("down"))
        } else {
            Ok(())
        }
    }
}

chat_core::delegate_store!(Flaky, self => self.inner, call => {
    self.check()?;
    call.await
});

#[tokio::test(start_paused = true)]
async fn a_store_outage_answers_store_unavailable_and_keeps_the_socket() {
    let memory = MemoryStore::new();
    let down = Arc::new(AtomicBool::new(false));
    let store = Flaky {
        inner: memory.clone(),
        down: Arc::clone(&down),
    };
    let w = World::with_store(
        Arc::new(store),
        Arc::new(memory),
        Arc::new(SystemClock),
        WsConfig::default(),
        None,
    );
    let a = w.user(A).await;
    let b = w.user(B).await;
    let room = w.room(&a, &b).await;
    let mut c = w.open(&a).await;

    down.store(true, Ordering::SeqCst);
    c.send_json(json!({"event": "send_message", "data": {"room": room.to_string(), "message": "hi"}, "ack": 1}));
    let v = c.json().await;
    assert_eq!(
        (v["event"].as_str(), v["ack"].as_i64()),
        (Some("error"), Some(1))
    );
    assert_eq!(v["data"]["code"], "store_unavailable");
    c.send_json(json!({"event": "join_room", "data": {"room": room.to_string()}}));
    assert_eq!(c.json().await["data"]["code"], "store_unavailable");
    // A socket opening during the outage is told why and closed.
    let mut late = w.connect(&b);
    assert_eq!(late.json().await["data"]["code"], "store_unavailable");
    assert_eq!(late.close_code().await, CloseCode::Again);
    late.hang_up().await;

    down.store(false, Ordering::SeqCst);
    c.send_json(json!({"event": "join_room", "data": {"room": room.to_string()}, "ack": 2}));
    assert_eq!(c.json().await["event"], "room_history");
    assert_eq!(c.json().await["event"], "user_joined");
    c.send_json(json!({"event": "send_message", "data": {"room": room.to_string(), "message": "back"}, "ack": 3}));
    let mut got = vec![c.json().await, c.json().await];
    got.sort_by_key(|v| v["event"].as_str().unwrap_or_default().to_owned());
    assert_eq!(events(&got), ["ack", "receive_message"]);
    c.hang_up().await;
    assert_eq!(w.hub.connections(), 0);
}

/// Every idle socket is one task, so the socket future's size is per-socket memory. Each
/// async layer that takes the WebSocket (or the session) by value and moves it on keeps a dead
/// copy of it: that once made this future 2.2 KB, of which 1.2 KB were such copies.
#[tokio::test]
async fn the_socket_task_keeps_no_dead_copies() {
    let w = World::new(WsConfig::default());
    let a = w.user(A).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tcp = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let ws = std::mem::size_of::<
        tokio_tungstenite::WebSocketStream<crate::coalesce::Coalesced<tokio::net::TcpStream>>,
    >();
    let task = std::mem::size_of_val(&w.hub.serve(tcp, a.clone()));
    // One WebSocket, the loop's state and timer, the open/close bookkeeping; not two sockets.
    assert!(
        task < 2 * ws + 512,
        "socket future of {task} bytes (WebSocket {ws})"
    );
}

/// A second socket of a user or a room waits for the node's subscription that the first one
/// is making, and both are released however the first one's subscribe ends.
#[tokio::test]
async fn later_sockets_wait_for_the_first_ones_subscription() {
    use crate::registry::Subscribe;
    let session = |phone: &str| Session {
        phone: Phone::parse(phone).unwrap(),
        name: None,
        token_digest: Token::generate().unwrap().digest(),
        created_at: 0,
    };
    let first = Arc::new(Conn::new(1, session(A), 16, SEND_QUEUE_BYTES));
    let second = Arc::new(Conn::new(2, session(A), 16, SEND_QUEUE_BYTES));
    let mut registry = Registry::default();
    let Some(Subscribe::First(mine)) = registry.add(&first) else {
        panic!("the first socket subscribes");
    };
    let Some(Subscribe::Wait(theirs)) = registry.add(&second) else {
        panic!("the second socket waits");
    };
    assert_eq!(mine, theirs);
    let guard = mine.ready_on_drop();
    let waiting = tokio::spawn(async move { theirs.wait().await });
    tokio::task::yield_now().await;
    assert!(!waiting.is_finished() && !mine.is_ready());
    // The subscribe ended (here: its future was dropped mid-way): waiters go on.
    drop(guard);
    waiting.await.unwrap();
    assert!(mine.is_ready());

    // Rooms: a new subscription each time the node goes from none to one socket in the room.
    let room = RoomId::generate();
    let BeginJoin::Joining(Subscribe::First(one)) = registry.begin_join(&first, room) else {
        panic!("first in the room");
    };
    let BeginJoin::Joining(Subscribe::Wait(same)) = registry.begin_join(&second, room) else {
        panic!("second in the room");
    };
    assert_eq!(one, same);
    assert!(!registry.abort_join(&first, room));
    assert!(registry.abort_join(&second, room));
    let BeginJoin::Joining(Subscribe::First(fresh)) = registry.begin_join(&second, room) else {
        panic!("first again");
    };
    assert_ne!(one, fresh);
}
