//! A [`Store`] decorator that feeds `/metrics`: it times every call into
//! [`Metrics::store_latency`] and counts calls that failed with
//! [`Error::StoreUnavailable`](crate::Error::StoreUnavailable) into
//! [`Metrics::store_errors_total`], both labelled with the operation's name (`op`), then returns the inner store's answer unchanged. It passes
//! the conformance suite like the store it wraps (tests/instrumented_conformance.rs).

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use crate::error::Result;
use crate::metrics::Metrics;
use crate::store::{Appended, Store};
use crate::types::{NewMessage, RoomId};

/// Wraps a store, measuring it. Clones share the inner store and the counters.
#[derive(Clone)]
pub struct InstrumentedStore {
    /// The store that does the work.
    inner: Arc<dyn Store>,
    /// Where latency and errors are counted (shared with the service and `/metrics`).
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for InstrumentedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InstrumentedStore")
    }
}

impl InstrumentedStore {
    /// Measures `inner` into `metrics`.
    pub fn new(inner: Arc<dyn Store>, metrics: Arc<Metrics>) -> InstrumentedStore {
        InstrumentedStore { inner, metrics }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &Arc<dyn Store> {
        &self.inner
    }

    /// The counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    async fn timed<T>(&self, op: &'static str, call: impl Future<Output = Result<T>>) -> Result<T> {
        let start = Instant::now();
        let result = call.await;
        // Only an unreachable store is a store error; the rest are answers (PhoneInUse, …).
        let unavailable = matches!(&result, Err(e) if e.is_unavailable());
        self.metrics.observe_store(op, start.elapsed(), unavailable);
        result
    }
}

crate::delegate_store!(InstrumentedStore, self => self.inner, (op, call) => self.timed(op, call).await, rooms {
    async fn append_messages(
        &self,
        batch: Vec<(RoomId, NewMessage)>,
        history_max: usize,
    ) -> Vec<Result<Appended>> {
        // Forwarded whole (one round trip for the burst on Redis), timed as one call, and each
        // item that failed as unavailable counted.
        let start = Instant::now();
        let results = self.inner.append_messages(batch, history_max).await;
        let failed = results
            .iter()
            .filter(|r| matches!(r, Err(e) if e.is_unavailable()))
            .count();
        self.metrics
            .observe_store_batch("append_messages", start.elapsed(), failed as u64);
        results
    }
});

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;
    use crate::store::{MockStore, PresenceStore, RoomStore, SessionStore};
    use crate::types::{Phone, Session};

    fn phone() -> Phone {
        Phone::parse("+14155550100").unwrap()
    }

    #[tokio::test]
    async fn counts_store_unavailable_and_times_every_call() {
        let mut inner = MockStore::new();
        inner
            .presence
            .expect_presence()
            .times(1)
            .returning(|_| Ok(None));
        inner
            .rooms
            .expect_rooms_of()
            .times(1)
            .returning(|_| Err(Error::unavailable("test")));
        inner
            .sessions
            .expect_create_session()
            .times(1)
            .returning(|_, _, _| Err(Error::PhoneInUse));
        let metrics = Arc::new(Metrics::default());
        let store = InstrumentedStore::new(Arc::new(inner), metrics.clone());

        assert_eq!(store.presence(&phone()).await, Ok(None));
        assert_eq!(
            store.rooms_of(&phone()).await,
            Err(Error::unavailable("test"))
        );
        let session = Session {
            phone: phone(),
            name: None,
            token_digest: crate::Token::generate().unwrap().digest(),
            created_at: 0,
        };
        assert_eq!(
            store.create_session(session, None, 1).await,
            Err(Error::PhoneInUse),
            "answers pass through unchanged"
        );

        assert_eq!(
            metrics.store_errors_total.get("rooms_of"),
            1,
            "only StoreUnavailable is a store error"
        );
        assert_eq!(metrics.store_errors_total.total(), 1);
        for op in ["presence", "rooms_of", "create_session"] {
            let (_, _, count) = metrics.store_latency.snapshot_op(op);
            assert_eq!(count, 1, "{op} is timed under its own label");
        }
        let (buckets, _sum, count) = metrics.store_latency.snapshot();
        assert_eq!(count, 3, "every call is timed");
        assert_eq!(
            buckets.last(),
            Some(&3),
            "the +Inf bucket holds every observation"
        );
    }
}
