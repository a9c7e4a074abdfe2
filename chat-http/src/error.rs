//! What an HTTP request can be answered with: the domain's errors, and this transport's own.

use chat_core::Error;

/// An error this adapter answers. The rules of the chat produce [`HttpError::Domain`]; a route
/// that does not exist, a method a route does not take and a body over its limit are known
/// only here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// An error of the chat's rules.
    #[error(transparent)]
    Domain(#[from] Error),
    /// No such route.
    #[error("no such route")]
    NotFound,
    /// A known route, another method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// A request body over its limit.
    #[error("payload too large")]
    PayloadTooLarge,
}

impl HttpError {
    /// The contract's `code`.
    pub fn code(&self) -> &'static str {
        match self {
            HttpError::Domain(e) => e.code(),
            HttpError::NotFound => "not_found",
            HttpError::MethodNotAllowed => "method_not_allowed",
            HttpError::PayloadTooLarge => "payload_too_large",
        }
    }
}

/// A result of this adapter.
pub(crate) type HttpResult<T> = std::result::Result<T, HttpError>;
