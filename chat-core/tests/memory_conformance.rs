//! The store conformance suite over the in-memory store.

use std::sync::Arc;

use chat_core::MemoryStore;
use chat_core::testing::Fixture;

async fn memory_fixture() -> Fixture {
    let store = MemoryStore::new();
    Fixture::new(Arc::new(store.clone()), Arc::new(store))
}

chat_core::store_conformance!(memory, memory_fixture());
