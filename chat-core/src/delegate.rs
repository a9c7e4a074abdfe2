//! One way to write a store that forwards to another: decorators (the
//! [`InstrumentedStore`](crate::InstrumentedStore)) and test stores (a store that fails on
//! demand, the [`MockStore`](crate::store) of the `mocks` feature) implement the eight parts of
//! the port with [`delegate_store!`](crate::delegate_store) instead of forwarding their methods
//! by hand, so an operation added to the port is forwarded everywhere by adding it here once.

/// Implements every part of [`Store`](crate::Store) for a type by forwarding each method to an
/// inner store, each call passing through one expression.
///
/// `delegate_store!(Type, self => inner, call => around)`: `inner` is the store to forward to
/// (an expression over `self`), and `around` is evaluated for each method with `call` bound to
/// the inner call's future; it must produce the method's result. With `(op, call) => around`,
/// `op` is also bound, to the method's name (a `&'static str`, e.g. `"append_message"`), for
/// per-operation metrics or failure injection.
///
/// `RoomStore::append_messages` is the one method not forwarded: it keeps the trait's default
/// (one forwarded `append_message` after another) unless an optional last `rooms { ... }`
/// block writes it by hand.
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
///             return Err(Error::unavailable("the store is down"));
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
///
/// Each part can also be forwarded alone, to a different inner store:
/// `delegate_store!(@sessions Type, self => inner, (op, call) => around)` (and `@presence`,
/// `@nodes`, `@requests`, `@rooms`, `@timers`, `@notifications`, `@blocks`); the mocks are built that way.
#[macro_export]
macro_rules! delegate_store {
    (@sessions $ty:ty, $this:ident => $inner:expr, ($op:ident, $call:ident) => $around:expr $(, { $($extra:tt)* })?) => {
        #[$crate::__async_trait]
        impl $crate::store::SessionStore for $ty {
            async fn create_session(
                &$this,
                session: $crate::Session,
                refresh: ::core::option::Option<$crate::TokenDigest>,
                http_until: $crate::Millis,
            ) -> $crate::Result<$crate::store::SessionCreated> {
                let $call = $inner.create_session(session, refresh, http_until);
                let $op: &'static str = "create_session";
                $around
            }

            async fn session(
                &$this,
                token: &$crate::TokenDigest,
            ) -> $crate::Result<::core::option::Option<$crate::Session>> {
                let $call = $inner.session(token);
                let $op: &'static str = "session";
                $around
            }

            async fn names(&$this, phones: &[$crate::Phone]) -> $crate::Result<$crate::Names> {
                let $call = $inner.names(phones);
                let $op: &'static str = "names";
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
                let $op: &'static str = "create_ticket";
                $around
            }

            async fn take_ticket(
                &$this,
                ticket: &$crate::TokenDigest,
                now: $crate::Millis,
            ) -> $crate::Result<::core::option::Option<$crate::Session>> {
                let $call = $inner.take_ticket(ticket, now);
                let $op: &'static str = "take_ticket";
                $around
            }

            async fn touch(
                &$this,
                token: &$crate::TokenDigest,
                http_until: $crate::Millis,
            ) -> $crate::Result<::core::option::Option<$crate::store::Touched>> {
                let $call = $inner.touch(token, http_until);
                let $op: &'static str = "touch";
                $around
            }

            async fn end_session(
                &$this,
                phone: &$crate::Phone,
                offline_before: $crate::Millis,
            ) -> $crate::Result<::core::option::Option<$crate::store::EndedSession>> {
                let $call = $inner.end_session(phone, offline_before);
                let $op: &'static str = "end_session";
                $around
            }

            $($($extra)*)?
        }
    };

    (@presence $ty:ty, $this:ident => $inner:expr, ($op:ident, $call:ident) => $around:expr $(, { $($extra:tt)* })?) => {
        #[$crate::__async_trait]
        impl $crate::store::PresenceStore for $ty {
            async fn add_conn(
                &$this,
                phone: &$crate::Phone,
                conn: &$crate::ConnKey,
            ) -> $crate::Result<bool> {
                let $call = $inner.add_conn(phone, conn);
                let $op: &'static str = "add_conn";
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
                let $op: &'static str = "remove_conn";
                $around
            }

            async fn presence(
                &$this,
                phone: &$crate::Phone,
            ) -> $crate::Result<::core::option::Option<$crate::store::PresenceState>> {
                let $call = $inner.presence(phone);
                let $op: &'static str = "presence";
                $around
            }

            async fn go_offline(
                &$this,
                phone: &$crate::Phone,
                now: $crate::Millis,
                session_end_at: $crate::Millis,
            ) -> $crate::Result<bool> {
                let $call = $inner.go_offline(phone, now, session_end_at);
                let $op: &'static str = "go_offline";
                $around
            }

            async fn online_page(
                &$this,
                cursor: ::core::option::Option<::std::string::String>,
                limit: usize,
                now: $crate::Millis,
            ) -> $crate::Result<$crate::OnlinePage> {
                let $call = $inner.online_page(cursor, limit, now);
                let $op: &'static str = "online_page";
                $around
            }

            $($($extra)*)?
        }
    };

    (@nodes $ty:ty, $this:ident => $inner:expr, ($op:ident, $call:ident) => $around:expr $(, { $($extra:tt)* })?) => {
        #[$crate::__async_trait]
        impl $crate::store::NodeStore for $ty {
            async fn heartbeat(
                &$this,
                node: &$crate::NodeId,
                alive_until: $crate::Millis,
            ) -> $crate::Result<()> {
                let $call = $inner.heartbeat(node, alive_until);
                let $op: &'static str = "heartbeat";
                $around
            }

            async fn reap_dead_nodes(
                &$this,
                now: $crate::Millis,
                grace_until: $crate::Millis,
            ) -> $crate::Result<::std::vec::Vec<$crate::Phone>> {
                let $call = $inner.reap_dead_nodes(now, grace_until);
                let $op: &'static str = "reap_dead_nodes";
                $around
            }

            async fn remove_node(
                &$this,
                node: &$crate::NodeId,
                now: $crate::Millis,
                grace_until: $crate::Millis,
            ) -> $crate::Result<::std::vec::Vec<$crate::Phone>> {
                let $call = $inner.remove_node(node, now, grace_until);
                let $op: &'static str = "remove_node";
                $around
            }

            async fn ping(&$this) -> $crate::Result<()> {
                let $call = $inner.ping();
                let $op: &'static str = "ping";
                $around
            }

            $($($extra)*)?
        }
    };

    (@requests $ty:ty, $this:ident => $inner:expr, ($op:ident, $call:ident) => $around:expr $(, { $($extra:tt)* })?) => {
        #[$crate::__async_trait]
        impl $crate::store::RequestStore for $ty {
            async fn send_request(
                &$this,
                request: $crate::ChatRequest,
                room: $crate::store::NewRoom,
            ) -> $crate::Result<$crate::store::RequestOutcome> {
                let $call = $inner.send_request(request, room);
                let $op: &'static str = "send_request";
                $around
            }

            async fn accept_request(
                &$this,
                from: &$crate::Phone,
                to: &$crate::Phone,
                room: $crate::store::NewRoom,
                now: $crate::Millis,
            ) -> $crate::Result<::core::option::Option<$crate::Room>> {
                let $call = $inner.accept_request(from, to, room, now);
                let $op: &'static str = "accept_request";
                $around
            }

            async fn remove_request(
                &$this,
                from: &$crate::Phone,
                to: &$crate::Phone,
                now: $crate::Millis,
            ) -> $crate::Result<bool> {
                let $call = $inner.remove_request(from, to, now);
                let $op: &'static str = "remove_request";
                $around
            }

            async fn requests(
                &$this,
                phone: &$crate::Phone,
                now: $crate::Millis,
            ) -> $crate::Result<$crate::Requests> {
                let $call = $inner.requests(phone, now);
                let $op: &'static str = "requests";
                $around
            }

            $($($extra)*)?
        }
    };

    (@rooms $ty:ty, $this:ident => $inner:expr, ($op:ident, $call:ident) => $around:expr $(, { $($extra:tt)* })?) => {
        #[$crate::__async_trait]
        impl $crate::store::RoomStore for $ty {
            async fn room(
                &$this,
                id: &$crate::RoomId,
            ) -> $crate::Result<::core::option::Option<$crate::Room>> {
                let $call = $inner.room(id);
                let $op: &'static str = "room";
                $around
            }

            async fn rooms_of(
                &$this,
                phone: &$crate::Phone,
            ) -> $crate::Result<::std::vec::Vec<$crate::Room>> {
                let $call = $inner.rooms_of(phone);
                let $op: &'static str = "rooms_of";
                $around
            }

            async fn delete_room(
                &$this,
                id: &$crate::RoomId,
            ) -> $crate::Result<::core::option::Option<$crate::Room>> {
                let $call = $inner.delete_room(id);
                let $op: &'static str = "delete_room";
                $around
            }

            async fn append_message(
                &$this,
                room: &$crate::RoomId,
                message: $crate::NewMessage,
                history_max: usize,
            ) -> $crate::Result<$crate::store::Appended> {
                let $call = $inner.append_message(room, message, history_max);
                let $op: &'static str = "append_message";
                $around
            }

            async fn history(
                &$this,
                room: &$crate::RoomId,
                after: ::core::option::Option<$crate::MessageId>,
                limit: usize,
            ) -> $crate::Result<$crate::HistoryPage> {
                let $call = $inner.history(room, after, limit);
                let $op: &'static str = "history";
                $around
            }

            async fn mark_read(
                &$this,
                room: &$crate::RoomId,
                phone: &$crate::Phone,
                id: $crate::MessageId,
            ) -> $crate::Result<bool> {
                let $call = $inner.mark_read(room, phone, id);
                let $op: &'static str = "mark_read";
                $around
            }

            async fn read_marks(
                &$this,
                room: &$crate::RoomId,
            ) -> $crate::Result<::core::option::Option<$crate::ReadMarks>> {
                let $call = $inner.read_marks(room);
                let $op: &'static str = "read_marks";
                $around
            }

            async fn room_overviews(
                &$this,
                phone: &$crate::Phone,
            ) -> $crate::Result<::std::vec::Vec<$crate::store::RoomOverview>> {
                let $call = $inner.room_overviews(phone);
                let $op: &'static str = "room_overviews";
                $around
            }

            $($($extra)*)?
        }
    };

    (@timers $ty:ty, $this:ident => $inner:expr, ($op:ident, $call:ident) => $around:expr $(, { $($extra:tt)* })?) => {
        #[$crate::__async_trait]
        impl $crate::store::TimerStore for $ty {
            async fn schedule(
                &$this,
                timer: $crate::store::Timer,
                at: $crate::Millis,
            ) -> $crate::Result<()> {
                let $call = $inner.schedule(timer, at);
                let $op: &'static str = "schedule";
                $around
            }

            async fn due_timers(
                &$this,
                now: $crate::Millis,
                lease_until: $crate::Millis,
                limit: usize,
            ) -> $crate::Result<::std::vec::Vec<$crate::store::DueTimer>> {
                let $call = $inner.due_timers(now, lease_until, limit);
                let $op: &'static str = "due_timers";
                $around
            }

            async fn finish_timer(&$this, due: &$crate::store::DueTimer) -> $crate::Result<()> {
                let $call = $inner.finish_timer(due);
                let $op: &'static str = "finish_timer";
                $around
            }

            $($($extra)*)?
        }
    };

    (@notifications $ty:ty, $this:ident => $inner:expr, ($op:ident, $call:ident) => $around:expr $(, { $($extra:tt)* })?) => {
        #[$crate::__async_trait]
        impl $crate::store::NotificationStore for $ty {
            async fn enqueue_notification(
                &$this,
                event: $crate::store::OfflineEvent,
                now: $crate::Millis,
                max_queue: usize,
            ) -> $crate::Result<$crate::store::Enqueued> {
                let $call = $inner.enqueue_notification(event, now, max_queue);
                let $op: &'static str = "enqueue_notification";
                $around
            }

            async fn due_notifications(
                &$this,
                now: $crate::Millis,
                lease_until: $crate::Millis,
                limit: usize,
            ) -> $crate::Result<::std::vec::Vec<$crate::store::LeasedNotification>> {
                let $call = $inner.due_notifications(now, lease_until, limit);
                let $op: &'static str = "due_notifications";
                $around
            }

            async fn ack_notification(
                &$this,
                leased: &$crate::store::LeasedNotification,
                now: $crate::Millis,
            ) -> $crate::Result<bool> {
                let $call = $inner.ack_notification(leased, now);
                let $op: &'static str = "ack_notification";
                $around
            }

            async fn retry_notification(
                &$this,
                leased: &$crate::store::LeasedNotification,
                at: $crate::Millis,
            ) -> $crate::Result<bool> {
                let $call = $inner.retry_notification(leased, at);
                let $op: &'static str = "retry_notification";
                $around
            }

            async fn notification_queue_len(&$this) -> $crate::Result<u64> {
                let $call = $inner.notification_queue_len();
                let $op: &'static str = "notification_queue_len";
                $around
            }

            $($($extra)*)?
        }
    };

    (@blocks $ty:ty, $this:ident => $inner:expr, ($op:ident, $call:ident) => $around:expr $(, { $($extra:tt)* })?) => {
        #[$crate::__async_trait]
        impl $crate::store::BlockStore for $ty {
            async fn block(
                &$this,
                by: &$crate::Phone,
                whom: &$crate::Phone,
                max_blocked: usize,
                now: $crate::Millis,
            ) -> $crate::Result<::core::option::Option<$crate::store::BlockOutcome>> {
                let $call = $inner.block(by, whom, max_blocked, now);
                let $op: &'static str = "block";
                $around
            }

            async fn unblock(
                &$this,
                by: &$crate::Phone,
                whom: &$crate::Phone,
            ) -> $crate::Result<()> {
                let $call = $inner.unblock(by, whom);
                let $op: &'static str = "unblock";
                $around
            }

            async fn blocked(
                &$this,
                by: &$crate::Phone,
            ) -> $crate::Result<::std::vec::Vec<$crate::Phone>> {
                let $call = $inner.blocked(by);
                let $op: &'static str = "blocked";
                $around
            }

            async fn hidden_from(
                &$this,
                phone: &$crate::Phone,
            ) -> $crate::Result<::std::collections::BTreeSet<$crate::Phone>> {
                let $call = $inner.hidden_from(phone);
                let $op: &'static str = "hidden_from";
                $around
            }

            async fn decline_request(
                &$this,
                from: &$crate::Phone,
                to: &$crate::Phone,
                now: $crate::Millis,
                cooldown_until: $crate::Millis,
            ) -> $crate::Result<bool> {
                let $call = $inner.decline_request(from, to, now, cooldown_until);
                let $op: &'static str = "decline_request";
                $around
            }

            async fn send_request_capped(
                &$this,
                request: $crate::ChatRequest,
                room: $crate::store::NewRoom,
                max_pending: usize,
            ) -> $crate::Result<$crate::store::RequestOutcome> {
                let $call = $inner.send_request_capped(request, room, max_pending);
                let $op: &'static str = "send_request_capped";
                $around
            }

            $($($extra)*)?
        }
    };

    ($ty:ty, $this:ident => $inner:expr, $call:ident => $around:expr $(, rooms { $($rooms:tt)* })? $(,)?) => {
        $crate::delegate_store!(
            $ty, $this => $inner, (_op, $call) => $around $(, rooms { $($rooms)* })?
        );
    };

    ($ty:ty, $this:ident => $inner:expr, ($op:ident, $call:ident) => $around:expr $(, rooms { $($rooms:tt)* })? $(,)?) => {
        $crate::delegate_store!(@sessions $ty, $this => $inner, ($op, $call) => $around);
        $crate::delegate_store!(@presence $ty, $this => $inner, ($op, $call) => $around);
        $crate::delegate_store!(@nodes $ty, $this => $inner, ($op, $call) => $around);
        $crate::delegate_store!(@requests $ty, $this => $inner, ($op, $call) => $around);
        $crate::delegate_store!(
            @rooms $ty, $this => $inner, ($op, $call) => $around $(, { $($rooms)* })?
        );
        $crate::delegate_store!(@timers $ty, $this => $inner, ($op, $call) => $around);
        $crate::delegate_store!(@notifications $ty, $this => $inner, ($op, $call) => $around);
        $crate::delegate_store!(@blocks $ty, $this => $inner, ($op, $call) => $around);
    };
}
