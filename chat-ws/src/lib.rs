//! # chat-ws
//!
//! The WebSocket adapter: the contract's event protocol over raw tokio-tungstenite, on a
//! connection that `chat-http` has already upgraded. It owns the wire format of socket frames,
//! the per-socket limits and timers, and the local registry of sockets ([`Hub`]) that receives
//! this node's deliveries from the bus. It knows nothing of Redis or of HTTP routing, and no
//! chat rule: every decision about users, rooms and messages is a [`ChatService`] call.
//!
//! ## Memory per socket
//!
//! A node is meant to hold tens of thousands of mostly idle sockets, so an idle socket costs:
//! one task (one `select`-like poll loop over its reads, its outgoing queue, one timer and its
//! close flag; no second task, no channel), tungstenite's read buffer ([`READ_BUFFER_BYTES`])
//! and a write buffer that only grows to the largest frame written, write-coalescing and
//! read-ahead buffers that exist only while they hold bytes (see `coalesce`), a queue that
//! holds no allocation while empty, and its entries in the registry. Work that needs the store runs in
//! a boxed future that exists only while a frame is being handled.
//!
//! **Invariants:** every queue is bounded (`WsConfig::send_queue` frames and
//! `WsConfig::send_queue_bytes` bytes plus one frame per socket, held room events included); [`EventSink::deliver`] never blocks and never awaits; one socket's
//! failure never touches another; the registry's locks are never held across an `.await`;
//! every bus `subscribe` is undone by exactly one `unsubscribe`, issued after it, and a room
//! that is closed or expires keeps no socket of this node and, once its joins in progress
//! have ended, no subscription.

mod coalesce;
mod registry;
mod socket;
mod wire;

pub use wire::message_json;

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};
use std::time::Duration;

use chat_core::{
    Audience, ChatService, ConnKey, Delivery, Event, EventSink, Except, MessageId, RoomId, Session,
};
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};
use tokio_util::task::TaskTracker;

use crate::registry::{Conn, Offer, Registry, Subscribe};

/// tungstenite's read buffer per socket. It is allocated when the socket opens and lives as
/// long as it, so it is small: chat frames are a few hundred bytes, and a larger frame is read
/// in several system calls (tungstenite grows the buffer to the frame's size, up to
/// `max_frame_bytes`, when one arrives).
pub const READ_BUFFER_BYTES: usize = 1024;

/// The most bytes a socket's write coalescing holds before it writes them out (see
/// [`Hub::serve`]). Only a socket with unwritten bytes holds any: the buffer is freed once it
/// has been written.
pub const COALESCE_BYTES: usize = 32 * 1024;

/// How long a closing socket waits for its close frame to be written and answered before the
/// connection is dropped anyway.
pub const CLOSE_LINGER: Duration = Duration::from_secs(3);

/// Socket timers (ping, idle timeout) fire on multiples of this since the hub was made (or of a
/// tenth of the ping interval, if shorter), so the sockets due within one slot are served in one
/// wake-up of the runtime rather than one each: with thousands of idle sockets the wake-ups,
/// not the pings, were most of their CPU. A ping or an idle close is at most this late.
pub const TIMER_SLOT: Duration = Duration::from_millis(100);

/// The shortest ping interval and idle timeout; shorter ones are raised to it.
const MIN_PERIOD: Duration = Duration::from_millis(1);

/// Per-socket limits and timers (the contract's flags).
#[derive(Debug, Clone)]
pub struct WsConfig {
    /// Largest client frame; bigger closes the socket with 1009.
    pub max_frame_bytes: usize,
    /// Token bucket refill per second over client frames.
    pub frames_per_sec: u64,
    /// Token bucket burst.
    pub frame_burst: u64,
    /// The server pings every socket this often.
    pub ping_interval: Duration,
    /// A socket silent this long (no frame, no pong) is closed with 1000.
    pub idle_timeout: Duration,
    /// Outgoing frames queued per socket before it counts as a slow reader (closed with 1008).
    pub send_queue: usize,
    /// Outgoing bytes (frame payloads) queued per socket behind the frame it writes next
    /// before it counts as a slow reader (closed with 1008). Held room events count too. The
    /// frame at the head of the queue is not counted, so one frame larger than this (a long
    /// `room_history`) still goes out; a socket's queue thus holds at most this many bytes
    /// plus one frame.
    pub send_queue_bytes: usize,
}

/// The default [`WsConfig::send_queue_bytes`]: 1 MiB.
pub const SEND_QUEUE_BYTES: usize = 1 << 20;

impl Default for WsConfig {
    fn default() -> WsConfig {
        WsConfig {
            max_frame_bytes: 65_536,
            frames_per_sec: 20,
            frame_burst: 40,
            ping_interval: Duration::from_secs(25),
            idle_timeout: Duration::from_secs(60),
            send_queue: 1024,
            send_queue_bytes: SEND_QUEUE_BYTES,
        }
    }
}

/// The sockets of this node. Cheap to clone. Attach it to the bus as the sink.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

struct Inner {
    service: ChatService,
    config: WsConfig,
    /// tungstenite's limits, derived once from `config` and the service's message size.
    ws_config: WebSocketConfig,
    registry: RwLock<Registry>,
    /// Every socket being served; `closed()` waits on it.
    tracker: TaskTracker,
    /// Where the timer slots ([`TIMER_SLOT`]) are counted from.
    epoch: tokio::time::Instant,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("config", &self.inner.config)
            .field("connections", &self.connections())
            .finish_non_exhaustive()
    }
}

/// The bus holds the hub through this, so the service → bus → hub → service cycle does not
/// keep everything alive forever.
struct WeakHub(Weak<Inner>);

impl EventSink for WeakHub {
    fn deliver(&self, delivery: &Delivery) {
        if let Some(inner) = self.0.upgrade() {
            Hub { inner }.deliver(delivery);
        }
    }
}

/// How long a socket waits for the subscription another socket of this node is making for
/// the same user or room (see `registry::Subscription`). The subscribing side is bounded by
/// the bus (the Redis bus gives up after its operation timeout); this bounds the wait whatever
/// the bus.
pub const SUBSCRIBE_WAIT: Duration = Duration::from_secs(5);

/// The largest frame the server ever sends: a `room_history` of the most messages a join
/// returns, each at the longest text, every character escaped (`\u001f` is 6 bytes), plus
/// room for the other fields. tungstenite refuses to queue a frame larger than its write
/// buffer bound, so the bound must fit this one.
fn largest_server_frame(max_message_chars: usize) -> usize {
    const FIELDS: usize = 1024;
    chat_core::HISTORY_LIMIT
        .max
        .saturating_mul(max_message_chars.saturating_mul(6).saturating_add(FIELDS))
        .saturating_add(FIELDS)
}

impl Hub {
    /// A hub serving sockets for `service`; attaches itself to the service's bus as its sink.
    pub fn new(service: ChatService, config: WsConfig) -> Hub {
        // A zero period would make the socket loop spin on its timer.
        let config = WsConfig {
            ping_interval: config.ping_interval.max(MIN_PERIOD),
            idle_timeout: config.idle_timeout.max(MIN_PERIOD),
            ..config
        };
        let max_out = largest_server_frame(service.config().max_message_chars);
        let ws_config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER_BYTES)
            // Hand each frame straight to the IO: `Hub::serve` wraps it in a write-coalescing
            // buffer that exists only while it holds bytes, where tungstenite's own buffer
            // would keep the capacity of its largest batch for the socket's whole life.
            .write_buffer_size(0)
            // The write buffer only holds what the kernel has not taken yet: the socket task
            // waits for it to drain before writing more, so this bound is one frame.
            .max_write_buffer_size(max_out.saturating_add(4096))
            .max_message_size(Some(config.max_frame_bytes))
            .max_frame_size(Some(config.max_frame_bytes));
        let inner = Arc::new(Inner {
            service,
            config,
            ws_config,
            registry: RwLock::default(),
            tracker: TaskTracker::new(),
            epoch: tokio::time::Instant::now(),
        });
        inner
            .service
            .bus()
            .attach(Arc::new(WeakHub(Arc::downgrade(&inner))));
        Hub { inner }
    }

    /// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`; `None` when the key is not
    /// 24 base64 characters that decode to 16 bytes (the upgrade is then refused with 400).
    pub fn accept_key(client_key: &str) -> Option<String> {
        let b = client_key.as_bytes();
        let base64 = |c: &u8| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/';
        // 16 bytes are 22 base64 digits and two `=` of padding.
        let valid = b.len() == 24 && b[..22].iter().all(base64) && &b[22..] == b"==";
        valid.then(|| {
            tokio_tungstenite::tungstenite::handshake::derive_accept_key(client_key.as_bytes())
        })
    }

    /// Serves one upgraded connection of an authenticated session until it closes.
    ///
    /// Not an `async fn`: each async layer between here and the socket loop would keep its own
    /// dead copy of the arguments it moved on, in every idle socket's task.
    pub fn serve<IO>(&self, io: IO, session: Session) -> impl Future<Output = ()> + Send + use<IO>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        socket::serve_io(self.clone(), io, socket::new_conn(self, session))
    }

    /// Serves a WebSocket that is already set up (any `Sink` + `Stream` of tungstenite
    /// messages), until it closes. [`Hub::serve`] is this over a raw upgraded connection.
    pub fn serve_socket<S>(
        &self,
        ws: S,
        session: Session,
    ) -> impl Future<Output = ()> + Send + use<S>
    where
        S: Stream<Item = Result<Message, WsError>> + Sink<Message, Error = WsError> + Unpin + Send,
    {
        socket::serve_socket(self.clone(), ws, socket::new_conn(self, session))
    }

    /// The tungstenite configuration [`Hub::serve`] uses: `max_frame_bytes` as the message and
    /// frame limit, small buffers, a bounded write buffer.
    pub fn websocket_config(&self) -> WebSocketConfig {
        self.inner.ws_config
    }

    /// The per-socket limits.
    pub fn config(&self) -> &WsConfig {
        &self.inner.config
    }

    /// `t` rounded up to the end of its timer slot (see [`TIMER_SLOT`]).
    pub(crate) fn timer_slot_end(&self, t: tokio::time::Instant) -> tokio::time::Instant {
        let slot = TIMER_SLOT
            .min(self.inner.config.ping_interval / 10)
            .as_nanos()
            .max(1);
        let since = t.saturating_duration_since(self.inner.epoch).as_nanos();
        let end = since.div_ceil(slot).saturating_mul(slot);
        let end = Duration::from_nanos(u64::try_from(end).unwrap_or(u64::MAX));
        self.inner.epoch.checked_add(end).unwrap_or(t)
    }

    /// Sockets open on this node now.
    pub fn connections(&self) -> usize {
        self.read().open
    }

    /// Starts the shutdown: every socket is closed with 1001.
    pub fn shutdown(&self) {
        {
            let mut registry = self.write();
            registry.shutting_down = true;
            for conn in registry.all() {
                conn.request_close(registry::CloseReason::Shutdown);
            }
        }
        self.inner.tracker.close();
    }

    /// Resolves when every socket has closed after [`Hub::shutdown`].
    pub async fn closed(&self) {
        self.inner.tracker.wait().await;
    }

    // ------------------------------------------------------------------ for the socket tasks

    fn service(&self) -> &ChatService {
        &self.inner.service
    }

    fn read(&self) -> RwLockReadGuard<'_, Registry> {
        // Registry updates never panic half-way; a poisoned lock still holds a whole registry.
        self.inner
            .registry
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Registry> {
        self.inner
            .registry
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn conn_key(&self, conn: &Conn) -> ConnKey {
        ConnKey {
            node: self.service().node().clone(),
            id: conn.id,
        }
    }

    /// Queues one of a socket's own replies.
    fn reply(&self, conn: &Conn, frame: Utf8Bytes) {
        self.count(conn.offer(&frame, None));
    }

    fn count(&self, offer: Offer) {
        if offer == Offer::Overflowed {
            self.service()
                .metrics()
                .slow_consumers_closed_total
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    async fn subscribe(&self, audience: Audience) {
        if let Err(e) = self.service().bus().subscribe(audience.clone()).await {
            tracing::warn!(error = %e, ?audience, "bus subscribe failed");
        }
    }

    /// Makes sure the node's subscription to `audience` is in place before the socket that
    /// `sub` came with goes on: the first socket subscribes, later ones wait for it (at most
    /// [`SUBSCRIBE_WAIT`]; a subscribe that failed leaves the channel to the bus's own retry).
    async fn subscribed(&self, audience: Audience, sub: Subscribe) {
        match sub {
            Subscribe::First(sub) => {
                let _ready = sub.ready_on_drop();
                self.subscribe(audience).await;
            }
            Subscribe::Wait(sub) => {
                if tokio::time::timeout(SUBSCRIBE_WAIT, sub.wait())
                    .await
                    .is_err()
                {
                    tracing::warn!(?audience, "gave up waiting for another socket's subscribe");
                }
            }
        }
    }

    async fn unsubscribe(&self, audience: Audience) {
        if let Err(e) = self.service().bus().unsubscribe(audience.clone()).await {
            tracing::warn!(error = %e, ?audience, "bus unsubscribe failed");
        }
    }

    fn excluded(&self, conn: &Conn, except: Option<&Except>) -> bool {
        match except {
            None => false,
            Some(Except::Conn(key)) => key.id == conn.id && &key.node == self.service().node(),
            Some(Except::User(phone)) => conn.phone() == phone,
        }
    }
}

impl EventSink for Hub {
    fn deliver(&self, delivery: &Delivery) {
        self.offer_all(delivery);
        // Queued first, so a socket is told the room is gone before it stops being in it.
        if let Event::RoomClosed { room, .. } | Event::RoomExpired { room } = &delivery.event {
            self.room_ended(*room);
        }
    }
}

impl Hub {
    /// Queues a delivery to the local sockets it addresses.
    fn offer_all(&self, delivery: &Delivery) {
        let registry = self.read();
        let targets = match &delivery.audience {
            Audience::User(phone) => registry.users.get(phone),
            Audience::Room(room) => registry.rooms.get(room),
        };
        let Some(targets) = targets.filter(|t| !t.is_empty()) else {
            return;
        };
        // Encoded once; every recipient gets the same bytes.
        let frame = wire::event_frame(&delivery.event);
        let room: Option<(RoomId, Option<MessageId>)> = match (&delivery.audience, &delivery.event)
        {
            (Audience::Room(room), Event::ReceiveMessage(m)) => Some((*room, Some(m.id))),
            (Audience::Room(room), _) => Some((*room, None)),
            (Audience::User(_), _) => None,
        };
        for conn in targets {
            if !self.excluded(conn, delivery.except.as_ref()) {
                self.count(conn.offer(&frame, room));
            }
        }
    }

    /// A room was closed or expired: no local socket stays in it, and once none is, the node
    /// stops listening to it. Sockets may stay open for hours after their room ended; without
    /// this each would keep its registry entry and the node's bus subscription until it left.
    ///
    /// The event comes once per member (and a node may have sockets of both): the first one
    /// does the work, the second finds nothing. The unsubscribe pairs with the subscribe of the
    /// socket that made the node join the room, exactly as for `leave_room`: the registry's
    /// last-socket transition decides, under its lock, so a socket's later leave or close finds
    /// the room gone and does not unsubscribe again.
    fn room_ended(&self, room: RoomId) {
        if !self.read().rooms.contains_key(&room) {
            return;
        }
        if !self.write().end_room(room) {
            return;
        }
        // `deliver` must not await: the bus call runs on its own task, counted by `closed()`.
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                let hub = self.clone();
                rt.spawn(
                    self.inner
                        .tracker
                        .track_future(async move { hub.unsubscribe(Audience::Room(room)).await }),
                );
            }
            Err(_) => tracing::warn!(%room, "no runtime to unsubscribe from an ended room"),
        }
    }
}

#[cfg(test)]
mod tests;
