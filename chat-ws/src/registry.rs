//! The node's sockets: who is open, which rooms each socket joined, and each socket's bounded
//! outgoing queue. Every lock here is a std lock held for a few pointer moves and never across
//! an `.await`, so [`crate::Hub`]'s `deliver` never blocks.
//!
//! Lock order: the registry's `RwLock`, then a socket's `Mutex`. Nothing takes them the other
//! way round.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use chat_core::{MessageId, Phone, RoomId, Session};
use futures_util::task::AtomicWaker;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// Why a socket is being closed, and so which close code it gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseReason {
    /// Nothing heard for `idle_timeout`: 1000.
    Idle,
    /// The server is shutting down: 1001.
    Shutdown,
    /// The outgoing queue overflowed: 1008.
    SlowConsumer,
    /// `MAX_BAD_FRAMES` frames in a row answered `bad_request`/`unknown_event`: 1008.
    BadFrames,
    /// A frame over `max_frame_bytes`: 1009.
    TooBig,
    /// A binary frame: 1003.
    Binary,
    /// A text frame that is not UTF-8: 1007.
    BadUtf8,
    /// A WebSocket protocol violation (unmasked frame, bad opcode…): 1002.
    Protocol,
    /// The store did not take the socket at open: 1013 (try again later).
    StoreDown,
    /// The client closed first; tungstenite answers its close frame itself.
    ByPeer,
}

impl CloseReason {
    /// The close frame to send, `None` when the peer closed first.
    pub(crate) fn frame(self) -> Option<CloseFrame> {
        let (code, reason) = match self {
            CloseReason::Idle => (CloseCode::Normal, "idle"),
            CloseReason::Shutdown => (CloseCode::Away, "server shutting down"),
            CloseReason::SlowConsumer => (CloseCode::Policy, "not reading fast enough"),
            CloseReason::BadFrames => (CloseCode::Policy, "too many bad frames"),
            CloseReason::TooBig => (CloseCode::Size, "frame too large"),
            CloseReason::Binary => (CloseCode::Unsupported, "text frames only"),
            CloseReason::BadUtf8 => (CloseCode::Invalid, "text is not UTF-8"),
            CloseReason::Protocol => (CloseCode::Protocol, "protocol error"),
            CloseReason::StoreDown => (CloseCode::Again, "store unavailable"),
            CloseReason::ByPeer => return None,
        };
        Some(CloseFrame {
            code,
            reason: Utf8Bytes::from_static(reason),
        })
    }

    /// Whether frames already queued are still sent before the close frame. A slow consumer's
    /// queue is dropped (that is the point), and so is anything after the peer's close.
    fn drains(self) -> bool {
        !matches!(self, CloseReason::SlowConsumer | CloseReason::ByPeer)
    }
}

/// What became of a frame offered to a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Offer {
    /// Queued (or held until the socket's join completes).
    Queued,
    /// A message the socket's `room_history` already held: not sent again.
    Seen,
    /// The socket is closing; the frame was dropped.
    Dropped,
    /// The queue was full (in frames or in bytes): the socket is now closing as a slow
    /// consumer.
    Overflowed,
}

/// A frame held for a socket that is joining a room, until its `room_history` is queued.
struct Held {
    /// For `receive_message`: the message, so what the history already holds is not repeated.
    message: Option<MessageId>,
    frame: Utf8Bytes,
}

/// A room a socket joined (or is joining).
struct JoinedRoom {
    id: RoomId,
    /// `Some` while the join is in progress: room events wait here, behind the history.
    held: Option<Vec<Held>>,
    /// The newest message the join's `room_history` held (or its `since`). A delivery of a
    /// message at or before it is skipped, also after the join completed: a message stored
    /// before the history was read may still be on its way through the bus (Redis, the
    /// node's receive queue) when the join completes, and the history already sent it.
    /// Messages of a room arrive in history order, so this only ever skips a short tail.
    floor: Option<MessageId>,
    /// The room was closed or expired while this socket was joining it. The entry stays (in
    /// the registry's room list too) until the join itself ends, because that join may still
    /// be subscribing the node to the room: the unsubscribe that pairs with it must come after
    /// it, from the join's own task ([`Registry::complete_join`] or [`Registry::abort_join`]).
    ended: bool,
}

/// The mutable part of a socket, shared by its task and the deliveries.
#[derive(Default)]
struct ConnState {
    /// Frames waiting for the socket task. At most `Conn::cap` (held frames count too), and at
    /// most `Conn::cap_bytes` bytes behind the first (see [`ConnState::behind_head`]).
    queue: VecDeque<Utf8Bytes>,
    /// The bytes of the frames in `queue`.
    queued_bytes: usize,
    /// Set once: the socket is closing and takes no more frames.
    closing: Option<CloseReason>,
    /// Rooms joined on this socket (usually none or one).
    rooms: Vec<JoinedRoom>,
}

impl ConnState {
    /// Frames and bytes held behind the histories of rooms being joined.
    fn held(&self) -> (usize, usize) {
        self.rooms
            .iter()
            .filter_map(|r| r.held.as_ref())
            .flatten()
            .fold((0, 0), |(n, b), h| (n + 1, b + h.frame.len()))
    }

    /// The bytes waiting behind the frame at the head of the queue (held ones included): what
    /// the byte bound counts. The head is left out because it is the frame being written
    /// next, and because a single frame may be larger than the bound (a `room_history` of
    /// 500 long messages is several MiB) and must still go out.
    fn behind_head(&self, held_bytes: usize) -> usize {
        let head = self.queue.front().map_or(0, |f| f.len());
        self.queued_bytes.saturating_sub(head) + held_bytes
    }

    fn push(&mut self, frame: Utf8Bytes) {
        self.queued_bytes += frame.len();
        self.queue.push_back(frame);
    }

    fn pop(&mut self) -> Option<Utf8Bytes> {
        let frame = self.queue.pop_front()?;
        self.queued_bytes -= frame.len();
        Some(frame)
    }

    /// Drops every queued frame and the queue's allocation.
    fn clear(&mut self) {
        self.queue = VecDeque::new();
        self.queued_bytes = 0;
    }

    fn overflow(&mut self) -> Offer {
        self.closing = Some(CloseReason::SlowConsumer);
        // Free the queue now: this socket is not going to read it.
        self.clear();
        for room in &mut self.rooms {
            if room.held.is_some() {
                room.held = Some(Vec::new());
            }
        }
        Offer::Overflowed
    }
}

/// One open socket, as the registry and the deliveries see it.
pub(crate) struct Conn {
    /// Its number on this node (`ConnKey::id`; the node is the service's).
    pub(crate) id: u64,
    /// Whose socket it is.
    pub(crate) session: Session,
    /// Bound of the outgoing queue in frames (`WsConfig::send_queue`, at least 1).
    cap: usize,
    /// Bound of the outgoing queue in bytes behind its head (`WsConfig::send_queue_bytes`).
    cap_bytes: usize,
    state: Mutex<ConnState>,
    /// Set (under the lock, with `ConnState::closing`) once the socket is closing, so the
    /// socket loop can check it every turn without taking the lock.
    closing_set: AtomicBool,
    /// Wakes the socket task when its queue goes from empty to not, or it must close.
    waker: AtomicWaker,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("id", &self.id)
            .field("phone", &self.session.phone)
            .finish_non_exhaustive()
    }
}

impl Conn {
    pub(crate) fn new(id: u64, session: Session, cap: usize, cap_bytes: usize) -> Conn {
        Conn {
            id,
            session,
            cap: cap.max(1),
            cap_bytes,
            state: Mutex::default(),
            closing_set: AtomicBool::new(false),
            waker: AtomicWaker::new(),
        }
    }

    pub(crate) fn phone(&self) -> &Phone {
        &self.session.phone
    }

    fn lock(&self) -> MutexGuard<'_, ConnState> {
        // Every critical section leaves the state whole, so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a frame for the socket, or, when it is for `room` and the socket is still
    /// joining it, holds it behind the room's history.
    pub(crate) fn offer(
        &self,
        frame: &Utf8Bytes,
        room: Option<(RoomId, Option<MessageId>)>,
    ) -> Offer {
        let mut st = self.lock();
        if st.closing.is_some() {
            return Offer::Dropped;
        }
        let joined = room.and_then(|(room, message)| {
            let r = st.rooms.iter().find(|r| r.id == room)?;
            Some((r.held.is_some(), message.zip(r.floor)))
        });
        if let Some((_, Some((message, floor)))) = joined
            && message <= floor
        {
            return Offer::Seen;
        }
        let held_here = joined.is_some_and(|(held, _)| held);
        let (held_frames, held_bytes) = st.held();
        // A frame that goes to an empty queue (not held) becomes its head: not counted.
        let adds = if st.queue.is_empty() && !held_here {
            0
        } else {
            frame.len()
        };
        if st.queue.len() + held_frames >= self.cap
            || st.behind_head(held_bytes) + adds > self.cap_bytes
        {
            let offer = st.overflow();
            self.closing_set.store(true, Ordering::Release);
            drop(st);
            self.waker.wake();
            return offer;
        }
        if let Some((room, message)) = room
            && let Some(held) = st
                .rooms
                .iter_mut()
                .find(|r| r.id == room)
                .and_then(|r| r.held.as_mut())
        {
            held.push(Held {
                message,
                frame: frame.clone(),
            });
            return Offer::Queued;
        }
        let was_empty = st.queue.is_empty();
        st.push(frame.clone());
        drop(st);
        if was_empty {
            self.waker.wake();
        }
        Offer::Queued
    }

    /// Takes the next frame to send.
    pub(crate) fn pop(&self) -> Option<Utf8Bytes> {
        let mut st = self.lock();
        let frame = st.pop();
        // An idle socket keeps no queue allocation beyond the smallest one.
        if st.queue.is_empty() && st.queue.capacity() > 4 {
            st.queue = VecDeque::new();
        }
        frame
    }

    /// Drops every queued frame (before a close that must not send them).
    pub(crate) fn clear(&self) {
        self.lock().clear();
    }

    /// Starts closing the socket, unless it already is. Returns whether this call started it.
    pub(crate) fn request_close(&self, reason: CloseReason) -> bool {
        let mut st = self.lock();
        if st.closing.is_some() {
            return false;
        }
        st.closing = Some(reason);
        self.closing_set.store(true, Ordering::Release);
        if !reason.drains() {
            st.clear();
        }
        drop(st);
        self.waker.wake();
        true
    }

    /// Why the socket is closing, if it is.
    pub(crate) fn closing(&self) -> Option<CloseReason> {
        if !self.closing_set.load(Ordering::Acquire) {
            return None;
        }
        self.lock().closing
    }

    /// Registers the socket task to be woken.
    pub(crate) fn register(&self, waker: &std::task::Waker) {
        self.waker.register(waker);
    }

    /// Whether the socket has joined `room` (completely).
    #[cfg(test)]
    pub(crate) fn joined(&self, room: RoomId) -> bool {
        self.lock()
            .rooms
            .iter()
            .any(|r| r.id == room && r.held.is_none())
    }

    /// How many rooms the socket is registered in, joined or joining.
    #[cfg(test)]
    pub(crate) fn room_count(&self) -> usize {
        self.lock().rooms.len()
    }
}

/// This node's bus subscription to one audience (a user or a room), as the sockets that need
/// it see it.
///
/// The socket that takes the node from no local socket of the audience to one subscribes,
/// then marks the subscription ready; every later socket waits until it is before it reads
/// state or tells anyone it is there. Without the wait, a second socket could read a room's
/// history and announce its `user_joined` while the first one's `SUBSCRIBE` was still on its
/// way to Redis: the node would not receive that announcement, and neither socket would see
/// it. A new subscription is made each time the node goes from none to one again.
#[derive(Clone)]
pub(crate) struct Subscription(Arc<watch::Sender<bool>>);

impl Subscription {
    fn new() -> Subscription {
        Subscription(Arc::new(watch::Sender::new(false)))
    }

    /// A guard that marks the subscription ready when dropped: held by the subscribing socket
    /// across its `subscribe`, so waiters are released however that ends (done, failed, or the
    /// socket's future dropped).
    pub(crate) fn ready_on_drop(&self) -> ReadyOnDrop {
        ReadyOnDrop(self.clone())
    }

    /// Waits until the subscribing socket is done (its `subscribe` is bounded in time).
    pub(crate) async fn wait(&self) {
        let mut rx = self.0.subscribe();
        // The sender lives in `self`: `wait_for` cannot fail.
        let _ = rx.wait_for(|ready| *ready).await;
    }

    /// Whether the subscribing socket is done.
    #[cfg(test)]
    pub(crate) fn is_ready(&self) -> bool {
        *self.0.borrow()
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Subscription")
            .field(&*self.0.borrow())
            .finish()
    }
}

impl PartialEq for Subscription {
    fn eq(&self, other: &Subscription) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// Marks a [`Subscription`] ready when dropped.
pub(crate) struct ReadyOnDrop(Subscription);

impl Drop for ReadyOnDrop {
    fn drop(&mut self) {
        self.0.0.send_replace(true);
    }
}

/// What a socket must do about the node's subscription to an audience it now belongs to.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Subscribe {
    /// It is the node's first socket of the audience: subscribe, then mark it ready.
    First(Subscription),
    /// Another socket subscribed (or is subscribing): wait until it is ready.
    Wait(Subscription),
}

impl Subscribe {
    /// Whether this socket is the one that subscribes.
    #[cfg(test)]
    pub(crate) fn is_first(&self) -> bool {
        matches!(self, Subscribe::First(_))
    }
}

/// The subscriptions of one kind of audience, kept for exactly as long as the registry has
/// local sockets of the audience.
struct Subscriptions<K>(HashMap<K, Subscription>);

impl<K> Default for Subscriptions<K> {
    fn default() -> Self {
        Subscriptions(HashMap::new())
    }
}

impl<K: std::hash::Hash + Eq> Subscriptions<K> {
    /// A socket of `key` arrived; `first`: the node had none.
    fn arrive(&mut self, key: K, first: bool) -> Subscribe {
        if first {
            let sub = Subscription::new();
            self.0.insert(key, sub.clone());
            return Subscribe::First(sub);
        }
        let sub = self.0.entry(key).or_insert_with(|| {
            // Unreachable while the registry keeps both maps in step; ready, so nobody waits.
            let sub = Subscription::new();
            sub.0.send_replace(true);
            sub
        });
        Subscribe::Wait(sub.clone())
    }

    /// The node's last socket of `key` is gone.
    fn forget(&mut self, key: &K) {
        self.0.remove(key);
    }
}

/// The outcome of starting a join.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum BeginJoin {
    /// The socket is already in the room; nothing is held.
    AlreadyJoined,
    /// The socket is now joining; what it must do about the node's subscription to the room.
    Joining(Subscribe),
    /// The socket is closing.
    Closing,
}

/// The outcome of ending a join whose history was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Completed {
    /// The history is queued, then what was held; room events now flow directly.
    Joined(Offer),
    /// The room was closed or expired during the join: nothing is queued and the socket is out
    /// of the room; `last`: no socket of this node is in it any more.
    Ended { last: bool },
}

/// What unregistering a socket left to do.
#[derive(Debug, Default)]
pub(crate) struct Removed {
    /// It was its user's last socket on this node.
    pub(crate) user_last: bool,
    /// Its rooms: (room, the join had completed, it was the node's last socket in the room).
    pub(crate) rooms: Vec<(RoomId, bool, bool)>,
}

/// The index of this node's sockets by user and by room.
#[derive(Default)]
pub(crate) struct Registry {
    /// Set by shutdown: no socket registers after it.
    pub(crate) shutting_down: bool,
    /// Open sockets.
    pub(crate) open: usize,
    /// Every open socket, by user.
    pub(crate) users: HashMap<Phone, Vec<Arc<Conn>>>,
    /// Sockets joined (or joining) a room, by room.
    pub(crate) rooms: HashMap<RoomId, Vec<Arc<Conn>>>,
    /// The node's subscription to each user of `users`.
    user_subs: Subscriptions<Phone>,
    /// The node's subscription to each room of `rooms`.
    room_subs: Subscriptions<RoomId>,
}

impl Registry {
    /// Adds an open socket: what it must do about the node's subscription to its user, `None`
    /// when the node is shutting down.
    pub(crate) fn add(&mut self, conn: &Arc<Conn>) -> Option<Subscribe> {
        if self.shutting_down {
            return None;
        }
        self.open += 1;
        let conns = self.users.entry(conn.phone().clone()).or_default();
        conns.push(Arc::clone(conn));
        let first = conns.len() == 1;
        Some(self.user_subs.arrive(conn.phone().clone(), first))
    }

    /// Removes a socket and every room it joined. `None` when it was not registered.
    pub(crate) fn remove(&mut self, conn: &Arc<Conn>) -> Option<Removed> {
        let conns = self.users.get_mut(conn.phone())?;
        let before = conns.len();
        conns.retain(|c| !Arc::ptr_eq(c, conn));
        if conns.len() == before {
            return None;
        }
        self.open = self.open.saturating_sub(1);
        let user_last = conns.is_empty();
        if user_last {
            self.users.remove(conn.phone());
            self.user_subs.forget(conn.phone());
        }
        let rooms = std::mem::take(&mut conn.lock().rooms);
        let rooms = rooms
            .into_iter()
            .map(|r| (r.id, r.held.is_none(), self.drop_member(r.id, conn)))
            .collect();
        Some(Removed { user_last, rooms })
    }

    /// Takes `conn` out of `room`'s list; whether the list is now empty.
    fn drop_member(&mut self, room: RoomId, conn: &Arc<Conn>) -> bool {
        let Some(conns) = self.rooms.get_mut(&room) else {
            return false;
        };
        conns.retain(|c| !Arc::ptr_eq(c, conn));
        let last = conns.is_empty();
        if last {
            self.rooms.remove(&room);
            self.room_subs.forget(&room);
        }
        last
    }

    /// Starts joining `room`: room events for the socket are held from now on until
    /// [`Registry::complete_join`] queues them behind the history.
    pub(crate) fn begin_join(&mut self, conn: &Arc<Conn>, room: RoomId) -> BeginJoin {
        {
            let mut st = conn.lock();
            if st.closing.is_some() {
                return BeginJoin::Closing;
            }
            if st.rooms.iter().any(|r| r.id == room) {
                return BeginJoin::AlreadyJoined;
            }
            st.rooms.push(JoinedRoom {
                id: room,
                held: Some(Vec::new()),
                floor: None,
                ended: false,
            });
        }
        let conns = self.rooms.entry(room).or_default();
        conns.push(Arc::clone(conn));
        let first = conns.len() == 1;
        BeginJoin::Joining(self.room_subs.arrive(room, first))
    }

    /// A join that failed: forgets it; whether the socket was the node's last in the room.
    pub(crate) fn abort_join(&mut self, conn: &Arc<Conn>, room: RoomId) -> bool {
        let was_there = {
            let mut st = conn.lock();
            let before = st.rooms.len();
            st.rooms.retain(|r| r.id != room);
            st.rooms.len() != before
        };
        was_there && self.drop_member(room, conn)
    }

    /// Leaves a room: `Some(last)` when the socket was in it (`last`: no socket of this node
    /// is in it any more), `None` when it was not.
    pub(crate) fn leave(&mut self, conn: &Arc<Conn>, room: RoomId) -> Option<bool> {
        let was_there = {
            let mut st = conn.lock();
            let before = st.rooms.len();
            st.rooms.retain(|r| r.id != room);
            st.rooms.len() != before
        };
        was_there.then(|| self.drop_member(room, conn))
    }

    /// A room was closed or expired: every socket that joined it is out of it now, whoever its
    /// user (no `user_left` is due: the room is gone for everyone). Returns whether the node
    /// is now out of the room, so the caller unsubscribes from it.
    ///
    /// A socket still joining keeps its entry, marked ended, and leaves when its join ends: a
    /// join may be subscribing the node to the room right now, and an unsubscribe that
    /// overtook that subscribe would be lost and the subscription kept.
    pub(crate) fn end_room(&mut self, room: RoomId) -> bool {
        let Some(conns) = self.rooms.get_mut(&room) else {
            return false;
        };
        conns.retain(|conn| {
            let mut st = conn.lock();
            let Some(pos) = st.rooms.iter().position(|r| r.id == room) else {
                // Not in the socket's own list: nothing keeps it in the room's.
                return false;
            };
            let joined = &mut st.rooms[pos];
            if joined.held.is_some() {
                joined.ended = true;
                // Held events of a room that is gone are never sent.
                joined.held = Some(Vec::new());
                return true;
            }
            st.rooms.swap_remove(pos);
            false
        });
        let last = conns.is_empty();
        if last {
            self.rooms.remove(&room);
            self.room_subs.forget(&room);
        }
        last
    }

    /// Ends a join: queues `history`, then what was held for the room meanwhile, skipping
    /// messages the history already holds (ids up to `seen`, also when they arrive later), and
    /// from then on room events flow directly. Unless the room ended during the join: then the socket leaves it instead.
    pub(crate) fn complete_join(
        &mut self,
        conn: &Arc<Conn>,
        room: RoomId,
        history: Utf8Bytes,
        seen: Option<MessageId>,
    ) -> Completed {
        let mut st = conn.lock();
        let Some(pos) = st.rooms.iter().position(|r| r.id == room) else {
            // An already joined socket re-reading the history, and the room ended meanwhile.
            return Completed::Ended { last: false };
        };
        if st.rooms[pos].ended {
            st.rooms.swap_remove(pos);
            drop(st);
            return Completed::Ended {
                last: self.drop_member(room, conn),
            };
        }
        if st.closing.is_some() {
            return Completed::Joined(Offer::Dropped);
        }
        let held = st.rooms[pos].held.take().unwrap_or_default();
        st.rooms[pos].floor = seen;
        let fresh = held
            .into_iter()
            .filter(|h| match (h.message, seen) {
                (Some(id), Some(seen)) => id > seen,
                _ => true,
            })
            .map(|h| h.frame);
        let was_empty = st.queue.is_empty();
        st.push(history);
        for frame in fresh {
            st.push(frame);
        }
        let (held_frames, held_bytes) = st.held();
        let offer = if st.queue.len() + held_frames > conn.cap
            || st.behind_head(held_bytes) > conn.cap_bytes
        {
            conn.closing_set.store(true, Ordering::Release);
            st.overflow()
        } else {
            Offer::Queued
        };
        drop(st);
        if was_empty || offer == Offer::Overflowed {
            conn.waker.wake();
        }
        Completed::Joined(offer)
    }

    /// Every socket open on this node.
    pub(crate) fn all(&self) -> impl Iterator<Item = &Arc<Conn>> {
        self.users.values().flatten()
    }
}
