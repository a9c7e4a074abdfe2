//! The cross-node event bus on Redis pub/sub.
//!
//! One channel per audience (`<prefix>u:<phone>`, `<prefix>r:<room>`; on a cluster
//! `<prefix>u:{<phone>}` and `<prefix>r:{<room>}`, sharded channels in their own hash slot: a
//! room's is its keys' slot, so the append function publishes it with `SPUBLISH` from inside). A node subscribes to an
//! audience's channel when chat-ws declares the first local socket for it and unsubscribes at
//! the last (the calls are counted here), so an event crosses Redis once per interested node and
//! a node only reads what its sockets need. A node's own publishes come back to it through its
//! own subscription, exactly once, in the order Redis fixed.
//!
//! ## Counting
//!
//! Every `subscribe` is counted, whether or not its `SUBSCRIBE` reached Redis, and every
//! `unsubscribe` undoes one: the caller pairs them (chat-ws calls `unsubscribe` on its last
//! socket of an audience even when the `subscribe` for its first one failed), so a failed call
//! never lowers another holder's count. A `subscribe` whose `SUBSCRIBE` failed returns the error
//! and leaves the channel wanted: the watchdog subscribes it once Redis answers. An
//! `unsubscribe` whose `UNSUBSCRIBE` failed returns `Ok` (the count is down either way) and the
//! watchdog unsubscribes later; meanwhile the sink merely receives deliveries no local socket
//! wants. What Redis should hold is decided from the counts each time a command is sent
//! (level, not edge), with the commands serialised, so overlapping or timed-out calls never
//! leave Redis holding the opposite of what the counts want.
//!
//! ## Connection and readiness
//!
//! Subscriptions live on a dedicated RESP3 `ConnectionManager` with a push sender and automatic
//! resubscription; a watchdog task pings it every [`WATCHDOG_EVERY`], which makes it reconnect
//! even after its retries ran out while Redis was down, and re-issues every wanted subscription
//! after a disconnect (SUBSCRIBE is idempotent), so the subscriber resumes by itself.
//!
//! The node serves (`Bus::serving`, checked by `Store::ping` and so by `/readyz`) only while
//! every wanted channel is subscribed on the live connection: from a loss of the subscriber
//! connection (a disconnect, a watchdog ping failing other than by a timeout) until the
//! watchdog has pinged the new connection and subscribed every wanted channel on it, and while
//! a channel's own `SUBSCRIBE` failed and is not yet retried, it does not. Otherwise a message
//! acknowledged in that gap would reach no socket on this node.
//!
//! Received messages go through a bounded queue ([`DELIVERY_QUEUE`]) to one dispatcher task that
//! decodes them (a JSON `Delivery`, or a message's compact payload on a room channel) and hands
//! them to the attached sink. A full queue drops the delivery, counts it
//! ([`BusStats::dropped`]) and logs: blocking instead would stall the reading of the Redis
//! connection, and Redis would soon disconnect a subscriber that does not read (its pub/sub
//! output buffer limit), losing more. Sockets that missed messages catch up from history.
//!
//! ## Format versions
//!
//! What nodes publish carries the version of its format, so nodes of two releases can share a
//! deployment during a rolling upgrade:
//!
//! | version | a delivery (JSON) | a message on its room's channel |
//! |---|---|---|
//! | 1 (releases before versioning) | `{"audience":…,"event":…}` | `<id>\|<entry>` |
//! | 2 ([`FORMAT`]) | `{"v":2,"audience":…,"event":…}` | `2:<id>\|<entry>` |
//!
//! A node reads both; it writes the version it is configured with
//! ([`RedisConfig::bus_format`](crate::RedisConfig::bus_format), default [`FORMAT`]). A node of
//! version 1 reads the JSON of version 2 (it ignores the `v` field) but not its messages, so an
//! upgrade from version 1 runs the new release with `--bus-format 1` until every node runs it,
//! then drops the flag (a second rolling restart). A payload of a version this node does not
//! know (a newer release writing a newer format) is not dropped silently: it is counted in
//! `chat_bus_unknown_format_total` and logged (once per thousand) with the version, the sign
//! that the newer nodes write a format the older ones cannot read yet.
//!
//! ## Metrics
//!
//! [`BusStats`] and the loss count reach `/metrics` through a [`BusCollector`]
//! ([`RedisStore::bus_collector`](crate::RedisStore::bus_collector)), which chat-server adds to
//! `chat_core::Metrics`; it reads the counters at each scrape, so the receive path keeps its
//! plain atomics.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, MutexGuard, PoisonError};
use std::time::Duration;

use chat_core::event::SinkSlot;
use chat_core::{Audience, Delivery, Error, Event, Result, RoomId};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use redis::{PushInfo, PushKind, Value};
use tokio::sync::mpsc;

use crate::OP_TIMEOUT;
use crate::conn::Conn;

/// Deliveries received from Redis and not yet handed to the sink. At most this many are queued;
/// past it they are dropped and counted. Sized for a burst of a few seconds of a busy node while
/// bounding memory (a delivery is at most a few KiB of JSON).
pub const DELIVERY_QUEUE: usize = 16_384;

/// The bus format this release writes by default, and the newest it reads (see
/// [Format versions](self#format-versions)).
pub const FORMAT: u8 = 2;

/// How often the watchdog checks the subscriber connection.
pub const WATCHDOG_EVERY: Duration = Duration::from_millis(500);

/// Channels per SUBSCRIBE/UNSUBSCRIBE command when re-issuing them in bulk.
const RESUBSCRIBE_CHUNK: usize = 256;

/// Counters of the receive path.
#[derive(Debug, Default)]
pub struct BusStats {
    /// Deliveries handed to the sink.
    pub delivered: AtomicU64,
    /// Deliveries dropped because the queue to the sink was full.
    pub dropped: AtomicU64,
    /// Payloads that were not a `Delivery`.
    pub undecodable: AtomicU64,
    /// Payloads of a format version newer than this node reads (see
    /// [Format versions](self#format-versions)).
    pub unknown_format: AtomicU64,
    /// Disconnects of the subscriber connection seen.
    pub disconnects: AtomicU64,
    /// Times the watchdog subscribed every wanted channel again after a loss of the subscriber
    /// connection.
    pub resubscriptions: AtomicU64,
}

/// The bus's counters as a `prometheus-client` [`Collector`], read at each scrape. Names:
/// `chat_bus_delivered_total`, `chat_bus_dropped_total`, `chat_bus_undecodable_total`,
/// `chat_bus_unknown_format_total`,
/// `chat_bus_disconnects_total`, `chat_bus_losses_total`, `chat_bus_resubscriptions_total`.
#[derive(Debug, Clone)]
pub struct BusCollector {
    /// The receive path's counters.
    stats: Arc<BusStats>,
    /// The bus's loss count (disconnects and failed watchdog pings).
    lost: Arc<AtomicU64>,
}

impl Collector for BusCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::result::Result<(), std::fmt::Error> {
        let s = &self.stats;
        // Counter names without `_total`: the encoder appends it.
        for (name, help, value) in [
            (
                "chat_bus_delivered",
                "Deliveries received from Redis pub/sub and handed to this node's sockets.",
                &s.delivered,
            ),
            (
                "chat_bus_dropped",
                "Deliveries dropped because the queue to this node's sockets was full.",
                &s.dropped,
            ),
            (
                "chat_bus_undecodable",
                "Pub/sub payloads that were not a delivery.",
                &s.undecodable,
            ),
            (
                "chat_bus_unknown_format",
                "Pub/sub payloads of a format version newer than this node reads: a newer node \
                 writes a format this one cannot read (see --bus-format).",
                &s.unknown_format,
            ),
            (
                "chat_bus_disconnects",
                "Disconnects of the pub/sub subscriber connection.",
                &s.disconnects,
            ),
            (
                "chat_bus_losses",
                "Losses of the subscriber connection (disconnects and failed watchdog pings); \
                 the node is not ready until the watchdog has resubscribed.",
                &*self.lost,
            ),
            (
                "chat_bus_resubscriptions",
                "Times every wanted channel was subscribed again after a loss.",
                &s.resubscriptions,
            ),
        ] {
            chat_core::metrics::encode_counter(&mut encoder, name, help, value)?;
        }
        Ok(())
    }
}

/// What this node wants subscribed, and where Redis may differ from it. Sets hold channels; the
/// sets are bounded by the channels counted now plus those awaiting an UNSUBSCRIBE.
#[derive(Default)]
struct Wanted {
    /// Channel → number of `subscribe` calls not yet undone (only counts > 0 are kept).
    counts: HashMap<String, u32>,
    /// Wanted channels whose SUBSCRIBE has not succeeded since they became wanted (in flight,
    /// waiting for its turn, or failed).
    unconfirmed: HashSet<String>,
    /// The part of `unconfirmed` whose SUBSCRIBE failed or timed out: the node does not serve
    /// them until the watchdog subscribes them.
    failed: HashSet<String>,
    /// Channels no longer wanted whose UNSUBSCRIBE has not succeeded yet.
    stale: HashSet<String>,
}

impl Wanted {
    /// A SUBSCRIBE of `ch` succeeded: whatever wants it now is served.
    fn subscribed(&mut self, ch: &str) {
        self.unconfirmed.remove(ch);
        self.failed.remove(ch);
    }
}

pub(crate) struct Bus {
    naming: Naming,
    /// The RESP3 subscriber connection (commands go through the store's own connection).
    pubsub: Conn,
    /// Counts and pending work; never held across an await.
    wanted: std::sync::Mutex<Wanted>,
    /// Held across each SUBSCRIBE/UNSUBSCRIBE (and the watchdog's bulk ones), so commands reach
    /// Redis in the order they were decided, each decided from the counts of that moment.
    turn: tokio::sync::Mutex<()>,
    /// Where received deliveries go.
    pub(crate) sink: Arc<SinkSlot>,
    pub(crate) stats: Arc<BusStats>,
    /// Bumped on every loss of the subscriber connection: a disconnect (by the push sender) or
    /// a watchdog ping that failed other than by timing out.
    lost: Arc<AtomicU64>,
    /// The value of `lost` when the watchdog last subscribed every wanted channel on a
    /// connection that had just answered PING. Equal to `lost`: nothing lost since.
    synced: AtomicU64,
}

impl Bus {
    /// The subscriber connection. `connect` builds the manager with the push sender returned by
    /// [`push_sender`], which shares `lost`.
    pub(crate) fn new(
        naming: Naming,
        pubsub: Conn,
        sink: Arc<SinkSlot>,
        stats: Arc<BusStats>,
        lost: Arc<AtomicU64>,
    ) -> Bus {
        Bus {
            naming,
            pubsub,
            wanted: std::sync::Mutex::default(),
            turn: tokio::sync::Mutex::default(),
            sink,
            stats,
            // A loss before this point (during connect) leaves `synced` behind: resynced then.
            lost,
            synced: AtomicU64::new(0),
        }
    }

    /// The counters as a collector for `/metrics`.
    pub(crate) fn collector(&self) -> BusCollector {
        BusCollector {
            stats: Arc::clone(&self.stats),
            lost: Arc::clone(&self.lost),
        }
    }

    fn wanted(&self) -> MutexGuard<'_, Wanted> {
        self.wanted.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn channel(&self, audience: &Audience) -> String {
        self.naming.channel(audience)
    }

    /// Whether every wanted channel is subscribed on the live subscriber connection, as far as
    /// this node knows: no loss since the watchdog's last full resubscription, and no failed
    /// SUBSCRIBE waiting for a retry.
    pub(crate) fn serving(&self) -> bool {
        let synced = self.synced.load(Ordering::SeqCst);
        synced == self.lost.load(Ordering::SeqCst) && self.wanted().failed.is_empty()
    }

    /// Counts one more holder of `audience`. Counted even when it fails: the error says the
    /// SUBSCRIBE did not succeed, and the watchdog subscribes the channel when Redis answers.
    pub(crate) async fn subscribe(&self, audience: &Audience) -> Result<()> {
        let ch = self.channel(audience);
        {
            let mut wanted = self.wanted();
            let n = wanted.counts.entry(ch.clone()).or_insert(0);
            *n += 1;
            if *n == 1 {
                wanted.stale.remove(&ch);
                wanted.unconfirmed.insert(ch.clone());
            }
        }
        let done = self.reconcile(&ch).await;
        if done.is_err() {
            let mut wanted = self.wanted();
            if wanted.unconfirmed.contains(&ch) {
                wanted.failed.insert(ch);
            }
        }
        done
    }

    /// Undoes one `subscribe`. The count drops even when Redis is down (the socket is gone
    /// either way); the UNSUBSCRIBE is then retried by the watchdog, and until it succeeds the
    /// sink merely receives deliveries no local socket wants.
    pub(crate) async fn unsubscribe(&self, audience: &Audience) -> Result<()> {
        let ch = self.channel(audience);
        {
            let mut wanted = self.wanted();
            let Some(n) = wanted.counts.get_mut(&ch) else {
                return Ok(());
            };
            *n -= 1;
            if *n > 0 {
                return Ok(());
            }
            wanted.counts.remove(&ch);
            wanted.unconfirmed.remove(&ch);
            wanted.failed.remove(&ch);
            wanted.stale.insert(ch.clone());
        }
        if self.reconcile(&ch).await.is_err() {
            tracing::warn!(channel = %ch, "unsubscribe failed; retrying in the background");
        }
        Ok(())
    }

    /// Sends the one command that brings Redis in line with what is wanted of `ch` now, if it
    /// may differ. Bounded by [`OP_TIMEOUT`], the wait for the turn included; on failure the
    /// channel stays pending and the watchdog retries it.
    async fn reconcile(&self, ch: &str) -> Result<()> {
        let work = async {
            let _turn = self.turn.lock().await;
            let subscribe = {
                let wanted = self.wanted();
                if wanted.unconfirmed.contains(ch) {
                    true
                } else if wanted.stale.contains(ch) {
                    false
                } else {
                    return Ok(());
                }
            };
            let mut ps = self.pubsub.clone();
            let channels = [ch.to_owned()];
            if subscribe {
                ps.subscribe(&channels).await.map_err(crate::unavailable)?;
                self.wanted().subscribed(ch);
            } else {
                ps.unsubscribe(&channels)
                    .await
                    .map_err(crate::unavailable)?;
                self.wanted().stale.remove(ch);
            }
            Ok(())
        };
        // A command that was sent before the timeout still reaches Redis, ahead of any later
        // one (one connection, sent in turn order); the channel stays pending, so the next
        // command for it is decided from the counts again.
        tokio::time::timeout(OP_TIMEOUT, work)
            .await
            .unwrap_or_else(|_| Err(Error::unavailable("a subscription change timed out")))
    }

    /// The watchdog's check: ping the subscriber connection (which reconnects it if needed);
    /// after a loss, subscribe every wanted channel again; then retry the channels whose own
    /// SUBSCRIBE or UNSUBSCRIBE failed.
    pub(crate) async fn check(&self) {
        let lost = self.lost.load(Ordering::SeqCst);
        let mut ps = self.pubsub.clone();
        let ping =
            tokio::time::timeout(OP_TIMEOUT, redis::cmd("PING").query_async::<Value>(&mut ps))
                .await;
        match ping {
            Ok(Ok(_)) => {}
            // Slow, not lost: a subscriber busy with a burst of messages still serves (a lost
            // connection is reported by its disconnect, and the command connection's own PING
            // in `Store::ping` fails when Redis hangs). Checked again next round.
            Err(_) => return,
            Ok(Err(e)) if e.is_timeout() => return,
            Ok(Err(_)) => {
                self.lost.fetch_add(1, Ordering::SeqCst);
                return;
            }
        }
        // Calls take their turn in order; one holds it for at most OP_TIMEOUT.
        let Ok(_turn) = tokio::time::timeout(OP_TIMEOUT, self.turn.lock()).await else {
            return;
        };
        if self.synced.load(Ordering::SeqCst) != lost {
            // A new connection holds none of our subscriptions (the manager restores those
            // Redis had confirmed, ignoring failures): subscribe every wanted channel again.
            let channels: Vec<String> = self.wanted().counts.keys().cloned().collect();
            if !bulk(&mut ps, &channels, true).await {
                return;
            }
            {
                let mut wanted = self.wanted();
                for ch in &channels {
                    wanted.subscribed(ch);
                }
            }
            // Counted before `synced` moves, so whoever sees the node serving again sees it.
            self.stats.resubscriptions.fetch_add(1, Ordering::SeqCst);
            // A loss after the PING above moved `lost` on: not synced, retried next round.
            self.synced.store(lost, Ordering::SeqCst);
            if !channels.is_empty() {
                tracing::info!(channels = channels.len(), "pub/sub subscriptions restored");
            }
        }
        let (unconfirmed, stale): (Vec<String>, Vec<String>) = {
            let wanted = self.wanted();
            (
                wanted.unconfirmed.iter().cloned().collect(),
                wanted.stale.iter().cloned().collect(),
            )
        };
        if !bulk(&mut ps, &unconfirmed, true).await {
            return;
        }
        {
            let mut wanted = self.wanted();
            for ch in &unconfirmed {
                wanted.subscribed(ch);
            }
        }
        if !bulk(&mut ps, &stale, false).await {
            return;
        }
        let mut wanted = self.wanted();
        for ch in &stale {
            wanted.stale.remove(ch);
        }
    }
}

/// SUBSCRIBEs (or UNSUBSCRIBEs) `channels` in chunks; false at the first failure.
async fn bulk(ps: &mut Conn, channels: &[String], subscribe: bool) -> bool {
    for chunk in channels.chunks(RESUBSCRIBE_CHUNK) {
        let done = if subscribe {
            tokio::time::timeout(OP_TIMEOUT, ps.subscribe(chunk)).await
        } else {
            tokio::time::timeout(OP_TIMEOUT, ps.unsubscribe(chunk)).await
        };
        if !matches!(done, Ok(Ok(()))) {
            return false;
        }
    }
    true
}

/// How channels are named: under the key prefix, and on a cluster with the audience in a hash
/// tag (sharded pub/sub routes a channel by its slot, as a key).
#[derive(Clone, Debug)]
pub(crate) struct Naming {
    prefix: String,
    cluster: bool,
    /// `<prefix>r:`, what a room's channel begins with.
    room_channel: String,
}

impl Naming {
    pub(crate) fn new(prefix: &str, cluster: bool) -> Naming {
        Naming {
            prefix: prefix.to_owned(),
            cluster,
            room_channel: format!("{prefix}r:"),
        }
    }

    /// The channel of an audience.
    pub(crate) fn channel(&self, audience: &Audience) -> String {
        let p = &self.prefix;
        match (audience, self.cluster) {
            (Audience::User(phone), false) => format!("{p}u:{phone}"),
            (Audience::Room(room), false) => format!("{p}r:{room}"),
            (Audience::User(phone), true) => format!("{p}u:{{{phone}}}"),
            (Audience::Room(room), true) => format!("{p}r:{{{room}}}"),
        }
    }

    /// The room a channel is of, if it is a room's.
    fn room(&self, channel: &[u8]) -> Option<RoomId> {
        let mut id = channel.strip_prefix(self.room_channel.as_bytes())?;
        if self.cluster {
            id = id.strip_prefix(b"{")?.strip_suffix(b"}")?;
        }
        std::str::from_utf8(id).ok().and_then(RoomId::parse)
    }
}

/// A message as the subscriber connection received it.
pub(crate) struct Received {
    /// The channel it was published on.
    channel: Vec<u8>,
    /// What was published: a JSON `Delivery`, or a message payload (see [`crate::entry`]).
    payload: Vec<u8>,
}

/// The push sender of the subscriber connection. Runs on the connection's read path, so it
/// never blocks: messages go to the bounded queue (or are dropped and counted), a disconnect
/// counts as a loss (`lost`), so the node stops serving until the watchdog resubscribed.
pub(crate) fn push_sender(
    tx: mpsc::Sender<Received>,
    stats: Arc<BusStats>,
    lost: Arc<AtomicU64>,
) -> impl Fn(PushInfo) -> std::result::Result<(), ()> + Send + Sync + 'static {
    move |push: PushInfo| {
        match push.kind {
            PushKind::Message | PushKind::SMessage => {
                let mut data = push.data.into_iter();
                if let (Some(Value::BulkString(channel)), Some(Value::BulkString(payload))) =
                    (data.next(), data.next())
                {
                    match tx.try_send(Received { channel, payload }) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            let n = stats.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                            if n == 1 || n.is_multiple_of(1000) {
                                tracing::warn!(
                                    dropped_total = n,
                                    "delivery queue full ({DELIVERY_QUEUE}); delivery dropped"
                                );
                            }
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => {}
                    }
                }
            }
            PushKind::Disconnection => {
                // Lost first: whoever sees the disconnect counted sees the node not serving.
                lost.fetch_add(1, Ordering::SeqCst);
                stats.disconnects.fetch_add(1, Ordering::SeqCst);
            }
            _ => {}
        }
        Ok(())
    }
}

/// Decodes queued payloads and hands them to the sink, in the order Redis delivered them.
/// A message payload's room is named by its channel.
pub(crate) async fn dispatch(
    mut rx: mpsc::Receiver<Received>,
    sink: Arc<SinkSlot>,
    stats: Arc<BusStats>,
    naming: Naming,
) {
    while let Some(received) = rx.recv().await {
        match decode(&naming, &received) {
            Decoded::Delivery(delivery) => {
                stats.delivered.fetch_add(1, Ordering::Relaxed);
                sink.deliver(&delivery);
            }
            Decoded::Unknown(version) => {
                let n = stats.unknown_format.fetch_add(1, Ordering::Relaxed) + 1;
                if n == 1 || n.is_multiple_of(1000) {
                    tracing::error!(
                        version,
                        reads_up_to = FORMAT,
                        unknown_total = n,
                        channel = %String::from_utf8_lossy(&received.channel),
                        "pub/sub payload of a newer bus format; ignored. Run the newer nodes \
                         with --bus-format {FORMAT} until every node is upgraded"
                    );
                }
            }
            Decoded::Invalid => {
                stats.undecodable.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    channel = %String::from_utf8_lossy(&received.channel),
                    "pub/sub payload is not a delivery; ignored"
                );
            }
        }
    }
}

/// What a payload is.
#[derive(Debug)]
enum Decoded {
    Delivery(Delivery),
    /// Of this format version, newer than [`FORMAT`].
    Unknown(u64),
    /// Of no format.
    Invalid,
}

/// A JSON delivery's version: the `v` field it opens with (`{"v":N,`), 1 without one.
fn json_version(payload: &[u8]) -> Option<u64> {
    let Some(rest) = payload.strip_prefix(b"{\"v\":") else {
        return Some(1);
    };
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
}

/// A JSON delivery of format `format`: version 1 as serialized, later ones with the version as
/// their first field.
pub(crate) fn encode_json(json: String, format: u8) -> String {
    if format < 2 {
        return json;
    }
    // `json` is a non-empty JSON object: `{"audience":…}`.
    let mut out = String::with_capacity(json.len() + 8);
    out.push_str("{\"v\":");
    out.push_str(&format.to_string());
    out.push(',');
    out.push_str(json.get(1..).unwrap_or_default());
    out
}

/// Decodes one payload: a JSON delivery (it starts with `{`), or a message payload on a room's
/// channel (`<id>|<entry>` of version 1, `<version>:<id>|<entry>` from version 2 on).
fn decode(naming: &Naming, received: &Received) -> Decoded {
    let payload = &received.payload;
    if payload.first() == Some(&b'{') {
        return match json_version(payload) {
            Some(v) if v > u64::from(FORMAT) => Decoded::Unknown(v),
            Some(_) => serde_json::from_slice(payload).map_or(Decoded::Invalid, Decoded::Delivery),
            None => Decoded::Invalid,
        };
    }
    // A stream id has no `:` before its `|`: a `:` there ends the version.
    let head = payload
        .iter()
        .position(|&b| b == b'|' || b == b':')
        .map(|at| (at, payload[at]));
    let body = match head {
        Some((at, b':')) => {
            let version = std::str::from_utf8(&payload[..at])
                .ok()
                .and_then(|v| v.parse::<u64>().ok());
            match version {
                Some(v) if v > u64::from(FORMAT) => return Decoded::Unknown(v),
                Some(v) if v >= 2 => &payload[at + 1..],
                _ => return Decoded::Invalid,
            }
        }
        _ => payload.as_slice(),
    };
    decode_message(naming, &received.channel, body).map_or(Decoded::Invalid, Decoded::Delivery)
}

/// A message payload (`<id>|<entry>`) on a room's channel.
fn decode_message(naming: &Naming, channel: &[u8], payload: &[u8]) -> Option<Delivery> {
    let room = naming.room(channel)?;
    let message = crate::entry::decode_payload(room, payload)?;
    Some(Delivery::to_room(room, Event::ReceiveMessage(message)))
}

#[cfg(test)]
mod tests {
    use chat_core::{Message, MessageId, Phone};

    use super::*;

    fn received(channel: String, payload: &str) -> Received {
        Received {
            channel: channel.into_bytes(),
            payload: payload.as_bytes().to_vec(),
        }
    }

    fn message(room: RoomId) -> Message {
        Message {
            id: MessageId {
                ms: 1_700_000_000_000,
                seq: 3,
            },
            room,
            sender: Phone::parse("+15550000001").expect("phone"),
            message: "hi: there | you".into(),
            timestamp: 1_700_000_000_000,
            client_id: Some("c:1".into()),
        }
    }

    /// Every version this release reads decodes to the same delivery; a newer one is told
    /// apart from garbage.
    #[test]
    fn reads_both_formats_and_names_newer_ones() {
        for cluster in [false, true] {
            let naming = Naming::new("chat:", cluster);
            let room = RoomId::generate();
            let m = message(room);
            let channel = naming.channel(&Audience::Room(room));
            let entry =
                crate::entry::encode(&m.sender, m.timestamp, m.client_id.as_deref(), &m.message);
            let want = Delivery::to_room(room, Event::ReceiveMessage(m));
            for payload in [
                format!("{}|{entry}", want_id()),
                format!("2:{}|{entry}", want_id()),
            ] {
                match decode(&naming, &received(channel.clone(), &payload)) {
                    Decoded::Delivery(d) => assert_eq!(d, want, "{payload}"),
                    other => panic!("{payload}: {other:?}"),
                }
            }
            let v3 = format!("3:{}|{entry}", want_id());
            assert!(matches!(
                decode(&naming, &received(channel.clone(), &v3)),
                Decoded::Unknown(3)
            ));
            for bad in ["", "x:1-0|y", "1:1700000000000-3|x", "nonsense"] {
                assert!(
                    matches!(
                        decode(&naming, &received(channel.clone(), bad)),
                        Decoded::Invalid
                    ),
                    "{bad:?}"
                );
            }

            let json = serde_json::to_string(&want).expect("json");
            for format in [1, 2] {
                let payload = encode_json(json.clone(), format);
                assert_eq!(payload.starts_with("{\"v\":2,"), format == 2);
                match decode(&naming, &received(channel.clone(), &payload)) {
                    Decoded::Delivery(d) => assert_eq!(d, want),
                    other => panic!("{payload}: {other:?}"),
                }
                // A node of version 1 reads JSON with serde alone: the `v` field is ignored.
                let plain: Delivery = serde_json::from_str(&payload).expect("v1 reader");
                assert_eq!(plain, want);
            }
            let newer = format!("{{\"v\":7,{}", &json[1..]);
            assert!(matches!(
                decode(&naming, &received(channel, &newer)),
                Decoded::Unknown(7)
            ));
        }
    }

    fn want_id() -> &'static str {
        "1700000000000-3"
    }
}
