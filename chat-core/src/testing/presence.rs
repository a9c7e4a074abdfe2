//! Sockets and presence: `add_conn`, `remove_conn`, `presence`, `go_offline`, `online_page`.

use std::collections::BTreeSet;

use crate::error::Error;
use crate::store::Timer;
use crate::types::{Millis, NodeId, Phone};

use super::Fixture;
use super::helpers::*;

/// Sockets keep a user online and count; the first one after going offline brings them back.
pub async fn connections_hold_presence(fx: Fixture) {
    let a = fx.phone(1);
    register(&fx, &a).await;
    let node = NodeId::random();
    fx.advance(fx.lifetimes.presence_ms);
    let now = fx.now();
    assert!(
        fx.store
            .go_offline(&a, now, now + fx.lifetimes.session_idle_ms)
            .await
            .expect("go_offline")
    );
    let presence = fx
        .store
        .presence(&a)
        .await
        .expect("presence")
        .expect("some");
    assert_eq!(presence.offline_since, Some(now));
    assert!(!presence.online_at(now));

    assert!(
        fx.store
            .add_conn(&a, &conn(&node, 1))
            .await
            .expect("add_conn"),
        "the first socket of an offline user brings them online"
    );
    assert!(
        !fx.store
            .add_conn(&a, &conn(&node, 2))
            .await
            .expect("add_conn")
    );
    let presence = fx
        .store
        .presence(&a)
        .await
        .expect("presence")
        .expect("some");
    assert_eq!(presence.conns, 2);
    assert_eq!(presence.offline_since, None);
    assert!(presence.online_at(now));

    fx.store
        .remove_conn(&a, &conn(&node, 1), now, NO_CUT)
        .await
        .expect("remove_conn");
    assert_eq!(conns(&fx, &a).await, 1);
    assert!(
        !fx.store
            .go_offline(&a, now, now + fx.lifetimes.session_idle_ms)
            .await
            .expect("go_offline"),
        "a socket holds the user online"
    );
    // Unknown sockets are ignored.
    fx.store
        .remove_conn(&a, &conn(&node, 99), now, NO_CUT)
        .await
        .expect("remove_conn of an unknown socket");
    fx.store
        .remove_conn(&a, &conn(&NodeId::random(), 1), now, NO_CUT)
        .await
        .expect("remove_conn of an unknown node");
    assert_eq!(conns(&fx, &a).await, 1);
    fx.store
        .remove_conn(&a, &conn(&node, 2), now, NO_CUT)
        .await
        .expect("remove_conn");
    assert_eq!(conns(&fx, &a).await, 0);
    assert!(
        fx.store
            .go_offline(&a, now, now + fx.lifetimes.session_idle_ms)
            .await
            .expect("go_offline")
    );
}

/// Removing the last socket schedules `Timer::Presence` at `max(http_until, now)`.
pub async fn remove_conn_schedules_presence_timer(fx: Fixture) {
    let node = NodeId::random();
    // Window still open: the timer stays at its end, not at `now`.
    let a = fx.phone(1);
    register(&fx, &a).await;
    let a_until = fx.now() + fx.lifetimes.presence_ms;
    fx.store
        .add_conn(&a, &conn(&node, 1))
        .await
        .expect("add_conn");
    fx.advance(10);
    fx.store
        .remove_conn(&a, &conn(&node, 1), fx.now(), NO_CUT)
        .await
        .expect("remove_conn");
    assert_due_at(&fx, a_until, &Timer::Presence(a.clone())).await;

    // Window over: the timer moves to `now`.
    let b = fx.phone(2);
    register(&fx, &b).await;
    fx.store
        .add_conn(&b, &conn(&node, 2))
        .await
        .expect("add_conn");
    fx.advance(fx.lifetimes.presence_ms + 5_000);
    let now = fx.now();
    // Take (and finish) the timer of the window, as a tick would have.
    for due in lease(&fx, now - 1).await {
        fx.store.finish_timer(&due).await.expect("finish_timer");
    }
    fx.store
        .remove_conn(&b, &conn(&node, 2), now, NO_CUT)
        .await
        .expect("remove_conn");
    assert_due_at(&fx, now, &Timer::Presence(b)).await;
}

/// The last socket closing cuts the HTTP window to `grace_until` (never lengthens it) and moves
/// the presence timer there; a socket that is not the last changes nothing.
pub async fn last_socket_cuts_the_http_window_to_the_grace(fx: Fixture) {
    let node = NodeId::random();
    let a = fx.phone(1);
    register(&fx, &a).await;
    let window_end = fx.now() + fx.lifetimes.presence_ms;
    for id in [1, 2] {
        fx.store
            .add_conn(&a, &conn(&node, id))
            .await
            .expect("add_conn");
    }
    fx.advance(10);
    let now = fx.now();
    let grace = now + 5_000;
    fx.store
        .remove_conn(&a, &conn(&node, 1), now, grace)
        .await
        .expect("remove_conn");
    let p = fx
        .store
        .presence(&a)
        .await
        .expect("presence")
        .expect("some");
    assert_eq!(p.http_until, window_end, "not the last socket: no cut");
    fx.store
        .remove_conn(&a, &conn(&node, 2), now, grace)
        .await
        .expect("remove_conn");
    let p = fx
        .store
        .presence(&a)
        .await
        .expect("presence")
        .expect("some");
    assert_eq!(p.http_until, grace, "the last socket: cut to the grace");
    assert!(p.online_at(grace - 1) && !p.online_at(grace));
    assert_due_at(&fx, grace, &Timer::Presence(a.clone())).await;

    // A grace later than the window does not lengthen it.
    let b = fx.phone(2);
    register(&fx, &b).await;
    let b_end = fx.now() + fx.lifetimes.presence_ms;
    fx.store
        .add_conn(&b, &conn(&node, 3))
        .await
        .expect("add_conn");
    fx.store
        .remove_conn(&b, &conn(&node, 3), fx.now(), b_end + 60_000)
        .await
        .expect("remove_conn");
    let p = fx
        .store
        .presence(&b)
        .await
        .expect("presence")
        .expect("some");
    assert_eq!(p.http_until, b_end);
}

/// A dead node's users left without a socket get the same cut, from the reap.
pub async fn a_dead_node_cuts_its_users_windows_to_the_grace(fx: Fixture) {
    let dead = NodeId::random();
    let a = fx.phone(1);
    register(&fx, &a).await;
    fx.store
        .heartbeat(&dead, fx.now() + 1_000)
        .await
        .expect("heartbeat");
    fx.store
        .add_conn(&a, &conn(&dead, 1))
        .await
        .expect("add_conn");
    fx.advance(2_000);
    let now = fx.now();
    let orphans = fx
        .store
        .reap_dead_nodes(now, now + 5_000)
        .await
        .expect("reap");
    assert_eq!(orphans, vec![a.clone()]);
    let p = fx
        .store
        .presence(&a)
        .await
        .expect("presence")
        .expect("some");
    assert_eq!((p.conns, p.http_until), (0, now + 5_000));
}

/// `go_offline` acts only with no socket, the window over, and the user not offline already.
pub async fn go_offline_only_when_nothing_holds_the_user(fx: Fixture) {
    let a = fx.phone(1);
    register(&fx, &a).await;
    let until = fx.now() + fx.lifetimes.presence_ms;
    let end = |at: Millis| at + fx.lifetimes.session_idle_ms;
    assert!(
        !fx.store
            .go_offline(&a, until - 1, end(until - 1))
            .await
            .expect("go_offline"),
        "the HTTP window is still open"
    );
    let node = NodeId::random();
    fx.store
        .add_conn(&a, &conn(&node, 1))
        .await
        .expect("add_conn");
    fx.clock.set(until);
    assert!(
        !fx.store
            .go_offline(&a, until, end(until))
            .await
            .expect("go_offline"),
        "a socket holds the user online"
    );
    fx.store
        .remove_conn(&a, &conn(&node, 1), until, NO_CUT)
        .await
        .expect("remove_conn");
    assert!(
        fx.store
            .go_offline(&a, until, end(until))
            .await
            .expect("go_offline"),
        "offline once the window ends (at http_until exactly)"
    );
    assert!(
        !fx.store
            .go_offline(&a, until + 1, end(until + 1))
            .await
            .expect("go_offline"),
        "already offline"
    );
    let presence = fx
        .store
        .presence(&a)
        .await
        .expect("presence")
        .expect("some");
    assert_eq!(presence.offline_since, Some(until));
    assert!(
        !fx.store
            .go_offline(&fx.phone(2), until, end(until))
            .await
            .expect("go_offline of an unknown user")
    );
}

/// Going offline schedules `Timer::SessionEnd` at the given time.
pub async fn go_offline_schedules_session_end(fx: Fixture) {
    let a = fx.phone(1);
    register(&fx, &a).await;
    fx.advance(fx.lifetimes.presence_ms);
    let now = fx.now();
    let end_at = now + fx.lifetimes.session_idle_ms;
    assert!(
        fx.store
            .go_offline(&a, now, end_at)
            .await
            .expect("go_offline")
    );
    assert_due_at(&fx, end_at, &Timer::SessionEnd(a)).await;
}

/// Walking `online_page` with a small limit returns everyone online, and nobody offline.
pub async fn online_page_walks_everyone(fx: Fixture) {
    let early = users(&fx, 100, 4).await;
    let (gone1, gone2, lapsed, on_socket) = (&early[0], &early[1], &early[2], &early[3]);
    let node = NodeId::random();
    fx.store
        .add_conn(on_socket, &conn(&node, 1))
        .await
        .expect("add_conn");
    fx.advance(fx.lifetimes.presence_ms);
    let now = fx.now();
    for p in [gone1, gone2] {
        assert!(
            fx.store
                .go_offline(p, now, now + fx.lifetimes.session_idle_ms)
                .await
                .expect("go_offline")
        );
    }
    let online = users(&fx, 1, 7).await;
    let mut expected = set(&online);
    expected.insert(on_socket.clone());

    for limit in [1, 2, 3, 1000] {
        let walked: BTreeSet<Phone> = walk_online(&fx, limit).await.into_iter().collect();
        assert!(
            walked.is_superset(&expected),
            "limit {limit}: missing {:?}",
            expected.difference(&walked).collect::<Vec<_>>()
        );
        for p in [gone1, gone2, lapsed] {
            assert!(
                !walked.contains(p),
                "limit {limit}: {p} is offline but listed"
            );
        }
    }
}

/// A cursor this store did not give is `BadRequest`.
pub async fn online_page_rejects_foreign_cursor(fx: Fixture) {
    users(&fx, 1, 3).await;
    for cursor in ["nonsense", "", "0", "%%%"] {
        let got = fx
            .store
            .online_page(Some(cursor.into()), 10, fx.now())
            .await;
        assert!(
            matches!(got, Err(Error::BadRequest(_))),
            "cursor {cursor:?} gave {got:?}"
        );
    }
}
