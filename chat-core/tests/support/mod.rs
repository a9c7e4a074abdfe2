//! The service over the in-memory store, a `ManualClock` and a `RecordingSink` on the store's
//! bus: what the rule tests (`service.rs`, `blocking.rs`, `reads.rs`) each start from. Each test
//! file adds the helpers it needs in its own `impl Harness` block.

#![allow(dead_code)] // not every test file reads every field

use std::sync::Arc;

use chat_core::event::RecordingSink;
use chat_core::{ChatService, Config, EventBus, ManualClock, MemoryStore, NodeId};

/// The clock's start: a fixed instant, so deadlines in tests are plain sums.
pub const START: u64 = 1_800_000_000_000;

/// One node's service and what the tests look at.
pub struct Harness {
    pub store: MemoryStore,
    pub clock: ManualClock,
    pub sink: Arc<RecordingSink>,
    pub chat: ChatService,
    pub config: Config,
}

impl Harness {
    /// With the default configuration.
    pub fn new() -> Harness {
        Harness::with_config(Config::default())
    }

    /// With `config`.
    pub fn with_config(config: Config) -> Harness {
        let store = MemoryStore::new();
        let sink = Arc::new(RecordingSink::default());
        store.attach(sink.clone());
        let clock = ManualClock::new(START);
        let chat = ChatService::new(
            Arc::new(store.clone()),
            Arc::new(store.clone()),
            Arc::new(clock.clone()),
            config.clone(),
            NodeId("node-1".into()),
        );
        Harness {
            store,
            clock,
            sink,
            chat,
            config,
        }
    }
}
