//! A Redis Cluster master killed under traffic: its replica takes over within seconds, the
//! nodes find it by themselves, and clients that retry (with their `client_id`) go on.
//!
//! Two members on two nodes send at the same time, each retrying a refused message with the
//! same `client_id` (the contract stores it once), while the master of their room's slot is
//! killed (SIGKILL). With `--redis-wait-replicas 1` every acknowledged message is in history
//! exactly once afterwards; without it, replication is asynchronous and what a replica had not
//! received when its master died is lost: that test counts it (and prints it) but only asserts
//! what holds either way (no duplicate, no stranger, traffic resumes, deliveries resume).
//!
//! Each test prints its figures to stderr (`cargo test failover -- --nocapture`): how long the
//! cluster took to promote the replica, how long each sender saw no acknowledgement, how many
//! `store_unavailable` answers it retried, and the acknowledged messages lost.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chat_tests::{App, Client, RedisCluster, User, Ws, bounded};
use serde_json::{Value, json};
use tokio::sync::watch;

/// Acknowledgements each sender collects before the kill, and again after the failover.
const BEFORE: usize = 15;
const AFTER: usize = 15;
/// Pause after an acknowledged message (paced senders) and before a retry.
const PACE: Duration = Duration::from_millis(10);
const RETRY: Duration = Duration::from_millis(100);
/// Longest the cluster may take to promote a replica (node timeout 1 s; seen: 2–3 s).
const FAILOVER_BOUND: Duration = Duration::from_secs(20);
/// Longest a sender may go without an acknowledgement (the failover plus the clients' refresh).
const STALL_BOUND: Duration = Duration::from_secs(25);

#[tokio::test]
async fn an_acknowledged_message_survives_the_loss_of_its_master() {
    bounded(async {
        let run = failover_run(Wait::Replicas, Shard::NotTheDirectorys, PACE).await;
        assert!(
            run.lost.is_empty(),
            "with --redis-wait-replicas 1, acknowledged messages were lost: {:?}",
            run.lost
        );
    })
    .await;
}

/// Without WAIT, and with the directory's master killed too (the room shares its shard): the
/// senders do not pause, so messages are in flight at the kill. Losses are counted, not
/// forbidden; duplicates and strangers are.
#[tokio::test]
async fn without_waiting_for_replicas_a_failover_may_lose_acknowledged_messages() {
    bounded(async {
        let run = failover_run(Wait::None, Shard::TheDirectorys, Duration::ZERO).await;
        eprintln!(
            "failover without --redis-wait-replicas: {} of {} acknowledged messages lost",
            run.lost.len(),
            run.acked
        );
    })
    .await;
}

#[derive(Debug, Clone, Copy)]
enum Wait {
    None,
    Replicas,
}

/// Which master the test kills: the room's, chosen on a shard other than the directory's (users
/// go on; only the room's traffic waits), or on the directory's shard (everything waits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shard {
    NotTheDirectorys,
    TheDirectorys,
}

/// What a run saw.
struct Run {
    /// Acknowledged messages, both senders.
    acked: usize,
    /// Acknowledged messages missing from history afterwards (client ids).
    lost: Vec<String>,
}

/// One sender's account.
#[derive(Debug, Default)]
struct Sent {
    /// client_id → the acknowledged message's id.
    acked: Vec<(String, String)>,
    /// `store_unavailable` answers retried.
    unavailable: usize,
    /// The longest time between two acknowledgements.
    longest_gap: Duration,
    /// Client ids of the messages this socket received (the other member's and its own echoes).
    received: HashSet<String>,
}

async fn failover_run(wait: Wait, shard: Shard, pace: Duration) -> Run {
    let cluster = Arc::new(chat_tests::start_cluster().await);
    // Unpaced senders go past the default frame rate.
    let mut flags = vec!["--frames-per-sec", "100000", "--frame-burst", "100000"];
    if let Wait::Replicas = wait {
        flags.extend(["--redis-wait-replicas", "1"]);
    }
    let app = App::start_on_cluster(cluster.clone(), &flags).await;
    let node2 = app.another_node().await;
    let n1 = Client::new(app.server.addr);
    let n2 = Client::new(node2.addr);
    let directory = master_of(&cluster, format!("{{{}}}online", app.prefix)).await;

    // A room on the wanted shard (each room's slot is its id's: try pairs until one lands).
    let (a, b, room, master) = {
        let mut tries = 0;
        loop {
            tries += 1;
            assert!(
                tries <= 30,
                "no room landed on the wanted shard in 30 tries"
            );
            let a = n1.register(&format!("+1415555{:04}", 2 * tries)).await;
            let b = n2.register(&format!("+1415555{:04}", 2 * tries + 1)).await;
            let room = n1.make_room(&a, &b).await;
            let master = master_of(&cluster, format!("{}{{{room}}}:m", app.prefix)).await;
            if (master == directory) == (shard == Shard::TheDirectorys) {
                break (a, b, room, master);
            }
        }
    };
    let mut a_ws = n1.ws(&a).await;
    let mut b_ws = n2.ws(&b).await;
    a_ws.join(&room).await;
    b_ws.join(&room).await;

    let stop = Arc::new(AtomicBool::new(false));
    // Each sender publishes its count of acknowledgements; the test waits on them.
    let mut counts = Vec::new();
    let senders = [(a_ws, "a"), (b_ws, "b")]
        .into_iter()
        .map(|(ws, tag)| {
            let (count, seen) = watch::channel(0);
            counts.push(seen);
            let (room, stop) = (room.clone(), stop.clone());
            tokio::spawn(async move { send_until_stopped(ws, room, tag, pace, stop, count).await })
        })
        .collect::<Vec<_>>();
    let at_least = |n: usize| {
        let mut counts = counts.clone();
        async move {
            for c in &mut counts {
                c.wait_for(|&acked| acked >= n)
                    .await
                    .expect("a sender stopped early");
            }
        }
    };

    at_least(BEFORE).await;
    let before = snapshot(&counts);
    let killed_at = Instant::now();
    let c = cluster.clone();
    let failover = blocking(move || {
        c.kill(master);
        c.wait_for_failover(master, FAILOVER_BOUND)
    })
    .await;
    let promoted = killed_at.elapsed();
    let after_failover = snapshot(&counts);
    // The promoted replica is a master without a replica: with WAIT 1 its shard acknowledges
    // nothing until one is back (store_unavailable meanwhile, by design), so the killed node is
    // restarted, as an operator or an orchestrator would, and rejoins as its replica. Without
    // WAIT the shard serves at once on the promoted master alone.
    let replica_back = if let Wait::Replicas = wait {
        let c = cluster.clone();
        blocking(move || {
            c.restart(master);
            c.wait_until_whole(FAILOVER_BOUND)
        })
        .await;
        Some(killed_at.elapsed())
    } else {
        None
    };
    // Traffic resumes without restarting a node: both senders collect AFTER more acks.
    tokio::time::timeout(
        STALL_BOUND,
        at_least(after_failover.iter().max().copied().unwrap_or(0) + AFTER),
    )
    .await
    .unwrap_or_else(|_| {
        panic!(
            "traffic did not resume within {STALL_BOUND:?} after the failover: acks {:?}",
            snapshot(&counts)
        )
    });
    let resumed = killed_at.elapsed();
    stop.store(true, Ordering::SeqCst);
    let mut accounts = Vec::new();
    let mut sockets = Vec::new();
    for s in senders {
        let (ws, sent) = s.await.expect("sender task");
        sockets.push(ws);
        accounts.push(sent);
    }

    // Deliveries resume across nodes too: each member receives the other's last message.
    for (i, ws) in sockets.iter_mut().enumerate() {
        let (other_last, _) = accounts[1 - i].acked.last().expect("acked").clone();
        if accounts[i].received.contains(&other_last) {
            continue;
        }
        ws.recv_where(
            "the other member's last message",
            Duration::from_secs(10),
            |v| v["event"] == "receive_message" && v["data"]["client_id"] == other_last.as_str(),
        )
        .await;
    }

    // Both nodes serve again (their subscribers resubscribed on the new master).
    for node in [&n1, &n2] {
        let ready = chat_tests::eventually(Duration::from_secs(10), || async {
            node.get("/readyz", None).await.status == 200
        })
        .await;
        assert!(ready, "a node is not ready again after the failover");
    }

    // History (read through the node that was not the sender's): every acknowledged message at
    // most once, with the acknowledged id, and nothing nobody acknowledged.
    let history = full_history(&n2, &b, &room).await;
    let mut seen: HashMap<String, Vec<String>> = HashMap::new();
    for m in &history {
        let cid = m["client_id"].as_str().unwrap_or_default().to_owned();
        let id = m["id"].as_str().unwrap_or_default().to_owned();
        seen.entry(cid).or_default().push(id);
    }
    let acked: HashMap<&str, &str> = accounts
        .iter()
        .flat_map(|s| s.acked.iter().map(|(c, i)| (c.as_str(), i.as_str())))
        .collect();
    let dupes: Vec<_> = seen.iter().filter(|(_, ids)| ids.len() > 1).collect();
    assert!(dupes.is_empty(), "messages stored twice: {dupes:?}");
    let strangers: Vec<_> = seen
        .keys()
        .filter(|c| !acked.contains_key(c.as_str()))
        .collect();
    // An unacknowledged message can only be the last one of a sender that stopped: none here.
    assert!(
        strangers.is_empty(),
        "stored but never acknowledged: {strangers:?}"
    );
    let mut lost = Vec::new();
    for (cid, id) in &acked {
        match seen.get(*cid) {
            None => lost.push((*cid).to_owned()),
            Some(ids) => assert_eq!(ids[0], *id, "{cid} is in history under another id"),
        }
    }
    lost.sort();
    let total = acked.len();
    let distinct: HashSet<&str> = acked.keys().copied().collect();
    assert_eq!(distinct.len(), total, "client ids are unique per test");

    eprintln!(
        "failover ({wait:?}, room on {}the directory's shard): replica promoted {:.2} s after \
         the kill (cluster view {:.2} s), a replica back {}, both senders acknowledged again \
         {:.2} s after the kill; \
         longest gap without an ack {:.2} s / {:.2} s; store_unavailable retried {} / {}; \
         acks before the kill {:?}, at the promotion {:?}, in all {total}; lost {}",
        if shard == Shard::TheDirectorys {
            ""
        } else {
            "not "
        },
        promoted.as_secs_f64(),
        failover.as_secs_f64(),
        replica_back.map_or("(not restarted)".to_owned(), |t| format!(
            "{:.2} s after the kill",
            t.as_secs_f64()
        )),
        resumed.as_secs_f64(),
        accounts[0].longest_gap.as_secs_f64(),
        accounts[1].longest_gap.as_secs_f64(),
        accounts[0].unavailable,
        accounts[1].unavailable,
        before,
        after_failover,
        lost.len(),
    );
    drop(node2);
    Run { acked: total, lost }
}

/// Sends `send_message` with client ids `<tag><n>` one at a time until `stop`, retrying a
/// `store_unavailable` answer with the same client id; counts acknowledgements in `count`.
async fn send_until_stopped(
    mut ws: Ws,
    room: String,
    tag: &'static str,
    pace: Duration,
    stop: Arc<AtomicBool>,
    count: watch::Sender<usize>,
) -> (Ws, Sent) {
    let mut sent = Sent::default();
    let mut last_ack = Instant::now();
    let mut n = 0;
    while !stop.load(Ordering::SeqCst) {
        let cid = format!("{tag}{n}");
        let f = ws
            .call(
                "send_message",
                json!({"room": room, "message": cid, "client_id": cid}),
            )
            .await;
        match (f["event"].as_str(), f["data"]["code"].as_str()) {
            (Some("ack"), _) => {
                assert_eq!(f["data"]["client_id"], cid.as_str(), "ack of {cid}: {f}");
                let id = f["data"]["id"].as_str().expect("acked id").to_owned();
                sent.acked.push((cid, id));
                sent.longest_gap = sent.longest_gap.max(last_ack.elapsed());
                last_ack = Instant::now();
                count.send_modify(|acked| *acked += 1);
                n += 1;
                for m in ws.drain_backlog("receive_message") {
                    if let Some(c) = m["data"]["client_id"].as_str() {
                        sent.received.insert(c.to_owned());
                    }
                }
                tokio::time::sleep(pace).await;
            }
            (Some("error"), Some("store_unavailable")) => {
                sent.unavailable += 1;
                tokio::time::sleep(RETRY).await;
            }
            _ => panic!("[{tag}] send_message {cid}: unexpected answer {f}"),
        }
    }
    (ws, sent)
}

/// The room's whole history, oldest first (a run stores well under 500 messages).
async fn full_history(client: &Client, user: &User, room: &str) -> Vec<Value> {
    let page = client
        .get(
            &format!("/chatrooms/{room}/messages?limit=500"),
            Some(&user.token),
        )
        .await
        .ok();
    assert_eq!(
        page["more"], false,
        "more than 500 messages: raise the limit"
    );
    page["messages"].as_array().cloned().unwrap_or_default()
}

/// The port of the master serving `key`'s slot now.
async fn master_of(cluster: &Arc<RedisCluster>, key: String) -> u16 {
    let c = cluster.clone();
    blocking(move || c.master_of_key(&key)).await
}

/// Runs blocking cluster administration off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("cluster admin task")
}

/// The senders' acknowledgement counts now.
fn snapshot(counts: &[watch::Receiver<usize>]) -> Vec<usize> {
    counts.iter().map(|c| *c.borrow()).collect()
}
