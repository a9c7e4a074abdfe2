//! The JSON of socket frames: client frames parsed in two steps (an envelope, then the event's
//! own data), server frames built once as text. Nothing here touches a socket or the service.

use chat_core::{Error, Event, HistoryPage, Message, RoomId, rfc3339};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// A client's `ack`, kept as the exact JSON text it sent (a number or a string), so it is
/// echoed byte for byte whatever its size or notation.
pub(crate) type Ack = Box<RawValue>;

/// After this many frames in a row answered `bad_request` or `unknown_event`, the socket is
/// closed with 1008.
pub(crate) const MAX_BAD_FRAMES: u32 = 20;

/// The first parsing step: what every client frame must look like. Values are borrowed raw
/// JSON, so the data is parsed once, by the event's own struct.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default)]
    event: Option<&'a RawValue>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
    #[serde(borrow, default)]
    ack: Option<&'a RawValue>,
}

/// A client frame that parsed: what to do, and the ack to answer with.
#[derive(Debug)]
pub(crate) struct Request {
    pub ack: Option<Ack>,
    pub command: Command,
}

/// A client frame that did not parse: the error to answer, with the ack when one was readable.
#[derive(Debug)]
pub(crate) struct Rejected {
    pub ack: Option<Ack>,
    pub error: Error,
}

/// The client events of the contract's table, with their data.
#[derive(Debug, PartialEq)]
pub(crate) enum Command {
    RegisterUserSocket(RegisterUserSocket),
    JoinRoom(JoinRoom),
    LeaveRoom(LeaveRoom),
    SendMessage(SendMessage),
    Typing(Typing),
    Ping,
}

/// `register_user_socket` data.
#[derive(Debug, Deserialize, PartialEq)]
pub(crate) struct RegisterUserSocket {
    #[serde(default)]
    pub phone: Option<String>,
}

/// `join_room` data.
#[derive(Debug, Deserialize, PartialEq)]
pub(crate) struct JoinRoom {
    pub room: String,
    #[serde(default)]
    pub phone: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub since: Option<String>,
}

/// `leave_room` data. `phone`/`user`, when an old client sends them, name the caller.
#[derive(Debug, Deserialize, PartialEq)]
pub(crate) struct LeaveRoom {
    pub room: String,
    #[serde(default)]
    pub phone: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
}

/// `send_message` data.
#[derive(Debug, Deserialize, PartialEq)]
pub(crate) struct SendMessage {
    pub room: String,
    pub message: String,
    #[serde(default)]
    pub sender: Option<String>,
    #[serde(default)]
    pub client_id: Option<String>,
}

/// `typing` data. `phone`/`user`, when sent, name the caller.
#[derive(Debug, Deserialize, PartialEq)]
pub(crate) struct Typing {
    pub room: String,
    pub typing: bool,
    #[serde(default)]
    pub phone: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
}

/// `ping` data: no fields (extra ones are ignored, like everywhere).
#[derive(Debug, Deserialize)]
struct Empty {}

/// The ack of a frame, if the frame is a JSON object whose `ack` is a number or a string.
/// Used to answer a rate-limited frame with its ack without interpreting the rest.
pub(crate) fn peek_ack(text: &str) -> Option<Ack> {
    let envelope: Envelope<'_> = serde_json::from_str(text).ok()?;
    valid_ack(envelope.ack?).ok()
}

/// `Ok` for a number or a string (null never gets here: it is "no ack").
fn valid_ack(raw: &RawValue) -> Result<Ack, ()> {
    match raw.get().trim_start().bytes().next() {
        Some(b'"' | b'-' | b'0'..=b'9') => Ok(raw.to_owned()),
        _ => Err(()),
    }
}

/// Parses one client text frame.
pub(crate) fn parse(text: &str) -> Result<Request, Rejected> {
    let reject = |ack: Option<Ack>, why: &str| Rejected {
        ack,
        error: Error::bad_request(why),
    };
    let envelope: Envelope<'_> = serde_json::from_str(text).map_err(|_| {
        reject(
            None,
            "a frame must be a JSON object with a string \"event\"",
        )
    })?;
    let ack = match envelope.ack {
        None => None,
        Some(raw) => Some(
            valid_ack(raw)
                .map_err(|()| reject(None, "\"ack\" must be a number, a string or null"))?,
        ),
    };
    let event: Option<String> = envelope
        .event
        .and_then(|raw| serde_json::from_str(raw.get()).ok());
    let Some(event) = event else {
        return Err(reject(ack, "\"event\" must be a string"));
    };
    let data = envelope.data.map_or("{}", RawValue::get);
    let command = match &*event {
        "register_user_socket" => data_of(data).map(Command::RegisterUserSocket),
        "join_room" => data_of(data).map(Command::JoinRoom),
        "leave_room" => data_of(data).map(Command::LeaveRoom),
        "send_message" => data_of(data).map(Command::SendMessage),
        "typing" => data_of(data).map(Command::Typing),
        "ping" => data_of::<Empty>(data).map(|_| Command::Ping),
        _ => Err(Error::UnknownEvent),
    };
    match command {
        Ok(command) => Ok(Request { ack, command }),
        Err(error) => Err(Rejected { ack, error }),
    }
}

/// The second parsing step: the event's data, which must be a JSON object of the right shape.
fn data_of<T: DeserializeOwned>(raw: &str) -> Result<T, Error> {
    // serde would also accept an array for a struct; the contract wants an object.
    if !raw.trim_start().starts_with('{') {
        return Err(Error::bad_request("\"data\" must be an object"));
    }
    serde_json::from_str(raw).map_err(|e| {
        // serde's message names the field and the type it wanted, which is what a client
        // needs to fix the frame; the position in the text is noise.
        let mut why = e.to_string();
        if let Some(at) = why.find(" at line ") {
            why.truncate(at);
        }
        Error::bad_request(format!("bad \"data\": {why}"))
    })
}

// ------------------------------------------------------------------------ server frames

/// `{"event", "ack"?, "data"}`: every server frame.
#[derive(Serialize)]
struct Frame<'a, T: Serialize> {
    event: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    ack: Option<&'a RawValue>,
    data: &'a T,
}

/// Encodes a server frame.
pub(crate) fn frame<T: Serialize>(event: &str, ack: Option<&RawValue>, data: &T) -> Utf8Bytes {
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
pub(crate) struct EmptyData {}

/// The `data` of an `error` frame.
#[derive(Serialize)]
struct ErrorData<'a> {
    code: &'static str,
    message: &'a str,
}

/// The one place a domain error becomes a socket `error` frame.
pub(crate) fn error_frame(ack: Option<&RawValue>, error: &Error) -> Utf8Bytes {
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

/// A `<message>` of the contract.
#[derive(Serialize)]
pub(crate) struct WireMessage<'a> {
    id: String,
    room: &'a RoomId,
    sender: &'a str,
    message: &'a str,
    timestamp: String,
    client_id: Option<&'a str>,
}

impl<'a> WireMessage<'a> {
    pub(crate) fn new(m: &'a Message) -> WireMessage<'a> {
        WireMessage {
            id: m.id.to_string(),
            room: &m.room,
            sender: m.sender.as_str(),
            message: &m.message,
            timestamp: rfc3339(m.timestamp),
            client_id: m.client_id.as_deref(),
        }
    }
}

/// `room_history` data.
#[derive(Serialize)]
struct RoomHistory<'a> {
    room: &'a RoomId,
    messages: Vec<WireMessage<'a>>,
    more: bool,
}

/// The `room_history` reply to `join_room`.
pub(crate) fn room_history(ack: Option<&RawValue>, room: &RoomId, page: &HistoryPage) -> Utf8Bytes {
    frame(
        "room_history",
        ack,
        &RoomHistory {
            room,
            messages: page.messages.iter().map(WireMessage::new).collect(),
            more: page.more,
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
    }
    #[derive(Serialize)]
    struct RequestAccepted<'a> {
        chat_id: &'a RoomId,
        from_user: &'a str,
        to_user: &'a str,
    }
    #[derive(Serialize)]
    struct FromTo<'a> {
        from_user: &'a str,
        to_user: &'a str,
    }
    #[derive(Serialize)]
    struct Presence<'a> {
        phone: &'a str,
        online: bool,
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
        } => frame(
            "chat_request",
            None,
            &ChatRequest {
                from: from.as_str(),
                to: to.as_str(),
                created_at: *created_at,
            },
        ),
        Event::RequestAccepted {
            chat_id,
            from_user,
            to_user,
        } => frame(
            "request_accepted",
            None,
            &RequestAccepted {
                chat_id,
                from_user: from_user.as_str(),
                to_user: to_user.as_str(),
            },
        ),
        Event::RequestDeclined { from_user, to_user } => frame(
            "request_declined",
            None,
            &FromTo {
                from_user: from_user.as_str(),
                to_user: to_user.as_str(),
            },
        ),
        Event::RequestCancelled { from_user, to_user } => frame(
            "request_cancelled",
            None,
            &FromTo {
                from_user: from_user.as_str(),
                to_user: to_user.as_str(),
            },
        ),
        Event::Presence { phone, online } => frame(
            "presence",
            None,
            &Presence {
                phone: phone.as_str(),
                online: *online,
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
        Event::ReceiveMessage(m) => frame("receive_message", None, &WireMessage::new(m)),
        Event::UserJoined { room, user } => frame(
            "user_joined",
            None,
            &RoomUser {
                room,
                user: user.as_str(),
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
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test that unwraps fails loudly, as it should
mod tests {
    use super::*;
    use chat_core::{MessageId, Phone};
    use serde_json::{Value, json};

    fn rejected(text: &str) -> Rejected {
        match parse(text) {
            Ok(r) => panic!("{text} parsed as {r:?}"),
            Err(r) => r,
        }
    }

    fn code_and_ack(text: &str) -> (&'static str, Option<String>) {
        let r = rejected(text);
        (r.error.code(), r.ack.map(|a| a.get().to_owned()))
    }

    #[test]
    fn not_json_or_not_an_object_is_bad_request_without_ack() {
        for text in [
            "",
            "{",
            "not json",
            "[1,2]",
            "42",
            "\"ping\"",
            "null",
            "{\"event\":\"ping\"} trailing",
        ] {
            assert_eq!(code_and_ack(text), ("bad_request", None), "{text:?}");
        }
    }

    #[test]
    fn missing_or_non_string_event_is_bad_request_keeping_the_ack() {
        assert_eq!(
            code_and_ack(r#"{"ack":1}"#),
            ("bad_request", Some("1".into()))
        );
        assert_eq!(
            code_and_ack(r#"{"event":5,"ack":"x"}"#),
            ("bad_request", Some("\"x\"".into()))
        );
        assert_eq!(code_and_ack(r#"{"event":null}"#), ("bad_request", None));
        assert_eq!(code_and_ack(r#"{"event":["ping"]}"#), ("bad_request", None));
    }

    #[test]
    fn ack_types() {
        for bad in ["true", "false", "{}", "[]", "[1]", "{\"a\":1}"] {
            let text = format!(r#"{{"event":"ping","ack":{bad}}}"#);
            assert_eq!(code_and_ack(&text), ("bad_request", None), "{text}");
        }
        // null means no ack.
        let r = parse(r#"{"event":"ping","ack":null}"#).unwrap();
        assert!(r.ack.is_none());
        for good in [
            "7",
            "-1",
            "1.5e3",
            "123456789012345678901234567890",
            "\"a\\u0041\"",
            "\"\"",
        ] {
            let text = format!(r#"{{"event":"ping","ack":{good}}}"#);
            let r = parse(&text).unwrap();
            assert_eq!(r.ack.unwrap().get(), good);
            assert_eq!(r.command, Command::Ping);
        }
    }

    #[test]
    fn unknown_event_keeps_the_ack() {
        assert_eq!(
            code_and_ack(r#"{"event":"dance","ack":3}"#),
            ("unknown_event", Some("3".into()))
        );
        assert_eq!(code_and_ack(r#"{"event":""}"#), ("unknown_event", None));
        // Event names are exact.
        assert_eq!(code_and_ack(r#"{"event":"Ping"}"#), ("unknown_event", None));
    }

    #[test]
    fn wrong_field_types_are_bad_request_with_ack() {
        for text in [
            r#"{"event":"join_room","ack":1,"data":{"room":5}}"#,
            r#"{"event":"join_room","ack":1,"data":{}}"#,
            r#"{"event":"join_room","ack":1}"#,
            r#"{"event":"join_room","ack":1,"data":{"room":"r","since":7}}"#,
            r#"{"event":"send_message","ack":1,"data":{"room":"r","message":["hi"]}}"#,
            r#"{"event":"send_message","ack":1,"data":{"room":"r","message":"hi","client_id":3}}"#,
            r#"{"event":"send_message","ack":1,"data":{"room":"r","message":"hi","sender":false}}"#,
            r#"{"event":"typing","ack":1,"data":{"room":"r","typing":"yes"}}"#,
            r#"{"event":"typing","ack":1,"data":{"room":"r"}}"#,
            r#"{"event":"leave_room","ack":1,"data":{"room":null}}"#,
            r#"{"event":"register_user_socket","ack":1,"data":{"phone":1234567}}"#,
            r#"{"event":"join_room","ack":1,"data":["r"]}"#,
            r#"{"event":"ping","ack":1,"data":5}"#,
            r#"{"event":"ping","ack":1,"data":"x"}"#,
        ] {
            assert_eq!(
                code_and_ack(text),
                ("bad_request", Some("1".into())),
                "{text}"
            );
        }
    }

    #[test]
    fn good_frames_parse() {
        let r = parse(r#"{"event":"ping"}"#).unwrap();
        assert_eq!(r.command, Command::Ping);
        assert!(r.ack.is_none());
        let r = parse(r#"{"event":"ping","data":null,"extra":1}"#).unwrap();
        assert_eq!(r.command, Command::Ping);
        let r = parse(
            r#"{"event":"send_message","data":{"room":"r","message":"hi","client_id":null,"x":1}}"#,
        )
        .unwrap();
        assert_eq!(
            r.command,
            Command::SendMessage(SendMessage {
                room: "r".into(),
                message: "hi".into(),
                sender: None,
                client_id: None,
            })
        );
        let r = parse(
            r#"{"event":"join_room","data":{"room":"r","since":"1-0","user":"+1555000111"}}"#,
        )
        .unwrap();
        assert_eq!(
            r.command,
            Command::JoinRoom(JoinRoom {
                room: "r".into(),
                phone: None,
                user: Some("+1555000111".into()),
                since: Some("1-0".into()),
            })
        );
        let r = parse(r#"{"event":"register_user_socket"}"#).unwrap();
        assert_eq!(
            r.command,
            Command::RegisterUserSocket(RegisterUserSocket { phone: None })
        );
    }

    #[test]
    fn peek_ack_reads_only_a_valid_ack() {
        assert_eq!(peek_ack(r#"{"event":1,"ack":9}"#).unwrap().get(), "9");
        assert!(peek_ack(r#"{"ack":true}"#).is_none());
        assert!(peek_ack("nope").is_none());
    }

    #[test]
    fn server_frames() {
        let ack: Ack = RawValue::from_string("7".into()).unwrap();
        let v: Value = serde_json::from_str(&ack_empty(&ack)).unwrap();
        assert_eq!(v, json!({"event": "ack", "ack": 7, "data": {}}));
        let v: Value = serde_json::from_str(&error_frame(None, &Error::UnknownEvent)).unwrap();
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
        let v: Value = serde_json::from_str(&room_history(Some(&ack), &room, &page)).unwrap();
        assert_eq!(v["event"], "room_history");
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
    }
}
