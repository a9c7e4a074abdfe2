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
//! ## Where things are
//!
//! - At the root: the service ([`ChatService`], its [`Config`] and what it answers), the
//!   domain's values ([`Phone`], [`RoomId`], [`Message`], …), [`Error`], the ports ([`Store`],
//!   [`EventBus`], [`EventSink`]) and their in-process implementation [`MemoryStore`], the
//!   [`Clock`]s, and [`Metrics`] with the [`InstrumentedStore`] that feeds it.
//! - [`store`]: the storage port in its eight parts (sessions, presence, nodes, requests, rooms,
//!   timers, offline notifications, blocks), the values their operations return, and [`delegate_store!`] for stores that
//!   forward to another.
//! - [`event`]: who an event is for ([`Audience`]) and the sinks that hand events to sockets.
//! - [`metrics`], [`limits`], [`time`]: the metric families, the rate limiters the adapters
//!   use, RFC 3339 formatting.
//!
//! Features: `mocks` exports mockall mocks of the ports (`store::MockStore`, `MockEventBus`);
//! `testing` exports the conformance suite every store runs (the `testing` module).

#![warn(missing_docs)]

mod delegate;
mod error;
pub mod event;
mod instrumented;
pub mod limits;
mod memory;
pub mod metrics;
mod service;
pub mod store;
pub mod time;
mod types;

#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use error::{Error, Result, StoreFailure};

#[doc(hidden)]
pub use async_trait::async_trait as __async_trait;
#[cfg(any(test, feature = "mocks"))]
pub use event::MockEventBus;
pub use event::{Audience, Delivery, Event, EventBus, EventSink, Except};
pub use instrumented::InstrumentedStore;
pub use memory::MemoryStore;
pub use metrics::Metrics;
pub use service::{
    Answer, ChatService, Config, HISTORY_LIMIT, JOIN_HISTORY, MAX_BLOCKED, MAX_CLIENT_ID_CHARS,
    MAX_NAME_CHARS, NOTIFY_QUEUE_MAX, ONLINE_LIMIT, Outgoing, PageLimit, Registration, RequestSent,
    TICKET_SECS, TickReport,
};
pub use store::Store;
pub use time::{Clock, ManualClock, SystemClock};
pub use types::{
    ChatRequest, ConnKey, HistoryPage, Message, MessageId, Millis, Names, NewMessage, NodeId,
    OnlinePage, Phone, ReadMarks, Requests, Room, RoomId, RoomSummary, Session, Token, TokenDigest,
};
