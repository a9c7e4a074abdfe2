//! # chat-store-redis
//!
//! chat-core's [`Store`](chat_core::Store) and [`EventBus`](chat_core::EventBus) on Redis
//! (7.0 or later), so that several server processes sharing one Redis (or one Redis Cluster)
//! and key prefix behave as one server. [`RedisStore`] is both; clones share one command
//! connection and one subscriber connection. See [On a Redis Cluster](#on-a-redis-cluster).
//!
//! This crate knows Redis, the JSON of chat-core's types and its own compact text of a message
//! (`src/entry.rs`), and nothing of HTTP or WebSocket.
//! It holds no rule of the chat: every check it makes is one chat-core's store contract names,
//! made inside a Lua function with the caller's clock values.
//!
//! ## Atomicity and time
//!
//! Every operation that reads then writes, or writes more than one key, is one Lua function
//! (`FCALL` of a function library loaded at connect with `FUNCTION LOAD`, and loaded again by
//! the call that finds it missing, e.g. after a restart; the Lua is in `src/lua/`, one file per
//! function, put together in `src/scripts.rs`): Redis runs it whole, so races between nodes
//! (two accepts, an accept against a crossed request, a reap by two nodes) resolve to one
//! serial order and a failure leaves nothing half-written. No operation reads, decides in Rust,
//! then writes. (On a cluster, those that make or close a room are two functions, each atomic in
//! its slot: see [On a Redis Cluster](#on-a-redis-cluster).)
//!
//! Logical time is the caller's (`now`, deadlines). Redis's clock is used only for key expiry:
//! each key expires `MARGIN` (see [Lifetimes](#lifetimes)) after the later of its deadline and Redis's now, so
//! data is freed even when no node runs, and never before the timer that acts on the deadline
//! had its chance. There is no sweeper and no `KEYS`/`SCAN` over the keyspace.
//!
//! ## Key map
//!
//! `P` is the key prefix (default `chat:`; it must not contain `{` or `}`). On a cluster the
//! directory's keys (every key below but a room's `P {<room>}:…`) are named `{P}…` instead of
//! `P…` (`{chat:}s:<phone>`, `{chat:}online`): the prefix in a hash tag, so they all share one
//! slot (see [On a Redis Cluster](#on-a-redis-cluster)).
//!
//! | key | type | content | lifetime |
//! |---|---|---|---|
//! | `P s:<phone>` | hash | session and presence: `token` (the SHA-256 digest of the session's token, hex), `n` (name), `c` (created_at), `h` (http_until), `off` (offline_since, absent while online) | no expiry while the user has a socket; else `h` + 7 days (`USER_GRACE`), or session end + `MARGIN` once offline; deleted when the session ends |
//! | `P t:<token digest>` | string | phone (the key is the hex SHA-256 of the token: Redis never holds a token) | as `s:` |
//! | `P k:<ticket digest>` | string | a WebSocket ticket (keyed by its SHA-256): `<session token digest>\|<expires_at>` | deadline + 1 minute; deleted when taken (`GETDEL`) |
//! | `P uc:<phone>` | set | the user's sockets, `<conn id>\|<node>` (its size is the socket count) | as `s:` |
//! | `P online` | sorted set | users not marked offline, all score 0, walked by member (`ZRANGE BYLEX`) | permanent (one key); entries leave on go-offline/session end |
//! | `P nodes` | sorted set | node → alive_until | permanent (one key) |
//! | `P nc:<node>` | set | the node's sockets, `<phone>\|<conn id>` | deleted when the node is reaped/removed |
//! | `P rq:<from>:<to>` | hash | pending request: `c` created_at, `x` expires_at | `x` + `MARGIN` |
//! | `P in:<phone>` / `P out:<phone>` | set | requesters of / recipients of the user's requests | longest entry's expiry |
//! | `P ur:<phone>` | set | the user's room ids | longest room's expiry |
//! | `P bl:<phone>` | set | the phones the user's session blocks | as `s:`; deleted when the session ends |
//! | `P bb:<phone>` | set | the users whose sessions block this phone (reverse of `bl:`) | no expiry; entries leave when the blocker unblocks or their session ends, or (freed by expiry) when `hidden` reads them |
//! | `P cd:<phone>` | hash | decline cooldowns of the user's requests: decliner → until (ms) | as `s:`; ended entries leave at the next decline; deleted when the session ends |
//! | `P pr:<a>:<b>` | string | the room two users share (`a` < `b` bytewise) | room's expiry |
//! | `{P}rm:<room>` | hash | cluster only: the directory's record of a room, `a`, `b`, `c`, `x` (on one Redis the directory reads the room's `:m` itself) | `x` + `MARGIN` |
//! | `P {<room>}:m` | hash | room meta: `a`, `b` (members, requester first), `c` created_at, `x` expires_at; `ra`, `rb` the read marks of `a` and `b` (message ids, absent before the first `mark_read`) | `x` + `MARGIN` |
//! | `P {<room>}:h` | stream | history; one field `v`: `<sender>\|<timestamp>\|<client id length, empty if none>\|[<client_id>\|]<text>` (entries of older versions, fields `s`, `m`, `t`, `c`, are still read) | as `:m` (set when the first message creates it) |
//! | `P {<room>}:d` | hash | dedupe, newer generation: `<sender>\|<client_id>` → message id; at `history_max` fields it becomes `:o` | as `:m` (set when created) |
//! | `P {<room>}:o` | hash | dedupe, older generation (the previous `:d`, whole) | as `:m` |
//! | `P {<room>}:z` | string | cluster only: the room was closed (a tombstone, so an `open_room` still on its way does not make it again) | 1 minute |
//! | `P timers` | sorted set | `Timer::encode()` → due time (ms) | permanent (one key); entries leave when handled |
//! | `P nq:<phone>` | list | the user's offline notifications, oldest first: `<seq>\|<to>\|<kind m\|r>\|<from>\|<at>\|<room>\|<message id>\|<preview>` (room, id and preview empty for a request) | deleted when its last entry is delivered or given up |
//! | `P nd` | sorted set | recipient → when the head of their `nq:` is due (or its lease ends); a member exactly while its `nq:` is not empty | permanent (one key) |
//! | `P na` | hash | recipient → failed attempts of their head | field removed with the head |
//! | `P nn` / `P ns` | string | entries queued in all `nq:` (the bound is checked against it) / the last entry number | permanent |
//!
//! A room's keys share the hash tag `{<room>}`, so the hot path (append, history, read marks)
//! stays in one slot. The other functions compute key names from the prefix and span users,
//! requests and the global sets: on one Redis they may also touch a room's keys (accepting
//! makes the room, closing deletes it, in the same function); on a cluster they stay in the
//! directory's slot and the room's part is a step of its own.
//!
//! Channels: `P u:<phone>` (a user's sockets) and `P r:<room>` (sockets joined to a room); on a
//! cluster `P u:{<phone>}` and `P r:{<room>}`, sharded, each in its audience's slot.
//!
//! ## On a Redis Cluster
//!
//! [`RedisConfig::cluster`] (`chat-server --redis-cluster`) runs on a Redis Cluster through the
//! redis crate's cluster client: it routes each command by its first key's slot, follows
//! `MOVED`/`ASK`, and refreshes its slot map after a failover or a resharding. Every atomic step
//! touches one slot, by this key map:
//!
//! - **A room's keys under the room's tag** (`P {<room>}:m|h|d|o|z`), and its channel
//!   `P r:{<room>}` in the same slot: the whole message path (`append`: membership, dedupe,
//!   `XADD`, `SPUBLISH`) is one function in one slot, and rooms, the bulk of the traffic,
//!   spread over the shards by their random ids.
//! - **The directory in one slot** (`{P}…`): sessions, tokens, tickets, sockets, presence,
//!   requests, blocks, cooldowns, the nodes, the timers, the notification queue, and each
//!   room's directory record. The contract's races are between users (two accepts, a request
//!   crossing one, a block racing an accept, a reap by two nodes, the online listing and its
//!   cursor): keeping them in one slot keeps each of them one function, as on one Redis,
//!   instead of a protocol of steps across slots. The price is that this slot's shard carries
//!   every directory step (registrations, connects, requests, presence); see the README's scale
//!   note for what that allows.
//! - **Operations that span the directory and a room are two steps**, directory first:
//!   - accepting (`accept`, and `send_request` crossing a request) records the room in the
//!     directory (requests dropped, `rm:`, `pr:`, `ur:`, expiry timer), then `open_room` makes
//!     its meta in its slot, and only then are the `request_accepted` events published, so a
//!     member who sends at once finds the room;
//!   - closing (`delete_room`, `block`, `end_session`) removes the room from the directory (the
//!     winner of two closes is the one that removed it, and only it announces `room_closed`),
//!     then `close_room` deletes its keys in its slot and leaves a tombstone for a minute, so an
//!     `open_room` of an accept that lost a race with the close does nothing;
//!   - listing (`room_overviews`) reads the user's rooms from the directory, then each room's
//!     unread count and newest message from its slot, all at once; a room closed in between
//!     is left out.
//!
//!   Between the two steps of an accept, the room is listed (`rooms_of`) but not open yet.
//!   Whatever finds a room missing in its slot (a look-up, a message, history, a read mark)
//!   checks the directory's record and opens it then, so a room whose open failed (its shard
//!   failing over) or never ran (the node died between the steps) opens at its first use; the
//!   tombstone keeps a closed room closed. Between the two steps of a close, a message may still
//!   be stored, then deleted with the room, as a message sent just before the close would be.
//! - **Pub/sub is sharded**: `SSUBSCRIBE`/`SPUBLISH` on the channels above, so an event goes
//!   only to the shard that owns its channel's slot (plain `PUBLISH` on a cluster is broadcast
//!   to every node). The append function publishes from inside (its channel is in its slot); the
//!   directory's events are published by the caller after the step that made them.
//! - **Functions on every master**: `FUNCTION LOAD` is sent to every master (the client's
//!   routing for it), and replicas copy it; a call answered "Function not found" (a master
//!   added by a resharding, a flush) loads it on every master again and is retried. The
//!   cluster's library publishes with `SPUBLISH` and so has a version of its own.
//! - **Failover**: a call to a master that died fails with `StoreUnavailable` (the client
//!   retries within [`OP_TIMEOUT`], then the service answers `store_unavailable`); once the
//!   cluster promoted the replica, the client finds it and traffic resumes, without a restart.
//!   Redis replication is asynchronous: a message acknowledged just before its master died may
//!   be lost with it. [`RedisConfig::wait_replicas`] (`--redis-wait-replicas N`) makes the
//!   acknowledgement wait for `WAIT N 500` after the append (in the same pipeline, one round
//!   trip): a message not confirmed by N replicas is answered `store_unavailable`, and the
//!   client's retry with its `client_id` returns the stored message, once. A promoted replica
//!   has no replica of its own until one rejoins (the dead node restarted, or a second replica
//!   per master), and until then its shard acknowledges no message: that is the price of the
//!   guarantee. The subscriber finds the new master too: it counts the lost connection, stops
//!   serving (`/readyz`), and the bus's watchdog subscribes every wanted channel again, one
//!   `SSUBSCRIBE` per channel (one naming channels of several slots is refused, `CROSSSLOT`).
//!
//! ## Lifetimes
//!
//! `MARGIN` is one hour. A session online through HTTP only whose go-offline timer never runs
//! (no node alive) is freed 7 days (`USER_GRACE`) after its presence window. What only a running
//! node frees: a user with a socket counted on a dead node keeps their session keys until some
//! node reaps it; the members of the three global sorted sets (`online`, `nodes`, `timers`) and
//! a dead node's `nc:` set stay until a node handles them (a timer whose target Redis already
//! freed is then a no-op). Index entries whose target was freed by expiry are dropped lazily by
//! the functions that read them.
//! The bounded collections: history (`XADD MAXLEN ~ history_max`: at least `history_max`
//! messages, at most one stream node more, `stream-node-max-entries` = 100 by default), the
//! dedupe hashes (at most `history_max` entries each, covering at least the newest
//! `history_max` client ids), the delivery queue ([`bus::DELIVERY_QUEUE`]).
//!
//! ## Round trips per operation
//!
//! On one Redis, every operation is one round trip (one command or one `FCALL`) but
//! `take_ticket`, `room_overviews`, and the events `send_request` and `accept_request` publish
//! after their function. A call that finds the library missing, after Redis lost it, costs two
//! more: `FUNCTION LOAD` and the call again.
//!
//! | operation | command |
//! |---|---|
//! | `create_session`, `session`, `touch`, `add_conn`, `remove_conn`, `presence`, `go_offline`, `online_page` | one function each |
//! | `heartbeat` | `ZADD` |
//! | `names` | a pipeline of `HGET s:<phone> n` |
//! | `create_ticket` | `SET … PX` |
//! | `take_ticket` | `GETDEL`, then `session`'s function (two round trips; once per socket opened by ticket) |
//! | `reap_dead_nodes`, `remove_node` | one function (O(sockets of the dead node)) |
//! | `send_request`, `accept_request` | one function each (`send_request` also checks the target is online), then the `PUBLISH` of the `chat_request` / `request_accepted` deliveries; on a cluster an accepted request also runs `open_room` before them |
//! | `remove_request`, `requests` | one function each |
//! | `block`, `unblock`, `hidden_from`, `decline_request` | one function each (`block` also drops the two's requests and deletes their room) |
//! | `blocked` | `SMEMBERS` |
//! | `send_request_capped` | `send_request`'s function with the cap (it counts the sender's `out:` entries) |
//! | `room` | `HMGET` |
//! | `rooms_of`, `delete_room`, `end_session` | one function each; on a cluster a closed room's `close_room` after it (all at once) |
//! | `append_message` | one function: `HMGET` (membership; skipped for a sender this node saw the function accept in the room), `XADD NOMKSTREAM MAXLEN ~`, `PUBLISH` (`SPUBLISH` on a cluster); with a client id also `HGET`s, `HLEN`, `HSET` (dedupe); the room's first message also sets the stream's expiry; with `wait_replicas` a `WAIT` in the same pipeline |
//! | `append_messages` | one pipeline: a run of one sender's consecutive messages to one room is one `append_burst` function (each message as `append_message` would store it, the membership read at most once), any other message one `append` function; one write, one round trip, run in order (on a cluster one pipeline per room, all at once) |
//! | `history` | `MULTI`, `EXISTS` (room check), `XRANGE (after` / `XREVRANGE`, `EXEC`: one round trip, atomic, no Lua |
//! | `mark_read` | one function: `HMGET` (membership, current mark), `XRANGE id id` (the history holds the id), `HSET` when the mark moves |
//! | `read_marks` | `HMGET` |
//! | `room_overviews` | `rooms_of`, then one function per room, all at once: `HMGET`, `XRANGE (mark` in chunks until `UNREAD_MAX` of the other member's messages are counted or the history ends, `XREVRANGE + - COUNT 1` |
//! | `schedule` | `ZADD` |
//! | `due_timers`, `finish_timer` | one function each |
//! | `enqueue_notification` | one function: `HMGET` of the room (a message), `SCARD` of the recipient's sockets, then `GET`, `INCR`, `RPUSH`, `INCR`, `ZADD` when it queues; called after `append_message` / `send_request` only when notifications are on (see below) |
//! | `due_notifications`, `ack_notification`, `retry_notification` | one function each |
//! | `notification_queue_len` | `GET` |
//! | `ping` | `PING`, once the bus is serving (else none: `StoreUnavailable` at once) |
//! | `publish` | `PUBLISH` (`SPUBLISH` on a cluster) |
//! | `subscribe` / `unsubscribe` | `SUBSCRIBE` / `UNSUBSCRIBE` (`SSUBSCRIBE` / `SUNSUBSCRIBE` on a cluster) on the first / last count (or while a failed one is pending), else none |
//!
//! ## Offline notifications
//!
//! The queue of offline notifications is one list per recipient (`nq:`), delivered head first, and
//! a due index of recipients (`nd`) leased like the timers: a node that leases a head moves the
//! recipient to its lease's end, so if the node dies the head comes due again and another node
//! delivers it; it is removed (`ack_notification`) only once delivered. Only heads are leased, so a
//! recipient's notifications go out in order.
//!
//! The check "no open socket" and the enqueue are one step of their own, after the store step that
//! stored the message or request, not part of `append_message`: the append function names only
//! keys under the room's hash tag (its hot path stays in one slot), while the recipient's sockets
//! (`uc:<phone>`) and the queue are not in that slot. The extra step is one `FCALL`, made only when
//! notifications are on; with them off the message path sends no extra command.
//!
//! ## The bus
//!
//! See [`bus`]: per-audience channels subscribed on demand with reference counts, a dedicated
//! RESP3 subscriber connection that resubscribes by itself, a bounded delivery queue.
//! `append_message` publishes the `receive_message` delivery inside its function, right after the
//! `XADD`, so every node sees a room's messages in history order. It publishes
//! `<id>|<entry>` (the stored entry behind its id, no JSON; `2:<id>|<entry>` in bus format 2)
//! on the room's channel, which names the room; every other delivery crosses as the JSON of
//! chat-core's `Delivery` (with `"v":2` first in format 2; see the bus's format versions).
//!
//! chat-core's `EventBus` contract as this crate keeps it, including on failure:
//!
//! - `subscribe` always counts: when its `SUBSCRIBE` fails it returns `StoreUnavailable`, yet
//!   the audience stays wanted and the watchdog subscribes it once Redis answers. So the caller
//!   undoes every `subscribe`, failed or not, with exactly one `unsubscribe` (chat-ws does: it
//!   subscribes on its first local socket of an audience and unsubscribes on the last), and a
//!   failed call never lowers another holder's count.
//! - `unsubscribe` lowers the count and returns `Ok`; at zero it `UNSUBSCRIBE`s, retried by the
//!   watchdog while Redis is down. An `unsubscribe` without a `subscribe` is ignored.
//! - `Store::ping` (`/readyz`) succeeds only while the node serves: the command connection
//!   answers and every wanted channel is subscribed on the live subscriber connection. After an
//!   outage it fails until the watchdog has resubscribed, so a message acknowledged once the
//!   node is ready again reaches this node's sockets.
//!
//! ## Failures
//!
//! Every call is bounded by [`OP_TIMEOUT`] and fails with `Error::StoreUnavailable` when Redis
//! does not answer in time or the connection is down; both connections reconnect by themselves
//! when Redis is back (the subscriber through its watchdog, which also resubscribes; `ping`
//! reports ready only after that).
//!
//! Feature `test-server`: `test_server::RedisServer` starts a private `redis-server` for tests.
//!
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chat_core::event::SinkSlot;
use chat_core::{Error, NodeId, Result};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::{Client, IntoConnectionInfo, ProtocolVersion, RedisError, Value};
use tokio::sync::mpsc;

pub mod bus;
mod conn;
mod entry;
mod members;
mod scripts;
mod store;
#[cfg(feature = "test-server")]
pub mod test_server;

pub use bus::{BusCollector, BusStats};

use crate::bus::Bus;
use crate::conn::Conn;
use crate::scripts::Library;

/// Longest any store or bus call waits for Redis before failing with `StoreUnavailable`
/// (the contract allows 2 s to the client, end to end).
pub const OP_TIMEOUT: Duration = Duration::from_millis(1000);
/// Redis's own reply timeout per command.
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(500);
/// Timeout of one connection attempt.
const CONNECT_ATTEMPT_TIMEOUT: Duration = Duration::from_millis(500);
/// Reconnect attempts after a connection loss before the manager gives up until the next call.
const RECONNECT_RETRIES: usize = 2;
/// Retries of a cluster command (after a `MOVED`, a lost connection, a failover in progress),
/// within [`OP_TIMEOUT`].
const CLUSTER_RETRIES: u32 = 6;
/// Longest wait at [`RedisStore::connect`] (connection, loading the function library).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The Redis [`Store`](chat_core::Store) and [`EventBus`](chat_core::EventBus). Clones share
/// connections, subscriptions and the sink.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.inner.prefix)
            .field("node", &self.inner.node)
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    /// Namespace of every key and channel; the rooms' keys begin with it.
    pub(crate) prefix: String,
    /// The prefix of the directory's keys (every key but a room's): the prefix on one Redis,
    /// `{<prefix>}` on a cluster (one hash slot). The functions' `ARGV[1]`.
    pub(crate) dir: String,
    /// This process's node (for logs; store calls name their node explicitly).
    pub(crate) node: NodeId,
    /// Commands and functions (RESP2). Cloned per call; reconnects by itself.
    pub(crate) conn: Conn,
    /// The Lua function library, loaded at connect and again whenever Redis lost it.
    pub(crate) library: Library,
    /// Replicas a new message must reach before it is acknowledged (`WAIT`), 0 for none.
    pub(crate) wait_replicas: u32,
    /// The bus format this node writes.
    pub(crate) bus_format: u8,
    pub(crate) bus: Bus,
    /// Senders the append function accepted, per room: their messages skip its membership read.
    pub(crate) members: members::KnownMembers,
}

/// Every Redis command the store and the bus send, directly or from inside its functions, as
/// ACL rules: a Redis user with only these (and the key prefix's keys and channels) is enough.
///
/// ```text
/// ACL SETUSER chat on >PASSWORD resetkeys ~chat:* resetchannels &chat:* -@all <ACL_COMMANDS>
/// ```
///
/// Tested: the store conformance suite runs over TLS as such a user (`tests/tls.rs`), and a unit
/// test checks that every command the function library calls is listed.
pub const ACL_COMMANDS: &str = "+ping +hello +fcall +function|load \
     +multi +exec +exists +get +set +getdel +del +rename +persist +pexpireat +pexpiretime +time \
     +hget +hmget +hgetall +hset +hdel +hlen +hincrby +sadd +srem +smembers +sismember +scard \
     +zadd +zrem +zrange +zscore +xadd +xrange +xrevrange +publish +subscribe +unsubscribe \
     +incr +decr +rpush +lpop +lindex +llen +spublish +ssubscribe +sunsubscribe +cluster|slots \
     +cluster|shards +wait";

/// TLS material for a `rediss://` connection beyond the system's trust store, as managed Redis
/// services hand it out. All PEM. Without any, a `rediss://` URL trusts the system's roots.
#[derive(Clone, Default)]
pub struct RedisTls {
    /// CA certificates to trust instead of the system's roots.
    pub ca: Option<Vec<u8>>,
    /// A client certificate and its private key, for services that require mutual TLS.
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for RedisTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key is a secret; the rest is not worth a log line.
        f.debug_struct("RedisTls")
            .field("ca", &self.ca.is_some())
            .field("client", &self.client.is_some())
            .finish()
    }
}

impl RedisTls {
    /// Reads the CA file and the client certificate and key files (both or neither).
    pub fn from_files(
        ca: Option<&std::path::Path>,
        cert: Option<&std::path::Path>,
        key: Option<&std::path::Path>,
    ) -> Result<RedisTls, ConnectError> {
        let read = |path: &std::path::Path, what: &str| {
            std::fs::read(path).map_err(|e| {
                ConnectError::Config(format!("cannot read the {what} {}: {e}", path.display()))
            })
        };
        let client = match (cert, key) {
            (Some(c), Some(k)) => Some((read(c, "client certificate")?, read(k, "client key")?)),
            (None, None) => None,
            _ => {
                return Err(ConnectError::Config(
                    "a client certificate and its key go together".into(),
                ));
            }
        };
        Ok(RedisTls {
            ca: ca.map(|p| read(p, "CA file")).transpose()?,
            client,
        })
    }

    fn is_empty(&self) -> bool {
        self.ca.is_none() && self.client.is_none()
    }

    /// The material as the redis crate takes it.
    fn certificates(&self) -> redis::TlsCertificates {
        redis::TlsCertificates {
            client_tls: self.client.clone().map(|(client_cert, client_key)| {
                redis::ClientTlsConfig {
                    client_cert,
                    client_key,
                }
            }),
            root_cert: self.ca.clone(),
        }
    }

    /// A client for `info`, with this material when there is any.
    fn client(&self, info: redis::ConnectionInfo) -> redis::RedisResult<Client> {
        if self.is_empty() {
            return Client::open(info);
        }
        Client::build_with_tls(info, self.certificates())
    }
}

/// Where and how to connect: one Redis or a cluster, TLS, and how many replicas a message's
/// acknowledgement waits for.
#[derive(Clone, Debug)]
pub struct RedisConfig {
    /// One `redis://`/`rediss://` URL, or on a cluster any of its nodes (seeds: the client
    /// learns the rest from them).
    pub urls: Vec<String>,
    /// Run on a Redis Cluster (see the key map): the cluster client, one hash slot per atomic
    /// step, sharded pub/sub.
    pub cluster: bool,
    /// TLS material for `rediss://`.
    pub tls: RedisTls,
    /// Replicas that must hold a new message before it is acknowledged (`WAIT`); 0 does not
    /// wait. A message not confirmed in time is answered `store_unavailable`; the client's
    /// retry with its `client_id` gets the stored message back, never a second one.
    pub wait_replicas: u32,
    /// The bus format this node writes (1 or 2, default [`bus::FORMAT`]); it reads both. 1 only
    /// while nodes of a release before format versions still run: see
    /// [Format versions](bus#format-versions).
    pub bus_format: u8,
}

impl RedisConfig {
    /// One Redis at `url`, no TLS material, no waiting for replicas.
    pub fn single(url: &str) -> RedisConfig {
        RedisConfig {
            urls: vec![url.to_owned()],
            cluster: false,
            tls: RedisTls::default(),
            wait_replicas: 0,
            bus_format: bus::FORMAT,
        }
    }

    /// A cluster reached through `urls` (seeds).
    pub fn cluster<S: AsRef<str>>(urls: &[S]) -> RedisConfig {
        RedisConfig {
            urls: urls.iter().map(|u| u.as_ref().to_owned()).collect(),
            cluster: true,
            tls: RedisTls::default(),
            wait_replicas: 0,
            bus_format: bus::FORMAT,
        }
    }
}

impl RedisStore {
    /// Connects to Redis at `url` (a `redis://` or `rediss://` URL, with `user:password@` for
    /// AUTH), loads the function library, and starts the subscriber connection, its dispatcher
    /// and its watchdog. Keys and channels are named under `key_prefix`. Must be called inside
    /// a Tokio runtime.
    ///
    /// Fails with [`ConnectError::Config`] for an unusable URL or prefix, and
    /// [`ConnectError::Unavailable`] when Redis does not answer within a few seconds.
    pub async fn connect(
        url: &str,
        key_prefix: &str,
        node: NodeId,
    ) -> Result<RedisStore, ConnectError> {
        RedisStore::connect_with_tls(url, key_prefix, node, &RedisTls::default()).await
    }

    /// [`RedisStore::connect`] over TLS with `tls` (a CA to trust, a client certificate): the
    /// URL must be `rediss://`.
    pub async fn connect_with_tls(
        url: &str,
        key_prefix: &str,
        node: NodeId,
        tls: &RedisTls,
    ) -> Result<RedisStore, ConnectError> {
        let config = RedisConfig {
            tls: tls.clone(),
            ..RedisConfig::single(url)
        };
        RedisStore::connect_config(&config, key_prefix, node).await
    }

    /// Connects as `config` says: one Redis or a cluster, TLS, replicas to wait for. See
    /// [`RedisStore::connect`] for the rest.
    pub async fn connect_config(
        config: &RedisConfig,
        key_prefix: &str,
        node: NodeId,
    ) -> Result<RedisStore, ConnectError> {
        let tls = &config.tls;
        if config.urls.is_empty() {
            return Err(ConnectError::Config("no Redis URL".into()));
        }
        if !(1..=bus::FORMAT).contains(&config.bus_format) {
            return Err(ConnectError::Config(format!(
                "bus format {} is not one this release writes (1 to {})",
                config.bus_format,
                bus::FORMAT
            )));
        }
        if !tls.is_empty() && !config.urls.iter().all(|u| u.starts_with("rediss://")) {
            return Err(ConnectError::Config(
                "TLS files were given but the Redis URL is not rediss://".into(),
            ));
        }
        if !config.cluster && config.urls.len() > 1 {
            return Err(ConnectError::Config(
                "several Redis URLs are for a cluster only".into(),
            ));
        }
        // rustls needs a process-wide crypto provider (redis builds its configs from the
        // default one); ring is the one this build carries (aws-lc-rs would add a cmake build
        // of its C library). rustls 0.23.48 marks it deprecated for lacking post-quantum key
        // exchange, which Redis servers do not offer yet. Installing twice is harmless.
        #[allow(deprecated)]
        let _ = rustls::crypto::ring::default_provider().install_default();
        if key_prefix.contains(['{', '}']) {
            return Err(ConnectError::Config(
                "the key prefix must not contain '{' or '}' (they would change the hash slot)"
                    .into(),
            ));
        }
        let mut infos = Vec::with_capacity(config.urls.len());
        for url in &config.urls {
            infos.push(
                url.as_str()
                    .into_connection_info()
                    .map_err(|e| ConnectError::Config(format!("invalid redis url {url}: {e}")))?,
            );
        }

        let stats = Arc::new(BusStats::default());
        let lost = Arc::new(AtomicU64::new(0));
        let sink = Arc::new(SinkSlot::default());
        let (tx, rx) = mpsc::channel(bus::DELIVERY_QUEUE);
        let push = bus::push_sender(tx, stats.clone(), lost.clone());
        let library = Library::new(config.cluster, config.bus_format);

        let setup = async {
            let (conn, pubsub) = if config.cluster {
                let builder = |protocol| {
                    let mut b = ClusterClientBuilder::new(infos.clone())
                        .use_protocol(protocol)
                        .response_timeout(RESPONSE_TIMEOUT)
                        .connection_timeout(CONNECT_ATTEMPT_TIMEOUT)
                        // A failover takes the cluster a few seconds: the client retries
                        // (refreshing its slot map) while the caller's OP_TIMEOUT allows.
                        .retries(CLUSTER_RETRIES)
                        .min_retry_wait(50)
                        .max_retry_wait(250)
                        .overall_response_timeout(Some(OP_TIMEOUT));
                    if !tls.is_empty() {
                        b = b.certs(tls.certificates());
                    }
                    b
                };
                let cmd = builder(ProtocolVersion::RESP2).build()?;
                let sub = builder(ProtocolVersion::RESP3).push_sender(push).build()?;
                (
                    Conn::Cluster(cmd.get_async_connection().await?),
                    Conn::Cluster(sub.get_async_connection().await?),
                )
            } else {
                let info = infos.swap_remove(0);
                let settings = info.redis_settings().clone();
                let cmd_info = info
                    .clone()
                    .set_redis_settings(settings.clone().set_protocol(ProtocolVersion::RESP2));
                let sub_info =
                    info.set_redis_settings(settings.set_protocol(ProtocolVersion::RESP3));
                let cmd =
                    ConnectionManager::new_with_config(tls.client(cmd_info)?, manager_config())
                        .await?;
                let sub = ConnectionManager::new_with_config(
                    tls.client(sub_info)?,
                    manager_config()
                        .set_push_sender(push)
                        .set_automatic_resubscription(),
                )
                .await?;
                (Conn::Single(cmd), Conn::Single(sub))
            };
            load_library(&mut conn.clone(), &library).await?;
            Ok::<_, RedisError>((conn, pubsub))
        };
        let (conn, pubsub) = match tokio::time::timeout(CONNECT_TIMEOUT, setup).await {
            Ok(Ok(parts)) => parts,
            Ok(Err(e)) if is_config_error(&e) => {
                return Err(ConnectError::Config(format!(
                    "invalid redis url or TLS files: {e}"
                )));
            }
            Ok(Err(e)) => return Err(unavailable(e).into()),
            Err(_) => {
                return Err(Error::unavailable(format!(
                    "redis did not answer within {CONNECT_TIMEOUT:?}"
                ))
                .into());
            }
        };

        let naming = bus::Naming::new(key_prefix, config.cluster);
        tokio::spawn(bus::dispatch(
            rx,
            sink.clone(),
            stats.clone(),
            naming.clone(),
        ));
        let dir = if config.cluster {
            format!("{{{key_prefix}}}")
        } else {
            key_prefix.to_owned()
        };
        let inner = Arc::new(Inner {
            prefix: key_prefix.to_owned(),
            dir,
            node,
            conn,
            library,
            wait_replicas: config.wait_replicas,
            bus_format: config.bus_format,
            bus: Bus::new(naming, pubsub, sink, stats, lost),
            members: members::KnownMembers::default(),
        });
        tokio::spawn(watchdog(Arc::downgrade(&inner)));
        tracing::debug!(
            prefix = key_prefix,
            node = %inner.node,
            cluster = config.cluster,
            "redis store connected"
        );
        Ok(RedisStore { inner })
    }

    /// Whether the store runs on a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        self.inner.conn.is_cluster()
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// Counters of the bus's receive path (deliveries handed over, dropped, undecodable).
    pub fn bus_stats(&self) -> &BusStats {
        &self.inner.bus.stats
    }

    /// The bus's counters as a `prometheus-client` collector, for `/metrics`: hand it to
    /// `chat_core::Metrics::register_collector` (chat-server does). See [`BusCollector`].
    pub fn bus_collector(&self) -> BusCollector {
        self.inner.bus.collector()
    }

    /// Deliveries dropped so far because the queue to the sink was full.
    pub fn dropped_deliveries(&self) -> u64 {
        self.inner.bus.stats.dropped.load(Ordering::Relaxed)
    }
}

fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_connection_timeout(Some(CONNECT_ATTEMPT_TIMEOUT))
        .set_number_of_retries(RECONNECT_RETRIES)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_millis(250))
}

/// Pings the subscriber connection until the store is dropped (see [`bus`]).
async fn watchdog(inner: std::sync::Weak<Inner>) {
    let mut every = tokio::time::interval(bus::WATCHDOG_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        inner.bus.check().await;
    }
}

/// Whether a connect error is the configuration's (a URL or TLS files the client cannot use)
/// rather than Redis's.
fn is_config_error(e: &RedisError) -> bool {
    e.kind() == redis::ErrorKind::InvalidClientConfig
}

/// `FUNCTION LOAD REPLACE`: loads the library, or replaces it with the same code. On a
/// cluster the client sends it to every master (and a master's replicas copy it).
pub(crate) async fn load_library(
    conn: &mut Conn,
    library: &Library,
) -> std::result::Result<(), RedisError> {
    redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg("REPLACE")
        .arg(&library.code)
        .query_async::<Value>(conn)
        .await
        .map(|_| ())
}

/// The one mapping of Redis's errors: the store is unavailable. Logged here, once.
/// Why [`RedisStore::connect`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The URL, the key prefix or the TLS files cannot be used: the configuration is wrong,
    /// and trying again will not help.
    #[error("{0}")]
    Config(String),
    /// Redis did not answer, or refused (a wrong password, a missing permission): the cause
    /// is the error's source.
    #[error("redis is unavailable")]
    Unavailable(#[source] Error),
}

impl From<Error> for ConnectError {
    fn from(e: Error) -> ConnectError {
        ConnectError::Unavailable(e)
    }
}

pub(crate) fn unavailable(e: RedisError) -> Error {
    tracing::warn!(error = %e, "redis call failed");
    Error::unavailable(chat_core::StoreFailure::new(e))
}

/// Bounds a Redis call by [`OP_TIMEOUT`] and maps its error.
pub(crate) async fn bounded<T>(
    fut: impl Future<Output = std::result::Result<T, RedisError>>,
) -> Result<T> {
    match tokio::time::timeout(OP_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(unavailable(e)),
        Err(_) => {
            tracing::warn!("redis call timed out after {OP_TIMEOUT:?}");
            Err(Error::unavailable(format!(
                "redis did not answer within {OP_TIMEOUT:?}"
            )))
        }
    }
}
