//! Clients that do not wait: frames pipelined without waiting for replies, both members of a
//! room acting at the same instant, a join racing a message, a close, a leave, and a hundred
//! sockets reconnecting at once. Each runs on the memory store, on Redis, on two nodes sharing
//! one Redis (the first member of each pair on one node, the second on the other), and on two
//! nodes sharing a Redis Cluster.
//!
//! These are the races an outside client finds first (a client that waits for its own
//! `user_joined` before sending hangs forever if it is lost), so each test repeats its race
//! over many pairs at once, several rounds, and reports every pair that went wrong rather than
//! the first.

use std::sync::Arc;
use std::time::Duration;

use chat_tests::{App, Backend, Client, EVENT_TIMEOUT, Next, Server, User, Ws, bounded};
use serde_json::{Value, json};
use tokio::sync::Barrier;
use tokio::time::Instant;

/// Generates `memory::name`, `redis::name`, `two_nodes::name` and
/// `two_nodes_on_a_cluster::name` for each `async fn name(topology: Topology)`.
macro_rules! topologies {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    bounded(super::$name(super::Topology::One(Backend::Memory))).await
                }
            )*
            use super::{Backend, bounded};
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    bounded(super::$name(super::Topology::One(Backend::Redis))).await
                }
            )*
            use super::{Backend, bounded};
        }
        mod two_nodes {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    bounded(super::$name(super::Topology::TwoNodes)).await
                }
            )*
            use super::bounded;
        }
        mod two_nodes_on_a_cluster {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    bounded(super::$name(super::Topology::TwoNodesOnACluster)).await
                }
            )*
            use super::bounded;
        }
    };
}

topologies!(
    both_members_join_at_once,
    join_and_send_before_history,
    join_races_close,
    leave_races_messages,
    rejoin_with_since_races_new_messages,
    crossed_requests_at_the_same_instant,
    accept_races_cancel,
    pipelined_frames_are_answered_in_order,
    hundred_sockets_reconnect_at_once,
);

/// Where the members of each pair connect.
#[derive(Debug, Clone, Copy)]
enum Topology {
    /// Both on one server.
    One(Backend),
    /// Two servers on one Redis: first members on the first, second members on the second.
    TwoNodes,
    /// The same on a Redis Cluster (3 masters, 3 replicas): the users in the directory's slot,
    /// the rooms spread over the shards.
    TwoNodesOnACluster,
}

/// The servers of a test.
struct Setup {
    app: App,
    node2: Option<Server>,
}

impl Setup {
    async fn start(topology: Topology) -> Setup {
        Setup::start_with(topology, &[]).await
    }

    async fn start_with(topology: Topology, flags: &[&str]) -> Setup {
        let backend = match topology {
            Topology::One(b) => b,
            Topology::TwoNodes => Backend::Redis,
            Topology::TwoNodesOnACluster => Backend::RedisCluster,
        };
        let app = App::start(backend, flags).await;
        let node2 = match topology {
            Topology::TwoNodes | Topology::TwoNodesOnACluster => Some(app.another_node().await),
            Topology::One(_) => None,
        };
        Setup { app, node2 }
    }

    /// Where first members connect.
    fn a(&self) -> Client {
        Client::new(self.app.server.addr)
    }

    /// Where second members connect.
    fn b(&self) -> Client {
        Client::new(self.node2.as_ref().map_or(self.app.server.addr, |s| s.addr))
    }

    /// `n` pairs of fresh users (phones `+1415<base><i>`), each pair sharing a room.
    async fn pairs(&self, base: u32, n: u32) -> Vec<Pair> {
        let mut out = Vec::new();
        for i in 0..n {
            let a = self.a().register(&phone(base, 2 * i)).await;
            let b = self.b().register(&phone(base, 2 * i + 1)).await;
            let room = self.a().make_room(&a, &b).await;
            out.push(Pair { a, b, room });
        }
        out
    }

    /// Opens a socket for each member of each pair.
    async fn sockets(&self, pairs: &[Pair]) -> Vec<(Ws, Ws)> {
        let mut out = Vec::new();
        for p in pairs {
            out.push((self.a().ws(&p.a).await, self.b().ws(&p.b).await));
        }
        out
    }
}

fn phone(base: u32, i: u32) -> String {
    format!("+1415{base:03}{i:04}")
}

#[derive(Debug, Clone)]
struct Pair {
    a: User,
    b: User,
    room: String,
}

/// Reads events into `seen` until `done(seen)` holds or `deadline` passes; whether it held.
/// Returns early (false) if the socket closes.
async fn read_until(
    ws: &mut Ws,
    seen: &mut Vec<Value>,
    deadline: Instant,
    done: impl Fn(&[Value]) -> bool,
) -> bool {
    loop {
        if done(seen) {
            return true;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match ws.next(left).await {
            Next::Event(v) => seen.push(v),
            Next::Closed(_) | Next::Timeout => return done(seen),
        }
    }
}

fn is_joined(v: &Value, room: &str, user: &str) -> bool {
    v["event"] == "user_joined" && v["data"]["room"] == room && v["data"]["user"] == user
}

fn is_history(v: &Value, room: &str) -> bool {
    v["event"] == "room_history" && v["data"]["room"] == room
}

fn join_frame(room: &str) -> Value {
    json!({"room": room})
}

/// Fails with every problem found, not just the first.
#[track_caller]
fn assert_none(problems: &[String], what: &str, out_of: usize) {
    assert!(
        problems.is_empty(),
        "{what}: {} problem(s) out of {out_of}:\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
}

/// Both members of many pairs send `join_room` (no ack) at the same instant, over several rounds
/// (each round on fresh sockets, so the node's subscription to each room goes 0 → 1 again).
/// Every socket must get `room_history`, then its own `user_joined`; in each pair the member
/// who was in first must see the other's `user_joined` (so at least one of the two sees both).
async fn both_members_join_at_once(t: Topology) {
    const PAIRS: u32 = 25;
    const ROUNDS: usize = 4;
    let setup = Setup::start(t).await;
    let pairs = setup.pairs(100, PAIRS).await;
    let mut problems = Vec::new();
    for round in 0..ROUNDS {
        let sockets = setup.sockets(&pairs).await;
        let barrier = Arc::new(Barrier::new(pairs.len()));
        let mut tasks = Vec::new();
        for (pair, (mut wa, mut wb)) in pairs.iter().cloned().zip(sockets) {
            let barrier = Arc::clone(&barrier);
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                let frame = join_frame(&pair.room);
                tokio::join!(
                    wa.send("join_room", frame.clone(), None),
                    wb.send("join_room", frame, None)
                );
                let deadline = Instant::now() + EVENT_TIMEOUT;
                let (mut sa, mut sb) = (Vec::new(), Vec::new());
                let room = pair.room.as_str();
                let own = |user: &str| {
                    let user = user.to_owned();
                    move |seen: &[Value]| seen.iter().any(|v| is_joined(v, room, &user))
                };
                let (got_a, got_b) = tokio::join!(
                    read_until(&mut wa, &mut sa, deadline, own(&pair.a.phone)),
                    read_until(&mut wb, &mut sb, deadline, own(&pair.b.phone)),
                );
                let mut out = Vec::new();
                for (who, got, seen) in [("first", got_a, &sa), ("second", got_b, &sb)] {
                    if !got {
                        out.push(format!(
                            "round {round}, room {room}: the {who} member never saw its own \
                             user_joined; it got {seen:?}"
                        ));
                    } else if !seen.first().is_some_and(|v| is_history(v, room)) {
                        out.push(format!(
                            "round {round}, room {room}: the {who} member's first frame was not \
                             room_history: {seen:?}"
                        ));
                    }
                }
                if got_a && got_b {
                    // Whoever was in first sees the other arrive.
                    let deadline = Instant::now() + EVENT_TIMEOUT;
                    let (pa, pb) = (pair.a.phone.clone(), pair.b.phone.clone());
                    let saw_b = move |s: &[Value]| s.iter().any(|v| is_joined(v, room, &pb));
                    let saw_a = move |s: &[Value]| s.iter().any(|v| is_joined(v, room, &pa));
                    let either = tokio::select! {
                        r = read_until(&mut wa, &mut sa, deadline, saw_b) => r,
                        r = read_until(&mut wb, &mut sb, deadline, saw_a) => r,
                    };
                    if !either {
                        out.push(format!(
                            "round {round}, room {room}: neither member saw the other's \
                             user_joined: {sa:?} / {sb:?}"
                        ));
                    }
                }
                wa.close().await;
                wb.close().await;
                out
            }));
        }
        for task in tasks {
            problems.extend(task.await.expect("pair task"));
        }
    }
    assert_none(
        &problems,
        "both members joining at once",
        PAIRS as usize * ROUNDS,
    );
}

/// Both members pipeline `join_room` and a `send_message` without waiting for anything, at the
/// same instant. Each socket sees `room_history` first, then both messages exactly once
/// (in its history or live), in the room's one order.
async fn join_and_send_before_history(t: Topology) {
    const PAIRS: u32 = 20;
    let setup = Setup::start(t).await;
    let pairs = setup.pairs(200, PAIRS).await;
    let sockets = setup.sockets(&pairs).await;
    let barrier = Arc::new(Barrier::new(pairs.len()));
    let mut tasks = Vec::new();
    for (pair, (mut wa, mut wb)) in pairs.iter().cloned().zip(sockets) {
        let barrier = Arc::clone(&barrier);
        let client = setup.a();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let room = pair.room.as_str();
            let pipeline = |text: &str| {
                vec![
                    json!({"event": "join_room", "data": {"room": room}}).to_string(),
                    json!({"event": "send_message",
                           "data": {"room": room, "message": text, "client_id": text},
                           "ack": text})
                    .to_string(),
                ]
            };
            let (fa, fb) = (pipeline("from-a"), pipeline("from-b"));
            tokio::join!(
                async {
                    for f in &fa {
                        wa.send_text(f).await;
                    }
                },
                async {
                    for f in &fb {
                        wb.send_text(f).await;
                    }
                }
            );
            let deadline = Instant::now() + EVENT_TIMEOUT;
            let both = |seen: &[Value]| message_ids(seen, room).len() >= 2;
            let (mut sa, mut sb) = (Vec::new(), Vec::new());
            tokio::join!(
                read_until(&mut wa, &mut sa, deadline, both),
                read_until(&mut wb, &mut sb, deadline, both),
            );
            let history = client
                .get(&format!("/chatrooms/{room}/messages"), Some(&pair.a.token))
                .await
                .ok();
            let order = chat_tests::ids(&history["messages"]);
            let mut out = Vec::new();
            for (who, seen) in [("first", &sa), ("second", &sb)] {
                if !seen.first().is_some_and(|v| is_history(v, room)) {
                    out.push(format!("room {room}: {who} member's first frame: {seen:?}"));
                }
                let got = message_ids(seen, room);
                if got != order {
                    out.push(format!(
                        "room {room}: the {who} member saw messages {got:?}, history is {order:?}"
                    ));
                }
                if seen.iter().any(|v| v["event"] == "error") {
                    out.push(format!(
                        "room {room}: the {who} member got an error: {seen:?}"
                    ));
                }
            }
            out
        }));
    }
    let mut problems = Vec::new();
    for task in tasks {
        problems.extend(task.await.expect("pair task"));
    }
    assert_none(&problems, "join and send before history", PAIRS as usize);
}

/// The ids of the messages of `room` a socket saw, in order: those of its `room_history`s, then
/// the live ones (`receive_message`), each as it came.
fn message_ids(seen: &[Value], room: &str) -> Vec<String> {
    let mut out = Vec::new();
    for v in seen {
        if is_history(v, room) {
            out.extend(chat_tests::ids(&v["data"]["messages"]));
        } else if v["event"] == "receive_message" && v["data"]["room"] == room {
            out.push(v["data"]["id"].as_str().unwrap_or_default().to_owned());
        }
    }
    out
}

/// The texts of the messages of `room` a socket saw (as [`message_ids`]).
fn message_texts(seen: &[Value], room: &str) -> Vec<String> {
    let mut out = Vec::new();
    for v in seen {
        if is_history(v, room) {
            out.extend(chat_tests::texts(&v["data"]["messages"]));
        } else if v["event"] == "receive_message" && v["data"]["room"] == room {
            out.push(v["data"]["message"].as_str().unwrap_or_default().to_owned());
        }
    }
    out
}

/// The first member joins while the second closes the room over HTTP at the same instant. The
/// joiner's answer is `room_history` or `room_not_found`; either way it gets `room_closed`
/// exactly once and is out of the room (sending there is `room_not_found`).
async fn join_races_close(t: Topology) {
    const PAIRS: u32 = 20;
    let setup = Setup::start(t).await;
    let pairs = setup.pairs(300, PAIRS).await;
    let sockets = setup.sockets(&pairs).await;
    let barrier = Arc::new(Barrier::new(pairs.len()));
    let mut tasks = Vec::new();
    for (pair, (mut wa, wb)) in pairs.iter().cloned().zip(sockets) {
        let barrier = Arc::clone(&barrier);
        let closer = setup.b();
        tasks.push(tokio::spawn(async move {
            let room = pair.room.as_str();
            barrier.wait().await;
            let body = json!({"chat_id": room});
            let (_, closed) = tokio::join!(
                wa.send("join_room", join_frame(room), Some(json!("j"))),
                closer.post("/close_room", Some(&pair.b.token), &body)
            );
            let mut out = Vec::new();
            if closed.status != 200 {
                out.push(format!(
                    "room {room}: close_room answered {}",
                    closed.status
                ));
            }
            let deadline = Instant::now() + EVENT_TIMEOUT;
            let mut seen = Vec::new();
            let answered_and_closed = |s: &[Value]| {
                s.iter().any(|v| v["ack"] == "j") && s.iter().any(|v| v["event"] == "room_closed")
            };
            if !read_until(&mut wa, &mut seen, deadline, answered_and_closed).await {
                out.push(format!(
                    "room {room}: no join answer or no room_closed: {seen:?}"
                ));
                return out;
            }
            let answer = seen.iter().find(|v| v["ack"] == "j").cloned();
            let ok = answer.as_ref().is_some_and(|a| {
                a["event"] == "room_history"
                    || (a["event"] == "error" && a["data"]["code"] == "room_not_found")
            });
            if !ok {
                out.push(format!("room {room}: join answered {answer:?}"));
            }
            // The socket is out of the room: its next send says so, and nothing of the room
            // follows.
            let f = wa
                .call("send_message", json!({"room": room, "message": "late"}))
                .await;
            if f["data"]["code"] != "room_not_found" {
                out.push(format!("room {room}: a send after the close answered {f}"));
            }
            let closes = seen
                .iter()
                .chain(wa.backlog())
                .filter(|v| v["event"] == "room_closed")
                .count();
            if closes != 1 {
                out.push(format!(
                    "room {room}: {closes} room_closed events: {seen:?}"
                ));
            }
            drop(wb);
            out
        }));
    }
    let mut problems = Vec::new();
    for task in tasks {
        problems.extend(task.await.expect("pair task"));
    }
    assert_none(&problems, "join racing close", PAIRS as usize);
}

/// The first member leaves while the second sends a burst. Before the leave's ack the leaver
/// sees a gapless prefix of the burst; after it, nothing of the room. A second socket of the
/// leaver that stays sees the whole burst once, in order; the sender sees `user_left`.
async fn leave_races_messages(t: Topology) {
    const N: usize = 30;
    let setup = Setup::start(t).await;
    let pairs = setup.pairs(400, 4).await;
    let mut problems = Vec::new();
    for pair in &pairs {
        let room = pair.room.as_str();
        let mut leaver = setup.a().ws(&pair.a).await;
        let mut stayer = setup.a().ws(&pair.a).await;
        let mut sender = setup.b().ws(&pair.b).await;
        leaver.join(room).await;
        stayer.join(room).await;
        sender.join(room).await;
        let (_, acks) = tokio::join!(
            leaver.send("leave_room", json!({"room": room}), Some(json!("leave"))),
            sender.send_burst(room, "m", N),
        );
        let sent: Vec<String> = acks
            .iter()
            .map(|m| m["id"].as_str().unwrap_or_default().to_owned())
            .collect();
        let mut before = Vec::new();
        let deadline = Instant::now() + EVENT_TIMEOUT;
        if !read_until(&mut leaver, &mut before, deadline, |s| {
            s.iter().any(|v| v["ack"] == "leave")
        })
        .await
        {
            problems.push(format!("room {room}: no ack for leave_room: {before:?}"));
            continue;
        }
        let got = message_ids(&before, room);
        if got[..] != sent[..got.len().min(sent.len())] {
            problems.push(format!(
                "room {room}: before leaving, {got:?} is not a prefix of {sent:?}"
            ));
        }
        // The stayer sees every message once, in order: once it has the last, the leaver's
        // node has handled the burst too (same node, or the same Redis order).
        let mut all = Vec::new();
        let deadline = Instant::now() + EVENT_TIMEOUT;
        read_until(&mut stayer, &mut all, deadline, |s| {
            message_ids(s, room).len() >= N
        })
        .await;
        if message_ids(&all, room) != sent {
            problems.push(format!(
                "room {room}: the staying socket saw {:?}, sent {sent:?}",
                message_ids(&all, room)
            ));
        }
        // A frame the leaver's node answers after the whole burst: whatever of the room was
        // still coming would be ahead of it.
        let pong = leaver.call("ping", json!({})).await;
        let after: Vec<&Value> = leaver
            .backlog()
            .iter()
            .filter(|v| v["event"] == "receive_message")
            .collect();
        if pong["event"] != "pong" || !after.is_empty() {
            problems.push(format!(
                "room {room}: after leaving, got {after:?} (ping answered {pong})"
            ));
        }
        let left = sender
            .recv_where("user_left", EVENT_TIMEOUT, |v| {
                v["event"] == "user_left" && v["data"]["room"] == room
            })
            .await;
        if left["data"]["user"] != pair.a.phone.as_str() {
            problems.push(format!("room {room}: user_left {left}"));
        }
    }
    assert_none(&problems, "leave racing messages", pairs.len());
}

/// The second member sends a steady stream while the first drops its socket three times and
/// rejoins with `since` = the last id it saw, each time while messages are in flight. Over its
/// sockets, the first member sees every message exactly once, in order.
async fn rejoin_with_since_races_new_messages(t: Topology) {
    const N: usize = 90;
    // The sender goes as fast as its acks come back: past the default 20 frames a second.
    let setup =
        Setup::start_with(t, &["--frames-per-sec", "10000", "--frame-burst", "10000"]).await;
    let pair = setup.pairs(500, 1).await.remove(0);
    let room = pair.room.clone();
    let mut reader = setup.a().ws(&pair.a).await;
    reader.join(&room).await;
    let mut sender = setup.b().ws(&pair.b).await;
    let sending = {
        let room = room.clone();
        tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..N {
                ids.push(
                    sender.say(&room, &format!("s{i}")).await["id"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                );
            }
            ids
        })
    };
    let mut seen_ids: Vec<String> = Vec::new();
    for drop_at in [N / 4, N / 2, 3 * N / 4] {
        let mut seen = Vec::new();
        let deadline = Instant::now() + EVENT_TIMEOUT;
        read_until(&mut reader, &mut seen, deadline, |s| {
            seen_ids.len() + message_ids(s, &room).len() >= drop_at
        })
        .await;
        seen_ids.extend(message_ids(&seen, &room));
        // Gone without a goodbye, then back at once with what it saw last.
        drop(reader);
        reader = setup.a().ws(&pair.a).await;
        let since = seen_ids.last().cloned().unwrap_or_default();
        reader
            .send(
                "join_room",
                json!({"room": room, "since": since}),
                Some(json!("rejoin")),
            )
            .await;
    }
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    read_until(&mut reader, &mut seen, deadline, |s| {
        seen_ids.len() + message_ids(s, &room).len() >= N
    })
    .await;
    seen_ids.extend(message_ids(&seen, &room));
    let sent = sending.await.expect("sender task");
    assert_eq!(
        seen_ids, sent,
        "the reader's messages over its reconnections against the sender's acks"
    );
}

/// The two members of many pairs send each other a request at the same instant. One request
/// wins and the other accepts it: one answer says sent, the other accepted, and both sockets get
/// one `request_accepted` with the one room.
async fn crossed_requests_at_the_same_instant(t: Topology) {
    const PAIRS: u32 = 20;
    let setup = Setup::start(t).await;
    let (ca, cb) = (setup.a(), setup.b());
    let mut problems = Vec::new();
    let mut users = Vec::new();
    for i in 0..PAIRS {
        let a = ca.register(&phone(600, 2 * i)).await;
        let b = cb.register(&phone(600, 2 * i + 1)).await;
        let (wa, wb) = (ca.ws(&a).await, cb.ws(&b).await);
        users.push((a, b, wa, wb));
    }
    let barrier = Arc::new(Barrier::new(users.len()));
    let mut tasks = Vec::new();
    for (a, b, mut wa, mut wb) in users {
        let barrier = Arc::clone(&barrier);
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let (to_b, to_a) = (json!({"phone2": b.phone}), json!({"phone2": a.phone}));
            let (ra, rb) = tokio::join!(
                ca.post("/send_request", Some(&a.token), &to_b),
                cb.post("/send_request", Some(&b.token), &to_a),
            );
            let (va, vb) = (ra.ok(), rb.ok());
            let room = |v: &Value| v["message"]["chat_id"].as_str().map(str::to_owned);
            let rooms: Vec<String> = [&va, &vb].into_iter().filter_map(room).collect();
            let mut out = Vec::new();
            let [chat_id] = rooms.as_slice() else {
                out.push(format!("{}: answers {va} / {vb}", a.phone));
                return out;
            };
            for (ws, other) in [(&mut wa, &b.phone), (&mut wb, &a.phone)] {
                let ev = ws.recv_event("request_accepted").await;
                if ev["data"]["chat_id"] != chat_id.as_str() || ev["data"]["from_user"] != *other {
                    out.push(format!("{}: request_accepted {ev}", ws.phone));
                }
            }
            for (client, user) in [(ca, &a), (cb, &b)] {
                let v = client
                    .get("/active_chatrooms", Some(&user.token))
                    .await
                    .ok();
                let n = v["chatrooms"].as_array().map_or(0, Vec::len);
                let v2 = client
                    .get("/incoming_request", Some(&user.token))
                    .await
                    .ok();
                if n != 1 || v2["incoming_request"] != json!([]) || v2["sent_request"] != json!([])
                {
                    out.push(format!("{}: rooms {v}, requests {v2}", user.phone));
                }
            }
            out
        }));
    }
    for task in tasks {
        problems.extend(task.await.expect("pair task"));
    }
    assert_none(&problems, "crossed requests", PAIRS as usize);
}

/// The recipient accepts while the requester cancels, at the same instant. Exactly one wins:
/// either a room exists (and the cancel is `request_not_found`) or none does (and the accept
/// is `request_not_found`); nothing is left pending.
async fn accept_races_cancel(t: Topology) {
    const PAIRS: u32 = 20;
    let setup = Setup::start(t).await;
    let (ca, cb) = (setup.a(), setup.b());
    let mut tasks = Vec::new();
    let mut users = Vec::new();
    for i in 0..PAIRS {
        let a = ca.register(&phone(700, 2 * i)).await;
        let b = cb.register(&phone(700, 2 * i + 1)).await;
        ca.post("/send_request", Some(&a.token), &json!({"phone2": b.phone}))
            .await
            .ok();
        users.push((a, b));
    }
    let barrier = Arc::new(Barrier::new(users.len()));
    for (a, b) in users {
        let barrier = Arc::clone(&barrier);
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let accept_body = json!({"phone1": a.phone, "action": "accept"});
            let cancel_body = json!({"phone2": b.phone});
            let (accept, cancel) = tokio::join!(
                cb.post("/respond_request", Some(&b.token), &accept_body),
                ca.post("/cancel_request", Some(&a.token), &cancel_body),
            );
            let rooms = ca.get("/active_chatrooms", Some(&a.token)).await.ok()["chatrooms"]
                .as_array()
                .map_or(0, Vec::len);
            let pending =
                cb.get("/incoming_request", Some(&b.token)).await.ok()["incoming_request"].clone();
            let accepted = accept.status == 200 && cancel.status == 404 && rooms == 1;
            let cancelled = cancel.status == 200 && accept.status == 404 && rooms == 0;
            if (accepted || cancelled) && pending == json!([]) {
                vec![]
            } else {
                vec![format!(
                    "{}: accept {} {}, cancel {} {}, rooms {rooms}, pending {pending}",
                    a.phone,
                    accept.status,
                    accept.text(),
                    cancel.status,
                    cancel.text()
                )]
            }
        }));
    }
    let mut problems = Vec::new();
    for task in tasks {
        problems.extend(task.await.expect("pair task"));
    }
    assert_none(&problems, "accept racing cancel", PAIRS as usize);
}

/// A client writes a dozen frames without reading anything in between (joins, messages, a
/// leave, a rejoin, a bad frame, pings). Every frame with an ack is answered exactly once, in
/// the order sent; the other member sees the messages in that order.
async fn pipelined_frames_are_answered_in_order(t: Topology) {
    let setup = Setup::start(t).await;
    let pair = setup.pairs(800, 1).await.remove(0);
    let room = pair.room.as_str();
    let mut other = setup.b().ws(&pair.b).await;
    other.join(room).await;
    let mut ws = setup.a().ws(&pair.a).await;
    let frames = vec![
        (
            json!({"event": "join_room", "data": {"room": room}, "ack": 1}),
            "room_history",
        ),
        (
            json!({"event": "send_message", "data": {"room": room, "message": "p1"}, "ack": 2}),
            "ack",
        ),
        (
            json!({"event": "send_message", "data": {"room": room, "message": "p2"}, "ack": 3}),
            "ack",
        ),
        (
            json!({"event": "typing", "data": {"room": room, "typing": true}, "ack": 4}),
            "ack",
        ),
        (
            json!({"event": "send_message", "data": {"room": room, "message": "p3"}, "ack": 5}),
            "ack",
        ),
        (json!({"event": "ping", "ack": 6}), "pong"),
        (
            json!({"event": "leave_room", "data": {"room": room}, "ack": 7}),
            "ack",
        ),
        (
            json!({"event": "send_message", "data": {"room": room, "message": "p4"}, "ack": 8}),
            "ack",
        ),
        (
            json!({"event": "join_room", "data": {"room": room}, "ack": 9}),
            "room_history",
        ),
        (json!({"event": "nonsense", "ack": 10}), "error"),
        (
            json!({"event": "send_message", "data": {"room": room, "message": "p5"}, "ack": 11}),
            "ack",
        ),
        (json!({"event": "ping", "ack": 12}), "pong"),
    ];
    for (f, _) in &frames {
        ws.send_text(&f.to_string()).await;
    }
    let mut seen = Vec::new();
    let deadline = Instant::now() + EVENT_TIMEOUT;
    read_until(&mut ws, &mut seen, deadline, |s| {
        s.iter().any(|v| v["ack"] == 12)
    })
    .await;
    let answers: Vec<(Value, Value)> = seen
        .iter()
        .filter(|v| !v["ack"].is_null())
        .map(|v| (v["ack"].clone(), v["event"].clone()))
        .collect();
    let expected: Vec<(Value, Value)> = frames
        .iter()
        .map(|(f, e)| (f["ack"].clone(), json!(e)))
        .collect();
    assert_eq!(
        answers, expected,
        "answers in frame order; received {seen:?}"
    );
    let mut got = Vec::new();
    let deadline = Instant::now() + EVENT_TIMEOUT;
    read_until(&mut other, &mut got, deadline, |s| {
        s.iter().filter(|v| v["event"] == "receive_message").count() >= 5
    })
    .await;
    let texts: Vec<&str> = got
        .iter()
        .filter(|v| v["event"] == "receive_message")
        .filter_map(|v| v["data"]["message"].as_str())
        .collect();
    assert_eq!(
        texts,
        ["p1", "p2", "p3", "p4", "p5"],
        "the other member's view"
    );
}

/// Fifty pairs, every socket joined; all hundred drop at once and reconnect at the same
/// instant, rejoin with `since`, and send one message each. Every socket gets its history, its
/// own `user_joined`, and the other member's new message; every user is online again.
async fn hundred_sockets_reconnect_at_once(t: Topology) {
    const PAIRS: u32 = 50;
    let setup = Setup::start(t).await;
    let pairs = setup.pairs(900, PAIRS).await;
    let mut last_ids = Vec::new();
    {
        let mut sockets = setup.sockets(&pairs).await;
        for (pair, (wa, wb)) in pairs.iter().zip(sockets.iter_mut()) {
            wa.join(&pair.room).await;
            wb.join(&pair.room).await;
            let m = wa.say(&pair.room, "before").await;
            last_ids.push(m["id"].as_str().unwrap_or_default().to_owned());
        }
        // Every socket dropped at once, without a close frame.
    }
    let barrier = Arc::new(Barrier::new(2 * pairs.len()));
    let mut tasks = Vec::new();
    for (pair, since) in pairs.iter().zip(last_ids) {
        for (client, me, other) in [(setup.a(), &pair.a, &pair.b), (setup.b(), &pair.b, &pair.a)] {
            let (barrier, me, other, room, since) = (
                Arc::clone(&barrier),
                me.clone(),
                other.phone.clone(),
                pair.room.clone(),
                since.clone(),
            );
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                let mut ws = client.ws(&me).await;
                ws.send("join_room", json!({"room": room, "since": since}), None)
                    .await;
                ws.send(
                    "send_message",
                    json!({"room": room, "message": format!("back {}", me.phone)}),
                    None,
                )
                .await;
                let mut seen = Vec::new();
                let deadline = Instant::now() + Duration::from_secs(10);
                let want = format!("back {other}");
                // The other's message comes live, or in this socket's history if it was
                // stored before the join read it.
                let done = read_until(&mut ws, &mut seen, deadline, |s| {
                    s.iter().any(|v| is_joined(v, &room, &me.phone))
                        && message_texts(s, &room).contains(&want)
                })
                .await;
                let mut out = Vec::new();
                if !done || !seen.first().is_some_and(|v| is_history(v, &room)) {
                    out.push(format!("{}: {seen:?}", me.phone));
                }
                if seen.iter().any(|v| v["event"] == "error") {
                    out.push(format!("{}: an error: {seen:?}", me.phone));
                }
                (ws, out)
            }));
        }
    }
    let mut problems = Vec::new();
    let mut open = Vec::new();
    for task in tasks {
        let (ws, out) = task.await.expect("socket task");
        problems.extend(out);
        open.push(ws);
    }
    assert_none(
        &problems,
        "a hundred sockets reconnecting",
        2 * PAIRS as usize,
    );
    let online = setup.a().online(&pairs[0].a.token).await;
    let missing: Vec<&str> = pairs
        .iter()
        .flat_map(|p| [p.a.phone.as_str(), p.b.phone.as_str()])
        .filter(|p| !online.iter().any(|o| o == p))
        .collect();
    assert!(
        missing.is_empty(),
        "not online after reconnecting: {missing:?}"
    );
    drop(open);
}
