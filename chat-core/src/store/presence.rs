//! Presence: who is online, counted from open sockets and the HTTP presence window, and the
//! paged listing of online users.

use crate::error::Result;
use crate::types::{ConnKey, Millis, OnlinePage, Phone};

/// A user's presence as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PresenceState {
    /// Open sockets on live nodes.
    pub conns: u32,
    /// The end of the HTTP presence window (last API request + `presence`).
    pub http_until: Millis,
    /// When the user went offline; `None` while online.
    pub offline_since: Option<Millis>,
}

impl PresenceState {
    /// Whether the user counts as online at `now`.
    pub fn online_at(&self, now: Millis) -> bool {
        self.conns > 0 || now < self.http_until
    }
}

/// Presence: open sockets, the HTTP presence window, going offline, the online listing.
///
/// Part of the [`Store`](super::Store) port; its contract holds for every method here.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait::async_trait]
pub trait PresenceStore: Send + Sync + 'static {
    /// Counts an open socket; returns whether the user came online by it.
    async fn add_conn(&self, phone: &Phone, conn: &ConnKey) -> Result<bool>;

    /// Forgets a socket. When the user has none left, cuts the HTTP presence window to end
    /// at `grace_until` at the latest (`now + presence_grace`) and schedules `Timer::Presence`
    /// at `max(http_until, now)`. Unknown sockets are ignored.
    async fn remove_conn(
        &self,
        phone: &Phone,
        conn: &ConnKey,
        now: Millis,
        grace_until: Millis,
    ) -> Result<()>;

    /// The user's presence, if they have a session.
    async fn presence(&self, phone: &Phone) -> Result<Option<PresenceState>>;

    /// If the user has no sockets and `now >= http_until` and is not offline yet: marks them
    /// offline since `now`, removes them from the online listing, and schedules
    /// `Timer::SessionEnd` at `session_end_at`. Returns whether that happened.
    async fn go_offline(&self, phone: &Phone, now: Millis, session_end_at: Millis) -> Result<bool>;

    /// One page of online users. `cursor` is one this store returned, else `BadRequest`.
    async fn online_page(
        &self,
        cursor: Option<String>,
        limit: usize,
        now: Millis,
    ) -> Result<OnlinePage>;
}
