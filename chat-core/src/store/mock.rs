//! [`MockStore`]: a whole store made of one mockall mock per part (feature `mocks`).

use super::{
    MockBlockStore, MockNodeStore, MockNotificationStore, MockPresenceStore, MockRequestStore,
    MockRoomStore, MockSessionStore, MockTimerStore,
};

/// A [`Store`](super::Store) whose every method is a mockall expectation, set on the part that
/// owns it: `store.sessions.expect_touch()`, `store.rooms.expect_append_message()`, … A call
/// with no expectation panics, as with any mockall mock. `append_messages` goes to
/// `rooms.expect_append_messages()` too (not through `append_message`).
#[derive(Default)]
pub struct MockStore {
    /// Sessions, tokens, tickets, names.
    pub sessions: MockSessionStore,
    /// Sockets, presence, the online listing.
    pub presence: MockPresenceStore,
    /// Node heartbeats and reaping, and `ping`.
    pub nodes: MockNodeStore,
    /// Chat requests.
    pub requests: MockRequestStore,
    /// Rooms and history.
    pub rooms: MockRoomStore,
    /// Timers.
    pub timers: MockTimerStore,
    /// The offline notification queue.
    pub notifications: MockNotificationStore,
    /// Blocks, decline cooldowns, the pending-request cap.
    pub blocks: MockBlockStore,
}

impl MockStore {
    /// A mock with no expectations.
    pub fn new() -> MockStore {
        MockStore::default()
    }
}

impl std::fmt::Debug for MockStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MockStore")
    }
}

crate::delegate_store!(@sessions MockStore, self => self.sessions, (_op, call) => call.await);
crate::delegate_store!(@presence MockStore, self => self.presence, (_op, call) => call.await);
crate::delegate_store!(@nodes MockStore, self => self.nodes, (_op, call) => call.await);
crate::delegate_store!(@requests MockStore, self => self.requests, (_op, call) => call.await);
crate::delegate_store!(@rooms MockStore, self => self.rooms, (_op, call) => call.await, {
    async fn append_messages(
        &self,
        batch: Vec<(crate::RoomId, crate::NewMessage)>,
        history_max: usize,
    ) -> Vec<crate::Result<super::Appended>> {
        self.rooms.append_messages(batch, history_max).await
    }
});
crate::delegate_store!(@timers MockStore, self => self.timers, (_op, call) => call.await);
crate::delegate_store!(@notifications MockStore, self => self.notifications, (_op, call) => call.await);
crate::delegate_store!(@blocks MockStore, self => self.blocks, (_op, call) => call.await);
