//! A [`Store`] decorator that feeds `/metrics`: it times every call into
//! [`Metrics::store_latency`] and counts calls that failed with [`Error::StoreUnavailable`] into
//! [`Metrics::store_errors_total`], then returns the inner store's answer unchanged. It passes
//! the conformance suite like the store it wraps (tests/instrumented_conformance.rs).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::store::{
    Appended, DueTimer, EndedSession, NewRoom, PresenceState, Registered, SendOutcome, Store,
    Timer, Touched,
};
use crate::types::{
    ChatRequest, ConnKey, HistoryPage, MessageId, Millis, Names, NewMessage, NodeId, OnlinePage,
    Phone, Requests, Room, RoomId, Session, TokenDigest,
};

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

    async fn timed<T>(&self, call: impl Future<Output = Result<T>>) -> Result<T> {
        let start = Instant::now();
        let result = call.await;
        self.metrics.store_latency.observe(start.elapsed());
        // Only an unreachable store is a store error; the rest are answers (PhoneInUse, …).
        if matches!(result, Err(Error::StoreUnavailable)) {
            self.metrics
                .store_errors_total
                .fetch_add(1, Ordering::Relaxed);
        }
        result
    }
}

#[async_trait::async_trait]
impl Store for InstrumentedStore {
    async fn create_session(
        &self,
        session: Session,
        refresh: Option<TokenDigest>,
        http_until: Millis,
    ) -> Result<Registered> {
        self.timed(self.inner.create_session(session, refresh, http_until))
            .await
    }

    async fn session(&self, token: &TokenDigest) -> Result<Option<Session>> {
        self.timed(self.inner.session(token)).await
    }

    async fn names(&self, phones: &[Phone]) -> Result<Names> {
        self.timed(self.inner.names(phones)).await
    }

    async fn create_ticket(
        &self,
        ticket: &TokenDigest,
        token: &TokenDigest,
        now: Millis,
        expires_at: Millis,
    ) -> Result<()> {
        self.timed(self.inner.create_ticket(ticket, token, now, expires_at))
            .await
    }

    async fn take_ticket(&self, ticket: &TokenDigest, now: Millis) -> Result<Option<Session>> {
        self.timed(self.inner.take_ticket(ticket, now)).await
    }

    async fn touch(&self, token: &TokenDigest, http_until: Millis) -> Result<Option<Touched>> {
        self.timed(self.inner.touch(token, http_until)).await
    }

    async fn add_conn(&self, phone: &Phone, conn: &ConnKey) -> Result<bool> {
        self.timed(self.inner.add_conn(phone, conn)).await
    }

    async fn remove_conn(
        &self,
        phone: &Phone,
        conn: &ConnKey,
        now: Millis,
        grace_until: Millis,
    ) -> Result<()> {
        self.timed(self.inner.remove_conn(phone, conn, now, grace_until))
            .await
    }

    async fn presence(&self, phone: &Phone) -> Result<Option<PresenceState>> {
        self.timed(self.inner.presence(phone)).await
    }

    async fn go_offline(&self, phone: &Phone, now: Millis, session_end_at: Millis) -> Result<bool> {
        self.timed(self.inner.go_offline(phone, now, session_end_at))
            .await
    }

    async fn online_page(
        &self,
        cursor: Option<String>,
        limit: usize,
        now: Millis,
    ) -> Result<OnlinePage> {
        self.timed(self.inner.online_page(cursor, limit, now)).await
    }

    async fn heartbeat(&self, node: &NodeId, alive_until: Millis) -> Result<()> {
        self.timed(self.inner.heartbeat(node, alive_until)).await
    }

    async fn reap_dead_nodes(&self, now: Millis, grace_until: Millis) -> Result<Vec<Phone>> {
        self.timed(self.inner.reap_dead_nodes(now, grace_until))
            .await
    }

    async fn remove_node(
        &self,
        node: &NodeId,
        now: Millis,
        grace_until: Millis,
    ) -> Result<Vec<Phone>> {
        self.timed(self.inner.remove_node(node, now, grace_until))
            .await
    }

    async fn send_request(&self, request: ChatRequest, room: NewRoom) -> Result<SendOutcome> {
        self.timed(self.inner.send_request(request, room)).await
    }

    async fn accept_request(
        &self,
        from: &Phone,
        to: &Phone,
        room: NewRoom,
        now: Millis,
    ) -> Result<Option<Room>> {
        self.timed(self.inner.accept_request(from, to, room, now))
            .await
    }

    async fn remove_request(&self, from: &Phone, to: &Phone, now: Millis) -> Result<bool> {
        self.timed(self.inner.remove_request(from, to, now)).await
    }

    async fn requests(&self, phone: &Phone, now: Millis) -> Result<Requests> {
        self.timed(self.inner.requests(phone, now)).await
    }

    async fn room(&self, id: &RoomId) -> Result<Option<Room>> {
        self.timed(self.inner.room(id)).await
    }

    async fn rooms_of(&self, phone: &Phone) -> Result<Vec<Room>> {
        self.timed(self.inner.rooms_of(phone)).await
    }

    async fn delete_room(&self, id: &RoomId) -> Result<Option<Room>> {
        self.timed(self.inner.delete_room(id)).await
    }

    async fn append_message(
        &self,
        room: &RoomId,
        message: NewMessage,
        history_max: usize,
    ) -> Result<Appended> {
        self.timed(self.inner.append_message(room, message, history_max))
            .await
    }

    async fn append_messages(
        &self,
        batch: Vec<(RoomId, NewMessage)>,
        history_max: usize,
    ) -> Vec<Result<Appended>> {
        let start = Instant::now();
        let results = self.inner.append_messages(batch, history_max).await;
        self.metrics.store_latency.observe(start.elapsed());
        let failed = results
            .iter()
            .filter(|r| matches!(r, Err(Error::StoreUnavailable)))
            .count();
        if failed > 0 {
            self.metrics
                .store_errors_total
                .fetch_add(failed as u64, Ordering::Relaxed);
        }
        results
    }

    async fn history(
        &self,
        room: &RoomId,
        after: Option<MessageId>,
        limit: usize,
    ) -> Result<HistoryPage> {
        self.timed(self.inner.history(room, after, limit)).await
    }

    async fn end_session(
        &self,
        phone: &Phone,
        offline_before: Millis,
    ) -> Result<Option<EndedSession>> {
        self.timed(self.inner.end_session(phone, offline_before))
            .await
    }

    async fn schedule(&self, timer: Timer, at: Millis) -> Result<()> {
        self.timed(self.inner.schedule(timer, at)).await
    }

    async fn due_timers(
        &self,
        now: Millis,
        lease_until: Millis,
        limit: usize,
    ) -> Result<Vec<DueTimer>> {
        self.timed(self.inner.due_timers(now, lease_until, limit))
            .await
    }

    async fn finish_timer(&self, due: &DueTimer) -> Result<()> {
        self.timed(self.inner.finish_timer(due)).await
    }

    async fn ping(&self) -> Result<()> {
        self.timed(self.inner.ping()).await
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::store::MockStore;

    fn phone() -> Phone {
        Phone::parse("+14155550100").unwrap()
    }

    #[tokio::test]
    async fn counts_store_unavailable_and_times_every_call() {
        let mut inner = MockStore::new();
        inner.expect_presence().times(1).returning(|_| Ok(None));
        inner
            .expect_rooms_of()
            .times(1)
            .returning(|_| Err(Error::StoreUnavailable));
        inner
            .expect_create_session()
            .times(1)
            .returning(|_, _, _| Err(Error::PhoneInUse));
        let metrics = Arc::new(Metrics::default());
        let store = InstrumentedStore::new(Arc::new(inner), metrics.clone());

        assert_eq!(store.presence(&phone()).await, Ok(None));
        assert_eq!(store.rooms_of(&phone()).await, Err(Error::StoreUnavailable));
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
            metrics.store_errors_total.load(Ordering::Relaxed),
            1,
            "only StoreUnavailable is a store error"
        );
        let (buckets, _sum, count) = metrics.store_latency.snapshot();
        assert_eq!(count, 3, "every call is timed");
        assert_eq!(
            buckets.last(),
            Some(&3),
            "the +Inf bucket holds every observation"
        );
    }
}
