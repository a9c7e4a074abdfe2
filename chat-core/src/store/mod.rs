//! The storage port, split along the aggregates it serves: [`SessionStore`], [`PresenceStore`],
//! [`NodeStore`], [`RequestStore`], [`RoomStore`], [`TimerStore`], [`NotificationStore`] and
//! [`BlockStore`]. [`Store`] is "a whole store": any type that implements all eight (a blanket
//! impl, nothing to write). The service holds an `Arc<dyn Store>`.
//!
//! The operations are the atomic steps the service's rules need, not a key-value bag.
//! Contract for every implementation of every part:
//! - Each method is atomic: concurrent calls (from tasks or nodes) behave as if in some
//!   serial order, and a failed call changed nothing. No read-modify-write across calls.
//! - An unreachable backend is `Error::StoreUnavailable`, returned within the store's timeout.
//! - Whatever ends is freed: an ended session, request or room leaves no data behind.
//! - `now` and deadlines come from the caller's clock; stores with a server-side clock may use
//!   it only to free data (key expiry) well after the deadline the caller set.
//!
//! The conformance suite (`testing` feature) is the executable form of this contract. A store
//! that forwards to another (a decorator, a test store that fails on demand) implements all eight
//! with one [`delegate_store!`](crate::delegate_store).

mod blocks;
mod nodes;
mod notifications;
mod presence;
mod requests;
mod rooms;
mod sessions;
mod timers;

#[cfg(any(test, feature = "mocks"))]
mod mock;

#[cfg(any(test, feature = "mocks"))]
pub use blocks::MockBlockStore;
pub use blocks::{BlockOutcome, BlockStore};
#[cfg(any(test, feature = "mocks"))]
pub use mock::MockStore;
#[cfg(any(test, feature = "mocks"))]
pub use nodes::MockNodeStore;
pub use nodes::NodeStore;
#[cfg(any(test, feature = "mocks"))]
pub use notifications::MockNotificationStore;
pub use notifications::{
    Enqueued, LeasedNotification, Notification, NotificationKind, NotificationStore, OfflineEvent,
    PREVIEW_CHARS, preview,
};
#[cfg(any(test, feature = "mocks"))]
pub use presence::MockPresenceStore;
pub use presence::{PresenceState, PresenceStore};
#[cfg(any(test, feature = "mocks"))]
pub use requests::MockRequestStore;
pub use requests::{NewRoom, RequestOutcome, RequestStore};
#[cfg(any(test, feature = "mocks"))]
pub use rooms::MockRoomStore;
pub use rooms::{Appended, RoomOverview, RoomStore, UNREAD_MAX};
#[cfg(any(test, feature = "mocks"))]
pub use sessions::MockSessionStore;
pub use sessions::{EndedSession, SessionCreated, SessionStore, Touched};
#[cfg(any(test, feature = "mocks"))]
pub use timers::MockTimerStore;
pub use timers::{DueTimer, Timer, TimerStore};

/// A whole store: every part of the port. Implemented for any type that implements the eight
/// parts; use it as the bound (`Arc<dyn Store>`, `S: Store`) wherever all of it is needed.
pub trait Store:
    SessionStore
    + PresenceStore
    + NodeStore
    + RequestStore
    + RoomStore
    + TimerStore
    + NotificationStore
    + BlockStore
{
}

impl<T> Store for T where
    T: SessionStore
        + PresenceStore
        + NodeStore
        + RequestStore
        + RoomStore
        + TimerStore
        + NotificationStore
        + BlockStore
        + ?Sized
{
}

/// The eight parts and [`Store`], to bring their methods into scope where a concrete store
/// (a `MemoryStore`, a `RedisStore`) is called directly: `use chat_core::store::prelude::*;`.
pub mod prelude {
    pub use super::{
        BlockStore, NodeStore, NotificationStore, PresenceStore, RequestStore, RoomStore,
        SessionStore, Store, TimerStore,
    };
}
