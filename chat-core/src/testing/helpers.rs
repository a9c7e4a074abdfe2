//! What the suite functions share: making sessions, rooms, requests and messages, leasing timers.

use std::collections::BTreeSet;

use crate::store::{Appended, DueTimer, NewRoom, RequestOutcome, Timer};
use crate::types::{
    ChatRequest, ConnKey, Message, Millis, Names, NewMessage, NodeId, Phone, Room, RoomId, Session,
    Token,
};

use super::Fixture;

/// Creates a session for `phone` now, online for `presence_ms`.
pub(super) async fn register(fx: &Fixture, phone: &Phone) -> Session {
    let session = new_session(fx, phone);
    let registered = fx
        .store
        .create_session(session.clone(), None, fx.now() + fx.lifetimes.presence_ms)
        .await
        .expect("create_session");
    assert!(!registered.refreshed, "a new session is not a refresh");
    assert!(registered.came_online, "a new session comes online");
    assert_eq!(registered.session, session);
    session
}

pub(super) fn new_session(fx: &Fixture, phone: &Phone) -> Session {
    Session {
        phone: phone.clone(),
        name: Some("Test".into()),
        token_digest: Token::generate().expect("a token").digest(),
        created_at: fx.now(),
    }
}

/// Registers `n` users numbered from `first`.
pub(super) async fn users(fx: &Fixture, first: u32, n: u32) -> Vec<Phone> {
    let mut phones = Vec::new();
    for i in first..first + n {
        let p = fx.phone(i);
        register(fx, &p).await;
        phones.push(p);
    }
    phones
}

pub(super) fn new_room(fx: &Fixture) -> NewRoom {
    NewRoom {
        id: RoomId::generate(),
        created_at: fx.now(),
        expires_at: fx.now() + fx.lifetimes.room_ttl_ms,
        names: Names::new(),
    }
}

/// Passed as `grace_until` where the presence grace is not what a test is about.
pub(super) const NO_CUT: Millis = Millis::MAX / 2;

pub(super) fn request(fx: &Fixture, from: &Phone, to: &Phone) -> ChatRequest {
    ChatRequest {
        from: from.clone(),
        to: to.clone(),
        created_at: fx.now(),
        expires_at: fx.now() + fx.lifetimes.request_ttl_ms,
    }
}

/// A room made the ordinary way: `a` asks, `b` accepts.
pub(super) async fn room_between(fx: &Fixture, a: &Phone, b: &Phone) -> Room {
    let sent = fx
        .store
        .send_request(request(fx, a, b), new_room(fx))
        .await
        .expect("send_request");
    assert_eq!(sent, RequestOutcome::Sent);
    fx.store
        .accept_request(a, b, new_room(fx), fx.now())
        .await
        .expect("accept_request")
        .expect("the request was pending")
}

pub(super) fn message(
    fx: &Fixture,
    sender: &Phone,
    text: &str,
    client_id: Option<&str>,
) -> NewMessage {
    NewMessage {
        sender: sender.clone(),
        message: text.into(),
        timestamp: fx.now(),
        client_id: client_id.map(Into::into),
    }
}

pub(super) async fn append(fx: &Fixture, room: &Room, m: NewMessage) -> Appended {
    fx.store
        .append_message(&room.id, m, 10_000)
        .await
        .expect("append_message")
}

pub(super) async fn append_new(fx: &Fixture, room: &Room, m: NewMessage) -> Message {
    match append(fx, room, m).await {
        Appended::New(m) => m,
        Appended::Duplicate(m) => panic!("unexpected duplicate {m:?}"),
    }
}

/// Leases every timer due at `at` and returns them.
pub(super) async fn lease(fx: &Fixture, at: Millis) -> Vec<DueTimer> {
    fx.store
        .due_timers(at, at + fx.lifetimes.lease_ms, 1000)
        .await
        .expect("due_timers")
}

/// Whether `timer` is due at `at` (leasing whatever is due then).
pub(super) async fn is_due(fx: &Fixture, at: Millis, timer: &Timer) -> bool {
    lease(fx, at).await.iter().any(|d| &d.timer == timer)
}

/// Asserts that `timer` comes due exactly at `at`: not a millisecond before.
pub(super) async fn assert_due_at(fx: &Fixture, at: Millis, timer: &Timer) {
    assert!(
        !is_due(fx, at - 1, timer).await,
        "{timer} must not be due before {at}"
    );
    assert!(is_due(fx, at, timer).await, "{timer} must be due at {at}");
}

pub(super) fn conn(node: &NodeId, id: u64) -> ConnKey {
    ConnKey {
        node: node.clone(),
        id,
    }
}

pub(super) async fn conns(fx: &Fixture, phone: &Phone) -> u32 {
    fx.store
        .presence(phone)
        .await
        .expect("presence")
        .expect("a session")
        .conns
}

pub(super) fn room_ids(rooms: &[Room]) -> BTreeSet<RoomId> {
    rooms.iter().map(|r| r.id).collect()
}

pub(super) fn set<T: Ord + Clone>(items: &[T]) -> BTreeSet<T> {
    items.iter().cloned().collect()
}

pub(super) async fn walk_online(fx: &Fixture, limit: usize) -> Vec<Phone> {
    let mut all = Vec::new();
    let mut cursor = None;
    for _ in 0..1000 {
        let page = fx
            .store
            .online_page(cursor, limit, fx.now())
            .await
            .expect("online_page");
        assert!(page.phones.len() <= limit, "a page holds at most `limit`");
        all.extend(page.phones);
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return all,
        }
    }
    panic!("the online walk did not end within 1000 pages");
}
