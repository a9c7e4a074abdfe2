//! What a socket answers in an `error` event: the domain's errors, and this transport's own.

use chat_core::Error;

/// An error a socket reports to its client. The rules of the chat produce
/// [`SocketError::Domain`]; only the socket knows an event name the protocol does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SocketError {
    /// An error of the chat's rules (or a frame that does not parse: `bad_request`).
    #[error(transparent)]
    Domain(#[from] Error),
    /// A socket event name that the protocol does not have.
    #[error("unknown event")]
    UnknownEvent,
}

impl SocketError {
    /// The contract's `code`.
    pub fn code(&self) -> &'static str {
        match self {
            SocketError::Domain(e) => e.code(),
            SocketError::UnknownEvent => "unknown_event",
        }
    }

    /// Whether the answer counts toward a run of bad frames (a frame the client got wrong, not
    /// a refusal of the rules).
    pub(crate) fn counts_as_bad(&self) -> bool {
        matches!(
            self,
            SocketError::Domain(Error::BadRequest(_)) | SocketError::UnknownEvent
        )
    }
}
