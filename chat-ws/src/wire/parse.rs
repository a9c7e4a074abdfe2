//! Client frames → requests: the envelope, then the event's own data, with `send_message` in
//! one pass that falls back to the two steps; the ack's validation; the errors a frame that
//! does not parse is answered with.

use std::borrow::Cow;
use std::marker::PhantomData;

use chat_core::Error;

use super::SocketError;
use serde::de::value::MapAccessDeserializer;
use serde::de::{DeserializeOwned, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

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
    pub error: SocketError,
}

/// The client events of the contract's table, with their data.
#[derive(Debug, PartialEq)]
pub(crate) enum Command {
    RegisterUserSocket(RegisterUserSocket),
    JoinRoom(JoinRoom),
    LeaveRoom(LeaveRoom),
    SendMessage(SendMessage),
    Typing(Typing),
    MarkRead(MarkRead),
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

/// `mark_read` data: the room and the id of the last message read.
#[derive(Debug, Deserialize, PartialEq)]
pub(crate) struct MarkRead {
    pub room: String,
    pub id: String,
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
pub(super) fn parse_send_message(text: &str) -> Option<Request> {
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
pub(super) fn parse_in_two_steps(text: &str) -> Result<Request, Rejected> {
    let reject = |ack: Option<Ack>, why: &str| Rejected {
        ack,
        error: Error::bad_request(why).into(),
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
        "mark_read" => data_of(data).map(Command::MarkRead),
        "ping" => data_of::<Empty>(data).map(|_| Command::Ping),
        _ => {
            return Err(Rejected {
                ack,
                error: SocketError::UnknownEvent,
            });
        }
    };
    match command {
        Ok(command) => Ok(Request { ack, command }),
        Err(error) => Err(Rejected {
            ack,
            error: error.into(),
        }),
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
