//! Nodes: heartbeats, reaping dead nodes, `remove_node`, `ping`.

use tokio::task::JoinSet;

use crate::store::Timer;
use crate::types::{NodeId, Phone};

use super::Fixture;
use super::helpers::*;

/// A node whose heartbeat ran out is claimed once: its sockets are forgotten and the users left
/// with none are returned, with `Timer::Presence` at `max(http_until, now)`.
pub async fn reap_claims_each_dead_node_once(fx: Fixture) {
    let [a, b, c] = [fx.phone(1), fx.phone(2), fx.phone(3)];
    for p in [&a, &b, &c] {
        register(&fx, p).await;
    }
    let (n1, n2) = (NodeId::random(), NodeId::random());
    let ttl = fx.lifetimes.node_ttl_ms;
    for n in [&n1, &n2] {
        fx.store
            .heartbeat(n, fx.now() + ttl)
            .await
            .expect("heartbeat");
    }
    for (p, k) in [
        (&a, conn(&n1, 1)),
        (&b, conn(&n1, 2)),
        (&b, conn(&n2, 1)),
        (&c, conn(&n2, 2)),
    ] {
        fx.store.add_conn(p, &k).await.expect("add_conn");
    }
    assert_eq!(
        fx.store
            .reap_dead_nodes(fx.now(), NO_CUT)
            .await
            .expect("reap"),
        Vec::<Phone>::new(),
        "nobody is dead yet"
    );

    // Past both the node TTL and the users' windows; n2 keeps beating.
    fx.advance(ttl.max(fx.lifetimes.presence_ms) + 1);
    let now = fx.now();
    fx.store.heartbeat(&n2, now + ttl).await.expect("heartbeat");
    let orphans = fx.store.reap_dead_nodes(now, NO_CUT).await.expect("reap");
    assert_eq!(orphans, vec![a.clone()], "only A lost their last socket");
    assert_eq!(conns(&fx, &a).await, 0);
    assert_eq!(conns(&fx, &b).await, 1);
    assert_eq!(conns(&fx, &c).await, 1);
    assert_eq!(
        fx.store
            .reap_dead_nodes(now + 1, NO_CUT)
            .await
            .expect("reap"),
        Vec::<Phone>::new(),
        "a dead node is claimed once"
    );
    assert_due_at(&fx, now, &Timer::Presence(a)).await;
}

/// Concurrent reaps share out the dead nodes: each orphan is returned exactly once.
pub async fn concurrent_reaps_claim_each_node_once(fx: Fixture) {
    let phones = users(&fx, 1, 6).await;
    let ttl = fx.lifetimes.node_ttl_ms;
    for (i, p) in phones.iter().enumerate() {
        let node = NodeId::random();
        fx.store
            .heartbeat(&node, fx.now() + ttl)
            .await
            .expect("heartbeat");
        fx.store
            .add_conn(p, &conn(&node, u64::try_from(i).unwrap_or(0)))
            .await
            .expect("add_conn");
    }
    fx.advance(ttl + 1);
    let now = fx.now();
    let mut tasks = JoinSet::new();
    for _ in 0..8 {
        let store = fx.store.clone();
        tasks.spawn(async move { store.reap_dead_nodes(now, NO_CUT).await });
    }
    let mut orphans = Vec::new();
    for got in tasks.join_all().await {
        orphans.extend(got.expect("reap"));
    }
    orphans.sort();
    let mut expected = phones.clone();
    expected.sort();
    assert_eq!(orphans, expected, "every orphan exactly once");
}

/// `remove_node` forgets a node and its sockets at once, like a reap.
pub async fn remove_node_forgets_its_sockets(fx: Fixture) {
    let [a, b] = [fx.phone(1), fx.phone(2)];
    for p in [&a, &b] {
        register(&fx, p).await;
    }
    let (n1, n2) = (NodeId::random(), NodeId::random());
    let ttl = fx.lifetimes.node_ttl_ms;
    fx.store
        .heartbeat(&n1, fx.now() + ttl)
        .await
        .expect("heartbeat");
    fx.store
        .heartbeat(&n2, fx.now() + 10 * ttl)
        .await
        .expect("heartbeat");
    fx.store
        .add_conn(&a, &conn(&n1, 1))
        .await
        .expect("add_conn");
    fx.store
        .add_conn(&b, &conn(&n1, 2))
        .await
        .expect("add_conn");
    fx.store
        .add_conn(&b, &conn(&n2, 1))
        .await
        .expect("add_conn");
    let removed = fx
        .store
        .remove_node(&n1, fx.now(), NO_CUT)
        .await
        .expect("remove_node");
    assert_eq!(removed, vec![a.clone()]);
    assert_eq!(conns(&fx, &a).await, 0);
    assert_eq!(conns(&fx, &b).await, 1);
    assert_eq!(
        fx.store
            .remove_node(&n1, fx.now(), NO_CUT)
            .await
            .expect("remove_node"),
        Vec::<Phone>::new()
    );
    fx.advance(ttl + 1);
    assert_eq!(
        fx.store
            .reap_dead_nodes(fx.now(), NO_CUT)
            .await
            .expect("reap"),
        Vec::<Phone>::new(),
        "a removed node is not reaped again"
    );
}

/// A working store answers `ping`.
pub async fn ping_answers(fx: Fixture) {
    fx.store.ping().await.expect("ping");
}
