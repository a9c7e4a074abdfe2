//! Blocks, decline cooldowns and the pending cap: `block`, `unblock`, `blocked`,
//! `hidden_from`, `decline_request`, `send_request_capped`.

use std::collections::BTreeSet;

use tokio::task::JoinSet;

use crate::error::Error;
use crate::store::{BlockOutcome, RequestOutcome};
use crate::types::{ConnKey, NodeId, Phone, Room};

use super::Fixture;
use super::helpers::*;

async fn block(fx: &Fixture, by: &Phone, whom: &Phone) -> BlockOutcome {
    fx.store
        .block(by, whom, 1000, fx.now())
        .await
        .expect("block")
        .expect("the blocker has a session")
}

async fn send(fx: &Fixture, from: &Phone, to: &Phone) -> crate::Result<RequestOutcome> {
    fx.store
        .send_request_capped(request(fx, from, to), new_room(fx), 1000)
        .await
}

/// Blocking lists the phone (registered or not) once; unblocking forgets it.
pub async fn block_unblock_and_list(fx: Fixture) {
    let [a, b, nobody] = [fx.phone(1), fx.phone(2), fx.phone(3)];
    for p in [&a, &b] {
        register(&fx, p).await;
    }
    assert_eq!(block(&fx, &a, &b).await, BlockOutcome::default());
    assert_eq!(block(&fx, &a, &nobody).await, BlockOutcome::default());
    block(&fx, &a, &b).await;
    let mut both = vec![b.clone(), nobody.clone()];
    both.sort();
    assert_eq!(fx.store.blocked(&a).await.expect("blocked"), both);
    assert!(fx.store.blocked(&b).await.expect("blocked").is_empty());
    fx.store.unblock(&a, &b).await.expect("unblock");
    fx.store.unblock(&a, &fx.phone(9)).await.expect("unblock");
    assert_eq!(fx.store.blocked(&a).await.expect("blocked"), vec![nobody]);
}

/// Past `max_blocked` a new block is `TooManyBlocked` (one already blocked is fine); a
/// blocker without a session stores nothing.
pub async fn block_is_capped_and_needs_a_session(fx: Fixture) {
    let a = fx.phone(1);
    register(&fx, &a).await;
    let [x, y, z] = [fx.phone(2), fx.phone(3), fx.phone(4)];
    for p in [&x, &y] {
        fx.store.block(&a, p, 2, fx.now()).await.expect("block");
    }
    assert_eq!(
        fx.store.block(&a, &z, 2, fx.now()).await,
        Err(Error::TooManyBlocked { max: 2 })
    );
    assert!(
        fx.store
            .block(&a, &x, 2, fx.now())
            .await
            .expect("block")
            .is_some()
    );
    assert_eq!(fx.store.blocked(&a).await.expect("blocked").len(), 2);
    let ghost = fx.phone(5);
    assert_eq!(
        fx.store
            .block(&ghost, &a, 2, fx.now())
            .await
            .expect("block"),
        None
    );
    assert!(fx.store.blocked(&ghost).await.expect("blocked").is_empty());
    assert_eq!(
        fx.store.hidden_from(&a).await.expect("hidden"),
        BTreeSet::from([x, y])
    );
}

/// The block step drops the request from the blocked user, removes the blocker's and deletes
/// the room they share, and says which.
pub async fn block_removes_requests_and_room(fx: Fixture) {
    let [a, b, c] = [fx.phone(1), fx.phone(2), fx.phone(3)];
    for p in [&a, &b, &c] {
        register(&fx, p).await;
    }
    assert_eq!(send(&fx, &b, &a).await, Ok(RequestOutcome::Sent));
    assert_eq!(send(&fx, &a, &c).await, Ok(RequestOutcome::Sent));
    let out = block(&fx, &a, &b).await;
    assert_eq!((out.dropped, out.cancelled, out.room), (true, false, None));
    let out = block(&fx, &a, &c).await;
    assert_eq!((out.dropped, out.cancelled, out.room), (false, true, None));
    let r = fx.store.requests(&a, fx.now()).await.expect("requests");
    assert!(r.incoming.is_empty() && r.sent.is_empty());
    fx.store.unblock(&a, &b).await.expect("unblock");
    let room: Room = room_between(&fx, &a, &b).await;
    append_new(&fx, &room, message(&fx, &a, "hi", None)).await;
    let out = block(&fx, &b, &a).await;
    assert_eq!(out.room, Some(room.clone()));
    assert!(!out.dropped && !out.cancelled);
    assert_eq!(fx.store.room(&room.id).await.expect("room"), None);
    assert!(fx.store.rooms_of(&a).await.expect("rooms_of").is_empty());
    assert!(fx.store.rooms_of(&b).await.expect("rooms_of").is_empty());
}

/// Between a blocked pair, either way: a request is `UserNotFound` (capped or not), a pending
/// one cannot be accepted.
pub async fn blocks_refuse_requests_and_accepts(fx: Fixture) {
    let [a, b] = [fx.phone(1), fx.phone(2)];
    for p in [&a, &b] {
        register(&fx, p).await;
    }
    block(&fx, &a, &b).await;
    assert_eq!(send(&fx, &b, &a).await, Err(Error::UserNotFound));
    assert_eq!(send(&fx, &a, &b).await, Err(Error::UserNotFound));
    assert_eq!(
        fx.store
            .send_request(request(&fx, &b, &a), new_room(&fx))
            .await,
        Err(Error::UserNotFound)
    );
    fx.store.unblock(&a, &b).await.expect("unblock");
    assert_eq!(send(&fx, &b, &a).await, Ok(RequestOutcome::Sent));
    // A block that lands after the request and before the accept leaves nothing to accept.
    block(&fx, &b, &a).await;
    assert_eq!(
        fx.store
            .accept_request(&b, &a, new_room(&fx), fx.now())
            .await
            .expect("accept_request"),
        None
    );
    assert!(fx.store.rooms_of(&a).await.expect("rooms_of").is_empty());
}

/// `hidden_from` names those a user blocks and those blocking them.
pub async fn hidden_from_both_directions(fx: Fixture) {
    let [a, b, c, d] = [fx.phone(1), fx.phone(2), fx.phone(3), fx.phone(4)];
    for p in [&a, &b, &c, &d] {
        register(&fx, p).await;
    }
    block(&fx, &a, &b).await;
    block(&fx, &c, &a).await;
    let hidden = fx.store.hidden_from(&a).await.expect("hidden");
    assert_eq!(hidden, BTreeSet::from([b.clone(), c.clone()]));
    assert_eq!(
        fx.store.hidden_from(&b).await.expect("hidden"),
        BTreeSet::from([a.clone()])
    );
    assert!(fx.store.hidden_from(&d).await.expect("hidden").is_empty());
    fx.store.unblock(&c, &a).await.expect("unblock");
    assert_eq!(
        fx.store.hidden_from(&a).await.expect("hidden"),
        BTreeSet::from([b])
    );
}

/// A decline of a pending request refuses the requester's next request to the decliner
/// (only) until the cooldown ends, with the whole seconds left.
pub async fn decline_request_starts_cooldown(fx: Fixture) {
    let [a, b, c] = [fx.phone(1), fx.phone(2), fx.phone(3)];
    for p in [&a, &b, &c] {
        register(&fx, p).await;
    }
    send(&fx, &a, &b).await.expect("send");
    let until = fx.now() + 10_000;
    assert!(
        fx.store
            .decline_request(&a, &b, fx.now(), until)
            .await
            .expect("decline")
    );
    assert!(
        !fx.store
            .decline_request(&a, &b, fx.now(), until)
            .await
            .expect("decline"),
        "nothing pending any more"
    );
    let r = fx.store.requests(&b, fx.now()).await.expect("requests");
    assert!(r.incoming.is_empty());
    assert_eq!(
        send(&fx, &a, &b).await,
        Err(Error::RateLimited {
            retry_after_secs: 10
        })
    );
    fx.advance(8_500);
    assert_eq!(
        send(&fx, &a, &b).await,
        Err(Error::RateLimited {
            retry_after_secs: 2
        })
    );
    assert_eq!(send(&fx, &a, &c).await, Ok(RequestOutcome::Sent));
    assert_eq!(send(&fx, &b, &a).await, Ok(RequestOutcome::Sent));
    fx.advance(1_500);
    // B's request to A is pending: A's crosses it (accepts), cooldown over or not.
    assert!(matches!(
        send(&fx, &a, &b).await,
        Ok(RequestOutcome::Accepted(_))
    ));
}

/// `send_request_capped` counts the sender's requests pending now.
pub async fn send_request_capped_counts_pending(fx: Fixture) {
    let p = users(&fx, 1, 4).await;
    let (a, b, c, d) = (&p[0], &p[1], &p[2], &p[3]);
    let capped = |to: &Phone| {
        fx.store
            .send_request_capped(request(&fx, a, to), new_room(&fx), 2)
    };
    assert_eq!(capped(b).await, Ok(RequestOutcome::Sent));
    assert_eq!(capped(c).await, Ok(RequestOutcome::Sent));
    assert_eq!(capped(d).await, Err(Error::TooManyPending { max: 2 }));
    assert_eq!(capped(b).await, Ok(RequestOutcome::AlreadyPending));
    let r = fx.store.requests(d, fx.now()).await.expect("requests");
    assert!(r.incoming.is_empty(), "nothing stored");
    // Uncapped, the same request goes.
    assert_eq!(
        fx.store
            .send_request(request(&fx, a, d), new_room(&fx))
            .await,
        Ok(RequestOutcome::Sent)
    );
    assert!(
        fx.store
            .remove_request(a, b, fx.now())
            .await
            .expect("remove")
    );
    assert!(
        fx.store
            .remove_request(a, c, fx.now())
            .await
            .expect("remove")
    );
    assert_eq!(capped(c).await, Ok(RequestOutcome::Sent));
    // Expired requests do not count (B stays online by a socket).
    let conn = ConnKey {
        node: NodeId("node-1".into()),
        id: 1,
    };
    fx.store.add_conn(b, &conn).await.expect("add_conn");
    fx.advance(fx.lifetimes.request_ttl_ms);
    assert_eq!(capped(b).await, Ok(RequestOutcome::Sent));
}

/// A session's blocks and cooldowns end with it; others' blocks of its phone do not.
pub async fn end_session_frees_blocks(fx: Fixture) {
    let a = &fx.phone(1);
    let session = new_session(&fx, a);
    fx.store
        .create_session(session, None, fx.now() + 1)
        .await
        .expect("create_session");
    let p = users(&fx, 2, 2).await;
    let (b, c) = (&p[0], &p[1]);
    block(&fx, a, b).await;
    block(&fx, c, a).await;
    send(&fx, a, c).await.expect_err("blocked");
    fx.store.unblock(c, a).await.expect("unblock");
    send(&fx, a, c).await.expect("send");
    assert!(
        fx.store
            .decline_request(a, c, fx.now(), fx.now() + 1_000_000)
            .await
            .expect("decline")
    );
    block(&fx, c, a).await;
    fx.advance(1);
    let now = fx.now();
    assert!(
        fx.store
            .go_offline(a, now, now + fx.lifetimes.session_idle_ms)
            .await
            .expect("go_offline")
    );
    fx.store
        .end_session(a, now)
        .await
        .expect("end_session")
        .expect("due");
    assert!(fx.store.blocked(a).await.expect("blocked").is_empty());
    assert_eq!(
        fx.store.hidden_from(b).await.expect("hidden"),
        BTreeSet::new()
    );
    assert_eq!(
        fx.store.hidden_from(a).await.expect("hidden"),
        BTreeSet::from([c.clone()]),
        "C's block of A is C's session's"
    );
    // A new session of A starts with no blocks and no cooldowns.
    register(&fx, a).await;
    fx.store.unblock(c, a).await.expect("unblock");
    assert_eq!(send(&fx, a, b).await, Ok(RequestOutcome::Sent));
    assert_eq!(send(&fx, a, c).await, Ok(RequestOutcome::Sent));
}

/// Blocks racing requests and accepts of the same two users never leave a request or a room.
pub async fn block_racing_accept_leaves_nothing(fx: Fixture) {
    let [a, b] = [fx.phone(1), fx.phone(2)];
    for p in [&a, &b] {
        register(&fx, p).await;
    }
    for _ in 0..10 {
        fx.store.unblock(&a, &b).await.expect("unblock");
        send(&fx, &a, &b).await.expect("send");
        let mut set = JoinSet::new();
        let (store, room, now) = (fx.store.clone(), new_room(&fx), fx.now());
        let (a1, b1) = (a.clone(), b.clone());
        set.spawn(async move { store.accept_request(&a1, &b1, room, now).await.map(|_| ()) });
        let (store, now) = (fx.store.clone(), fx.now());
        let (a1, b1) = (a.clone(), b.clone());
        set.spawn(async move { store.block(&b1, &a1, 1000, now).await.map(|_| ()) });
        let request = request(&fx, &a, &b);
        let (store, room) = (fx.store.clone(), new_room(&fx));
        set.spawn(async move {
            // Refused or stored, then removed by the block: both are fine.
            let _ = store.send_request_capped(request, room, 1000).await;
            Ok(())
        });
        while let Some(done) = set.join_next().await {
            done.expect("task").expect("store call");
        }
        // A request sent before the block is gone; one after it was refused.
        let r = fx.store.requests(&a, fx.now()).await.expect("requests");
        assert!(r.incoming.is_empty() && r.sent.is_empty(), "{r:?}");
        assert!(fx.store.rooms_of(&a).await.expect("rooms_of").is_empty());
        assert!(fx.store.rooms_of(&b).await.expect("rooms_of").is_empty());
        fx.store.unblock(&b, &a).await.expect("unblock");
    }
}
