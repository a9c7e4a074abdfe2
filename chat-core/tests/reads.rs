//! The read-mark rules of the wire contract (v3 "Read marks", `mark_read`, `read`), one test per
//! rule, over the in-memory store with a `ManualClock` and a `RecordingSink` on its bus.

#![allow(clippy::unwrap_used)] // helpers too (clippy.toml covers #[test] fns only)

mod support;

use chat_core::store::UNREAD_MAX;
use support::Harness;

use chat_core::{
    Answer, Delivery, Error, Event, Except, Message, MessageId, Phone, ReadMarks, RoomId, Session,
};

impl Harness {
    async fn register(&self, phone: &str) -> Session {
        self.chat.register(phone, None, None).await.unwrap().session
    }

    /// `a` asks `b`, `b` accepts.
    async fn room(&self, a: &Session, b: &Session) -> RoomId {
        self.chat
            .send_request(&a.phone, b.phone.as_str())
            .await
            .unwrap();
        self.chat
            .respond_request(&b.phone, a.phone.as_str(), Answer::Accept)
            .await
            .unwrap()
            .unwrap()
    }

    async fn send(&self, me: &Phone, room: RoomId, text: &str) -> Message {
        self.clock.advance(1);
        self.chat
            .send_message(me, &room.to_string(), text.into(), None)
            .await
            .unwrap()
    }

    async fn mark(&self, me: &Phone, room: RoomId, id: MessageId) -> chat_core::Result<bool> {
        self.chat
            .mark_read(me, &room.to_string(), &id.to_string())
            .await
    }

    /// The read marks `me` gets in `room_history` on joining.
    async fn marks(&self, me: &Phone, room: RoomId) -> ReadMarks {
        self.chat
            .join_room_with_reads(me, &room.to_string(), None)
            .await
            .unwrap()
            .2
    }

    /// `(unread, last_message)` of `room` in `me`'s `active_chatrooms`.
    async fn summary(&self, me: &Phone, room: RoomId) -> (u32, Option<Message>) {
        let rooms = self.chat.active_rooms(me).await.unwrap();
        let r = rooms.into_iter().find(|r| r.chat_id == room).unwrap();
        (r.unread, r.last_message)
    }
}

fn read(room: RoomId, user: &Phone, id: MessageId) -> Delivery {
    Delivery::to_room(
        room,
        Event::Read {
            room,
            user: user.clone(),
            id,
        },
    )
    .except(Except::User(user.clone()))
}

fn marks(of: &[(&Phone, Option<MessageId>)]) -> ReadMarks {
    of.iter().map(|(p, id)| ((*p).clone(), *id)).collect()
}

#[tokio::test]
async fn mark_read_moves_the_mark_and_tells_the_other_members_sockets() {
    let h = Harness::new();
    let a = h.register("+14155550100").await;
    let b = h.register("+14155550101").await;
    let room = h.room(&a, &b).await;
    let m1 = h.send(&b.phone, room, "one").await;
    let m2 = h.send(&b.phone, room, "two").await;
    h.sink.take();

    assert_eq!(h.mark(&a.phone, room, m1.id).await, Ok(true));
    // To the room's sockets except the reader's own: the other member's joined sockets.
    assert_eq!(h.sink.take(), vec![read(room, &a.phone, m1.id)]);
    assert_eq!(h.mark(&a.phone, room, m2.id).await, Ok(true));
    assert_eq!(h.sink.take(), vec![read(room, &a.phone, m2.id)]);
}

#[tokio::test]
async fn mark_read_at_or_before_the_mark_changes_nothing_and_tells_nobody() {
    let h = Harness::new();
    let a = h.register("+14155550100").await;
    let b = h.register("+14155550101").await;
    let room = h.room(&a, &b).await;
    let m1 = h.send(&b.phone, room, "one").await;
    let m2 = h.send(&a.phone, room, "two").await;
    assert_eq!(h.mark(&a.phone, room, m2.id).await, Ok(true));
    h.sink.take();

    assert_eq!(h.mark(&a.phone, room, m2.id).await, Ok(false));
    assert_eq!(h.mark(&a.phone, room, m1.id).await, Ok(false));
    assert_eq!(h.sink.take(), vec![]);
    assert_eq!(
        h.marks(&b.phone, room).await,
        marks(&[(&a.phone, Some(m2.id)), (&b.phone, None)])
    );
}

#[tokio::test]
async fn mark_read_is_for_members_only() {
    let h = Harness::new();
    let a = h.register("+14155550100").await;
    let b = h.register("+14155550101").await;
    let c = h.register("+14155550102").await;
    let room = h.room(&a, &b).await;
    let m = h.send(&b.phone, room, "one").await;
    h.sink.take();

    let got = h.mark(&c.phone, room, m.id).await;
    assert!(matches!(got, Err(Error::Forbidden(_))), "{got:?}");
    // Identity (403) is checked before the id's value (400).
    let got = h.chat.mark_read(&c.phone, &room.to_string(), "nope").await;
    assert!(matches!(got, Err(Error::Forbidden(_))), "{got:?}");
    for unknown in [RoomId::generate().to_string(), "not-a-room".into()] {
        assert_eq!(
            h.chat
                .mark_read(&a.phone, &unknown, &m.id.to_string())
                .await,
            Err(Error::RoomNotFound)
        );
        // Field values (400) are checked before state (404), as for history.
        let got = h.chat.mark_read(&a.phone, &unknown, "nope").await;
        assert!(matches!(got, Err(Error::BadRequest(_))), "{got:?}");
    }
    assert_eq!(h.sink.take(), vec![]);
}

#[tokio::test]
async fn mark_read_needs_the_id_of_a_message_of_this_room() {
    let h = Harness::new();
    let a = h.register("+14155550100").await;
    let b = h.register("+14155550101").await;
    let c = h.register("+14155550102").await;
    let room = h.room(&a, &b).await;
    let other = h.room(&a, &c).await;
    let m1 = h.send(&b.phone, room, "one").await;
    h.clock.advance(10);
    let m2 = h.send(&b.phone, room, "two").await;
    let elsewhere = h.send(&c.phone, other, "hi").await;
    h.sink.take();

    let not_ids = [
        "",
        "x",
        "1",
        "1-",
        "-1",
        "1-2-3",
        "1-x",
        "+1-2",
        "99999999999999999999999-0",
    ];
    let not_held = [
        m1.id.next(),
        m2.id.next(),
        MessageId { ms: 0, seq: 0 },
        elsewhere.id,
    ];
    for id in not_ids
        .iter()
        .map(|s| s.to_string())
        .chain(not_held.iter().map(MessageId::to_string))
    {
        let got = h.chat.mark_read(&a.phone, &room.to_string(), &id).await;
        assert!(matches!(got, Err(Error::BadRequest(_))), "{id:?}: {got:?}");
    }
    assert_eq!(
        h.marks(&a.phone, room).await,
        marks(&[(&a.phone, None), (&b.phone, None)])
    );
    // An empty room has no message to mark.
    let d = h.register("+14155550103").await;
    let empty = h.room(&a, &d).await;
    h.sink.take();
    let got = h.mark(&a.phone, empty, m1.id).await;
    assert!(matches!(got, Err(Error::BadRequest(_))), "{got:?}");
    assert_eq!(h.sink.take(), vec![]);
}

#[tokio::test]
async fn room_history_carries_both_members_marks() {
    let h = Harness::new();
    let a = h.register("+14155550100").await;
    let b = h.register("+14155550101").await;
    let room = h.room(&a, &b).await;
    assert_eq!(
        h.marks(&a.phone, room).await,
        marks(&[(&a.phone, None), (&b.phone, None)])
    );
    let m1 = h.send(&b.phone, room, "one").await;
    let m2 = h.send(&a.phone, room, "two").await;
    h.mark(&a.phone, room, m1.id).await.unwrap();
    h.mark(&b.phone, room, m2.id).await.unwrap();
    let (id, page, read) = h
        .chat
        .join_room_with_reads(&b.phone, &room.to_string(), None)
        .await
        .unwrap();
    assert_eq!(id, room);
    assert_eq!(page.messages, vec![m1.clone(), m2.clone()]);
    assert_eq!(
        read,
        marks(&[(&a.phone, Some(m1.id)), (&b.phone, Some(m2.id))])
    );
    // Members only, as join_room.
    let c = h.register("+14155550102").await;
    let got = h
        .chat
        .join_room_with_reads(&c.phone, &room.to_string(), None)
        .await;
    assert!(matches!(got, Err(Error::Forbidden(_))), "{got:?}");
}

#[tokio::test]
async fn active_rooms_carry_unread_and_last_message() {
    let h = Harness::new();
    let a = h.register("+14155550100").await;
    let b = h.register("+14155550101").await;
    let room = h.room(&a, &b).await;
    assert_eq!(h.summary(&a.phone, room).await, (0, None));

    let b1 = h.send(&b.phone, room, "b1").await;
    let a1 = h.send(&a.phone, room, "a1").await;
    let b2 = h.send(&b.phone, room, "b2").await;
    // Only the other member's messages after the caller's mark count.
    assert_eq!(h.summary(&a.phone, room).await, (2, Some(b2.clone())));
    assert_eq!(h.summary(&b.phone, room).await, (1, Some(b2.clone())));
    h.mark(&a.phone, room, b1.id).await.unwrap();
    assert_eq!(h.summary(&a.phone, room).await, (1, Some(b2.clone())));
    h.mark(&a.phone, room, a1.id).await.unwrap();
    assert_eq!(h.summary(&a.phone, room).await, (1, Some(b2.clone())));
    h.mark(&a.phone, room, b2.id).await.unwrap();
    assert_eq!(h.summary(&a.phone, room).await, (0, Some(b2.clone())));
    // `reconnect` answers the same list.
    let rooms = h.chat.active_rooms(&b.phone).await.unwrap();
    assert_eq!(rooms.len(), 1);
    assert_eq!(
        (rooms[0].unread, rooms[0].last_message.clone()),
        (1, Some(b2))
    );
}

#[tokio::test]
async fn unread_is_exact_up_to_1000_and_1000_beyond() {
    let h = Harness::new();
    let a = h.register("+14155550100").await;
    let b = h.register("+14155550101").await;
    let room = h.room(&a, &b).await;
    let first = h.send(&b.phone, room, "first").await;
    for i in 0..(UNREAD_MAX - 2) {
        h.send(&b.phone, room, &format!("b{i}")).await;
        if i % 100 == 0 {
            h.send(&a.phone, room, &format!("a{i}")).await;
        }
    }
    assert_eq!(h.summary(&a.phone, room).await.0, UNREAD_MAX - 1);
    h.send(&b.phone, room, "the 1000th").await;
    assert_eq!(h.summary(&a.phone, room).await.0, UNREAD_MAX);
    let last = h.send(&b.phone, room, "the 1001st").await;
    assert_eq!(h.summary(&a.phone, room).await, (UNREAD_MAX, Some(last)));
    h.mark(&a.phone, room, first.id).await.unwrap();
    assert_eq!(h.summary(&a.phone, room).await.0, UNREAD_MAX);
}

#[tokio::test]
async fn read_marks_end_with_the_room() {
    let h = Harness::new();
    let a = h.register("+14155550100").await;
    let b = h.register("+14155550101").await;
    let room = h.room(&a, &b).await;
    let m = h.send(&b.phone, room, "one").await;
    h.mark(&a.phone, room, m.id).await.unwrap();
    h.chat
        .close_room(&a.phone, &room.to_string())
        .await
        .unwrap();
    h.sink.take();
    assert_eq!(h.mark(&a.phone, room, m.id).await, Err(Error::RoomNotFound));
    assert_eq!(h.sink.take(), vec![]);
    // The pair's next room starts with no marks.
    let next = h.room(&a, &b).await;
    assert_eq!(
        h.marks(&a.phone, next).await,
        marks(&[(&a.phone, None), (&b.phone, None)])
    );
}
