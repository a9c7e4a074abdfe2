//! Server frames through serde: replies, errors and the events the hub delivers, each written
//! once as text. The frames that carry messages are written by hand, in `json.rs`.

use chat_core::{Event, MessageId, Names, RoomId};
use serde::Serialize;
use serde_json::value::RawValue;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::SocketError;
use super::json::received_frame;

/// `{"event", "ack"?, "data"}`: every server frame (the hand-written ones' tests compare with
/// it).
#[derive(Serialize)]
pub(super) struct Frame<'a, T: Serialize> {
    pub(super) event: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) ack: Option<&'a RawValue>,
    pub(super) data: &'a T,
}

/// Encodes a server frame.
fn frame<T: Serialize>(event: &str, ack: Option<&RawValue>, data: &T) -> Utf8Bytes {
    match serde_json::to_string(&Frame { event, ack, data }) {
        Ok(text) => Utf8Bytes::from(text),
        Err(e) => {
            // Only maps with non-string keys fail to encode, and no frame has one.
            tracing::error!(error = %e, event, "frame not encodable");
            Utf8Bytes::from_static(
                r#"{"event":"error","data":{"code":"bad_request","message":"unencodable reply"}}"#,
            )
        }
    }
}

/// `{}`.
#[derive(Serialize)]
struct EmptyData {}

/// The `data` of an `error` frame.
#[derive(Serialize)]
struct ErrorData<'a> {
    code: &'static str,
    message: &'a str,
}

/// The one place a domain error becomes a socket `error` frame.
pub(crate) fn error_frame(ack: Option<&RawValue>, error: &SocketError) -> Utf8Bytes {
    let message = error.to_string();
    frame(
        "error",
        ack,
        &ErrorData {
            code: error.code(),
            message: &message,
        },
    )
}

/// `connection_status` data.
#[derive(Serialize)]
struct ConnectionStatus<'a> {
    status: &'static str,
    phone: &'a str,
}

/// The first frame of every socket.
pub(crate) fn connection_status(phone: &str) -> Utf8Bytes {
    frame(
        "connection_status",
        None,
        &ConnectionStatus {
            status: "connected",
            phone,
        },
    )
}

/// `user_registered` data.
#[derive(Serialize)]
struct Status {
    status: &'static str,
}

/// The reply to `register_user_socket`.
pub(crate) fn user_registered(ack: Option<&RawValue>) -> Utf8Bytes {
    frame(
        "user_registered",
        ack,
        &Status {
            status: "registered",
        },
    )
}

/// The reply to `ping`.
pub(crate) fn pong(ack: Option<&RawValue>) -> Utf8Bytes {
    frame("pong", ack, &EmptyData {})
}

/// `{"event":"ack","ack":..,"data":{}}`.
pub(crate) fn ack_empty(ack: &RawValue) -> Utf8Bytes {
    frame("ack", Some(ack), &EmptyData {})
}

/// Data of the room events: `user_joined`, `user_left`.
#[derive(Serialize)]
struct RoomUser<'a> {
    room: &'a RoomId,
    user: &'a str,
}

/// The frame of a delivered event. The wire names and fields are the contract's; they are
/// spelled out here rather than taken from chat-core's own serde form, which is free to change.
pub(crate) fn event_frame(event: &Event) -> Utf8Bytes {
    #[derive(Serialize)]
    struct ChatRequest<'a> {
        from: &'a str,
        to: &'a str,
        created_at: u64,
        names: &'a Names,
    }
    #[derive(Serialize)]
    struct RequestAccepted<'a> {
        chat_id: &'a RoomId,
        from_user: &'a str,
        to_user: &'a str,
        names: &'a Names,
    }
    #[derive(Serialize)]
    struct FromTo<'a> {
        from_user: &'a str,
        to_user: &'a str,
        names: &'a Names,
    }
    #[derive(Serialize)]
    struct Presence<'a> {
        phone: &'a str,
        online: bool,
        names: &'a Names,
    }
    #[derive(Serialize)]
    struct Joined<'a> {
        room: &'a RoomId,
        user: &'a str,
        names: &'a Names,
    }
    #[derive(Serialize)]
    struct RoomClosed<'a> {
        room: &'a RoomId,
        by: &'a str,
    }
    #[derive(Serialize)]
    struct RoomOnly<'a> {
        room: &'a RoomId,
    }
    #[derive(Serialize)]
    struct ReadData<'a> {
        room: &'a RoomId,
        user: &'a str,
        id: &'a MessageId,
    }
    #[derive(Serialize)]
    struct TypingData<'a> {
        room: &'a RoomId,
        user: &'a str,
        typing: bool,
    }
    match event {
        Event::ChatRequest {
            from,
            to,
            created_at,
            names,
        } => frame(
            "chat_request",
            None,
            &ChatRequest {
                from: from.as_str(),
                to: to.as_str(),
                created_at: *created_at,
                names,
            },
        ),
        Event::RequestAccepted {
            chat_id,
            from_user,
            to_user,
            names,
        } => frame(
            "request_accepted",
            None,
            &RequestAccepted {
                chat_id,
                from_user: from_user.as_str(),
                to_user: to_user.as_str(),
                names,
            },
        ),
        Event::RequestDeclined {
            from_user,
            to_user,
            names,
        } => frame(
            "request_declined",
            None,
            &FromTo {
                from_user: from_user.as_str(),
                to_user: to_user.as_str(),
                names,
            },
        ),
        Event::RequestCancelled {
            from_user,
            to_user,
            names,
        } => frame(
            "request_cancelled",
            None,
            &FromTo {
                from_user: from_user.as_str(),
                to_user: to_user.as_str(),
                names,
            },
        ),
        Event::Presence {
            phone,
            online,
            names,
        } => frame(
            "presence",
            None,
            &Presence {
                phone: phone.as_str(),
                online: *online,
                names,
            },
        ),
        Event::RoomClosed { room, by } => frame(
            "room_closed",
            None,
            &RoomClosed {
                room,
                by: by.as_str(),
            },
        ),
        Event::RoomExpired { room } => frame("room_expired", None, &RoomOnly { room }),
        Event::ReceiveMessage(m) => received_frame(m),
        Event::UserJoined { room, user, names } => frame(
            "user_joined",
            None,
            &Joined {
                room,
                user: user.as_str(),
                names,
            },
        ),
        Event::UserLeft { room, user } => frame(
            "user_left",
            None,
            &RoomUser {
                room,
                user: user.as_str(),
            },
        ),
        Event::Typing { room, user, typing } => frame(
            "typing",
            None,
            &TypingData {
                room,
                user: user.as_str(),
                typing: *typing,
            },
        ),
        Event::Read { room, user, id } => frame(
            "read",
            None,
            &ReadData {
                room,
                user: user.as_str(),
                id,
            },
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::json::room_history;
    use crate::wire::parse::Ack;
    use chat_core::{HistoryPage, Message, MessageId, Phone};
    use serde_json::{Value, json};

    #[test]
    fn server_frames() {
        let ack: Ack = RawValue::from_string("7".into()).unwrap();
        let v: Value = serde_json::from_str(&ack_empty(&ack)).unwrap();
        assert_eq!(v, json!({"event": "ack", "ack": 7, "data": {}}));
        let v: Value =
            serde_json::from_str(&error_frame(None, &SocketError::UnknownEvent)).unwrap();
        assert_eq!(
            v,
            json!({"event": "error", "data": {"code": "unknown_event", "message": "unknown event"}})
        );
        let room = RoomId::generate();
        let m = Message {
            id: MessageId {
                ms: 1_795_628_400_123,
                seq: 2,
            },
            room,
            sender: Phone::parse("+14155550100").unwrap(),
            message: "hi".into(),
            timestamp: 1_795_628_400_123,
            client_id: None,
        };
        let v: Value =
            serde_json::from_str(&event_frame(&Event::ReceiveMessage(m.clone()))).unwrap();
        assert_eq!(
            v,
            json!({"event": "receive_message", "data": {
                "id": "1795628400123-2", "room": room.to_string(), "sender": "+14155550100",
                "message": "hi", "timestamp": "2026-11-25T17:40:00.123Z", "client_id": null}})
        );
        let page = HistoryPage {
            messages: vec![m],
            more: true,
        };
        let a = Phone::parse("+14155550100").unwrap();
        let b = Phone::parse("+14155550101").unwrap();
        let read = [(a.clone(), Some(page.messages[0].id)), (b, None)]
            .into_iter()
            .collect();
        let v: Value =
            serde_json::from_str(&room_history(Some(&ack), &room, &page, &read)).unwrap();
        assert_eq!(v["event"], "room_history");
        assert_eq!(
            v["data"]["read"],
            json!({"+14155550100": "1795628400123-2", "+14155550101": null})
        );
        assert_eq!(v["ack"], 7);
        assert_eq!(v["data"]["more"], true);
        assert_eq!(v["data"]["messages"][0]["id"], "1795628400123-2");
        let v: Value = serde_json::from_str(&event_frame(&Event::Typing {
            room,
            user: Phone::parse("+14155550100").unwrap(),
            typing: true,
        }))
        .unwrap();
        assert_eq!(
            v,
            json!({"event": "typing", "data": {"room": room.to_string(), "user": "+14155550100", "typing": true}})
        );
        let v: Value = serde_json::from_str(&event_frame(&Event::Read {
            room,
            user: a,
            id: MessageId { ms: 17, seq: 3 },
        }))
        .unwrap();
        assert_eq!(
            v,
            json!({"event": "read", "data": {"room": room.to_string(), "user": "+14155550100", "id": "17-3"}})
        );
    }
}
