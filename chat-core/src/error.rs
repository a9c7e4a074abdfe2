//! The one error type of the domain. Each variant is one `code` of the wire contract; the
//! adapters map a variant to an HTTP status or a socket `error` event in exactly one place each.

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
    /// Unknown route (HTTP only).
    #[error("no such route")]
    NotFound,
    /// Known route, wrong method (HTTP only).
    #[error("method not allowed")]
    MethodNotAllowed,
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
    /// A body or frame over its limit.
    #[error("payload too large")]
    PayloadTooLarge,
    /// A rate limit was hit; retry after this many whole seconds.
    #[error("rate limited, retry in {retry_after_secs} s")]
    RateLimited {
        /// Seconds until a retry can succeed (at least 1).
        retry_after_secs: u64,
    },
    /// A socket event name that the protocol does not have.
    #[error("unknown event")]
    UnknownEvent,
    /// The store did not answer (in time).
    #[error("the store is unavailable, try again")]
    StoreUnavailable,
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
            Error::NotFound => "not_found",
            Error::MethodNotAllowed => "method_not_allowed",
            Error::UserNotFound => "user_not_found",
            Error::RequestNotFound => "request_not_found",
            Error::RoomNotFound => "room_not_found",
            Error::PhoneInUse => "phone_in_use",
            Error::AlreadyPending => "already_pending",
            Error::RoomExists { .. } => "room_exists",
            Error::PayloadTooLarge => "payload_too_large",
            Error::RateLimited { .. } => "rate_limited",
            Error::UnknownEvent => "unknown_event",
            Error::StoreUnavailable => "store_unavailable",
        }
    }

    /// Shorthand for [`Error::BadRequest`].
    pub fn bad_request(why: impl Into<String>) -> Self {
        Error::BadRequest(why.into())
    }

    /// Shorthand for [`Error::Forbidden`].
    pub fn forbidden(why: impl Into<String>) -> Self {
        Error::Forbidden(why.into())
    }
}
