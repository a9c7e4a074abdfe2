//! # chat-core
//!
//! The chat domain — users, sessions, presence, chat requests, rooms, messages — and every rule
//! of the wire contract, behind two ports: a [`Store`] for durable state and an [`EventBus`]
//! for events to users' sockets. [`MemoryStore`] implements both in one process.
//!
//! This crate performs no I/O of its own and knows nothing of HTTP, WebSocket, JSON or Redis:
//! the adapters (`chat-http`, `chat-ws`, `chat-store-redis`) depend on it, never the reverse.
//! Time comes from a [`Clock`], so lifetimes are testable without sleeping.
//!
//! Embedding it with the in-memory store takes a few lines; see [`MemoryStore`].
//!
//! Features: `mocks` exports mockall mocks of the ports (`MockStore`, `MockEventBus`);
//! `testing` exports the conformance suite every store runs (the `testing` module).

#![warn(missing_docs)]

mod delegate;
mod error;
mod event;
mod instrumented;
mod limits;
mod memory;
mod metrics;
mod service;
pub mod store;
mod time;
mod types;

#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use error::{Error, Result, StoreFailure};

#[doc(hidden)]
pub use async_trait::async_trait as __async_trait;
#[cfg(any(test, feature = "mocks"))]
pub use event::MockEventBus;
pub use event::{Audience, Delivery, Event, EventBus, EventSink, Except, RecordingSink, SinkSlot};
pub use instrumented::InstrumentedStore;
pub use limits::{KeyedLimiter, TokenBucket};
pub use memory::MemoryStore;
pub use metrics::{LATENCY_BUCKETS, Metrics, StoreErrors, StoreLatency, StoreOp};
pub use service::{
    Answer, ChatService, Config, HISTORY_LIMIT, JOIN_HISTORY, MAX_CLIENT_ID_CHARS, MAX_NAME_CHARS,
    ONLINE_LIMIT, Outgoing, Registration, SendResult, TICKET_SECS, TickReport, page_limit,
};
#[cfg(any(test, feature = "mocks"))]
pub use store::MockStore;
pub use store::{
    Appended, DueTimer, EndedSession, NewRoom, NodeStore, PresenceState, PresenceStore, Registered,
    RequestStore, RoomStore, SendOutcome, SessionStore, Store, Timer, TimerStore, Touched,
};
pub use time::{Clock, ManualClock, SystemClock, push_rfc3339, rfc3339};
pub use types::{
    ChatRequest, ConnKey, HistoryPage, Message, MessageId, Millis, Names, NewMessage, NodeId,
    OnlinePage, Phone, Requests, Room, RoomId, RoomSummary, Session, Token, TokenDigest,
};
