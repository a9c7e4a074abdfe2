//! One socket's life: open (register, `connect`, `connection_status`), the loop, and the close
//! (leave its rooms, unregister, `disconnect`).
//!
//! The loop is one task and one poll function over everything the socket waits for: the next
//! client frame, its outgoing queue (through the sink's readiness), one timer (ping, idle,
//! close linger), its close flag, and the frame being handled. A frame that needs the store is
//! handled by a boxed future polled from the same loop, so the socket keeps writing (and its
//! timers keep running) while the store answers; the next frame is read only once it is done,
//! which keeps a socket's frames in order. `send_message` frames read in a row (a client's
//! burst, already in the read buffers) are handled as one: one store call for all of them
//! (one Redis round trip), their acks queued in order and written together.

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll};

use chat_core::limits::TokenBucket;
use chat_core::{Audience, Error, MessageId, Outgoing, RoomId, Session};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use serde_json::value::RawValue;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, Sleep, sleep_until};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};

use crate::Hub;
use crate::coalesce::Coalesced;
use crate::registry::{BeginJoin, CloseReason, Completed, Conn};
use crate::wire::{self, Ack, Command, MAX_BAD_FRAMES, Rejected, Request, SocketError};

/// A new socket of `session` on this node, not registered yet.
pub(crate) fn new_conn(hub: &Hub, session: Session) -> Arc<Conn> {
    let config = hub.config();
    Arc::new(Conn::new(
        hub.service().new_conn().id,
        session,
        config.send_queue,
        config.send_queue_bytes,
    ))
}

/// Serves a raw upgraded connection: the coalescing wrapper, tungstenite over it, the socket.
///
/// The WebSocket is made here and only borrowed below: an `async fn` that takes a value and
/// moves it on keeps a dead copy of it for as long as it runs, and these futures are every
/// idle socket's memory.
pub(crate) async fn serve_io<IO>(hub: Hub, io: IO, conn: Arc<Conn>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // tungstenite hands every frame to the IO at once; the coalescing wrapper holds them until
    // the socket task flushes, once per turn, so a turn's frames cost one write; and it reads
    // ahead, so a burst of client frames costs one read.
    let io = Coalesced::new(io, crate::COALESCE_BYTES);
    let config = hub.inner.ws_config;
    let mut ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
    run(hub, &mut ws, conn).await;
}

/// Serves a WebSocket given as a `Sink` + `Stream`.
pub(crate) async fn serve_socket<S>(hub: Hub, ws: S, conn: Arc<Conn>)
where
    S: Stream<Item = Result<Message, WsError>> + Sink<Message, Error = WsError> + Unpin + Send,
{
    run(hub, &mut ThroughSink(ws), conn).await;
}

/// What the socket loop drives: a `Stream` + `Sink` of tungstenite messages, and a way to send
/// text frames (every frame but pings and the close) that may bypass the `Sink`.
pub(crate) trait Socket:
    Stream<Item = Result<Message, WsError>> + Sink<Message, Error = WsError> + Unpin
{
    /// Ready when [`Socket::send_text`] may be called (the `Sink` must be ready too).
    fn poll_text_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), WsError>>;

    /// Sends a text frame.
    fn send_text(&mut self, frame: Utf8Bytes) -> Result<(), WsError>;
}

/// tungstenite over the coalescing wrapper: text frames go straight into the wrapper's write
/// buffer, skipping tungstenite's write path (its per-frame work, and its copy into a buffer
/// that keeps its largest size for the socket's life). Its own frames (pongs, pings, the
/// close) still go through it; the wrapper takes every frame whole, so they never interleave,
/// and the loop sends nothing after the close.
impl<IO: AsyncRead + AsyncWrite + Unpin> Socket for WebSocketStream<Coalesced<IO>> {
    fn poll_text_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        self.get_mut().poll_text_ready(cx).map_err(WsError::Io)
    }

    fn send_text(&mut self, frame: Utf8Bytes) -> Result<(), WsError> {
        self.get_mut().push_text(frame.as_bytes());
        Ok(())
    }
}

/// Any other `Sink` + `Stream` (the tests' channels): text frames go through the `Sink`.
struct ThroughSink<S>(S);

impl<S: Stream + Unpin> Stream for ThroughSink<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        self.0.poll_next_unpin(cx)
    }
}

impl<S: Sink<Message> + Unpin> Sink<Message> for ThroughSink<S> {
    type Error = S::Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready_unpin(cx)
    }

    fn start_send(mut self: Pin<&mut Self>, item: Message) -> Result<(), S::Error> {
        self.0.start_send_unpin(item)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_flush_unpin(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_close_unpin(cx)
    }
}

impl<S> Socket for ThroughSink<S>
where
    S: Stream<Item = Result<Message, WsError>> + Sink<Message, Error = WsError> + Unpin,
{
    fn poll_text_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        Poll::Ready(Ok(()))
    }

    fn send_text(&mut self, frame: Utf8Bytes) -> Result<(), WsError> {
        self.0.start_send_unpin(Message::Text(frame))
    }
}

/// Serves one socket until it is closed and cleaned up.
async fn run<S: Socket + Send>(hub: Hub, ws: &mut S, conn: Arc<Conn>) {
    // Counted from the first moment, so `closed()` waits for the cleanup too.
    let _tracked = hub.inner.tracker.token();
    // Queued before the socket is registered, so it is the first frame whatever arrives.
    hub.reply(&conn, wire::connection_status(conn.phone().as_str()));
    let mut open = Opened::new(hub.clone(), Arc::clone(&conn));
    open.start().await;
    drive(ws, &hub, &conn).await;
    open.close().await;
}

/// A socket's registration, undone exactly once: by [`Opened::close`], or, if the socket's
/// future is dropped mid-way, by a task spawned from `drop`.
struct Opened {
    hub: Hub,
    conn: Arc<Conn>,
    /// In the registry (and counted in `chat_connections`).
    registered: bool,
    /// `ChatService::connect` succeeded.
    connected: bool,
    done: bool,
}

impl Opened {
    fn new(hub: Hub, conn: Arc<Conn>) -> Opened {
        Opened {
            hub,
            conn,
            registered: false,
            connected: false,
            done: false,
        }
    }

    async fn start(&mut self) {
        let hub = &self.hub;
        let conn = &self.conn;
        let Some(sub) = hub.write().add(conn) else {
            conn.clear();
            conn.request_close(CloseReason::Shutdown);
            return;
        };
        self.registered = true;
        let metrics = hub.service().metrics();
        metrics
            .connections
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Before `connect` (and so before `connection_status` goes out): an event for the
        // user published after that reaches this node.
        hub.subscribed(Audience::User(conn.phone().clone()), sub)
            .await;
        let key = hub.conn_key(conn);
        match Box::pin(hub.service().connect(conn.phone(), &key)).await {
            Ok(()) => self.connected = true,
            Err(e) => {
                tracing::warn!(error = %e, "socket not counted online; closing it");
                conn.clear();
                hub.reply(conn, wire::error_frame(None, &e.into()));
                conn.request_close(CloseReason::StoreDown);
            }
        }
    }

    /// Unregisters now and returns what is left to do (announce, unsubscribe, disconnect).
    fn finish(&mut self) -> impl Future<Output = ()> + Send + 'static {
        self.done = true;
        let hub = self.hub.clone();
        let conn = Arc::clone(&self.conn);
        let removed = if self.registered {
            hub.write().remove(&conn)
        } else {
            None
        };
        if removed.is_some() {
            hub.service()
                .metrics()
                .connections
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
        let connected = self.connected;
        async move {
            let service = hub.service();
            let key = hub.conn_key(&conn);
            let me = conn.phone();
            if let Some(removed) = removed {
                for (room, joined, last) in removed.rooms {
                    if joined {
                        service.announce_leave(me, room, &key).await;
                    }
                    if last {
                        hub.unsubscribe(Audience::Room(room)).await;
                    }
                }
                if removed.user_last {
                    hub.unsubscribe(Audience::User(me.clone())).await;
                }
            }
            if connected && let Err(e) = service.disconnect(me, &key).await {
                tracing::warn!(error = %e, "socket close not recorded");
            }
        }
    }

    async fn close(mut self) {
        Box::pin(self.finish()).await;
    }
}

impl Drop for Opened {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let rest = self.finish();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(self.hub.inner.tracker.track_future(rest));
        }
    }
}

/// Client frames being handled by the service (one frame, or a burst of `send_message`);
/// resolves to which of their answers were `bad_request`/`unknown_event`.
type Handling = Pin<Box<dyn Future<Output = Answers> + Send>>;

/// The most `send_message` frames handled together: one store call, one flush of their acks.
pub(crate) const MAX_BURST: usize = 64;

/// Which answers of a handling, in frame order, were bad (bit `i` for the `i`-th answer).
#[derive(Debug, Default, Clone, Copy)]
struct Answers {
    count: u32,
    bad: u64,
}

impl Answers {
    fn one(bad: bool) -> Answers {
        let mut a = Answers::default();
        a.push(bad);
        a
    }

    fn push(&mut self, bad: bool) {
        if bad && self.count < 64 {
            self.bad |= 1 << self.count;
        }
        self.count += 1;
    }

    /// Whether each answer was bad, in frame order.
    fn each(self) -> impl Iterator<Item = bool> {
        (0..self.count).map(move |i| i < 64 && self.bad & (1 << i) != 0)
    }
}

/// What a client text frame asks for, decided before anything is done about it.
enum Action {
    /// Answered at once, without the service; whether the answer counts as bad.
    Reply(Utf8Bytes, bool),
    /// A frame for the service, handled alone.
    Handle(Option<Ack>, Command),
    /// A `send_message`, handled together with those read right after it.
    Send(Option<Ack>, wire::SendMessage),
}

/// The loop's state for one socket.
struct Driver<'a> {
    hub: &'a Hub,
    conn: &'a Arc<Conn>,
    /// Over every client text frame.
    bucket: TokenBucket,
    /// Frames answered `bad_request`/`unknown_event` in a row.
    bad_run: u32,
    /// When the client was last heard from (any frame, pongs included).
    last_heard: Instant,
    next_ping: Instant,
    ping_due: bool,
    /// The frame (or burst) being handled, if any; no frame is read until it is done.
    handling: Option<Handling>,
    /// `send_message` frames read in a row and not handled yet: handled together once no
    /// further frame is at hand (or [`MAX_BURST`] are), so a burst costs one store call and
    /// its acks one write.
    burst: Vec<(Option<Ack>, wire::SendMessage)>,
    /// The frame read after a burst, acted on once the burst is answered, so answers keep
    /// the order of the frames.
    deferred: Option<Action>,
    /// Frames were started but not flushed yet.
    unflushed: bool,
    /// The read side ended (peer gone, error, or close handshake done).
    read_done: bool,
    /// The write side failed: nothing more can be sent.
    broken: bool,
    /// Set once the socket starts closing.
    closing: Option<Closing>,
}

struct Closing {
    reason: CloseReason,
    /// The close frame was given to the sink (or none is needed: the peer closed).
    frame_sent: bool,
    /// The connection is dropped at this point whatever the peer does.
    deadline: Instant,
    expired: bool,
}

async fn drive<S: Socket>(ws: &mut S, hub: &Hub, conn: &Arc<Conn>) {
    let config = hub.config();
    let now = Instant::now();
    let mut driver = Driver {
        hub,
        conn,
        bucket: TokenBucket::per_second(
            config.frames_per_sec,
            config.frame_burst,
            hub.service().now(),
        ),
        bad_run: 0,
        last_heard: now,
        next_ping: now + config.ping_interval,
        ping_due: false,
        handling: None,
        burst: Vec::new(),
        deferred: None,
        unflushed: false,
        read_done: false,
        broken: false,
        closing: None,
    };
    let mut timer = pin!(sleep_until(driver.next_timer()));
    poll_fn(|cx| driver.poll(ws, timer.as_mut(), cx)).await;
}

impl Driver<'_> {
    fn next_timer(&self) -> Instant {
        match &self.closing {
            Some(c) => c.deadline,
            None => self.hub.timer_slot_end(
                self.next_ping
                    .min(self.last_heard + self.hub.config().idle_timeout),
            ),
        }
    }

    /// One turn of the loop: makes every bit of progress possible, then waits.
    fn poll<S: Socket>(
        &mut self,
        ws: &mut S,
        mut timer: Pin<&mut Sleep>,
        cx: &mut Context<'_>,
    ) -> Poll<()> {
        self.conn.register(cx.waker());
        let mut poll_timer = true;
        loop {
            let mut progress = false;

            if let Some(handling) = self.handling.as_mut()
                && let Poll::Ready(answers) = handling.as_mut().poll(cx)
            {
                self.handling = None;
                for bad in answers.each() {
                    self.answered(bad);
                }
                progress = true;
            }

            if self.closing.is_none()
                && let Some(reason) = self.conn.closing()
            {
                self.start_closing(reason, timer.as_mut());
                poll_timer = true;
            }

            progress |= self.feed(ws, cx);

            if self.handling.is_none()
                && let Some(action) = self.deferred.take()
            {
                self.act(action);
                progress = true;
            }

            // Every frame at hand (tungstenite's and the read-ahead's buffers), so a burst of
            // messages is handled as one.
            while self.handling.is_none()
                && self.deferred.is_none()
                && self.burst.len() < MAX_BURST
                && !self.read_done
                && !self.broken
            {
                let Poll::Ready(item) = ws.poll_next_unpin(cx) else {
                    break;
                };
                self.on_read(item);
                progress = true;
                if self.closing.is_some() || self.conn.closing().is_some() {
                    break;
                }
            }

            if self.handling.is_none() && !self.burst.is_empty() {
                let burst = std::mem::take(&mut self.burst);
                self.handling = Some(Box::pin(handle_burst(
                    self.hub.clone(),
                    Arc::clone(self.conn),
                    burst,
                )));
                progress = true;
            }

            // The timer keeps its waker once polled: it needs polling once per wake-up, and
            // again only after a reset.
            let expired = self.closing.as_ref().is_some_and(|c| c.expired);
            if !expired && poll_timer {
                poll_timer = false;
                if timer.as_mut().poll(cx).is_ready() {
                    self.on_timer(timer.as_mut());
                    poll_timer = true;
                    progress = true;
                }
            }

            // One flush per turn, once nothing else moves: everything the turn wrote (acks,
            // echoes, deliveries, the answers to every frame read meanwhile) leaves in one
            // system call (see `crate::coalesce`).
            if !progress && self.unflushed {
                progress = self.flush(ws, cx);
            }

            if self.finished() {
                return Poll::Ready(());
            }
            if !progress {
                return Poll::Pending;
            }
        }
    }

    fn finished(&self) -> bool {
        if self.handling.is_some() || !self.burst.is_empty() || self.deferred.is_some() {
            // A frame being handled may hold a bus subscription half-made; let it finish
            // (the service answers within its store timeout). Frames read are answered.
            return false;
        }
        match &self.closing {
            _ if self.broken => true,
            Some(c) if c.expired => true,
            // A read error may just have asked for a close that has yet to be sent.
            None => self.read_done && self.conn.closing().is_none(),
            Some(c) => {
                self.read_done
                    && (c.reason == CloseReason::ByPeer || (c.frame_sent && !self.unflushed))
            }
        }
    }

    fn start_closing(&mut self, reason: CloseReason, timer: Pin<&mut Sleep>) {
        let deadline = Instant::now() + crate::CLOSE_LINGER;
        self.closing = Some(Closing {
            reason,
            frame_sent: reason.frame().is_none(),
            deadline,
            expired: false,
        });
        timer.reset(deadline);
    }

    /// Hands the sink what is due: a ping, queued frames, then the close frame, without
    /// flushing. Whether anything moved.
    fn feed<S: Socket>(&mut self, ws: &mut S, cx: &mut Context<'_>) -> bool {
        if self.broken {
            return false;
        }
        let mut progress = false;
        loop {
            let ready = match ws.poll_ready_unpin(cx) {
                Poll::Ready(Ok(())) => ws.poll_text_ready(cx),
                other => other,
            };
            match ready {
                Poll::Pending => break,
                Poll::Ready(Err(_)) => {
                    self.broken = true;
                    return true;
                }
                Poll::Ready(Ok(())) => {}
            }
            let Some(message) = self.next_outgoing() else {
                break;
            };
            let sent = match message {
                Message::Text(frame) => ws.send_text(frame),
                other => ws.start_send_unpin(other),
            };
            if sent.is_err() {
                self.broken = true;
                return true;
            }
            self.unflushed = true;
            progress = true;
        }
        progress
    }

    /// Flushes what was fed. Whether it finished (or failed).
    fn flush<S: Socket>(&mut self, ws: &mut S, cx: &mut Context<'_>) -> bool {
        if self.broken {
            return false;
        }
        match ws.poll_flush_unpin(cx) {
            Poll::Ready(Ok(())) => {
                self.unflushed = false;
                true
            }
            Poll::Ready(Err(_)) => {
                self.broken = true;
                true
            }
            Poll::Pending => false,
        }
    }

    fn next_outgoing(&mut self) -> Option<Message> {
        if let Some(closing) = &mut self.closing {
            if closing.frame_sent {
                return None;
            }
            // Queued frames first (the queue takes nothing new once closing), then the close.
            if let Some(frame) = self.conn.pop() {
                return Some(Message::Text(frame));
            }
            closing.frame_sent = true;
            return Some(Message::Close(closing.reason.frame()));
        }
        if self.ping_due {
            self.ping_due = false;
            return Some(Message::Ping(Default::default()));
        }
        self.conn.pop().map(Message::Text)
    }

    fn on_read(&mut self, item: Option<Result<Message, WsError>>) {
        let conn = self.conn;
        let close = |reason| {
            conn.request_close(reason);
        };
        match item {
            Some(Ok(message)) => {
                self.last_heard = Instant::now();
                if self.closing.is_some() {
                    // Only the close handshake matters now.
                    return;
                }
                match message {
                    Message::Text(text) => self.on_text(text),
                    Message::Binary(_) => close(CloseReason::Binary),
                    Message::Close(_) => close(CloseReason::ByPeer),
                    // tungstenite answers pings itself; a pong is only a sign of life.
                    Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
                }
            }
            Some(Err(e)) => {
                self.read_done = true;
                match e {
                    WsError::Capacity(_) => close(CloseReason::TooBig),
                    WsError::Utf8(_) => close(CloseReason::BadUtf8),
                    WsError::Protocol(_) => close(CloseReason::Protocol),
                    // The connection itself failed: nothing can be sent on it.
                    other => {
                        tracing::debug!(error = %other, "socket read failed");
                        self.broken = true;
                    }
                }
            }
            None => self.read_done = true,
        }
    }

    fn on_timer(&mut self, timer: Pin<&mut Sleep>) {
        let now = Instant::now();
        if let Some(closing) = &mut self.closing {
            // The linger is over: drop the connection (once the frame in hand is done).
            closing.expired = true;
            return;
        }
        if now >= self.last_heard + self.hub.config().idle_timeout {
            self.conn.request_close(CloseReason::Idle);
            // The next turn starts the close and re-arms the timer for its deadline.
            timer.reset(now + crate::CLOSE_LINGER);
            return;
        }
        if now >= self.next_ping {
            self.ping_due = true;
            self.next_ping = now + self.hub.config().ping_interval;
        }
        timer.reset(self.next_timer());
    }

    /// Counts an answer towards (or breaks) the run of bad frames.
    fn answered(&mut self, bad: bool) {
        if bad {
            self.bad_run += 1;
            if self.bad_run >= MAX_BAD_FRAMES {
                self.conn.request_close(CloseReason::BadFrames);
            }
        } else {
            self.bad_run = 0;
        }
    }

    fn on_text(&mut self, text: Utf8Bytes) {
        let action = self.classify(&text);
        self.act(action);
    }

    /// What `text` asks for (the rate limit taken).
    fn classify(&mut self, text: &str) -> Action {
        let hub = self.hub;
        if let Err(wait_ms) = self.bucket.take(hub.service().now()) {
            let ack = wire::peek_ack(text);
            let error = Error::RateLimited {
                retry_after_secs: wait_ms.div_ceil(1000).max(1),
            };
            return Action::Reply(wire::error_frame(ack.as_deref(), &error.into()), false);
        }
        match wire::parse(text) {
            Err(Rejected { ack, error }) => Action::Reply(
                wire::error_frame(ack.as_deref(), &error),
                error.counts_as_bad(),
            ),
            Ok(Request { ack, command }) => match command {
                Command::Ping => Action::Reply(wire::pong(ack.as_deref()), false),
                Command::RegisterUserSocket(data) => {
                    let frame = match hub
                        .service()
                        .check_caller(&self.conn.session, data.phone.as_deref())
                    {
                        Ok(()) => wire::user_registered(ack.as_deref()),
                        Err(e) => wire::error_frame(ack.as_deref(), &e.into()),
                    };
                    Action::Reply(frame, false)
                }
                Command::SendMessage(data) => Action::Send(ack, data),
                command => Action::Handle(ack, command),
            },
        }
    }

    /// Does what a frame asks, or holds it back until the burst before it is answered.
    fn act(&mut self, action: Action) {
        match action {
            Action::Send(ack, data) => self.burst.push((ack, data)),
            other if !self.burst.is_empty() => self.deferred = Some(other),
            Action::Reply(frame, bad) => {
                self.hub.reply(self.conn, frame);
                self.answered(bad);
            }
            Action::Handle(ack, command) => {
                self.handling = Some(Box::pin(handle(
                    self.hub.clone(),
                    Arc::clone(self.conn),
                    ack,
                    command,
                )));
            }
        }
    }
}

/// Handles a frame that needs the service; answers it, and says whether the answer was bad.
async fn handle(hub: Hub, conn: Arc<Conn>, ack: Option<Ack>, command: Command) -> Answers {
    let done = match command {
        // `Driver::act` gathers these into bursts; a lone one is a burst of one.
        Command::SendMessage(d) => return handle_burst(hub, conn, vec![(ack, d)]).await,
        Command::JoinRoom(d) => join_room(&hub, &conn, ack.as_deref(), d).await,
        Command::LeaveRoom(d) => leave_room(&hub, &conn, ack.as_deref(), d).await,
        Command::Typing(d) => typing(&hub, &conn, ack.as_deref(), d).await,
        Command::MarkRead(d) => mark_read(&hub, &conn, ack.as_deref(), d).await,
        // Answered without the service, in `Driver::on_text`.
        Command::Ping | Command::RegisterUserSocket(_) => Ok(()),
    };
    Answers::one(match done {
        Ok(()) => false,
        Err(e) => {
            let e = SocketError::from(e);
            hub.reply(&conn, wire::error_frame(ack.as_deref(), &e));
            e.counts_as_bad()
        }
    })
}

/// Handles a burst of `send_message` frames with one call to the service (one store call),
/// then answers each, in order.
async fn handle_burst(
    hub: Hub,
    conn: Arc<Conn>,
    burst: Vec<(Option<Ack>, wire::SendMessage)>,
) -> Answers {
    let mut acks = Vec::with_capacity(burst.len());
    let mut outgoing = Vec::with_capacity(burst.len());
    for (ack, data) in burst {
        let checked = check_callers(&hub, &conn, [data.sender.as_deref(), None]);
        if checked.is_ok() {
            outgoing.push(Outgoing {
                room: data.room,
                text: data.message,
                client_id: data.client_id,
            });
        }
        acks.push((ack, checked));
    }
    let mut sent = hub
        .service()
        .send_messages(conn.phone(), outgoing)
        .await
        .into_iter();
    let mut answers = Answers::default();
    for (ack, checked) in acks {
        let result = match checked {
            Ok(()) => sent.next().unwrap_or_else(|| {
                Err(Error::unavailable(
                    "the store answered fewer results than messages",
                ))
            }),
            Err(e) => Err(e),
        };
        let ack = ack.as_deref();
        match result {
            Ok(message) => {
                if let Some(ack) = ack {
                    hub.reply(&conn, wire::message_ack(ack, &message));
                }
                answers.push(false);
            }
            Err(e) => {
                let e = SocketError::from(e);
                hub.reply(&conn, wire::error_frame(ack, &e));
                answers.push(e.counts_as_bad());
            }
        }
    }
    answers
}

/// Fields that name the caller must name them.
fn check_callers(hub: &Hub, conn: &Conn, named: [Option<&str>; 2]) -> Result<(), Error> {
    for name in named {
        hub.service().check_caller(&conn.session, name)?;
    }
    Ok(())
}

async fn join_room(
    hub: &Hub,
    conn: &Arc<Conn>,
    ack: Option<&RawValue>,
    data: wire::JoinRoom,
) -> Result<(), Error> {
    check_callers(hub, conn, [data.phone.as_deref(), data.user.as_deref()])?;
    let service = hub.service();
    // Room events are held for this socket from before the history is read until it is
    // queued, so a message sent meanwhile is neither lost nor shown twice. An id that is not
    // a room's is left to the service to refuse.
    let mut joining = None;
    if let Some(room) = RoomId::parse(&data.room) {
        let begun = hub.write().begin_join(conn, room);
        match begun {
            BeginJoin::Closing => return Ok(()),
            BeginJoin::AlreadyJoined => {}
            BeginJoin::Joining(sub) => {
                joining = Some(room);
                // Before the history is read and the join announced, whichever socket of this
                // node subscribes: what is published from then on reaches this node.
                hub.subscribed(Audience::Room(room), sub).await;
            }
        }
    }
    let me = conn.phone();
    match service
        .join_room_with_reads(me, &data.room, data.since.as_deref())
        .await
    {
        Err(e) => {
            if let Some(room) = joining {
                let last = hub.write().abort_join(conn, room);
                if last {
                    hub.unsubscribe(Audience::Room(room)).await;
                }
            }
            Err(e)
        }
        Ok((room, page, read)) => {
            let seen = page
                .messages
                .last()
                .map(|m| m.id)
                .or_else(|| data.since.as_deref().and_then(|s| MessageId::parse(s).ok()));
            let history = wire::room_history(ack, &room, &page, &read);
            let completed = hub.write().complete_join(conn, room, history, seen);
            match completed {
                Completed::Joined(offer) => {
                    hub.count(offer);
                    service.announce_join(&conn.session, room).await;
                    Ok(())
                }
                // Closed or expired after the history was read: answered as a join that came
                // a moment later would be (the socket has had `room_closed`/`room_expired`).
                Completed::Ended { last } => {
                    if last {
                        hub.unsubscribe(Audience::Room(room)).await;
                    }
                    Err(Error::RoomNotFound)
                }
            }
        }
    }
}

async fn leave_room(
    hub: &Hub,
    conn: &Arc<Conn>,
    ack: Option<&RawValue>,
    data: wire::LeaveRoom,
) -> Result<(), Error> {
    check_callers(hub, conn, [data.phone.as_deref(), data.user.as_deref()])?;
    let room = RoomId::parse(&data.room).ok_or(Error::RoomNotFound)?;
    let left = hub.write().leave(conn, room);
    if let Some(last) = left {
        hub.service()
            .announce_leave(conn.phone(), room, &hub.conn_key(conn))
            .await;
        if last {
            hub.unsubscribe(Audience::Room(room)).await;
        }
    }
    if let Some(ack) = ack {
        hub.reply(conn, wire::ack_empty(ack));
    }
    Ok(())
}

async fn typing(
    hub: &Hub,
    conn: &Arc<Conn>,
    ack: Option<&RawValue>,
    data: wire::Typing,
) -> Result<(), Error> {
    check_callers(hub, conn, [data.phone.as_deref(), data.user.as_deref()])?;
    hub.service()
        .typing(conn.phone(), &data.room, data.typing)
        .await?;
    if let Some(ack) = ack {
        hub.reply(conn, wire::ack_empty(ack));
    }
    Ok(())
}

/// `mark_read`: acked with `{}` whether the mark moved or was already at or past the id.
async fn mark_read(
    hub: &Hub,
    conn: &Arc<Conn>,
    ack: Option<&RawValue>,
    data: wire::MarkRead,
) -> Result<(), Error> {
    hub.service()
        .mark_read(conn.phone(), &data.room, &data.id)
        .await?;
    if let Some(ack) = ack {
        hub.reply(conn, wire::ack_empty(ack));
    }
    Ok(())
}
