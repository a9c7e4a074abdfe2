//! The parts of the `Store` port and the `EventBus` for [`RedisStore`] (the notification
//! queue's in [`notifications`]): argument encoding, one function or command per operation, and
//! what each reply means (its shape is decoded by the types of [`reply`]). The rules themselves
//! live in the Lua functions.

use std::collections::BTreeSet;
use std::sync::Arc;

use chat_core::store::{
    Appended, BlockOutcome, BlockStore, DueTimer, EndedSession, NewRoom, NodeStore, PresenceState,
    PresenceStore, RequestOutcome, RequestStore, RoomOverview, RoomStore, SessionCreated,
    SessionStore, Timer, TimerStore, Touched, UNREAD_MAX,
};
use chat_core::{
    Audience, ChatRequest, ConnKey, Delivery, Error, EventBus, EventSink, HistoryPage, Message,
    MessageId, Millis, Names, NewMessage, NodeId, OnlinePage, Phone, ReadMarks, Requests, Result,
    Room, RoomId, Session, TokenDigest,
};
use redis::{FromRedisValue, Value};

use crate::scripts::Function;
use crate::{RedisStore, bounded, entry};

mod notifications;
mod reply;

use reply::{
    AppendReply, BlockReply, CreateReply, EndReply, MarksReply, OnlineReply, Overview, Phones,
    PresenceReply, RoomMeta, RoomReply, Rooms, SendReply, SessionReply, StreamEntry, TouchReply,
    decode,
};

/// How long a new message's `WAIT` for replicas lasts at most (within the call's `OP_TIMEOUT`).
const WAIT_TIMEOUT_MS: u64 = 500;

/// How long after its deadline Redis frees a WebSocket ticket nobody took.
const TICKET_MARGIN_MS: u64 = 60_000;

/// Online-listing cursors start with this, then the last phone of the page (in
/// `Phone::cursor_form`).
const CURSOR_PREFIX: &str = "o2.";

/// A reply that does not have the shape the function returns: a bug or foreign data under our
/// prefix. Logged; the caller sees the store as unavailable rather than wrong data.
fn bad_reply(what: &str) -> Error {
    tracing::error!("unexpected redis reply: {what}");
    Error::unavailable(format!("unexpected redis reply: {what}"))
}

/// Socket encodings: in the user's set `<conn id>|<node>`, in the node's set `<phone>|<conn id>`
/// (a phone has no `|`, a conn id is digits, so both split at the first `|`).
fn conn_members(phone: &Phone, conn: &ConnKey) -> (String, String) {
    (
        format!("{}|{}", conn.id, conn.node),
        format!("{}|{}", phone, conn.id),
    )
}

/// `FCALL <function> <key count>`, to which the caller adds the keys and arguments
/// (`args` of them, `bytes` long in all). One `Cmd` buffer, sized up front: every argument is
/// copied into it as it is added.
fn fcall(function: &str, keys: usize, args: usize, bytes: usize) -> redis::Cmd {
    let mut cmd = redis::Cmd::with_capacity(3 + args, 32 + function.len() + bytes);
    cmd.arg("FCALL").arg(function).arg(keys);
    cmd
}

/// Redis's answer to an `FCALL` of a function it does not have.
fn function_missing(e: &redis::RedisError) -> bool {
    e.code() == Some("ERR") && e.detail() == Some("Function not found")
}

/// Builds the names under one room (`<prefix>{<room>}:<part>`) and its channel in one buffer,
/// without `format!` (whose trip through `fmt` and the uuid's `Display` cost more than the
/// rest of building the command).
struct RoomKey {
    buf: String,
    /// `buf[..base]` is `<prefix>{<room>}:`.
    base: usize,
    room: [u8; RoomKey::ROOM_LEN],
    prefix_len: usize,
}

impl RoomKey {
    /// A hyphenated uuid.
    const ROOM_LEN: usize = uuid::fmt::Hyphenated::LENGTH;

    fn new(prefix: &str, room: &RoomId) -> RoomKey {
        let mut id = [0u8; RoomKey::ROOM_LEN];
        room.0.hyphenated().encode_lower(&mut id);
        let mut buf = String::with_capacity(prefix.len() + RoomKey::ROOM_LEN + 8);
        buf.push_str(prefix);
        buf.push('{');
        // The hyphenated form is ASCII.
        buf.push_str(std::str::from_utf8(&id).unwrap_or_default());
        buf.push_str("}:");
        RoomKey {
            base: buf.len(),
            buf,
            room: id,
            prefix_len: prefix.len(),
        }
    }

    /// The key of one part of the room (`m`, `h`, `d`, `o`).
    fn part(&mut self, part: &str) -> &str {
        self.buf.truncate(self.base);
        self.buf.push_str(part);
        &self.buf
    }

    /// The room's channel, as `bus::Naming` names it (the last use of the buffer): on a
    /// cluster the room in a hash tag, so the channel is in the room's slot.
    fn channel(mut self, cluster: bool) -> String {
        self.buf.truncate(self.prefix_len);
        self.buf.push_str(if cluster { "r:{" } else { "r:" });
        self.buf
            .push_str(std::str::from_utf8(&self.room).unwrap_or_default());
        if cluster {
            self.buf.push('}');
        }
        self.buf
    }
}

impl RedisStore {
    /// `send_request`, with a cap on the sender's pending requests when `max_pending` is set.
    async fn send(
        &self,
        request: ChatRequest,
        room_: NewRoom,
        max_pending: Option<usize>,
    ) -> Result<RequestOutcome> {
        let (from, to) = (&request.from, &request.to);
        let cap = max_pending.map(|n| n.to_string());
        let created_at = request.created_at.to_string();
        let expires_at = request.expires_at.to_string();
        let (room_id, room_created, room_expires) = (
            room_.id.to_string(),
            room_.created_at.to_string(),
            room_.expires_at.to_string(),
        );
        let mut args: Vec<&str> = vec![
            from.as_str(),
            to.as_str(),
            &created_at,
            &expires_at,
            &room_id,
            &room_created,
            &room_expires,
        ];
        args.extend(cap.as_deref());
        let reply = self.run::<SendReply>(Function::SendRequest, &args).await?;
        match reply {
            SendReply::NoUser => Err(Error::UserNotFound),
            SendReply::Sent => {
                self.publish_now(&Delivery::chat_request(
                    from,
                    to,
                    request.created_at,
                    &room_.names,
                ))
                .await;
                Ok(RequestOutcome::Sent)
            }
            SendReply::Pending => Ok(RequestOutcome::AlreadyPending),
            SendReply::Exists(id) => Ok(RequestOutcome::RoomExists(id)),
            SendReply::Accepted(room) => {
                // The request crossed one from `to`: the room is [to, from].
                self.opened(&room, &room_.names).await?;
                Ok(RequestOutcome::Accepted(room))
            }
            SendReply::Cooldown(until) => Err(Error::RateLimited {
                retry_after_secs: until
                    .saturating_sub(request.created_at)
                    .div_ceil(1000)
                    .max(1),
            }),
            SendReply::TooMany => Err(Error::TooManyPending {
                max: max_pending.unwrap_or(usize::MAX),
            }),
        }
    }

    /// A directory key (every key but a room's): see the key map.
    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.inner.dir)
    }

    /// After the directory's step made `room`: opens it in its own slot (on a cluster), then
    /// tells both members. The events go out only once a message can be sent to the room, so a
    /// client that joins and sends at once finds it. When the open fails (the room's shard is
    /// failing over), the accept still stands and the events still go out: the room opens at
    /// its first use instead ([`RedisStore::reopened`]).
    async fn opened(&self, room: &Room, names: &Names) -> Result<()> {
        if self.is_cluster() {
            match self.open(room).await {
                Ok(true) => {}
                Ok(false) => {
                    // Closed (a block, a session ending) between the two steps: whoever closed
                    // it told the members; the accept stands as it happened before the close.
                    tracing::debug!(room = %room.id, "room closed before it opened");
                    return Ok(());
                }
                Err(e) => {
                    tracing::warn!(room = %room.id, error = %e, "opening a room failed; it opens at its first use");
                }
            }
        }
        // One event per member, to two audiences: sent at once (one round trip).
        let deliveries = Delivery::request_accepted(room.id, &room.members, names);
        futures_util::future::join_all(deliveries.iter().map(|d| self.publish_now(d))).await;
        Ok(())
    }

    /// On a cluster, `open_room`: the room's meta in its slot, unless it was closed. Whether
    /// it is open.
    async fn open(&self, room: &Room) -> Result<bool> {
        let mut key = RoomKey::new(&self.inner.prefix, &room.id);
        let function = self.inner.library.name(Function::OpenRoom);
        let [a, b] = &room.members;
        let (created, expires) = (room.created_at.to_string(), room.expires_at.to_string());
        let mut cmd = fcall(function, 2, 6, 256);
        cmd.arg(key.part("m")).arg(key.part("z"));
        cmd.arg(a.as_str())
            .arg(b.as_str())
            .arg(&created)
            .arg(&expires);
        let open: i64 = decode(self.invoke(&cmd).await?)?;
        Ok(open == 1)
    }

    /// On a cluster, for a room its slot does not have: when the directory still holds it (its
    /// accept's second step failed, or the node making it died between the steps), opens it now
    /// and answers true, so the caller looks again. False on one Redis (one step there) and for
    /// a room that is gone or closed.
    async fn reopened(&self, id: &RoomId) -> Result<bool> {
        if !self.is_cluster() {
            return Ok(false);
        }
        let meta: RoomMeta = decode(
            self.command(
                redis::cmd("HMGET")
                    .arg(self.key(&format!("rm:{id}")))
                    .arg(&["a", "b", "c", "x"]),
            )
            .await?,
        )?;
        let Some(room) = meta.room(*id) else {
            return Ok(false);
        };
        let open = self.open(&room).await?;
        if open {
            tracing::info!(room = %id, "room opened at its first use");
        }
        Ok(open)
    }

    /// On a cluster, the room's part of deleting `rooms` after the directory's step removed
    /// them: their meta, history and dedupe keys, each in its own slot, all at once. A failure is
    /// logged: the keys expire with the room anyway, and nothing can reach a room the directory
    /// no longer lists but a member who already holds its id (whose messages fail once the
    /// meta is gone, or go with it).
    async fn closed(&self, rooms: &[Room]) {
        if !self.is_cluster() || rooms.is_empty() {
            return;
        }
        let function = self.inner.library.name(Function::CloseRoom);
        let calls = rooms.iter().map(|room| {
            let mut key = RoomKey::new(&self.inner.prefix, &room.id);
            let mut cmd = fcall(function, 5, 5, 320);
            for part in ["m", "h", "d", "o", "z"] {
                cmd.arg(key.part(part));
            }
            async move { (room.id, self.invoke(&cmd).await) }
        });
        for (room, done) in futures_util::future::join_all(calls).await {
            if let Err(e) = done {
                tracing::warn!(%room, error = %e, "closing a room's keys failed; they expire with it");
            }
        }
    }

    /// Publishes `delivery` from the store's own step, logging a failure: the state change it
    /// announces is stored, and clients that miss the event see it on their next read.
    async fn publish_now(&self, delivery: &Delivery) {
        if let Err(e) = EventBus::publish(self, delivery.clone()).await {
            tracing::warn!(error = %e, "publishing an event failed");
        }
    }

    /// Runs `cmd`, an `FCALL` built by [`fcall`]. When Redis no longer has the library
    /// (restarted without persistence, `FUNCTION FLUSH`), loads it and runs `cmd` once more.
    async fn invoke(&self, cmd: &redis::Cmd) -> Result<Value> {
        let mut conn = self.inner.conn.clone();
        bounded(async {
            match cmd.query_async::<Value>(&mut conn).await {
                Err(e) if function_missing(&e) => {
                    // Boxed: a rare path, kept out of the future every call allocates.
                    Box::pin(crate::load_library(&mut conn, &self.inner.library)).await?;
                    cmd.query_async::<Value>(&mut conn).await
                }
                other => other,
            }
        })
        .await
    }

    /// Runs a function of the directory (the prelude family): one key, a directory key that
    /// routes the call to the directory's slot on a cluster (the function does not read it),
    /// `ARGV[1]` the directory prefix, then `args`; decodes its reply as a `T`.
    async fn run<T: FromRedisValue>(&self, function: Function, args: &[&str]) -> Result<T> {
        let function = self.inner.library.name(function);
        let p = &self.inner.dir;
        let bytes = 2 * p.len() + 8 + args.iter().map(|a| a.len()).sum::<usize>();
        let mut cmd = fcall(function, 1, 2 + args.len(), bytes);
        cmd.arg(self.key("online")).arg(p).arg(args);
        decode(self.invoke(&cmd).await?)
    }

    /// Runs `pipe`, a pipeline of `fcalls` `FCALL`s (and maybe a command after them) with
    /// errors kept per command. When Redis no longer has the library, it failed every one of
    /// them the same way (nothing ran): loads the library and runs the pipeline once more.
    async fn invoke_pipeline(
        &self,
        pipe: &redis::Pipeline,
        fcalls: usize,
    ) -> Result<Vec<redis::RedisResult<Value>>> {
        let mut conn = self.inner.conn.clone();
        bounded(async {
            let replies = pipe
                .query_async::<Vec<redis::RedisResult<Value>>>(&mut conn)
                .await?;
            // A trailing WAIT answers whatever happened to the functions before it.
            let fcalls = &replies[..fcalls.min(replies.len())];
            let all_missing = !fcalls.is_empty()
                && fcalls
                    .iter()
                    .all(|r| matches!(r, Err(e) if function_missing(e)));
            if all_missing {
                Box::pin(crate::load_library(&mut conn, &self.inner.library)).await?;
                return pipe.query_async(&mut conn).await;
            }
            Ok(replies)
        })
        .await
    }

    /// The `FCALL` that appends `messages`, one sender's to `room_`, and publishes them: `append`
    /// for one, `append_burst` for several (their headers say what each takes). `known`: the node
    /// saw the function accept this sender in this room (see `members.rs`).
    fn append_cmd<'m>(
        &self,
        room_: &RoomId,
        messages: impl ExactSizeIterator<Item = &'m NewMessage> + Clone,
        history_max: usize,
        known: bool,
    ) -> redis::Cmd {
        let burst = messages.len() > 1;
        // `append` names the dedupe hashes, and passes a client id, only when it has one;
        // `append_burst` always does, '' for none.
        let dedupe = burst || messages.clone().any(|m| m.client_id.is_some());
        let mut sender = "";
        let mut len = 32 + 5 * (self.inner.prefix.len() + RoomKey::ROOM_LEN);
        for m in messages.clone() {
            sender = m.sender.as_str();
            // The entry (`src/entry.rs`) holds the sender, the time, the client id and the text.
            let cid = m.client_id.as_deref().map_or(0, str::len);
            len += m.message.len() + sender.len() + 24 + 2 * cid;
        }
        len += sender.len();
        let function = self.inner.library.name(if burst {
            Function::AppendBurst
        } else {
            Function::Append
        });
        let keys = if dedupe { 4 } else { 2 };
        let mut cmd = fcall(function, keys, keys + 4 + 2 * messages.len(), len);
        let mut key = RoomKey::new(&self.inner.prefix, room_);
        cmd.arg(key.part("m")).arg(key.part("h"));
        if dedupe {
            cmd.arg(key.part("d")).arg(key.part("o"));
        }
        cmd.arg(sender)
            .arg(history_max.max(1))
            .arg(key.channel(self.is_cluster()))
            .arg(if known { "1" } else { "0" });
        for m in messages {
            let cid = m.client_id.as_deref();
            cmd.arg(entry::encode(&m.sender, m.timestamp, cid, &m.message));
            if let Some(cid) = cid {
                cmd.arg(cid);
            } else if burst {
                cmd.arg("");
            }
        }
        cmd
    }

    /// [`RoomStore::append_messages`] on a cluster: [`Self::append_grouped`], then, once
    /// opened, the messages again of a room the directory holds but its slot does not (see
    /// `reopened`), in order.
    async fn append_on_cluster(
        &self,
        batch: Vec<(RoomId, NewMessage)>,
        history_max: usize,
    ) -> Vec<Result<Appended>> {
        let retry: Vec<(RoomId, NewMessage)> = batch.clone();
        let mut results = self.append_grouped(batch, history_max).await;
        let mut reopened: Vec<RoomId> = Vec::new();
        for (i, (room, message)) in retry.into_iter().enumerate() {
            if !matches!(results[i], Err(Error::RoomNotFound)) {
                continue;
            }
            if !reopened.contains(&room) {
                match self.reopened(&room).await {
                    Ok(true) => reopened.push(room),
                    _ => continue,
                }
            }
            results[i] = self.append_message(&room, message, history_max).await;
        }
        results
    }

    /// On a cluster, [`RoomStore::append_messages`]: one pipeline per room (a pipeline goes to
    /// one slot), all at once, answered in the batch's order.
    async fn append_grouped(
        &self,
        batch: Vec<(RoomId, NewMessage)>,
        history_max: usize,
    ) -> Vec<Result<Appended>> {
        if batch.iter().all(|(r, _)| *r == batch[0].0) {
            return self.append_batch(batch, history_max).await;
        }
        // Group by room, keeping each room's order; answer in the batch's order.
        let mut groups: Vec<(RoomId, Vec<(usize, NewMessage)>)> = Vec::new();
        for (i, (room, message)) in batch.into_iter().enumerate() {
            match groups.iter_mut().find(|(r, _)| *r == room) {
                Some((_, g)) => g.push((i, message)),
                None => groups.push((room, vec![(i, message)])),
            }
        }
        let total: usize = groups.iter().map(|(_, g)| g.len()).sum();
        let calls = groups.into_iter().map(|(room, group)| {
            let (at, messages): (Vec<usize>, Vec<NewMessage>) = group.into_iter().unzip();
            let batch = messages.into_iter().map(|m| (room, m)).collect();
            async move { (at, self.append_batch(batch, history_max).await) }
        });
        let mut out: Vec<Option<Result<Appended>>> = (0..total).map(|_| None).collect();
        for (at, results) in futures_util::future::join_all(calls).await {
            for (i, r) in at.into_iter().zip(results) {
                out[i] = Some(r);
            }
        }
        out.into_iter()
            .map(|r| r.unwrap_or_else(|| Err(bad_reply("append pipeline length"))))
            .collect()
    }

    /// Appends `batch` in one pipeline (one slot on a cluster: the caller groups by room),
    /// followed by `WAIT` when acknowledgements wait for replicas: then a message is answered
    /// only once that many replicas hold it, and `StoreUnavailable` when they do not confirm
    /// in time (the message may be stored; the client's retry with its `client_id` finds it).
    ///
    /// A run of one sender's consecutive messages to one room (a socket's burst) is one
    /// `append_burst` call, so the function machinery and the membership read are paid once.
    async fn append_batch(
        &self,
        batch: Vec<(RoomId, NewMessage)>,
        history_max: usize,
    ) -> Vec<Result<Appended>> {
        let wait = self.inner.wait_replicas;
        let runs = runs(&batch);
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        let mut known = Vec::with_capacity(runs.len());
        for run in &runs {
            let (room, first) = &batch[run.start];
            let k = self.inner.members.knows(room, &first.sender);
            known.push(k);
            let messages = batch[run.clone()].iter().map(|(_, m)| m);
            pipe.add_command(self.append_cmd(room, messages, history_max, k));
        }
        if wait > 0 {
            pipe.cmd("WAIT").arg(wait).arg(WAIT_TIMEOUT_MS);
        }
        let fail_all = |e: Error| batch.iter().map(|_| Err(e.clone())).collect();
        let replies = match self.invoke_pipeline(&pipe, runs.len()).await {
            Err(e) => return fail_all(e),
            Ok(replies) => replies,
        };
        if replies.len() != runs.len() + usize::from(wait > 0) {
            return fail_all(bad_reply("append pipeline length"));
        }
        let mut replies = replies.into_iter();
        let calls: Vec<_> = replies.by_ref().take(runs.len()).collect();
        if wait > 0 {
            let confirmed = match replies.next() {
                Some(Ok(Value::Int(n))) => n,
                _ => 0,
            };
            if confirmed < i64::from(wait) {
                tracing::warn!(
                    confirmed,
                    wanted = wait,
                    "replicas did not confirm new messages in time; answered store_unavailable"
                );
                return fail_all(Error::unavailable(format!(
                    "{confirmed} of {wait} replicas confirmed the write within {WAIT_TIMEOUT_MS} ms"
                )));
            }
        }
        // Each call's replies, one per message of its run.
        let mut answers: Vec<Result<AppendReply>> = Vec::with_capacity(batch.len());
        for (run, reply) in runs.iter().zip(calls) {
            let reply = reply.map_err(crate::unavailable);
            if run.len() == 1 {
                answers.push(reply.and_then(decode));
                continue;
            }
            match reply.and_then(decode::<Vec<AppendReply>>) {
                Ok(each) if each.len() == run.len() => answers.extend(each.into_iter().map(Ok)),
                Ok(_) => answers.extend(run.clone().map(|_| Err(bad_reply("append_burst length")))),
                Err(e) => answers.extend(run.clone().map(|_| Err(e.clone()))),
            }
        }
        let mut out = Vec::with_capacity(batch.len());
        let mut answers = answers.into_iter();
        let mut batch = batch.into_iter();
        for (run, known) in runs.iter().zip(known) {
            // A run's sender is learned once: the first of its messages the function accepted.
            let mut known = known;
            for _ in run.clone() {
                let (Some((room, message)), Some(answer)) = (batch.next(), answers.next()) else {
                    break;
                };
                out.push(answer.and_then(|reply| {
                    let r = self.appended(room, message, reply, known);
                    known |= r.is_ok();
                    r
                }));
            }
        }
        out
    }

    /// What the append function's reply means for `message` in `room_`; a sender it accepted
    /// that the call did not know is remembered as a member of the room (see `members.rs`).
    fn appended(
        &self,
        room_: RoomId,
        message: NewMessage,
        reply: AppendReply,
        known: bool,
    ) -> Result<Appended> {
        if !known && matches!(reply, AppendReply::New(_) | AppendReply::Duplicate(_)) {
            self.inner.members.learn(room_, &message.sender);
        }
        match reply {
            AppendReply::NoRoom => Err(Error::RoomNotFound),
            AppendReply::NotMember => Err(Error::forbidden("you are not a member of this room")),
            AppendReply::Duplicate(earlier) => Ok(Appended::Duplicate(earlier.message(room_)?)),
            AppendReply::New(id) => Ok(Appended::New(Message {
                id,
                room: room_,
                sender: message.sender,
                message: message.message,
                timestamp: message.timestamp,
                client_id: message.client_id,
            })),
        }
    }

    /// A delivery as published: its audience's channel and its JSON.
    fn event(&self, delivery: &Delivery) -> Result<(String, String)> {
        let json =
            serde_json::to_string(delivery).map_err(|_| bad_reply("delivery not serialisable"))?;
        Ok((
            self.inner.bus.channel(&delivery.audience),
            crate::bus::encode_json(json, self.inner.bus_format),
        ))
    }

    async fn command(&self, cmd: &redis::Cmd) -> Result<Value> {
        let mut conn = self.inner.conn.clone();
        bounded(cmd.query_async::<Value>(&mut conn)).await
    }
}

/// Messages one `append_burst` call stores at most, so that one call holds Redis for a bounded
/// time (a socket's burst is at most `chat_ws`'s 64 frames; an embedder's batch may be longer).
const MAX_RUN: usize = 64;

/// The batch as runs of consecutive messages of one sender to one room, each run to be one call
/// of at most [`MAX_RUN`]: a message with an empty client id (which `append_burst` could not tell
/// from none) is a run of its own.
fn runs(batch: &[(RoomId, NewMessage)]) -> Vec<std::ops::Range<usize>> {
    let burstable = |m: &NewMessage| m.client_id.as_deref() != Some("");
    let mut runs: Vec<std::ops::Range<usize>> = Vec::new();
    for (i, (room, message)) in batch.iter().enumerate() {
        if let Some(last) = runs.last_mut() {
            let (r, m) = &batch[last.start];
            if r == room
                && m.sender == message.sender
                && burstable(m)
                && burstable(message)
                && last.len() < MAX_RUN
            {
                last.end = i + 1;
                continue;
            }
        }
        runs.push(i..i + 1);
    }
    runs
}

#[async_trait::async_trait]
impl SessionStore for RedisStore {
    async fn create_session(
        &self,
        session: Session,
        refresh: Option<TokenDigest>,
        http_until: Millis,
    ) -> Result<SessionCreated> {
        let (has_name, name) = match &session.name {
            Some(n) => ("1", n.as_str()),
            None => ("0", ""),
        };
        let reply = self
            .run::<CreateReply>(
                Function::CreateSession,
                &[
                    session.phone.as_str(),
                    &session.token_digest.hex(),
                    has_name,
                    name,
                    &session.created_at.to_string(),
                    &http_until.to_string(),
                    &refresh.as_ref().map_or_else(String::new, TokenDigest::hex),
                ],
            )
            .await?;
        match reply {
            CreateReply::InUse => Err(Error::PhoneInUse),
            CreateReply::Created => Ok(SessionCreated {
                session,
                refreshed: false,
                came_online: true,
            }),
            CreateReply::Refreshed {
                came_online,
                token,
                created_at,
                name,
            } => Ok(SessionCreated {
                session: Session {
                    phone: session.phone,
                    name,
                    token_digest: token,
                    created_at,
                },
                refreshed: true,
                came_online,
            }),
        }
    }

    async fn session(&self, token: &TokenDigest) -> Result<Option<Session>> {
        let reply: Option<SessionReply> = self.run(Function::Session, &[&token.hex()]).await?;
        Ok(reply.map(|s| s.session(*token)))
    }

    async fn names(&self, phones: &[Phone]) -> Result<Names> {
        // One pipeline of HGETs: one round trip. A name belongs to a live session only, and an
        // ended session's hash is deleted with it.
        if phones.is_empty() {
            return Ok(Names::new());
        }
        let mut pipe = redis::pipe();
        for p in phones {
            pipe.cmd("HGET").arg(self.key(&format!("s:{p}"))).arg("n");
        }
        let mut conn = self.inner.conn.clone();
        let found: Vec<Option<String>> = bounded(pipe.query_async(&mut conn)).await?;
        Ok(phones
            .iter()
            .zip(found)
            .filter_map(|(p, n)| Some((p.clone(), n.filter(|n| !n.is_empty())?)))
            .collect())
    }

    async fn create_ticket(
        &self,
        ticket: &TokenDigest,
        token: &TokenDigest,
        now: Millis,
        expires_at: Millis,
    ) -> Result<()> {
        // Freed by Redis a margin after its deadline; the deadline itself is checked on take.
        let ttl = expires_at
            .saturating_sub(now)
            .saturating_add(TICKET_MARGIN_MS);
        let mut conn = self.inner.conn.clone();
        let value = format!("{}|{expires_at}", token.hex());
        bounded(
            redis::cmd("SET")
                .arg(self.key(&format!("k:{}", ticket.hex())))
                .arg(value)
                .arg("PX")
                .arg(ttl)
                .query_async::<()>(&mut conn),
        )
        .await
    }

    async fn take_ticket(&self, ticket: &TokenDigest, now: Millis) -> Result<Option<Session>> {
        let mut conn = self.inner.conn.clone();
        // GETDEL: whoever takes it first has it, on any node.
        let value: Option<String> = bounded(
            redis::cmd("GETDEL")
                .arg(self.key(&format!("k:{}", ticket.hex())))
                .query_async(&mut conn),
        )
        .await?;
        let Some((token, expires_at)) = value.as_deref().and_then(|v| v.split_once('|')) else {
            return Ok(None);
        };
        let live = expires_at.parse::<Millis>().is_ok_and(|at| now < at);
        match TokenDigest::from_hex(token) {
            Some(token) if live => self.session(&token).await,
            _ => Ok(None),
        }
    }

    async fn touch(&self, token: &TokenDigest, http_until: Millis) -> Result<Option<Touched>> {
        let reply: Option<TouchReply> = self
            .run(Function::Touch, &[&token.hex(), &http_until.to_string()])
            .await?;
        Ok(reply.map(|t| Touched {
            session: t.session.session(*token),
            came_online: t.came_online,
        }))
    }

    async fn end_session(
        &self,
        phone_: &Phone,
        offline_before: Millis,
    ) -> Result<Option<EndedSession>> {
        let reply: Option<EndReply> = self
            .run(
                Function::EndSession,
                &[phone_.as_str(), &offline_before.to_string()],
            )
            .await?;
        if let Some(ended) = &reply {
            self.closed(&ended.rooms.0).await;
        }
        Ok(reply.map(|e| EndedSession {
            session: Session {
                phone: phone_.clone(),
                name: e.name,
                token_digest: e.token,
                created_at: e.created_at,
            },
            rooms: e.rooms.0,
            requests: Requests {
                incoming: e.incoming.0,
                sent: e.sent.0,
            },
        }))
    }
}

#[async_trait::async_trait]
impl PresenceStore for RedisStore {
    async fn add_conn(&self, phone: &Phone, conn: &ConnKey) -> Result<bool> {
        let (cm, nm) = conn_members(phone, conn);
        let added: i64 = self
            .run(Function::AddConn, &[phone.as_str(), &cm, &conn.node.0, &nm])
            .await?;
        Ok(added == 1)
    }

    async fn remove_conn(
        &self,
        phone: &Phone,
        conn: &ConnKey,
        now: Millis,
        grace_until: Millis,
    ) -> Result<()> {
        let (cm, nm) = conn_members(phone, conn);
        self.run::<()>(
            Function::RemoveConn,
            &[
                phone.as_str(),
                &cm,
                &conn.node.0,
                &nm,
                &now.to_string(),
                &grace_until.to_string(),
            ],
        )
        .await?;
        Ok(())
    }

    async fn presence(&self, phone: &Phone) -> Result<Option<PresenceState>> {
        let reply: Option<PresenceReply> = self.run(Function::Presence, &[phone.as_str()]).await?;
        Ok(reply.map(|p| p.0))
    }

    async fn go_offline(&self, phone: &Phone, now: Millis, session_end_at: Millis) -> Result<bool> {
        let went: i64 = self
            .run(
                Function::GoOffline,
                &[
                    phone.as_str(),
                    &now.to_string(),
                    &session_end_at.to_string(),
                ],
            )
            .await?;
        Ok(went == 1)
    }

    async fn online_page(
        &self,
        cursor: Option<String>,
        limit: usize,
        now: Millis,
    ) -> Result<OnlinePage> {
        let start = match cursor.as_deref() {
            None => "-".to_owned(),
            Some(c) => {
                let after = c
                    .strip_prefix(CURSOR_PREFIX)
                    .and_then(Phone::from_cursor_form)
                    .ok_or_else(|| Error::bad_request("not a cursor of this server"))?;
                format!("({after}")
            }
        };
        if limit == 0 {
            return Ok(OnlinePage::default());
        }
        let OnlineReply { more, last, phones } = self
            .run(
                Function::OnlinePage,
                &[&start, &limit.to_string(), &now.to_string()],
            )
            .await?;
        let next_cursor = last
            .filter(|_| more)
            .map(|last| format!("{CURSOR_PREFIX}{}", last.cursor_form()));
        Ok(OnlinePage {
            phones,
            next_cursor,
        })
    }
}

#[async_trait::async_trait]
impl NodeStore for RedisStore {
    async fn heartbeat(&self, node: &NodeId, alive_until: Millis) -> Result<()> {
        self.command(
            redis::cmd("ZADD")
                .arg(self.key("nodes"))
                .arg(alive_until)
                .arg(&node.0),
        )
        .await?;
        Ok(())
    }

    async fn reap_dead_nodes(&self, now: Millis, grace_until: Millis) -> Result<Vec<Phone>> {
        let Phones(mut orphans) = self
            .run(
                Function::Reap,
                &[&now.to_string(), &grace_until.to_string()],
            )
            .await?;
        orphans.dedup();
        Ok(orphans)
    }

    async fn remove_node(
        &self,
        node: &NodeId,
        now: Millis,
        grace_until: Millis,
    ) -> Result<Vec<Phone>> {
        let Phones(mut orphans) = self
            .run(
                Function::RemoveNode,
                &[&node.0, &now.to_string(), &grace_until.to_string()],
            )
            .await?;
        orphans.dedup();
        Ok(orphans)
    }

    /// Ready means serving: the command connection answers, and the subscriber connection is up
    /// with every wanted channel subscribed on it (see [`crate::bus`]). Until the watchdog has
    /// resubscribed after an outage, a message acknowledged now would reach no local socket.
    async fn ping(&self) -> Result<()> {
        if !self.inner.bus.serving() {
            return Err(Error::unavailable(
                "the event bus is resubscribing after a loss",
            ));
        }
        self.command(&redis::cmd("PING")).await.map(|_| ())
    }
}

#[async_trait::async_trait]
impl RequestStore for RedisStore {
    async fn send_request(&self, request: ChatRequest, room_: NewRoom) -> Result<RequestOutcome> {
        self.send(request, room_, None).await
    }

    async fn accept_request(
        &self,
        from: &Phone,
        to: &Phone,
        room_: NewRoom,
        now: Millis,
    ) -> Result<Option<Room>> {
        let room: Option<RoomReply> = self
            .run(
                Function::Accept,
                &[
                    from.as_str(),
                    to.as_str(),
                    &now.to_string(),
                    &room_.id.to_string(),
                    &room_.created_at.to_string(),
                    &room_.expires_at.to_string(),
                ],
            )
            .await?;
        let Some(RoomReply(room)) = room else {
            return Ok(None);
        };
        self.opened(&room, &room_.names).await?;
        Ok(Some(room))
    }

    async fn remove_request(&self, from: &Phone, to: &Phone, now: Millis) -> Result<bool> {
        let removed: i64 = self
            .run(
                Function::RemoveRequest,
                &[from.as_str(), to.as_str(), &now.to_string()],
            )
            .await?;
        Ok(removed == 1)
    }

    async fn requests(&self, phone: &Phone, now: Millis) -> Result<Requests> {
        let (Phones(incoming), Phones(sent)) = self
            .run(Function::Requests, &[phone.as_str(), &now.to_string()])
            .await?;
        Ok(Requests { incoming, sent })
    }
}

#[async_trait::async_trait]
impl RoomStore for RedisStore {
    async fn room(&self, id: &RoomId) -> Result<Option<Room>> {
        let mut key = RoomKey::new(&self.inner.prefix, id);
        let meta: RoomMeta = decode(
            self.command(
                redis::cmd("HMGET")
                    .arg(key.part("m"))
                    .arg(&["a", "b", "c", "x"]),
            )
            .await?,
        )?;
        match meta.room(*id) {
            None if self.reopened(id).await? => self.room(id).await,
            room => Ok(room),
        }
    }

    async fn rooms_of(&self, phone: &Phone) -> Result<Vec<Room>> {
        let Rooms(rooms) = self.run(Function::RoomsOf, &[phone.as_str()]).await?;
        Ok(rooms)
    }

    async fn delete_room(&self, id: &RoomId) -> Result<Option<Room>> {
        let room: Option<RoomReply> = self.run(Function::DeleteRoom, &[&id.to_string()]).await?;
        let room = room.map(|r| r.0);
        self.closed(room.as_slice()).await;
        Ok(room)
    }

    async fn append_message(
        &self,
        room_: &RoomId,
        message: NewMessage,
        history_max: usize,
    ) -> Result<Appended> {
        // The rare paths' futures are boxed, so that the common one stays small: a future of
        // over 1 KiB is a large allocation for the allocator, made per message.
        if self.inner.wait_replicas > 0 {
            let mut results =
                Box::pin(self.append_batch(vec![(*room_, message)], history_max)).await;
            return results
                .pop()
                .unwrap_or_else(|| Err(bad_reply("append pipeline length")));
        }
        let known = self.inner.members.knows(room_, &message.sender);
        let cmd = self.append_cmd(room_, std::iter::once(&message), history_max, known);
        let reply: AppendReply = decode(self.invoke(&cmd).await?)?;
        if matches!(reply, AppendReply::NoRoom) && Box::pin(self.reopened(room_)).await? {
            let reply = decode(self.invoke(&cmd).await?)?;
            return self.appended(*room_, message, reply, known);
        }
        self.appended(*room_, message, reply, known)
    }

    /// One pipeline of the batch's `FCALL`s: one write, one round trip, run by Redis in order.
    /// On a cluster, one pipeline per room (a pipeline goes to one slot), all at once.
    async fn append_messages(
        &self,
        batch: Vec<(RoomId, NewMessage)>,
        history_max: usize,
    ) -> Vec<Result<Appended>> {
        if batch.len() < 2 && self.inner.wait_replicas == 0 {
            let mut results = Vec::with_capacity(1);
            for (room, message) in batch {
                results.push(self.append_message(&room, message, history_max).await);
            }
            return results;
        }
        if !self.is_cluster() {
            return self.append_batch(batch, history_max).await;
        }
        Box::pin(self.append_on_cluster(batch, history_max)).await
    }

    async fn history(
        &self,
        room_: &RoomId,
        after: Option<MessageId>,
        limit: usize,
    ) -> Result<HistoryPage> {
        let mut key = RoomKey::new(&self.inner.prefix, room_);
        let count = limit.saturating_add(1).min(i64::MAX as usize);
        // One round trip, atomic, and no Lua: a function would turn every entry into Lua
        // tables and back (some 24k instructions an entry in Redis); MULTI/EXEC has Redis
        // write the range straight into the reply.
        let mut pipe = redis::pipe();
        pipe.atomic().cmd("EXISTS").arg(key.part("m"));
        match after {
            // Nothing can follow the largest id (and `(` of it is not a valid range start).
            Some(MessageId {
                ms: u64::MAX,
                seq: u64::MAX,
            }) => {
                return match self.room(room_).await? {
                    Some(_) => Ok(HistoryPage::default()),
                    None => Err(Error::RoomNotFound),
                };
            }
            Some(a) => pipe
                .cmd("XRANGE")
                .arg(key.part("h"))
                .arg(format!("({a}"))
                .arg("+")
                .arg("COUNT")
                .arg(count),
            None => pipe
                .cmd("XREVRANGE")
                .arg(key.part("h"))
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(count),
        };
        let mut conn = self.inner.conn.clone();
        let (exists, entries): (i64, Vec<StreamEntry>) =
            decode(bounded(pipe.query_async::<Value>(&mut conn)).await?)?;
        if exists == 0 {
            if self.reopened(room_).await? {
                return self.history(room_, after, limit).await;
            }
            return Err(Error::RoomNotFound);
        }
        let mut messages = entries
            .into_iter()
            .map(|e| e.message(*room_))
            .collect::<Result<Vec<_>>>()?;
        let more = messages.len() > limit;
        messages.truncate(limit);
        if after.is_none() {
            messages.reverse();
        }
        Ok(HistoryPage { messages, more })
    }

    async fn mark_read(&self, room_: &RoomId, phone: &Phone, id: MessageId) -> Result<bool> {
        let p = self.inner.prefix.as_str();
        let function = self.inner.library.name(Function::MarkRead);
        let id = id.to_string();
        let len = 2 * (p.len() + RoomKey::ROOM_LEN + 8) + phone.as_str().len() + id.len();
        let mut cmd = fcall(function, 2, 4, len);
        let mut key = RoomKey::new(p, room_);
        cmd.arg(key.part("m"))
            .arg(key.part("h"))
            .arg(phone.as_str())
            .arg(&id);
        let mut outcome: i64 = decode(self.invoke(&cmd).await?)?;
        if outcome == 0 && self.reopened(room_).await? {
            outcome = decode(self.invoke(&cmd).await?)?;
        }
        match outcome {
            0 => Err(Error::RoomNotFound),
            1 => Err(Error::forbidden("you are not a member of this room")),
            2 => Err(Error::bad_request("not the id of a message of this room")),
            3 => Ok(false),
            4 => Ok(true),
            _ => Err(bad_reply("mark_read outcome")),
        }
    }

    async fn read_marks(&self, room_: &RoomId) -> Result<Option<ReadMarks>> {
        let mut key = RoomKey::new(&self.inner.prefix, room_);
        let MarksReply(marks) = decode(
            self.command(
                redis::cmd("HMGET")
                    .arg(key.part("m"))
                    .arg(&["a", "b", "ra", "rb"]),
            )
            .await?,
        )?;
        Ok(marks)
    }

    /// The user's rooms from the directory, then each room's unread count and newest message
    /// from its own slot, all rooms at once (one round trip each, overlapping). A room closed
    /// in between is left out.
    async fn room_overviews(&self, phone: &Phone) -> Result<Vec<RoomOverview>> {
        let rooms = self.rooms_of(phone).await?;
        let function = self.inner.library.name(Function::RoomOverview);
        let max = UNREAD_MAX.to_string();
        let calls = rooms.into_iter().map(|room| {
            let mut key = RoomKey::new(&self.inner.prefix, &room.id);
            let mut cmd = fcall(function, 2, 4, 160);
            cmd.arg(key.part("m"))
                .arg(key.part("h"))
                .arg(phone.as_str())
                .arg(&max);
            async move {
                let Overview(overview) = decode(self.invoke(&cmd).await?)?;
                let Some((unread, last)) = overview else {
                    return Ok(None);
                };
                let last_message = last.map(|e| e.message(room.id)).transpose()?;
                Ok(Some(RoomOverview {
                    room,
                    unread: unread.min(UNREAD_MAX),
                    last_message,
                }))
            }
        });
        let mut out = Vec::new();
        for one in futures_util::future::join_all(calls).await {
            out.extend(one?);
        }
        out.sort_by_key(|o| o.room.id);
        Ok(out)
    }
}

#[async_trait::async_trait]
impl TimerStore for RedisStore {
    async fn schedule(&self, timer: Timer, at_: Millis) -> Result<()> {
        self.command(
            redis::cmd("ZADD")
                .arg(self.key("timers"))
                .arg(at_)
                .arg(timer.encode()),
        )
        .await?;
        Ok(())
    }

    async fn due_timers(
        &self,
        now: Millis,
        lease_until: Millis,
        limit: usize,
    ) -> Result<Vec<DueTimer>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let members: Vec<String> = self
            .run(
                Function::DueTimers,
                &[
                    &now.to_string(),
                    &lease_until.to_string(),
                    &limit.to_string(),
                ],
            )
            .await?;
        let mut due = Vec::with_capacity(members.len());
        for member in members {
            match Timer::decode(&member) {
                Ok(timer) => due.push(DueTimer { timer, lease_until }),
                Err(_) => {
                    // Not ours: drop it so it does not come due forever.
                    tracing::error!(member, "undecodable timer removed");
                    self.command(redis::cmd("ZREM").arg(self.key("timers")).arg(&member))
                        .await?;
                }
            }
        }
        Ok(due)
    }

    async fn finish_timer(&self, due: &DueTimer) -> Result<()> {
        self.run::<()>(
            Function::FinishTimer,
            &[&due.timer.encode(), &due.lease_until.to_string()],
        )
        .await?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl BlockStore for RedisStore {
    async fn block(
        &self,
        by: &Phone,
        whom: &Phone,
        max_blocked: usize,
        now: Millis,
    ) -> Result<Option<BlockOutcome>> {
        let reply: BlockReply = self
            .run(
                Function::Block,
                &[
                    by.as_str(),
                    whom.as_str(),
                    &max_blocked.to_string(),
                    &now.to_string(),
                ],
            )
            .await?;
        match reply {
            BlockReply::NoSession => Ok(None),
            BlockReply::TooMany => Err(Error::TooManyBlocked { max: max_blocked }),
            BlockReply::Done {
                dropped,
                cancelled,
                room,
            } => {
                self.closed(room.as_slice()).await;
                Ok(Some(BlockOutcome {
                    dropped,
                    cancelled,
                    room,
                }))
            }
        }
    }

    async fn unblock(&self, by: &Phone, whom: &Phone) -> Result<()> {
        let _: i64 = self
            .run(Function::Unblock, &[by.as_str(), whom.as_str()])
            .await?;
        Ok(())
    }

    async fn blocked(&self, by: &Phone) -> Result<Vec<Phone>> {
        let mut cmd = redis::cmd("SMEMBERS");
        cmd.arg(self.key(&format!("bl:{by}")));
        let Phones(phones) = decode(self.command(&cmd).await?)?;
        Ok(phones)
    }

    async fn hidden_from(&self, phone: &Phone) -> Result<BTreeSet<Phone>> {
        let (Phones(blocked), Phones(blockers)) =
            self.run(Function::Hidden, &[phone.as_str()]).await?;
        Ok(blocked.into_iter().chain(blockers).collect())
    }

    async fn decline_request(
        &self,
        from: &Phone,
        to: &Phone,
        now: Millis,
        cooldown_until: Millis,
    ) -> Result<bool> {
        let declined: i64 = self
            .run(
                Function::Decline,
                &[
                    from.as_str(),
                    to.as_str(),
                    &now.to_string(),
                    &cooldown_until.to_string(),
                ],
            )
            .await?;
        Ok(declined == 1)
    }

    async fn send_request_capped(
        &self,
        request: ChatRequest,
        room_: NewRoom,
        max_pending: usize,
    ) -> Result<RequestOutcome> {
        self.send(request, room_, Some(max_pending)).await
    }
}

#[async_trait::async_trait]
impl EventBus for RedisStore {
    async fn publish(&self, delivery: Delivery) -> Result<()> {
        let (channel, json) = self.event(&delivery)?;
        // Sharded on a cluster: the event travels only inside the shard of its channel's slot.
        let publish = if self.is_cluster() {
            "SPUBLISH"
        } else {
            "PUBLISH"
        };
        self.command(redis::cmd(publish).arg(channel).arg(json))
            .await?;
        Ok(())
    }

    async fn subscribe(&self, audience: Audience) -> Result<()> {
        self.inner.bus.subscribe(&audience).await
    }

    async fn unsubscribe(&self, audience: Audience) -> Result<()> {
        self.inner.bus.unsubscribe(&audience).await
    }

    fn attach(&self, sink: Arc<dyn EventSink>) {
        self.inner.bus.sink.set(sink);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_each_run_of_one_senders_consecutive_messages_to_one_room() {
        let (r1, r2) = (RoomId::generate(), RoomId::generate());
        let a = Phone::parse("+15550000001").unwrap();
        let b = Phone::parse("+15550000002").unwrap();
        let m = |room: RoomId, sender: &Phone, cid: Option<&str>| {
            let message = NewMessage {
                sender: sender.clone(),
                message: "x".into(),
                timestamp: 0,
                client_id: cid.map(Into::into),
            };
            (room, message)
        };
        let batch = vec![
            m(r1, &a, None),
            m(r1, &a, Some("k")),
            m(r1, &a, None),
            m(r2, &a, None),
            m(r1, &a, None),
            m(r1, &b, None),
            m(r1, &b, Some("")),
            m(r1, &b, None),
        ];
        assert_eq!(runs(&batch), vec![0..3, 3..4, 4..5, 5..6, 6..7, 7..8]);
        assert!(runs(&[]).is_empty());
        let long: Vec<_> = (0..MAX_RUN * 2 + 1).map(|_| m(r1, &a, None)).collect();
        assert_eq!(
            runs(&long),
            vec![
                0..MAX_RUN,
                MAX_RUN..2 * MAX_RUN,
                2 * MAX_RUN..2 * MAX_RUN + 1
            ]
        );
    }

    #[test]
    fn room_keys_are_named_as_the_key_map_says() {
        let room = RoomId::generate();
        let mut key = RoomKey::new("chat:", &room);
        for part in ["m", "h", "d", "o"] {
            assert_eq!(key.part(part), format!("chat:{{{room}}}:{part}"));
        }
        assert_eq!(
            key.channel(false),
            crate::bus::Naming::new("chat:", false).channel(&Audience::Room(room))
        );
        let key = RoomKey::new("chat:", &room);
        let cluster = key.channel(true);
        assert_eq!(cluster, format!("chat:r:{{{room}}}"));
        assert_eq!(
            cluster,
            crate::bus::Naming::new("chat:", true).channel(&Audience::Room(room))
        );
    }
}
