//! Read marks: `mark_read`, `read_marks`, `room_overviews`.

use tokio::task::JoinSet;

use crate::error::Error;
use crate::store::{Appended, UNREAD_MAX};
use crate::types::{Message, MessageId, Phone, ReadMarks, Room, RoomId};

use super::Fixture;
use super::helpers::*;

/// Appends `n` messages from `sender` in one batch (one round trip where the store can).
async fn append_many(fx: &Fixture, room: &Room, sender: &Phone, n: usize) -> Vec<Message> {
    let batch = (0..n)
        .map(|i| (room.id, message(fx, sender, &format!("m{i}"), None)))
        .collect();
    fx.store
        .append_messages(batch, 10_000)
        .await
        .into_iter()
        .map(|r| match r.expect("append") {
            Appended::New(m) => m,
            Appended::Duplicate(m) => panic!("unexpected duplicate {m:?}"),
        })
        .collect()
}

fn marks(of: &[(&Phone, Option<MessageId>)]) -> ReadMarks {
    of.iter().map(|(p, id)| ((*p).clone(), *id)).collect()
}

/// The user's overview of `room`.
async fn overview(fx: &Fixture, phone: &Phone, room: &Room) -> (u32, Option<Message>) {
    let all = fx
        .store
        .room_overviews(phone)
        .await
        .expect("room_overviews");
    let o = all
        .into_iter()
        .find(|o| o.room.id == room.id)
        .expect("the room is listed");
    assert_eq!(&o.room, room);
    (o.unread, o.last_message)
}

/// A mark moves forward only: an id at or before it changes nothing; marks start empty and are
/// kept per member.
pub async fn mark_read_moves_forward_only(fx: Fixture) {
    let [a, b] = [fx.phone(1), fx.phone(2)];
    for p in [&a, &b] {
        register(&fx, p).await;
    }
    let room = room_between(&fx, &a, &b).await;
    assert_eq!(
        fx.store.read_marks(&room.id).await.expect("read_marks"),
        Some(marks(&[(&a, None), (&b, None)]))
    );
    let m1 = append_new(&fx, &room, message(&fx, &a, "one", None)).await;
    let m2 = append_new(&fx, &room, message(&fx, &b, "two", None)).await;
    let m3 = append_new(&fx, &room, message(&fx, &b, "three", None)).await;

    assert_eq!(fx.store.mark_read(&room.id, &a, m2.id).await, Ok(true));
    assert_eq!(fx.store.mark_read(&room.id, &a, m2.id).await, Ok(false));
    assert_eq!(fx.store.mark_read(&room.id, &a, m1.id).await, Ok(false));
    assert_eq!(
        fx.store.read_marks(&room.id).await.expect("read_marks"),
        Some(marks(&[(&a, Some(m2.id)), (&b, None)]))
    );
    // Any message of the room, one's own included.
    assert_eq!(fx.store.mark_read(&room.id, &b, m1.id).await, Ok(true));
    assert_eq!(fx.store.mark_read(&room.id, &a, m3.id).await, Ok(true));
    assert_eq!(
        fx.store.read_marks(&room.id).await.expect("read_marks"),
        Some(marks(&[(&a, Some(m3.id)), (&b, Some(m1.id))]))
    );
}

/// `mark_read` needs a live room (`RoomNotFound`), a member (`Forbidden`) and the id of a
/// message the room holds (`BadRequest`); a refused call changes nothing.
pub async fn mark_read_checks_room_member_and_id(fx: Fixture) {
    let [a, b, c] = [fx.phone(1), fx.phone(2), fx.phone(3)];
    for p in [&a, &b, &c] {
        register(&fx, p).await;
    }
    let room = room_between(&fx, &a, &b).await;
    let other = room_between(&fx, &a, &c).await;
    let m1 = append_new(&fx, &room, message(&fx, &b, "one", None)).await;
    fx.clock.advance(5);
    let m2 = append_new(&fx, &room, message(&fx, &b, "two", None)).await;
    let elsewhere = append_new(&fx, &other, message(&fx, &c, "hi", None)).await;

    assert_eq!(
        fx.store.mark_read(&RoomId::generate(), &a, m1.id).await,
        Err(Error::RoomNotFound)
    );
    let got = fx.store.mark_read(&room.id, &c, m1.id).await;
    assert!(matches!(got, Err(Error::Forbidden(_))), "{got:?}");
    let not_held = [
        // Between two messages, before the first, after the last, another room's, the ends.
        m1.id.next(),
        MessageId { ms: 1, seq: 0 },
        m2.id.next(),
        elsewhere.id,
        MessageId { ms: 0, seq: 0 },
        MessageId {
            ms: u64::MAX,
            seq: u64::MAX,
        },
    ];
    for id in not_held {
        if id == m2.id || id == m1.id {
            continue;
        }
        let got = fx.store.mark_read(&room.id, &a, id).await;
        assert!(matches!(got, Err(Error::BadRequest(_))), "{id}: {got:?}");
    }
    assert_eq!(
        fx.store.read_marks(&room.id).await.expect("read_marks"),
        Some(marks(&[(&a, None), (&b, None)]))
    );
    // The same bad id after a mark is still refused (checked before the mark is compared).
    assert_eq!(fx.store.mark_read(&room.id, &a, m2.id).await, Ok(true));
    let got = fx
        .store
        .mark_read(&room.id, &a, MessageId { ms: 1, seq: 0 })
        .await;
    assert!(matches!(got, Err(Error::BadRequest(_))), "{got:?}");
    assert_eq!(
        fx.store
            .read_marks(&RoomId::generate())
            .await
            .expect("read_marks"),
        None
    );
}

/// `room_overviews`: each of the user's rooms with the other member's messages after the user's
/// mark and the newest message; an empty room has none of either.
pub async fn room_overviews_count_unread_and_last_message(fx: Fixture) {
    let [a, b, c] = [fx.phone(1), fx.phone(2), fx.phone(3)];
    for p in [&a, &b, &c] {
        register(&fx, p).await;
    }
    let ab = room_between(&fx, &a, &b).await;
    let ac = room_between(&fx, &a, &c).await;
    assert_eq!(overview(&fx, &a, &ab).await, (0, None));
    assert_eq!(
        fx.store.room_overviews(&a).await.expect("overviews").len(),
        2
    );
    assert_eq!(
        fx.store.room_overviews(&b).await.expect("overviews").len(),
        1
    );

    let b1 = append_new(&fx, &ab, message(&fx, &b, "b1", None)).await;
    let a1 = append_new(&fx, &ab, message(&fx, &a, "a1", None)).await;
    let b2 = append_new(&fx, &ab, message(&fx, &b, "b2", None)).await;
    // No mark: every message of the other member; one's own never count.
    assert_eq!(overview(&fx, &a, &ab).await, (2, Some(b2.clone())));
    assert_eq!(overview(&fx, &b, &ab).await, (1, Some(b2.clone())));
    assert_eq!(overview(&fx, &a, &ac).await, (0, None));

    fx.store.mark_read(&ab.id, &a, b1.id).await.expect("mark");
    assert_eq!(overview(&fx, &a, &ab).await, (1, Some(b2.clone())));
    fx.store.mark_read(&ab.id, &a, b2.id).await.expect("mark");
    assert_eq!(overview(&fx, &a, &ab).await, (0, Some(b2.clone())));
    fx.store.mark_read(&ab.id, &b, a1.id).await.expect("mark");
    assert_eq!(overview(&fx, &b, &ab).await, (0, Some(b2.clone())));
    let a2 = append_new(&fx, &ab, message(&fx, &a, "a2", None)).await;
    assert_eq!(overview(&fx, &b, &ab).await, (1, Some(a2.clone())));
    assert_eq!(overview(&fx, &a, &ab).await, (0, Some(a2)));
    let c1 = append_new(&fx, &ac, message(&fx, &c, "c1", None)).await;
    assert_eq!(overview(&fx, &a, &ac).await, (1, Some(c1)));
}

/// `unread` is exact up to `UNREAD_MAX` however many of one's own messages lie between, and
/// `UNREAD_MAX` beyond.
pub async fn unread_is_exact_up_to_the_bound(fx: Fixture) {
    let [a, b] = [fx.phone(1), fx.phone(2)];
    for p in [&a, &b] {
        register(&fx, p).await;
    }
    let room = room_between(&fx, &a, &b).await;
    let max = UNREAD_MAX as usize;
    let first = append_many(&fx, &room, &b, max / 2 + 100).await;
    append_many(&fx, &room, &a, max / 2).await;
    append_many(&fx, &room, &b, max / 2 - 101).await;
    assert_eq!(overview(&fx, &a, &room).await.0, UNREAD_MAX - 1);
    let last = append_many(&fx, &room, &b, 1).await;
    assert_eq!(
        overview(&fx, &a, &room).await,
        (UNREAD_MAX, last.last().cloned())
    );
    append_many(&fx, &room, &b, 1).await;
    assert_eq!(overview(&fx, &a, &room).await.0, UNREAD_MAX);
    // From a mark: the messages after it only.
    fx.store
        .mark_read(&room.id, &a, first[0].id)
        .await
        .expect("mark");
    assert_eq!(overview(&fx, &a, &room).await.0, UNREAD_MAX);
    fx.store
        .mark_read(&room.id, &a, first[1].id)
        .await
        .expect("mark");
    assert_eq!(overview(&fx, &a, &room).await.0, UNREAD_MAX - 1);
    assert_eq!(overview(&fx, &b, &room).await.0, (max / 2) as u32);
}

/// Marks end with their room.
pub async fn read_marks_end_with_the_room(fx: Fixture) {
    let [a, b] = [fx.phone(1), fx.phone(2)];
    for p in [&a, &b] {
        register(&fx, p).await;
    }
    let room = room_between(&fx, &a, &b).await;
    let m = append_new(&fx, &room, message(&fx, &b, "one", None)).await;
    fx.store.mark_read(&room.id, &a, m.id).await.expect("mark");
    fx.store.delete_room(&room.id).await.expect("delete");
    assert_eq!(fx.store.read_marks(&room.id).await.expect("marks"), None);
    assert_eq!(
        fx.store.mark_read(&room.id, &a, m.id).await,
        Err(Error::RoomNotFound)
    );
    assert!(
        fx.store
            .room_overviews(&a)
            .await
            .expect("overviews")
            .is_empty()
    );
    // The pair's next room starts without marks.
    let next = room_between(&fx, &a, &b).await;
    assert_eq!(
        fx.store.read_marks(&next.id).await.expect("marks"),
        Some(marks(&[(&a, None), (&b, None)]))
    );
}

/// Concurrent marks of one member: the mark ends at the largest id, and exactly the calls
/// that moved it say so, each moving it forward.
pub async fn concurrent_marks_end_at_the_largest(fx: Fixture) {
    let [a, b] = [fx.phone(1), fx.phone(2)];
    for p in [&a, &b] {
        register(&fx, p).await;
    }
    let room = room_between(&fx, &a, &b).await;
    let sent = append_many(&fx, &room, &b, 40).await;
    let mut tasks = JoinSet::new();
    for m in sent.iter().rev() {
        let (store, room, a, id) = (fx.store.clone(), room.id, a.clone(), m.id);
        tasks.spawn(async move { store.mark_read(&room, &a, id).await.expect("mark") });
    }
    let mut moved = 0;
    while let Some(r) = tasks.join_next().await {
        if r.expect("task") {
            moved += 1;
        }
    }
    assert!(moved >= 1, "the first mark moved");
    let last = sent.last().map(|m| m.id);
    assert_eq!(
        fx.store.read_marks(&room.id).await.expect("marks"),
        Some(marks(&[(&a, last), (&b, None)]))
    );
    assert_eq!(
        fx.store.mark_read(&room.id, &a, sent[0].id).await,
        Ok(false)
    );
}
