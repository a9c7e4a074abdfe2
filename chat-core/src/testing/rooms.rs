//! Rooms, history and messages: `room`, `delete_room`, `append_message(s)`, `history`.

use std::collections::HashSet;

use tokio::task::JoinSet;

use crate::error::Error;
use crate::event::{Audience, Event};
use crate::store::{Appended, RequestOutcome, Timer};
use crate::types::{Message, MessageId, NewMessage, Phone, RoomId};

use super::Fixture;
use super::helpers::*;

/// `room`, `rooms_of` and `delete_room`: a deleted room is gone with its history.
pub async fn room_lookup_and_delete(fx: Fixture) {
    let [a, b, c] = [fx.phone(1), fx.phone(2), fx.phone(3)];
    for p in [&a, &b, &c] {
        register(&fx, p).await;
    }
    let ab = room_between(&fx, &a, &b).await;
    let ca = room_between(&fx, &c, &a).await;
    assert_eq!(fx.store.room(&ab.id).await.expect("room"), Some(ab.clone()));
    assert_eq!(
        room_ids(&fx.store.rooms_of(&a).await.expect("rooms_of")).len(),
        2
    );
    append_new(&fx, &ab, message(&fx, &a, "hello", None)).await;

    assert_eq!(
        fx.store.delete_room(&ab.id).await.expect("delete"),
        Some(ab.clone())
    );
    assert_eq!(fx.store.delete_room(&ab.id).await.expect("delete"), None);
    assert_eq!(fx.store.room(&ab.id).await.expect("room"), None);
    assert_eq!(fx.store.rooms_of(&a).await.expect("rooms_of"), vec![ca]);
    assert!(fx.store.rooms_of(&b).await.expect("rooms_of").is_empty());
    assert_eq!(
        fx.store.history(&ab.id, None, 10).await,
        Err(Error::RoomNotFound)
    );
    // A member who wrote to the room before, alone, with a client id and in a burst.
    assert_eq!(
        fx.store
            .append_message(&ab.id, message(&fx, &a, "late", None), 100)
            .await,
        Err(Error::RoomNotFound)
    );
    assert_eq!(
        fx.store
            .append_message(&ab.id, message(&fx, &a, "late", Some("c-1")), 100)
            .await,
        Err(Error::RoomNotFound)
    );
    let burst = vec![
        (ab.id, message(&fx, &a, "late 1", None)),
        (ab.id, message(&fx, &a, "late 2", None)),
    ];
    assert_eq!(
        fx.store.append_messages(burst, 100).await,
        vec![Err(Error::RoomNotFound), Err(Error::RoomNotFound)]
    );
    assert_eq!(
        fx.store.history(&ab.id, None, 10).await,
        Err(Error::RoomNotFound),
        "no late message made the room's history again"
    );
    assert_eq!(
        fx.store.room(&RoomId::generate()).await.expect("room"),
        None
    );
    assert!(
        fx.store
            .rooms_of(&fx.phone(9))
            .await
            .expect("rooms_of")
            .is_empty()
    );
    // The pair is free again.
    assert_eq!(
        fx.store
            .send_request(request(&fx, &a, &b), new_room(&fx))
            .await
            .expect("send_request"),
        RequestOutcome::Sent
    );
}

/// An accept schedules `Timer::RoomExpiry` at the room's `expires_at`.
pub async fn accept_schedules_room_expiry(fx: Fixture) {
    let [a, b] = [fx.phone(1), fx.phone(2)];
    for p in [&a, &b] {
        register(&fx, p).await;
    }
    let room = room_between(&fx, &a, &b).await;
    assert_due_at(&fx, room.expires_at, &Timer::RoomExpiry(room.id)).await;
}

/// Appending needs a live room (`RoomNotFound`) and a member sender (`Forbidden`).
pub async fn append_message_needs_room_and_membership(fx: Fixture) {
    let [a, b, c] = [fx.phone(1), fx.phone(2), fx.phone(3)];
    for p in [&a, &b, &c] {
        register(&fx, p).await;
    }
    let room = room_between(&fx, &a, &b).await;
    assert_eq!(
        fx.store
            .append_message(&RoomId::generate(), message(&fx, &a, "x", None), 100)
            .await,
        Err(Error::RoomNotFound)
    );
    let stranger_refused = async |client_id: Option<&str>| {
        let got = fx
            .store
            .append_message(&room.id, message(&fx, &c, "x", client_id), 100)
            .await;
        assert!(matches!(got, Err(Error::Forbidden(_))), "{got:?}");
    };
    stranger_refused(None).await;
    let page = fx.store.history(&room.id, None, 10).await.expect("history");
    assert!(page.messages.is_empty(), "a refused message is not stored");
    // Once the members have written (and a store may remember them), a stranger is still refused.
    append_new(&fx, &room, message(&fx, &a, "a", None)).await;
    append_new(&fx, &room, message(&fx, &b, "b", None)).await;
    stranger_refused(None).await;
    stranger_refused(Some("c-1")).await;
    let page = fx.store.history(&room.id, None, 10).await.expect("history");
    assert_eq!(
        page.messages.len(),
        2,
        "only the members' messages are stored"
    );
}

/// Ids strictly increase in append order, whatever the timestamps do.
pub async fn append_message_ids_strictly_increase(fx: Fixture) {
    let [a, b] = [fx.phone(1), fx.phone(2)];
    for p in [&a, &b] {
        register(&fx, p).await;
    }
    let room = room_between(&fx, &a, &b).await;
    let t = fx.now();
    let mut stored = Vec::new();
    for (i, ts) in [t, t, t - 5, t + 10, t + 10, t + 3, t + 11]
        .into_iter()
        .enumerate()
    {
        let sender = if i % 2 == 0 { &a } else { &b };
        let m = NewMessage {
            sender: sender.clone(),
            message: format!("m{i}"),
            timestamp: ts,
            client_id: None,
        };
        let got = append_new(&fx, &room, m).await;
        assert_eq!(got.timestamp, ts, "the timestamp is kept as given");
        assert_eq!(got.message, format!("m{i}"));
        assert_eq!(&got.sender, sender);
        assert_eq!(got.room, room.id);
        stored.push(got);
    }
    for w in stored.windows(2) {
        assert!(w[0].id < w[1].id, "{} then {}", w[0].id, w[1].id);
    }
    let page = fx
        .store
        .history(&room.id, None, 100)
        .await
        .expect("history");
    assert_eq!(page.messages, stored);
}

/// The same `client_id` from the same sender is stored once; the repeat returns the first.
pub async fn append_message_dedupes_client_id(fx: Fixture) {
    let [a, b] = [fx.phone(1), fx.phone(2)];
    for p in [&a, &b] {
        register(&fx, p).await;
    }
    let room = room_between(&fx, &a, &b).await;
    let first = append_new(&fx, &room, message(&fx, &a, "one", Some("x"))).await;
    assert_eq!(first.client_id.as_deref(), Some("x"));
    fx.advance(5);
    let again = append(&fx, &room, message(&fx, &a, "two", Some("x"))).await;
    assert_eq!(again, Appended::Duplicate(first.clone()));
    let other_sender = append_new(&fx, &room, message(&fx, &b, "b", Some("x"))).await;
    let other_id = append_new(&fx, &room, message(&fx, &a, "y", Some("y"))).await;
    let plain1 = append_new(&fx, &room, message(&fx, &a, "same", None)).await;
    let plain2 = append_new(&fx, &room, message(&fx, &a, "same", None)).await;
    let page = fx
        .store
        .history(&room.id, None, 100)
        .await
        .expect("history");
    assert_eq!(
        page.messages,
        vec![first, other_sender, other_id, plain1, plain2]
    );
}

/// Each new message is published to its room as `ReceiveMessage`, in history order; a
/// duplicate is not published again.
pub async fn append_message_publishes_in_order(fx: Fixture) {
    let [a, b] = [fx.phone(1), fx.phone(2)];
    for p in [&a, &b] {
        register(&fx, p).await;
    }
    let room = room_between(&fx, &a, &b).await;
    let audience = Audience::Room(room.id);
    fx.bus.subscribe(audience.clone()).await.expect("subscribe");
    let mut stored = Vec::new();
    for i in 0..5 {
        let sender = if i % 2 == 0 { &a } else { &b };
        let cid = format!("c{i}");
        stored.push(
            append_new(
                &fx,
                &room,
                message(&fx, sender, &format!("m{i}"), Some(&cid)),
            )
            .await,
        );
    }
    let dup = append(&fx, &room, message(&fx, &a, "again", Some("c0"))).await;
    assert!(matches!(dup, Appended::Duplicate(_)));
    stored.push(append_new(&fx, &room, message(&fx, &b, "last", None)).await);

    let got = fx.wait_for_events(&audience, stored.len()).await;
    let expected: Vec<Event> = stored.iter().cloned().map(Event::ReceiveMessage).collect();
    assert_eq!(got, expected, "published once each, in history order");
    let history = fx
        .store
        .history(&room.id, None, 100)
        .await
        .expect("history");
    assert_eq!(history.messages, stored);
    fx.bus.unsubscribe(audience).await.expect("unsubscribe");
}

/// A batch is appended in order, each item answered in its position as `append_message`
/// would answer it alone: a refused item (no room, not a member) leaves the others standing, a
/// `client_id` repeated within the batch is a duplicate of the earlier item, and the new ones
/// are published in history order.
pub async fn append_messages_answers_each_in_order(fx: Fixture) {
    let [a, b, c] = [fx.phone(1), fx.phone(2), fx.phone(3)];
    for p in [&a, &b, &c] {
        register(&fx, p).await;
    }
    let room = room_between(&fx, &a, &b).await;
    let other = room_between(&fx, &a, &c).await;
    let audience = Audience::Room(room.id);
    fx.bus.subscribe(audience.clone()).await.expect("subscribe");
    let batch = vec![
        (room.id, message(&fx, &a, "m0", Some("k"))),
        (RoomId::generate(), message(&fx, &a, "nowhere", None)),
        (room.id, message(&fx, &b, "m1", None)),
        (room.id, message(&fx, &c, "intruder", None)),
        (other.id, message(&fx, &c, "elsewhere", None)),
        (room.id, message(&fx, &a, "m0 again", Some("k"))),
        (room.id, message(&fx, &a, "m2", Some("l"))),
    ];
    let got = fx.store.append_messages(batch, 100).await;
    assert_eq!(got.len(), 7, "one result per item: {got:?}");
    let new = |i: usize| match &got[i] {
        Ok(Appended::New(m)) => m.clone(),
        other => panic!("item {i}: expected a new message, got {other:?}"),
    };
    let (m0, m1, elsewhere, m2) = (new(0), new(2), new(4), new(6));
    assert_eq!(got[1], Err(Error::RoomNotFound));
    assert!(matches!(got[3], Err(Error::Forbidden(_))), "{:?}", got[3]);
    assert_eq!(got[5], Ok(Appended::Duplicate(m0.clone())));
    assert_eq!((m0.message.as_str(), m0.room), ("m0", room.id));
    assert_eq!((m1.sender.clone(), elsewhere.room), (b.clone(), other.id));
    assert!(
        m0.id < m1.id && m1.id < m2.id,
        "ids increase in batch order"
    );

    let history = fx
        .store
        .history(&room.id, None, 100)
        .await
        .expect("history");
    assert_eq!(history.messages, vec![m0.clone(), m1.clone(), m2.clone()]);
    let published = fx.wait_for_events(&audience, 3).await;
    let expected: Vec<Event> = [m0, m1, m2]
        .into_iter()
        .map(Event::ReceiveMessage)
        .collect();
    assert_eq!(published, expected, "published once each, in history order");
    assert!(
        fx.store.append_messages(Vec::new(), 100).await.is_empty(),
        "an empty batch answers nothing"
    );
    fx.bus.unsubscribe(audience).await.expect("unsubscribe");
}

/// A burst, one sender's consecutive messages to one room (what a socket's frames that arrived
/// together become), answers and stores each message as it would alone: the room's first
/// messages, client ids new, repeated within the burst and repeated from before it; a stranger's
/// burst and a burst to an unknown room are refused whole and store nothing.
pub async fn append_messages_burst_is_each_message_alone(fx: Fixture) {
    let [a, b, c] = [fx.phone(1), fx.phone(2), fx.phone(3)];
    for p in [&a, &b, &c] {
        register(&fx, p).await;
    }
    let room = room_between(&fx, &a, &b).await;
    let audience = Audience::Room(room.id);
    fx.bus.subscribe(audience.clone()).await.expect("subscribe");
    let burst = |sender: &Phone, texts: &[(&str, Option<&str>)]| -> Vec<(RoomId, NewMessage)> {
        texts
            .iter()
            .map(|(t, k)| (room.id, message(&fx, sender, t, *k)))
            .collect()
    };

    // The room's first messages come as a burst.
    let first = fx
        .store
        .append_messages(
            burst(&a, &[("a0", None), ("a1", Some("k1")), ("a2", None)]),
            100,
        )
        .await;
    let first: Vec<Message> = first
        .into_iter()
        .map(|r| match r {
            Ok(Appended::New(m)) => m,
            other => panic!("expected a new message, got {other:?}"),
        })
        .collect();
    let texts: Vec<&str> = first.iter().map(|m| m.message.as_str()).collect();
    assert_eq!(texts, ["a0", "a1", "a2"]);
    assert!(first.windows(2).all(|w| w[0].id < w[1].id), "ids increase");

    // Repeats of a client id from before the burst and from within it.
    let second = fx
        .store
        .append_messages(
            burst(
                &a,
                &[
                    ("a1 again", Some("k1")),
                    ("a3", Some("k3")),
                    ("a3 again", Some("k3")),
                ],
            ),
            100,
        )
        .await;
    assert_eq!(second[0], Ok(Appended::Duplicate(first[1].clone())));
    let a3 = match &second[1] {
        Ok(Appended::New(m)) => m.clone(),
        other => panic!("expected a new message, got {other:?}"),
    };
    assert_eq!(a3.client_id.as_deref(), Some("k3"));
    assert_eq!(second[2], Ok(Appended::Duplicate(a3.clone())));

    // A stranger's burst, and a burst to a room that does not exist.
    for got in fx
        .store
        .append_messages(burst(&c, &[("c0", None), ("c1", Some("k1"))]), 100)
        .await
    {
        assert!(matches!(got, Err(Error::Forbidden(_))), "{got:?}");
    }
    let nowhere = RoomId::generate();
    let lost: Vec<_> = ["x0", "x1"]
        .iter()
        .map(|t| (nowhere, message(&fx, &a, t, None)))
        .collect();
    assert_eq!(
        fx.store.append_messages(lost, 100).await,
        vec![Err(Error::RoomNotFound), Err(Error::RoomNotFound)]
    );

    let mut stored = first.clone();
    stored.push(a3);
    // A burst longer than a store may take in one call (a Redis function call takes 64).
    let long: Vec<_> = (0..70)
        .map(|i| (room.id, message(&fx, &b, &format!("b{i}"), None)))
        .collect();
    for got in fx.store.append_messages(long, 100).await {
        match got {
            Ok(Appended::New(m)) => stored.push(m),
            other => panic!("expected a new message, got {other:?}"),
        }
    }
    assert!(stored.windows(2).all(|w| w[0].id < w[1].id), "ids increase");
    let history = fx
        .store
        .history(&room.id, None, 100)
        .await
        .expect("history");
    assert_eq!(history.messages, stored, "each stored once, in order");
    let published = fx.wait_for_events(&audience, stored.len()).await;
    let expected: Vec<Event> = stored.into_iter().map(Event::ReceiveMessage).collect();
    assert_eq!(published, expected, "published once each, in history order");
    fx.bus.unsubscribe(audience).await.expect("unsubscribe");
}

/// History pages: strictly after `after` (`more`: newer exist), or the latest (`more`: older).
pub async fn history_pages(fx: Fixture) {
    let [a, b] = [fx.phone(1), fx.phone(2)];
    for p in [&a, &b] {
        register(&fx, p).await;
    }
    let room = room_between(&fx, &a, &b).await;
    let empty = fx.store.history(&room.id, None, 5).await.expect("history");
    assert!(empty.messages.is_empty() && !empty.more);
    let mut m = Vec::new();
    for i in 0..10 {
        m.push(append_new(&fx, &room, message(&fx, &a, &format!("m{i}"), None)).await);
        if i % 3 == 0 {
            fx.advance(1);
        }
    }
    let page = |after: Option<MessageId>, limit: usize| {
        let store = fx.store.clone();
        async move {
            store
                .history(&room.id, after, limit)
                .await
                .expect("history")
        }
    };
    let p = page(None, 3).await;
    assert_eq!((p.messages, p.more), (m[7..].to_vec(), true));
    let p = page(None, 10).await;
    assert_eq!((p.messages, p.more), (m.clone(), false));
    let p = page(None, 50).await;
    assert_eq!((p.messages, p.more), (m.clone(), false));
    let p = page(Some(m[2].id), 3).await;
    assert_eq!((p.messages, p.more), (m[3..6].to_vec(), true));
    let p = page(Some(m[6].id), 3).await;
    assert_eq!((p.messages, p.more), (m[7..].to_vec(), false));
    let p = page(Some(m[9].id), 3).await;
    assert_eq!((p.messages, p.more), (vec![], false));
    let p = page(Some(MessageId { ms: 0, seq: 0 }), 10).await;
    assert_eq!((p.messages, p.more), (m.clone(), false));
    let p = page(Some(MessageId { ms: 0, seq: 0 }), 9).await;
    assert_eq!((p.messages, p.more), (m[..9].to_vec(), true));
}

/// With `history_max`, a room keeps at least its last `history_max` messages, in order.
pub async fn history_max_keeps_last_n(fx: Fixture) {
    let [a, b] = [fx.phone(1), fx.phone(2)];
    for p in [&a, &b] {
        register(&fx, p).await;
    }
    let room = room_between(&fx, &a, &b).await;
    let mut all = Vec::new();
    for i in 0..20 {
        let got = fx
            .store
            .append_message(&room.id, message(&fx, &b, &format!("m{i}"), None), 5)
            .await
            .expect("append")
            .into_message();
        all.push(got);
    }
    let kept = fx
        .store
        .history(&room.id, None, 100)
        .await
        .expect("history");
    assert!(kept.messages.len() >= 5, "kept {}", kept.messages.len());
    assert!(!kept.more);
    assert!(
        all.ends_with(&kept.messages),
        "what is kept is the latest messages, in order"
    );
    let last5 = fx.store.history(&room.id, None, 5).await.expect("history");
    assert_eq!(last5.messages, all[15..].to_vec());
}

// ---------------------------------------------------------------------------- concurrency

/// Concurrent appends get unique ids; history and deliveries follow id order.
pub async fn concurrent_appends_get_unique_increasing_ids(fx: Fixture) {
    let [a, b] = [fx.phone(1), fx.phone(2)];
    for p in [&a, &b] {
        register(&fx, p).await;
    }
    let room = room_between(&fx, &a, &b).await;
    let audience = Audience::Room(room.id);
    fx.bus.subscribe(audience.clone()).await.expect("subscribe");
    let mut tasks = JoinSet::new();
    for i in 0..50u64 {
        let sender = if i % 2 == 0 { a.clone() } else { b.clone() };
        let m = NewMessage {
            sender,
            message: format!("m{i}"),
            // Clocks of different nodes disagree a little.
            timestamp: fx.now() + i % 3,
            client_id: None,
        };
        let (store, id) = (fx.store.clone(), room.id);
        tasks.spawn(async move { store.append_message(&id, m, 10_000).await });
    }
    let stored: Vec<Message> = tasks
        .join_all()
        .await
        .into_iter()
        .map(|r| r.expect("append").into_message())
        .collect();
    let ids: HashSet<MessageId> = stored.iter().map(|m| m.id).collect();
    assert_eq!(ids.len(), 50, "ids are unique");
    let history = fx
        .store
        .history(&room.id, None, 100)
        .await
        .expect("history");
    assert_eq!(history.messages.len(), 50);
    for w in history.messages.windows(2) {
        assert!(w[0].id < w[1].id);
    }
    let got = fx.wait_for_events(&audience, 50).await;
    let expected: Vec<Event> = history
        .messages
        .iter()
        .cloned()
        .map(Event::ReceiveMessage)
        .collect();
    assert_eq!(got, expected, "deliveries follow history order");
    fx.bus.unsubscribe(audience).await.expect("unsubscribe");
}
