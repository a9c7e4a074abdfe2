//! The service: every rule of the contract, over a [`Store`], an [`EventBus`] and a [`Clock`].
//! It knows no HTTP, WebSocket, JSON or Redis; the adapters call it with the caller's session
//! and the raw field values, and map its [`Error`]s onto the wire.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};
use crate::event::{Delivery, Event, EventBus, Except};
use crate::metrics::Metrics;
use crate::store::{Appended, DueTimer, NewRoom, SendOutcome, Store, Timer};
use crate::time::Clock;
use crate::types::{
    ChatRequest, ConnKey, HistoryPage, Message, MessageId, Millis, Names, NewMessage, NodeId,
    OnlinePage, Phone, Requests, Room, RoomId, RoomSummary, Session, Token,
};

/// The lifetimes and sizes of the domain. Defaults are the contract's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// How long a session outlives its user's last moment online.
    pub session_idle_secs: u64,
    /// How long an HTTP API request keeps its user online.
    pub presence_secs: u64,
    /// How long after a user's last socket closes (or its node is found dead) they may stay
    /// online: their HTTP window is cut to end this long after that moment at the latest.
    pub presence_grace_secs: u64,
    /// How long a request stays pending.
    pub request_ttl_secs: u64,
    /// A room's maximum life.
    pub room_ttl_secs: u64,
    /// A room ends once both members have been offline this long.
    pub room_idle_secs: u64,
    /// A node that has not refreshed its heartbeat this long is dead.
    pub node_ttl_secs: u64,
    /// Longest message, in Unicode scalar values.
    pub max_message_chars: usize,
    /// Messages a room keeps at least.
    pub history_max: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            session_idle_secs: 21_600,
            presence_secs: 600,
            presence_grace_secs: 5,
            request_ttl_secs: 6_000,
            room_ttl_secs: 21_600,
            room_idle_secs: 300,
            node_ttl_secs: 10,
            max_message_chars: 4096,
            history_max: 10_000,
        }
    }
}

/// Longest display name, in characters.
pub const MAX_NAME_CHARS: usize = 64;
/// Longest `client_id`, in characters.
pub const MAX_CLIENT_ID_CHARS: usize = 64;
/// Default and largest page of `/online_users`.
pub const ONLINE_LIMIT: (usize, usize) = (100, 1000);
/// Default and largest page of `/chatrooms/{id}/messages`.
pub const HISTORY_LIMIT: (usize, usize) = (50, 500);
/// `join_room` sends the last this many, or up to `HISTORY_LIMIT.1` after `since`.
pub const JOIN_HISTORY: usize = 50;
/// How long a WebSocket ticket ([`ChatService::ws_ticket`]) stays valid, in seconds.
pub const TICKET_SECS: u64 = 30;
/// Timers handled per batch of [`ChatService::tick`].
const TIMER_BATCH: usize = 256;
/// How long a node owns a timer it took before another node may take it.
const TIMER_LEASE_MS: u64 = 30_000;

/// The answer to a registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The session.
    pub session: Session,
    /// The session's token, for the client (the same one on a refresh). Stores keep only its
    /// digest: this is the one place it exists in clear on the server.
    pub token: Token,
    /// Seconds the session outlives its user's last moment online.
    pub expires_in: u64,
}

/// How the recipient answers a chat request: the contract's `action`, read with `parse`
/// (`"accept"` or `"decline"`, anything else `bad_request`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// The two get a room.
    Accept,
    /// The requester is told no.
    Decline,
}

impl std::str::FromStr for Answer {
    type Err = Error;

    fn from_str(action: &str) -> Result<Answer> {
        match action {
            "accept" => Ok(Answer::Accept),
            "decline" => Ok(Answer::Decline),
            _ => Err(Error::bad_request(
                "action must be \"accept\" or \"decline\"",
            )),
        }
    }
}

/// The answer to `send_request`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendResult {
    /// Pending now.
    Sent,
    /// A crossed request was accepted: this is the new room.
    Accepted(RoomId),
}

/// One message of a burst given to [`ChatService::send_messages`], as the client sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// The room id as sent.
    pub room: String,
    /// The text.
    pub text: String,
    /// The idempotency key, if any.
    pub client_id: Option<String>,
}

/// What one [`ChatService::tick`] did, for logs and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TickReport {
    /// Timers handled.
    pub timers: usize,
    /// Users whose last socket was on a dead node.
    pub orphaned_users: usize,
}

/// The chat service. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct ChatService {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    bus: Arc<dyn EventBus>,
    clock: Arc<dyn Clock>,
    config: Config,
    node: NodeId,
    /// Source of this node's socket numbers.
    next_conn: AtomicU64,
    /// Counters exported on `/metrics`.
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for ChatService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatService")
            .field("node", &self.inner.node)
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

fn secs(s: u64) -> u64 {
    s.saturating_mul(1000)
}

impl ChatService {
    /// A service for node `node` over the given ports.
    pub fn new(
        store: Arc<dyn Store>,
        bus: Arc<dyn EventBus>,
        clock: Arc<dyn Clock>,
        config: Config,
        node: NodeId,
    ) -> ChatService {
        ChatService {
            inner: Arc::new(Inner {
                store,
                bus,
                clock,
                config,
                node,
                next_conn: AtomicU64::new(1),
                metrics: Arc::default(),
            }),
        }
    }

    /// The same service counting into `metrics` (shared with the store decorator and the
    /// adapters). Call it before cloning the service.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> ChatService {
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => inner.metrics = metrics,
            None => tracing::warn!("with_metrics called on a shared service; ignored"),
        }
        self
    }

    /// The counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// This node's id.
    pub fn node(&self) -> &NodeId {
        &self.inner.node
    }

    /// The bus (the socket adapter subscribes through it).
    pub fn bus(&self) -> &Arc<dyn EventBus> {
        &self.inner.bus
    }

    /// Now, by the service's clock.
    pub fn now(&self) -> Millis {
        self.inner.clock.now()
    }

    /// A key for a new socket on this node.
    pub fn new_conn(&self) -> ConnKey {
        ConnKey {
            node: self.inner.node.clone(),
            id: self.inner.next_conn.fetch_add(1, Ordering::Relaxed),
        }
    }

    fn store(&self) -> &dyn Store {
        &*self.inner.store
    }

    /// The latest end of the HTTP presence window of a user whose last socket closes at `now`.
    fn grace_until(&self, now: Millis) -> Millis {
        now.saturating_add(secs(self.inner.config.presence_grace_secs))
    }

    fn http_until(&self, now: Millis) -> Millis {
        now.saturating_add(secs(self.inner.config.presence_secs))
    }

    // ---------------------------------------------------------------- sessions

    /// Registers `phone`, or refreshes the session when `token` is that session's.
    pub async fn register(
        &self,
        phone: &str,
        name: Option<String>,
        token: Option<&str>,
    ) -> Result<Registration> {
        let phone = Phone::parse(phone)?;
        // A name of nothing but white space is no name: there is nothing to show.
        let name = name.map(|n| n.trim().to_owned()).filter(|n| !n.is_empty());
        if let Some(name) = &name
            && name.chars().count() > MAX_NAME_CHARS
        {
            return Err(Error::bad_request(format!(
                "name must be at most {MAX_NAME_CHARS} characters"
            )));
        }
        let refresh = token.and_then(Token::from_client);
        let refresh_digest = refresh.as_ref().map(Token::digest);
        let now = self.now();
        // The store keeps the new token's digest; the token itself goes to the client only.
        let new_token = Token::generate()?;
        let session = Session {
            phone: phone.clone(),
            name,
            token_digest: new_token.digest(),
            created_at: now,
        };
        let attempt = self
            .store()
            .create_session(session.clone(), refresh_digest, self.http_until(now))
            .await;
        let registered = match attempt {
            Err(Error::PhoneInUse) => {
                // The old session may be over but not swept yet: end it by the rules, retry once.
                self.end_session_if_due(&phone).await?;
                self.store()
                    .create_session(session, refresh_digest, self.http_until(now))
                    .await?
            }
            other => other?,
        };
        // A new session has no peers to tell: requests and rooms end with the session before
        // it (and a request needs its target's session). Only a refreshed one may have some.
        if registered.came_online && registered.refreshed {
            self.announce_presence(&phone, true).await;
        }
        // A refresh keeps the session's token: the one the caller presented.
        let token = match refresh {
            Some(token) if registered.refreshed => token,
            _ => new_token,
        };
        Ok(Registration {
            session: registered.session,
            token,
            expires_in: self.inner.config.session_idle_secs,
        })
    }

    /// Authenticates an HTTP API request and counts it as presence.
    pub async fn authenticate(&self, token: &str) -> Result<Session> {
        let token = Token::from_client(token).ok_or(Error::Unauthorized)?;
        let now = self.now();
        let touched = self
            .store()
            .touch(&token.digest(), self.http_until(now))
            .await?
            .ok_or(Error::Unauthorized)?;
        if touched.came_online {
            self.announce_presence(&touched.session.phone, true).await;
        }
        Ok(touched.session)
    }

    /// Authenticates a WebSocket upgrade (not counted as presence).
    pub async fn session(&self, token: &str) -> Result<Session> {
        let token = Token::from_client(token).ok_or(Error::Unauthorized)?;
        self.store()
            .session(&token.digest())
            .await?
            .ok_or(Error::Unauthorized)
    }

    /// A single-use ticket for opening a WebSocket as `session`'s user, valid for
    /// [`TICKET_SECS`] on every node: browsers cannot set headers on a WebSocket, and a ticket
    /// in the URL keeps the long-lived token out of URLs, proxy logs and consoles.
    pub async fn ws_ticket(&self, session: &Session) -> Result<Token> {
        let ticket = Token::generate()?;
        let now = self.now();
        self.store()
            .create_ticket(
                &ticket.digest(),
                &session.token_digest,
                now,
                now.saturating_add(secs(TICKET_SECS)),
            )
            .await?;
        Ok(ticket)
    }

    /// Authenticates a WebSocket upgrade by ticket (not counted as presence): takes the
    /// ticket, so it works once. `Unauthorized` for a ticket that is unknown, used, expired, or
    /// whose session ended.
    pub async fn ticket_session(&self, ticket: &str) -> Result<Session> {
        let ticket = Token::from_client(ticket).ok_or(Error::Unauthorized)?;
        self.store()
            .take_ticket(&ticket.digest(), self.now())
            .await?
            .ok_or(Error::Unauthorized)
    }

    /// The caller-identity rule: a field that names the caller, if present, must be them.
    pub fn check_caller(&self, session: &Session, named: Option<&str>) -> Result<()> {
        match named {
            None => Ok(()),
            Some(raw) => match Phone::parse(raw) {
                Ok(p) if p == session.phone => Ok(()),
                _ => Err(Error::forbidden("that phone is not yours")),
            },
        }
    }

    // ---------------------------------------------------------------- presence

    /// One page of online users.
    pub async fn online_users(
        &self,
        cursor: Option<String>,
        limit: Option<&str>,
    ) -> Result<OnlinePage> {
        let limit = page_limit(limit, ONLINE_LIMIT)?;
        self.store().online_page(cursor, limit, self.now()).await
    }

    /// Whether `phone` is online now.
    pub async fn is_online(&self, phone: &Phone) -> Result<bool> {
        let now = self.now();
        Ok(self
            .store()
            .presence(phone)
            .await?
            .is_some_and(|p| p.online_at(now)))
    }

    /// A socket of `phone` opened on this node.
    pub async fn connect(&self, phone: &Phone, conn: &ConnKey) -> Result<()> {
        if self.store().add_conn(phone, conn).await? {
            self.announce_presence(phone, true).await;
        }
        Ok(())
    }

    /// A socket of `phone` closed. Going offline (if this was the last) happens in `tick`.
    pub async fn disconnect(&self, phone: &Phone, conn: &ConnKey) -> Result<()> {
        let now = self.now();
        self.store()
            .remove_conn(phone, conn, now, self.grace_until(now))
            .await
    }

    /// Users who share a pending request or a live room with `phone`.
    async fn peers(&self, phone: &Phone) -> Result<BTreeSet<Phone>> {
        let now = self.now();
        let requests = self.store().requests(phone, now).await?;
        let rooms = self.store().rooms_of(phone).await?;
        let mut peers: BTreeSet<Phone> = requests.incoming.into_iter().collect();
        peers.extend(requests.sent);
        peers.extend(rooms.iter().filter_map(|r| r.other(phone).cloned()));
        peers.remove(phone);
        Ok(peers)
    }

    /// Tells the user's peers. Best effort, like [`ChatService::publish`]: it runs after the
    /// presence change is stored, so failing the caller here would report as failed a change
    /// that was made (a registration answered 503 yet holding the phone, a socket counted yet
    /// never disconnected).
    async fn announce_presence(&self, phone: &Phone, online: bool) {
        let peers = match self.peers(phone).await {
            Ok(peers) => peers,
            Err(e) => {
                tracing::warn!(error = %e, %phone, online, "presence not announced");
                return;
            }
        };
        if peers.is_empty() {
            return;
        }
        let names = match self.names(std::slice::from_ref(phone)).await {
            Ok(names) => names,
            Err(e) => {
                tracing::warn!(error = %e, %phone, "presence announced without a name");
                Names::new()
            }
        };
        for peer in peers {
            self.publish(Delivery::to_user(
                peer,
                Event::Presence {
                    phone: phone.clone(),
                    online,
                    names: names.clone(),
                },
            ))
            .await;
        }
    }

    /// Publishes, logging (not failing) when the bus is down: the state change it reports has
    /// been made, and clients resynchronise over REST.
    async fn publish(&self, delivery: Delivery) {
        if let Err(e) = self.inner.bus.publish(delivery).await {
            tracing::warn!(error = %e, "event not published");
        }
    }

    /// The display names of those of `phones` who have a live session with a name: what REST
    /// answers listing users carry beside the phones.
    pub async fn names(&self, phones: &[Phone]) -> Result<Names> {
        if phones.is_empty() {
            return Ok(Names::new());
        }
        self.store().names(phones).await
    }

    // ---------------------------------------------------------------- requests

    /// `me` asks `to` for a chat.
    pub async fn send_request(&self, me: &Phone, to: &str) -> Result<SendResult> {
        let to = Phone::parse(to)?;
        if &to == me {
            return Err(Error::SelfRequest);
        }
        // The store checks that `to` is online, in the same step as it sends.
        let now = self.now();
        let request = ChatRequest {
            from: me.clone(),
            to: to.clone(),
            created_at: now,
            expires_at: now.saturating_add(secs(self.inner.config.request_ttl_secs)),
        };
        // The store publishes what it did (chat_request, or request_accepted) with it, naming
        // the two.
        let names = self.names(&[me.clone(), to.clone()]).await?;
        match self
            .store()
            .send_request(request, self.new_room(now, names))
            .await?
        {
            SendOutcome::Sent => Ok(SendResult::Sent),
            SendOutcome::Accepted(room) => Ok(SendResult::Accepted(room.id)),
            SendOutcome::AlreadyPending => Err(Error::AlreadyPending),
            SendOutcome::RoomExists(chat_id) => Err(Error::RoomExists { chat_id }),
        }
    }

    fn new_room(&self, now: Millis, names: Names) -> NewRoom {
        NewRoom {
            id: RoomId::generate(),
            created_at: now,
            expires_at: now.saturating_add(secs(self.inner.config.room_ttl_secs)),
            names,
        }
    }

    /// The user's pending requests.
    pub async fn requests(&self, me: &Phone) -> Result<Requests> {
        self.store().requests(me, self.now()).await
    }

    /// `me` answers the request from `requester`: `Some(room)` when accepted.
    pub async fn respond_request(
        &self,
        me: &Phone,
        requester: &str,
        answer: Answer,
    ) -> Result<Option<RoomId>> {
        let requester = Phone::parse(requester)?;
        let accept = answer == Answer::Accept;
        let now = self.now();
        if accept {
            // The store tells both members (request_accepted) with the accept.
            let names = self.names(&[requester.clone(), me.clone()]).await?;
            let room = self
                .store()
                .accept_request(&requester, me, self.new_room(now, names), now)
                .await?
                .ok_or(Error::RequestNotFound)?;
            Ok(Some(room.id))
        } else {
            if !self.store().remove_request(&requester, me, now).await? {
                return Err(Error::RequestNotFound);
            }
            let names = self.names_or_none(&[me.clone(), requester.clone()]).await;
            self.publish(Delivery::to_user(
                requester.clone(),
                Event::RequestDeclined {
                    from_user: me.clone(),
                    to_user: requester,
                    names,
                },
            ))
            .await;
            Ok(None)
        }
    }

    /// `me` withdraws the request to `to`.
    pub async fn cancel_request(&self, me: &Phone, to: &str) -> Result<()> {
        let to = Phone::parse(to)?;
        if !self.store().remove_request(me, &to, self.now()).await? {
            return Err(Error::RequestNotFound);
        }
        let names = self.names_or_none(&[me.clone(), to.clone()]).await;
        self.publish(Delivery::to_user(
            to.clone(),
            Event::RequestCancelled {
                from_user: me.clone(),
                to_user: to,
                names,
            },
        ))
        .await;
        Ok(())
    }

    /// Names for an event published after its change was stored: best effort, as the publish
    /// itself (failing the caller would report as failed a change that was made).
    async fn names_or_none(&self, phones: &[Phone]) -> Names {
        self.names(phones).await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "event published without names");
            Names::new()
        })
    }

    // ---------------------------------------------------------------- rooms

    /// The caller's live rooms.
    pub async fn active_rooms(&self, me: &Phone) -> Result<Vec<RoomSummary>> {
        let mut rooms: Vec<RoomSummary> = self
            .store()
            .rooms_of(me)
            .await?
            .into_iter()
            .filter_map(|r| {
                Some(RoomSummary {
                    chat_id: r.id,
                    other_user: r.other(me)?.clone(),
                    expires_at: r.expires_at,
                })
            })
            .collect();
        rooms.sort_by_key(|r| r.expires_at);
        Ok(rooms)
    }

    /// Whether a room exists (for the public chatroom page).
    pub async fn room_exists(&self, room: &str) -> Result<bool> {
        match RoomId::parse(room) {
            Ok(id) => Ok(self.store().room(&id).await?.is_some()),
            Err(_) => Ok(false),
        }
    }

    /// The room, if `me` is a member: `RoomNotFound` / `Forbidden` otherwise.
    pub async fn member_room(&self, me: &Phone, room: &str) -> Result<Room> {
        self.room_if_member(me, room)
            .await?
            .ok_or(Error::RoomNotFound)
    }

    /// `Forbidden` when the room exists and `me` is not a member; `None` when there is no such
    /// room (a non-UUID id included). Lets callers check field values between the two answers,
    /// as the contract orders them.
    async fn room_if_member(&self, me: &Phone, room: &str) -> Result<Option<Room>> {
        let Ok(id) = RoomId::parse(room) else {
            return Ok(None);
        };
        match self.store().room(&id).await? {
            Some(room) if !room.has_member(me) => {
                Err(Error::forbidden("you are not a member of this room"))
            }
            found => Ok(found),
        }
    }

    /// A page of a room's history for a member.
    pub async fn history(
        &self,
        me: &Phone,
        room: &str,
        after: Option<&str>,
        limit: Option<&str>,
    ) -> Result<HistoryPage> {
        // The contract's order: identity (403), then field values (400), then state (404).
        let found = self.room_if_member(me, room).await?;
        let limit = page_limit(limit, HISTORY_LIMIT)?;
        let after = after.map(MessageId::parse).transpose()?;
        let room = found.ok_or(Error::RoomNotFound)?;
        self.store().history(&room.id, after, limit).await
    }

    /// A member joins a room on a socket: the history to send (the last 50, or up to 500 after
    /// `since`). The adapter sends it, starts delivering the room, then calls
    /// [`ChatService::announce_join`].
    pub async fn join_room(
        &self,
        me: &Phone,
        room: &str,
        since: Option<&str>,
    ) -> Result<(RoomId, HistoryPage)> {
        let found = self.room_if_member(me, room).await?;
        let since = since.map(MessageId::parse).transpose()?;
        let room = found.ok_or(Error::RoomNotFound)?;
        let limit = if since.is_some() {
            HISTORY_LIMIT.1
        } else {
            JOIN_HISTORY
        };
        let page = self.store().history(&room.id, since, limit).await?;
        Ok((room.id, page))
    }

    /// Tells the room's sockets (the joiner's included) that `me` joined.
    pub async fn announce_join(&self, me: &Session, room: RoomId) {
        let names = me
            .name
            .iter()
            .map(|n| (me.phone.clone(), n.clone()))
            .collect();
        self.publish(Delivery::to_room(
            room,
            Event::UserJoined {
                room,
                user: me.phone.clone(),
                names,
            },
        ))
        .await;
    }

    /// Tells the room's other sockets that socket `conn` of `me` left.
    pub async fn announce_leave(&self, me: &Phone, room: RoomId, conn: &ConnKey) {
        self.publish(
            Delivery::to_room(
                room,
                Event::UserLeft {
                    room,
                    user: me.clone(),
                },
            )
            .except(Except::Conn(conn.clone())),
        )
        .await;
    }

    /// A member closes a room.
    pub async fn close_room(&self, me: &Phone, room: &str) -> Result<()> {
        let room = self.member_room(me, room).await?;
        let Some(room) = self.store().delete_room(&room.id).await? else {
            return Err(Error::RoomNotFound);
        };
        for member in &room.members {
            self.publish(Delivery::to_user(
                member.clone(),
                Event::RoomClosed {
                    room: room.id,
                    by: me.clone(),
                },
            ))
            .await;
        }
        Ok(())
    }

    // ---------------------------------------------------------------- messages

    /// Validates and stores a message; the store publishes it to the room.
    pub async fn send_message(
        &self,
        me: &Phone,
        room: &str,
        text: String,
        client_id: Option<String>,
    ) -> Result<Message> {
        let (id, message) = self
            .new_message(me, room, text, client_id, self.now())
            .await?;
        let appended = self
            .store()
            .append_message(&id, message, self.inner.config.history_max)
            .await?;
        Ok(self.count(appended))
    }

    /// Sends a socket's burst of messages: each checked and answered exactly as
    /// [`ChatService::send_message`] would, in the order given, but the valid ones stored with
    /// one store call ([`Store::append_messages`]), so they cost one round trip. The results
    /// are in the order of `batch`.
    pub async fn send_messages(&self, me: &Phone, batch: Vec<Outgoing>) -> Vec<Result<Message>> {
        let now = self.now();
        // `None`: stored, its answer is the store's next one.
        let mut answers: Vec<Option<Error>> = Vec::with_capacity(batch.len());
        let mut valid = Vec::with_capacity(batch.len());
        for one in batch {
            match self
                .new_message(me, &one.room, one.text, one.client_id, now)
                .await
            {
                Ok(stored) => {
                    answers.push(None);
                    valid.push(stored);
                }
                Err(e) => answers.push(Some(e)),
            }
        }
        let mut appended = if valid.is_empty() {
            Vec::new()
        } else {
            self.store()
                .append_messages(valid, self.inner.config.history_max)
                .await
        }
        .into_iter();
        answers
            .into_iter()
            .map(|refused| match refused {
                Some(e) => Err(e),
                // A store that answered fewer than it was given failed the rest.
                None => Ok(self.count(appended.next().unwrap_or_else(|| {
                    Err(Error::unavailable(
                        "the store answered fewer results than messages",
                    ))
                })?)),
            })
            .collect()
    }

    /// A message checked in the contract's order, with the room it goes to.
    async fn new_message(
        &self,
        me: &Phone,
        room: &str,
        text: String,
        client_id: Option<String>,
        now: Millis,
    ) -> Result<(RoomId, NewMessage)> {
        if let Err(invalid) = self.check_message(&text, client_id.as_deref()) {
            // Off the hot path: a non-member hears 403 before any 400, as the contract orders.
            self.room_if_member(me, room).await?;
            return Err(invalid);
        }
        let id = RoomId::parse(room)?;
        let message = NewMessage {
            sender: me.clone(),
            message: text,
            timestamp: now,
            client_id,
        };
        Ok((id, message))
    }

    /// The message a store append answered, counted when new.
    fn count(&self, appended: Appended) -> Message {
        match appended {
            Appended::New(m) => {
                self.inner
                    .metrics
                    .messages_total
                    .fetch_add(1, Ordering::Relaxed);
                m
            }
            Appended::Duplicate(m) => m,
        }
    }

    fn check_message(&self, text: &str, client_id: Option<&str>) -> Result<()> {
        if text.trim().is_empty() {
            return Err(Error::EmptyMessage);
        }
        let max = self.inner.config.max_message_chars;
        if text.chars().count() > max {
            return Err(Error::MessageTooLong { max });
        }
        if let Some(c) = client_id {
            let n = c.chars().count();
            if n == 0 || n > MAX_CLIENT_ID_CHARS {
                return Err(Error::bad_request(format!(
                    "client_id must be 1 to {MAX_CLIENT_ID_CHARS} characters"
                )));
            }
        }
        Ok(())
    }

    /// A member is typing (or stopped): told to the other member's sockets joined to the room.
    pub async fn typing(&self, me: &Phone, room: &str, typing: bool) -> Result<()> {
        let room = self.member_room(me, room).await?;
        self.publish(
            Delivery::to_room(
                room.id,
                Event::Typing {
                    room: room.id,
                    user: me.clone(),
                    typing,
                },
            )
            .except(Except::User(me.clone())),
        )
        .await;
        Ok(())
    }

    // ---------------------------------------------------------------- time

    /// Runs the lifetimes: refreshes this node's heartbeat, reaps dead nodes, and handles
    /// every due deadline. The server calls it about every quarter second; any node may.
    pub async fn tick(&self) -> Result<TickReport> {
        let now = self.now();
        let store = self.store();
        store
            .heartbeat(
                &self.inner.node,
                now.saturating_add(secs(self.inner.config.node_ttl_secs)),
            )
            .await?;
        let orphaned = store.reap_dead_nodes(now, self.grace_until(now)).await?;
        let mut report = TickReport {
            orphaned_users: orphaned.len(),
            ..TickReport::default()
        };
        loop {
            let due = store
                .due_timers(now, now.saturating_add(TIMER_LEASE_MS), TIMER_BATCH)
                .await?;
            let batch = due.len();
            for timer in due {
                self.handle_timer(&timer, now).await?;
                report.timers += 1;
            }
            if batch < TIMER_BATCH {
                return Ok(report);
            }
        }
    }

    /// A node shutting down cleanly: forget its sockets now rather than after `node_ttl`.
    pub async fn leave_cluster(&self) -> Result<()> {
        let now = self.now();
        self.store()
            .remove_node(&self.inner.node, now, self.grace_until(now))
            .await
            .map(|_| ())
    }

    async fn handle_timer(&self, due: &DueTimer, now: Millis) -> Result<()> {
        match &due.timer {
            Timer::Presence(phone) => {
                let session_end = now.saturating_add(secs(self.inner.config.session_idle_secs));
                if self.store().go_offline(phone, now, session_end).await? {
                    self.announce_presence(phone, false).await;
                    self.schedule_idle_rooms(phone).await?;
                } else if self
                    .store()
                    .presence(phone)
                    .await?
                    .is_some_and(|p| p.conns == 0 && p.offline_since.is_some())
                {
                    // Already offline: a handler that failed after `go_offline` left this timer
                    // to come back after its lease. Finish its work, or the user's rooms would
                    // never be scheduled to end when idle.
                    self.schedule_idle_rooms(phone).await?;
                }
            }
            Timer::SessionEnd(phone) => {
                self.end_session_if_due(phone).await?;
            }
            Timer::RoomExpiry(room) => {
                if let Some(room) = self.store().room(room).await? {
                    if room.expires_at <= now {
                        self.expire_room(&room).await?;
                    } else {
                        self.store()
                            .schedule(Timer::RoomExpiry(room.id), room.expires_at)
                            .await?;
                    }
                }
            }
            Timer::RoomIdle(room) => {
                if let Some(room) = self.store().room(room).await?
                    && let Some(idle_since) = self.both_offline_since(&room).await?
                {
                    let at = idle_since.saturating_add(secs(self.inner.config.room_idle_secs));
                    if at <= now {
                        self.expire_room(&room).await?;
                    } else {
                        self.store().schedule(Timer::RoomIdle(room.id), at).await?;
                    }
                }
            }
            Timer::RequestExpiry { from, to } => {
                self.store().remove_request(from, to, now).await?;
            }
        }
        self.store().finish_timer(due).await
    }

    /// When both members are offline: since when the later one went offline.
    async fn both_offline_since(&self, room: &Room) -> Result<Option<Millis>> {
        let mut since = 0;
        for member in &room.members {
            match self.store().presence(member).await? {
                Some(p) if p.conns == 0 => match p.offline_since {
                    Some(t) => since = since.max(t),
                    None => return Ok(None),
                },
                Some(_) => return Ok(None),
                // No session: offline since forever.
                None => {}
            }
        }
        Ok(Some(since))
    }

    async fn schedule_idle_rooms(&self, phone: &Phone) -> Result<()> {
        for room in self.store().rooms_of(phone).await? {
            if let Some(since) = self.both_offline_since(&room).await? {
                // From when the later member went offline, not from now: a retried handler
                // must not push the deadline back. A past deadline is simply due at once.
                let at = since.saturating_add(secs(self.inner.config.room_idle_secs));
                self.store().schedule(Timer::RoomIdle(room.id), at).await?;
            }
        }
        Ok(())
    }

    async fn expire_room(&self, room: &Room) -> Result<()> {
        if let Some(room) = self.store().delete_room(&room.id).await? {
            let now = self.now();
            for member in &room.members {
                // The room is gone already; if presence cannot be read, tell the member anyway
                // (a user with no socket receives nothing) rather than fail after the fact.
                let online = match self.store().presence(member).await {
                    Ok(p) => p.is_some_and(|p| p.online_at(now)),
                    Err(e) => {
                        tracing::warn!(error = %e, %member, "presence unknown; telling anyway");
                        true
                    }
                };
                if online {
                    self.publish(Delivery::to_user(
                        member.clone(),
                        Event::RoomExpired { room: room.id },
                    ))
                    .await;
                }
            }
        }
        Ok(())
    }

    async fn end_session_if_due(&self, phone: &Phone) -> Result<()> {
        let now = self.now();
        let offline_before = now.saturating_sub(secs(self.inner.config.session_idle_secs));
        if let Some(ended) = self.store().end_session(phone, offline_before).await? {
            tracing::debug!(%phone, rooms = ended.rooms.len(), "session ended");
            for room in &ended.rooms {
                if let Some(other) = room.other(phone) {
                    self.publish(Delivery::to_user(
                        other.clone(),
                        Event::RoomClosed {
                            room: room.id,
                            by: phone.clone(),
                        },
                    ))
                    .await;
                }
            }
        }
        Ok(())
    }
}

/// Applies a page `limit`: absent → default, over the maximum → the maximum, not a positive
/// integer → `bad_request`.
pub fn page_limit(limit: Option<&str>, (default, max): (usize, usize)) -> Result<usize> {
    let Some(raw) = limit else {
        return Ok(default);
    };
    let bad = || Error::bad_request("limit must be a positive integer");
    let digits = raw.strip_prefix('+').unwrap_or(raw);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    if digits.bytes().all(|b| b == b'0') {
        return Err(bad());
    }
    // All digits and not zero: anything too long to parse is over the maximum anyway.
    Ok(digits.parse::<usize>().map_or(max, |n| n.min(max)))
}
