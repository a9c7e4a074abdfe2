//! The shapes of the function library's replies (and of the commands whose reply has one), as
//! types the client decodes (`FromRedisValue`). Each type reads exactly what its function
//! returns, as the arrow line at the top of its `src/lua/` file says; what the reply means to
//! the store contract (which error, which outcome) is decided in `store.rs`.
//!
//! A reply that does not decode is a bug or foreign data under our prefix: [`decode`] logs why
//! and the caller sees the store as unavailable rather than wrong data.

use chat_core::store::PresenceState;
use chat_core::{
    Message, MessageId, Millis, Phone, ReadMarks, Result, Room, RoomId, Session, TokenDigest,
};
use redis::{FromRedisValue, ParsingError, Value};

use super::bad_reply;
use crate::entry;

type Parsed<T> = std::result::Result<T, ParsingError>;

/// Decodes `v` as `T`; a reply of another shape is `StoreUnavailable`, logged.
pub(super) fn decode<T: FromRedisValue>(v: Value) -> Result<T> {
    redis::from_redis_value(v)
        .map_err(|e| bad_reply(&format!("{}: {e}", std::any::type_name::<T>())))
}

/// An array reply, read element by element.
struct Fields(std::vec::IntoIter<Value>);

impl Fields {
    fn of(v: Value) -> Parsed<Fields> {
        match v {
            Value::Array(a) | Value::Set(a) => Ok(Fields(a.into_iter())),
            _ => Err("expected an array".into()),
        }
    }

    /// The next element, as a `T`.
    fn next<T: FromRedisValue>(&mut self) -> Parsed<T> {
        T::from_redis_value(self.0.next().ok_or("array too short")?)
    }

    /// The next element: a chat-core value written as text.
    fn text<T: FromText>(&mut self) -> Parsed<T> {
        Ok(self.next::<Text<T>>()?.0)
    }

    /// `has_name, name` (`'1'` and the name, or `'0'` and `''`).
    fn name(&mut self) -> Parsed<Option<String>> {
        let has_name: bool = self.next()?;
        let name: String = self.next()?;
        Ok(has_name.then_some(name))
    }
}

/// A chat-core value Redis holds as text.
trait FromText: Sized {
    /// What it is, for the log.
    const WHAT: &'static str;
    fn from_text(s: &str) -> Option<Self>;

    fn read(s: &str) -> Parsed<Self> {
        Self::from_text(s).ok_or_else(|| format!("not {}", Self::WHAT).into())
    }
}

/// `FromText` for each type: what it is, and how it reads.
macro_rules! from_text {
    ($($ty:ty: $what:literal, $parse:expr;)*) => {$(
        impl FromText for $ty {
            const WHAT: &'static str = $what;
            fn from_text(s: &str) -> Option<$ty> {
                $parse(s)
            }
        }
    )*};
}

from_text! {
    Phone: "a phone", |s| Phone::parse(s).ok();
    RoomId: "a room id", RoomId::parse;
    MessageId: "a stream id", |s| MessageId::parse(s).ok();
    TokenDigest: "a token digest", TokenDigest::from_hex;
}

/// A [`FromText`] value as a reply element.
struct Text<T>(T);

impl<T: FromText> FromRedisValue for Text<T> {
    fn from_redis_value(v: Value) -> Parsed<Self> {
        T::read(&String::from_redis_value(v)?).map(Text)
    }
}

/// A time written as text.
fn millis(s: &str) -> Parsed<Millis> {
    s.parse().map_err(|_| "not a time".into())
}

/// Phones in the order of the reply.
struct PhoneList(Vec<Phone>);

impl FromRedisValue for PhoneList {
    fn from_redis_value(v: Value) -> Parsed<Self> {
        let phones = Vec::<Text<Phone>>::from_redis_value(v)?;
        Ok(PhoneList(phones.into_iter().map(|p| p.0).collect()))
    }
}

/// Phones of a set (in no order in the reply), sorted.
pub(super) struct Phones(pub(super) Vec<Phone>);

impl FromRedisValue for Phones {
    fn from_redis_value(v: Value) -> Parsed<Self> {
        let mut phones = PhoneList::from_redis_value(v)?.0;
        phones.sort();
        Ok(Phones(phones))
    }
}

/// `{id, a, b, created_at, expires_at}`.
pub(super) struct RoomReply(pub(super) Room);

impl RoomReply {
    fn read(f: &mut Fields) -> Parsed<Room> {
        Ok(Room {
            id: f.text()?,
            members: [f.text()?, f.text()?],
            created_at: f.next()?,
            expires_at: f.next()?,
        })
    }
}

impl FromRedisValue for RoomReply {
    fn from_redis_value(v: Value) -> Parsed<Self> {
        RoomReply::read(&mut Fields::of(v)?).map(RoomReply)
    }
}

/// Rooms (`{{id, a, b, created_at, expires_at}...}`), sorted by id.
pub(super) struct Rooms(pub(super) Vec<Room>);

impl FromRedisValue for Rooms {
    fn from_redis_value(v: Value) -> Parsed<Self> {
        let mut rooms: Vec<Room> = Vec::<RoomReply>::from_redis_value(v)?
            .into_iter()
            .map(|r| r.0)
            .collect();
        rooms.sort_by_key(|r| r.id);
        Ok(Rooms(rooms))
    }
}

/// `HMGET <room meta> a b c x`: members, created_at, expires_at; `None` when the room is gone
/// (the fields are nil).
pub(super) struct RoomMeta(Option<([Phone; 2], Millis, Millis)>);

impl RoomMeta {
    /// The room, given its id.
    pub(super) fn room(self, id: RoomId) -> Option<Room> {
        self.0.map(|(members, created_at, expires_at)| Room {
            id,
            members,
            created_at,
            expires_at,
        })
    }
}

impl FromRedisValue for RoomMeta {
    fn from_redis_value(v: Value) -> Parsed<Self> {
        let mut f = Fields::of(v)?;
        if matches!(f.0.as_slice().first(), None | Some(Value::Nil)) {
            return Ok(RoomMeta(None));
        }
        Ok(RoomMeta(Some((
            [f.text()?, f.text()?],
            f.next()?,
            f.next()?,
        ))))
    }
}

/// `HMGET <room meta> a b ra rb`: both members with their read marks; `None` when the room is
/// gone.
pub(super) struct MarksReply(pub(super) Option<ReadMarks>);

impl FromRedisValue for MarksReply {
    fn from_redis_value(v: Value) -> Parsed<Self> {
        let mut f = Fields::of(v)?;
        if matches!(f.0.as_slice().first(), None | Some(Value::Nil)) {
            return Ok(MarksReply(None));
        }
        let members: [Phone; 2] = [f.text()?, f.text()?];
        let marks = [
            f.next::<Option<Text<MessageId>>>()?,
            f.next::<Option<Text<MessageId>>>()?,
        ];
        Ok(MarksReply(Some(
            members
                .into_iter()
                .zip(marks.into_iter().map(|m| m.map(|t| t.0)))
                .collect(),
        )))
    }
}

/// `room_overview`: `0` (the room is closed) or `{unread, last}`, `last` a stream entry or
/// nil.
pub(super) struct Overview(pub(super) Option<(u32, Option<StreamEntry>)>);

impl FromRedisValue for Overview {
    fn from_redis_value(v: Value) -> Parsed<Self> {
        if let Value::Int(0) = v {
            return Ok(Overview(None));
        }
        let mut f = Fields::of(v)?;
        let unread: u32 = f.next()?;
        let last: Option<StreamEntry> = f.next()?;
        Ok(Overview(Some((unread, last))))
    }
}

/// `{phone, created_at, has_name, name}`: a session but for the token digest, which the caller
/// holds.
pub(super) struct SessionReply {
    phone: Phone,
    created_at: Millis,
    name: Option<String>,
}

impl SessionReply {
    fn read(f: &mut Fields) -> Parsed<SessionReply> {
        Ok(SessionReply {
            phone: f.text()?,
            created_at: f.next()?,
            name: f.name()?,
        })
    }

    /// The session of `token`.
    pub(super) fn session(self, token: TokenDigest) -> Session {
        Session {
            phone: self.phone,
            name: self.name,
            token_digest: token,
            created_at: self.created_at,
        }
    }
}

impl FromRedisValue for SessionReply {
    fn from_redis_value(v: Value) -> Parsed<Self> {
        SessionReply::read(&mut Fields::of(v)?)
    }
}

/// `touch`: `{phone, created_at, has_name, name, came(0/1)}`.
pub(super) struct TouchReply {
    pub(super) session: SessionReply,
    pub(super) came_online: bool,
}

impl FromRedisValue for TouchReply {
    fn from_redis_value(v: Value) -> Parsed<Self> {
        let mut f = Fields::of(v)?;
        Ok(TouchReply {
            session: SessionReply::read(&mut f)?,
            came_online: f.next()?,
        })
    }
}

/// `create_session`: `{'in_use'} | {'created'} | {'refreshed', came, token, created_at,
/// has_name, name}`.
pub(super) enum CreateReply {
    InUse,
    Created,
    Refreshed {
        came_online: bool,
        token: TokenDigest,
        created_at: Millis,
        name: Option<String>,
    },
}

impl FromRedisValue for CreateReply {
    fn from_redis_value(v: Value) -> Parsed<Self> {
        let mut f = Fields::of(v)?;
        match f.next::<String>()?.as_str() {
            "in_use" => Ok(CreateReply::InUse),
            "created" => Ok(CreateReply::Created),
            "refreshed" => Ok(CreateReply::Refreshed {
                came_online: f.next()?,
                token: f.text()?,
                created_at: f.next()?,
                name: f.name()?,
            }),
            _ => Err("not an outcome of create_session".into()),
        }
    }
}

/// `presence`: `{conns, http_until, offline_since or ''}`.
pub(super) struct PresenceReply(pub(super) PresenceState);

impl FromRedisValue for PresenceReply {
    fn from_redis_value(v: Value) -> Parsed<Self> {
        let mut f = Fields::of(v)?;
        let conns: i64 = f.next()?;
        let http_until = f.next()?;
        let off: String = f.next()?;
        Ok(PresenceReply(PresenceState {
            conns: u32::try_from(conns).unwrap_or(u32::MAX),
            http_until,
            offline_since: if off.is_empty() {
                None
            } else {
                Some(millis(&off)?)
            },
        }))
    }
}

/// `online_page`: `{more(0/1), last member walked, {online phones}}`.
pub(super) struct OnlineReply {
    pub(super) more: bool,
    /// The last member walked (`''` when none), which the next page starts after.
    pub(super) last: Option<Phone>,
    pub(super) phones: Vec<Phone>,
}

impl FromRedisValue for OnlineReply {
    fn from_redis_value(v: Value) -> Parsed<Self> {
        let mut f = Fields::of(v)?;
        let more = f.next()?;
        let last: String = f.next()?;
        Ok(OnlineReply {
            more,
            last: match last.as_str() {
                "" => None,
                p => Some(Phone::read(p)?),
            },
            phones: f.next::<PhoneList>()?.0,
        })
    }
}

/// `send_request`: `{'no_user'} | {'sent'} | {'pending'} | {'exists', id} |
/// {'accepted', id, a, b, created_at, expires_at} | {'cooldown', until} | {'too_many'}`.
pub(super) enum SendReply {
    NoUser,
    Sent,
    Pending,
    Exists(RoomId),
    Accepted(Room),
    Cooldown(Millis),
    TooMany,
}

impl FromRedisValue for SendReply {
    fn from_redis_value(v: Value) -> Parsed<Self> {
        let mut f = Fields::of(v)?;
        match f.next::<String>()?.as_str() {
            "no_user" => Ok(SendReply::NoUser),
            "sent" => Ok(SendReply::Sent),
            "pending" => Ok(SendReply::Pending),
            "exists" => Ok(SendReply::Exists(f.text()?)),
            "accepted" => Ok(SendReply::Accepted(RoomReply::read(&mut f)?)),
            "cooldown" => Ok(SendReply::Cooldown(millis(&f.next::<String>()?)?)),
            "too_many" => Ok(SendReply::TooMany),
            _ => Err("not an outcome of send_request".into()),
        }
    }
}

/// `block`: `{'no_session'} | {'too_many'} | {'ok', dropped, cancelled, room or nil}`.
pub(super) enum BlockReply {
    NoSession,
    TooMany,
    Done {
        dropped: bool,
        cancelled: bool,
        room: Option<Room>,
    },
}

impl FromRedisValue for BlockReply {
    fn from_redis_value(v: Value) -> Parsed<Self> {
        let mut f = Fields::of(v)?;
        match f.next::<String>()?.as_str() {
            "no_session" => Ok(BlockReply::NoSession),
            "too_many" => Ok(BlockReply::TooMany),
            "ok" => Ok(BlockReply::Done {
                dropped: f.next()?,
                cancelled: f.next()?,
                room: f.next::<Option<RoomReply>>()?.map(|r| r.0),
            }),
            _ => Err("not an outcome of block".into()),
        }
    }
}

/// `end_session`: `{token, created_at, has_name, name, {incoming}, {sent}, {{room}...}}`.
pub(super) struct EndReply {
    pub(super) token: TokenDigest,
    pub(super) created_at: Millis,
    pub(super) name: Option<String>,
    pub(super) incoming: Phones,
    pub(super) sent: Phones,
    pub(super) rooms: Rooms,
}

impl FromRedisValue for EndReply {
    fn from_redis_value(v: Value) -> Parsed<Self> {
        let mut f = Fields::of(v)?;
        Ok(EndReply {
            token: f.text()?,
            created_at: f.next()?,
            name: f.name()?,
            incoming: f.next()?,
            sent: f.next()?,
            rooms: f.next()?,
        })
    }
}

/// `append`: `0` (no room) | `1` (not a member) | id (new) | `{id, {field, value...}}` (the
/// earlier message of the same client id).
pub(super) enum AppendReply {
    NoRoom,
    NotMember,
    New(MessageId),
    Duplicate(StreamEntry),
}

impl FromRedisValue for AppendReply {
    fn from_redis_value(v: Value) -> Parsed<Self> {
        match v {
            Value::Int(0) => Ok(AppendReply::NoRoom),
            Value::Int(1) => Ok(AppendReply::NotMember),
            Value::Array(_) => StreamEntry::from_redis_value(v).map(AppendReply::Duplicate),
            Value::BulkString(_) => Ok(AppendReply::New(Text::from_redis_value(v)?.0)),
            _ => Err("not an outcome of append".into()),
        }
    }
}

/// A history stream entry, `{id, {field, value...}}`: a message but for its room.
pub(super) struct StreamEntry {
    id: MessageId,
    body: EntryBody,
}

enum EntryBody {
    /// The one field `v`, the compact text of `src/entry.rs`.
    Compact(Vec<u8>),
    /// Entries written before the compact `v` field: one field per part.
    Parts {
        sender: Phone,
        message: String,
        timestamp: Millis,
        client_id: Option<String>,
    },
}

impl StreamEntry {
    /// The message this entry is in `room`.
    pub(super) fn message(self, room: RoomId) -> Result<Message> {
        match self.body {
            EntryBody::Compact(v) => {
                entry::decode(room, self.id, &v).ok_or_else(|| bad_reply("history entry"))
            }
            EntryBody::Parts {
                sender,
                message,
                timestamp,
                client_id,
            } => Ok(Message {
                id: self.id,
                room,
                sender,
                message,
                timestamp,
                client_id,
            }),
        }
    }
}

impl FromRedisValue for StreamEntry {
    fn from_redis_value(v: Value) -> Parsed<Self> {
        let mut f = Fields::of(v)?;
        let id = f.text()?;
        let mut fields = Fields::of(f.next()?)?;
        if let [Value::BulkString(k), Value::BulkString(_)] = fields.0.as_slice()
            && k == b"v"
        {
            fields.0.next();
            return Ok(StreamEntry {
                id,
                body: EntryBody::Compact(fields.next()?),
            });
        }
        let (mut sender, mut message, mut timestamp, mut client_id) = (None, None, None, None);
        while let Some(k) = fields.0.next() {
            match String::from_redis_value(k)?.as_str() {
                "s" => sender = Some(fields.text()?),
                "m" => message = Some(fields.next()?),
                "t" => timestamp = Some(fields.next()?),
                "c" => client_id = Some(fields.next()?),
                _ => {
                    fields.next::<Value>()?;
                }
            }
        }
        Ok(StreamEntry {
            id,
            body: EntryBody::Parts {
                sender: sender.ok_or("entry without sender")?,
                message: message.ok_or("entry without text")?,
                timestamp: timestamp.ok_or("entry without timestamp")?,
                client_id,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use chat_core::Error;

    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn array(items: &[&str]) -> Value {
        Value::Array(items.iter().map(|s| bulk(s)).collect())
    }

    const ROOM: &str = "67e55044-10b1-426f-9247-bb680e5fe0c8";

    #[test]
    fn rooms_decode_and_a_short_one_is_unavailable() {
        let room = array(&[ROOM, "+14155550100", "+14155550101", "1", "2"]);
        let RoomReply(r) = decode(room).expect("a room");
        assert_eq!(
            (r.id.to_string(), r.members[1].as_str(), r.expires_at),
            (ROOM.to_owned(), "+14155550101", 2)
        );
        let short = array(&[ROOM, "+14155550100", "+14155550101", "1"]);
        assert!(matches!(
            decode::<RoomReply>(short),
            Err(Error::StoreUnavailable(_))
        ));
        let gone: RoomMeta = decode(Value::Array(vec![Value::Nil; 4])).expect("nils");
        assert!(gone.room(RoomId::generate()).is_none());
    }

    #[test]
    fn outcomes_decode_by_their_tag() {
        let s = array(&["+14155550100", "5", "1", "Ann"]);
        let s = decode::<SessionReply>(s).expect("a session");
        assert_eq!((s.created_at, s.name.as_deref()), (5, Some("Ann")));
        let s = decode::<SessionReply>(array(&["+14155550100", "5", "0", ""])).expect("session");
        assert_eq!(s.name, None);
        assert!(matches!(
            decode(array(&["exists", ROOM])),
            Ok(SendReply::Exists(_))
        ));
        assert!(matches!(
            decode::<SendReply>(array(&["maybe"])),
            Err(Error::StoreUnavailable(_))
        ));
        assert!(matches!(decode(Value::Int(0)), Ok(AppendReply::NoRoom)));
        assert!(matches!(decode(Value::Int(1)), Ok(AppendReply::NotMember)));
        assert!(matches!(decode(bulk("5-1")), Ok(AppendReply::New(_))));
        assert!(matches!(
            decode::<AppendReply>(Value::Int(2)),
            Err(Error::StoreUnavailable(_))
        ));
        let p: PresenceReply =
            decode(Value::Array(vec![Value::Int(2), bulk("9"), bulk("")])).expect("presence");
        assert_eq!((p.0.conns, p.0.offline_since), (2, None));
    }

    #[test]
    fn stream_entries_decode_compact_and_per_part() {
        let room = RoomId::generate();
        let entry = |fields: &[&str]| Value::Array(vec![bulk("7-0"), array(fields)]);
        let compact = decode::<StreamEntry>(entry(&["v", "+14155550100|3||hi"]))
            .and_then(|e| e.message(room))
            .expect("compact");
        assert_eq!((compact.message.as_str(), compact.timestamp), ("hi", 3));
        let parts = entry(&[
            "s",
            "+14155550100",
            "x",
            "y",
            "m",
            "hi",
            "t",
            "3",
            "c",
            "c1",
        ]);
        let parts = decode::<StreamEntry>(parts)
            .and_then(|e| e.message(room))
            .expect("parts");
        assert_eq!(
            (parts.message, parts.client_id.as_deref()),
            (compact.message, Some("c1"))
        );
        for bad in [&["s", "+14155550100", "m"][..], &["m", "hi", "t", "3"]] {
            assert!(matches!(
                decode::<StreamEntry>(entry(bad)),
                Err(Error::StoreUnavailable(_))
            ));
        }
    }
}
