//! One way to write a [`Store`](crate::Store) that forwards to another: decorators (the
//! [`InstrumentedStore`](crate::InstrumentedStore)) and test stores (a store that fails on
//! demand) implement the port with [`delegate_store!`](crate::delegate_store) instead of
//! forwarding its methods by hand, so an operation added to the port is forwarded everywhere by
//! adding it here once.

/// Implements [`Store`](crate::Store) for a type by forwarding every method to an inner store,
/// each call passing through one expression.
///
/// `delegate_store!(Type, self => inner, call => around)`: `inner` is the store to forward to
/// (an expression over `self`), and `around` is evaluated for each method with `call` bound to
/// the inner call's future; it must produce the method's result. An optional block of further
/// items (methods to write by hand, such as `append_messages` or `ping`) comes last; methods
/// not in the block and not forwarded keep the trait's default (`append_messages`, which then
/// goes through the forwarded `append_message`).
///
/// ```
/// use std::sync::atomic::{AtomicBool, Ordering};
/// use chat_core::{Error, MemoryStore, Result, delegate_store};
///
/// /// A store that answers `store_unavailable` while `down` is set.
/// struct Flaky {
///     inner: MemoryStore,
///     down: AtomicBool,
/// }
///
/// impl Flaky {
///     fn check(&self) -> Result<()> {
///         if self.down.load(Ordering::SeqCst) {
///             return Err(Error::StoreUnavailable);
///         }
///         Ok(())
///     }
/// }
///
/// delegate_store!(Flaky, self => self.inner, call => {
///     self.check()?;
///     call.await
/// });
/// ```
#[macro_export]
macro_rules! delegate_store {
    ($ty:ty, $this:ident => $inner:expr, $call:ident => $around:expr $(, { $($extra:tt)* })? $(,)?) => {
        #[$crate::__async_trait]
        impl $crate::Store for $ty {
            async fn create_session(
                &$this,
                session: $crate::Session,
                refresh: ::core::option::Option<$crate::TokenDigest>,
                http_until: $crate::Millis,
            ) -> $crate::Result<$crate::Registered> {
                let $call = $inner.create_session(session, refresh, http_until);
                $around
            }

            async fn session(
                &$this,
                token: &$crate::TokenDigest,
            ) -> $crate::Result<::core::option::Option<$crate::Session>> {
                let $call = $inner.session(token);
                $around
            }

            async fn names(&$this, phones: &[$crate::Phone]) -> $crate::Result<$crate::Names> {
                let $call = $inner.names(phones);
                $around
            }

            async fn create_ticket(
                &$this,
                ticket: &$crate::TokenDigest,
                token: &$crate::TokenDigest,
                now: $crate::Millis,
                expires_at: $crate::Millis,
            ) -> $crate::Result<()> {
                let $call = $inner.create_ticket(ticket, token, now, expires_at);
                $around
            }

            async fn take_ticket(
                &$this,
                ticket: &$crate::TokenDigest,
                now: $crate::Millis,
            ) -> $crate::Result<::core::option::Option<$crate::Session>> {
                let $call = $inner.take_ticket(ticket, now);
                $around
            }

            async fn touch(
                &$this,
                token: &$crate::TokenDigest,
                http_until: $crate::Millis,
            ) -> $crate::Result<::core::option::Option<$crate::Touched>> {
                let $call = $inner.touch(token, http_until);
                $around
            }

            async fn add_conn(
                &$this,
                phone: &$crate::Phone,
                conn: &$crate::ConnKey,
            ) -> $crate::Result<bool> {
                let $call = $inner.add_conn(phone, conn);
                $around
            }

            async fn remove_conn(
                &$this,
                phone: &$crate::Phone,
                conn: &$crate::ConnKey,
                now: $crate::Millis,
                grace_until: $crate::Millis,
            ) -> $crate::Result<()> {
                let $call = $inner.remove_conn(phone, conn, now, grace_until);
                $around
            }

            async fn presence(
                &$this,
                phone: &$crate::Phone,
            ) -> $crate::Result<::core::option::Option<$crate::PresenceState>> {
                let $call = $inner.presence(phone);
                $around
            }

            async fn go_offline(
                &$this,
                phone: &$crate::Phone,
                now: $crate::Millis,
                session_end_at: $crate::Millis,
            ) -> $crate::Result<bool> {
                let $call = $inner.go_offline(phone, now, session_end_at);
                $around
            }

            async fn online_page(
                &$this,
                cursor: ::core::option::Option<::std::string::String>,
                limit: usize,
                now: $crate::Millis,
            ) -> $crate::Result<$crate::OnlinePage> {
                let $call = $inner.online_page(cursor, limit, now);
                $around
            }

            async fn heartbeat(
                &$this,
                node: &$crate::NodeId,
                alive_until: $crate::Millis,
            ) -> $crate::Result<()> {
                let $call = $inner.heartbeat(node, alive_until);
                $around
            }

            async fn reap_dead_nodes(
                &$this,
                now: $crate::Millis,
                grace_until: $crate::Millis,
            ) -> $crate::Result<::std::vec::Vec<$crate::Phone>> {
                let $call = $inner.reap_dead_nodes(now, grace_until);
                $around
            }

            async fn remove_node(
                &$this,
                node: &$crate::NodeId,
                now: $crate::Millis,
                grace_until: $crate::Millis,
            ) -> $crate::Result<::std::vec::Vec<$crate::Phone>> {
                let $call = $inner.remove_node(node, now, grace_until);
                $around
            }

            async fn send_request(
                &$this,
                request: $crate::ChatRequest,
                room: $crate::NewRoom,
            ) -> $crate::Result<$crate::SendOutcome> {
                let $call = $inner.send_request(request, room);
                $around
            }

            async fn accept_request(
                &$this,
                from: &$crate::Phone,
                to: &$crate::Phone,
                room: $crate::NewRoom,
                now: $crate::Millis,
            ) -> $crate::Result<::core::option::Option<$crate::Room>> {
                let $call = $inner.accept_request(from, to, room, now);
                $around
            }

            async fn remove_request(
                &$this,
                from: &$crate::Phone,
                to: &$crate::Phone,
                now: $crate::Millis,
            ) -> $crate::Result<bool> {
                let $call = $inner.remove_request(from, to, now);
                $around
            }

            async fn requests(
                &$this,
                phone: &$crate::Phone,
                now: $crate::Millis,
            ) -> $crate::Result<$crate::Requests> {
                let $call = $inner.requests(phone, now);
                $around
            }

            async fn room(
                &$this,
                id: &$crate::RoomId,
            ) -> $crate::Result<::core::option::Option<$crate::Room>> {
                let $call = $inner.room(id);
                $around
            }

            async fn rooms_of(
                &$this,
                phone: &$crate::Phone,
            ) -> $crate::Result<::std::vec::Vec<$crate::Room>> {
                let $call = $inner.rooms_of(phone);
                $around
            }

            async fn delete_room(
                &$this,
                id: &$crate::RoomId,
            ) -> $crate::Result<::core::option::Option<$crate::Room>> {
                let $call = $inner.delete_room(id);
                $around
            }

            async fn append_message(
                &$this,
                room: &$crate::RoomId,
                message: $crate::NewMessage,
                history_max: usize,
            ) -> $crate::Result<$crate::Appended> {
                let $call = $inner.append_message(room, message, history_max);
                $around
            }

            async fn history(
                &$this,
                room: &$crate::RoomId,
                after: ::core::option::Option<$crate::MessageId>,
                limit: usize,
            ) -> $crate::Result<$crate::HistoryPage> {
                let $call = $inner.history(room, after, limit);
                $around
            }

            async fn end_session(
                &$this,
                phone: &$crate::Phone,
                offline_before: $crate::Millis,
            ) -> $crate::Result<::core::option::Option<$crate::EndedSession>> {
                let $call = $inner.end_session(phone, offline_before);
                $around
            }

            async fn schedule(
                &$this,
                timer: $crate::Timer,
                at: $crate::Millis,
            ) -> $crate::Result<()> {
                let $call = $inner.schedule(timer, at);
                $around
            }

            async fn due_timers(
                &$this,
                now: $crate::Millis,
                lease_until: $crate::Millis,
                limit: usize,
            ) -> $crate::Result<::std::vec::Vec<$crate::DueTimer>> {
                let $call = $inner.due_timers(now, lease_until, limit);
                $around
            }

            async fn finish_timer(&$this, due: &$crate::DueTimer) -> $crate::Result<()> {
                let $call = $inner.finish_timer(due);
                $around
            }

            async fn ping(&$this) -> $crate::Result<()> {
                let $call = $inner.ping();
                $around
            }

            $($($extra)*)?
        }
    };
}
