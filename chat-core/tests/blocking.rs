//! The rules of "keeping unwanted people out": blocks, the decline cooldown and the pending
//! cap, one test per rule, over the in-memory store, a `ManualClock` and a `RecordingSink`.

#![allow(clippy::unwrap_used)] // helpers too (clippy.toml covers #[test] fns only)

mod support;

use support::Harness;

use chat_core::{
    Answer, Audience, Config, ConnKey, Error, Event, MAX_BLOCKED, Names, Phone, RequestSent, RoomId,
};

impl Harness {
    async fn register(&self, phone: &str) -> Phone {
        self.chat
            .register(phone, None, None)
            .await
            .unwrap()
            .session
            .phone
    }

    async fn connect(&self, phone: &Phone) -> ConnKey {
        let conn = self.chat.new_conn();
        self.chat.connect(phone, &conn).await.unwrap();
        conn
    }

    async fn room(&self, a: &Phone, b: &Phone) -> RoomId {
        self.chat.send_request(a, b.as_str()).await.unwrap();
        self.chat
            .respond_request(b, a.as_str(), Answer::Accept)
            .await
            .unwrap()
            .unwrap()
    }

    fn events(&self, phone: &Phone) -> Vec<Event> {
        self.sink.events_for(&Audience::User(phone.clone()))
    }

    fn clear(&self) {
        self.sink.take();
    }

    /// Moves time forward `secs` seconds, ticking after every second.
    async fn pass(&self, secs: u64) {
        for _ in 0..secs {
            self.clock.advance(1000);
            self.chat.tick().await.unwrap();
        }
    }
}

fn presence(phone: &Phone, online: bool) -> Event {
    Event::Presence {
        phone: phone.clone(),
        online,
        names: Names::new(),
    }
}

#[tokio::test]
async fn block_unblock_and_list() {
    let h = Harness::new();
    let a = h.register("+14155550100").await;
    let b = h.register("+14155550101").await;
    assert!(h.chat.blocked(&a).await.unwrap().is_empty());
    h.chat.block(&a, "+1 415 555 0101").await.unwrap();
    // A phone nobody registered: blocked all the same, so blocking reveals nothing.
    h.chat.block(&a, "+14155550199").await.unwrap();
    // Again: no error, no duplicate.
    h.chat.block(&a, "+14155550101").await.unwrap();
    let listed = h.chat.blocked(&a).await.unwrap();
    assert_eq!(
        listed,
        vec![b.clone(), Phone::parse("+14155550199").unwrap()]
    );
    assert!(h.chat.blocked(&b).await.unwrap().is_empty(), "per blocker");
    h.chat.unblock(&a, "+14155550101").await.unwrap();
    h.chat.unblock(&a, "+14155550188").await.unwrap();
    assert_eq!(
        h.chat.blocked(&a).await.unwrap(),
        vec![Phone::parse("+14155550199").unwrap()]
    );
}

#[tokio::test]
async fn block_refuses_own_and_invalid_phones() {
    let h = Harness::new();
    let a = h.register("+14155550100").await;
    assert!(matches!(
        h.chat.block(&a, "+1 (415) 555-0100").await,
        Err(Error::BadRequest(_))
    ));
    assert!(matches!(
        h.chat.unblock(&a, "+14155550100").await,
        Err(Error::BadRequest(_))
    ));
    assert_eq!(h.chat.block(&a, "12").await, Err(Error::InvalidPhone));
    assert_eq!(h.chat.unblock(&a, "x").await, Err(Error::InvalidPhone));
}

#[tokio::test]
async fn at_most_max_blocked_phones() {
    let h = Harness::new();
    let a = h.register("+14155550100").await;
    for i in 0..MAX_BLOCKED {
        h.chat.block(&a, &format!("+1212{i:07}")).await.unwrap();
    }
    assert_eq!(
        h.chat.block(&a, "+13105550000").await,
        Err(Error::TooManyBlocked { max: MAX_BLOCKED })
    );
    assert_eq!(Error::TooManyBlocked { max: 1 }.code(), "too_many_blocked");
    // One already blocked is no new one.
    h.chat.block(&a, "+12120000007").await.unwrap();
    h.chat.unblock(&a, "+12120000007").await.unwrap();
    h.chat.block(&a, "+13105550000").await.unwrap();
}

#[tokio::test]
async fn blocked_user_request_is_user_not_found_both_ways() {
    let h = Harness::new();
    let a = h.register("+14155550100").await;
    let b = h.register("+14155550101").await;
    h.chat.block(&a, b.as_str()).await.unwrap();
    h.clear();
    assert_eq!(
        h.chat.send_request(&b, a.as_str()).await,
        Err(Error::UserNotFound),
        "exactly as if A were offline"
    );
    assert_eq!(
        h.chat.send_request(&a, b.as_str()).await,
        Err(Error::UserNotFound)
    );
    assert!(h.events(&a).is_empty() && h.events(&b).is_empty());
    h.chat.unblock(&a, b.as_str()).await.unwrap();
    assert_eq!(
        h.chat.send_request(&b, a.as_str()).await,
        Ok(RequestSent::Sent)
    );
}

#[tokio::test]
async fn block_drops_their_request_silently() {
    let h = Harness::new();
    let a = h.register("+14155550100").await;
    let b = h.register("+14155550101").await;
    h.chat.send_request(&b, a.as_str()).await.unwrap();
    h.clear();
    h.chat.block(&a, b.as_str()).await.unwrap();
    assert!(h.chat.requests(&a).await.unwrap().incoming.is_empty());
    assert!(h.chat.requests(&b).await.unwrap().sent.is_empty());
    assert!(h.events(&b).is_empty(), "B is not told");
    assert!(h.events(&a).is_empty());
    assert_eq!(
        h.chat.respond_request(&a, b.as_str(), Answer::Accept).await,
        Err(Error::RequestNotFound)
    );
}

#[tokio::test]
async fn block_cancels_own_request() {
    let h = Harness::new();
    let a = h.register("+14155550100").await;
    let b = h.register("+14155550101").await;
    h.chat.send_request(&a, b.as_str()).await.unwrap();
    h.clear();
    h.chat.block(&a, b.as_str()).await.unwrap();
    assert!(h.chat.requests(&b).await.unwrap().incoming.is_empty());
    assert_eq!(
        h.events(&b),
        vec![Event::RequestCancelled {
            from_user: a.clone(),
            to_user: b.clone(),
            names: Names::new(),
        }]
    );
    assert_eq!(
        h.chat.respond_request(&b, a.as_str(), Answer::Accept).await,
        Err(Error::RequestNotFound)
    );
}

#[tokio::test]
async fn block_closes_their_room() {
    let h = Harness::new();
    let a = h.register("+14155550100").await;
    let b = h.register("+14155550101").await;
    let room = h.room(&a, &b).await;
    h.clear();
    h.chat.block(&b, a.as_str()).await.unwrap();
    let closed = Event::RoomClosed {
        room,
        by: b.clone(),
    };
    assert_eq!(h.events(&a), vec![closed.clone()]);
    assert_eq!(h.events(&b), vec![closed]);
    assert!(h.chat.active_rooms(&a).await.unwrap().is_empty());
    assert_eq!(
        h.chat
            .send_message(&a, &room.to_string(), "hi".into(), None)
            .await,
        Err(Error::RoomNotFound)
    );
}

#[tokio::test]
async fn blocked_pairs_do_not_see_each_other_online() {
    let h = Harness::new();
    let a = h.register("+14155550100").await;
    let b = h.register("+14155550101").await;
    let c = h.register("+14155550102").await;
    h.chat.block(&a, b.as_str()).await.unwrap();
    let listed = |me: Phone| {
        let chat = h.chat.clone();
        async move { chat.online_users(&me, None, None).await.unwrap().phones }
    };
    assert_eq!(listed(a.clone()).await, vec![a.clone(), c.clone()]);
    assert_eq!(listed(b.clone()).await, vec![b.clone(), c.clone()]);
    assert_eq!(
        listed(c.clone()).await,
        vec![a.clone(), b.clone(), c.clone()]
    );
    // Paging over hidden users: a page may be short, the walk still ends with everyone else.
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = h.chat.online_users(&b, cursor, Some("1")).await.unwrap();
        assert!(page.phones.len() <= 1);
        seen.extend(page.phones);
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(seen, vec![b.clone(), c.clone()]);
    h.chat.unblock(&a, b.as_str()).await.unwrap();
    assert_eq!(listed(b.clone()).await, vec![a, b, c]);
}

#[tokio::test]
async fn no_presence_between_blocked_users() {
    let h = Harness::new();
    let a = h.register("+14155550100").await;
    let b = h.register("+14155550101").await;
    let c = h.register("+14155550102").await;
    // C shares a room with both; A and B share a request.
    h.room(&c, &a).await;
    h.room(&c, &b).await;
    h.chat.send_request(&b, a.as_str()).await.unwrap();
    h.chat.block(&a, b.as_str()).await.unwrap();
    h.clear();
    // B goes offline (window over) and back: C is told, A is not.
    h.pass(601).await;
    assert!(!h.chat.is_online(&b).await.unwrap());
    h.connect(&b).await;
    assert!(h.events(&a).iter().all(|e| !matches!(e,
        Event::Presence { phone, .. } if phone == &b)));
    assert!(h.events(&c).contains(&presence(&b, true)));
    // Nor does A's presence reach B.
    h.clear();
    h.connect(&a).await;
    assert!(h.events(&b).iter().all(|e| !matches!(e,
        Event::Presence { phone, .. } if phone == &a)));
}

#[tokio::test]
async fn blocks_end_with_the_session() {
    let h = Harness::new();
    let a = h.register("+14155550100").await;
    let b = h.register("+14155550101").await;
    h.chat.block(&a, b.as_str()).await.unwrap();
    let before = h.store.footprint().unwrap();
    // A goes offline, the session idles out and ends; a new session of A starts with none.
    h.pass(600 + 21_600 + 2).await;
    assert!(h.store.footprint().unwrap() < before);
    let a = h.register("+14155550100").await;
    assert!(h.chat.blocked(&a).await.unwrap().is_empty());
    let _b = h.register("+14155550101").await;
    assert_eq!(
        h.chat.send_request(&a, b.as_str()).await,
        Ok(RequestSent::Sent)
    );
}

#[tokio::test]
async fn pending_requests_are_capped() {
    let h = Harness::with_config(Config {
        max_pending_requests: 2,
        ..Config::default()
    });
    let a = h.register("+14155550100").await;
    let b = h.register("+14155550101").await;
    let c = h.register("+14155550102").await;
    let d = h.register("+14155550103").await;
    h.chat.send_request(&a, b.as_str()).await.unwrap();
    h.chat.send_request(&a, c.as_str()).await.unwrap();
    h.clear();
    assert_eq!(
        h.chat.send_request(&a, d.as_str()).await,
        Err(Error::TooManyPending { max: 2 })
    );
    assert_eq!(Error::TooManyPending { max: 2 }.code(), "too_many_pending");
    assert!(h.events(&d).is_empty());
    // The same one again is still already_pending; a crossed request still accepts.
    assert_eq!(
        h.chat.send_request(&a, b.as_str()).await,
        Err(Error::AlreadyPending)
    );
    h.chat.send_request(&d, a.as_str()).await.unwrap();
    assert!(matches!(
        h.chat.send_request(&a, d.as_str()).await,
        Ok(RequestSent::Accepted(_))
    ));
    // A cancelled one frees a place.
    h.chat.cancel_request(&a, c.as_str()).await.unwrap();
    let e = h.register("+14155550104").await;
    h.chat.send_request(&a, e.as_str()).await.unwrap();
}

#[tokio::test]
async fn decline_starts_a_cooldown() {
    let h = Harness::with_config(Config {
        decline_cooldown_secs: 600,
        presence_secs: 100_000,
        ..Config::default()
    });
    let a = h.register("+14155550100").await;
    let b = h.register("+14155550101").await;
    h.chat.send_request(&a, b.as_str()).await.unwrap();
    h.chat
        .respond_request(&b, a.as_str(), Answer::Decline)
        .await
        .unwrap();
    assert_eq!(
        h.chat.send_request(&a, b.as_str()).await,
        Err(Error::RateLimited {
            retry_after_secs: 600
        })
    );
    h.clock.advance(1);
    assert_eq!(
        h.chat.send_request(&a, b.as_str()).await,
        Err(Error::RateLimited {
            retry_after_secs: 600
        }),
        "whole seconds, rounded up"
    );
    h.clock.advance(599_000);
    assert_eq!(
        h.chat.send_request(&a, b.as_str()).await,
        Err(Error::RateLimited {
            retry_after_secs: 1
        })
    );
    // Over: A may ask again.
    h.clock.advance(999);
    assert_eq!(
        h.chat.send_request(&a, b.as_str()).await,
        Ok(RequestSent::Sent)
    );
}

#[tokio::test]
async fn cooldown_is_one_way_and_per_pair() {
    let h = Harness::new();
    let a = h.register("+14155550100").await;
    let b = h.register("+14155550101").await;
    let c = h.register("+14155550102").await;
    h.chat.send_request(&a, b.as_str()).await.unwrap();
    h.chat
        .respond_request(&b, a.as_str(), Answer::Decline)
        .await
        .unwrap();
    assert_eq!(
        h.chat.send_request(&a, c.as_str()).await,
        Ok(RequestSent::Sent)
    );
    assert_eq!(
        h.chat.send_request(&b, a.as_str()).await,
        Ok(RequestSent::Sent)
    );
    // A cancel starts none.
    h.chat.cancel_request(&a, c.as_str()).await.unwrap();
    assert_eq!(
        h.chat.send_request(&a, c.as_str()).await,
        Ok(RequestSent::Sent)
    );
}

#[tokio::test]
async fn block_racing_accept_leaves_no_room_or_request() {
    for _ in 0..50 {
        let h = Harness::new();
        let a = h.register("+14155550100").await;
        let b = h.register("+14155550101").await;
        h.chat.send_request(&a, b.as_str()).await.unwrap();
        let (chat1, chat2) = (h.chat.clone(), h.chat.clone());
        let (a2, b2) = (a.clone(), b.clone());
        let accept = tokio::spawn(async move {
            chat1
                .respond_request(&b2, a2.as_str(), Answer::Accept)
                .await
        });
        let (a3, b3) = (a.clone(), b.clone());
        let block = tokio::spawn(async move { chat2.block(&a3, b3.as_str()).await });
        let _ = accept.await.unwrap();
        block.await.unwrap().unwrap();
        assert!(h.chat.active_rooms(&a).await.unwrap().is_empty());
        assert!(h.chat.active_rooms(&b).await.unwrap().is_empty());
        let r = h.chat.requests(&a).await.unwrap();
        assert!(r.incoming.is_empty() && r.sent.is_empty());
    }
}
