//! Offline notifications: `enqueue_notification`, `due_notifications`, `ack_notification`,
//! `retry_notification`, `notification_queue_len`.

use std::collections::HashSet;

use tokio::task::JoinSet;

use crate::store::{
    Enqueued, LeasedNotification, Notification, NotificationKind, OfflineEvent, PREVIEW_CHARS,
};
use crate::types::{Millis, NodeId, Phone, RoomId};

use super::Fixture;
use super::helpers::*;

const MAX: usize = 10_000;

fn request_event(fx: &Fixture, from: &Phone, to: &Phone) -> OfflineEvent {
    OfflineEvent::ChatRequest {
        from: from.clone(),
        to: to.clone(),
        at: fx.now(),
    }
}

async fn enqueue(fx: &Fixture, event: OfflineEvent, max: usize) -> Enqueued {
    fx.store
        .enqueue_notification(event, fx.now(), max)
        .await
        .expect("enqueue_notification")
}

/// Leases what is due at `at` for the recipients in `of`.
async fn due_for(fx: &Fixture, at: Millis, of: &[&Phone]) -> Vec<LeasedNotification> {
    fx.store
        .due_notifications(at, at + fx.lifetimes.lease_ms, 1000)
        .await
        .expect("due_notifications")
        .into_iter()
        .filter(|l| of.contains(&&l.notification.to))
        .collect()
}

/// A message notification goes to the room's other member, and only while that member has no
/// open socket; a request notification to its recipient; nothing for a room that is gone.
pub async fn notifications_only_for_users_without_sockets(fx: Fixture) {
    let [a, b, c] = [fx.phone(1), fx.phone(2), fx.phone(3)];
    for p in [&a, &b, &c] {
        register(&fx, p).await;
    }
    let room = room_between(&fx, &a, &b).await;
    let before = fx.store.notification_queue_len().await.expect("len");
    let text = "x".repeat(PREVIEW_CHARS + 20);
    let m = append_new(&fx, &room, message(&fx, &a, &text, None)).await;
    let event = OfflineEvent::message(room.id, a.clone(), m.id, &m.message, m.timestamp);

    let node = NodeId("n1".into());
    fx.store.add_conn(&b, &conn(&node, 1)).await.expect("add");
    assert_eq!(enqueue(&fx, event.clone(), MAX).await, Enqueued::Online);
    fx.store
        .remove_conn(&b, &conn(&node, 1), fx.now(), fx.now())
        .await
        .expect("remove");
    assert_eq!(enqueue(&fx, event.clone(), MAX).await, Enqueued::Queued);
    assert_eq!(
        enqueue(&fx, request_event(&fx, &a, &c), MAX).await,
        Enqueued::Queued
    );
    let gone = OfflineEvent::message(RoomId::generate(), a.clone(), m.id, "hi", fx.now());
    assert_eq!(enqueue(&fx, gone, MAX).await, Enqueued::NoRecipient);
    let stranger = OfflineEvent::message(room.id, c.clone(), m.id, "hi", fx.now());
    assert_eq!(enqueue(&fx, stranger, MAX).await, Enqueued::NoRecipient);
    assert_eq!(
        fx.store.notification_queue_len().await.expect("len"),
        before + 2
    );

    let mut due = due_for(&fx, fx.now(), &[&b, &c]).await;
    due.sort_by_key(|l| l.seq);
    let got: Vec<&Notification> = due.iter().map(|l| &l.notification).collect();
    assert_eq!(
        got,
        vec![
            &Notification {
                to: b.clone(),
                from: a.clone(),
                kind: NotificationKind::Message {
                    room: room.id,
                    id: m.id,
                    preview: "x".repeat(PREVIEW_CHARS),
                },
                at: m.timestamp,
            },
            &Notification {
                to: c.clone(),
                from: a.clone(),
                kind: NotificationKind::ChatRequest,
                at: fx.now(),
            },
        ]
    );
    assert!(due.iter().all(|l| l.attempts == 0));
    for l in &due {
        assert!(fx.store.ack_notification(l, fx.now()).await.expect("ack"));
    }
    assert_eq!(
        fx.store.notification_queue_len().await.expect("len"),
        before
    );
}

/// Only the head of a recipient's queue is leased; a retry counts the attempt and makes it due
/// later; an ack makes the next one due; a lease that runs out hands the head out again.
pub async fn notifications_lease_in_order_per_recipient(fx: Fixture) {
    let t0 = fx.now();
    let l = fx.lifetimes.lease_ms;
    let [a, b] = [fx.phone(1), fx.phone(2)];
    for n in 0..3u64 {
        let e = OfflineEvent::ChatRequest {
            from: a.clone(),
            to: b.clone(),
            at: t0 + n,
        };
        assert_eq!(enqueue(&fx, e, MAX).await, Enqueued::Queued);
    }
    let first = due_for(&fx, t0, &[&b]).await;
    assert_eq!(first.len(), 1, "one head per recipient: {first:?}");
    assert_eq!(first[0].notification.at, t0);
    assert_eq!(first[0].lease_until, t0 + l);
    assert!(
        due_for(&fx, t0 + 1, &[&b]).await.is_empty(),
        "nothing of a leased recipient is handed out"
    );

    // A failed attempt: due again at t0 + 1000, the same head, one attempt counted.
    assert!(
        fx.store
            .retry_notification(&first[0], t0 + 1000)
            .await
            .expect("retry")
    );
    assert!(due_for(&fx, t0 + 999, &[&b]).await.is_empty());
    let again = due_for(&fx, t0 + 1000, &[&b]).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].seq, first[0].seq);
    assert_eq!(again[0].attempts, 1);

    // The lease runs out (its holder died): handed out again, still the same head.
    let after_lease = due_for(&fx, t0 + 1000 + l, &[&b]).await;
    assert_eq!(after_lease.len(), 1);
    assert_eq!(after_lease[0].seq, first[0].seq);

    assert!(
        fx.store
            .ack_notification(&again[0], t0 + 2000)
            .await
            .expect("ack")
    );
    assert!(
        !fx.store
            .ack_notification(&after_lease[0], t0 + 2000)
            .await
            .expect("ack"),
        "a second ack of the same entry removes nothing"
    );
    assert!(
        !fx.store
            .retry_notification(&after_lease[0], t0 + 9000)
            .await
            .expect("retry"),
        "a retry of an acknowledged entry changes nothing"
    );
    let second = due_for(&fx, t0 + 2000, &[&b]).await;
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].notification.at, t0 + 1);
    assert_eq!(second[0].attempts, 0, "attempts are the head's own");
    assert!(
        fx.store
            .ack_notification(&second[0], t0 + 2000)
            .await
            .expect("ack")
    );
    let third = due_for(&fx, t0 + 2000, &[&b]).await;
    assert_eq!(third.len(), 1);
    assert_eq!(third[0].notification.at, t0 + 2);
    assert!(
        fx.store
            .ack_notification(&third[0], t0 + 2000)
            .await
            .expect("ack")
    );
    assert!(
        due_for(&fx, t0 + 100 * l, &[&b]).await.is_empty(),
        "an emptied queue leaves nothing due"
    );
}

/// Past `max_queue` entries, new notifications are dropped until some leave.
pub async fn notification_queue_is_bounded(fx: Fixture) {
    let [a, b] = [fx.phone(1), fx.phone(2)];
    let max =
        usize::try_from(fx.store.notification_queue_len().await.expect("len")).expect("fits") + 3;
    for _ in 0..3 {
        assert_eq!(
            enqueue(&fx, request_event(&fx, &a, &b), max).await,
            Enqueued::Queued
        );
    }
    assert_eq!(
        enqueue(&fx, request_event(&fx, &a, &b), max).await,
        Enqueued::Dropped
    );
    let head = due_for(&fx, fx.now(), &[&b]).await;
    assert_eq!(head.len(), 1);
    assert!(
        fx.store
            .ack_notification(&head[0], fx.now())
            .await
            .expect("ack")
    );
    assert_eq!(
        enqueue(&fx, request_event(&fx, &a, &b), max).await,
        Enqueued::Queued,
        "room again once one left"
    );
}

/// Concurrent callers of `due_notifications` never get the same recipient's head.
pub async fn concurrent_due_notifications_lease_each_once(fx: Fixture) {
    let t = fx.now();
    let a = fx.phone(0);
    let recipients: Vec<Phone> = (1..=30).map(|n| fx.phone(n)).collect();
    for to in &recipients {
        assert_eq!(
            enqueue(&fx, request_event(&fx, &a, to), MAX).await,
            Enqueued::Queued
        );
    }
    let lease_until = t + fx.lifetimes.lease_ms;
    let mut tasks = JoinSet::new();
    for _ in 0..6 {
        let store = fx.store.clone();
        tasks.spawn(async move { store.due_notifications(t, lease_until, 10).await });
    }
    let mut handed: Vec<Phone> = Vec::new();
    for got in tasks.join_all().await {
        handed.extend(
            got.expect("due_notifications")
                .into_iter()
                .map(|l| l.notification.to)
                .filter(|to| recipients.contains(to)),
        );
    }
    let distinct: HashSet<&Phone> = handed.iter().collect();
    assert_eq!(distinct.len(), handed.len(), "a head was handed out twice");
    assert_eq!(set(&handed), set(&recipients));
}
