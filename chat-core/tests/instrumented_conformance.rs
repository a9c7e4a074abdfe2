//! The store conformance suite over `InstrumentedStore(MemoryStore)`: the decorator must keep
//! every behaviour of the store it measures.

#![allow(clippy::unwrap_used)] // helpers too (clippy.toml covers #[test] fns only)

use std::sync::Arc;

use chat_core::testing::Fixture;
use chat_core::{
    ChatService, Config, InstrumentedStore, ManualClock, MemoryStore, Metrics, NodeId,
};

async fn instrumented_fixture() -> Fixture {
    let memory = MemoryStore::new();
    let store = InstrumentedStore::new(Arc::new(memory.clone()), Arc::new(Metrics::default()));
    Fixture::new(Arc::new(store), Arc::new(memory))
}

chat_core::store_conformance!(instrumented, instrumented_fixture());

#[tokio::test]
async fn the_service_store_calls_are_measured() {
    let memory = MemoryStore::new();
    let metrics = Arc::new(Metrics::default());
    let store = InstrumentedStore::new(Arc::new(memory.clone()), metrics.clone());
    let chat = ChatService::new(
        Arc::new(store),
        Arc::new(memory),
        Arc::new(ManualClock::new(1_800_000_000_000)),
        Config::default(),
        NodeId("node-1".into()),
    )
    .with_metrics(metrics.clone());
    let a = chat.register("+14155550100", None, None).await.unwrap();
    chat.authenticate_request(a.token.as_str()).await.unwrap();
    let (_, _, count) = metrics.store_latency.snapshot();
    assert!(count >= 2, "each store call is observed, got {count}");
    assert_eq!(metrics.store_errors_total.total(), 0);
}
