//! The in-memory store and event bus: one process, everything behind one mutex that is never
//! held across an `.await`. It is the reference implementation of the [`Store`] contract and
//! what unit tests of embedding applications run against.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::error::{Error, Result};
use crate::event::{Audience, Delivery, Event, EventBus, EventSink, SinkSlot};
use crate::store::{
    Appended, BlockOutcome, BlockStore, DueTimer, EndedSession, Enqueued, LeasedNotification,
    NewRoom, NodeStore, Notification, NotificationKind, NotificationStore, OfflineEvent,
    PresenceState, PresenceStore, RequestOutcome, RequestStore, RoomOverview, RoomStore,
    SessionCreated, SessionStore, Timer, TimerStore, Touched, UNREAD_MAX,
};
use crate::types::{
    ChatRequest, ConnKey, HistoryPage, Message, MessageId, Millis, Names, NewMessage, NodeId,
    OnlinePage, Phone, ReadMarks, Requests, Room, RoomId, Session, TokenDigest,
};

/// The in-memory [`Store`](crate::Store) and [`EventBus`]. Clones share state.
///
/// ```
/// use std::sync::Arc;
/// use chat_core::{ChatService, Config, MemoryStore, NodeId, SystemClock};
///
/// # tokio_test_block_on(async {
/// let store = MemoryStore::new();
/// let chat = ChatService::new(
///     Arc::new(store.clone()),
///     Arc::new(store),
///     Arc::new(SystemClock),
///     Config::default(),
///     NodeId::random(),
/// );
/// let asha = chat.register("+1 415 555 0100", Some("Asha".into()), None).await?;
/// let ben = chat.register("+14155550101", None, None).await?;
/// chat.send_request(&asha.session.phone, "+14155550101").await?;
/// let room = chat
///     .respond_request(&ben.session.phone, "+14155550100", chat_core::Answer::Accept)
///     .await?
///     .expect("accepted");
/// let sent = chat
///     .send_message(&asha.session.phone, &room.to_string(), "hi Ben".into(), None)
///     .await?;
/// let page = chat.history(&ben.session.phone, &room.to_string(), None, None).await?;
/// assert_eq!(page.messages, vec![sent]);
/// # Ok::<(), chat_core::Error>(())
/// # }).unwrap();
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
/// # }
/// ```
#[derive(Clone, Default)]
pub struct MemoryStore {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryStore")
    }
}

#[derive(Default)]
struct Shared {
    /// All state; one lock makes every store operation atomic.
    state: Mutex<State>,
    /// Where published events go (this process is the only node).
    sink: SinkSlot,
}

#[derive(Default)]
struct State {
    /// Live sessions by phone.
    sessions: HashMap<Phone, Session>,
    /// Token digest → phone, for authentication.
    tokens: HashMap<TokenDigest, Phone>,
    /// WebSocket ticket → (the session token it stands for, expires at).
    tickets: HashMap<TokenDigest, (TokenDigest, Millis)>,
    /// Tickets in the order they expire (one TTL for all: the order they were made), so
    /// expired ones are freed from the front.
    ticket_expiry: VecDeque<(Millis, TokenDigest)>,
    /// Presence of every user with a session.
    presence: HashMap<Phone, Presence>,
    /// Users not marked offline, ordered for the cursor of the online listing.
    online: BTreeSet<Phone>,
    /// Node → alive until.
    nodes: HashMap<NodeId, Millis>,
    /// Node → its sockets, so a dead node's sockets can be forgotten.
    node_conns: HashMap<NodeId, HashSet<(Phone, ConnKey)>>,
    /// Pending requests by (from, to).
    requests: HashMap<(Phone, Phone), ChatRequest>,
    /// to → froms.
    incoming: HashMap<Phone, BTreeSet<Phone>>,
    /// from → tos.
    outgoing: HashMap<Phone, BTreeSet<Phone>>,
    /// Live rooms.
    rooms: HashMap<RoomId, RoomState>,
    /// Member → rooms.
    user_rooms: HashMap<Phone, BTreeSet<RoomId>>,
    /// Ordered pair of members → their room.
    pair_room: HashMap<(Phone, Phone), RoomId>,
    /// Deadlines in due order.
    timers: BTreeSet<(Millis, Timer)>,
    /// Timer → its deadline.
    timer_at: HashMap<Timer, Millis>,
    /// Blocker → the phones their session blocks.
    blocks: HashMap<Phone, BTreeSet<Phone>>,
    /// Blocked phone → the blockers (the reverse of `blocks`).
    blocked_by: HashMap<Phone, BTreeSet<Phone>>,
    /// Requester → (decliner → until when a new request is refused).
    cooldowns: HashMap<Phone, HashMap<Phone, Millis>>,
    /// The offline notification queue.
    notifications: NotificationQueue,
}

/// The offline notifications: a queue per recipient, and the recipients in due order.
/// Invariant: a recipient is in `due` (once) exactly when its queue is not empty.
#[derive(Default)]
struct NotificationQueue {
    /// Recipient → its queue.
    queues: HashMap<Phone, RecipientQueue>,
    /// (due at, recipient): when the head of each non-empty queue may be handed out.
    due: BTreeSet<(Millis, Phone)>,
    /// Entries in all queues.
    len: usize,
    /// The last entry number handed out.
    seq: u64,
}

struct RecipientQueue {
    /// (seq, notification), oldest first.
    entries: VecDeque<(u64, Notification)>,
    /// Failed attempts of the head.
    attempts: u32,
    /// The key of this recipient in `NotificationQueue::due`.
    due_at: Millis,
}

impl NotificationQueue {
    /// Moves `to`'s due time to `at`.
    fn set_due(&mut self, to: &Phone, at: Millis) {
        if let Some(q) = self.queues.get_mut(to) {
            self.due.remove(&(q.due_at, to.clone()));
            q.due_at = at;
            self.due.insert((at, to.clone()));
        }
    }

    /// The head of `to`'s queue, if it is entry `seq`.
    fn head_is(&self, to: &Phone, seq: u64) -> bool {
        self.queues
            .get(to)
            .and_then(|q| q.entries.front())
            .is_some_and(|(s, _)| *s == seq)
    }
}

#[derive(Default)]
struct Presence {
    conns: HashSet<ConnKey>,
    http_until: Millis,
    offline_since: Option<Millis>,
}

impl Presence {
    fn state(&self) -> PresenceState {
        PresenceState {
            conns: u32::try_from(self.conns.len()).unwrap_or(u32::MAX),
            http_until: self.http_until,
            offline_since: self.offline_since,
        }
    }
}

struct RoomState {
    room: Room,
    /// History, oldest first.
    messages: VecDeque<Message>,
    /// (sender, client_id) → id, for the messages still in `messages`.
    client_ids: HashMap<(Phone, String), MessageId>,
    /// The last id handed out (ids keep growing even when history is trimmed).
    last_id: MessageId,
    /// Each member's read mark, in the order of `room.members`.
    read: [Option<MessageId>; 2],
}

impl RoomState {
    /// The position of `phone` in `room.members`.
    fn member_index(&self, phone: &Phone) -> Option<usize> {
        self.room.members.iter().position(|m| m == phone)
    }

    /// `phone`'s overview: messages of the other member after `phone`'s mark (at most
    /// `UNREAD_MAX`) and the newest message.
    fn overview(&self, phone: &Phone) -> RoomOverview {
        let mark = self.member_index(phone).and_then(|i| self.read[i]);
        let start = mark.map_or(0, |mark| self.messages.partition_point(|m| m.id <= mark));
        let unread = self
            .messages
            .range(start..)
            .filter(|m| m.sender != *phone)
            .take(UNREAD_MAX as usize)
            .count();
        RoomOverview {
            room: self.room.clone(),
            unread: u32::try_from(unread).unwrap_or(UNREAD_MAX),
            last_message: self.messages.back().cloned(),
        }
    }
}

fn pair(a: &Phone, b: &Phone) -> (Phone, Phone) {
    if a <= b {
        (a.clone(), b.clone())
    } else {
        (b.clone(), a.clone())
    }
}

impl State {
    fn schedule(&mut self, timer: Timer, at: Millis) {
        if let Some(old) = self.timer_at.insert(timer.clone(), at) {
            self.timers.remove(&(old, timer.clone()));
        }
        self.timers.insert((at, timer));
    }

    /// Forgets a timer whose subject ended, so ended things leave nothing behind until the
    /// deadline they no longer have. A leased copy being handled finishes as a no-op.
    fn unschedule(&mut self, timer: &Timer) {
        if let Some(at) = self.timer_at.remove(timer) {
            self.timers.remove(&(at, timer.clone()));
        }
    }

    fn request_live(&self, from: &Phone, to: &Phone, now: Millis) -> bool {
        self.requests
            .get(&(from.clone(), to.clone()))
            .is_some_and(|r| r.expires_at > now)
    }

    fn drop_request(&mut self, from: &Phone, to: &Phone) -> Option<ChatRequest> {
        let r = self.requests.remove(&(from.clone(), to.clone()))?;
        remove_from(&mut self.incoming, to, from);
        remove_from(&mut self.outgoing, from, to);
        self.unschedule(&Timer::RequestExpiry {
            from: from.clone(),
            to: to.clone(),
        });
        Some(r)
    }

    /// Whether one of the two blocks the other.
    fn blocked_either(&self, a: &Phone, b: &Phone) -> bool {
        let blocks = |x: &Phone, y: &Phone| self.blocks.get(x).is_some_and(|set| set.contains(y));
        blocks(a, b) || blocks(b, a)
    }

    /// Frees the blocks and cooldowns of `phone`'s session.
    fn forget_blocks(&mut self, phone: &Phone) {
        for whom in self.blocks.remove(phone).unwrap_or_default() {
            remove_from(&mut self.blocked_by, &whom, phone);
        }
        self.cooldowns.remove(phone);
    }

    fn insert_room(&mut self, room: Room) {
        let [a, b] = &room.members;
        self.pair_room.insert(pair(a, b), room.id);
        for m in [a, b] {
            self.user_rooms
                .entry(m.clone())
                .or_default()
                .insert(room.id);
        }
        self.schedule(Timer::RoomExpiry(room.id), room.expires_at);
        self.rooms.insert(
            room.id,
            RoomState {
                room,
                messages: VecDeque::new(),
                client_ids: HashMap::new(),
                last_id: MessageId { ms: 0, seq: 0 },
                read: [None, None],
            },
        );
    }

    fn remove_room(&mut self, id: &RoomId) -> Option<Room> {
        let state = self.rooms.remove(id)?;
        let [a, b] = &state.room.members;
        self.pair_room.remove(&pair(a, b));
        self.unschedule(&Timer::RoomExpiry(*id));
        self.unschedule(&Timer::RoomIdle(*id));
        for m in [a, b] {
            remove_from(&mut self.user_rooms, m, id);
        }
        Some(state.room)
    }

    /// Accepts `from → to`: the caller checked it is live and that no room exists.
    fn make_room(&mut self, from: &Phone, to: &Phone, new: NewRoom) -> Room {
        self.drop_request(from, to);
        self.drop_request(to, from);
        let room = Room {
            id: new.id,
            members: [from.clone(), to.clone()],
            created_at: new.created_at,
            expires_at: new.expires_at,
        };
        self.insert_room(room.clone());
        room
    }

    fn touch(&mut self, phone: &Phone, http_until: Millis) -> bool {
        let p = self.presence.entry(phone.clone()).or_default();
        p.http_until = p.http_until.max(http_until);
        let at = p.http_until;
        let came_online = p.offline_since.take().is_some();
        self.online.insert(phone.clone());
        self.schedule(Timer::Presence(phone.clone()), at);
        came_online
    }

    fn forget_conn(
        &mut self,
        phone: &Phone,
        conn: &ConnKey,
        now: Millis,
        grace_until: Millis,
    ) -> bool {
        let Some(p) = self.presence.get_mut(phone) else {
            return false;
        };
        if !p.conns.remove(conn) || !p.conns.is_empty() {
            return false;
        }
        p.http_until = p.http_until.min(grace_until);
        let at = p.http_until.max(now);
        self.schedule(Timer::Presence(phone.clone()), at);
        true
    }

    fn forget_node(&mut self, node: &NodeId, now: Millis, grace_until: Millis) -> Vec<Phone> {
        self.nodes.remove(node);
        let conns = self.node_conns.remove(node).unwrap_or_default();
        let mut orphans: Vec<Phone> = conns
            .into_iter()
            .filter_map(|(phone, conn)| {
                self.forget_conn(&phone, &conn, now, grace_until)
                    .then_some(phone)
            })
            .collect();
        orphans.sort();
        orphans.dedup();
        orphans
    }
}

fn remove_from<K, V>(map: &mut HashMap<K, BTreeSet<V>>, key: &K, value: &V)
where
    K: std::hash::Hash + Eq,
    V: Ord,
{
    if let Some(set) = map.get_mut(key) {
        set.remove(value);
        if set.is_empty() {
            map.remove(key);
        }
    }
}

const ONLINE_CURSOR_PREFIX: &str = "m2.";

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// Tells both members of a room just made by an accept (called under the state lock).
    fn announce_room(&self, room: &Room, names: &Names) {
        for delivery in Delivery::request_accepted(room.id, &room.members, names) {
            self.shared.sink.deliver(&delivery);
        }
    }

    /// `send_request` with a cap on the sender's pending requests (`usize::MAX`: none).
    fn send(
        &self,
        request: ChatRequest,
        room: NewRoom,
        max_pending: usize,
    ) -> Result<RequestOutcome> {
        let mut s = self.state()?;
        let (from, to, now) = (&request.from, &request.to, request.created_at);
        let online = s.presence.get(to).is_some_and(|p| p.state().online_at(now));
        // A block answers exactly as if the target were offline.
        if !s.sessions.contains_key(to) || !online || s.blocked_either(from, to) {
            return Err(Error::UserNotFound);
        }
        if let Some(id) = s.pair_room.get(&pair(from, to)) {
            return Ok(RequestOutcome::RoomExists(*id));
        }
        if s.request_live(to, from, now) {
            let (from, to) = (to.clone(), from.clone());
            let names = room.names.clone();
            let room = s.make_room(&from, &to, room);
            self.announce_room(&room, &names);
            return Ok(RequestOutcome::Accepted(room));
        }
        if s.request_live(from, to, now) {
            return Ok(RequestOutcome::AlreadyPending);
        }
        if let Some(until) = s.cooldowns.get(from).and_then(|c| c.get(to)).copied()
            && until > now
        {
            return Err(Error::RateLimited {
                retry_after_secs: (until - now).div_ceil(1000).max(1),
            });
        }
        if max_pending != usize::MAX {
            let pending = s
                .outgoing
                .get(from)
                .into_iter()
                .flatten()
                .filter(|t| s.request_live(from, t, now))
                .count();
            if pending >= max_pending {
                return Err(Error::TooManyPending { max: max_pending });
            }
        }
        s.incoming
            .entry(to.clone())
            .or_default()
            .insert(from.clone());
        s.outgoing
            .entry(from.clone())
            .or_default()
            .insert(to.clone());
        s.schedule(
            Timer::RequestExpiry {
                from: from.clone(),
                to: to.clone(),
            },
            request.expires_at,
        );
        // Delivered under the lock, like every change's event here.
        self.shared
            .sink
            .deliver(&Delivery::chat_request(from, to, now, &room.names));
        s.requests.insert((from.clone(), to.clone()), request);
        Ok(RequestOutcome::Sent)
    }

    fn state(&self) -> Result<MutexGuard<'_, State>> {
        // A poisoned lock means a bug panicked mid-operation; refuse rather than serve torn state.
        self.shared.state.lock().map_err(|_| {
            Error::unavailable("the in-memory store's lock is poisoned by an earlier panic")
        })
    }

    /// How many records the store holds (sessions, requests, rooms, messages, timers), to
    /// check that what ends is freed.
    pub fn footprint(&self) -> Result<usize> {
        let s = self.state()?;
        let messages: usize = s.rooms.values().map(|r| r.messages.len()).sum();
        Ok(s.sessions.len()
            + s.tokens.len()
            + s.presence.len()
            + s.online.len()
            + s.requests.len()
            + s.incoming.len()
            + s.outgoing.len()
            + s.rooms.len()
            + s.user_rooms.len()
            + s.pair_room.len()
            + messages
            + s.timers.len()
            + s.blocks.len()
            + s.blocked_by.len()
            + s.cooldowns.len()
            + s.node_conns.values().map(HashSet::len).sum::<usize>())
    }
}

#[async_trait::async_trait]
impl SessionStore for MemoryStore {
    async fn create_session(
        &self,
        session: Session,
        refresh: Option<TokenDigest>,
        http_until: Millis,
    ) -> Result<SessionCreated> {
        let mut s = self.state()?;
        if let Some(existing) = s.sessions.get(&session.phone) {
            if refresh.as_ref() != Some(&existing.token_digest) {
                return Err(Error::PhoneInUse);
            }
            let existing = existing.clone();
            let came_online = s.touch(&existing.phone, http_until);
            return Ok(SessionCreated {
                session: existing,
                refreshed: true,
                came_online,
            });
        }
        s.tokens.insert(session.token_digest, session.phone.clone());
        s.sessions.insert(session.phone.clone(), session.clone());
        s.presence
            .insert(session.phone.clone(), Presence::default());
        s.touch(&session.phone, http_until);
        Ok(SessionCreated {
            session,
            refreshed: false,
            came_online: true,
        })
    }

    async fn session(&self, token: &TokenDigest) -> Result<Option<Session>> {
        let s = self.state()?;
        Ok(s.tokens.get(token).and_then(|p| s.sessions.get(p)).cloned())
    }

    async fn names(&self, phones: &[Phone]) -> Result<Names> {
        let s = self.state()?;
        Ok(phones
            .iter()
            .filter_map(|p| Some((p.clone(), s.sessions.get(p)?.name.clone()?)))
            .collect())
    }

    async fn create_ticket(
        &self,
        ticket: &TokenDigest,
        token: &TokenDigest,
        now: Millis,
        expires_at: Millis,
    ) -> Result<()> {
        let mut s = self.state()?;
        while let Some((at, _)) = s.ticket_expiry.front()
            && *at <= now
        {
            if let Some((_, old)) = s.ticket_expiry.pop_front() {
                s.tickets.remove(&old);
            }
        }
        s.tickets.insert(*ticket, (*token, expires_at));
        s.ticket_expiry.push_back((expires_at, *ticket));
        Ok(())
    }

    async fn take_ticket(&self, ticket: &TokenDigest, now: Millis) -> Result<Option<Session>> {
        let mut s = self.state()?;
        let Some((token, expires_at)) = s.tickets.remove(ticket) else {
            return Ok(None);
        };
        if expires_at <= now {
            return Ok(None);
        }
        Ok(s.tokens
            .get(&token)
            .and_then(|p| s.sessions.get(p))
            .cloned())
    }

    async fn touch(&self, token: &TokenDigest, http_until: Millis) -> Result<Option<Touched>> {
        let mut s = self.state()?;
        let Some(session) = s.tokens.get(token).and_then(|p| s.sessions.get(p)).cloned() else {
            return Ok(None);
        };
        let came_online = s.touch(&session.phone, http_until);
        Ok(Some(Touched {
            session,
            came_online,
        }))
    }

    async fn end_session(
        &self,
        phone: &Phone,
        offline_before: Millis,
    ) -> Result<Option<EndedSession>> {
        let mut s = self.state()?;
        let due = s.presence.get(phone).is_none_or(|p| {
            p.conns.is_empty() && p.offline_since.is_some_and(|t| t <= offline_before)
        });
        if !due {
            return Ok(None);
        }
        let Some(session) = s.sessions.remove(phone) else {
            return Ok(None);
        };
        s.tokens.remove(&session.token_digest);
        s.presence.remove(phone);
        s.online.remove(phone);
        s.unschedule(&Timer::Presence(phone.clone()));
        s.unschedule(&Timer::SessionEnd(phone.clone()));
        s.forget_blocks(phone);
        let incoming: Vec<Phone> = s
            .incoming
            .get(phone)
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        let sent: Vec<Phone> = s
            .outgoing
            .get(phone)
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        for from in &incoming {
            s.drop_request(from, phone);
        }
        for to in &sent {
            s.drop_request(phone, to);
        }
        let room_ids: Vec<RoomId> = s
            .user_rooms
            .get(phone)
            .into_iter()
            .flatten()
            .copied()
            .collect();
        let rooms = room_ids.iter().filter_map(|id| s.remove_room(id)).collect();
        Ok(Some(EndedSession {
            session,
            rooms,
            requests: Requests { incoming, sent },
        }))
    }
}

#[async_trait::async_trait]
impl PresenceStore for MemoryStore {
    async fn add_conn(&self, phone: &Phone, conn: &ConnKey) -> Result<bool> {
        let mut s = self.state()?;
        let Some(p) = s.presence.get_mut(phone) else {
            return Ok(false);
        };
        p.conns.insert(conn.clone());
        let came_online = p.offline_since.take().is_some();
        s.online.insert(phone.clone());
        s.node_conns
            .entry(conn.node.clone())
            .or_default()
            .insert((phone.clone(), conn.clone()));
        Ok(came_online)
    }

    async fn remove_conn(
        &self,
        phone: &Phone,
        conn: &ConnKey,
        now: Millis,
        grace_until: Millis,
    ) -> Result<()> {
        let mut s = self.state()?;
        if let Some(set) = s.node_conns.get_mut(&conn.node) {
            set.remove(&(phone.clone(), conn.clone()));
            if set.is_empty() {
                s.node_conns.remove(&conn.node);
            }
        }
        s.forget_conn(phone, conn, now, grace_until);
        Ok(())
    }

    async fn presence(&self, phone: &Phone) -> Result<Option<PresenceState>> {
        Ok(self.state()?.presence.get(phone).map(Presence::state))
    }

    async fn go_offline(&self, phone: &Phone, now: Millis, session_end_at: Millis) -> Result<bool> {
        let mut s = self.state()?;
        let Some(p) = s.presence.get_mut(phone) else {
            return Ok(false);
        };
        if !p.conns.is_empty() || now < p.http_until || p.offline_since.is_some() {
            return Ok(false);
        }
        p.offline_since = Some(now);
        s.online.remove(phone);
        s.schedule(Timer::SessionEnd(phone.clone()), session_end_at);
        Ok(true)
    }

    async fn online_page(
        &self,
        cursor: Option<String>,
        limit: usize,
        now: Millis,
    ) -> Result<OnlinePage> {
        let after = match cursor.as_deref() {
            None => None,
            Some(c) => Some(
                c.strip_prefix(ONLINE_CURSOR_PREFIX)
                    .and_then(Phone::from_cursor_form)
                    .ok_or_else(|| Error::bad_request("not a cursor of this server"))?,
            ),
        };
        let s = self.state()?;
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut range = s.online.range((lower, Bound::Unbounded));
        // A page of nothing would end the walk with `next_cursor: None`: serve at least one.
        let page: Vec<&Phone> = range.by_ref().take(limit.max(1)).collect();
        let next_cursor = match (range.next(), page.last()) {
            (Some(_), Some(last)) => Some(format!("{ONLINE_CURSOR_PREFIX}{}", last.cursor_form())),
            _ => None,
        };
        let phones = page
            .into_iter()
            .filter(|p| s.presence.get(*p).is_some_and(|p| p.state().online_at(now)))
            .cloned()
            .collect();
        Ok(OnlinePage {
            phones,
            next_cursor,
        })
    }
}

#[async_trait::async_trait]
impl NodeStore for MemoryStore {
    async fn heartbeat(&self, node: &NodeId, alive_until: Millis) -> Result<()> {
        self.state()?.nodes.insert(node.clone(), alive_until);
        Ok(())
    }

    async fn reap_dead_nodes(&self, now: Millis, grace_until: Millis) -> Result<Vec<Phone>> {
        let mut s = self.state()?;
        let dead: Vec<NodeId> = s
            .nodes
            .iter()
            .filter(|(_, until)| **until < now)
            .map(|(n, _)| n.clone())
            .collect();
        let mut orphans = Vec::new();
        for node in dead {
            orphans.extend(s.forget_node(&node, now, grace_until));
        }
        Ok(orphans)
    }

    async fn remove_node(
        &self,
        node: &NodeId,
        now: Millis,
        grace_until: Millis,
    ) -> Result<Vec<Phone>> {
        Ok(self.state()?.forget_node(node, now, grace_until))
    }

    async fn ping(&self) -> Result<()> {
        self.state().map(|_| ())
    }
}

#[async_trait::async_trait]
impl RequestStore for MemoryStore {
    async fn send_request(&self, request: ChatRequest, room: NewRoom) -> Result<RequestOutcome> {
        self.send(request, room, usize::MAX)
    }

    async fn accept_request(
        &self,
        from: &Phone,
        to: &Phone,
        room: NewRoom,
        now: Millis,
    ) -> Result<Option<Room>> {
        let mut s = self.state()?;
        if !s.request_live(from, to, now)
            || s.pair_room.contains_key(&pair(from, to))
            || s.blocked_either(from, to)
        {
            return Ok(None);
        }
        let names = room.names.clone();
        let room = s.make_room(from, to, room);
        self.announce_room(&room, &names);
        Ok(Some(room))
    }

    async fn remove_request(&self, from: &Phone, to: &Phone, now: Millis) -> Result<bool> {
        let mut s = self.state()?;
        Ok(s.drop_request(from, to).is_some_and(|r| r.expires_at > now))
    }

    async fn requests(&self, phone: &Phone, now: Millis) -> Result<Requests> {
        let s = self.state()?;
        let live = |set: Option<&BTreeSet<Phone>>, incoming: bool| -> Vec<Phone> {
            set.into_iter()
                .flatten()
                .filter(|other| {
                    let (f, t) = if incoming {
                        (*other, phone)
                    } else {
                        (phone, *other)
                    };
                    s.request_live(f, t, now)
                })
                .cloned()
                .collect()
        };
        Ok(Requests {
            incoming: live(s.incoming.get(phone), true),
            sent: live(s.outgoing.get(phone), false),
        })
    }
}

#[async_trait::async_trait]
impl RoomStore for MemoryStore {
    async fn room(&self, id: &RoomId) -> Result<Option<Room>> {
        Ok(self.state()?.rooms.get(id).map(|r| r.room.clone()))
    }

    async fn rooms_of(&self, phone: &Phone) -> Result<Vec<Room>> {
        let s = self.state()?;
        Ok(s.user_rooms
            .get(phone)
            .into_iter()
            .flatten()
            .filter_map(|id| s.rooms.get(id).map(|r| r.room.clone()))
            .collect())
    }

    async fn delete_room(&self, id: &RoomId) -> Result<Option<Room>> {
        Ok(self.state()?.remove_room(id))
    }

    async fn append_message(
        &self,
        room: &RoomId,
        message: NewMessage,
        history_max: usize,
    ) -> Result<Appended> {
        let mut s = self.state()?;
        let r = s.rooms.get_mut(room).ok_or(Error::RoomNotFound)?;
        if !r.room.has_member(&message.sender) {
            return Err(Error::forbidden("you are not a member of this room"));
        }
        let key = message
            .client_id
            .as_ref()
            .map(|c| (message.sender.clone(), c.clone()));
        if let Some(first) = key.as_ref().and_then(|k| r.client_ids.get(k)) {
            let first = *first;
            if let Some(m) = r.messages.iter().rev().find(|m| m.id == first) {
                return Ok(Appended::Duplicate(m.clone()));
            }
        }
        let id = if message.timestamp > r.last_id.ms {
            MessageId {
                ms: message.timestamp,
                seq: 0,
            }
        } else {
            r.last_id.next()
        };
        r.last_id = id;
        let stored = Message {
            id,
            room: *room,
            sender: message.sender,
            message: message.message,
            timestamp: message.timestamp,
            client_id: message.client_id,
        };
        if let Some(k) = key {
            r.client_ids.insert(k, id);
        }
        r.messages.push_back(stored.clone());
        while r.messages.len() > history_max.max(1) {
            if let Some(old) = r.messages.pop_front()
                && let Some(c) = old.client_id
            {
                r.client_ids.remove(&(old.sender, c));
            }
        }
        // Delivered under the lock: the order sockets see is the order of history. The
        // delivery lends the message back afterwards, saving a copy per message.
        let delivery = Delivery::to_room(*room, Event::ReceiveMessage(stored));
        self.shared.sink.deliver(&delivery);
        match delivery.event {
            Event::ReceiveMessage(stored) => Ok(Appended::New(stored)),
            _ => unreachable!("built as a receive_message just above"),
        }
    }

    async fn history(
        &self,
        room: &RoomId,
        after: Option<MessageId>,
        limit: usize,
    ) -> Result<HistoryPage> {
        let s = self.state()?;
        let r = s.rooms.get(room).ok_or(Error::RoomNotFound)?;
        let msgs = &r.messages;
        let (start, end, more) = match after {
            Some(after) => {
                let start = msgs.partition_point(|m| m.id <= after);
                let end = start.saturating_add(limit).min(msgs.len());
                (start, end, end < msgs.len())
            }
            None => {
                let start = msgs.len().saturating_sub(limit);
                (start, msgs.len(), start > 0)
            }
        };
        Ok(HistoryPage {
            messages: msgs.range(start..end).cloned().collect(),
            more,
        })
    }

    async fn mark_read(&self, room: &RoomId, phone: &Phone, id: MessageId) -> Result<bool> {
        let mut s = self.state()?;
        let r = s.rooms.get_mut(room).ok_or(Error::RoomNotFound)?;
        let Some(i) = r.member_index(phone) else {
            return Err(Error::forbidden("you are not a member of this room"));
        };
        if r.messages.binary_search_by_key(&id, |m| m.id).is_err() {
            return Err(Error::bad_request("not the id of a message of this room"));
        }
        if r.read[i].is_some_and(|mark| id <= mark) {
            return Ok(false);
        }
        r.read[i] = Some(id);
        Ok(true)
    }

    async fn read_marks(&self, room: &RoomId) -> Result<Option<ReadMarks>> {
        let s = self.state()?;
        Ok(s.rooms.get(room).map(|r| {
            r.room
                .members
                .iter()
                .cloned()
                .zip(r.read)
                .collect::<ReadMarks>()
        }))
    }

    async fn room_overviews(&self, phone: &Phone) -> Result<Vec<RoomOverview>> {
        let s = self.state()?;
        Ok(s.user_rooms
            .get(phone)
            .into_iter()
            .flatten()
            .filter_map(|id| s.rooms.get(id).map(|r| r.overview(phone)))
            .collect())
    }
}

#[async_trait::async_trait]
impl TimerStore for MemoryStore {
    async fn schedule(&self, timer: Timer, at: Millis) -> Result<()> {
        self.state()?.schedule(timer, at);
        Ok(())
    }

    async fn due_timers(
        &self,
        now: Millis,
        lease_until: Millis,
        limit: usize,
    ) -> Result<Vec<DueTimer>> {
        let mut s = self.state()?;
        let due: Vec<(Millis, Timer)> = s
            .timers
            .iter()
            .take_while(|(at, _)| *at <= now)
            .take(limit)
            .cloned()
            .collect();
        Ok(due
            .into_iter()
            .map(|(_, timer)| {
                s.schedule(timer.clone(), lease_until);
                DueTimer { timer, lease_until }
            })
            .collect())
    }

    async fn finish_timer(&self, due: &DueTimer) -> Result<()> {
        let mut s = self.state()?;
        if s.timer_at.get(&due.timer) == Some(&due.lease_until) {
            s.timer_at.remove(&due.timer);
            s.timers.remove(&(due.lease_until, due.timer.clone()));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl NotificationStore for MemoryStore {
    async fn enqueue_notification(
        &self,
        event: OfflineEvent,
        now: Millis,
        max_queue: usize,
    ) -> Result<Enqueued> {
        let mut s = self.state()?;
        let notification = match event {
            OfflineEvent::Message {
                room,
                from,
                id,
                preview,
                at,
            } => {
                let Some(r) = s.rooms.get(&room) else {
                    return Ok(Enqueued::NoRecipient);
                };
                let Some(to) = r.room.other(&from).cloned() else {
                    return Ok(Enqueued::NoRecipient);
                };
                Notification {
                    to,
                    from,
                    kind: NotificationKind::Message { room, id, preview },
                    at,
                }
            }
            OfflineEvent::ChatRequest { from, to, at } => Notification {
                to,
                from,
                kind: NotificationKind::ChatRequest,
                at,
            },
        };
        if s.presence
            .get(&notification.to)
            .is_some_and(|p| !p.conns.is_empty())
        {
            return Ok(Enqueued::Online);
        }
        let q = &mut s.notifications;
        if q.len >= max_queue {
            return Ok(Enqueued::Dropped);
        }
        q.seq += 1;
        q.len += 1;
        let seq = q.seq;
        let to = notification.to.clone();
        match q.queues.get_mut(&to) {
            Some(queue) => queue.entries.push_back((seq, notification)),
            None => {
                q.queues.insert(
                    to.clone(),
                    RecipientQueue {
                        entries: VecDeque::from([(seq, notification)]),
                        attempts: 0,
                        due_at: now,
                    },
                );
                q.due.insert((now, to));
            }
        }
        Ok(Enqueued::Queued)
    }

    async fn due_notifications(
        &self,
        now: Millis,
        lease_until: Millis,
        limit: usize,
    ) -> Result<Vec<LeasedNotification>> {
        let mut s = self.state()?;
        let q = &mut s.notifications;
        let due: Vec<Phone> = q
            .due
            .iter()
            .take_while(|(at, _)| *at <= now)
            .take(limit)
            .map(|(_, to)| to.clone())
            .collect();
        let mut out = Vec::with_capacity(due.len());
        for to in due {
            q.set_due(&to, lease_until);
            if let Some(queue) = q.queues.get(&to)
                && let Some((seq, n)) = queue.entries.front()
            {
                out.push(LeasedNotification {
                    seq: *seq,
                    attempts: queue.attempts,
                    notification: n.clone(),
                    lease_until,
                });
            }
        }
        Ok(out)
    }

    async fn ack_notification(&self, leased: &LeasedNotification, now: Millis) -> Result<bool> {
        let mut s = self.state()?;
        let q = &mut s.notifications;
        let to = &leased.notification.to;
        if !q.head_is(to, leased.seq) {
            return Ok(false);
        }
        q.len = q.len.saturating_sub(1);
        let Some(queue) = q.queues.get_mut(to) else {
            return Ok(false);
        };
        queue.entries.pop_front();
        queue.attempts = 0;
        if queue.entries.is_empty() {
            let at = queue.due_at;
            q.queues.remove(to);
            q.due.remove(&(at, to.clone()));
        } else {
            q.set_due(to, now);
        }
        Ok(true)
    }

    async fn retry_notification(&self, leased: &LeasedNotification, at: Millis) -> Result<bool> {
        let mut s = self.state()?;
        let q = &mut s.notifications;
        let to = &leased.notification.to;
        if !q.head_is(to, leased.seq) {
            return Ok(false);
        }
        if let Some(queue) = q.queues.get_mut(to) {
            queue.attempts = queue.attempts.saturating_add(1);
        }
        q.set_due(to, at);
        Ok(true)
    }

    async fn notification_queue_len(&self) -> Result<u64> {
        Ok(u64::try_from(self.state()?.notifications.len).unwrap_or(u64::MAX))
    }
}

#[async_trait::async_trait]
impl BlockStore for MemoryStore {
    async fn block(
        &self,
        by: &Phone,
        whom: &Phone,
        max_blocked: usize,
        now: Millis,
    ) -> Result<Option<BlockOutcome>> {
        let mut s = self.state()?;
        if !s.sessions.contains_key(by) {
            return Ok(None);
        }
        let set = s.blocks.entry(by.clone()).or_default();
        if !set.contains(whom) {
            if set.len() >= max_blocked {
                if set.is_empty() {
                    s.blocks.remove(by);
                }
                return Err(Error::TooManyBlocked { max: max_blocked });
            }
            set.insert(whom.clone());
            s.blocked_by
                .entry(whom.clone())
                .or_default()
                .insert(by.clone());
        }
        let dropped = s.drop_request(whom, by).is_some_and(|r| r.expires_at > now);
        let cancelled = s.drop_request(by, whom).is_some_and(|r| r.expires_at > now);
        let room = match s.pair_room.get(&pair(by, whom)).copied() {
            Some(id) => s.remove_room(&id),
            None => None,
        };
        Ok(Some(BlockOutcome {
            dropped,
            cancelled,
            room,
        }))
    }

    async fn unblock(&self, by: &Phone, whom: &Phone) -> Result<()> {
        let mut s = self.state()?;
        remove_from(&mut s.blocks, by, whom);
        remove_from(&mut s.blocked_by, whom, by);
        Ok(())
    }

    async fn blocked(&self, by: &Phone) -> Result<Vec<Phone>> {
        let s = self.state()?;
        Ok(s.blocks.get(by).into_iter().flatten().cloned().collect())
    }

    async fn hidden_from(&self, phone: &Phone) -> Result<BTreeSet<Phone>> {
        let s = self.state()?;
        Ok(s.blocks
            .get(phone)
            .into_iter()
            .chain(s.blocked_by.get(phone))
            .flatten()
            .cloned()
            .collect())
    }

    async fn decline_request(
        &self,
        from: &Phone,
        to: &Phone,
        now: Millis,
        cooldown_until: Millis,
    ) -> Result<bool> {
        let mut s = self.state()?;
        let pending = s.drop_request(from, to).is_some_and(|r| r.expires_at > now);
        if pending && s.sessions.contains_key(from) {
            let cooldowns = s.cooldowns.entry(from.clone()).or_default();
            // Ended cooldowns go as new ones come, so the map holds at most the declines of
            // one cooldown's length.
            cooldowns.retain(|_, until| *until > now);
            cooldowns.insert(to.clone(), cooldown_until);
        }
        Ok(pending)
    }

    async fn send_request_capped(
        &self,
        request: ChatRequest,
        room: NewRoom,
        max_pending: usize,
    ) -> Result<RequestOutcome> {
        self.send(request, room, max_pending)
    }
}

#[async_trait::async_trait]
impl EventBus for MemoryStore {
    async fn publish(&self, delivery: Delivery) -> Result<()> {
        self.shared.sink.deliver(&delivery);
        Ok(())
    }

    async fn subscribe(&self, _audience: Audience) -> Result<()> {
        Ok(())
    }

    async fn unsubscribe(&self, _audience: Audience) -> Result<()> {
        Ok(())
    }

    fn attach(&self, sink: Arc<dyn EventSink>) {
        self.shared.sink.set(sink);
    }
}
