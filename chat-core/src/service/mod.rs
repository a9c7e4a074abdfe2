//! The service: every rule of the contract, over a [`Store`], an [`EventBus`] and a [`Clock`].
//! It knows no HTTP, WebSocket, JSON or Redis; the adapters call it with the caller's session
//! and the raw field values, and map its [`Error`]s onto the wire.

mod blocks;
mod messages;
mod notify;
mod presence;
mod reads;
mod requests;
mod rooms;
mod sessions;
mod time;

pub use notify::NOTIFY_QUEUE_MAX;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};
use crate::event::{Delivery, EventBus};
use crate::metrics::Metrics;
use crate::store::Store;
use crate::time::Clock;
use crate::types::{ConnKey, Millis, NodeId, RoomId, Session, Token};

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
    /// Most outgoing pending requests a user may have.
    pub max_pending_requests: usize,
    /// How long after a decline the requester's next request to the decliner is refused.
    pub decline_cooldown_secs: u64,
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
            max_pending_requests: 20,
            decline_cooldown_secs: 600,
        }
    }
}

/// Longest display name, in characters.
pub const MAX_NAME_CHARS: usize = 64;
/// Most phones one session may block.
pub const MAX_BLOCKED: usize = 1000;
/// Longest `client_id`, in characters.
pub const MAX_CLIENT_ID_CHARS: usize = 64;
/// The size of a page a client may ask for with `limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageLimit {
    /// The page size when the client gives no `limit`.
    pub default: usize,
    /// The largest page; a larger `limit` gets this many.
    pub max: usize,
}

impl PageLimit {
    /// Applies a client's `limit`: absent → the default, over the maximum → the maximum, not
    /// a positive integer → `bad_request`.
    pub fn apply(self, limit: Option<&str>) -> Result<usize> {
        let Some(raw) = limit else {
            return Ok(self.default);
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
        Ok(digits
            .parse::<usize>()
            .map_or(self.max, |n| n.min(self.max)))
    }
}

/// Pages of `/online_users`.
pub const ONLINE_LIMIT: PageLimit = PageLimit {
    default: 100,
    max: 1000,
};
/// Pages of `/chatrooms/{id}/messages`.
pub const HISTORY_LIMIT: PageLimit = PageLimit {
    default: 50,
    max: 500,
};
/// `join_room` sends the last this many, or up to `HISTORY_LIMIT.max` after `since`.
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
pub enum RequestSent {
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
    /// Offline notifications, when enabled ([`ChatService::with_notifications`]).
    notify: Option<notify::Notifications>,
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
                notify: None,
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

    /// Publishes, logging (not failing) when the bus is down: the state change it reports has
    /// been made, and clients resynchronise over REST.
    async fn publish(&self, delivery: Delivery) {
        if let Err(e) = self.inner.bus.publish(delivery).await {
            tracing::warn!(error = %e, "event not published");
        }
    }
}
