//! Rooms and their history: the live rooms, appending messages (published in the same step)
//! and reading history.

use crate::error::Result;
use crate::types::{HistoryPage, Message, MessageId, NewMessage, Phone, ReadMarks, Room, RoomId};

/// What [`RoomStore::append_message`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Appended {
    /// Stored (and published) now.
    New(Message),
    /// The same sender sent the same `client_id` in this room before: the first message.
    Duplicate(Message),
}

impl Appended {
    /// The message, new or first.
    pub fn into_message(self) -> Message {
        match self {
            Appended::New(m) | Appended::Duplicate(m) => m,
        }
    }
}

/// `unread` counts the other member's messages after a read mark exactly up to this many, and
/// reports this many beyond: the count costs at most this many of the other member's messages
/// read, whatever the room holds.
pub const UNREAD_MAX: u32 = 1000;

/// One of a user's live rooms as [`RoomStore::room_overviews`] sees it for that user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomOverview {
    /// The room.
    pub room: Room,
    /// Messages from the other member after this user's read mark (all of the other member's
    /// messages the room holds when the user has no mark), at most [`UNREAD_MAX`].
    pub unread: u32,
    /// The room's newest message, if it has any.
    pub last_message: Option<Message>,
}

/// Rooms and their message history.
///
/// Part of the [`Store`](super::Store) port; its contract holds for every method here.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait::async_trait]
pub trait RoomStore: Send + Sync + 'static {
    /// A live room.
    async fn room(&self, id: &RoomId) -> Result<Option<Room>>;

    /// The user's live rooms.
    async fn rooms_of(&self, phone: &Phone) -> Result<Vec<Room>>;

    /// Deletes a room with its history; the room if it existed.
    async fn delete_room(&self, id: &RoomId) -> Result<Option<Room>>;

    /// Appends a message (`RoomNotFound` for no room, `Forbidden` for a non-member), keeping at
    /// least the last `history_max`. A repeated `client_id` of the same sender is not stored
    /// again. A new message is published to `Audience::Room` as `Event::ReceiveMessage`
    /// through this backend's bus in the same atomic step, so deliveries follow history order.
    async fn append_message(
        &self,
        room: &RoomId,
        message: NewMessage,
        history_max: usize,
    ) -> Result<Appended>;

    /// Appends `batch` in order, exactly as [`RoomStore::append_message`] would one after another,
    /// each with its own result in the same position; a failure of one leaves the others
    /// standing. A backend may do it in one round trip (the Redis store pipelines them): it is
    /// how a socket's burst of messages costs one store call. The default calls
    /// `append_message` for each.
    async fn append_messages(
        &self,
        batch: Vec<(RoomId, NewMessage)>,
        history_max: usize,
    ) -> Vec<Result<Appended>> {
        let mut results = Vec::with_capacity(batch.len());
        for (room, message) in batch {
            results.push(self.append_message(&room, message, history_max).await);
        }
        results
    }

    /// History, oldest first: the first `limit` strictly after `after`, or the latest `limit`.
    async fn history(
        &self,
        room: &RoomId,
        after: Option<MessageId>,
        limit: usize,
    ) -> Result<HistoryPage>;

    /// Moves `phone`'s read mark in `room` forward to `id`, in one atomic step: `RoomNotFound`
    /// for no room, `Forbidden` for a non-member, `BadRequest` when `id` is not the id of a
    /// message the room holds (its history, within `history_max`). `Ok(true)` when the mark
    /// moved; `Ok(false)` (nothing changed) when `id` is at or before the current mark. A mark
    /// never moves back, and it ends with the room.
    async fn mark_read(&self, room: &RoomId, phone: &Phone, id: MessageId) -> Result<bool>;

    /// Both members' read marks; `None` when there is no such room.
    async fn read_marks(&self, room: &RoomId) -> Result<Option<ReadMarks>>;

    /// The user's live rooms (as [`RoomStore::rooms_of`]), each with the user's `unread` count
    /// and the room's newest message, in one call. Never reads more than [`UNREAD_MAX`] of the
    /// other member's messages per room to count.
    async fn room_overviews(&self, phone: &Phone) -> Result<Vec<RoomOverview>>;
}
