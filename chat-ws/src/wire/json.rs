//! The frames that carry messages, written by hand: `receive_message`, the `send_message` ack,
//! `room_history`, and the `<message>` JSON the REST history route shares.
//!
//! Why by hand and not through serde: this is the hot path. A message's frame is written once
//! per delivery and copied for the sender's ack, and serde's generic path (the id and the
//! timestamp built by `format!` first) was the largest share of the server's own time per
//! message. The figures this serves (server CPU per delivered message, delivered messages per
//! second) are in chat-bench/README.md, "Against the budget" and "Where the time goes". The
//! output is byte for byte what serde_json writes for the same fields; the tests below and the
//! property tests hold it to that.

use std::cell::Cell;

use chat_core::{HistoryPage, Message, MessageId, ReadMarks, RoomId};
use serde_json::value::RawValue;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// A frame whose data is one message: `receive_message`, or the `send_message` ack.
pub(super) fn message_frame(event: &str, ack: Option<&RawValue>, m: &Message) -> Utf8Bytes {
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
pub(super) fn received_frame(m: &Message) -> Utf8Bytes {
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

/// The `room_history` reply to `join_room`, with both members' read marks
/// (`"read": {"<phone>": "<id>"|null}`).
pub(crate) fn room_history(
    ack: Option<&RawValue>,
    room: &RoomId,
    page: &HistoryPage,
    read: &ReadMarks,
) -> Utf8Bytes {
    let ack_len = ack.map_or(0, |a| a.get().len());
    let body: usize = page.messages.iter().map(|m| message_capacity(m) + 1).sum();
    let mut out = String::with_capacity(112 + ack_len + body + 96 * read.len());
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
    out.push_str(",\"read\":{");
    for (i, (phone, mark)) in read.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_str(&mut out, phone.as_str());
        out.push(':');
        match mark {
            Some(id) => {
                out.push('"');
                push_u64(&mut out, id.ms);
                out.push('-');
                push_u64(&mut out, id.seq);
                out.push('"');
            }
            None => out.push_str("null"),
        }
    }
    out.push_str("}}}");
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
    chat_core::time::push_rfc3339(out, m.timestamp);
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

#[cfg(test)]
mod tests {
    /// The first millisecond of the year 10000, where years get a fifth digit.
    const YEAR_10000: u64 = 253_402_300_800_000;

    use super::*;
    use crate::wire::encode::{Frame, event_frame};
    use crate::wire::parse::Ack;
    use chat_core::time::rfc3339;
    use chat_core::{Event, Phone};
    use serde::Serialize;

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
        read: &'a ReadMarks,
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
        let phones = [
            Phone::parse("+14155550100").unwrap(),
            Phone::parse("14155550101").unwrap(),
        ];
        let reads: [ReadMarks; 3] = [
            ReadMarks::new(),
            phones.iter().map(|p| (p.clone(), None)).collect(),
            phones
                .iter()
                .cloned()
                .zip([Some(messages[0].id), None])
                .collect(),
        ];
        for (n, read) in [0, 1, messages.len()].into_iter().zip(reads) {
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
                            read: &read,
                        },
                    })
                    .unwrap();
                    assert_eq!(&*room_history(ack, &room, &page, &read), serde.as_str());
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
}
