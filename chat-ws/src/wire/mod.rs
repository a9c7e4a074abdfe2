//! The JSON of socket frames: client frames parsed in two steps (an envelope, then the event's
//! own data; `send_message` in one pass that falls back to them), server frames built once as
//! text. Nothing here touches a socket or the service.
//!
//! - `error.rs`: [`SocketError`], what an `error` event reports.
//! - `parse.rs`: client frames → [`Request`]s, or the [`Rejected`] error to answer; acks.
//! - `encode.rs`: server frames through serde (replies, errors, delivered events).
//! - `json.rs`: the frames that carry messages, written by hand (the hot path).
//! - `props.rs`: the property tests of all three.

mod encode;
mod error;
mod json;
mod parse;

pub(crate) use encode::{
    ack_empty, connection_status, error_frame, event_frame, pong, user_registered,
};
pub use error::SocketError;
pub use json::message_json;
pub(crate) use json::{message_ack, room_history};
pub(crate) use parse::{
    Ack, Command, JoinRoom, LeaveRoom, MAX_BAD_FRAMES, MarkRead, Rejected, Request, SendMessage,
    Typing, parse, peek_ack,
};

#[cfg(test)]
mod props;
