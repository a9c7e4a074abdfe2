//! One test per rule of the wire contract that `ChatService` implements, over the in-memory
//! store, a `ManualClock` and a `RecordingSink` on the store's bus. Time moves by
//! `Harness::pass`, which advances the clock a second at a time and runs `tick()` after each
//! step, as a server does a few times a second.

#![allow(clippy::unwrap_used)] // helpers too (clippy.toml covers #[test] fns only)

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use support::{Harness, START};

use chat_core::{
    Audience, ChatService, Config, ConnKey, Delivery, Error, Event, Except, HISTORY_LIMIT,
    JOIN_HISTORY, Message, Names, NodeId, Outgoing, Phone, RequestSent, RoomId, Session, Token,
};
use tokio::task::JoinSet;

/// A service over a fresh in-memory store, with the clock and the recorded events at hand.
/// A registered user as a client holds it: the session, and the token only the client has.
#[derive(Debug, Clone)]
struct User {
    session: Session,
    token: Token,
}

impl std::ops::Deref for User {
    type Target = Session;
    fn deref(&self) -> &Session {
        &self.session
    }
}

impl Harness {
    /// Another node sharing the store, clock and bus.
    fn node(&self, name: &str) -> ChatService {
        ChatService::new(
            Arc::new(self.store.clone()),
            Arc::new(self.store.clone()),
            Arc::new(self.clock.clone()),
            self.config.clone(),
            NodeId(name.into()),
        )
    }

    async fn register(&self, phone: &str) -> User {
        let r = self.chat.register(phone, None, None).await.unwrap();
        User {
            session: r.session,
            token: r.token,
        }
    }

    /// Moves time forward `secs` seconds, ticking after every second.
    async fn pass(&self, secs: u64) {
        for _ in 0..secs {
            self.clock.advance(1000);
            self.chat.tick().await.unwrap();
        }
    }

    /// Events for every socket of `phone`.
    fn events(&self, phone: &Phone) -> Vec<Event> {
        self.sink.events_for(&Audience::User(phone.clone()))
    }

    fn room_events(&self, room: RoomId) -> Vec<Event> {
        self.sink.events_for(&Audience::Room(room))
    }

    fn clear(&self) {
        self.sink.take();
    }

    /// `a` asks `b`, `b` accepts.
    async fn room(&self, a: &Session, b: &Session) -> RoomId {
        self.chat
            .send_request(&a.phone, b.phone.as_str())
            .await
            .unwrap();
        self.chat
            .respond_request(&b.phone, a.phone.as_str(), chat_core::Answer::Accept)
            .await
            .unwrap()
            .unwrap()
    }

    async fn connect(&self, phone: &Phone) -> ConnKey {
        let conn = self.chat.new_conn();
        self.chat.connect(phone, &conn).await.unwrap();
        conn
    }

    async fn send(&self, me: &Phone, room: RoomId, text: &str) -> Message {
        self.chat
            .send_message(me, &room.to_string(), text.into(), None)
            .await
            .unwrap()
    }
}

fn presence(phone: &Phone, online: bool) -> Event {
    Event::Presence {
        names: Names::new(),
        phone: phone.clone(),
        online,
    }
}

// ------------------------------------------------------------------------------- phones

#[tokio::test]
async fn phone_is_normalised_to_one_identity() {
    let h = Harness::new();
    let a = h.register("+1 (415) 555-0100").await;
    assert_eq!(a.phone.as_str(), "+14155550100");
    // The `+` is kept: without it, another phone.
    let b = h.register("14155550100").await;
    assert_eq!(b.phone.as_str(), "14155550100");
    assert_ne!(a.phone, b.phone);
    // Any spelling names the same user.
    assert_eq!(
        h.chat.register("+1-415-555-0100", None, None).await,
        Err(Error::PhoneInUse)
    );
    h.chat
        .send_request(&b.phone, "+1 415 555 (0100)")
        .await
        .unwrap();
    assert_eq!(
        h.events(&a.phone),
        vec![Event::ChatRequest {
            names: Names::new(),
            from: b.phone.clone(),
            to: a.phone.clone(),
            created_at: START,
        }]
    );
    // 7 and 15 digits are the bounds.
    h.register("1234567").await;
    h.register("+123456789012345").await;
}

#[tokio::test]
async fn invalid_phone_is_refused_everywhere() {
    let h = Harness::new();
    for bad in [
        "",
        "+",
        "123456",
        "1234567890123456",
        "++1234567",
        "12ab345678",
        "1234567.8",
        "+1 415 555 0100 x",
        "１２３４５６７８", // full-width digits are not ASCII digits
    ] {
        assert_eq!(
            h.chat.register(bad, None, None).await,
            Err(Error::InvalidPhone),
            "{bad:?}"
        );
    }
    let a = h.register("+14155550100").await;
    assert_eq!(
        h.chat.send_request(&a.phone, "123").await,
        Err(Error::InvalidPhone)
    );
    assert_eq!(
        h.chat
            .respond_request(&a.phone, "abc", chat_core::Answer::Accept)
            .await,
        Err(Error::InvalidPhone)
    );
    assert_eq!(
        h.chat.cancel_request(&a.phone, "abc").await,
        Err(Error::InvalidPhone)
    );
}

// ----------------------------------------------------------------------------- sessions

#[tokio::test]
async fn register_gives_a_token_and_expires_in() {
    let h = Harness::new();
    let r = h
        .chat
        .register("+14155550100", Some("Asha".into()), None)
        .await
        .unwrap();
    assert_eq!(r.expires_in, 21_600);
    assert_eq!(r.session.name.as_deref(), Some("Asha"));
    let token = r.token.as_str();
    assert_eq!(token.len(), 64, "256 bits as hex");
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(h.chat.authenticate_request(token).await.unwrap(), r.session);
    // Two sessions never share a token.
    let other = h.register("+14155550101").await;
    assert_ne!(other.token, r.token);
    assert_ne!(other.token_digest, r.session.token_digest);
}

#[tokio::test]
async fn register_name_is_at_most_64_chars() {
    let h = Harness::new();
    let long: String = "é".repeat(65);
    assert!(matches!(
        h.chat.register("+14155550100", Some(long), None).await,
        Err(Error::BadRequest(_))
    ));
    let ok: String = "é".repeat(64);
    h.chat
        .register("+14155550100", Some(ok), None)
        .await
        .unwrap();
}

#[tokio::test]
async fn register_live_phone_is_phone_in_use() {
    let h = Harness::new();
    let a = h.register("+14155550100").await;
    let b = h.register("+14155550101").await;
    assert_eq!(
        h.chat.register("+14155550100", None, None).await,
        Err(Error::PhoneInUse)
    );
    // Another session's token, or something that is not a token, does not help.
    for token in [b.token.as_str(), "nonsense", ""] {
        assert_eq!(
            h.chat.register("+14155550100", None, Some(token)).await,
            Err(Error::PhoneInUse),
            "{token:?}"
        );
    }
    assert_eq!(
        h.chat.authenticate_request(a.token.as_str()).await.unwrap(),
        a.session
    );
}

#[tokio::test]
async fn register_with_own_token_refreshes() {
    let h = Harness::new();
    let a = h.register("+14155550100").await;
    h.clock.advance(500_000);
    let again = h
        .chat
        .register("+14155550100", None, Some(a.token.as_str()))
        .await
        .unwrap();
    assert_eq!(again.session, a.session, "same session");
    assert_eq!(again.token, a.token, "same token");
    // The refresh counts as presence: online 600 s from now, not from the first registration.
    h.pass(599).await;
    assert!(h.chat.is_online(&a.phone).await.unwrap());
    h.pass(1).await;
    assert!(!h.chat.is_online(&a.phone).await.unwrap());
}

#[tokio::test]
async fn unknown_token_is_unauthorized() {
    let h = Harness::new();
    h.register("+14155550100").await;
    let stranger = "ab".repeat(32);
    for token in ["", "nonsense", stranger.as_str()] {
        assert_eq!(
            h.chat.authenticate_request(token).await,
            Err(Error::Unauthorized),
            "{token:?}"
        );
        assert_eq!(
            h.chat.authenticate_socket(token).await,
            Err(Error::Unauthorized)
        );
    }
}

#[tokio::test]
async fn session_ends_after_session_idle_and_frees_everything() {
    // Rooms outlive the session here, so it is the session's end that closes them.
    let h = Harness::with_config(Config {
        room_ttl_secs: 100_000,
        ..Config::default()
    });
    let a = h.register("+14155550100").await;
    let [b, c, d] = [
        h.register("+14155550101").await,
        h.register("+14155550102").await,
        h.register("+14155550103").await,
    ];
    // B, C and D stay online on sockets; A does not.
    for s in [&b, &c, &d] {
        h.connect(&s.phone).await;
    }
    h.chat.send_request(&a.phone, "+14155550101").await.unwrap();
    h.chat.send_request(&c.phone, "+14155550100").await.unwrap();
    let room = h.room(&d, &a).await;
    h.send(&d.phone, room, "hello").await;

    // A's window ends at 600 s; the session lives 21600 s after that.
    h.pass(600).await;
    assert!(!h.chat.is_online(&a.phone).await.unwrap());
    h.pass(21_599).await;
    assert!(
        h.chat.authenticate_socket(a.token.as_str()).await.is_ok(),
        "still alive"
    );
    h.clear();
    h.pass(1).await;
    assert_eq!(
        h.chat.authenticate_socket(a.token.as_str()).await,
        Err(Error::Unauthorized),
        "the session ended"
    );
    // Requests both ways are dropped, silently.
    assert!(h.chat.requests(&b.phone).await.unwrap().incoming.is_empty());
    assert!(h.chat.requests(&c.phone).await.unwrap().sent.is_empty());
    assert!(h.events(&b.phone).is_empty());
    assert!(h.events(&c.phone).is_empty());
    // The room closes, by A, told to D.
    assert_eq!(
        h.events(&d.phone),
        vec![Event::RoomClosed {
            room,
            by: a.phone.clone()
        }]
    );
    assert_eq!(
        h.chat
            .history(&d.phone, &room.to_string(), None, None)
            .await,
        Err(Error::RoomNotFound)
    );
    assert!(h.chat.active_rooms(&d.phone).await.unwrap().is_empty());

    // The phone starts fresh: no rooms, requests or history inherited.
    let fresh = h.register("+14155550100").await;
    assert_ne!(fresh.token, a.token);
    assert!(h.chat.active_rooms(&fresh.phone).await.unwrap().is_empty());
    let r = h.chat.requests(&fresh.phone).await.unwrap();
    assert!(r.incoming.is_empty() && r.sent.is_empty());
}

#[tokio::test]
async fn session_lives_while_online() {
    let h = Harness::new();
    let a = h.register("+14155550100").await;
    let conn = h.connect(&a.phone).await;
    h.pass(600 + 21_600 + 10).await;
    assert_eq!(
        h.chat.authenticate_request(a.token.as_str()).await.unwrap(),
        a.session
    );
    assert_eq!(
        h.chat.register("+14155550100", None, None).await,
        Err(Error::PhoneInUse)
    );
    // Once the last socket closes, the clock starts: offline after the presence grace (it
    // cuts the HTTP window the request above opened), then the session's idle time.
    h.chat.disconnect(&a.phone, &conn).await.unwrap();
    h.pass(h.config.presence_grace_secs + 21_599).await;
    assert!(h.chat.authenticate_socket(a.token.as_str()).await.is_ok());
    h.pass(2).await;
    assert_eq!(
        h.chat.authenticate_socket(a.token.as_str()).await,
        Err(Error::Unauthorized)
    );
}

#[tokio::test]
async fn register_ends_a_due_session_not_yet_swept() {
    let h = Harness::new();
    let a = h.register("+14155550100").await;
    h.pass(600).await;
    // The session is due to end, but no tick ran since.
    h.clock.advance(21_600 * 1000);
    let fresh = h.register("+14155550100").await;
    assert_ne!(fresh.token, a.token);
    assert_eq!(
        h.chat.authenticate_socket(a.token.as_str()).await,
        Err(Error::Unauthorized)
    );
}

#[tokio::test]
async fn check_caller_forbids_naming_someone_else() {
    let h = Harness::new();
    let a = h.register("+14155550100").await;
    h.chat.check_caller(&a, None).unwrap();
    h.chat.check_caller(&a, Some("+14155550100")).unwrap();
    h.chat.check_caller(&a, Some("+1 (415) 555-0100")).unwrap();
    for other in ["+14155550101", "14155550100", "garbage", ""] {
        assert!(
            matches!(
                h.chat.check_caller(&a, Some(other)),
                Err(Error::Forbidden(_))
            ),
            "{other:?}"
        );
    }
}

// ----------------------------------------------------------------------------- presence

#[tokio::test]
async fn presence_online_by_http_window() {
    let h = Harness::new();
    let a = h.register("+14155550100").await;
    let b = h.register("+14155550101").await;
    h.pass(300).await;
    // An API request extends A's window.
    h.chat.authenticate_request(a.token.as_str()).await.unwrap();
    h.pass(299).await;
    assert!(h.chat.is_online(&b.phone).await.unwrap());
    h.pass(1).await;
    assert!(
        !h.chat.is_online(&b.phone).await.unwrap(),
        "B's window ended"
    );
    assert!(h.chat.is_online(&a.phone).await.unwrap());
    let listed = h
        .chat
        .online_users(&a.phone, None, None)
        .await
        .unwrap()
        .phones;
    assert_eq!(listed, vec![a.phone.clone()]);
    h.pass(300).await;
    assert!(!h.chat.is_online(&a.phone).await.unwrap());
    assert!(
        h.chat
            .online_users(&a.phone, None, None)
            .await
            .unwrap()
            .phones
            .is_empty()
    );
    // The WebSocket upgrade's authentication does not count as presence.
    h.chat.authenticate_socket(a.token.as_str()).await.unwrap();
    assert!(!h.chat.is_online(&a.phone).await.unwrap());
    // An API request does.
    h.chat.authenticate_request(a.token.as_str()).await.unwrap();
    assert!(h.chat.is_online(&a.phone).await.unwrap());
}

#[tokio::test]
async fn presence_online_by_socket() {
    let h = Harness::new();
    let a = h.register("+14155550100").await;
    let c1 = h.connect(&a.phone).await;
    let c2 = h.connect(&a.phone).await;
    h.pass(700).await;
    assert!(h.chat.is_online(&a.phone).await.unwrap());
    assert_eq!(
        h.chat
            .online_users(&a.phone, None, None)
            .await
            .unwrap()
            .phones,
        vec![a.phone.clone()]
    );
    h.chat.disconnect(&a.phone, &c1).await.unwrap();
    h.pass(1).await;
    assert!(h.chat.is_online(&a.phone).await.unwrap(), "one socket left");
    h.chat.disconnect(&a.phone, &c2).await.unwrap();
    h.pass(1).await;
    assert!(!h.chat.is_online(&a.phone).await.unwrap());
    assert!(
        h.chat
            .online_users(&a.phone, None, None)
            .await
            .unwrap()
            .phones
            .is_empty()
    );
}

#[tokio::test]
async fn presence_events_on_window_end_last_socket_and_return() {
    let h = Harness::new();
    let a = h.register("+14155550100").await;
    let b = h.register("+14155550101").await;
    h.connect(&b.phone).await;
    h.chat.send_request(&a.phone, "+14155550101").await.unwrap();
    h.clear();

    // A's window ends: B hears it once.
    h.pass(599).await;
    assert!(h.events(&b.phone).is_empty());
    h.pass(1).await;
    assert_eq!(h.events(&b.phone), vec![presence(&a.phone, false)]);
    h.pass(100).await;
    assert_eq!(h.events(&b.phone).len(), 1, "told once");

    // A socket brings A back; a second one and closing the first say nothing.
    h.clear();
    let c1 = h.connect(&a.phone).await;
    assert_eq!(h.events(&b.phone), vec![presence(&a.phone, true)]);
    let c2 = h.connect(&a.phone).await;
    h.chat.disconnect(&a.phone, &c1).await.unwrap();
    h.pass(5).await;
    assert_eq!(h.events(&b.phone).len(), 1);
    // The last socket closing makes A offline.
    h.chat.disconnect(&a.phone, &c2).await.unwrap();
    h.pass(1).await;
    assert_eq!(
        h.events(&b.phone),
        vec![presence(&a.phone, true), presence(&a.phone, false)]
    );
    // An API request brings A back.
    h.clear();
    h.chat.authenticate_request(a.token.as_str()).await.unwrap();
    assert_eq!(h.events(&b.phone), vec![presence(&a.phone, true)]);
    // B hears only about A; A hears nothing about itself.
    assert!(
        h.events(&a.phone)
            .iter()
            .all(|e| !matches!(e, Event::Presence { phone, .. } if *phone == a.phone))
    );
}

#[tokio::test]
async fn presence_events_only_to_peers() {
    let h = Harness::new();
    let a = h.register("+14155550100").await;
    let [b, c, d, e] = [
        h.register("+14155550101").await,
        h.register("+14155550102").await,
        h.register("+14155550103").await,
        h.register("+14155550104").await,
    ];
    for s in [&b, &c, &d, &e] {
        h.connect(&s.phone).await;
    }
    h.chat.send_request(&a.phone, "+14155550101").await.unwrap(); // A → B pending
    h.chat.send_request(&c.phone, "+14155550100").await.unwrap(); // C → A pending
    h.room(&d, &a).await; // A and D share a room
    // E shared a request with A, but it was cancelled: no longer a peer.
    h.chat.send_request(&e.phone, "+14155550100").await.unwrap();
    h.chat
        .cancel_request(&e.phone, "+14155550100")
        .await
        .unwrap();
    h.clear();
    h.pass(600).await;
    for peer in [&b, &c, &d] {
        assert_eq!(
            h.events(&peer.phone),
            vec![presence(&a.phone, false)],
            "{}",
            peer.phone
        );
    }
    assert!(h.events(&e.phone).is_empty());
}

#[tokio::test]
async fn online_users_pages_and_limits() {
    let h = Harness::new();
    let mut everyone = BTreeSet::new();
    for i in 0..7 {
        everyone.insert(h.register(&format!("+1415555010{i}")).await.phone.clone());
    }
    let me = everyone.first().unwrap().clone();
    let mut seen = BTreeSet::new();
    let mut cursor = None;
    for _ in 0..20 {
        let page = h.chat.online_users(&me, cursor, Some("2")).await.unwrap();
        assert!(page.phones.len() <= 2);
        seen.extend(page.phones);
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(
        seen, everyone,
        "the walk returns everyone, the caller included"
    );
    assert!(matches!(
        h.chat.online_users(&me, Some("bogus".into()), None).await,
        Err(Error::BadRequest(_))
    ));
    for bad in ["0", "-1", "abc", "", "1.5"] {
        assert!(
            matches!(
                h.chat.online_users(&me, None, Some(bad)).await,
                Err(Error::BadRequest(_))
            ),
            "{bad:?}"
        );
    }
    // Over 1000 is cut to 1000, not refused.
    let page = h.chat.online_users(&me, None, Some("5000")).await.unwrap();
    assert_eq!(page.phones.len(), 7);
    assert_eq!(chat_core::ONLINE_LIMIT.apply(Some("5000")).unwrap(), 1000);
    assert_eq!(chat_core::ONLINE_LIMIT.apply(None).unwrap(), 100);
}

// ----------------------------------------------------------------------------- requests

#[tokio::test]
async fn send_request_to_unknown_or_offline_user_is_user_not_found() {
    let h = Harness::new();
    let a = h.register("+14155550100").await;
    assert_eq!(
        h.chat.send_request(&a.phone, "+14155550199").await,
        Err(Error::UserNotFound),
        "not registered"
    );
    let b = h.register("+14155550101").await;
    h.connect(&a.phone).await;
    h.pass(600).await;
    assert!(!h.chat.is_online(&b.phone).await.unwrap());
    assert_eq!(
        h.chat.send_request(&a.phone, "+14155550101").await,
        Err(Error::UserNotFound),
        "registered but offline"
    );
    assert!(h.events(&b.phone).is_empty());
}

#[tokio::test]
async fn send_request_to_self_is_self_request() {
    let h = Harness::new();
    let a = h.register("+14155550100").await;
    for me in ["+14155550100", "+1 415 555 0100"] {
        assert_eq!(
            h.chat.send_request(&a.phone, me).await,
            Err(Error::SelfRequest)
        );
    }
}

#[tokio::test]
async fn send_request_notifies_recipient_and_refuses_a_repeat() {
    let h = Harness::new();
    let a = h.register("+14155550100").await;
    let b = h.register("+14155550101").await;
    h.clock.advance(1234);
    assert_eq!(
        h.chat.send_request(&a.phone, "+14155550101").await,
        Ok(RequestSent::Sent)
    );
    assert_eq!(
        h.events(&b.phone),
        vec![Event::ChatRequest {
            names: Names::new(),
            from: a.phone.clone(),
            to: b.phone.clone(),
            created_at: START + 1234,
        }]
    );
    assert!(h.events(&a.phone).is_empty(), "only the recipient is told");
    assert_eq!(
        h.chat.send_request(&a.phone, "+14155550101").await,
        Err(Error::AlreadyPending)
    );
    assert_eq!(h.events(&b.phone).len(), 1);
    let ra = h.chat.requests(&a.phone).await.unwrap();
    let rb = h.chat.requests(&b.phone).await.unwrap();
    assert_eq!((ra.incoming, ra.sent), (vec![], vec![b.phone.clone()]));
    assert_eq!((rb.incoming, rb.sent), (vec![a.phone.clone()], vec![]));
}

#[tokio::test]
async fn send_request_to_room_partner_is_room_exists_with_chat_id() {
    let h = Harness::new();
    let a = h.register("+14155550100").await;
    let b = h.register("+14155550101").await;
    let room = h.room(&a, &b).await;
    assert_eq!(
        h.chat.send_request(&a.phone, "+14155550101").await,
        Err(Error::RoomExists { chat_id: room })
    );
    assert_eq!(
        h.chat.send_request(&b.phone, "+14155550100").await,
        Err(Error::RoomExists { chat_id: room })
    );
}

#[tokio::test]
async fn crossed_request_accepts_and_tells_both() {
    let h = Harness::new();
    let a = h.register("+14155550100").await;
    let b = h.register("+14155550101").await;
    h.chat.send_request(&a.phone, "+14155550101").await.unwrap();
    h.clear();
    let got = h.chat.send_request(&b.phone, "+14155550100").await.unwrap();
    let RequestSent::Accepted(room) = got else {
        panic!("a crossed request accepts: {got:?}");
    };
    assert_eq!(
        h.events(&a.phone),
        vec![Event::RequestAccepted {
            names: Names::new(),
            chat_id: room,
            from_user: b.phone.clone(),
            to_user: a.phone.clone(),
        }]
    );
    assert_eq!(
        h.events(&b.phone),
        vec![Event::RequestAccepted {
            names: Names::new(),
            chat_id: room,
            from_user: a.phone.clone(),
            to_user: b.phone.clone(),
        }]
    );
    for s in [&a, &b] {
        let r = h.chat.requests(&s.phone).await.unwrap();
        assert!(r.incoming.is_empty() && r.sent.is_empty());
        let rooms = h.chat.active_rooms(&s.phone).await.unwrap();
        assert_eq!(rooms.len(), 1);
        assert_eq!(rooms[0].chat_id, room);
    }
}

#[tokio::test]
async fn request_expires_silently() {
    let h = Harness::new();
    let a = h.register("+14155550100").await;
    let b = h.register("+14155550101").await;
    h.connect(&a.phone).await;
    h.connect(&b.phone).await;
    h.chat.send_request(&a.phone, "+14155550101").await.unwrap();
    h.pass(5_999).await;
    assert_eq!(
        h.chat.requests(&b.phone).await.unwrap().incoming,
        vec![a.phone.clone()]
    );
    h.clear();
    h.pass(1).await;
    assert!(h.chat.requests(&b.phone).await.unwrap().incoming.is_empty());
    assert!(h.chat.requests(&a.phone).await.unwrap().sent.is_empty());
    assert!(h.sink.take().is_empty(), "silently: no event to anyone");
    assert_eq!(
        h.chat
            .respond_request(&b.phone, "+14155550100", chat_core::Answer::Accept)
            .await,
        Err(Error::RequestNotFound)
    );
    // It can be sent again.
    assert_eq!(
        h.chat.send_request(&a.phone, "+14155550101").await,
        Ok(RequestSent::Sent)
    );
}

#[tokio::test]
async fn respond_accept_makes_a_room_and_tells_both() {
    let h = Harness::new();
    let a = h.register("+14155550100").await;
    let b = h.register("+14155550101").await;
    h.chat.send_request(&a.phone, "+14155550101").await.unwrap();
    h.clear();
    h.clock.advance(5_000);
    let room = h
        .chat
        .respond_request(&b.phone, "+1 415 555 0100", chat_core::Answer::Accept)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        h.events(&a.phone),
        vec![Event::RequestAccepted {
            names: Names::new(),
            chat_id: room,
            from_user: b.phone.clone(),
            to_user: a.phone.clone(),
        }]
    );
    assert_eq!(
        h.events(&b.phone),
        vec![Event::RequestAccepted {
            names: Names::new(),
            chat_id: room,
            from_user: a.phone.clone(),
            to_user: b.phone.clone(),
        }]
    );
    let rooms = h.chat.active_rooms(&a.phone).await.unwrap();
    assert_eq!(rooms.len(), 1);
    assert_eq!(rooms[0].chat_id, room);
    assert_eq!(rooms[0].other_user, b.phone);
    assert_eq!(rooms[0].expires_at, START + 5_000 + 21_600_000);
    assert_eq!(
        h.chat.active_rooms(&b.phone).await.unwrap()[0].other_user,
        a.phone
    );
    assert!(h.chat.room_exists(&room.to_string()).await.unwrap());
    assert_eq!(
        h.chat
            .respond_request(&b.phone, "+14155550100", chat_core::Answer::Accept)
            .await,
        Err(Error::RequestNotFound),
        "accepted once"
    );
}

#[tokio::test]
async fn respond_decline_tells_the_requester() {
    let h = Harness::new();
    let a = h.register("+14155550100").await;
    let b = h.register("+14155550101").await;
    h.chat.send_request(&a.phone, "+14155550101").await.unwrap();
    h.clear();
    assert_eq!(
        h.chat
            .respond_request(&b.phone, "+14155550100", chat_core::Answer::Decline)
            .await,
        Ok(None)
    );
    assert_eq!(
        h.events(&a.phone),
        vec![Event::RequestDeclined {
            names: Names::new(),
            from_user: b.phone.clone(),
            to_user: a.phone.clone(),
        }]
    );
    assert!(h.events(&b.phone).is_empty());
    assert!(h.chat.requests(&a.phone).await.unwrap().sent.is_empty());
    assert!(h.chat.active_rooms(&a.phone).await.unwrap().is_empty());
}

#[tokio::test]
async fn respond_without_pending_request_is_request_not_found() {
    let h = Harness::new();
    let a = h.register("+14155550100").await;
    let b = h.register("+14155550101").await;
    for action in [chat_core::Answer::Accept, chat_core::Answer::Decline] {
        assert_eq!(
            h.chat
                .respond_request(&b.phone, "+14155550100", action)
                .await,
            Err(Error::RequestNotFound)
        );
    }
    // The requester cannot answer their own request.
    h.chat.send_request(&a.phone, "+14155550101").await.unwrap();
    assert_eq!(
        h.chat
            .respond_request(&a.phone, "+14155550101", chat_core::Answer::Accept)
            .await,
        Err(Error::RequestNotFound)
    );
}

#[test]
fn an_action_is_accept_or_decline() {
    use chat_core::Answer;
    assert_eq!("accept".parse::<Answer>(), Ok(Answer::Accept));
    assert_eq!("decline".parse::<Answer>(), Ok(Answer::Decline));
    for action in ["maybe", "ACCEPT", "", "accept "] {
        assert!(
            matches!(action.parse::<Answer>(), Err(Error::BadRequest(_))),
            "{action:?}"
        );
    }
}

#[tokio::test]
async fn cancel_request_tells_the_recipient() {
    let h = Harness::new();
    let a = h.register("+14155550100").await;
    let b = h.register("+14155550101").await;
    assert_eq!(
        h.chat.cancel_request(&a.phone, "+14155550101").await,
        Err(Error::RequestNotFound)
    );
    h.chat.send_request(&a.phone, "+14155550101").await.unwrap();
    h.clear();
    h.chat
        .cancel_request(&a.phone, "+14155550101")
        .await
        .unwrap();
    assert_eq!(
        h.events(&b.phone),
        vec![Event::RequestCancelled {
            names: Names::new(),
            from_user: a.phone.clone(),
            to_user: b.phone.clone(),
        }]
    );
    assert!(h.chat.requests(&b.phone).await.unwrap().incoming.is_empty());
    assert_eq!(
        h.chat.cancel_request(&a.phone, "+14155550101").await,
        Err(Error::RequestNotFound)
    );
    // Only the requester can cancel.
    h.chat.send_request(&a.phone, "+14155550101").await.unwrap();
    assert_eq!(
        h.chat.cancel_request(&b.phone, "+14155550100").await,
        Err(Error::RequestNotFound)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_accepts_make_one_room() {
    let h = Harness::new();
    let a = h.register("+14155550100").await;
    let b = h.register("+14155550101").await;
    h.chat.send_request(&a.phone, "+14155550101").await.unwrap();
    h.clear();
    let mut tasks = JoinSet::new();
    for _ in 0..20 {
        let (chat, me) = (h.chat.clone(), b.phone.clone());
        tasks.spawn(async move {
            chat.respond_request(&me, "+14155550100", chat_core::Answer::Accept)
                .await
        });
    }
    let results = tasks.join_all().await;
    let rooms: Vec<RoomId> = results
        .iter()
        .filter_map(|r| r.clone().ok().flatten())
        .collect();
    let not_found = results
        .iter()
        .filter(|r| **r == Err(Error::RequestNotFound))
        .count();
    assert_eq!((rooms.len(), not_found), (1, 19), "{results:?}");
    assert_eq!(h.chat.active_rooms(&a.phone).await.unwrap().len(), 1);
    assert_eq!(h.events(&a.phone).len(), 1, "one request_accepted each");
    assert_eq!(h.events(&b.phone).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_racing_a_crossed_request_makes_one_room() {
    for _ in 0..20 {
        let h = Harness::new();
        let a = h.register("+14155550100").await;
        let b = h.register("+14155550101").await;
        h.chat.send_request(&a.phone, "+14155550101").await.unwrap();
        let (c1, c2, b1, b2) = (
            h.chat.clone(),
            h.chat.clone(),
            b.phone.clone(),
            b.phone.clone(),
        );
        let accept = tokio::spawn(async move {
            c1.respond_request(&b1, "+14155550100", chat_core::Answer::Accept)
                .await
        });
        let cross = tokio::spawn(async move { c2.send_request(&b2, "+14155550100").await });
        let (accept, cross) = (accept.await.unwrap(), cross.await.unwrap());
        match (&accept, &cross) {
            (Ok(Some(room)), Err(Error::RoomExists { chat_id })) => assert_eq!(room, chat_id),
            (Err(Error::RequestNotFound), Ok(RequestSent::Accepted(_))) => {}
            other => panic!("two answers that are not one room: {other:?}"),
        }
        assert_eq!(h.chat.active_rooms(&a.phone).await.unwrap().len(), 1);
    }
}

// -------------------------------------------------------------------------------- rooms

#[tokio::test]
async fn room_expires_after_ttl_telling_online_members_only() {
    let h = Harness::new();
    let a = h.register("+14155550100").await;
    let b = h.register("+14155550101").await;
    h.connect(&a.phone).await; // A stays online; B's window ends at 600 s
    let room = h.room(&a, &b).await;
    h.send(&a.phone, room, "hi").await;
    h.pass(21_599).await;
    assert!(h.chat.room_exists(&room.to_string()).await.unwrap());
    assert!(!h.chat.is_online(&b.phone).await.unwrap());
    h.clear();
    h.pass(1).await;
    assert!(!h.chat.room_exists(&room.to_string()).await.unwrap());
    assert_eq!(h.events(&a.phone), vec![Event::RoomExpired { room }]);
    assert!(h.events(&b.phone).is_empty(), "B is offline");
    assert_eq!(
        h.chat
            .history(&a.phone, &room.to_string(), None, None)
            .await,
        Err(Error::RoomNotFound),
        "its messages go with it"
    );
}

#[tokio::test]
async fn room_expires_once_both_members_idle() {
    let h = Harness::new();
    let a = h.register("+14155550100").await;
    let b = h.register("+14155550101").await;
    let ca = h.connect(&a.phone).await;
    let cb = h.connect(&b.phone).await;
    let room = h.room(&a, &b).await;
    h.pass(700).await; // both online on sockets only now
    h.chat.disconnect(&a.phone, &ca).await.unwrap();
    h.pass(100).await;
    h.chat.disconnect(&b.phone, &cb).await.unwrap();
    h.pass(1).await;
    assert!(!h.chat.is_online(&b.phone).await.unwrap());
    h.clear();
    // 300 s after the later of the two went offline.
    h.pass(299).await;
    assert!(h.chat.room_exists(&room.to_string()).await.unwrap());
    h.pass(1).await;
    assert!(!h.chat.room_exists(&room.to_string()).await.unwrap());
    assert!(h.sink.take().is_empty(), "nobody online to tell");
}

#[tokio::test]
async fn room_survives_idle_when_a_member_returns() {
    let h = Harness::new();
    let a = h.register("+14155550100").await;
    let b = h.register("+14155550101").await;
    let room = h.room(&a, &b).await;
    h.pass(600).await; // both offline now
    assert!(!h.chat.is_online(&a.phone).await.unwrap());
    h.pass(200).await;
    h.chat.authenticate_request(a.token.as_str()).await.unwrap(); // A is back before 300 s
    h.pass(200).await;
    assert!(h.chat.room_exists(&room.to_string()).await.unwrap());
    // A's new window ends 600 s after the request; then 300 s more.
    h.pass(400).await;
    assert!(h.chat.room_exists(&room.to_string()).await.unwrap());
    h.pass(300).await;
    assert!(!h.chat.room_exists(&room.to_string()).await.unwrap());
}

#[tokio::test]
async fn close_room_tells_both_members() {
    let h = Harness::new();
    let a = h.register("+14155550100").await;
    let b = h.register("+14155550101").await;
    let c = h.register("+14155550102").await;
    let room = h.room(&a, &b).await;
    let id = room.to_string();
    assert!(matches!(
        h.chat.close_room(&c.phone, &id).await,
        Err(Error::Forbidden(_))
    ));
    assert_eq!(
        h.chat.close_room(&a.phone, "not-a-uuid").await,
        Err(Error::RoomNotFound)
    );
    assert_eq!(
        h.chat
            .close_room(&a.phone, &RoomId::generate().to_string())
            .await,
        Err(Error::RoomNotFound)
    );
    h.clear();
    h.chat.close_room(&b.phone, &id).await.unwrap();
    let closed = Event::RoomClosed {
        room,
        by: b.phone.clone(),
    };
    assert_eq!(h.events(&a.phone), vec![closed.clone()]);
    assert_eq!(h.events(&b.phone), vec![closed]);
    assert!(h.events(&c.phone).is_empty());
    assert_eq!(
        h.chat.close_room(&a.phone, &id).await,
        Err(Error::RoomNotFound)
    );
    assert!(h.chat.active_rooms(&a.phone).await.unwrap().is_empty());
}

#[tokio::test]
async fn room_access_is_forbidden_for_non_members_and_not_found_for_bad_ids() {
    let h = Harness::new();
    let a = h.register("+14155550100").await;
    let b = h.register("+14155550101").await;
    let c = h.register("+14155550102").await;
    let id = h.room(&a, &b).await.to_string();
    let forbidden = |r: Result<(), Error>| assert!(matches!(r, Err(Error::Forbidden(_))), "{r:?}");
    forbidden(h.chat.history(&c.phone, &id, None, None).await.map(drop));
    forbidden(h.chat.join_room(&c.phone, &id, None).await.map(drop));
    forbidden(
        h.chat
            .send_message(&c.phone, &id, "hi".into(), None)
            .await
            .map(drop),
    );
    forbidden(h.chat.typing(&c.phone, &id, true).await);
    forbidden(h.chat.member_room(&c.phone, &id).await.map(drop));
    for bad in ["not-a-uuid", "", &RoomId::generate().to_string()] {
        assert_eq!(
            h.chat.history(&a.phone, bad, None, None).await,
            Err(Error::RoomNotFound)
        );
        assert_eq!(
            h.chat.join_room(&a.phone, bad, None).await,
            Err(Error::RoomNotFound)
        );
        assert_eq!(
            h.chat.send_message(&a.phone, bad, "hi".into(), None).await,
            Err(Error::RoomNotFound)
        );
        assert_eq!(
            h.chat.typing(&a.phone, bad, true).await,
            Err(Error::RoomNotFound)
        );
        assert!(!h.chat.room_exists(bad).await.unwrap());
    }
}

#[tokio::test]
async fn checks_answer_in_contract_order() {
    let h = Harness::new();
    let a = h.register("+14155550100").await;
    let b = h.register("+14155550101").await;
    let c = h.register("+14155550102").await;
    let id = h.room(&a, &b).await.to_string();
    // Identity (403) before field values (400).
    assert!(matches!(
        h.chat.send_message(&c.phone, &id, " ".into(), None).await,
        Err(Error::Forbidden(_))
    ));
    assert!(matches!(
        h.chat.history(&c.phone, &id, Some("x"), Some("0")).await,
        Err(Error::Forbidden(_))
    ));
    // Field values (400) before state (404).
    let unknown = RoomId::generate().to_string();
    assert_eq!(
        h.chat
            .send_message(&a.phone, &unknown, " ".into(), None)
            .await,
        Err(Error::EmptyMessage)
    );
    assert!(matches!(
        h.chat.history(&a.phone, &unknown, None, Some("0")).await,
        Err(Error::BadRequest(_))
    ));
    assert!(matches!(
        h.chat.join_room(&a.phone, &unknown, Some("x")).await,
        Err(Error::BadRequest(_))
    ));
}

// ----------------------------------------------------------------------------- messages

#[tokio::test]
async fn send_message_stores_and_publishes_to_the_room() {
    let h = Harness::new();
    let a = h.register("+14155550100").await;
    let b = h.register("+14155550101").await;
    let room = h.room(&a, &b).await;
    h.clock.advance(42);
    let text = "  hello, Ben  ";
    let m = h
        .chat
        .send_message(&a.phone, &room.to_string(), text.into(), Some("c1".into()))
        .await
        .unwrap();
    assert_eq!(m.message, text, "stored as sent");
    assert_eq!(m.sender, a.phone);
    assert_eq!(m.room, room);
    assert_eq!(m.timestamp, START + 42);
    assert_eq!(m.client_id.as_deref(), Some("c1"));
    assert_eq!(h.room_events(room), vec![Event::ReceiveMessage(m.clone())]);
    assert_eq!(h.chat.metrics().messages_total.load(Ordering::Relaxed), 1);
    let page = h
        .chat
        .history(&b.phone, &room.to_string(), None, None)
        .await
        .unwrap();
    assert_eq!(page.messages, vec![m]);
}

#[tokio::test]
async fn send_messages_answers_each_as_send_message_would() {
    let h = Harness::new();
    let a = h.register("+14155550100").await;
    let b = h.register("+14155550101").await;
    let c = h.register("+14155550102").await;
    let room = h.room(&a, &b).await;
    let other = h.room(&b, &c).await.to_string();
    let id = room.to_string();
    let out = |room: &str, text: &str, cid: Option<&str>| Outgoing {
        room: room.into(),
        text: text.into(),
        client_id: cid.map(Into::into),
    };
    let got = h
        .chat
        .send_messages(
            &a.phone,
            vec![
                out(&id, "one", Some("c1")),
                out(&id, " ", None),
                out(&other, " ", None),
                out("not-a-room", "x", None),
                out(&other, "not mine", None),
                out(&id, "one again", Some("c1")),
                out(&id, "two", None),
            ],
        )
        .await;
    assert_eq!(got.len(), 7, "{got:?}");
    let one = got[0].clone().unwrap();
    assert_eq!(got[1], Err(Error::EmptyMessage));
    // A non-member hears 403 before any 400, as alone.
    assert!(matches!(got[2], Err(Error::Forbidden(_))), "{:?}", got[2]);
    assert_eq!(got[3], Err(Error::RoomNotFound));
    assert!(matches!(got[4], Err(Error::Forbidden(_))), "{:?}", got[4]);
    assert_eq!(
        got[5],
        Ok(one.clone()),
        "a repeated client_id answers the first"
    );
    let two = got[6].clone().unwrap();
    assert_eq!((one.message.as_str(), two.message.as_str()), ("one", "two"));
    assert!(one.id < two.id);
    assert_eq!(
        h.room_events(room),
        vec![
            Event::ReceiveMessage(one.clone()),
            Event::ReceiveMessage(two.clone())
        ]
    );
    assert_eq!(
        h.chat.metrics().messages_total.load(Ordering::Relaxed),
        2,
        "only new messages count"
    );
    let page = h.chat.history(&b.phone, &id, None, None).await.unwrap();
    assert_eq!(page.messages, vec![one, two]);
    assert!(h.chat.send_messages(&a.phone, Vec::new()).await.is_empty());
}

#[tokio::test]
async fn empty_message_is_refused() {
    let h = Harness::new();
    let a = h.register("+14155550100").await;
    let b = h.register("+14155550101").await;
    let id = h.room(&a, &b).await.to_string();
    for text in ["", " ", "\n\t ", "\u{3000}\u{2003}\u{85}"] {
        assert_eq!(
            h.chat.send_message(&a.phone, &id, text.into(), None).await,
            Err(Error::EmptyMessage),
            "{text:?}"
        );
    }
    // Not white space: a zero-width joiner and a dot are text.
    h.chat
        .send_message(&a.phone, &id, ".".into(), None)
        .await
        .unwrap();
}

#[tokio::test]
async fn message_length_counts_unicode_scalar_values() {
    let h = Harness::new();
    let a = h.register("+14155550100").await;
    let b = h.register("+14155550101").await;
    let id = h.room(&a, &b).await.to_string();
    // 4096 scalar values of 4 bytes each: allowed, though 16 KiB.
    let max = "😀".repeat(4096);
    h.chat.send_message(&a.phone, &id, max, None).await.unwrap();
    let over = "é".repeat(4097);
    assert_eq!(
        h.chat.send_message(&a.phone, &id, over, None).await,
        Err(Error::MessageTooLong { max: 4096 })
    );
    // A decomposed character is two scalar values.
    let combining = format!("{}{}", "a".repeat(4095), "e\u{301}");
    assert_eq!(
        h.chat.send_message(&a.phone, &id, combining, None).await,
        Err(Error::MessageTooLong { max: 4096 })
    );
}

#[tokio::test]
async fn client_id_is_1_to_64_chars() {
    let h = Harness::new();
    let a = h.register("+14155550100").await;
    let b = h.register("+14155550101").await;
    let id = h.room(&a, &b).await.to_string();
    for bad in [String::new(), "x".repeat(65), "é".repeat(65)] {
        assert!(
            matches!(
                h.chat
                    .send_message(&a.phone, &id, "hi".into(), Some(bad.clone()))
                    .await,
                Err(Error::BadRequest(_))
            ),
            "{bad:?}"
        );
    }
    for good in ["x".to_string(), "é".repeat(64)] {
        h.chat
            .send_message(&a.phone, &id, "hi".into(), Some(good))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn client_id_makes_send_idempotent() {
    let h = Harness::new();
    let a = h.register("+14155550100").await;
    let b = h.register("+14155550101").await;
    let room = h.room(&a, &b).await;
    let id = room.to_string();
    let first = h
        .chat
        .send_message(&a.phone, &id, "once".into(), Some("k".into()))
        .await
        .unwrap();
    h.clock.advance(10);
    let again = h
        .chat
        .send_message(&a.phone, &id, "once".into(), Some("k".into()))
        .await
        .unwrap();
    assert_eq!(again, first, "a repeat is answered with the first message");
    // Another sender's same client_id is another message.
    let other = h
        .chat
        .send_message(&b.phone, &id, "mine".into(), Some("k".into()))
        .await
        .unwrap();
    assert_ne!(other.id, first.id);
    assert_eq!(h.room_events(room).len(), 2, "sent once each");
    assert_eq!(h.chat.metrics().messages_total.load(Ordering::Relaxed), 2);
    let page = h.chat.history(&a.phone, &id, None, None).await.unwrap();
    assert_eq!(page.messages, vec![first, other]);
}

#[tokio::test]
async fn history_pages_after_limit_and_more() {
    let h = Harness::new();
    let a = h.register("+14155550100").await;
    let b = h.register("+14155550101").await;
    let room = h.room(&a, &b).await;
    let id = room.to_string();
    let mut m = Vec::new();
    for i in 0..501 {
        m.push(h.send(&a.phone, room, &format!("m{i}")).await);
    }
    let page = h.chat.history(&b.phone, &id, None, None).await.unwrap();
    assert_eq!(page.messages, m[451..].to_vec(), "the latest 50 by default");
    assert!(page.more, "older ones exist");
    let page = h
        .chat
        .history(&b.phone, &id, Some(&m[5].id.to_string()), Some("10"))
        .await
        .unwrap();
    assert_eq!(
        page.messages,
        m[6..16].to_vec(),
        "strictly after, oldest first"
    );
    assert!(page.more, "newer ones exist");
    let page = h
        .chat
        .history(&b.phone, &id, Some(&m[495].id.to_string()), Some("10"))
        .await
        .unwrap();
    assert_eq!(page.messages, m[496..].to_vec());
    assert!(!page.more);
    let page = h
        .chat
        .history(&b.phone, &id, None, Some("5000"))
        .await
        .unwrap();
    assert_eq!(page.messages.len(), 500, "limit over 500 is cut to 500");
    assert!(page.more);
    for bad in ["0", "-1", "abc", "", "1e3"] {
        assert!(
            matches!(
                h.chat.history(&b.phone, &id, None, Some(bad)).await,
                Err(Error::BadRequest(_))
            ),
            "limit {bad:?}"
        );
    }
    for bad in ["abc", "1-", "-1", "1", "1-2-3", ""] {
        assert!(
            matches!(
                h.chat.history(&b.phone, &id, Some(bad), None).await,
                Err(Error::BadRequest(_))
            ),
            "after {bad:?}"
        );
    }
}

#[tokio::test]
async fn page_limit_parsing() {
    for bad in ["0", "-1", "abc", "", "00", "1.5", " 5"] {
        assert!(
            matches!(HISTORY_LIMIT.apply(Some(bad)), Err(Error::BadRequest(_))),
            "{bad:?}"
        );
    }
    assert_eq!(HISTORY_LIMIT.apply(None), Ok(50));
    assert_eq!(HISTORY_LIMIT.apply(Some("7")), Ok(7));
    assert_eq!(HISTORY_LIMIT.apply(Some("500")), Ok(500));
    assert_eq!(HISTORY_LIMIT.apply(Some("5000")), Ok(500));
    assert_eq!(
        HISTORY_LIMIT.apply(Some("99999999999999999999999999")),
        Ok(500)
    );
}

#[tokio::test]
async fn join_room_sends_last_50_or_up_to_500_after_since() {
    let h = Harness::new();
    let a = h.register("+14155550100").await;
    let b = h.register("+14155550101").await;
    let room = h.room(&a, &b).await;
    let id = room.to_string();
    let (got, page) = h.chat.join_room(&a.phone, &id, None).await.unwrap();
    assert_eq!(got, room);
    assert!(page.messages.is_empty() && !page.more);
    let mut m = Vec::new();
    for i in 0..520 {
        m.push(h.send(&b.phone, room, &format!("m{i}")).await);
    }
    let (_, page) = h.chat.join_room(&a.phone, &id, None).await.unwrap();
    assert_eq!(page.messages.len(), JOIN_HISTORY);
    assert_eq!(page.messages, m[470..].to_vec());
    assert!(page.more);
    let (_, page) = h
        .chat
        .join_room(&a.phone, &id, Some(&m[0].id.to_string()))
        .await
        .unwrap();
    assert_eq!(page.messages, m[1..501].to_vec(), "up to 500 after since");
    assert!(page.more, "the rest over REST");
    let (_, page) = h
        .chat
        .join_room(&a.phone, &id, Some(&m[499].id.to_string()))
        .await
        .unwrap();
    assert_eq!(page.messages, m[500..].to_vec(), "exactly what was missed");
    assert!(!page.more);
    assert!(matches!(
        h.chat.join_room(&a.phone, &id, Some("nope")).await,
        Err(Error::BadRequest(_))
    ));
}

#[tokio::test]
async fn join_and_leave_are_announced_to_the_room() {
    let h = Harness::new();
    let a = h.register("+14155550100").await;
    let b = h.register("+14155550101").await;
    let room = h.room(&a, &b).await;
    h.clear();
    let conn = h.chat.new_conn();
    h.chat.announce_join(&a, room).await;
    h.chat.announce_leave(&a.phone, room, &conn).await;
    assert_eq!(
        h.sink.take(),
        vec![
            Delivery::to_room(
                room,
                Event::UserJoined {
                    names: Names::new(),
                    room,
                    user: a.phone.clone()
                }
            ),
            Delivery::to_room(
                room,
                Event::UserLeft {
                    room,
                    user: a.phone.clone()
                }
            )
            .except(Except::Conn(conn)),
        ]
    );
}

#[tokio::test]
async fn typing_goes_to_the_room_except_the_typist() {
    let h = Harness::new();
    let a = h.register("+14155550100").await;
    let b = h.register("+14155550101").await;
    let room = h.room(&a, &b).await;
    h.clear();
    h.chat
        .typing(&a.phone, &room.to_string(), true)
        .await
        .unwrap();
    h.chat
        .typing(&a.phone, &room.to_string(), false)
        .await
        .unwrap();
    let typing = |on: bool| {
        Delivery::to_room(
            room,
            Event::Typing {
                room,
                user: a.phone.clone(),
                typing: on,
            },
        )
        .except(Except::User(a.phone.clone()))
    };
    assert_eq!(h.sink.take(), vec![typing(true), typing(false)]);
    // Not stored.
    let page = h
        .chat
        .history(&b.phone, &room.to_string(), None, None)
        .await
        .unwrap();
    assert!(page.messages.is_empty());
}

// -------------------------------------------------------------------------------- nodes

#[tokio::test]
async fn dead_node_sockets_are_reaped_and_the_user_goes_offline() {
    let h = Harness::new();
    let node2 = h.node("node-2");
    let a = h.register("+14155550100").await;
    let b = h.register("+14155550101").await;
    h.connect(&a.phone).await;
    h.chat.send_request(&a.phone, "+14155550101").await.unwrap();
    // B's socket lives on node 2.
    let conn = node2.new_conn();
    node2.connect(&b.phone, &conn).await.unwrap();
    // Both nodes alive past B's HTTP window: B stays online by the socket.
    for _ in 0..700 {
        h.clock.advance(1000);
        node2.tick().await.unwrap();
        h.chat.tick().await.unwrap();
    }
    assert!(h.chat.is_online(&b.phone).await.unwrap());
    h.clear();
    // Node 2 dies without a word: within node_ttl (10 s) its sockets stop counting.
    let mut orphaned = 0;
    for _ in 0..11 {
        h.clock.advance(1000);
        orphaned += h.chat.tick().await.unwrap().orphaned_users;
    }
    assert_eq!(orphaned, 1);
    assert!(!h.chat.is_online(&b.phone).await.unwrap());
    assert_eq!(h.events(&a.phone), vec![presence(&b.phone, false)]);
    assert!(
        h.chat
            .online_users(&a.phone, None, None)
            .await
            .unwrap()
            .phones
            == vec![a.phone.clone()]
    );
}

#[tokio::test]
async fn a_node_leaving_cleanly_drops_its_sockets_at_once() {
    let h = Harness::new();
    let node2 = h.node("node-2");
    let a = h.register("+14155550100").await;
    let b = h.register("+14155550101").await;
    h.connect(&a.phone).await;
    h.chat.send_request(&a.phone, "+14155550101").await.unwrap();
    let conn = node2.new_conn();
    node2.connect(&b.phone, &conn).await.unwrap();
    // Both nodes alive past B's HTTP window: B stays online by the socket.
    for _ in 0..700 {
        h.clock.advance(1000);
        node2.tick().await.unwrap();
        h.chat.tick().await.unwrap();
    }
    assert!(h.chat.is_online(&b.phone).await.unwrap());
    h.clear();
    node2.leave_cluster().await.unwrap();
    h.pass(1).await;
    assert!(!h.chat.is_online(&b.phone).await.unwrap());
    assert_eq!(h.events(&a.phone), vec![presence(&b.phone, false)]);
}

// -------------------------------------------------------------------------------- churn

async fn churn(h: &Harness, round: u32) -> Vec<User> {
    let mut users = Vec::new();
    for i in 0..24u32 {
        users.push(h.register(&format!("+1415{round:03}{i:04}")).await);
    }
    let mut conns = Vec::new();
    for u in &users {
        conns.push((u.phone.clone(), h.connect(&u.phone).await));
    }
    for pair in users.chunks(4) {
        let [a, b, c, d] = [&pair[0], &pair[1], &pair[2], &pair[3]];
        // A room with messages, one closed room, a declined, a cancelled and a pending request.
        let room = h.room(a, b).await;
        for n in 0..5 {
            h.chat
                .send_message(
                    &a.phone,
                    &room.to_string(),
                    format!("m{n}"),
                    Some(format!("{n}")),
                )
                .await
                .unwrap();
        }
        let closed = h.room(c, d).await;
        h.chat
            .close_room(&c.phone, &closed.to_string())
            .await
            .unwrap();
        h.chat
            .send_request(&a.phone, c.phone.as_str())
            .await
            .unwrap();
        h.chat
            .respond_request(&c.phone, a.phone.as_str(), chat_core::Answer::Decline)
            .await
            .unwrap();
        h.chat
            .send_request(&b.phone, d.phone.as_str())
            .await
            .unwrap();
        h.chat
            .cancel_request(&b.phone, d.phone.as_str())
            .await
            .unwrap();
        h.chat
            .send_request(&d.phone, a.phone.as_str())
            .await
            .unwrap();
        h.chat
            .typing(&a.phone, &room.to_string(), true)
            .await
            .unwrap();
    }
    assert!(h.store.footprint().unwrap() > 0);
    for (phone, conn) in &conns {
        h.chat.disconnect(phone, conn).await.unwrap();
    }
    users
}

#[tokio::test]
async fn churn_leaves_nothing_behind() {
    let h = Harness::new();
    for round in 0..3u32 {
        let users = churn(&h, round).await;
        // Past every lifetime: presence, session idle, request and room TTLs, timer leases.
        h.pass(600 + 21_600 + 60).await;
        assert_eq!(
            h.store.footprint().unwrap(),
            0,
            "round {round} left state behind"
        );
        for u in &users {
            assert_eq!(
                h.chat.authenticate_socket(u.token.as_str()).await,
                Err(Error::Unauthorized)
            );
        }
        h.clear();
    }
}

#[tokio::test]
async fn what_ends_is_freed_before_its_ttl() {
    // Rooms and requests that would live for weeks: their sessions' end frees them (and their
    // deadlines) at once.
    let h = Harness::with_config(Config {
        room_ttl_secs: 5_000_000,
        request_ttl_secs: 5_000_000,
        ..Config::default()
    });
    churn(&h, 7).await;
    h.pass(600 + 21_600 + 60).await;
    assert_eq!(h.store.footprint().unwrap(), 0);
}

#[tokio::test]
async fn presence_of_unrelated_users_is_not_published() {
    // Guards the fan-out: a user with no peers going on and off publishes nothing at all.
    let h = Harness::new();
    let a = h.register("+14155550100").await;
    h.pass(600).await;
    let c = h.connect(&a.phone).await;
    h.chat.disconnect(&a.phone, &c).await.unwrap();
    h.pass(1).await;
    assert!(h.sink.take().is_empty());
}

// ------------------------------------------------------------------------------- v3

#[tokio::test]
async fn names_travel_with_phones() {
    // No decline cooldown: A asks B again right after B declines.
    let h = Harness::with_config(Config {
        decline_cooldown_secs: 0,
        ..Config::default()
    });
    let named = |phone: &'static str, name: &'static str| {
        let chat = h.chat.clone();
        async move {
            chat.register(phone, Some(name.into()), None)
                .await
                .unwrap()
                .session
        }
    };
    let a = named("+14155550100", "  Asha ").await;
    let b = named("+14155550101", "Ben").await;
    let c = named("+14155550102", "   ").await;
    assert_eq!(a.name.as_deref(), Some("Asha"), "trimmed");
    assert_eq!(c.name, None, "white space is no name");
    let nobody = Phone::parse("+14155550199").unwrap();
    let asha = || (a.phone.clone(), "Asha".to_owned());
    let ben = || (b.phone.clone(), "Ben".to_owned());
    let both = || Names::from([asha(), ben()]);
    assert_eq!(
        h.chat
            .names(&[a.phone.clone(), b.phone.clone(), c.phone.clone(), nobody])
            .await
            .unwrap(),
        both()
    );
    let b_conn = h.connect(&b.phone).await;
    h.clear();

    // Requests, declines, cancels and accepts name both users.
    h.chat
        .send_request(&a.phone, b.phone.as_str())
        .await
        .unwrap();
    h.chat
        .respond_request(&b.phone, a.phone.as_str(), chat_core::Answer::Decline)
        .await
        .unwrap();
    h.chat
        .send_request(&a.phone, b.phone.as_str())
        .await
        .unwrap();
    h.chat
        .cancel_request(&a.phone, b.phone.as_str())
        .await
        .unwrap();
    h.chat
        .send_request(&a.phone, b.phone.as_str())
        .await
        .unwrap();
    let room = h
        .chat
        .respond_request(&b.phone, a.phone.as_str(), chat_core::Answer::Accept)
        .await
        .unwrap()
        .unwrap();
    let requested = Event::ChatRequest {
        from: a.phone.clone(),
        to: b.phone.clone(),
        created_at: START,
        names: both(),
    };
    assert_eq!(
        h.events(&b.phone),
        vec![
            requested.clone(),
            requested.clone(),
            Event::RequestCancelled {
                from_user: a.phone.clone(),
                to_user: b.phone.clone(),
                names: both(),
            },
            requested,
            Event::RequestAccepted {
                chat_id: room,
                from_user: a.phone.clone(),
                to_user: b.phone.clone(),
                names: both(),
            },
        ]
    );
    assert_eq!(
        h.events(&a.phone),
        vec![
            Event::RequestDeclined {
                from_user: b.phone.clone(),
                to_user: a.phone.clone(),
                names: both(),
            },
            Event::RequestAccepted {
                chat_id: room,
                from_user: b.phone.clone(),
                to_user: a.phone.clone(),
                names: both(),
            },
        ]
    );
    // Presence and user_joined name the user they are about.
    h.clear();
    h.chat.announce_join(&a, room).await;
    assert_eq!(
        h.room_events(room),
        vec![Event::UserJoined {
            room,
            user: a.phone.clone(),
            names: Names::from([asha()]),
        }]
    );
    h.chat.disconnect(&b.phone, &b_conn).await.unwrap();
    h.pass(h.config.presence_grace_secs).await;
    assert_eq!(
        h.events(&a.phone),
        vec![Event::Presence {
            phone: b.phone.clone(),
            online: false,
            names: Names::from([ben()]),
        }]
    );
}

#[tokio::test]
async fn the_last_socket_closing_ends_presence_within_the_grace() {
    let h = Harness::new();
    assert_eq!(h.config.presence_grace_secs, 5);
    // A registered just now: an HTTP window of 600 s.
    let a = h.register("+14155550100").await;
    let b = h.register("+14155550101").await;
    h.connect(&b.phone).await;
    h.chat
        .send_request(&a.phone, b.phone.as_str())
        .await
        .unwrap();
    let c1 = h.connect(&a.phone).await;
    h.clear();

    // A closes the page: offline within the grace, not 600 s later.
    h.chat.disconnect(&a.phone, &c1).await.unwrap();
    h.pass(4).await;
    assert!(
        h.chat.is_online(&a.phone).await.unwrap(),
        "within the grace"
    );
    h.pass(1).await;
    assert!(!h.chat.is_online(&a.phone).await.unwrap());
    assert_eq!(h.events(&b.phone), vec![presence(&a.phone, false)]);

    // An API request after that opens a full window again.
    h.clear();
    h.chat.authenticate_request(a.token.as_str()).await.unwrap();
    h.pass(500).await;
    assert!(h.chat.is_online(&a.phone).await.unwrap());
    assert_eq!(h.events(&b.phone), vec![presence(&a.phone, true)]);

    // A reload: the socket closes and another opens within the grace. No flap.
    h.clear();
    let c2 = h.connect(&a.phone).await;
    h.chat.disconnect(&a.phone, &c2).await.unwrap();
    h.pass(3).await;
    let c3 = h.connect(&a.phone).await;
    h.pass(60).await;
    assert!(h.chat.is_online(&a.phone).await.unwrap());
    assert!(h.events(&b.phone).is_empty(), "{:?}", h.events(&b.phone));
    // Its own close starts a new grace from that moment.
    h.chat.disconnect(&a.phone, &c3).await.unwrap();
    h.pass(5).await;
    assert_eq!(h.events(&b.phone), vec![presence(&a.phone, false)]);

    // A grace never lengthens a window: a user whose window already ended goes at once.
    let zero = Harness::with_config(Config {
        presence_grace_secs: 0,
        ..Config::default()
    });
    let z = zero.register("+14155550102").await;
    let cz = zero.connect(&z.phone).await;
    zero.chat.disconnect(&z.phone, &cz).await.unwrap();
    zero.pass(1).await;
    assert!(!zero.chat.is_online(&z.phone).await.unwrap());
}
