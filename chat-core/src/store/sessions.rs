//! Sessions: a user's registration, its bearer token (kept as a digest), socket tickets and
//! display names, and the session's end with everything it owned.

use crate::error::Result;
use crate::types::{Millis, Names, Phone, Requests, Room, Session, TokenDigest};

/// What [`SessionStore::create_session`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionCreated {
    /// The live session (the existing one on a refresh).
    pub session: Session,
    /// An existing session was refreshed with its own token.
    pub refreshed: bool,
    /// The user was offline before (always true for a new session).
    pub came_online: bool,
}

/// What [`SessionStore::touch`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Touched {
    /// The session the token names.
    pub session: Session,
    /// The user was offline before this request.
    pub came_online: bool,
}

/// What [`SessionStore::end_session`] removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndedSession {
    /// The session that ended.
    pub session: Session,
    /// Its rooms, now deleted with their messages.
    pub rooms: Vec<Room>,
    /// Its pending requests, now dropped.
    pub requests: Requests,
}

/// Sessions and what authenticates them: registration, tokens, tickets, names, the session's end.
///
/// Part of the [`Store`](super::Store) port; its contract holds for every method here.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait::async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Creates a session for `session.phone`, online until `http_until`.
    /// If a session for the phone exists: with `refresh` equal to its token, refreshes its
    /// presence like [`SessionStore::touch`] and returns it; otherwise fails with `PhoneInUse`.
    /// Schedules `Timer::Presence` at `http_until`.
    async fn create_session(
        &self,
        session: Session,
        refresh: Option<TokenDigest>,
        http_until: Millis,
    ) -> Result<SessionCreated>;

    /// The session a token names, if any.
    async fn session(&self, token: &TokenDigest) -> Result<Option<Session>>;

    /// The display names of those of `phones` who have a live session with a name.
    async fn names(&self, phones: &[Phone]) -> Result<Names>;

    /// Stores `ticket`, a single-use stand-in for the session `token` names, valid until
    /// `expires_at`. Expired tickets are freed (by `now`, or by the backend's own expiry).
    async fn create_ticket(
        &self,
        ticket: &TokenDigest,
        token: &TokenDigest,
        now: Millis,
        expires_at: Millis,
    ) -> Result<()>;

    /// Takes `ticket`: the session it stands for, if the ticket exists, has not expired at
    /// `now` and its session still lives. A ticket is taken at most once, whatever the
    /// answer, by any number of concurrent callers on any node.
    async fn take_ticket(&self, ticket: &TokenDigest, now: Millis) -> Result<Option<Session>>;

    /// Authenticates an API request and extends the HTTP presence window to `http_until`
    /// (never shortens it); marks the user online and (re)schedules `Timer::Presence`.
    async fn touch(&self, token: &TokenDigest, http_until: Millis) -> Result<Option<Touched>>;

    /// Ends the user's session if they have no socket and went offline at or before
    /// `offline_before`: deletes the session, its token, presence, pending requests (both
    /// ways) and rooms with their history. `None` when the condition does not hold.
    async fn end_session(
        &self,
        phone: &Phone,
        offline_before: Millis,
    ) -> Result<Option<EndedSession>>;
}
