//! The error type of the domain. Each variant is one `code` of the wire contract that the rules
//! of the chat can produce; errors of a transport (an unknown route, a body over its limit, an
//! unknown socket event) are the adapters' own, which wrap this one. Each adapter maps an error
//! to an HTTP status or a socket `error` event in exactly one place.

use std::sync::Arc;

use crate::types::RoomId;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong, named as the contract names it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Malformed input: wrong JSON shape, bad cursor, bad limit, unknown action.
    #[error("{0}")]
    BadRequest(String),
    /// A phone that is not `+`? then 7 to 15 digits after removing spaces, `-`, `(` and `)`.
    #[error("phone must be an optional + followed by 7 to 15 digits")]
    InvalidPhone,
    /// A chat request to oneself.
    #[error("you cannot send a chat request to yourself")]
    SelfRequest,
    /// A message that is empty after trimming white space.
    #[error("message is empty")]
    EmptyMessage,
    /// A message longer than `max_message_chars` Unicode scalar values.
    #[error("message is longer than {max} characters")]
    MessageTooLong {
        /// The configured limit.
        max: usize,
    },
    /// No token, or a token that names no live session.
    #[error("missing or unknown session token")]
    Unauthorized,
    /// The caller named someone else, or touched a room that is not theirs.
    #[error("{0}")]
    Forbidden(String),
    /// The recipient of a request is not registered or not online.
    #[error("user not found")]
    UserNotFound,
    /// No such pending request.
    #[error("no such pending request")]
    RequestNotFound,
    /// Unknown or expired room.
    #[error("room not found")]
    RoomNotFound,
    /// The phone belongs to a live session and the caller does not hold its token.
    #[error("this phone is in use by a live session")]
    PhoneInUse,
    /// The same request is already pending.
    #[error("a request to this user is already pending")]
    AlreadyPending,
    /// The two users already share an active room.
    #[error("you already share a chatroom with this user")]
    RoomExists {
        /// The room they share.
        chat_id: RoomId,
    },
    /// The caller already blocks as many phones as a session may.
    #[error("you already block {max} phones, the most a session may")]
    TooManyBlocked {
        /// The configured limit.
        max: usize,
    },
    /// The caller already has as many outgoing pending requests as allowed.
    #[error("you already have {max} pending requests, the most allowed")]
    TooManyPending {
        /// The configured limit.
        max: usize,
    },
    /// A rate limit was hit; retry after this many whole seconds.
    #[error("rate limited, retry in {retry_after_secs} s")]
    RateLimited {
        /// Seconds until a retry can succeed (at least 1).
        retry_after_secs: u64,
    },
    /// The store did not answer (in time), or answered what it should not have. The cause is
    /// kept for the logs (`source()`); clients see only the code.
    #[error("the store is unavailable, try again")]
    StoreUnavailable(#[source] StoreFailure),
}

impl Error {
    /// The contract's stable snake_case `code` for this error.
    pub fn code(&self) -> &'static str {
        match self {
            Error::BadRequest(_) => "bad_request",
            Error::InvalidPhone => "invalid_phone",
            Error::SelfRequest => "self_request",
            Error::EmptyMessage => "empty_message",
            Error::MessageTooLong { .. } => "message_too_long",
            Error::Unauthorized => "unauthorized",
            Error::Forbidden(_) => "forbidden",
            Error::UserNotFound => "user_not_found",
            Error::RequestNotFound => "request_not_found",
            Error::RoomNotFound => "room_not_found",
            Error::PhoneInUse => "phone_in_use",
            Error::AlreadyPending => "already_pending",
            Error::RoomExists { .. } => "room_exists",
            Error::TooManyBlocked { .. } => "too_many_blocked",
            Error::TooManyPending { .. } => "too_many_pending",
            Error::RateLimited { .. } => "rate_limited",
            Error::StoreUnavailable(_) => "store_unavailable",
        }
    }

    /// Shorthand for [`Error::BadRequest`].
    pub fn bad_request(why: impl Into<String>) -> Self {
        Error::BadRequest(why.into())
    }

    /// [`Error::StoreUnavailable`] for `cause`: a backend's error, or a text saying what went
    /// wrong.
    pub fn unavailable(cause: impl Into<StoreFailure>) -> Self {
        Error::StoreUnavailable(cause.into())
    }

    /// Whether this is [`Error::StoreUnavailable`], whatever its cause.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::StoreUnavailable(_))
    }

    /// Shorthand for [`Error::Forbidden`].
    pub fn forbidden(why: impl Into<String>) -> Self {
        Error::Forbidden(why.into())
    }
}

/// Why a store call failed: the backend's own error (a Redis error, a timeout) or a text, kept
/// as the `source` of [`Error::StoreUnavailable`] so logs show the cause.
///
/// Two failures compare equal whatever their causes: to the domain (and to clients) every store
/// failure is the same answer, and that keeps [`Error`] comparable in tests.
#[derive(Clone)]
pub struct StoreFailure(Arc<dyn std::error::Error + Send + Sync>);

impl StoreFailure {
    /// A failure caused by `error`.
    pub fn new(error: impl std::error::Error + Send + Sync + 'static) -> StoreFailure {
        StoreFailure(Arc::new(error))
    }
}

impl PartialEq for StoreFailure {
    fn eq(&self, _: &StoreFailure) -> bool {
        true
    }
}

impl Eq for StoreFailure {}

impl std::fmt::Debug for StoreFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StoreFailure({})", self.0)
    }
}

impl std::fmt::Display for StoreFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for StoreFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl From<&str> for StoreFailure {
    fn from(why: &str) -> StoreFailure {
        StoreFailure(Arc::from(Box::<dyn std::error::Error + Send + Sync>::from(
            why,
        )))
    }
}

impl From<String> for StoreFailure {
    fn from(why: String) -> StoreFailure {
        StoreFailure(Arc::from(Box::<dyn std::error::Error + Send + Sync>::from(
            why,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn a_store_failure_keeps_its_cause_for_the_logs() {
        let io = std::io::Error::new(std::io::ErrorKind::TimedOut, "redis did not answer");
        let e = Error::unavailable(StoreFailure::new(io));
        assert_eq!(e.code(), "store_unavailable");
        assert_eq!(e.to_string(), "the store is unavailable, try again");
        let cause = e.source().map(ToString::to_string);
        assert_eq!(cause.as_deref(), Some("redis did not answer"));
        assert_eq!(
            e,
            Error::unavailable("another cause"),
            "equal whatever the cause"
        );
        assert!(e.is_unavailable());
    }
}
