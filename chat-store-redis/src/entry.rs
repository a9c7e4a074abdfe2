//! The compact text of a message, as history stores it and as its `receive_message` delivery
//! crosses pub/sub. No JSON on this path: the sending node writes it with a few `push_str`s,
//! the append function stores it as is and publishes it behind the id, and every node reads it
//! back by splitting, without escaping or a parser.
//!
//! ```text
//! entry   = sender "|" timestamp "|" cid-len "|" [client_id "|"] text
//! payload = id "|" entry          (published on the room's channel, which names the room)
//! ```
//!
//! `cid-len` is empty when the message has no client id, else the client id's length in bytes
//! (a client id may contain `|`, so it is measured, not delimited). The text is the rest, as
//! sent. A phone, a timestamp (decimal ms) and a stream id never contain `|`.
//!
//! Other deliveries (presence, typing, ...) cross the bus as JSON, which starts with `{`; a
//! message payload starts with the id's digits.

use std::fmt::Write as _;

use chat_core::{Message, MessageId, Millis, Phone, RoomId};

/// Writes the entry of a message from `sender` at `timestamp`.
pub(crate) fn encode(
    sender: &Phone,
    timestamp: Millis,
    client_id: Option<&str>,
    text: &str,
) -> String {
    let cid_len = client_id.map_or(0, |c| c.len() + 4);
    let mut out = String::with_capacity(sender.as_str().len() + 24 + cid_len + text.len());
    out.push_str(sender.as_str());
    // Writing to a String cannot fail.
    let _ = write!(out, "|{timestamp}|");
    if let Some(c) = client_id {
        let _ = write!(out, "{}|", c.len());
        out.push_str(c);
    }
    out.push('|');
    out.push_str(text);
    out
}

/// Reads an entry back into the message `id` of `room`; `None` when it is not one.
pub(crate) fn decode(room: RoomId, id: MessageId, entry: &[u8]) -> Option<Message> {
    let (sender, rest) = split(entry)?;
    let (timestamp, rest) = split(rest)?;
    let (cid_len, rest) = split(rest)?;
    let (client_id, text) = if cid_len.is_empty() {
        (None, rest)
    } else {
        let n: usize = std::str::from_utf8(cid_len).ok()?.parse().ok()?;
        let cid = rest.get(..n)?;
        let text = rest.get(n..)?.strip_prefix(b"|")?;
        (Some(utf8(cid)?), text)
    };
    Some(Message {
        id,
        room,
        sender: Phone::parse(std::str::from_utf8(sender).ok()?).ok()?,
        message: utf8(text)?,
        timestamp: std::str::from_utf8(timestamp).ok()?.parse().ok()?,
        client_id,
    })
}

/// Reads a published payload (`id "|" entry`) of `room`.
pub(crate) fn decode_payload(room: RoomId, payload: &[u8]) -> Option<Message> {
    let (id, entry) = split(payload)?;
    let id = MessageId::parse(std::str::from_utf8(id).ok()?).ok()?;
    decode(room, id, entry)
}

/// Splits at the first `|`.
fn split(s: &[u8]) -> Option<(&[u8], &[u8])> {
    let at = s.iter().position(|&b| b == b'|')?;
    Some((&s[..at], &s[at + 1..]))
}

fn utf8(b: &[u8]) -> Option<String> {
    String::from_utf8(b.to_vec()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room() -> RoomId {
        RoomId::parse("0b6c2d9e-8a51-4a3e-9d8f-2f7c1e4a5b6c").expect("room id")
    }

    fn round_trip(cid: Option<&str>, text: &str) {
        let sender = Phone::parse("+15550000001").expect("phone");
        let id = MessageId { ms: 17, seq: 3 };
        let entry = encode(&sender, 1_732_560_000_123, cid, text);
        let m = decode(room(), id, entry.as_bytes()).expect("decodes");
        assert_eq!(
            m,
            Message {
                id,
                room: room(),
                sender: sender.clone(),
                message: text.to_owned(),
                timestamp: 1_732_560_000_123,
                client_id: cid.map(str::to_owned),
            }
        );
        let payload = format!("{id}|{entry}");
        assert_eq!(decode_payload(room(), payload.as_bytes()), Some(m));
    }

    #[test]
    fn messages_survive_the_round_trip_whatever_they_contain() {
        round_trip(None, "hello");
        round_trip(None, "");
        round_trip(None, "|a|b||");
        round_trip(Some("c1"), "hello");
        round_trip(Some("|x|"), "|y|");
        round_trip(Some(""), "text");
        round_trip(Some("ünï|cödé"), "ünïcödé \u{0}\n\"{}\"");
        round_trip(Some("12|"), "3|");
    }

    #[test]
    fn what_is_not_an_entry_is_refused() {
        let r = room();
        let id = MessageId { ms: 1, seq: 0 };
        for bad in [
            &b""[..],
            b"+15550000001",
            b"+15550000001|17",
            b"not a phone|17||x",
            b"+15550000001|soon||x",
            b"+15550000001|17|9|abc|x",
            b"+15550000001|17|2|abcx",
            b"+15550000001|17|x|ab|x",
            b"+15550000001|17||\xff",
        ] {
            assert_eq!(
                decode(r, id, bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(decode_payload(r, b"{\"audience\":1}"), None);
        assert_eq!(decode_payload(r, b"1-0"), None);
        assert_eq!(decode_payload(r, b"x-0|+15550000001|17||hi"), None);
    }
}
