//! Keeping unwanted people out: blocks, the cooldown a decline starts, and the cap on a user's
//! outgoing pending requests. Each rule is one atomic step, so a block racing a request or an
//! accept never leaves a request or a room between the two behind.

use std::collections::BTreeSet;

use crate::error::Result;
use crate::store::{NewRoom, RequestOutcome};
use crate::types::{ChatRequest, Millis, Phone, Room};

/// What [`BlockStore::block`] removed between the two users, for the service to tell them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockOutcome {
    /// The blocked user's pending request to the blocker was dropped (silently: the blocked
    /// user is not told).
    pub dropped: bool,
    /// The blocker's pending request to the blocked user was cancelled (`request_cancelled`
    /// goes to the blocked user).
    pub cancelled: bool,
    /// The room the two shared, now deleted with its history (`room_closed` goes to both).
    pub room: Option<Room>,
}

/// Blocks (per session), decline cooldowns and the pending-request cap.
///
/// Part of the [`Store`](super::Store) port; its contract holds for every method here. Blocks
/// belong to the blocker's session: [`SessionStore::end_session`](super::SessionStore::end_session)
/// frees them (and the blocker's cooldowns) with it.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait::async_trait]
pub trait BlockStore: Send + Sync + 'static {
    /// `by` blocks `whom`, in one atomic step with its effects: the pending request
    /// `whom → by` is dropped, the pending request `by → whom` removed, and the room the two
    /// share deleted with its history; what was removed is returned (requests count if they
    /// were pending at `now`). Blocking a phone already blocked succeeds and changes nothing
    /// more. `whom` need not have a session. Fails with `TooManyBlocked` when `by` already
    /// blocks `max_blocked` other phones. `None` (nothing stored) when `by` has no session.
    async fn block(
        &self,
        by: &Phone,
        whom: &Phone,
        max_blocked: usize,
        now: Millis,
    ) -> Result<Option<BlockOutcome>>;

    /// `by` no longer blocks `whom` (nothing happens if they did not).
    async fn unblock(&self, by: &Phone, whom: &Phone) -> Result<()>;

    /// The phones `by` blocks, in byte order.
    async fn blocked(&self, by: &Phone) -> Result<Vec<Phone>>;

    /// The users `phone` must not see nor be seen by: those `phone` blocks and those whose
    /// live session blocks `phone`.
    async fn hidden_from(&self, phone: &Phone) -> Result<BTreeSet<Phone>>;

    /// Declines the pending request `from → to`: removes it like
    /// [`RequestStore::remove_request`](super::RequestStore::remove_request) and, when it was
    /// pending at `now`, refuses `from`'s next request to `to` until `cooldown_until` (see
    /// [`BlockStore::send_request_capped`]). Returns whether it was pending.
    async fn decline_request(
        &self,
        from: &Phone,
        to: &Phone,
        now: Millis,
        cooldown_until: Millis,
    ) -> Result<bool>;

    /// [`RequestStore::send_request`](super::RequestStore::send_request) with the cap: a
    /// request that would be stored as new (not a crossed accept, not already pending) fails
    /// with `TooManyPending` when `request.from` already has `max_pending` requests pending at
    /// `request.created_at`. Both forms also refuse, in the same atomic step: with
    /// `UserNotFound` a request between two users one of whom blocks the other, and with
    /// `RateLimited` (the whole seconds left, at least 1) a new request to a user who declined
    /// the sender's previous one less than the cooldown ago.
    async fn send_request_capped(
        &self,
        request: ChatRequest,
        room: NewRoom,
        max_pending: usize,
    ) -> Result<RequestOutcome>;
}
