//! Events the service publishes, who they are for, and the two ports that carry them: the
//! [`EventBus`] (publish, fan out across nodes) and the [`EventSink`] (hand to local sockets).

use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::types::{ConnKey, Message, MessageId, Millis, Names, Phone, RoomId};

/// Something a user's sockets are told. Names follow the wire contract; the wire encoding
/// itself belongs to the socket adapter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", content = "data", rename_all = "snake_case")]
pub enum Event {
    /// A request arrived for the audience user.
    ChatRequest {
        /// Requester.
        from: Phone,
        /// Recipient.
        to: Phone,
        /// When it was sent.
        created_at: Millis,
        /// Display names of the users it names (who have one).
        #[serde(default)]
        names: Names,
    },
    /// A request between the two was accepted; `to_user` is the receiver of the event.
    RequestAccepted {
        /// The new room.
        chat_id: RoomId,
        /// The other member.
        from_user: Phone,
        /// The receiver.
        to_user: Phone,
        /// Display names of the users it names (who have one).
        #[serde(default)]
        names: Names,
    },
    /// The recipient declined the requester's request.
    RequestDeclined {
        /// The decliner.
        from_user: Phone,
        /// The requester.
        to_user: Phone,
        /// Display names of the users it names (who have one).
        #[serde(default)]
        names: Names,
    },
    /// The requester withdrew the request.
    RequestCancelled {
        /// The requester.
        from_user: Phone,
        /// The recipient.
        to_user: Phone,
        /// Display names of the users it names (who have one).
        #[serde(default)]
        names: Names,
    },
    /// A user the audience shares a request or room with went online or offline.
    Presence {
        /// Whose presence changed.
        phone: Phone,
        /// Now online?
        online: bool,
        /// Display names of the users it names (who have one).
        #[serde(default)]
        names: Names,
    },
    /// A member closed the room (or their session ended).
    RoomClosed {
        /// The room.
        room: RoomId,
        /// Who closed it.
        by: Phone,
    },
    /// The room reached the end of its lifetime.
    RoomExpired {
        /// The room.
        room: RoomId,
    },
    /// A new message in a room.
    ReceiveMessage(Message),
    /// A socket joined the room.
    UserJoined {
        /// The room.
        room: RoomId,
        /// Who joined.
        user: Phone,
        /// Display names of the users it names (who have one).
        #[serde(default)]
        names: Names,
    },
    /// A socket left the room.
    UserLeft {
        /// The room.
        room: RoomId,
        /// Who left.
        user: Phone,
    },
    /// A member started or stopped typing.
    Typing {
        /// The room.
        room: RoomId,
        /// Who is typing.
        user: Phone,
        /// Started (true) or stopped.
        typing: bool,
    },
    /// A member's read mark moved forward (told to the other member's sockets joined to the
    /// room).
    Read {
        /// The room.
        room: RoomId,
        /// Whose mark moved.
        user: Phone,
        /// The id of the last message they have read.
        id: MessageId,
    },
}

/// Who an event is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Audience {
    /// Every open socket of this user, on every node.
    User(Phone),
    /// Every socket joined to this room, on every node.
    Room(RoomId),
}

/// Sockets of the audience that must not receive the event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Except {
    /// One socket (the one that left, for `user_left`).
    Conn(ConnKey),
    /// All sockets of one user (the typist, for `typing`).
    User(Phone),
}

/// An event with its addressing, as it crosses the bus.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// Who it is for.
    pub audience: Audience,
    /// Who in the audience is skipped.
    pub except: Option<Except>,
    /// What happened.
    pub event: Event,
}

impl Delivery {
    /// An event for every socket of `phone`.
    pub fn to_user(phone: Phone, event: Event) -> Delivery {
        Delivery {
            audience: Audience::User(phone),
            except: None,
            event,
        }
    }

    /// `chat_request` to the target of a request sent by `from` at `created_at`, with the
    /// names (of `names`) of the two.
    pub fn chat_request(from: &Phone, to: &Phone, created_at: Millis, names: &Names) -> Delivery {
        Delivery::to_user(
            to.clone(),
            Event::ChatRequest {
                from: from.clone(),
                to: to.clone(),
                created_at,
                names: names_of(names, [from, to]),
            },
        )
    }

    /// `request_accepted` to each member of the room `chat_id` made by an accept, naming the
    /// other member, with the names (of `names`) of the two.
    pub fn request_accepted(chat_id: RoomId, members: &[Phone; 2], names: &Names) -> [Delivery; 2] {
        let [a, b] = members;
        let names = names_of(names, [a, b]);
        let tell = |to_user: &Phone, from_user: &Phone| {
            Delivery::to_user(
                to_user.clone(),
                Event::RequestAccepted {
                    chat_id,
                    from_user: from_user.clone(),
                    to_user: to_user.clone(),
                    names: names.clone(),
                },
            )
        };
        [tell(a, b), tell(b, a)]
    }

    /// An event for every socket joined to `room`.
    pub fn to_room(room: RoomId, event: Event) -> Delivery {
        Delivery {
            audience: Audience::Room(room),
            except: None,
            event,
        }
    }

    /// The same delivery, skipping `except`.
    pub fn except(mut self, except: Except) -> Delivery {
        self.except = Some(except);
        self
    }
}

/// The entries of `names` for `phones`: what an event naming those users carries.
pub(crate) fn names_of<'a>(names: &Names, phones: impl IntoIterator<Item = &'a Phone>) -> Names {
    phones
        .into_iter()
        .filter_map(|p| Some((p.clone(), names.get(p)?.clone())))
        .collect()
}

/// Receives every delivery that reaches this node, in publish order per audience.
///
/// Implemented by the socket adapter. **Must not block**: it runs on the bus's receive path
/// (and, in memory, inside the store's critical section that fixes message order), so it only
/// enqueues into bounded per-socket queues.
pub trait EventSink: Send + Sync + 'static {
    /// Hands `delivery` to the local sockets it addresses.
    fn deliver(&self, delivery: &Delivery);
}

/// Carries events from the node that publishes them to every node with sockets in the audience.
///
/// A store and its bus usually share a backend: `Store::append_message` publishes the
/// `receive_message` event itself, in the same atomic step that fixes the message's place in
/// history, so that every socket sees a room's messages in history order.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait::async_trait]
pub trait EventBus: Send + Sync + 'static {
    /// Publishes to every node (this one included) that is interested in the audience.
    /// An event published before `Ok` returns is delivered to each interested node at most once.
    async fn publish(&self, delivery: Delivery) -> Result<()>;

    /// Declares that this node has sockets for `audience`, so it must receive its events.
    /// Calls are counted, failed ones included: each `subscribe` is undone by exactly one
    /// `unsubscribe`. A failed call still records the interest, and the bus completes the
    /// subscription by itself once its backend answers again.
    async fn subscribe(&self, audience: Audience) -> Result<()>;

    /// Undoes one `subscribe`.
    async fn unsubscribe(&self, audience: Audience) -> Result<()>;

    /// Sets where this node's deliveries go. Until a sink is attached they are dropped.
    fn attach(&self, sink: Arc<dyn EventSink>);
}

/// A slot for the sink, shared by the bus implementations of this workspace.
#[derive(Default)]
pub struct SinkSlot(RwLock<Option<Arc<dyn EventSink>>>);

impl SinkSlot {
    /// Replaces the sink.
    pub fn set(&self, sink: Arc<dyn EventSink>) {
        if let Ok(mut slot) = self.0.write() {
            *slot = Some(sink);
        }
    }

    /// Delivers to the sink, if any.
    pub fn deliver(&self, delivery: &Delivery) {
        let sink = self.0.read().ok().and_then(|s| s.clone());
        if let Some(sink) = sink {
            sink.deliver(delivery);
        }
    }
}

impl std::fmt::Debug for SinkSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SinkSlot")
    }
}

/// A sink that keeps everything it receives, for tests.
#[derive(Debug, Default)]
pub struct RecordingSink(std::sync::Mutex<Vec<Delivery>>);

impl RecordingSink {
    /// Takes everything received so far.
    pub fn take(&self) -> Vec<Delivery> {
        self.0
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default()
    }

    /// The events received so far for `audience`, without taking them.
    pub fn events_for(&self, audience: &Audience) -> Vec<Event> {
        self.0
            .lock()
            .map(|v| {
                v.iter()
                    .filter(|d| &d.audience == audience)
                    .map(|d| d.event.clone())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl EventSink for RecordingSink {
    fn deliver(&self, delivery: &Delivery) {
        if let Ok(mut v) = self.0.lock() {
            v.push(delivery.clone());
        }
    }
}
