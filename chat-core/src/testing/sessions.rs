//! Sessions, tickets and names: `create_session`, `session`, `touch`, tickets, `names`, `end_session`.

use std::sync::Arc;

use tokio::task::JoinSet;

use crate::error::Error;
use crate::store::{RequestOutcome, Timer};
use crate::types::{Names, NodeId, Session, Token};

use super::Fixture;
use super::helpers::*;

/// A phone has one live session: a second registration without its token is `PhoneInUse`.
pub async fn create_session_then_phone_in_use(fx: Fixture) {
    let a = fx.phone(1);
    let first = register(&fx, &a).await;
    assert_eq!(
        fx.store
            .session(&first.token_digest)
            .await
            .expect("session"),
        Some(first.clone())
    );
    let presence = fx
        .store
        .presence(&a)
        .await
        .expect("presence")
        .expect("a new session has presence");
    assert_eq!(presence.conns, 0);
    assert_eq!(presence.http_until, fx.now() + fx.lifetimes.presence_ms);
    assert_eq!(presence.offline_since, None);
    assert!(presence.online_at(fx.now()));

    let second = new_session(&fx, &a);
    let refused = fx
        .store
        .create_session(second.clone(), None, fx.now() + fx.lifetimes.presence_ms)
        .await;
    assert_eq!(refused, Err(Error::PhoneInUse));
    assert_eq!(
        fx.store
            .session(&second.token_digest)
            .await
            .expect("session"),
        None,
        "a refused registration leaves no session behind"
    );
    // Another phone is unaffected.
    register(&fx, &fx.phone(2)).await;
}

/// A registration carrying the live session's token refreshes it: same session, longer window;
/// any other token is `PhoneInUse`.
pub async fn create_session_refresh_needs_the_token(fx: Fixture) {
    let a = fx.phone(1);
    let first = register(&fx, &a).await;
    let stranger = Token::generate().expect("token").digest();
    let refused = fx
        .store
        .create_session(
            new_session(&fx, &a),
            Some(stranger),
            fx.now() + fx.lifetimes.presence_ms,
        )
        .await;
    assert_eq!(refused, Err(Error::PhoneInUse));

    fx.advance(1_000);
    let later = fx.now() + fx.lifetimes.presence_ms;
    let refreshed = fx
        .store
        .create_session(new_session(&fx, &a), Some(first.token_digest), later)
        .await
        .expect("refresh");
    assert!(refreshed.refreshed);
    assert!(!refreshed.came_online, "the user was online already");
    assert_eq!(
        refreshed.session, first,
        "a refresh keeps the session and its token"
    );
    let presence = fx
        .store
        .presence(&a)
        .await
        .expect("presence")
        .expect("some");
    assert_eq!(presence.http_until, later);

    // After going offline, a refresh brings the user back online.
    fx.clock.set(later);
    assert!(
        fx.store
            .go_offline(&a, fx.now(), fx.now() + fx.lifetimes.session_idle_ms)
            .await
            .expect("go_offline")
    );
    let back = fx
        .store
        .create_session(
            new_session(&fx, &a),
            Some(first.token_digest),
            fx.now() + fx.lifetimes.presence_ms,
        )
        .await
        .expect("refresh");
    assert!(back.refreshed);
    assert!(back.came_online);
    let presence = fx
        .store
        .presence(&a)
        .await
        .expect("presence")
        .expect("some");
    assert_eq!(presence.offline_since, None);
    assert!(presence.online_at(fx.now()));
}

/// `session` and `touch` know only the tokens of live sessions.
pub async fn session_and_touch_find_only_live_tokens(fx: Fixture) {
    let a = register(&fx, &fx.phone(1)).await;
    let unknown = Token::generate().expect("token").digest();
    assert_eq!(fx.store.session(&unknown).await.expect("session"), None);
    assert_eq!(
        fx.store
            .touch(&unknown, fx.now() + fx.lifetimes.presence_ms)
            .await
            .expect("touch"),
        None
    );
    let touched = fx
        .store
        .touch(&a.token_digest, fx.now() + fx.lifetimes.presence_ms)
        .await
        .expect("touch")
        .expect("a live token");
    assert_eq!(touched.session, a);
    assert!(!touched.came_online);
    assert_eq!(
        fx.store.presence(&fx.phone(9)).await.expect("presence"),
        None
    );
}

/// A ticket stands for its session once, until it expires; unknown tickets are nothing.
pub async fn tickets_work_once_until_they_expire(fx: Fixture) {
    let a = register(&fx, &fx.phone(1)).await;
    let ttl = 30_000;
    let t = Token::generate().expect("ticket").digest();
    let now = fx.now();
    fx.store
        .create_ticket(&t, &a.token_digest, now, now + ttl)
        .await
        .expect("create_ticket");
    let unknown = Token::generate().expect("ticket").digest();
    assert_eq!(
        fx.store.take_ticket(&unknown, now).await.expect("take"),
        None
    );
    // A session token is not a ticket.
    assert_eq!(
        fx.store
            .take_ticket(&a.token_digest, now)
            .await
            .expect("take"),
        None
    );
    fx.advance(ttl - 1);
    assert_eq!(
        fx.store.take_ticket(&t, fx.now()).await.expect("take"),
        Some(a.clone())
    );
    assert_eq!(
        fx.store.take_ticket(&t, fx.now()).await.expect("take"),
        None,
        "a ticket works once"
    );
    // Expired: refused at its deadline, and taken (gone) by the refusal too.
    let late = Token::generate().expect("ticket").digest();
    let now = fx.now();
    fx.store
        .create_ticket(&late, &a.token_digest, now, now + ttl)
        .await
        .expect("create_ticket");
    fx.advance(ttl);
    assert_eq!(
        fx.store.take_ticket(&late, fx.now()).await.expect("take"),
        None
    );
    // Creating more frees the expired ones and keeps the live ones.
    let fresh = Token::generate().expect("ticket").digest();
    let now = fx.now();
    fx.store
        .create_ticket(&fresh, &a.token_digest, now, now + ttl)
        .await
        .expect("create_ticket");
    assert_eq!(
        fx.store.take_ticket(&fresh, now).await.expect("take"),
        Some(a)
    );
}

/// A ticket of a session that ended opens nothing, also for the phone's next session.
pub async fn tickets_end_with_their_session(fx: Fixture) {
    let a = fx.phone(1);
    let first = register(&fx, &a).await;
    let t = Token::generate().expect("ticket").digest();
    let now = fx.now();
    fx.store
        .create_ticket(&t, &first.token_digest, now, now + 30_000)
        .await
        .expect("create_ticket");
    fx.advance(fx.lifetimes.presence_ms);
    let now = fx.now();
    assert!(fx.store.go_offline(&a, now, now).await.expect("go_offline"));
    fx.store
        .end_session(&a, now)
        .await
        .expect("end_session")
        .expect("due");
    let second = register(&fx, &a).await;
    assert_ne!(second.token_digest, first.token_digest);
    assert_eq!(
        fx.store.take_ticket(&t, fx.now()).await.expect("take"),
        None
    );
}

/// Of many concurrent takes of one ticket (as from several nodes), exactly one gets the session.
pub async fn concurrent_takes_of_a_ticket_one_wins(fx: Fixture) {
    let a = register(&fx, &fx.phone(1)).await;
    let t = Token::generate().expect("ticket").digest();
    let now = fx.now();
    fx.store
        .create_ticket(&t, &a.token_digest, now, now + 30_000)
        .await
        .expect("create_ticket");
    let mut takes = JoinSet::new();
    for _ in 0..8 {
        let (store, t) = (Arc::clone(&fx.store), t);
        takes.spawn(async move { store.take_ticket(&t, now).await.expect("take") });
    }
    let mut won = 0;
    while let Some(taken) = takes.join_next().await {
        if taken.expect("take task").is_some() {
            won += 1;
        }
    }
    assert_eq!(won, 1, "exactly one take gets the session");
}

/// `touch` extends the HTTP window and never shortens it; it brings an offline user back.
pub async fn touch_never_shortens_the_window(fx: Fixture) {
    let a = fx.phone(1);
    let s = register(&fx, &a).await;
    let t0 = fx.now();
    let p = fx.lifetimes.presence_ms;
    let http_until = |fx: &Fixture| {
        let store = fx.store.clone();
        let a = a.clone();
        async move {
            store
                .presence(&a)
                .await
                .expect("presence")
                .expect("some")
                .http_until
        }
    };

    fx.advance(10);
    let t = fx
        .store
        .touch(&s.token_digest, t0 + 2 * p)
        .await
        .expect("touch");
    assert!(t.is_some_and(|t| !t.came_online));
    assert_eq!(http_until(&fx).await, t0 + 2 * p);

    let t = fx
        .store
        .touch(&s.token_digest, t0 + p / 2)
        .await
        .expect("touch");
    assert!(t.is_some());
    assert_eq!(http_until(&fx).await, t0 + 2 * p, "touch never shortens");

    fx.clock.set(t0 + 2 * p);
    assert!(
        fx.store
            .go_offline(&a, fx.now(), fx.now() + fx.lifetimes.session_idle_ms)
            .await
            .expect("go_offline")
    );
    let t = fx
        .store
        .touch(&s.token_digest, fx.now() + p)
        .await
        .expect("touch")
        .expect("live");
    assert!(t.came_online, "touch brings an offline user back online");
    let presence = fx
        .store
        .presence(&a)
        .await
        .expect("presence")
        .expect("some");
    assert_eq!(presence.offline_since, None);
    assert!(presence.online_at(fx.now()));
}

/// `touch` moves `Timer::Presence` to the end of the (longest) window.
pub async fn touch_reschedules_presence_timer(fx: Fixture) {
    let a = fx.phone(1);
    let s = register(&fx, &a).await;
    let t0 = fx.now();
    let p = fx.lifetimes.presence_ms;
    fx.store
        .touch(&s.token_digest, t0 + 2 * p)
        .await
        .expect("touch");
    // An attempt to shorten leaves the timer where the window ends.
    fx.store
        .touch(&s.token_digest, t0 + p)
        .await
        .expect("touch");
    assert_due_at(&fx, t0 + 2 * p, &Timer::Presence(a)).await;
}

/// `names` answers the names of live sessions that have one, and nothing for the others.
pub async fn names_of_live_sessions(fx: Fixture) {
    let [a, b, c] = [fx.phone(1), fx.phone(2), fx.phone(3)];
    let named = register(&fx, &a).await;
    let unnamed = Session {
        name: None,
        ..new_session(&fx, &b)
    };
    fx.store
        .create_session(unnamed, None, fx.now() + fx.lifetimes.presence_ms)
        .await
        .expect("create_session");
    assert_eq!(
        fx.store
            .names(&[a.clone(), b.clone(), c.clone()])
            .await
            .expect("names"),
        Names::from([(a.clone(), named.name.clone().expect("a name"))])
    );
    assert_eq!(fx.store.names(&[]).await.expect("names"), Names::new());
    // An ended session's name goes with it.
    fx.advance(fx.lifetimes.presence_ms);
    let now = fx.now();
    assert!(fx.store.go_offline(&a, now, now).await.expect("go_offline"));
    fx.store
        .end_session(&a, now)
        .await
        .expect("end_session")
        .expect("due");
    assert_eq!(fx.store.names(&[a]).await.expect("names"), Names::new());
}

// ---------------------------------------------------------------------- sessions ending

/// `end_session` acts only for a user with no socket, offline at or before `offline_before`.
pub async fn end_session_conditions(fx: Fixture) {
    let a = fx.phone(1);
    register(&fx, &a).await;
    let far = fx.now() + 100 * fx.lifetimes.session_idle_ms;
    assert_eq!(
        fx.store.end_session(&a, far).await.expect("end_session"),
        None,
        "never offline"
    );
    fx.advance(fx.lifetimes.presence_ms);
    let t1 = fx.now();
    assert!(
        fx.store
            .go_offline(&a, t1, t1 + fx.lifetimes.session_idle_ms)
            .await
            .expect("go_offline")
    );
    let node = NodeId::random();
    fx.store
        .add_conn(&a, &conn(&node, 1))
        .await
        .expect("add_conn");
    assert_eq!(
        fx.store.end_session(&a, far).await.expect("end_session"),
        None,
        "a socket is open"
    );
    fx.advance(10);
    let t2 = fx.now();
    fx.store
        .remove_conn(&a, &conn(&node, 1), t2, NO_CUT)
        .await
        .expect("remove_conn");
    assert!(
        fx.store
            .go_offline(&a, t2, t2 + fx.lifetimes.session_idle_ms)
            .await
            .expect("go_offline")
    );
    assert_eq!(
        fx.store.end_session(&a, t2 - 1).await.expect("end_session"),
        None,
        "offline since after offline_before"
    );
    let ended = fx
        .store
        .end_session(&a, t2)
        .await
        .expect("end_session")
        .expect("offline at offline_before exactly");
    assert_eq!(ended.session.phone, a);
    assert_eq!(
        fx.store.end_session(&a, far).await.expect("end_session"),
        None,
        "ended once"
    );
    assert_eq!(
        fx.store
            .end_session(&fx.phone(2), far)
            .await
            .expect("end_session"),
        None,
        "no session"
    );
}

/// Ending a session deletes it, its token, presence, requests both ways and rooms with their
/// history; the phone is free for a fresh session.
pub async fn end_session_deletes_everything(fx: Fixture) {
    let a = &fx.phone(1);
    // A's HTTP window is short, so A can go offline while everyone's requests are still live.
    let a_session = new_session(&fx, a);
    fx.store
        .create_session(a_session.clone(), None, fx.now() + 1)
        .await
        .expect("create_session");
    let p = users(&fx, 2, 4).await;
    let (b, c, d, e) = (&p[0], &p[1], &p[2], &p[3]);
    let ab = room_between(&fx, a, b).await;
    let ca = room_between(&fx, c, a).await;
    append_new(&fx, &ab, message(&fx, a, "hi", Some("k"))).await;
    append_new(&fx, &ca, message(&fx, c, "yo", None)).await;
    for (from, to) in [(a, d), (e, a), (b, d)] {
        fx.store
            .send_request(request(&fx, from, to), new_room(&fx))
            .await
            .expect("send_request");
    }
    fx.advance(1);
    let now = fx.now();
    assert!(
        fx.store
            .go_offline(a, now, now + fx.lifetimes.session_idle_ms)
            .await
            .expect("go_offline")
    );
    let ended = fx
        .store
        .end_session(a, now)
        .await
        .expect("end_session")
        .expect("due");
    assert_eq!(ended.session, a_session);
    assert_eq!(room_ids(&ended.rooms), room_ids(&[ab.clone(), ca.clone()]));
    assert_eq!(ended.requests.incoming, vec![e.clone()]);
    assert_eq!(ended.requests.sent, vec![d.clone()]);

    assert_eq!(
        fx.store
            .session(&a_session.token_digest)
            .await
            .expect("session"),
        None
    );
    assert_eq!(
        fx.store
            .touch(&a_session.token_digest, now + fx.lifetimes.presence_ms)
            .await
            .expect("touch"),
        None
    );
    assert_eq!(fx.store.presence(a).await.expect("presence"), None);
    for room in [&ab, &ca] {
        assert_eq!(fx.store.room(&room.id).await.expect("room"), None);
        assert_eq!(
            fx.store.history(&room.id, None, 10).await,
            Err(Error::RoomNotFound)
        );
    }
    for other in [b, c] {
        assert!(fx.store.rooms_of(other).await.expect("rooms_of").is_empty());
    }
    assert!(fx.store.rooms_of(a).await.expect("rooms_of").is_empty());
    let rd = fx.store.requests(d, now).await.expect("requests");
    assert_eq!(
        rd.incoming,
        vec![b.clone()],
        "only A's requests are dropped"
    );
    let re = fx.store.requests(e, now).await.expect("requests");
    assert!(re.sent.is_empty());
    let ra = fx.store.requests(a, now).await.expect("requests");
    assert!(ra.incoming.is_empty() && ra.sent.is_empty());
    let listed = walk_online(&fx, 1000).await;
    assert!(!listed.contains(a));

    // The phone starts fresh.
    let fresh = new_session(&fx, a);
    let registered = fx
        .store
        .create_session(fresh.clone(), None, now + fx.lifetimes.presence_ms)
        .await
        .expect("a fresh session");
    assert!(!registered.refreshed && registered.came_online);
    assert_eq!(registered.session, fresh);
    assert!(fx.store.rooms_of(a).await.expect("rooms_of").is_empty());
    assert_eq!(
        fx.store
            .send_request(request(&fx, a, b), new_room(&fx))
            .await
            .expect("send_request"),
        RequestOutcome::Sent,
        "no room is inherited"
    );
}

// ---------------------------------------------------------------------------- concurrency

/// Concurrent registrations of one phone: exactly one session is created.
pub async fn concurrent_create_session_one_wins(fx: Fixture) {
    let a = fx.phone(1);
    let mut tasks = JoinSet::new();
    for _ in 0..20 {
        let (store, s, until) = (
            fx.store.clone(),
            new_session(&fx, &a),
            fx.now() + fx.lifetimes.presence_ms,
        );
        tasks.spawn(async move { (s.clone(), store.create_session(s, None, until).await) });
    }
    let results = tasks.join_all().await;
    let winners: Vec<&Session> = results
        .iter()
        .filter_map(|(s, r)| r.as_ref().ok().map(|_| s))
        .collect();
    assert_eq!(winners.len(), 1, "exactly one registration wins");
    for (s, r) in &results {
        match r {
            Ok(reg) => assert!(!reg.refreshed && reg.session == *s),
            Err(e) => assert_eq!(e, &Error::PhoneInUse),
        }
        let found = fx.store.session(&s.token_digest).await.expect("session");
        assert_eq!(found.is_some(), std::ptr::eq(s, winners[0]));
    }
}
