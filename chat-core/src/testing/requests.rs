//! Chat requests: `send_request`, `accept_request`, `remove_request`, `requests`.

use tokio::task::JoinSet;

use crate::error::Error;
use crate::event::{Audience, Event};
use crate::store::{NewRoom, RequestOutcome, Timer};
use crate::types::{Names, NodeId, Phone, Room};

use super::Fixture;
use super::helpers::*;

/// A request is pending once: the same again is `AlreadyPending`; both sides list it.
pub async fn send_request_then_already_pending(fx: Fixture) {
    let [a, b] = [fx.phone(1), fx.phone(2)];
    for p in [&a, &b] {
        register(&fx, p).await;
    }
    let sent = fx
        .store
        .send_request(request(&fx, &a, &b), new_room(&fx))
        .await
        .expect("send_request");
    assert_eq!(sent, RequestOutcome::Sent);
    fx.advance(10);
    let again = fx
        .store
        .send_request(request(&fx, &a, &b), new_room(&fx))
        .await
        .expect("send_request");
    assert_eq!(again, RequestOutcome::AlreadyPending);
    let ra = fx.store.requests(&a, fx.now()).await.expect("requests");
    assert_eq!((ra.incoming, ra.sent), (vec![], vec![b.clone()]));
    let rb = fx.store.requests(&b, fx.now()).await.expect("requests");
    assert_eq!((rb.incoming, rb.sent), (vec![a.clone()], vec![]));
    assert!(fx.store.rooms_of(&a).await.expect("rooms_of").is_empty());
}

/// Sending schedules `Timer::RequestExpiry` at the request's `expires_at`.
pub async fn send_request_schedules_expiry(fx: Fixture) {
    let [a, b] = [fx.phone(1), fx.phone(2)];
    for p in [&a, &b] {
        register(&fx, p).await;
    }
    let r = request(&fx, &a, &b);
    let expires_at = r.expires_at;
    fx.store
        .send_request(r, new_room(&fx))
        .await
        .expect("send_request");
    assert_due_at(&fx, expires_at, &Timer::RequestExpiry { from: a, to: b }).await;
}

/// A request crossing a pending one accepts it: one room, members `[to, from]`.
pub async fn crossed_send_request_accepts(fx: Fixture) {
    let [a, b] = [fx.phone(1), fx.phone(2)];
    for p in [&a, &b] {
        register(&fx, p).await;
    }
    fx.store
        .send_request(request(&fx, &a, &b), new_room(&fx))
        .await
        .expect("send_request");
    fx.advance(10);
    let nr = new_room(&fx);
    let got = fx
        .store
        .send_request(request(&fx, &b, &a), nr.clone())
        .await
        .expect("send_request");
    let expected = Room {
        id: nr.id,
        members: [a.clone(), b.clone()],
        created_at: nr.created_at,
        expires_at: nr.expires_at,
    };
    assert_eq!(got, RequestOutcome::Accepted(expected.clone()));
    assert_eq!(
        fx.store.room(&nr.id).await.expect("room"),
        Some(expected.clone())
    );
    assert_eq!(
        fx.store.rooms_of(&a).await.expect("rooms_of"),
        vec![expected.clone()]
    );
    assert_eq!(
        fx.store.rooms_of(&b).await.expect("rooms_of"),
        vec![expected]
    );
    for p in [&a, &b] {
        let r = fx.store.requests(p, fx.now()).await.expect("requests");
        assert!(r.incoming.is_empty() && r.sent.is_empty(), "{p}: {r:?}");
    }
}

/// Two users who share a room cannot send each other requests: `RoomExists` with its id.
pub async fn send_request_to_room_partner_is_room_exists(fx: Fixture) {
    let [a, b] = [fx.phone(1), fx.phone(2)];
    for p in [&a, &b] {
        register(&fx, p).await;
    }
    let room = room_between(&fx, &a, &b).await;
    for (from, to) in [(&a, &b), (&b, &a)] {
        let got = fx
            .store
            .send_request(request(&fx, from, to), new_room(&fx))
            .await
            .expect("send_request");
        assert_eq!(got, RequestOutcome::RoomExists(room.id));
    }
    let r = fx.store.requests(&b, fx.now()).await.expect("requests");
    assert!(r.incoming.is_empty() && r.sent.is_empty());
}

/// A request to a phone without a session, never registered or ended, is `UserNotFound` and
/// stores nothing: the session that phone gets next inherits no request.
pub async fn send_request_to_phone_without_session_is_user_not_found(fx: Fixture) {
    let [a, b, c] = [fx.phone(1), fx.phone(2), fx.phone(3)];
    register(&fx, &a).await;
    let r = request(&fx, &a, &b);
    let expires_at = r.expires_at;
    assert_eq!(
        fx.store.send_request(r, new_room(&fx)).await,
        Err(Error::UserNotFound)
    );
    // C had a session that ended (as when it ends between the caller's check and the send).
    let c_session = new_session(&fx, &c);
    fx.store
        .create_session(c_session, None, fx.now() + 1)
        .await
        .expect("create_session");
    fx.advance(1);
    let now = fx.now();
    assert!(
        fx.store
            .go_offline(&c, now, now + fx.lifetimes.session_idle_ms)
            .await
            .expect("go_offline")
    );
    fx.store
        .end_session(&c, now)
        .await
        .expect("end_session")
        .expect("due");
    assert_eq!(
        fx.store
            .send_request(request(&fx, &a, &c), new_room(&fx))
            .await,
        Err(Error::UserNotFound)
    );

    let ra = fx.store.requests(&a, fx.now()).await.expect("requests");
    assert!(ra.incoming.is_empty() && ra.sent.is_empty(), "{ra:?}");
    assert!(
        !is_due(
            &fx,
            expires_at,
            &Timer::RequestExpiry {
                from: a.clone(),
                to: b.clone()
            }
        )
        .await,
        "no expiry timer for a request never stored"
    );
    for p in [&b, &c] {
        register(&fx, p).await;
        let r = fx.store.requests(p, fx.now()).await.expect("requests");
        assert!(r.incoming.is_empty() && r.sent.is_empty(), "{p}: {r:?}");
        assert!(fx.store.rooms_of(p).await.expect("rooms_of").is_empty());
    }
    // With a session, the same request is sent.
    assert_eq!(
        fx.store
            .send_request(request(&fx, &a, &b), new_room(&fx))
            .await
            .expect("send_request"),
        RequestOutcome::Sent
    );
}

/// A sent request is published to its target as `ChatRequest`, and a room made (by an accept,
/// or by a crossed request) to both members as `RequestAccepted` naming the other; refused and
/// repeated ones publish nothing.
pub async fn requests_and_accepts_are_published(fx: Fixture) {
    let [a, b, c] = [fx.phone(1), fx.phone(2), fx.phone(3)];
    for p in [&a, &b, &c] {
        register(&fx, p).await;
    }
    for p in [&a, &b, &c] {
        fx.bus
            .subscribe(Audience::User(p.clone()))
            .await
            .expect("subscribe");
    }
    // The names the caller gives go out with the events (only those of the two users).
    let named = |fx: &Fixture| NewRoom {
        names: Names::from([
            (a.clone(), "Asha".to_owned()),
            (c.clone(), "Cyd".to_owned()),
        ]),
        ..new_room(fx)
    };
    let ab = request(&fx, &a, &b);
    let created_at = ab.created_at;
    assert_eq!(
        fx.store.send_request(ab, named(&fx)).await,
        Ok(RequestOutcome::Sent)
    );
    assert_eq!(
        fx.store
            .send_request(request(&fx, &a, &b), new_room(&fx))
            .await,
        Ok(RequestOutcome::AlreadyPending)
    );
    let first = fx.wait_for_events(&Audience::User(b.clone()), 1).await;
    assert_eq!(
        first,
        vec![Event::ChatRequest {
            from: a.clone(),
            to: b.clone(),
            created_at,
            names: Names::from([(a.clone(), "Asha".to_owned())]),
        }]
    );
    let made = named(&fx);
    let room_ab = fx
        .store
        .accept_request(&a, &b, made, fx.now())
        .await
        .expect("accept")
        .expect("pending");
    let accepted = |chat_id, from_user: &Phone, to_user: &Phone| Event::RequestAccepted {
        chat_id,
        from_user: from_user.clone(),
        to_user: to_user.clone(),
        names: [from_user, to_user]
            .into_iter()
            .filter_map(|p| {
                let name = if *p == a {
                    "Asha"
                } else if *p == c {
                    "Cyd"
                } else {
                    return None;
                };
                Some((p.clone(), name.to_owned()))
            })
            .collect(),
    };
    assert_eq!(
        fx.wait_for_events(&Audience::User(a.clone()), 1).await,
        vec![accepted(room_ab.id, &b, &a)]
    );
    assert_eq!(
        fx.wait_for_events(&Audience::User(b.clone()), 2).await[1],
        accepted(room_ab.id, &a, &b)
    );
    // Crossed: C asks A, then A asks C, which makes the room at once.
    fx.store
        .send_request(request(&fx, &c, &a), new_room(&fx))
        .await
        .expect("send_request");
    let crossed = named(&fx);
    let crossed_id = crossed.id;
    assert!(matches!(
        fx.store.send_request(request(&fx, &a, &c), crossed).await,
        Ok(RequestOutcome::Accepted(r)) if r.id == crossed_id
    ));
    let to_a = fx.wait_for_events(&Audience::User(a.clone()), 3).await;
    assert!(
        matches!(&to_a[1], Event::ChatRequest { from, .. } if from == &c),
        "{to_a:?}"
    );
    assert_eq!(to_a[2], accepted(crossed_id, &c, &a));
    assert_eq!(
        fx.wait_for_events(&Audience::User(c.clone()), 1).await,
        vec![accepted(crossed_id, &a, &c)]
    );
    for p in [&a, &b, &c] {
        fx.bus
            .unsubscribe(Audience::User(p.clone()))
            .await
            .expect("unsubscribe");
    }
}

/// A request to a user with a session but offline (no socket, HTTP window over) is
/// `UserNotFound` and stores nothing; a socket, or a new HTTP window, makes them reachable.
pub async fn send_request_to_offline_user_is_user_not_found(fx: Fixture) {
    let [a, b] = [fx.phone(1), fx.phone(2)];
    register(&fx, &a).await;
    let b_session = register(&fx, &b).await;
    fx.advance(fx.lifetimes.presence_ms);
    // A's own window is over too; only the target's presence counts.
    assert_eq!(
        fx.store
            .send_request(request(&fx, &a, &b), new_room(&fx))
            .await,
        Err(Error::UserNotFound)
    );
    let r = fx.store.requests(&b, fx.now()).await.expect("requests");
    assert!(r.incoming.is_empty(), "nothing stored: {r:?}");
    let conn = conn(&NodeId::random(), 1);
    fx.store.add_conn(&b, &conn).await.expect("add_conn");
    assert_eq!(
        fx.store
            .send_request(request(&fx, &a, &b), new_room(&fx))
            .await,
        Ok(RequestOutcome::Sent),
        "a socket makes the user reachable"
    );
    fx.store
        .remove_conn(&b, &conn, fx.now(), NO_CUT)
        .await
        .expect("remove_conn");
    fx.store
        .touch(&b_session.token_digest, fx.now() + fx.lifetimes.presence_ms)
        .await
        .expect("touch")
        .expect("live session");
    assert_eq!(
        fx.store
            .send_request(request(&fx, &b, &a), new_room(&fx))
            .await,
        Err(Error::UserNotFound),
        "A is still offline"
    );
}

/// A request past its `expires_at` is absent for every operation, even before its timer ran.
pub async fn expired_request_counts_as_absent(fx: Fixture) {
    let [a, b, c] = [fx.phone(1), fx.phone(2), fx.phone(3)];
    let mut sessions = Vec::new();
    for p in [&a, &b, &c] {
        sessions.push(register(&fx, p).await);
    }
    fx.store
        .send_request(request(&fx, &a, &b), new_room(&fx))
        .await
        .expect("send_request");
    fx.store
        .send_request(request(&fx, &c, &a), new_room(&fx))
        .await
        .expect("send_request");
    fx.advance(fx.lifetimes.request_ttl_ms);
    let now = fx.now();
    for p in [&a, &b, &c] {
        let r = fx.store.requests(p, now).await.expect("requests");
        assert!(r.incoming.is_empty() && r.sent.is_empty(), "{p}: {r:?}");
    }
    assert_eq!(
        fx.store
            .accept_request(&a, &b, new_room(&fx), now)
            .await
            .expect("accept"),
        None
    );
    assert!(
        !fx.store
            .remove_request(&c, &a, now)
            .await
            .expect("remove_request")
    );
    // Sending again is a new request, not a duplicate; crossing an expired one is not an accept.
    // (The targets come back online first: their HTTP windows ended with the requests.)
    for s in &sessions[1..] {
        fx.store
            .touch(&s.token_digest, now + fx.lifetimes.presence_ms)
            .await
            .expect("touch")
            .expect("live session");
    }
    assert_eq!(
        fx.store
            .send_request(request(&fx, &a, &b), new_room(&fx))
            .await
            .expect("send_request"),
        RequestOutcome::Sent
    );
    let c_to_a_expired = fx
        .store
        .send_request(request(&fx, &a, &c), new_room(&fx))
        .await
        .expect("send_request");
    assert_eq!(c_to_a_expired, RequestOutcome::Sent);
    assert!(fx.store.rooms_of(&a).await.expect("rooms_of").is_empty());
}

/// Accepting makes the room `[from, to]` and consumes the request: a second accept is `None`.
pub async fn accept_request_makes_room_once(fx: Fixture) {
    let [a, b, c] = [fx.phone(1), fx.phone(2), fx.phone(3)];
    for p in [&a, &b, &c] {
        register(&fx, p).await;
    }
    fx.store
        .send_request(request(&fx, &a, &b), new_room(&fx))
        .await
        .expect("send_request");
    fx.advance(10);
    let nr = new_room(&fx);
    let room = fx
        .store
        .accept_request(&a, &b, nr.clone(), fx.now())
        .await
        .expect("accept")
        .expect("pending");
    assert_eq!(
        room,
        Room {
            id: nr.id,
            members: [a.clone(), b.clone()],
            created_at: nr.created_at,
            expires_at: nr.expires_at,
        }
    );
    for (from, to) in [(&a, &b), (&b, &a), (&c, &a)] {
        assert_eq!(
            fx.store
                .accept_request(from, to, new_room(&fx), fx.now())
                .await
                .expect("accept"),
            None,
            "{from} -> {to}"
        );
    }
    assert_eq!(
        fx.store.rooms_of(&a).await.expect("rooms_of"),
        vec![room.clone()]
    );
    assert_eq!(fx.store.rooms_of(&b).await.expect("rooms_of"), vec![room]);
    let r = fx.store.requests(&b, fx.now()).await.expect("requests");
    assert!(r.incoming.is_empty() && r.sent.is_empty());
}

/// `remove_request` says whether the request was pending, and removes it.
pub async fn remove_request_reports_pending(fx: Fixture) {
    let [a, b] = [fx.phone(1), fx.phone(2)];
    for p in [&a, &b] {
        register(&fx, p).await;
    }
    assert!(
        !fx.store
            .remove_request(&a, &b, fx.now())
            .await
            .expect("remove")
    );
    fx.store
        .send_request(request(&fx, &a, &b), new_room(&fx))
        .await
        .expect("send_request");
    assert!(
        !fx.store
            .remove_request(&b, &a, fx.now())
            .await
            .expect("remove"),
        "the other direction is not pending"
    );
    assert!(
        fx.store
            .remove_request(&a, &b, fx.now())
            .await
            .expect("remove")
    );
    assert!(
        !fx.store
            .remove_request(&a, &b, fx.now())
            .await
            .expect("remove")
    );
    let r = fx.store.requests(&b, fx.now()).await.expect("requests");
    assert!(r.incoming.is_empty());
    assert_eq!(
        fx.store
            .send_request(request(&fx, &a, &b), new_room(&fx))
            .await
            .expect("send_request"),
        RequestOutcome::Sent
    );
}

/// `requests` lists incoming and sent requests separately.
pub async fn requests_lists_both_directions(fx: Fixture) {
    let p = users(&fx, 1, 5).await;
    let (a, b, c, d, e) = (&p[0], &p[1], &p[2], &p[3], &p[4]);
    for (from, to) in [(a, b), (a, c), (d, a), (e, b)] {
        fx.store
            .send_request(request(&fx, from, to), new_room(&fx))
            .await
            .expect("send_request");
    }
    let r = fx.store.requests(a, fx.now()).await.expect("requests");
    assert_eq!(r.incoming, vec![d.clone()]);
    assert_eq!(set(&r.sent), set(&[b.clone(), c.clone()]));
    let r = fx.store.requests(b, fx.now()).await.expect("requests");
    assert_eq!(set(&r.incoming), set(&[a.clone(), e.clone()]));
    assert!(r.sent.is_empty());
}

// ---------------------------------------------------------------------------- concurrency

/// Twenty concurrent accepts of one request make exactly one room.
pub async fn accept_race_makes_one_room(fx: Fixture) {
    let [a, b] = [fx.phone(1), fx.phone(2)];
    for p in [&a, &b] {
        register(&fx, p).await;
    }
    fx.store
        .send_request(request(&fx, &a, &b), new_room(&fx))
        .await
        .expect("send_request");
    let mut tasks = JoinSet::new();
    for _ in 0..20 {
        let (store, a, b, nr, now) = (
            fx.store.clone(),
            a.clone(),
            b.clone(),
            new_room(&fx),
            fx.now(),
        );
        tasks.spawn(async move { store.accept_request(&a, &b, nr, now).await });
    }
    let rooms: Vec<Room> = tasks
        .join_all()
        .await
        .into_iter()
        .filter_map(|r| r.expect("accept_request"))
        .collect();
    assert_eq!(rooms.len(), 1, "exactly one accept wins: {rooms:?}");
    assert_eq!(fx.store.rooms_of(&a).await.expect("rooms_of"), rooms);
    assert_eq!(fx.store.rooms_of(&b).await.expect("rooms_of"), rooms);
}

/// Crossed requests sent at the same time make exactly one room.
pub async fn crossed_send_race_makes_one_room(fx: Fixture) {
    let phones = users(&fx, 1, 20).await;
    let mut tasks = JoinSet::new();
    for pair in phones.chunks(2) {
        for (from, to) in [(&pair[0], &pair[1]), (&pair[1], &pair[0])] {
            let (store, r, nr) = (fx.store.clone(), request(&fx, from, to), new_room(&fx));
            tasks.spawn(async move { store.send_request(r, nr).await });
        }
    }
    let outcomes: Vec<RequestOutcome> = tasks
        .join_all()
        .await
        .into_iter()
        .map(|r| r.expect("send_request"))
        .collect();
    let accepted = outcomes
        .iter()
        .filter(|o| matches!(o, RequestOutcome::Accepted(_)))
        .count();
    let sent = outcomes
        .iter()
        .filter(|o| **o == RequestOutcome::Sent)
        .count();
    assert_eq!((accepted, sent), (10, 10), "{outcomes:?}");
    for p in &phones {
        assert_eq!(
            fx.store.rooms_of(p).await.expect("rooms_of").len(),
            1,
            "{p}"
        );
    }

    // Many sends both ways between one pair: still one room.
    let [x, y] = [fx.phone(900), fx.phone(901)];
    for p in [&x, &y] {
        register(&fx, p).await;
    }
    let mut tasks = JoinSet::new();
    for i in 0..10 {
        let (from, to) = if i % 2 == 0 { (&x, &y) } else { (&y, &x) };
        let (store, r, nr) = (fx.store.clone(), request(&fx, from, to), new_room(&fx));
        tasks.spawn(async move { store.send_request(r, nr).await });
    }
    let outcomes: Vec<RequestOutcome> = tasks
        .join_all()
        .await
        .into_iter()
        .map(|r| r.expect("send_request"))
        .collect();
    let rooms: Vec<&Room> = outcomes
        .iter()
        .filter_map(|o| match o {
            RequestOutcome::Accepted(r) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(rooms.len(), 1, "{outcomes:?}");
    assert_eq!(
        fx.store.rooms_of(&x).await.expect("rooms_of"),
        vec![rooms[0].clone()]
    );
}
