//! Offline notifications: what the service queues for a user with no open socket (a message in
//! one of their rooms, a chat request to them). Delivery is not the core's: a worker outside it
//! leases the queue ([`NotificationStore`](crate::store::NotificationStore)) and posts each one.
//!
//! Off unless [`ChatService::with_notifications`] turned it on: then every new message and every
//! request that becomes pending costs one more store step after the one that stored it (see
//! [`NotificationStore::enqueue_notification`](crate::store::NotificationStore::enqueue_notification)),
//! which checks the recipient's sockets and queues in one atomic step. Off, it costs nothing.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Notify;

use crate::store::{Enqueued, OfflineEvent};
use crate::types::{Message, Millis, Phone};

use super::ChatService;

/// The queue's default bound, the contract's.
pub const NOTIFY_QUEUE_MAX: usize = 10_000;

/// The service's settings and counters of offline notifications.
#[derive(Debug)]
pub(super) struct Notifications {
    /// The queue's bound: past it, new notifications are dropped (and counted).
    max_queue: usize,
    /// Notifications dropped because the queue was full.
    dropped: AtomicU64,
    /// Woken when this node queues one, so its worker need not wait for its next poll.
    queued: Notify,
}

impl ChatService {
    /// The same service queueing offline notifications, at most `max_queue` at a time. Call it
    /// before cloning the service.
    pub fn with_notifications(mut self, max_queue: usize) -> ChatService {
        match std::sync::Arc::get_mut(&mut self.inner) {
            Some(inner) => {
                inner.notify = Some(Notifications {
                    max_queue,
                    dropped: AtomicU64::new(0),
                    queued: Notify::new(),
                })
            }
            None => tracing::warn!("with_notifications called on a shared service; ignored"),
        }
        self
    }

    /// Whether offline notifications are queued.
    pub fn notifies(&self) -> bool {
        self.inner.notify.is_some()
    }

    /// Notifications dropped so far because the queue was full.
    pub fn notifications_dropped(&self) -> u64 {
        self.inner
            .notify
            .as_ref()
            .map_or(0, |n| n.dropped.load(Ordering::Relaxed))
    }

    /// Resolves when this node has queued a notification since the last call returned (at
    /// once if it has meanwhile); never while notifications are off. A delivery worker waits on
    /// it as well as polling the queue (which other nodes fill too), so what this node queues
    /// goes out without waiting for the next poll.
    pub async fn notification_queued(&self) {
        match &self.inner.notify {
            Some(n) => n.queued.notified().await,
            None => std::future::pending().await,
        }
    }

    /// Queues a `message` notification for the other member of the room of a message just
    /// stored, if they have no open socket.
    pub(super) async fn notify_message(&self, message: &Message) {
        if self.inner.notify.is_none() {
            return;
        }
        let event = OfflineEvent::message(
            message.room,
            message.sender.clone(),
            message.id,
            &message.message,
            message.timestamp,
        );
        self.notify(event).await;
    }

    /// Queues a `chat_request` notification for `to`, if they have no open socket.
    pub(super) async fn notify_request(&self, from: &Phone, to: &Phone, at: Millis) {
        if self.inner.notify.is_none() {
            return;
        }
        let event = OfflineEvent::ChatRequest {
            from: from.clone(),
            to: to.clone(),
            at,
        };
        self.notify(event).await;
    }

    /// Best effort, like a publish: the event it reports was stored, so a failure is logged,
    /// not returned.
    async fn notify(&self, event: OfflineEvent) {
        let Some(settings) = &self.inner.notify else {
            return;
        };
        match self
            .store()
            .enqueue_notification(event, self.now(), settings.max_queue)
            .await
        {
            Ok(Enqueued::Dropped) => {
                let n = settings.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                // Once per thousand, so a full queue does not flood the log.
                if n % 1000 == 1 {
                    tracing::warn!(
                        dropped = n,
                        max = settings.max_queue,
                        "notification queue full; notification dropped"
                    );
                }
            }
            Ok(Enqueued::Queued) => settings.queued.notify_one(),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "offline notification not queued"),
        }
    }
}
