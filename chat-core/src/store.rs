//! The storage port: one object-safe trait whose operations are the atomic steps the service's
//! rules need, not a key-value bag. Each method is one atomic step: a store must never leave
//! half of one behind, whatever fails. The conformance suite (`testing` feature) is the
//! executable form of this contract.

use std::fmt;

use crate::error::{Error, Result};
use crate::types::{
    ChatRequest, ConnKey, HistoryPage, Message, MessageId, Millis, Names, NewMessage, NodeId,
    OnlinePage, Phone, Requests, Room, RoomId, Session, TokenDigest,
};

/// A deadline the service acts on when it passes. Stores keep them in a due-ordered index
/// (a sorted set in Redis) and hand each one out to one node at a time ([`Store::due_timers`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Timer {
    /// The user's HTTP presence window may have ended: go offline if nothing else holds them.
    Presence(Phone),
    /// The user's session may have outlived its idle time: end it.
    SessionEnd(Phone),
    /// The room reaches its TTL.
    RoomExpiry(RoomId),
    /// Both members of the room may have been offline for `room_idle`.
    RoomIdle(RoomId),
    /// A pending request reaches its TTL (silently).
    RequestExpiry {
        /// Requester.
        from: Phone,
        /// Recipient.
        to: Phone,
    },
}

impl Timer {
    /// A compact text form, for stores that keep timers as strings.
    pub fn encode(&self) -> String {
        match self {
            Timer::Presence(p) => format!("p|{p}"),
            Timer::SessionEnd(p) => format!("s|{p}"),
            Timer::RoomExpiry(r) => format!("e|{r}"),
            Timer::RoomIdle(r) => format!("i|{r}"),
            Timer::RequestExpiry { from, to } => format!("q|{from}|{to}"),
        }
    }

    /// The inverse of [`Timer::encode`].
    pub fn decode(s: &str) -> Result<Timer> {
        let bad = || Error::bad_request(format!("not a timer: {s}"));
        let (kind, rest) = s.split_once('|').ok_or_else(bad)?;
        let room = |r: &str| RoomId::parse(r).map_err(|_| bad());
        Ok(match kind {
            "p" => Timer::Presence(Phone::parse(rest)?),
            "s" => Timer::SessionEnd(Phone::parse(rest)?),
            "e" => Timer::RoomExpiry(room(rest)?),
            "i" => Timer::RoomIdle(room(rest)?),
            "q" => {
                let (from, to) = rest.split_once('|').ok_or_else(bad)?;
                Timer::RequestExpiry {
                    from: Phone::parse(from)?,
                    to: Phone::parse(to)?,
                }
            }
            _ => return Err(bad()),
        })
    }
}

impl fmt::Display for Timer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.encode())
    }
}

/// A timer handed out by [`Store::due_timers`], leased to the caller until `lease_until`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueTimer {
    /// The deadline that passed.
    pub timer: Timer,
    /// The timer was moved to this time; if the caller dies it comes due again then.
    pub lease_until: Millis,
}

/// A user's presence as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PresenceState {
    /// Open sockets on live nodes.
    pub conns: u32,
    /// The end of the HTTP presence window (last API request + `presence`).
    pub http_until: Millis,
    /// When the user went offline; `None` while online.
    pub offline_since: Option<Millis>,
}

impl PresenceState {
    /// Whether the user counts as online at `now`.
    pub fn online_at(&self, now: Millis) -> bool {
        self.conns > 0 || now < self.http_until
    }
}

/// What [`Store::create_session`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    /// The live session (the existing one on a refresh).
    pub session: Session,
    /// An existing session was refreshed with its own token.
    pub refreshed: bool,
    /// The user was offline before (always true for a new session).
    pub came_online: bool,
}

/// What [`Store::touch`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Touched {
    /// The session the token names.
    pub session: Session,
    /// The user was offline before this request.
    pub came_online: bool,
}

/// The fixed facts of a room an accept may create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRoom {
    /// Its id, drawn by the service.
    pub id: RoomId,
    /// Creation time.
    pub created_at: Millis,
    /// `created_at + room_ttl`.
    pub expires_at: Millis,
    /// The display names of the two users of the call, for the events the store publishes with
    /// it (`chat_request`, `request_accepted`).
    pub names: Names,
}

/// What [`Store::send_request`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// The request is now pending.
    Sent,
    /// The recipient had a pending request to the sender: it was accepted, making this room.
    Accepted(Room),
    /// The same request was already pending.
    AlreadyPending,
    /// The two already share this room.
    RoomExists(RoomId),
}

/// What [`Store::append_message`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Appended {
    /// Stored (and published) now.
    New(Message),
    /// The same sender sent the same `client_id` in this room before: the first message.
    Duplicate(Message),
}

impl Appended {
    /// The message, new or first.
    pub fn into_message(self) -> Message {
        match self {
            Appended::New(m) | Appended::Duplicate(m) => m,
        }
    }
}

/// What [`Store::end_session`] removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndedSession {
    /// The session that ended.
    pub session: Session,
    /// Its rooms, now deleted with their messages.
    pub rooms: Vec<Room>,
    /// Its pending requests, now dropped.
    pub requests: Requests,
}

/// Durable state of the chat: sessions, presence, requests, rooms, history and deadlines.
///
/// Contract for every implementation:
/// - Each method is atomic: concurrent calls (from tasks or nodes) behave as if in some
///   serial order, and a failed call changed nothing. No read-modify-write across calls.
/// - An unreachable backend is `Error::StoreUnavailable`, returned within the store's timeout.
/// - Whatever ends is freed: an ended session, request or room leaves no data behind.
/// - `now` and deadlines come from the caller's clock; stores with a server-side clock may use
///   it only to free data (key expiry) well after the deadline the caller set.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    // ---- sessions and presence ----

    /// Creates a session for `session.phone`, online until `http_until`.
    /// If a session for the phone exists: with `refresh` equal to its token, refreshes its
    /// presence like [`Store::touch`] and returns it; otherwise fails with `PhoneInUse`.
    /// Schedules `Timer::Presence` at `http_until`.
    async fn create_session(
        &self,
        session: Session,
        refresh: Option<TokenDigest>,
        http_until: Millis,
    ) -> Result<Registered>;

    /// The session a token names, if any.
    async fn session(&self, token: &TokenDigest) -> Result<Option<Session>>;

    /// The display names of those of `phones` who have a live session with a name.
    async fn names(&self, phones: &[Phone]) -> Result<Names>;

    /// Stores `ticket`, a single-use stand-in for the session `token` names, valid until
    /// `expires_at`. Expired tickets are freed (by `now`, or by the backend's own expiry).
    async fn create_ticket(
        &self,
        ticket: &TokenDigest,
        token: &TokenDigest,
        now: Millis,
        expires_at: Millis,
    ) -> Result<()>;

    /// Takes `ticket`: the session it stands for, if the ticket exists, has not expired at
    /// `now` and its session still lives. A ticket is taken at most once, whatever the
    /// answer, by any number of concurrent callers on any node.
    async fn take_ticket(&self, ticket: &TokenDigest, now: Millis) -> Result<Option<Session>>;

    /// Authenticates an API request and extends the HTTP presence window to `http_until`
    /// (never shortens it); marks the user online and (re)schedules `Timer::Presence`.
    async fn touch(&self, token: &TokenDigest, http_until: Millis) -> Result<Option<Touched>>;

    /// Counts an open socket; returns whether the user came online by it.
    async fn add_conn(&self, phone: &Phone, conn: &ConnKey) -> Result<bool>;

    /// Forgets a socket. When the user has none left, cuts the HTTP presence window to end
    /// at `grace_until` at the latest (`now + presence_grace`) and schedules `Timer::Presence`
    /// at `max(http_until, now)`. Unknown sockets are ignored.
    async fn remove_conn(
        &self,
        phone: &Phone,
        conn: &ConnKey,
        now: Millis,
        grace_until: Millis,
    ) -> Result<()>;

    /// The user's presence, if they have a session.
    async fn presence(&self, phone: &Phone) -> Result<Option<PresenceState>>;

    /// If the user has no sockets and `now >= http_until` and is not offline yet: marks them
    /// offline since `now`, removes them from the online listing, and schedules
    /// `Timer::SessionEnd` at `session_end_at`. Returns whether that happened.
    async fn go_offline(&self, phone: &Phone, now: Millis, session_end_at: Millis) -> Result<bool>;

    /// One page of online users. `cursor` is one this store returned, else `BadRequest`.
    async fn online_page(
        &self,
        cursor: Option<String>,
        limit: usize,
        now: Millis,
    ) -> Result<OnlinePage>;

    // ---- nodes ----

    /// Records that `node` is alive until `alive_until`.
    async fn heartbeat(&self, node: &NodeId, alive_until: Millis) -> Result<()>;

    /// Claims every node whose heartbeat ran out before `now` (each dead node is claimed by one
    /// caller once), forgets its sockets as [`Store::remove_conn`] does (with `grace_until`),
    /// and returns the users left with no socket.
    async fn reap_dead_nodes(&self, now: Millis, grace_until: Millis) -> Result<Vec<Phone>>;

    /// Forgets `node` and its sockets, as on a clean shutdown; same result as a reap.
    async fn remove_node(
        &self,
        node: &NodeId,
        now: Millis,
        grace_until: Millis,
    ) -> Result<Vec<Phone>>;

    // ---- requests ----

    /// Sends `request`, unless the two share a room (`RoomExists`) or it is already pending.
    /// When `request.to` has a pending request to `request.from`, accepts that one instead,
    /// creating `room` with members `[request.to, request.from]`. Schedules
    /// `Timer::RequestExpiry` or `Timer::RoomExpiry` accordingly. Requests past their
    /// `expires_at` count as absent.
    ///
    /// What it did is published through this backend's bus in the same atomic step, so no
    /// node can see the change without its event: a sent request as
    /// [`Delivery::chat_request`](crate::Delivery::chat_request) to `request.to`, a room made
    /// as [`Delivery::request_accepted`](crate::Delivery::request_accepted) to both members.
    ///
    /// Fails with `UserNotFound`, storing nothing, when `request.to` has no session or is not
    /// online at `request.created_at` (no socket, HTTP presence window over), checked in the
    /// same atomic step: a request to a session that ended, or went offline, a moment before must
    /// not be kept (nor kept for whoever registers that phone next), and the caller needs no
    /// round trip of its own to check first.
    async fn send_request(&self, request: ChatRequest, room: NewRoom) -> Result<SendOutcome>;

    /// Accepts the pending request `from → to`: removes it (and any `to → from`) and creates
    /// `room` with members `[from, to]`, scheduling `Timer::RoomExpiry`. `None` when no such
    /// request is pending at `now`. Exactly one of any number of concurrent accepts succeeds.
    /// The room made is published as
    /// [`Delivery::request_accepted`](crate::Delivery::request_accepted) to both members
    /// through this backend's bus, in the same atomic step.
    async fn accept_request(
        &self,
        from: &Phone,
        to: &Phone,
        room: NewRoom,
        now: Millis,
    ) -> Result<Option<Room>>;

    /// Removes the pending request `from → to` (decline, cancel, expiry); whether one was
    /// pending at `now`.
    async fn remove_request(&self, from: &Phone, to: &Phone, now: Millis) -> Result<bool>;

    /// The user's pending requests at `now`.
    async fn requests(&self, phone: &Phone, now: Millis) -> Result<Requests>;

    // ---- rooms and history ----

    /// A live room.
    async fn room(&self, id: &RoomId) -> Result<Option<Room>>;

    /// The user's live rooms.
    async fn rooms_of(&self, phone: &Phone) -> Result<Vec<Room>>;

    /// Deletes a room with its history; the room if it existed.
    async fn delete_room(&self, id: &RoomId) -> Result<Option<Room>>;

    /// Appends a message (`RoomNotFound` for no room, `Forbidden` for a non-member), keeping at
    /// least the last `history_max`. A repeated `client_id` of the same sender is not stored
    /// again. A new message is published to `Audience::Room` as `Event::ReceiveMessage`
    /// through this backend's bus in the same atomic step, so deliveries follow history order.
    async fn append_message(
        &self,
        room: &RoomId,
        message: NewMessage,
        history_max: usize,
    ) -> Result<Appended>;

    /// Appends `batch` in order, exactly as [`Store::append_message`] would one after another,
    /// each with its own result in the same position; a failure of one leaves the others
    /// standing. A backend may do it in one round trip (the Redis store pipelines them): it is
    /// how a socket's burst of messages costs one store call. The default calls
    /// `append_message` for each.
    async fn append_messages(
        &self,
        batch: Vec<(RoomId, NewMessage)>,
        history_max: usize,
    ) -> Vec<Result<Appended>> {
        let mut results = Vec::with_capacity(batch.len());
        for (room, message) in batch {
            results.push(self.append_message(&room, message, history_max).await);
        }
        results
    }

    /// History, oldest first: the first `limit` strictly after `after`, or the latest `limit`.
    async fn history(
        &self,
        room: &RoomId,
        after: Option<MessageId>,
        limit: usize,
    ) -> Result<HistoryPage>;

    // ---- sessions ending ----

    /// Ends the user's session if they have no socket and went offline at or before
    /// `offline_before`: deletes the session, its token, presence, pending requests (both
    /// ways) and rooms with their history. `None` when the condition does not hold.
    async fn end_session(
        &self,
        phone: &Phone,
        offline_before: Millis,
    ) -> Result<Option<EndedSession>>;

    // ---- deadlines ----

    /// Sets (or moves) a timer.
    async fn schedule(&self, timer: Timer, at: Millis) -> Result<()>;

    /// Leases up to `limit` timers due at `now` to the caller: each is moved to `lease_until`,
    /// so no other caller gets it before then.
    async fn due_timers(
        &self,
        now: Millis,
        lease_until: Millis,
        limit: usize,
    ) -> Result<Vec<DueTimer>>;

    /// Removes a leased timer that was handled, unless it was rescheduled since the lease.
    async fn finish_timer(&self, due: &DueTimer) -> Result<()>;

    /// Whether the store answers (for `/readyz`).
    async fn ping(&self) -> Result<()>;
}
