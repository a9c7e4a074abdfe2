//! What the service does when the store fails: the caller gets `Error::StoreUnavailable`, and
//! nothing is left half-done: no event announces a change the store refused, no counter counts
//! it, and a change the store did make is not reported as failed. Mocks (feature `mocks`) play
//! the store and the bus; a bus with no expectation for `publish` fails the test if called.

#![allow(clippy::unwrap_used)] // helpers too (clippy.toml covers #[test] fns only)

use std::sync::Arc;
use std::sync::atomic::Ordering;

use chat_core::store::{
    DueTimer, MockStore, PresenceState, RequestOutcome, SessionCreated, Timer, Touched,
};
use chat_core::{
    ChatService, Config, Error, ManualClock, MockEventBus, Names, NodeId, Outgoing, Phone,
    RequestSent, Room, RoomId, Session, Token,
};
use mockall::predicate::eq;

const NOW: u64 = 1_800_000_000_000;

fn service(store: MockStore, bus: MockEventBus) -> ChatService {
    ChatService::new(
        Arc::new(store),
        Arc::new(bus),
        Arc::new(ManualClock::new(NOW)),
        Config::default(),
        NodeId("node-1".into()),
    )
}

/// A bus that must not be used.
fn silent_bus() -> MockEventBus {
    let mut bus = MockEventBus::new();
    bus.expect_publish().never();
    bus
}

fn down<T>() -> Result<T, Error> {
    Err(Error::unavailable("down"))
}

fn a() -> Phone {
    Phone::parse("+14155550100").unwrap()
}

fn b() -> Phone {
    Phone::parse("+14155550101").unwrap()
}

fn session(phone: Phone) -> Session {
    Session {
        phone,
        name: None,
        token_digest: Token::generate().unwrap().digest(),
        created_at: NOW,
    }
}

fn room() -> Room {
    Room {
        id: RoomId::generate(),
        members: [a(), b()],
        created_at: NOW,
        expires_at: NOW + 21_600_000,
    }
}

#[tokio::test]
async fn register_with_store_down_publishes_nothing() {
    let mut store = MockStore::new();
    store
        .sessions
        .expect_create_session()
        .times(1)
        .returning(|_, _, _| down());
    let chat = service(store, silent_bus());
    assert_eq!(
        chat.register("+14155550100", None, None).await,
        Err(Error::unavailable("down"))
    );
}

#[tokio::test]
async fn register_that_was_stored_is_not_reported_failed() {
    // The session exists once create_session returns; if telling the peers fails after that, a
    // 503 would leave the phone taken by a session whose token nobody has. (A refreshed session
    // is the one with peers to tell.)
    let mut store = MockStore::new();
    store.sessions.expect_create_session().returning(|s, _, _| {
        Ok(SessionCreated {
            session: s,
            refreshed: true,
            came_online: true,
        })
    });
    store
        .requests
        .expect_requests()
        .times(1)
        .returning(|_, _| down());
    store.rooms.expect_rooms_of().returning(|_| down());
    let chat = service(store, silent_bus());
    let got = chat.register("+14155550100", None, None).await.unwrap();
    assert_eq!(got.session.phone, a());
}

#[tokio::test]
async fn a_new_session_looks_for_no_peers() {
    // Requests and rooms end with the session before: a new one has nobody to tell it is
    // online, so registering costs the store one call.
    let mut store = MockStore::new();
    store
        .sessions
        .expect_create_session()
        .times(1)
        .returning(|s, _, _| {
            Ok(SessionCreated {
                session: s,
                refreshed: false,
                came_online: true,
            })
        });
    store.requests.expect_requests().never();
    store.rooms.expect_rooms_of().never();
    let mut bus = MockEventBus::new();
    bus.expect_publish().never();
    let chat = service(store, bus);
    let got = chat.register("+14155550100", None, None).await.unwrap();
    assert_eq!(got.session.phone, a());
}

#[tokio::test]
async fn authenticate_with_store_down_is_not_unauthorized() {
    let mut store = MockStore::new();
    store.sessions.expect_touch().returning(|_, _| down());
    store.sessions.expect_session().returning(|_| down());
    let chat = service(store, silent_bus());
    let token = Token::generate().unwrap();
    assert_eq!(
        chat.authenticate_request(token.as_str()).await,
        Err(Error::unavailable("down"))
    );
    assert_eq!(
        chat.authenticate_socket(token.as_str()).await,
        Err(Error::unavailable("down"))
    );
}

#[tokio::test]
async fn authenticate_that_touched_is_not_reported_failed() {
    let me = session(a());
    let found = me.clone();
    let mut store = MockStore::new();
    store.sessions.expect_touch().returning(move |_, _| {
        Ok(Some(Touched {
            session: found.clone(),
            came_online: true,
        }))
    });
    store.requests.expect_requests().returning(|_, _| down());
    let chat = service(store, silent_bus());
    // The mock finds the session whatever the token.
    let token = Token::generate().unwrap();
    assert_eq!(chat.authenticate_request(token.as_str()).await, Ok(me));
}

#[tokio::test]
async fn accept_with_store_down_publishes_no_request_accepted() {
    let mut store = MockStore::new();
    // Names are looked up for the events; none here.
    store
        .sessions
        .expect_names()
        .returning(|_| Ok(Names::new()));
    store
        .requests
        .expect_accept_request()
        .times(1)
        .returning(|_, _, _, _| down());
    let chat = service(store, silent_bus());
    assert_eq!(
        chat.respond_request(&b(), "+14155550100", chat_core::Answer::Accept)
            .await,
        Err(Error::unavailable("down"))
    );
}

#[tokio::test]
async fn decline_and_cancel_with_store_down_publish_nothing() {
    let mut store = MockStore::new();
    store
        .requests
        .expect_remove_request()
        .times(1)
        .returning(|_, _, _| down());
    store
        .blocks
        .expect_decline_request()
        .times(1)
        .returning(|_, _, _, _| down());
    let chat = service(store, silent_bus());
    assert_eq!(
        chat.respond_request(&b(), "+14155550100", chat_core::Answer::Decline)
            .await,
        Err(Error::unavailable("down"))
    );
    assert_eq!(
        chat.cancel_request(&a(), "+14155550101").await,
        Err(Error::unavailable("down"))
    );
}

#[tokio::test]
async fn send_request_with_store_down_sends_no_chat_request() {
    let mut store = MockStore::new();
    // Names are looked up for the events; none here.
    store
        .sessions
        .expect_names()
        .returning(|_| Ok(Names::new()));
    // The store checks the target's presence itself, in the same step.
    store.presence.expect_presence().never();
    store
        .blocks
        .expect_send_request_capped()
        .times(1)
        .returning(|_, _, _| down());
    let chat = service(store, silent_bus());
    assert_eq!(
        chat.send_request(&a(), "+14155550101").await,
        Err(Error::unavailable("down"))
    );
}

#[tokio::test]
async fn send_request_to_an_offline_user_publishes_nothing() {
    let mut store = MockStore::new();
    // Names are looked up for the events; none here.
    store
        .sessions
        .expect_names()
        .returning(|_| Ok(Names::new()));
    store
        .blocks
        .expect_send_request_capped()
        .times(1)
        .returning(|_, _, _| Err(Error::UserNotFound));
    let mut bus = MockEventBus::new();
    bus.expect_publish().never();
    let chat = service(store, bus);
    assert_eq!(
        chat.send_request(&a(), "+14155550101").await,
        Err(Error::UserNotFound)
    );
}

#[tokio::test]
async fn send_message_with_store_down_counts_no_message() {
    let mut store = MockStore::new();
    store
        .rooms
        .expect_append_message()
        .times(1)
        .returning(|_, _, _| down());
    let chat = service(store, silent_bus());
    let got = chat
        .send_message(&a(), &RoomId::generate().to_string(), "hi".into(), None)
        .await;
    assert_eq!(got, Err(Error::unavailable("down")));
    assert_eq!(chat.metrics().messages_total.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn send_messages_with_store_down_answers_each_unavailable() {
    let mut store = MockStore::new();
    // One result for a batch of two: the store failed the rest.
    store
        .rooms
        .expect_append_messages()
        .times(1)
        .withf(|batch, _| batch.len() == 2)
        .returning(|_, _| vec![down()]);
    let chat = service(store, silent_bus());
    let room = RoomId::generate().to_string();
    let out = |text: &str| Outgoing {
        room: room.clone(),
        text: text.into(),
        client_id: None,
    };
    let got = chat.send_messages(&a(), vec![out("one"), out("two")]).await;
    assert_eq!(
        got,
        vec![
            Err(Error::unavailable("down")),
            Err(Error::unavailable("down"))
        ]
    );
    assert_eq!(chat.metrics().messages_total.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn close_room_with_store_down_publishes_no_room_closed() {
    let r = room();
    let id = r.id;
    let mut store = MockStore::new();
    store
        .rooms
        .expect_room()
        .with(eq(id))
        .returning(move |_| Ok(Some(r.clone())));
    store
        .rooms
        .expect_delete_room()
        .times(1)
        .returning(|_| down());
    let chat = service(store, silent_bus());
    assert_eq!(
        chat.close_room(&a(), &id.to_string()).await,
        Err(Error::unavailable("down"))
    );
}

#[tokio::test]
async fn history_and_rooms_with_store_down() {
    let mut store = MockStore::new();
    store.rooms.expect_room().returning(|_| down());
    store.rooms.expect_rooms_of().returning(|_| down());
    store.rooms.expect_room_overviews().returning(|_| down());
    store.rooms.expect_mark_read().returning(|_, _, _| down());
    store.requests.expect_requests().returning(|_, _| down());
    store
        .presence
        .expect_online_page()
        .returning(|_, _, _| down());
    let chat = service(store, silent_bus());
    let id = RoomId::generate().to_string();
    assert_eq!(
        chat.history(&a(), &id, None, None).await,
        Err(Error::unavailable("down"))
    );
    assert_eq!(
        chat.join_room(&a(), &id, None).await,
        Err(Error::unavailable("down"))
    );
    assert_eq!(
        chat.typing(&a(), &id, true).await,
        Err(Error::unavailable("down"))
    );
    // The silent bus panics on a publish: a mark that failed tells nobody.
    assert_eq!(
        chat.mark_read(&a(), &id, "1-0").await,
        Err(Error::unavailable("down"))
    );
    assert_eq!(
        chat.join_room_with_reads(&a(), &id, None).await,
        Err(Error::unavailable("down"))
    );
    assert_eq!(
        chat.active_rooms(&a()).await,
        Err(Error::unavailable("down"))
    );
    assert_eq!(chat.requests(&a()).await, Err(Error::unavailable("down")));
    assert_eq!(
        chat.online_users(&a(), None, None).await,
        Err(Error::unavailable("down"))
    );
}

#[tokio::test]
async fn connect_with_store_down_announces_nothing() {
    let mut store = MockStore::new();
    store
        .presence
        .expect_add_conn()
        .times(1)
        .returning(|_, _| down());
    let chat = service(store, silent_bus());
    let conn = chat.new_conn();
    assert_eq!(
        chat.connect(&a(), &conn).await,
        Err(Error::unavailable("down"))
    );
}

#[tokio::test]
async fn connect_that_was_counted_is_not_reported_failed() {
    // add_conn counted the socket: an error now would make the adapter drop a socket the store
    // still counts, keeping its user online until the node dies.
    let mut store = MockStore::new();
    store.presence.expect_add_conn().returning(|_, _| Ok(true));
    store.requests.expect_requests().returning(|_, _| down());
    let chat = service(store, silent_bus());
    let conn = chat.new_conn();
    assert_eq!(chat.connect(&a(), &conn).await, Ok(()));
}

#[tokio::test]
async fn a_bus_down_does_not_fail_a_stored_change() {
    let mut store = MockStore::new();
    // Names are looked up for the events; none here.
    store
        .sessions
        .expect_names()
        .returning(|_| Ok(Names::new()));
    store
        .requests
        .expect_remove_request()
        .returning(|_, _, _| Ok(true));
    let mut bus = MockEventBus::new();
    bus.expect_publish().times(1).returning(|_| down());
    let chat = service(store, bus);
    assert_eq!(chat.cancel_request(&a(), "+14155550101").await, Ok(()));
}

#[tokio::test]
async fn requests_and_accepts_are_published_by_the_store_not_again() {
    // The store publishes chat_request / request_accepted in the same step as the change.
    let mut store = MockStore::new();
    // Names are looked up for the events; none here.
    store
        .sessions
        .expect_names()
        .returning(|_| Ok(Names::new()));
    store
        .blocks
        .expect_send_request_capped()
        .times(1)
        .returning(|_, _, _| Ok(RequestOutcome::Sent));
    let r = room();
    let id = r.id;
    store
        .requests
        .expect_accept_request()
        .times(1)
        .returning(move |_, _, _, _| Ok(Some(r.clone())));
    let mut bus = MockEventBus::new();
    bus.expect_publish().never();
    let chat = service(store, bus);
    assert_eq!(
        chat.send_request(&a(), "+14155550101").await,
        Ok(RequestSent::Sent)
    );
    assert_eq!(
        chat.respond_request(&b(), a().as_str(), chat_core::Answer::Accept)
            .await,
        Ok(Some(id))
    );
}

fn ticking_store() -> MockStore {
    let mut store = MockStore::new();
    store.nodes.expect_heartbeat().returning(|_, _| Ok(()));
    store
        .nodes
        .expect_reap_dead_nodes()
        .returning(|_, _| Ok(vec![]));
    store
}

#[tokio::test]
async fn tick_with_store_down_finishes_no_timer() {
    let mut store = ticking_store();
    store
        .timers
        .expect_due_timers()
        .times(1)
        .returning(|_, lease, _| {
            Ok(vec![DueTimer {
                timer: Timer::Presence(a()),
                lease_until: lease,
            }])
        });
    store
        .presence
        .expect_go_offline()
        .times(1)
        .returning(|_, _, _| down());
    // The timer stays leased and comes back after its lease: the work is retried, not lost.
    store.timers.expect_finish_timer().never();
    let chat = service(store, silent_bus());
    assert_eq!(chat.tick().await, Err(Error::unavailable("down")));
}

#[tokio::test]
async fn tick_with_heartbeat_down_takes_no_timer() {
    let mut store = MockStore::new();
    store.nodes.expect_heartbeat().returning(|_, _| down());
    store.timers.expect_due_timers().never();
    let chat = service(store, silent_bus());
    assert_eq!(chat.tick().await, Err(Error::unavailable("down")));
}

#[tokio::test]
async fn a_retried_presence_timer_still_schedules_idle_rooms() {
    // A first attempt marked A offline and then failed; the timer came back after its lease.
    // The user is offline already, so go_offline says no; the rooms must still get their
    // idle deadline, counted from when the later member went offline.
    let r = room();
    let id = r.id;
    let offline_at = NOW - 40_000;
    let mut store = ticking_store();
    store
        .timers
        .expect_due_timers()
        .times(1)
        .returning(|_, lease, _| {
            Ok(vec![DueTimer {
                timer: Timer::Presence(a()),
                lease_until: lease,
            }])
        });
    store
        .presence
        .expect_go_offline()
        .returning(|_, _, _| Ok(false));
    store
        .presence
        .expect_presence()
        .with(eq(a()))
        .returning(move |_| {
            Ok(Some(PresenceState {
                conns: 0,
                http_until: offline_at,
                offline_since: Some(offline_at),
            }))
        });
    store
        .presence
        .expect_presence()
        .with(eq(b()))
        .returning(move |_| {
            Ok(Some(PresenceState {
                conns: 0,
                http_until: offline_at - 5_000,
                offline_since: Some(offline_at - 5_000),
            }))
        });
    store
        .rooms
        .expect_rooms_of()
        .with(eq(a()))
        .returning(move |_| Ok(vec![r.clone()]));
    store
        .timers
        .expect_schedule()
        .with(eq(Timer::RoomIdle(id)), eq(offline_at + 300_000))
        .times(1)
        .returning(|_, _| Ok(()));
    store
        .timers
        .expect_finish_timer()
        .times(1)
        .returning(|_| Ok(()));
    let chat = service(store, silent_bus());
    assert_eq!(chat.tick().await.unwrap().timers, 1);
}
