//! Property tests of the socket wire format (a child module of `wire`, so it reaches the
//! private parsers).
//!
//! - Client frames: any text gets an answer (a command, or `bad_request` / `unknown_event`),
//!   never a panic; the one-pass `send_message` parser answers exactly as the two-step parse;
//!   and on every frame that is JSON (without duplicate keys, which the parser refuses and
//!   `serde_json::Value` silently collapses) the parse agrees with what a plain
//!   `serde_json::Value` reading of the frame says: which event, which fields, which ack, or
//!   which error with which ack.
//! - Server frames: every frame decodes, with `serde_json`, to exactly the event or reply it
//!   was made from (every field, no extra ones).
//!
//! Cases: [`ci_config`] (a few thousand per property); `PROPTEST_CASES=100000 cargo test -p
//! chat-ws --lib props` runs more.

use std::collections::BTreeMap;
use std::fmt;

use chat_core::time::rfc3339;
use chat_core::{Error, Event, HistoryPage, Message, MessageId, Names, Phone, ReadMarks, RoomId};
use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;
use serde::de::{Error as _, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use serde_json::{Map, Number, Value, json};

use super::SocketError;
use super::encode::{
    ack_empty, connection_status, error_frame, event_frame, pong, user_registered,
};
use super::json::{message_ack, message_frame, message_json, room_history};
use super::parse::{
    Ack, Command, JoinRoom, LeaveRoom, RegisterUserSocket, Rejected, Request, SendMessage, Typing,
    parse, parse_in_two_steps, parse_send_message, peek_ack,
};

/// `cases` cases, unless `PROPTEST_CASES` is set: proptest's default config reads that
/// variable, and an explicit `cases` would override it, so it is set only without it.
fn ci_config(cases: u32) -> ProptestConfig {
    if std::env::var_os("PROPTEST_CASES").is_some() {
        ProptestConfig::default()
    } else {
        ProptestConfig {
            cases,
            ..ProptestConfig::default()
        }
    }
}

// ------------------------------------------------------------------ a strict JSON reading

/// A JSON value read by `serde_json`, refusing duplicate object keys (`Value` keeps the last
/// one; the frame parser refuses the frame). The oracle applies to texts this accepts.
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Strict, D::Error> {
        d.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Strict;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JSON")
    }
    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Strict, E> {
        Ok(Strict(Value::Bool(v)))
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Strict, E> {
        Ok(Strict(Value::from(v)))
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Strict, E> {
        Ok(Strict(Value::from(v)))
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Strict, E> {
        Number::from_f64(v)
            .map(|n| Strict(Value::Number(n)))
            .ok_or_else(|| E::custom("not a finite number"))
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Strict, E> {
        Ok(Strict(Value::String(v.to_owned())))
    }
    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Strict, E> {
        Ok(Strict(Value::String(v)))
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<Strict, E> {
        Ok(Strict(Value::Null))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Strict, A::Error> {
        let mut out = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Strict(Value::Array(out)))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Strict, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let Strict(v) = map.next_value()?;
            if out.insert(key, v).is_some() {
                return Err(A::Error::custom("duplicate key"));
            }
        }
        Ok(Strict(Value::Object(out)))
    }
}

/// `text` as JSON, if it is JSON without duplicate keys.
fn strict(text: &str) -> Option<Value> {
    serde_json::from_str::<Strict>(text).ok().map(|s| s.0)
}

// ------------------------------------------------------------------------- the oracle

/// What a frame is answered with, acks as JSON values.
#[derive(Debug, PartialEq)]
enum Answer {
    Parsed {
        ack: Option<Value>,
        command: Command,
    },
    Refused {
        ack: Option<Value>,
        code: &'static str,
    },
}

fn ack_value(ack: Option<Ack>) -> Option<Value> {
    ack.map(|a| {
        serde_json::from_str(a.get()).unwrap_or_else(|e| panic!("ack {} is not JSON: {e}", a.get()))
    })
}

fn answer(r: Result<Request, Rejected>) -> Answer {
    match r {
        Ok(r) => Answer::Parsed {
            ack: ack_value(r.ack),
            command: r.command,
        },
        Err(r) => Answer::Refused {
            ack: ack_value(r.ack),
            code: r.error.code(),
        },
    }
}

/// The same answer byte for byte: acks as sent, errors with their sentence.
fn exact(
    r: Result<Request, Rejected>,
) -> Result<(Option<String>, String), (Option<String>, String)> {
    match r {
        Ok(r) => Ok((
            r.ack.map(|a| a.get().to_owned()),
            format!("{:?}", r.command),
        )),
        Err(r) => Err((r.ack.map(|a| a.get().to_owned()), r.error.to_string())),
    }
}

const EVENTS: [&str; 6] = [
    "register_user_socket",
    "join_room",
    "leave_room",
    "send_message",
    "typing",
    "ping",
];

/// A required string field.
fn required(d: &Map<String, Value>, k: &str) -> Option<String> {
    d.get(k)?.as_str().map(str::to_owned)
}

/// An optional string field: absent or null is none, a string is some, anything else fails.
fn optional(d: &Map<String, Value>, k: &str) -> Option<Option<String>> {
    match d.get(k) {
        None | Some(Value::Null) => Some(None),
        Some(Value::String(s)) => Some(Some(s.clone())),
        Some(_) => None,
    }
}

/// What the contract says of a frame that is this JSON value, read with nothing but
/// `serde_json::Value`.
fn oracle(frame: &Value) -> Answer {
    let refused = |ack, code| Answer::Refused { ack, code };
    let Some(obj) = frame.as_object() else {
        return refused(None, "bad_request");
    };
    let ack = match obj.get("ack") {
        None | Some(Value::Null) => None,
        Some(v @ (Value::Number(_) | Value::String(_))) => Some(v.clone()),
        Some(_) => return refused(None, "bad_request"),
    };
    let Some(Value::String(event)) = obj.get("event") else {
        return refused(ack, "bad_request");
    };
    if !EVENTS.contains(&event.as_str()) {
        return refused(ack, "unknown_event");
    }
    let empty = Map::new();
    let data = match obj.get("data") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(d)) => d,
        Some(_) => return refused(ack, "bad_request"),
    };
    let command = (|| {
        Some(match event.as_str() {
            "register_user_socket" => Command::RegisterUserSocket(RegisterUserSocket {
                phone: optional(data, "phone")?,
            }),
            "join_room" => Command::JoinRoom(JoinRoom {
                room: required(data, "room")?,
                phone: optional(data, "phone")?,
                user: optional(data, "user")?,
                since: optional(data, "since")?,
            }),
            "leave_room" => Command::LeaveRoom(LeaveRoom {
                room: required(data, "room")?,
                phone: optional(data, "phone")?,
                user: optional(data, "user")?,
            }),
            "send_message" => Command::SendMessage(SendMessage {
                room: required(data, "room")?,
                message: required(data, "message")?,
                sender: optional(data, "sender")?,
                client_id: optional(data, "client_id")?,
            }),
            "typing" => Command::Typing(Typing {
                room: required(data, "room")?,
                typing: data.get("typing")?.as_bool()?,
                phone: optional(data, "phone")?,
                user: optional(data, "user")?,
            }),
            _ => Command::Ping,
        })
    })();
    match command {
        Some(command) => Answer::Parsed { ack, command },
        None => refused(ack, "bad_request"),
    }
}

/// Every check that holds for any text at all.
fn check_any_text(text: &str) -> Result<(), TestCaseError> {
    let r = parse(text);
    if let Err(rejected) = &r {
        let code = rejected.error.code();
        prop_assert!(
            code == "bad_request" || code == "unknown_event",
            "{text:?} answered {code}"
        );
    }
    // The one-pass parse never changes an answer.
    let one_pass = parse_send_message(text).map(|r| exact(Ok(r)));
    let two_steps = exact(parse_in_two_steps(text));
    if let Some(one_pass) = &one_pass {
        prop_assert_eq!(one_pass, &two_steps, "{:?}", text);
    }
    prop_assert_eq!(exact(r), two_steps.clone(), "{:?}", text);
    // A rate-limited frame is answered with the ack its parse would have kept.
    let kept = match &two_steps {
        Ok((ack, _)) | Err((ack, _)) => ack.clone(),
    };
    prop_assert_eq!(
        peek_ack(text).map(|a| a.get().to_owned()),
        kept,
        "{:?}",
        text
    );
    // On JSON, the answer is what a plain reading of the JSON says.
    if let Some(value) = strict(text) {
        prop_assert_eq!(answer(parse(text)), oracle(&value), "{:?}", text);
    }
    Ok(())
}

// ----------------------------------------------------------------------------- generators

/// Text with what JSON has to escape, what it may escape, and anything else.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z0-9_+ -]{0,12}",
        2 => "[\"\\\\/\u{0}-\u{1f}\u{7f}-\u{a0}\u{2028}\u{2029}\u{fffd}\u{fffe}\u{ffff}a-c😀🇩]{0,8}",
        1 => any::<String>(),
    ]
}

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1000i64..1000).prop_map(Value::from),
        // Finite, and read back as written: serde_json's default float parser is not
        // correctly rounded (that is its `float_roundtrip` feature), and the oracle reads the
        // frame with serde_json.
        any::<f64>().prop_filter_map("finite and read back as written", |f| {
            let n = Number::from_f64(f)?;
            let back: Number = serde_json::from_str(&n.to_string()).ok()?;
            (back == n).then_some(Value::Number(n))
        }),
    ]
}

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        text().prop_map(Value::String),
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "event", "data", "ack", "room", "message", "sender", "client_id", "phone", "user",
            "since", "typing", "",
        ])
        .prop_map(str::to_owned),
        1 => text(),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// An event name: mostly the table's, sometimes one close to them, sometimes anything.
fn event_name() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => prop::sample::select(EVENTS.to_vec()).prop_map(str::to_owned),
        1 => prop::sample::select(vec![
            "Ping", "ping ", "send_message\u{0}", "sendmessage", "", "ack", "error", "pong",
            "receive_message", "join-room",
        ])
        .prop_map(str::to_owned),
        1 => text(),
    ]
}

/// A field value, mostly of the type the field wants.
fn field_value(field: &'static str) -> BoxedStrategy<Value> {
    let good = if field == "typing" {
        any::<bool>().prop_map(Value::Bool).boxed()
    } else {
        text().prop_map(Value::String).boxed()
    };
    prop_oneof![8 => good, 1 => Just(Value::Null), 1 => json_value()].boxed()
}

const FIELDS: [&str; 9] = [
    "room",
    "message",
    "sender",
    "client_id",
    "phone",
    "user",
    "since",
    "typing",
    "ack",
];

/// Event data near the valid shapes: each field of the table present most of the time, with
/// a value mostly of its type, plus a few others.
fn near_valid_data() -> impl Strategy<Value = Value> {
    let fields: Vec<BoxedStrategy<Option<Value>>> = FIELDS
        .iter()
        .map(|f| prop::option::weighted(0.7, field_value(f)).boxed())
        .collect();
    (
        fields,
        prop::collection::btree_map(key(), json_value(), 0..2),
    )
        .prop_map(|(values, extra)| {
            let mut m: Map<String, Value> = extra.into_iter().collect();
            for (f, v) in FIELDS.iter().zip(values) {
                if let Some(v) = v {
                    m.insert((*f).to_owned(), v);
                }
            }
            Value::Object(m)
        })
}

fn ack() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => number(),
        4 => text().prop_map(Value::String),
        1 => Just(Value::Null),
        1 => json_value(),
    ]
}

/// A frame as JSON: mostly an object of the envelope's shape, near valid, sometimes anything.
fn frame_value() -> impl Strategy<Value = Value> {
    let envelope = (
        prop::option::weighted(
            0.9,
            prop_oneof![9 => event_name().prop_map(Value::String), 1 => json_value()],
        ),
        prop::option::weighted(0.85, prop_oneof![9 => near_valid_data(), 1 => json_value()]),
        prop::option::weighted(0.6, ack()),
        prop::collection::btree_map(key(), json_value(), 0..2),
    )
        .prop_map(|(event, data, ack, extra)| {
            let mut m: Map<String, Value> = extra.into_iter().collect();
            for (k, v) in [("event", event), ("data", data), ("ack", ack)] {
                match v {
                    Some(v) => {
                        m.insert(k.to_owned(), v);
                    }
                    None => {
                        m.remove(k);
                    }
                }
            }
            Value::Object(m)
        });
    prop_oneof![9 => envelope, 1 => json_value()]
}

/// A valid frame: an event of the table, its data of the right shape (optional fields left
/// out, null or given), extra fields, and an ack that is a number, a string, null or none.
fn valid_frame() -> impl Strategy<Value = Value> {
    let optional_text = || {
        prop_oneof![
            2 => Just(None),
            1 => Just(Some(Value::Null)),
            3 => text().prop_map(|s| Some(Value::String(s))),
        ]
    };
    (
        prop::sample::select(EVENTS.to_vec()),
        text(),
        text(),
        any::<bool>(),
        [
            optional_text(),
            optional_text(),
            optional_text(),
            optional_text(),
        ],
        prop::option::weighted(0.3, Just(Value::Null)),
        prop::option::of(prop_oneof![
            number(),
            text().prop_map(Value::String),
            Just(Value::Null)
        ]),
        prop::collection::btree_map("[a-z]{1,8}", json_value(), 0..3),
    )
        .prop_map(
            |(event, room, message, typing, optionals, null_data, ack, extra)| {
                let mut data: Map<String, Value> = extra
                    .iter()
                    .filter(|(k, _)| !FIELDS.contains(&k.as_str()))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                let [a, b, c, d] = optionals;
                let mut put = |k: &str, v: Option<Value>| {
                    if let Some(v) = v {
                        data.insert(k.to_owned(), v);
                    }
                };
                match event {
                    "register_user_socket" => put("phone", a),
                    "join_room" => {
                        put("room", Some(Value::String(room)));
                        put("phone", a);
                        put("user", b);
                        put("since", c);
                    }
                    "leave_room" => {
                        put("room", Some(Value::String(room)));
                        put("phone", a);
                        put("user", b);
                    }
                    "send_message" => {
                        put("room", Some(Value::String(room)));
                        put("message", Some(Value::String(message)));
                        put("sender", a);
                        put("client_id", b);
                    }
                    "typing" => {
                        put("room", Some(Value::String(room)));
                        put("typing", Some(Value::Bool(typing)));
                        put("phone", a);
                        put("user", b);
                    }
                    _ => put("x", d),
                }
                let mut frame: Map<String, Value> = extra
                    .into_iter()
                    .filter(|(k, _)| !matches!(k.as_str(), "event" | "data" | "ack"))
                    .collect();
                frame.insert("event".into(), Value::String(event.into()));
                // Events without required fields may leave `data` out or send null.
                let data_needed = !matches!(event, "register_user_socket" | "ping");
                match null_data {
                    Some(null) if !data_needed && data.is_empty() => {
                        frame.insert("data".into(), null);
                    }
                    _ if !data_needed && data.is_empty() => {}
                    _ => {
                        frame.insert("data".into(), Value::Object(data));
                    }
                }
                if let Some(ack) = ack {
                    frame.insert("ack".into(), ack);
                }
                Value::Object(frame)
            },
        )
}

// ------------------------------------------------------------- rendering JSON many ways

/// A tiny deterministic generator of rendering choices.
struct Choices(u64);

impl Choices {
    fn next(&mut self) -> u64 {
        // xorshift64*; a zero seed would stay zero.
        let mut x = self.0 | 1;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn one_in(&mut self, n: u64) -> bool {
        self.next().is_multiple_of(n)
    }
}

/// `v` as JSON text with choices a client may make: white space between tokens, keys in any
/// order, any character of a string (keys included) escaped as `\uXXXX` (surrogate pairs
/// beyond the BMP), short or long escapes for control characters. The text always reads back
/// as `v`.
fn render(v: &Value, seed: u64) -> String {
    let mut out = String::new();
    let mut c = Choices(seed);
    write_value(&mut out, v, &mut c);
    space(&mut out, &mut c);
    out
}

fn space(out: &mut String, c: &mut Choices) {
    if c.one_in(3) {
        out.push_str([" ", "\n", "\t ", "\r\n  "][(c.next() % 4) as usize]);
    }
}

fn write_value(out: &mut String, v: &Value, c: &mut Choices) {
    space(out, c);
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => write_str(out, s, c),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item, c);
                space(out, c);
            }
            if items.is_empty() {
                space(out, c);
            }
            out.push(']');
        }
        Value::Object(m) => {
            let mut entries: Vec<(&String, &Value)> = m.iter().collect();
            // A shuffle driven by the choices.
            for i in (1..entries.len()).rev() {
                let j = (c.next() % (i as u64 + 1)) as usize;
                entries.swap(i, j);
            }
            out.push('{');
            for (i, (k, v)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                space(out, c);
                write_str(out, k, c);
                space(out, c);
                out.push(':');
                write_value(out, v, c);
                space(out, c);
            }
            if entries.is_empty() {
                space(out, c);
            }
            out.push('}');
        }
    }
}

fn write_str(out: &mut String, s: &str, c: &mut Choices) {
    out.push('"');
    for ch in s.chars() {
        let must = ch == '"' || ch == '\\' || u32::from(ch) < 0x20;
        if !must && !c.one_in(6) {
            out.push(ch);
            continue;
        }
        let short = match ch {
            '"' => Some("\\\""),
            '\\' => Some("\\\\"),
            '\n' => Some("\\n"),
            '\r' => Some("\\r"),
            '\t' => Some("\\t"),
            '\u{8}' => Some("\\b"),
            '\u{c}' => Some("\\f"),
            '/' => Some("\\/"),
            _ => None,
        };
        match short {
            Some(esc) if c.one_in(2) => out.push_str(esc),
            _ => {
                let mut units = [0u16; 2];
                for unit in ch.encode_utf16(&mut units) {
                    if c.one_in(2) {
                        out.push_str(&format!("\\u{unit:04x}"));
                    } else {
                        out.push_str(&format!("\\u{unit:04X}"));
                    }
                }
            }
        }
    }
    out.push('"');
}

/// Near-valid text: a rendered frame cut, with a character added or removed, or with a key
/// repeated.
fn mutated_frame() -> impl Strategy<Value = String> {
    (
        frame_value(),
        any::<u64>(),
        0usize..4,
        any::<prop::sample::Index>(),
        prop::sample::select(vec![
            '{', '}', '[', ']', '"', ':', ',', '\\', '0', '-', 'e', 'n', ' ', '\u{0}', 'é',
        ]),
    )
        .prop_map(|(v, seed, how, at, ch)| {
            let text = render(&v, seed);
            let cut = |t: &str| -> usize {
                let mut i = at.index(t.len() + 1);
                while !t.is_char_boundary(i) {
                    i -= 1;
                }
                i
            };
            match how {
                0 => text[..cut(&text)].to_owned(),
                1 => {
                    let i = cut(&text);
                    format!("{}{ch}{}", &text[..i], &text[i..])
                }
                2 => {
                    let i = cut(&text);
                    let mut t = text.clone();
                    if i < t.len() {
                        t.remove(i);
                    }
                    t
                }
                _ => match text.trim_end().strip_suffix('}') {
                    // A key said twice: `event`, `data` or `ack`.
                    Some(head) if head.trim_end().ends_with('{') => text.clone(),
                    Some(head) => {
                        let k = ["event", "data", "ack"][at.index(3)];
                        format!("{head},\"{k}\":\"send_message\"}}")
                    }
                    None => text.clone(),
                },
            }
        })
}

fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => any::<String>(),
        2 => "[{}\\[\\]\":,0-9a-z_\\\\ .eE+-]{0,48}",
        1 => prop::collection::vec(any::<u8>(), 0..96)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        1 => "\\{\"event\":\"[a-z_]{0,14}\",\"data\":[{}\\[\\]\":,0-9a-z_ ]{0,30}\\}",
    ]
}

// ------------------------------------------------------------------- client frames

/// Found by `near_valid_frames_answer_as_serde_reads_them`: serde reads a struct from an array
/// too, so `["ping", {}, 7]` was a ping with ack 7 (and `["send_message", {…}]` took the
/// one-pass path). A frame is an object; anything else is `bad_request` without an ack.
#[test]
fn array_frames_are_not_envelopes() {
    for text in [
        r#"["ping"]"#,
        r#"["ping",{},7]"#,
        r#"[null,null,0]"#,
        r#"["send_message",{"room":"r","message":"hi"},1]"#,
        r#"["send_message",["r","hi"]]"#,
    ] {
        let r = parse(text).expect_err(text);
        assert_eq!(
            (r.error.code(), r.ack.is_none()),
            ("bad_request", true),
            "{text}"
        );
        assert!(parse_send_message(text).is_none(), "{text}");
        assert!(peek_ack(text).is_none(), "{text}");
    }
}

proptest! {
    #![proptest_config(ci_config(3000))]

    /// Any text whatsoever: an answer, never a panic, the same from both parsers.
    #[test]
    fn any_text_is_answered(text in any_text()) {
        check_any_text(&text)?;
    }
}

proptest! {
    #![proptest_config(ci_config(3000))]

    /// JSON frames near the valid shapes, written in any way JSON allows: the parse says what
    /// `serde_json::Value` says.
    #[test]
    fn near_valid_frames_answer_as_serde_reads_them(frame in frame_value(), seed in any::<u64>()) {
        let text = render(&frame, seed);
        prop_assert_eq!(strict(&text), Some(frame.clone()), "the renderer wrote {:?}", text);
        check_any_text(&text)?;
    }

    /// Near-valid frames cut or bent out of shape: still an answer, the same from both parsers.
    #[test]
    fn bent_frames_are_answered(text in mutated_frame()) {
        check_any_text(&text)?;
    }
}

proptest! {
    #![proptest_config(ci_config(2000))]

    /// Every valid frame parses, as serde reads it; a `send_message` frame as serde_json
    /// writes it takes the one-pass path.
    #[test]
    fn valid_frames_parse_as_serde_reads_them(frame in valid_frame(), seed in any::<u64>()) {
        for text in [render(&frame, seed), frame.to_string()] {
            let expected = oracle(&frame);
            prop_assert!(matches!(expected, Answer::Parsed { .. }), "{:?}", expected);
            prop_assert_eq!(answer(parse(&text)), expected, "{:?}", text);
            check_any_text(&text)?;
        }
        if frame["event"] == "send_message" {
            let compact = frame.to_string();
            prop_assert!(
                parse_send_message(&compact).is_some(),
                "one-pass parse refused {:?}",
                compact
            );
        }
    }
}

// ------------------------------------------------------------------- server frames

fn phone() -> impl Strategy<Value = Phone> {
    "\\+?[0-9]{7,15}".prop_map(|s| Phone::parse(&s).expect("a valid phone"))
}

fn room_id() -> impl Strategy<Value = RoomId> {
    any::<u128>().prop_map(|n| {
        let h = format!("{n:032x}");
        let s = format!(
            "{}-{}-{}-{}-{}",
            &h[..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..]
        );
        RoomId::parse(&s).expect("a UUID")
    })
}

fn names() -> impl Strategy<Value = Names> {
    prop::collection::btree_map(phone(), text(), 0..3)
}

/// The first millisecond of the year 10000, where years get a fifth digit.
const YEAR_10000: u64 = 253_402_300_800_000;

fn millis() -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => 1_700_000_000_000u64..1_900_000_000_000,
        1 => 0..YEAR_10000 + 10_000,
        1 => any::<u64>(),
    ]
}

fn message() -> impl Strategy<Value = Message> {
    (
        any::<u64>(),
        any::<u64>(),
        room_id(),
        phone(),
        text(),
        millis(),
        prop::option::of(text()),
    )
        .prop_map(
            |(ms, seq, room, sender, message, timestamp, client_id)| Message {
                id: MessageId { ms, seq },
                room,
                sender,
                message,
                timestamp,
                client_id,
            },
        )
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        (phone(), phone(), millis(), names()).prop_map(|(from, to, created_at, names)| {
            Event::ChatRequest {
                from,
                to,
                created_at,
                names,
            }
        }),
        (room_id(), phone(), phone(), names()).prop_map(|(chat_id, from_user, to_user, names)| {
            Event::RequestAccepted {
                chat_id,
                from_user,
                to_user,
                names,
            }
        }),
        (phone(), phone(), names()).prop_map(|(from_user, to_user, names)| {
            Event::RequestDeclined {
                from_user,
                to_user,
                names,
            }
        }),
        (phone(), phone(), names()).prop_map(|(from_user, to_user, names)| {
            Event::RequestCancelled {
                from_user,
                to_user,
                names,
            }
        }),
        (phone(), any::<bool>(), names()).prop_map(|(phone, online, names)| Event::Presence {
            phone,
            online,
            names
        }),
        (room_id(), phone()).prop_map(|(room, by)| Event::RoomClosed { room, by }),
        room_id().prop_map(|room| Event::RoomExpired { room }),
        message().prop_map(Event::ReceiveMessage),
        (room_id(), phone(), names()).prop_map(|(room, user, names)| Event::UserJoined {
            room,
            user,
            names
        }),
        (room_id(), phone()).prop_map(|(room, user)| Event::UserLeft { room, user }),
        (room_id(), phone(), any::<bool>()).prop_map(|(room, user, typing)| Event::Typing {
            room,
            user,
            typing
        }),
        (room_id(), phone(), any::<u64>(), any::<u64>()).prop_map(|(room, user, ms, seq)| {
            Event::Read {
                room,
                user,
                id: MessageId { ms, seq },
            }
        }),
    ]
}

/// An ack as a client may write it: a number or a string, in any notation JSON allows.
fn raw_ack() -> impl Strategy<Value = Ack> {
    prop_oneof![
        number().prop_map(|n| n.to_string()),
        "-?(0|[1-9][0-9]{0,30})(\\.[0-9]{1,5})?([eE][+-]?[0-9]{1,2})?",
        (text(), any::<u64>()).prop_map(|(s, seed)| render(&Value::String(s), seed)),
    ]
    .prop_map(|raw| RawValue::from_string(raw).expect("a JSON ack"))
}

// Decoding, with nothing but serde_json and chat-core's own parsers: each function checks the
// exact set of fields.

fn fields<'a>(v: &'a Value, keys: &[&str]) -> &'a Map<String, Value> {
    let m = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"));
    let mut have: Vec<&str> = m.keys().map(String::as_str).collect();
    let mut want = keys.to_vec();
    have.sort_unstable();
    want.sort_unstable();
    assert_eq!(have, want, "fields of {v}");
    m
}

fn string(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("not a string: {v}"))
        .to_owned()
}

fn decode_phone(v: &Value) -> Phone {
    let s = string(v);
    let p = Phone::parse(&s).unwrap_or_else(|e| panic!("{s:?}: {e}"));
    assert_eq!(p.as_str(), s, "a phone on the wire is normalised");
    p
}

fn decode_room(v: &Value) -> RoomId {
    let s = string(v);
    let r = RoomId::parse(&s).unwrap_or_else(|| panic!("{s:?} is not a room id"));
    assert_eq!(
        r.to_string(),
        s,
        "a room on the wire is a lower-case hyphenated UUID"
    );
    r
}

fn decode_names(v: &Value) -> Names {
    let m = v.as_object().unwrap_or_else(|| panic!("names: {v}"));
    m.iter()
        .map(|(k, n)| (decode_phone(&Value::String(k.clone())), string(n)))
        .collect::<BTreeMap<_, _>>()
}

fn decode_u64(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a u64: {v}"))
}

/// `YYYY…-MM-DDTHH:MM:SS.mmmZ` (the year may have more digits) to unix ms.
fn decode_rfc3339(s: &str) -> u64 {
    fn bad(s: &str) -> ! {
        panic!("not RFC 3339 UTC with ms: {s:?}")
    }
    let num = |t: &str, width: Option<usize>| -> i128 {
        let len_ok = width.map_or(t.len() >= 4, |w| t.len() == w);
        if !len_ok || !t.bytes().all(|b| b.is_ascii_digit()) {
            bad(s);
        }
        t.parse().unwrap_or_else(|_| bad(s))
    };
    let Some((date, time)) = s.strip_suffix('Z').and_then(|b| b.split_once('T')) else {
        bad(s)
    };
    let mut d = date.rsplitn(3, '-');
    let (Some(day), Some(month), Some(year)) = (d.next(), d.next(), d.next()) else {
        bad(s)
    };
    let Some((hms, millis)) = time.split_once('.').filter(|_| time.len() == 12) else {
        bad(s)
    };
    let mut hms = hms.split(':');
    let (Some(h), Some(mi), Some(sec)) = (hms.next(), hms.next(), hms.next()) else {
        bad(s)
    };
    let (y, m, dd) = (num(year, None), num(month, Some(2)), num(day, Some(2)));
    assert!((1..=12).contains(&m) && (1..=31).contains(&dd), "{s}");
    // Days from civil (H. Hinnant), independent of the encoder's inverse.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + dd - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + num(h, Some(2)) * 3600 + num(mi, Some(2)) * 60 + num(sec, Some(2));
    u64::try_from(secs * 1000 + num(millis, Some(3))).unwrap_or_else(|_| bad(s))
}

fn decode_message(v: &Value) -> Message {
    let m = fields(
        v,
        &["id", "room", "sender", "message", "timestamp", "client_id"],
    );
    let timestamp = string(&m["timestamp"]);
    let ms = decode_rfc3339(&timestamp);
    assert_eq!(rfc3339(ms), timestamp, "one spelling per instant");
    Message {
        id: MessageId::parse(&string(&m["id"])).unwrap_or_else(|e| panic!("id: {e}")),
        room: decode_room(&m["room"]),
        sender: decode_phone(&m["sender"]),
        message: string(&m["message"]),
        timestamp: ms,
        client_id: match &m["client_id"] {
            Value::Null => None,
            c => Some(string(c)),
        },
    }
}

/// A server frame: its event name, its ack (if it has one) and its data.
fn decode_frame(text: &str) -> (String, Option<Value>, Value) {
    let v = strict(text).unwrap_or_else(|| panic!("a frame that is not JSON: {text}"));
    let with_ack = v.get("ack").is_some();
    let m = if with_ack {
        fields(&v, &["event", "ack", "data"])
    } else {
        fields(&v, &["event", "data"])
    };
    (
        string(&m["event"]),
        m.get("ack").cloned(),
        m["data"].clone(),
    )
}

fn decode_event(text: &str) -> Event {
    let (name, ack, d) = decode_frame(text);
    assert_eq!(ack, None, "an event frame has no ack: {text}");
    match name.as_str() {
        "chat_request" => {
            let m = fields(&d, &["from", "to", "created_at", "names"]);
            Event::ChatRequest {
                from: decode_phone(&m["from"]),
                to: decode_phone(&m["to"]),
                created_at: decode_u64(&m["created_at"]),
                names: decode_names(&m["names"]),
            }
        }
        "request_accepted" => {
            let m = fields(&d, &["chat_id", "from_user", "to_user", "names"]);
            Event::RequestAccepted {
                chat_id: decode_room(&m["chat_id"]),
                from_user: decode_phone(&m["from_user"]),
                to_user: decode_phone(&m["to_user"]),
                names: decode_names(&m["names"]),
            }
        }
        "request_declined" | "request_cancelled" => {
            let m = fields(&d, &["from_user", "to_user", "names"]);
            let (from_user, to_user, names) = (
                decode_phone(&m["from_user"]),
                decode_phone(&m["to_user"]),
                decode_names(&m["names"]),
            );
            if name == "request_declined" {
                Event::RequestDeclined {
                    from_user,
                    to_user,
                    names,
                }
            } else {
                Event::RequestCancelled {
                    from_user,
                    to_user,
                    names,
                }
            }
        }
        "presence" => {
            let m = fields(&d, &["phone", "online", "names"]);
            Event::Presence {
                phone: decode_phone(&m["phone"]),
                online: m["online"]
                    .as_bool()
                    .unwrap_or_else(|| panic!("online: {d}")),
                names: decode_names(&m["names"]),
            }
        }
        "room_closed" => {
            let m = fields(&d, &["room", "by"]);
            Event::RoomClosed {
                room: decode_room(&m["room"]),
                by: decode_phone(&m["by"]),
            }
        }
        "room_expired" => Event::RoomExpired {
            room: decode_room(&fields(&d, &["room"])["room"]),
        },
        "receive_message" => Event::ReceiveMessage(decode_message(&d)),
        "user_joined" => {
            let m = fields(&d, &["room", "user", "names"]);
            Event::UserJoined {
                room: decode_room(&m["room"]),
                user: decode_phone(&m["user"]),
                names: decode_names(&m["names"]),
            }
        }
        "user_left" => {
            let m = fields(&d, &["room", "user"]);
            Event::UserLeft {
                room: decode_room(&m["room"]),
                user: decode_phone(&m["user"]),
            }
        }
        "typing" => {
            let m = fields(&d, &["room", "user", "typing"]);
            Event::Typing {
                room: decode_room(&m["room"]),
                user: decode_phone(&m["user"]),
                typing: m["typing"]
                    .as_bool()
                    .unwrap_or_else(|| panic!("typing: {d}")),
            }
        }
        "read" => {
            let m = fields(&d, &["room", "user", "id"]);
            Event::Read {
                room: decode_room(&m["room"]),
                user: decode_phone(&m["user"]),
                id: MessageId::parse(&string(&m["id"])).unwrap_or_else(|e| panic!("id: {e}")),
            }
        }
        other => panic!("not an event of the contract: {other}"),
    }
}

/// The ack a frame must echo: the same JSON, written byte for byte as the client wrote it.
fn check_ack(text: &str, got: Option<Value>, sent: Option<&RawValue>) {
    match sent {
        None => assert_eq!(got, None, "{text}"),
        Some(raw) => {
            let want: Value = serde_json::from_str(raw.get()).expect("ack JSON");
            assert_eq!(got, Some(want), "{text}");
            assert!(
                text.contains(&format!("\"ack\":{}", raw.get())),
                "ack not echoed byte for byte: {text}"
            );
        }
    }
}

fn error() -> impl Strategy<Value = SocketError> {
    let domain = prop_oneof![
        text().prop_map(Error::BadRequest),
        text().prop_map(Error::Forbidden),
        any::<usize>().prop_map(|max| Error::MessageTooLong { max }),
        any::<u64>().prop_map(|retry_after_secs| Error::RateLimited { retry_after_secs }),
        any::<usize>().prop_map(|max| Error::TooManyBlocked { max }),
        any::<usize>().prop_map(|max| Error::TooManyPending { max }),
        room_id().prop_map(|chat_id| Error::RoomExists { chat_id }),
        prop::sample::select(vec![
            Error::InvalidPhone,
            Error::SelfRequest,
            Error::EmptyMessage,
            Error::Unauthorized,
            Error::UserNotFound,
            Error::RequestNotFound,
            Error::RoomNotFound,
            Error::PhoneInUse,
            Error::AlreadyPending,
            Error::unavailable("down"),
        ]),
    ];
    prop_oneof![
        domain.prop_map(SocketError::Domain),
        Just(SocketError::UnknownEvent),
    ]
}

proptest! {
    #![proptest_config(ci_config(3000))]

    /// Every event the hub delivers decodes to the event it was made from; the `send_message`
    /// ack copied from a delivery is the one encoded afresh.
    #[test]
    fn server_events_round_trip(event in event(), ack in raw_ack()) {
        let text = event_frame(&event);
        prop_assert_eq!(decode_event(&text), event.clone(), "{}", &*text);
        if let Event::ReceiveMessage(m) = &event {
            let copied = message_ack(&ack, m);
            prop_assert_eq!(&copied, &message_frame("ack", Some(&ack), m));
            let (name, got, data) = decode_frame(&copied);
            prop_assert_eq!(name, "ack");
            check_ack(&copied, got, Some(&ack));
            prop_assert_eq!(&decode_message(&data), m);
            let rest = message_json(m).expect("JSON");
            let rest: Value = serde_json::from_str(rest.get()).expect("JSON");
            prop_assert_eq!(&decode_message(&rest), m);
        }
    }

    /// Every reply frame decodes to what it was made from, and echoes the client's ack.
    #[test]
    fn reply_frames_round_trip(
        ack in prop::option::of(raw_ack()),
        room in room_id(),
        me in phone(),
        messages in prop::collection::vec(message(), 0..4),
        more in any::<bool>(),
        error in error(),
        marks in prop::collection::btree_map(phone(), prop::option::of((any::<u64>(), any::<u64>())), 0..3),
    ) {
        let ack = ack.as_deref();
        let text = connection_status(me.as_str());
        let (name, got, data) = decode_frame(&text);
        prop_assert_eq!(name, "connection_status");
        check_ack(&text, got, None);
        prop_assert_eq!(data, json!({"status": "connected", "phone": me.as_str()}));

        for (text, want, event) in [
            (user_registered(ack), json!({"status": "registered"}), "user_registered"),
            (pong(ack), json!({}), "pong"),
        ] {
            let (name, got, data) = decode_frame(&text);
            prop_assert_eq!(name, event);
            check_ack(&text, got, ack);
            prop_assert_eq!(data, want);
        }
        if let Some(ack) = ack {
            let text = ack_empty(ack);
            let (name, got, data) = decode_frame(&text);
            prop_assert_eq!(name, "ack");
            check_ack(&text, got, Some(ack));
            prop_assert_eq!(data, json!({}));
        }

        let text = error_frame(ack, &error);
        let (name, got, data) = decode_frame(&text);
        prop_assert_eq!(name, "error");
        check_ack(&text, got, ack);
        prop_assert_eq!(data, json!({"code": error.code(), "message": error.to_string()}));

        for m in &messages {
            for event in ["receive_message", "ack"] {
                let text = message_frame(event, ack, m);
                let (name, got, data) = decode_frame(&text);
                prop_assert_eq!(name, event);
                check_ack(&text, got, ack);
                prop_assert_eq!(&decode_message(&data), m);
            }
        }

        let page = HistoryPage { messages, more };
        let read: ReadMarks = marks
            .into_iter()
            .map(|(p, m)| (p, m.map(|(ms, seq)| MessageId { ms, seq })))
            .collect();
        let text = room_history(ack, &room, &page, &read);
        let (name, got, data) = decode_frame(&text);
        prop_assert_eq!(name, "room_history");
        check_ack(&text, got, ack);
        let d = fields(&data, &["room", "messages", "more", "read"]);
        let decoded_read: ReadMarks = d["read"]
            .as_object()
            .expect("read")
            .iter()
            .map(|(p, m)| {
                let id = m.as_str().map(|s| MessageId::parse(s).expect("an id"));
                assert!(id.is_some() || m.is_null(), "{m}");
                (Phone::parse(p).expect("a phone"), id)
            })
            .collect();
        prop_assert_eq!(decoded_read, read);
        prop_assert_eq!(decode_room(&d["room"]), room);
        prop_assert_eq!(d["more"].as_bool(), Some(more));
        let decoded: Vec<Message> = d["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .map(decode_message)
            .collect();
        prop_assert_eq!(decoded, page.messages);
    }
}
