//! Offline notifications: a bounded queue of what happened for users with no open socket,
//! delivered (by a webhook worker outside the core) in order per recipient, each leased to one
//! node at a time.

use crate::error::Result;
use crate::types::{MessageId, Millis, Phone, RoomId};

/// Longest `preview` of a message notification, in Unicode scalar values.
pub const PREVIEW_CHARS: usize = 100;

/// Something that happened for a user, to queue for them if they have no open socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OfflineEvent {
    /// A message stored in `room` by `from`: for the room's other member. The store finds that
    /// member itself (the service knows the room, not its members, on the message hot path).
    Message {
        /// The room.
        room: RoomId,
        /// The sender.
        from: Phone,
        /// The stored message's id.
        id: MessageId,
        /// The first [`PREVIEW_CHARS`] characters of the text.
        preview: String,
        /// The message's timestamp.
        at: Millis,
    },
    /// A chat request `from → to` that is now pending.
    ChatRequest {
        /// Requester.
        from: Phone,
        /// Recipient.
        to: Phone,
        /// When it was sent.
        at: Millis,
    },
}

/// What a notification is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotificationKind {
    /// A `receive_message`.
    Message {
        /// The room.
        room: RoomId,
        /// The message's id.
        id: MessageId,
        /// The first [`PREVIEW_CHARS`] characters of the text.
        preview: String,
    },
    /// A `chat_request`.
    ChatRequest,
}

/// A queued notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// The user told (who has no open socket).
    pub to: Phone,
    /// Who caused it.
    pub from: Phone,
    /// Its subject.
    pub kind: NotificationKind,
    /// When the event happened (unix ms).
    pub at: Millis,
}

/// What [`NotificationStore::enqueue_notification`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// Queued for delivery.
    Queued,
    /// The recipient has an open socket: nothing queued.
    Online,
    /// The queue holds `max_queue` notifications already: dropped.
    Dropped,
    /// No recipient (the room is gone, or the sender is not a member): nothing queued.
    NoRecipient,
}

/// The head of one recipient's queue, leased to the caller by
/// [`NotificationStore::due_notifications`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeasedNotification {
    /// The store's number of the entry (increasing in enqueue order), to acknowledge it by.
    pub seq: u64,
    /// Failed delivery attempts so far.
    pub attempts: u32,
    /// The notification.
    pub notification: Notification,
    /// The recipient's queue is leased until then; if the caller dies, it comes due again.
    pub lease_until: Millis,
}

/// The queue of offline notifications, shared by every node of a store.
///
/// Part of the [`Store`](super::Store) port; its contract holds for every method here.
/// Order: per recipient, notifications are handed out in enqueue order, and only the oldest
/// (the head) of a recipient's queue is ever leased, so the next is not handed out before the
/// head is acknowledged. The queue holds at most the `max_queue` given to each enqueue.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait::async_trait]
pub trait NotificationStore: Send + Sync + 'static {
    /// In one atomic step: finds the recipient (for a message, the room's other member), and
    /// queues the notification, due at `now`, if that user has no open socket and the queue
    /// holds fewer than `max_queue` entries. A recipient with a socket gets nothing
    /// (`Online`); a full queue drops it (`Dropped`).
    async fn enqueue_notification(
        &self,
        event: OfflineEvent,
        now: Millis,
        max_queue: usize,
    ) -> Result<Enqueued>;

    /// Leases the heads of up to `limit` recipients' queues that are due at `now` until
    /// `lease_until`: no caller gets any of those recipients' notifications before then unless
    /// it is acknowledged or rescheduled.
    async fn due_notifications(
        &self,
        now: Millis,
        lease_until: Millis,
        limit: usize,
    ) -> Result<Vec<LeasedNotification>>;

    /// Removes a leased notification (delivered, or given up) if it is still its recipient's
    /// head; the recipient's next one, if any, comes due at `now`. Whether it was removed
    /// (`false`: another caller removed it first).
    async fn ack_notification(&self, leased: &LeasedNotification, now: Millis) -> Result<bool>;

    /// A failed delivery: if `leased` is still its recipient's head, counts the attempt and
    /// makes the head due again at `at`. Whether it was still there.
    async fn retry_notification(&self, leased: &LeasedNotification, at: Millis) -> Result<bool>;

    /// How many notifications are queued.
    async fn notification_queue_len(&self) -> Result<u64>;
}

impl OfflineEvent {
    /// The notification for a message of `from` in `room`, with its preview cut to
    /// [`PREVIEW_CHARS`].
    pub fn message(room: RoomId, from: Phone, id: MessageId, text: &str, at: Millis) -> Self {
        OfflineEvent::Message {
            room,
            from,
            id,
            preview: preview(text),
            at,
        }
    }
}

/// The first [`PREVIEW_CHARS`] characters of `text`.
pub fn preview(text: &str) -> String {
    match text.char_indices().nth(PREVIEW_CHARS) {
        Some((end, _)) => text[..end].to_owned(),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preview_keeps_the_first_hundred_characters() {
        assert_eq!(preview("hi"), "hi");
        let long: String = "é".repeat(150);
        assert_eq!(preview(&long).chars().count(), PREVIEW_CHARS);
        let exact = "x".repeat(PREVIEW_CHARS);
        assert_eq!(preview(&exact), exact);
    }
}
