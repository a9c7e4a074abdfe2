//! The service's side of offline notifications: what it queues, for whom, and when not.

use std::sync::Arc;
use std::time::Duration;

use chat_core::store::NotificationKind;
use chat_core::store::prelude::*;
use chat_core::{Answer, ChatService, Config, ManualClock, MemoryStore, NodeId, Outgoing, Phone};

const START: u64 = 1_800_000_000_000;

fn service(store: &MemoryStore, notify: Option<usize>) -> ChatService {
    let chat = ChatService::new(
        Arc::new(store.clone()),
        Arc::new(store.clone()),
        Arc::new(ManualClock::new(START)),
        Config::default(),
        NodeId("node-1".into()),
    );
    match notify {
        Some(max) => chat.with_notifications(max),
        None => chat,
    }
}

async fn kinds(store: &MemoryStore) -> Vec<(Phone, NotificationKind)> {
    let mut out = Vec::new();
    loop {
        let due = store
            .due_notifications(u64::MAX / 2, u64::MAX / 2, 100)
            .await
            .expect("due");
        if due.is_empty() {
            return out;
        }
        for d in due {
            out.push((d.notification.to.clone(), d.notification.kind.clone()));
            assert!(store.ack_notification(&d, 0).await.expect("ack"));
        }
    }
}

#[tokio::test]
async fn nothing_is_queued_while_notifications_are_off() {
    let store = MemoryStore::new();
    let chat = service(&store, None);
    let a = chat
        .register("+14155550100", None, None)
        .await
        .unwrap()
        .session;
    let b = chat
        .register("+14155550101", None, None)
        .await
        .unwrap()
        .session;
    chat.send_request(&a.phone, b.phone.as_str()).await.unwrap();
    let room = chat
        .respond_request(&b.phone, a.phone.as_str(), Answer::Accept)
        .await
        .unwrap()
        .unwrap();
    chat.send_message(&a.phone, &room.to_string(), "hi".into(), None)
        .await
        .unwrap();
    assert!(!chat.notifies());
    assert_eq!(store.notification_queue_len().await.unwrap(), 0);
}

#[tokio::test]
async fn requests_and_messages_for_users_without_sockets_are_queued_in_order() {
    let store = MemoryStore::new();
    let chat = service(&store, Some(100));
    let a = chat
        .register("+14155550100", None, None)
        .await
        .unwrap()
        .session;
    let b = chat
        .register("+14155550101", None, None)
        .await
        .unwrap()
        .session;
    chat.send_request(&a.phone, b.phone.as_str()).await.unwrap();
    // This node's worker is woken at once.
    tokio::time::timeout(Duration::from_secs(1), chat.notification_queued())
        .await
        .expect("woken by the queued request");
    let room = chat
        .respond_request(&b.phone, a.phone.as_str(), Answer::Accept)
        .await
        .unwrap()
        .unwrap();
    let one = chat
        .send_message(&a.phone, &room.to_string(), "one".into(), None)
        .await
        .unwrap();
    let burst: Vec<Outgoing> = ["two", "three"]
        .map(|t| Outgoing {
            room: room.to_string(),
            text: t.into(),
            client_id: None,
        })
        .into();
    let stored = chat.send_messages(&a.phone, burst).await;
    // B opens a socket: B's own message to A is for A, who has none; A's next one is not queued.
    let conn = chat.new_conn();
    chat.connect(&b.phone, &conn).await.unwrap();
    chat.send_message(&a.phone, &room.to_string(), "seen live".into(), None)
        .await
        .unwrap();
    chat.send_message(&b.phone, &room.to_string(), "to A".into(), None)
        .await
        .unwrap();

    let mut expected = vec![(b.phone.clone(), NotificationKind::ChatRequest)];
    for (m, text) in [(&one, "one")].into_iter().chain(
        stored
            .iter()
            .map(|r| r.as_ref().unwrap())
            .zip(["two", "three"]),
    ) {
        expected.push((
            b.phone.clone(),
            NotificationKind::Message {
                room,
                id: m.id,
                preview: text.into(),
            },
        ));
    }
    let got = kinds(&store).await;
    assert_eq!(got.len(), 5, "{got:?}");
    let for_b: Vec<_> = got
        .iter()
        .filter(|(to, _)| *to == b.phone)
        .cloned()
        .collect();
    assert_eq!(for_b, expected);
    let for_a: Vec<_> = got.iter().filter(|(to, _)| *to == a.phone).collect();
    assert!(
        matches!(&for_a[..], [(_, NotificationKind::Message { preview, .. })] if preview == "to A")
    );
}

#[tokio::test]
async fn past_the_bound_notifications_are_dropped_and_counted() {
    let store = MemoryStore::new();
    let chat = service(&store, Some(2));
    let a = chat
        .register("+14155550100", None, None)
        .await
        .unwrap()
        .session;
    let b = chat
        .register("+14155550101", None, None)
        .await
        .unwrap()
        .session;
    chat.send_request(&a.phone, b.phone.as_str()).await.unwrap();
    let room = chat
        .respond_request(&b.phone, a.phone.as_str(), Answer::Accept)
        .await
        .unwrap()
        .unwrap();
    for t in ["one", "two", "three"] {
        chat.send_message(&a.phone, &room.to_string(), t.into(), None)
            .await
            .expect("a full queue never fails a message");
    }
    assert_eq!(store.notification_queue_len().await.unwrap(), 2);
    assert_eq!(chat.notifications_dropped(), 2);
}
