//! Chat requests: sending, accepting (which makes a room), removing, listing.

use crate::error::Result;
use crate::types::{ChatRequest, Millis, Names, Phone, Requests, Room, RoomId};

/// The fixed facts of a room an accept may create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRoom {
    /// Its id, drawn by the service.
    pub id: RoomId,
    /// Creation time.
    pub created_at: Millis,
    /// `created_at + room_ttl`.
    pub expires_at: Millis,
    /// The display names of the two users of the call, for the events the store publishes with
    /// it (`chat_request`, `request_accepted`).
    pub names: Names,
}

/// What [`RequestStore::send_request`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestOutcome {
    /// The request is now pending.
    Sent,
    /// The recipient had a pending request to the sender: it was accepted, making this room.
    Accepted(Room),
    /// The same request was already pending.
    AlreadyPending,
    /// The two already share this room.
    RoomExists(RoomId),
}

/// Chat requests between two users, and the room an accept makes.
///
/// Part of the [`Store`](super::Store) port; its contract holds for every method here.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait::async_trait]
pub trait RequestStore: Send + Sync + 'static {
    /// Sends `request`, unless the two share a room (`RoomExists`) or it is already pending.
    /// When `request.to` has a pending request to `request.from`, accepts that one instead,
    /// creating `room` with members `[request.to, request.from]`. Schedules
    /// `Timer::RequestExpiry` or `Timer::RoomExpiry` accordingly. Requests past their
    /// `expires_at` count as absent.
    ///
    /// What it did is published through this backend's bus in the same atomic step, so no
    /// node can see the change without its event: a sent request as
    /// [`Delivery::chat_request`](crate::Delivery::chat_request) to `request.to`, a room made
    /// as [`Delivery::request_accepted`](crate::Delivery::request_accepted) to both members.
    ///
    /// Fails with `UserNotFound`, storing nothing, when `request.to` has no session or is not
    /// online at `request.created_at` (no socket, HTTP presence window over), checked in the
    /// same atomic step: a request to a session that ended, or went offline, a moment before must
    /// not be kept (nor kept for whoever registers that phone next), and the caller needs no
    /// round trip of its own to check first. Blocks and decline cooldowns apply as
    /// [`BlockStore::send_request_capped`](super::BlockStore::send_request_capped) says; no
    /// cap on pending requests.
    async fn send_request(&self, request: ChatRequest, room: NewRoom) -> Result<RequestOutcome>;

    /// Accepts the pending request `from → to`: removes it (and any `to → from`) and creates
    /// `room` with members `[from, to]`, scheduling `Timer::RoomExpiry`. `None` when no such
    /// request is pending at `now`, or when one of the two blocks the other. Exactly one of any number of concurrent accepts succeeds.
    /// The room made is published as
    /// [`Delivery::request_accepted`](crate::Delivery::request_accepted) to both members
    /// through this backend's bus, in the same atomic step.
    async fn accept_request(
        &self,
        from: &Phone,
        to: &Phone,
        room: NewRoom,
        now: Millis,
    ) -> Result<Option<Room>>;

    /// Removes the pending request `from → to` (decline, cancel, expiry); whether one was
    /// pending at `now`.
    async fn remove_request(&self, from: &Phone, to: &Phone, now: Millis) -> Result<bool>;

    /// The user's pending requests at `now`.
    async fn requests(&self, phone: &Phone, now: Millis) -> Result<Requests>;
}
