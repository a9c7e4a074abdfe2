//! Domain values whose invariants live in the type: a `Phone` is always normalised, a `Token`
//! always carries 256 bits from the OS, a `MessageId` always orders like the history it names.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Unix time in milliseconds.
pub type Millis = u64;

/// Display names by phone, for the users who have one (a user without a name is absent). On
/// the wire an object `{"<phone>": "<name>"}`, shown as text, never as markup.
pub type Names = std::collections::BTreeMap<Phone, String>;

/// The read marks of a room's two members: each member's phone with the id of the last message
/// they have read, or `None` before their first `mark_read`. On the wire
/// `{"<phone>": "<id>"|null}`.
pub type ReadMarks = std::collections::BTreeMap<Phone, Option<MessageId>>;

/// A normalised phone number: an optional `+` then 7 to 15 ASCII digits.
///
/// The normalised form is the identity everywhere: `+14155550100` and `14155550100` are two
/// different phones.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Phone(String);

impl Phone {
    /// Normalises `raw` (removes spaces, `-`, `(` and `)`) and validates it.
    ///
    /// ```
    /// use chat_core::Phone;
    /// assert_eq!(Phone::parse("+1 (415) 555-0100").unwrap().as_str(), "+14155550100");
    /// assert!(Phone::parse("12ab345678").is_err());
    /// ```
    pub fn parse(raw: &str) -> Result<Phone> {
        let cleaned: String = raw
            .chars()
            .filter(|c| !matches!(c, ' ' | '-' | '(' | ')'))
            .collect();
        let digits = cleaned.strip_prefix('+').unwrap_or(&cleaned);
        if (7..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) {
            Ok(Phone(cleaned))
        } else {
            Err(Error::InvalidPhone)
        }
    }

    /// The normalised text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The phone as it is written inside a listing cursor: its `+` as `p`, so the cursor is
    /// made of letters, digits and `.` only and reads the same whether or not a client escapes
    /// it in a query string (where a bare `+` is a space).
    ///
    /// ```
    /// use chat_core::Phone;
    /// let p = Phone::parse("+14155550100").unwrap();
    /// assert_eq!(p.cursor_form(), "p14155550100");
    /// assert_eq!(Phone::from_cursor_form("p14155550100"), Some(p));
    /// assert_eq!(Phone::from_cursor_form("+14155550100"), None);
    /// ```
    pub fn cursor_form(&self) -> String {
        match self.0.strip_prefix('+') {
            Some(digits) => format!("p{digits}"),
            None => self.0.clone(),
        }
    }

    /// Reads [`Phone::cursor_form`] back; `None` for anything it does not write.
    pub fn from_cursor_form(raw: &str) -> Option<Phone> {
        let text = match raw.strip_prefix('p') {
            Some(digits) => format!("+{digits}"),
            None => raw.to_owned(),
        };
        Phone::parse(&text)
            .ok()
            .filter(|p| p.as_str() == text && p.cursor_form() == raw)
    }
}

impl fmt::Display for Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Phone {
    type Error = Error;
    fn try_from(s: String) -> Result<Phone> {
        Phone::parse(&s)
    }
}

impl From<Phone> for String {
    fn from(p: Phone) -> String {
        p.0
    }
}

impl FromStr for Phone {
    type Err = Error;
    fn from_str(s: &str) -> Result<Phone> {
        Phone::parse(s)
    }
}

/// An opaque session token: 32 bytes (256 bits) from the OS random source, as 64 hex digits.
///
/// `Debug` never prints the secret.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Token(String);

impl Token {
    /// Draws a fresh token from the operating system's random source.
    pub fn generate() -> Result<Token> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)
            .map_err(|e| Error::unavailable(format!("the random source failed: {e}")))?;
        let mut s = String::with_capacity(64);
        for b in bytes {
            s.push(char::from(HEX[usize::from(b >> 4)]));
            s.push(char::from(HEX[usize::from(b & 15)]));
        }
        Ok(Token(s))
    }

    /// Wraps a token received from a client. Anything that cannot be one of ours (wrong length or
    /// alphabet) is refused here, so stores never see arbitrary client strings as keys.
    pub fn from_client(s: &str) -> Option<Token> {
        (s.len() == 64 && s.bytes().all(|b| HEX.contains(&b))).then(|| Token(s.to_owned()))
    }

    /// The token text, for the `Authorization` header and storage.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

impl Token {
    /// The token's SHA-256 digest: what stores keep instead of the token.
    pub fn digest(&self) -> TokenDigest {
        use sha2::{Digest, Sha256};
        TokenDigest(Sha256::digest(self.0.as_bytes()).into())
    }
}

/// The SHA-256 digest of a [`Token`] (or of a WebSocket ticket): what stores keep and find
/// sessions by. A store, a replica of it, a backup or a `MONITOR` of Redis holds no secret a
/// client could present; the token itself exists only in the registration answer and in the
/// client's hands. Written as 64 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TokenDigest([u8; 32]);

impl TokenDigest {
    /// The 64 lowercase hex digits.
    pub fn hex(&self) -> String {
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push(char::from(HEX[usize::from(b >> 4)]));
            s.push(char::from(HEX[usize::from(b & 15)]));
        }
        s
    }

    /// Reads [`TokenDigest::hex`] back.
    pub fn from_hex(s: &str) -> Option<TokenDigest> {
        let nibble = |c: u8| {
            HEX.iter()
                .position(|h| *h == c)
                .and_then(|n| u8::try_from(n).ok())
        };
        let bytes = s.as_bytes();
        if bytes.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            out[i] = nibble(pair[0])? << 4 | nibble(pair[1])?;
        }
        Some(TokenDigest(out))
    }
}

impl fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not a secret, but nothing a log needs either: enough to tell two apart.
        write!(f, "TokenDigest({}..)", &self.hex()[..8])
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(..)")
    }
}

/// A room's id: a UUID v4. Named `chat_id` in REST bodies, `room` in socket events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RoomId(pub uuid::Uuid);

impl RoomId {
    /// A fresh random room id.
    pub fn generate() -> RoomId {
        RoomId(uuid::Uuid::new_v4())
    }

    /// Parses a room id; `None` for anything that is not a UUID. (The service answers a
    /// client's malformed id as a room that does not exist: `room_not_found`.)
    pub fn parse(s: &str) -> Option<RoomId> {
        uuid::Uuid::parse_str(s).ok().map(RoomId)
    }
}

impl fmt::Display for RoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// A message id: `<ms>-<seq>`, the shape of a Redis stream id. Ids order a room's history;
/// compare them as `(ms, seq)`, never as strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId {
    /// Milliseconds part.
    pub ms: u64,
    /// Sequence within the millisecond.
    pub seq: u64,
}

impl MessageId {
    /// Parses an id this server gave out; anything else is `bad_request`.
    pub fn parse(s: &str) -> Result<MessageId> {
        let bad = || Error::bad_request("not a message id of this server");
        let (ms, seq) = s.split_once('-').ok_or_else(bad)?;
        let num = |p: &str| {
            if p.is_empty() || p.len() > 20 || !p.bytes().all(|b| b.is_ascii_digit()) {
                None
            } else {
                p.parse::<u64>().ok()
            }
        };
        Ok(MessageId {
            ms: num(ms).ok_or_else(bad)?,
            seq: num(seq).ok_or_else(bad)?,
        })
    }

    /// The smallest id strictly after `self`.
    pub fn next(self) -> MessageId {
        match self.seq.checked_add(1) {
            Some(seq) => MessageId { ms: self.ms, seq },
            None => MessageId {
                ms: self.ms.saturating_add(1),
                seq: 0,
            },
        }
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

impl Serialize for MessageId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MessageId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        MessageId::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The name of one server process among the nodes sharing a store.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(pub String);

impl NodeId {
    /// A random node id.
    pub fn random() -> NodeId {
        NodeId(uuid::Uuid::new_v4().simple().to_string())
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One open WebSocket, unique across nodes: the node it lives on and a number unique there.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ConnKey {
    /// The node holding the socket.
    pub node: NodeId,
    /// Unique on that node.
    pub id: u64,
}

/// A live session: who holds which token (known by its digest only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The phone the session owns.
    pub phone: Phone,
    /// Display name given at registration (≤ 64 chars).
    pub name: Option<String>,
    /// The digest of the session's token (the token itself is never stored).
    pub token_digest: TokenDigest,
    /// When it was created.
    pub created_at: Millis,
}

/// A two-person room made by an accepted request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Room {
    /// Its id.
    pub id: RoomId,
    /// Exactly two distinct members: requester first.
    pub members: [Phone; 2],
    /// When the accept made it.
    pub created_at: Millis,
    /// When it ends at the latest (`created_at + room_ttl`).
    pub expires_at: Millis,
}

impl Room {
    /// Whether `phone` is a member.
    pub fn has_member(&self, phone: &Phone) -> bool {
        self.members.contains(phone)
    }

    /// The member who is not `phone` (`None` when `phone` is not a member).
    pub fn other(&self, phone: &Phone) -> Option<&Phone> {
        match &self.members {
            [a, b] if a == phone => Some(b),
            [a, b] if b == phone => Some(a),
            _ => None,
        }
    }
}

/// A pending chat request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatRequest {
    /// The requester (`phone1`).
    pub from: Phone,
    /// The recipient (`phone2`).
    pub to: Phone,
    /// When it was sent.
    pub created_at: Millis,
    /// When it expires silently.
    pub expires_at: Millis,
}

/// A stored chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Orders the room's history.
    pub id: MessageId,
    /// The room.
    pub room: RoomId,
    /// Who sent it.
    pub sender: Phone,
    /// The text, as sent.
    pub message: String,
    /// When the store accepted it (unix ms; the wire shows RFC 3339).
    pub timestamp: Millis,
    /// The sender's idempotency key, if given.
    pub client_id: Option<String>,
}

/// A message before the store gives it an id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewMessage {
    /// Who sends it.
    pub sender: Phone,
    /// The validated text.
    pub message: String,
    /// When it was received.
    pub timestamp: Millis,
    /// Idempotency key.
    pub client_id: Option<String>,
}

/// One page of history, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HistoryPage {
    /// The messages, oldest first.
    pub messages: Vec<Message>,
    /// With `after`: newer ones exist. Without: older ones exist.
    pub more: bool,
}

/// One page of the online listing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OnlinePage {
    /// Phones online now (a page may be short).
    pub phones: Vec<Phone>,
    /// Where the next page starts; `None` at the end.
    pub next_cursor: Option<String>,
}

/// A user's pending requests.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Requests {
    /// Requesters waiting on this user.
    pub incoming: Vec<Phone>,
    /// Recipients this user is waiting on.
    pub sent: Vec<Phone>,
}

/// A room as its member sees it in `/active_chatrooms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomSummary {
    /// The room.
    pub chat_id: RoomId,
    /// The other member.
    pub other_user: Phone,
    /// When it ends at the latest.
    pub expires_at: Millis,
    /// Messages from the other member after the caller's read mark, counted exactly up to
    /// [`UNREAD_MAX`](crate::store::UNREAD_MAX) and reported as that beyond.
    pub unread: u32,
    /// The room's newest message, if it has any.
    pub last_message: Option<Message>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_digests_round_trip_and_print_no_secret() {
        let token = Token::generate().expect("token");
        let digest = token.digest();
        assert_eq!(
            digest,
            token.digest(),
            "a digest is a function of the token"
        );
        assert_ne!(digest, Token::generate().expect("token").digest());
        let hex = digest.hex();
        assert_eq!(hex.len(), 64);
        assert_ne!(hex, token.as_str(), "the digest is not the token");
        assert_eq!(TokenDigest::from_hex(&hex), Some(digest));
        for bad in [
            "",
            "xy",
            &hex[..63],
            &hex.to_uppercase(),
            &format!("{hex}0"),
        ] {
            assert_eq!(TokenDigest::from_hex(bad), None, "{bad:?}");
        }
        assert_eq!(format!("{token:?}"), "Token(..)");
        let shown = format!("{digest:?}");
        assert!(shown.len() < 30 && !shown.contains(&hex), "{shown}");
        // SHA-256 of the empty string, to pin the algorithm.
        assert_eq!(
            Token(String::new()).digest().hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
