//! The JSON of socket frames: client frames parsed in two steps (an envelope, then the event's
//! own data; `send_message` in one pass that falls back to them), server frames built once as
//! text. Nothing here touches a socket or the service.

use std::borrow::Cow;
use std::cell::Cell;
use std::marker::PhantomData;

use chat_core::{Error, Event, HistoryPage, Message, MessageId, Names, RoomId};
use serde::de::value::MapAccessDeserializer;
use serde::de::{DeserializeOwned, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
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
    let Object(envelope) = serde_json::from_str::<Object<Envelope<'_>>>(text).ok()?;
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
    match parse_send_message(text) {
        Some(request) => Ok(request),
        None => parse_in_two_steps(text),
    }
}

/// The frame of nearly every client message, `send_message`, parsed in one pass: the envelope
/// and its data together, the event name and the ack borrowed. The two-step parse reads the
/// data twice and was the largest single cost of a message in the server. Anything this does
/// not take as it is (another event, an escaped name, data that is not an object of the right
/// shape, a bad ack, a duplicate key, any syntax error) returns `None`, and the two-step parse
/// then gives the answer, errors included, exactly as without this.
fn parse_send_message(text: &str) -> Option<Request> {
    /// `"send_message"`, unescaped; anything else stops the parse at once.
    struct SendMessageName;

    impl<'de> Deserialize<'de> for SendMessageName {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<SendMessageName, D::Error> {
            match <&str>::deserialize(d)? {
                "send_message" => Ok(SendMessageName),
                _ => Err(serde::de::Error::custom("another event")),
            }
        }
    }

    #[derive(Deserialize)]
    struct Frame<'a> {
        #[allow(dead_code)] // only its parse matters
        event: SendMessageName,
        data: Object<SendMessage>,
        #[serde(borrow, default)]
        ack: Option<&'a RawValue>,
    }

    let Object(frame) = serde_json::from_str::<Object<Frame<'_>>>(text).ok()?;
    let ack = match frame.ack {
        None => None,
        Some(raw) => Some(valid_ack(raw).ok()?),
    };
    Some(Request {
        ack,
        command: Command::SendMessage(frame.data.0),
    })
}

/// A `T` that must be written as a JSON object (serde would also take an array for a struct).
struct Object<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Object<T>, D::Error> {
        struct ObjectVisitor<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
            type Value = Object<T>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object")
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Object<T>, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map)).map(Object)
            }
        }

        d.deserialize_map(ObjectVisitor(PhantomData))
    }
}

/// Parses one client text frame in two steps: the envelope, then the event's data.
fn parse_in_two_steps(text: &str) -> Result<Request, Rejected> {
    let reject = |ack: Option<Ack>, why: &str| Rejected {
        ack,
        error: Error::bad_request(why),
    };
    // An object: serde would also read a struct from an array (`["ping", {}, 7]`).
    let Object(envelope) = serde_json::from_str::<Object<Envelope<'_>>>(text).map_err(|_| {
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
    // Borrowed from the frame unless the name has escapes (then it is unescaped into a copy).
    let event: Option<Cow<'_, str>> = envelope.event.and_then(|raw| {
        serde_json::from_str::<&str>(raw.get())
            .map(Cow::Borrowed)
            .or_else(|_| serde_json::from_str::<String>(raw.get()).map(Cow::Owned))
            .ok()
    });
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

// ------------------------------------------------------------- messages, encoded by hand

/// The frames that carry messages (`receive_message`, the `send_message` ack, `room_history`)
/// are written by hand rather than through serde: every message is encoded for its deliveries
/// and for its sender's ack, and serde's generic path, with the id and the timestamp built by
/// `format!` first, was the largest share of the server's own time on the message path. The
/// output is byte for byte what serde_json writes for the same fields (the tests hold it to
/// that).
pub(crate) fn message_frame(event: &str, ack: Option<&RawValue>, m: &Message) -> Utf8Bytes {
    let ack_len = ack.map_or(0, |a| a.get().len());
    let mut out = String::with_capacity(32 + event.len() + ack_len + message_capacity(m));
    frame_head(&mut out, event, ack);
    push_message(&mut out, m);
    out.push('}');
    Utf8Bytes::from(out)
}

thread_local! {
    /// The last `receive_message` frame encoded on this thread, with its message's room and
    /// id. With the memory store a message is delivered on the sender's thread just before
    /// the sender's ack is built, so the ack can copy the encoded message from here instead of
    /// encoding it again; anything else simply misses.
    static LAST_RECEIVED: Cell<Option<(RoomId, MessageId, Utf8Bytes)>> = const { Cell::new(None) };
}

/// `{"event":"receive_message","data":` — how every `receive_message` frame starts.
const RECEIVED_HEAD: &str = "{\"event\":\"receive_message\",\"data\":";

/// The `receive_message` frame of a message (remembered for [`message_ack`]).
fn received_frame(m: &Message) -> Utf8Bytes {
    let frame = message_frame("receive_message", None, m);
    LAST_RECEIVED.set(Some((m.room, m.id, frame.clone())));
    frame
}

/// The ack of `send_message`: `{"event":"ack","ack":..,"data":<message>}`.
pub(crate) fn message_ack(ack: &RawValue, m: &Message) -> Utf8Bytes {
    if let Some((room, id, frame)) = LAST_RECEIVED.take()
        && room == m.room
        && id == m.id
        && let Some(data) = frame
            .strip_prefix(RECEIVED_HEAD)
            .and_then(|rest| rest.strip_suffix('}'))
    {
        // Exactly its length: a full String becomes the frame's bytes without another
        // allocation (a partly filled one costs one more, for the shared handle).
        let len = r#"{"event":"ack","ack":,"data":}"#.len() + ack.get().len() + data.len();
        let mut out = String::with_capacity(len);
        frame_head(&mut out, "ack", Some(ack));
        out.push_str(data);
        out.push('}');
        debug_assert_eq!(out.len(), len);
        return Utf8Bytes::from(out);
    }
    message_frame("ack", Some(ack), m)
}

/// The `room_history` reply to `join_room`.
pub(crate) fn room_history(ack: Option<&RawValue>, room: &RoomId, page: &HistoryPage) -> Utf8Bytes {
    let ack_len = ack.map_or(0, |a| a.get().len());
    let body: usize = page.messages.iter().map(|m| message_capacity(m) + 1).sum();
    let mut out = String::with_capacity(112 + ack_len + body);
    frame_head(&mut out, "room_history", ack);
    out.push_str("{\"room\":");
    push_room(&mut out, room);
    out.push_str(",\"messages\":[");
    for (i, m) in page.messages.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_message(&mut out, m);
    }
    out.push_str("],\"more\":");
    out.push_str(if page.more { "true" } else { "false" });
    out.push_str("}}");
    Utf8Bytes::from(out)
}

/// `{"event":"<event>","ack":<ack>,"data":` — what is left is the data and the closing brace.
fn frame_head(out: &mut String, event: &str, ack: Option<&RawValue>) {
    out.push_str("{\"event\":");
    push_json_str(out, event);
    if let Some(ack) = ack {
        out.push_str(",\"ack\":");
        out.push_str(ack.get());
    }
    out.push_str(",\"data\":");
}

/// Enough for a message's JSON without regrowing, unless its text needs many escapes.
fn message_capacity(m: &Message) -> usize {
    // The field names and punctuation, a 41-byte id, a UUID, a 24-byte timestamp, a phone.
    const FIXED: usize = 200;
    let text = m.message.len() + m.message.len() / 8;
    FIXED + text + m.client_id.as_ref().map_or(0, |c| c.len() + 2)
}

/// A `<message>` of the contract as JSON text, for the REST history route: the one definition
/// of the shape, shared with the socket frames.
/// (`push_message` always writes valid JSON — the tests hold it to serde's output — so the
/// error is for the caller's fault path only.)
pub fn message_json(m: &Message) -> serde_json::Result<Box<serde_json::value::RawValue>> {
    let mut out = String::with_capacity(message_capacity(m));
    push_message(&mut out, m);
    serde_json::value::RawValue::from_string(out)
}

/// A `<message>` of the contract:
/// `{"id","room","sender","message","timestamp","client_id"}`.
fn push_message(out: &mut String, m: &Message) {
    out.push_str("{\"id\":\"");
    push_u64(out, m.id.ms);
    out.push('-');
    push_u64(out, m.id.seq);
    out.push_str("\",\"room\":");
    push_room(out, &m.room);
    out.push_str(",\"sender\":");
    push_json_str(out, m.sender.as_str());
    out.push_str(",\"message\":");
    push_json_str(out, &m.message);
    out.push_str(",\"timestamp\":\"");
    chat_core::push_rfc3339(out, m.timestamp);
    out.push_str("\",\"client_id\":");
    match &m.client_id {
        Some(c) => push_json_str(out, c),
        None => out.push_str("null"),
    }
    out.push('}');
}

fn push_room(out: &mut String, room: &RoomId) {
    let mut buf = [0u8; 36];
    out.push('"');
    out.push_str(room.0.hyphenated().encode_lower(&mut buf));
    out.push('"');
}

/// Which bytes a JSON string must escape: `"`, `\` and the control characters, as serde_json.
const ESCAPED: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        t[b] = true;
        b += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

/// `s` as a JSON string, escaped as serde_json escapes it (short forms where JSON has them,
/// else `\u00xx`).
fn push_json_str(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    let mut start = 0;
    for (i, &b) in s.as_bytes().iter().enumerate() {
        if !ESCAPED[usize::from(b)] {
            continue;
        }
        // Every escaped byte is ASCII, so `start` and `i` are character boundaries.
        out.push_str(&s[start..i]);
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0x08 => out.push_str("\\b"),
            0x0c => out.push_str("\\f"),
            _ => {
                out.push_str("\\u00");
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 0xf)]));
            }
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// `n` in decimal.
fn push_u64(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &d in &digits[at..] {
        out.push(char::from(d));
    }
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
    }
}

#[cfg(test)]
mod tests {
    /// The first millisecond of the year 10000, where years get a fifth digit.
    const YEAR_10000: u64 = 253_402_300_800_000;

    use super::*;
    use chat_core::{MessageId, Phone, rfc3339};
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
    fn escaped_event_names_are_unescaped() {
        let r = parse(r#"{"event":"p\u0069ng","ack":1}"#).unwrap();
        assert_eq!(r.command, Command::Ping);
        assert_eq!(
            code_and_ack(r#"{"event":"p\u0069nk"}"#),
            ("unknown_event", None)
        );
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

    /// The serde form of a `<message>`: what the hand-written encoder must write, byte for byte.
    #[derive(Serialize)]
    struct SerdeMessage<'a> {
        id: String,
        room: &'a RoomId,
        sender: &'a str,
        message: &'a str,
        timestamp: String,
        client_id: Option<&'a str>,
    }

    impl<'a> SerdeMessage<'a> {
        fn new(m: &'a Message) -> SerdeMessage<'a> {
            SerdeMessage {
                id: m.id.to_string(),
                room: &m.room,
                sender: m.sender.as_str(),
                message: &m.message,
                timestamp: rfc3339(m.timestamp),
                client_id: m.client_id.as_deref(),
            }
        }
    }

    #[derive(Serialize)]
    struct SerdeHistory<'a> {
        room: &'a RoomId,
        messages: Vec<SerdeMessage<'a>>,
        more: bool,
    }

    fn tricky_messages() -> Vec<Message> {
        let room = RoomId::generate();
        let mut texts: Vec<String> = vec![
            String::new(),
            "hi".into(),
            "quote \" backslash \\ slash / done".into(),
            "héllo 👋 \u{2028}\u{2029} \u{7f} \u{80} \u{ffff}".into(),
            "x".repeat(4096),
            "\"\\".repeat(300),
        ];
        texts.push((0u8..0x20).map(char::from).collect());
        texts.push(
            (0u8..0x20)
                .map(|b| format!("a{}b", char::from(b)))
                .collect(),
        );
        let ids = [
            (0, 0),
            (1_795_628_400_123, 2),
            (u64::MAX, u64::MAX),
            (7, 10),
        ];
        let times = [
            0,
            1,
            999,
            1_795_628_400_123,
            946_684_799_999,
            951_782_400_000,
            YEAR_10000 - 1,
            YEAR_10000,
            u64::MAX,
        ];
        let client_ids = [None, Some("c-1"), Some("\"\\\n\u{1}é")];
        let mut out = Vec::new();
        for (i, text) in texts.into_iter().enumerate() {
            let (ms, seq) = ids[i % ids.len()];
            out.push(Message {
                id: MessageId { ms, seq },
                room,
                sender: Phone::parse("+14155550100").unwrap(),
                message: text,
                timestamp: times[i % times.len()],
                client_id: client_ids[i % client_ids.len()].map(str::to_owned),
            });
        }
        for (i, t) in times.iter().enumerate() {
            out.push(Message {
                id: MessageId {
                    ms: *t,
                    seq: i as u64,
                },
                room,
                sender: Phone::parse("+4915112345678").unwrap(),
                message: format!("at {t}"),
                timestamp: *t,
                client_id: client_ids[i % client_ids.len()].map(str::to_owned),
            });
        }
        out
    }

    #[test]
    fn message_frames_are_what_serde_writes() {
        let acks: Vec<Option<Ack>> = vec![
            None,
            Some(RawValue::from_string("7".into()).unwrap()),
            Some(RawValue::from_string("\"a\\u0041\"".into()).unwrap()),
            Some(RawValue::from_string("1.5e3".into()).unwrap()),
        ];
        for (i, m) in tricky_messages().iter().enumerate() {
            let ack = acks[i % acks.len()].as_deref();
            for event in ["receive_message", "ack"] {
                let serde = serde_json::to_string(&Frame {
                    event,
                    ack,
                    data: &SerdeMessage::new(m),
                })
                .unwrap();
                assert_eq!(&*message_frame(event, ack, m), serde.as_str());
            }
            assert_eq!(
                &*event_frame(&Event::ReceiveMessage(m.clone())),
                serde_json::to_string(&Frame {
                    event: "receive_message",
                    ack: None,
                    data: &SerdeMessage::new(m),
                })
                .unwrap()
                .as_str()
            );
        }
    }

    #[test]
    fn acks_copied_from_the_delivery_are_the_encoded_ones() {
        let ack: Ack = RawValue::from_string("\"k\"".into()).unwrap();
        let messages = tricky_messages();
        for m in &messages {
            let encoded = message_frame("ack", Some(&ack), m);
            // Right after its delivery: copied.
            event_frame(&Event::ReceiveMessage(m.clone()));
            assert_eq!(message_ack(&ack, m), encoded);
            // Nothing remembered, or another message remembered: encoded.
            assert_eq!(message_ack(&ack, m), encoded);
            let mut other = m.clone();
            other.id = other.id.next();
            event_frame(&Event::ReceiveMessage(other));
            assert_eq!(message_ack(&ack, m), encoded);
        }
    }

    #[test]
    fn room_history_is_what_serde_writes() {
        let messages = tricky_messages();
        let room = messages[0].room;
        let ack: Ack = RawValue::from_string("\"j\"".into()).unwrap();
        for n in [0, 1, messages.len()] {
            for more in [false, true] {
                let page = HistoryPage {
                    messages: messages[..n].to_vec(),
                    more,
                };
                for ack in [None, Some(&*ack)] {
                    let serde = serde_json::to_string(&Frame {
                        event: "room_history",
                        ack,
                        data: &SerdeHistory {
                            room: &room,
                            messages: page.messages.iter().map(SerdeMessage::new).collect(),
                            more,
                        },
                    })
                    .unwrap();
                    assert_eq!(&*room_history(ack, &room, &page), serde.as_str());
                }
            }
        }
    }

    #[test]
    fn numbers_in_decimal() {
        for n in [0, 1, 9, 10, 99, 100, 1_795_628_400_123, u64::MAX] {
            let mut s = String::new();
            push_u64(&mut s, n);
            assert_eq!(s, n.to_string());
        }
    }

    /// The one-pass parse of `send_message` must answer exactly as the two-step parse.
    #[test]
    fn the_one_pass_parse_answers_as_the_two_step_parse() {
        let data = [
            r#"{"room":"r","message":"hi"}"#,
            r#"{"message":"hi","room":"r","sender":"+14155550100","client_id":"c","x":[1,{"y":2}]}"#,
            r#"{"room":"r","message":"h\u00e9\"llo\n","client_id":null,"sender":null}"#,
            r#"{"room":"r"}"#,
            r#"{"room":5,"message":"hi"}"#,
            r#"{"room":"r","message":["hi"]}"#,
            r#"{"room":"r","message":"hi","client_id":3}"#,
            r#"{"room":"r","room":"s","message":"hi"}"#,
            r#"["r","hi"]"#,
            r#"["r","hi",null,null]"#,
            "null",
            "{}",
            "5",
            r#""x""#,
        ];
        let events = [
            r#""send_message""#,
            r#""send\u005fmessage""#,
            r#""Send_message""#,
            r#""ping""#,
            r#""join_room""#,
            "5",
            "null",
        ];
        let acks = [
            None,
            Some("7"),
            Some(r#""a""#),
            Some("null"),
            Some("true"),
            Some("{}"),
            Some("1.5e3"),
        ];
        let mut texts = Vec::new();
        for d in data {
            for e in events {
                for a in acks {
                    let ack = a.map(|a| format!(r#","ack":{a}"#)).unwrap_or_default();
                    texts.push(format!(r#"{{"event":{e},"data":{d}{ack}}}"#));
                    texts.push(format!(
                        r#"{{{}"data":{d},"event":{e}}}"#,
                        ack.trim_start_matches(',').to_owned()
                            + if ack.is_empty() { "" } else { "," }
                    ));
                    texts.push(format!(
                        r#" {{ "event" : {e} , "data" : {d} {ack} , "extra": true }} "#
                    ));
                }
            }
        }
        texts.extend(
            [
                r#"{"event":"send_message","data":{"room":"r","message":"hi"}} trailing"#,
                r#"{"event":"send_message","event":"send_message","data":{"room":"r","message":"hi"}}"#,
                r#"{"event":"send_message","data":{"room":"r","message":"hi"},"ack":1,"ack":2}"#,
                r#"{"event":"send_message"}"#,
                r#"{"event":"send_message","data":{"room":"r","message":"hi"}"#,
                r#"["send_message",{"room":"r","message":"hi"}]"#,
                r#"{"event":"send_message","data":{"room":"r","message":"hi"},"ack":-0.5e-3}"#,
                "",
                "{",
            ]
            .map(str::to_owned),
        );
        let answer = |r: Result<Request, Rejected>| match r {
            Ok(r) => Ok((
                r.ack.map(|a| a.get().to_owned()),
                format!("{:?}", r.command),
            )),
            Err(r) => Err((
                r.ack.map(|a| a.get().to_owned()),
                r.error.code(),
                r.error.to_string(),
            )),
        };
        let mut fast = 0;
        for text in &texts {
            if parse_send_message(text).is_some() {
                fast += 1;
            }
            assert_eq!(
                answer(parse(text)),
                answer(parse_in_two_steps(text)),
                "{text}"
            );
        }
        // The fast path did take the well-formed ones.
        assert!(fast >= 40, "{fast} frames parsed in one pass");
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

#[cfg(test)]
#[path = "wire_props.rs"]
mod props;
