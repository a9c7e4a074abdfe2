//! The conformance suite: the executable form of the [`Store`] contract, run by every store.
//!
//! Each `pub async fn` here takes a fresh [`Fixture`] and checks one behaviour of the contract,
//! panicking when the store breaks it. A store's crate runs them all with
//! [`store_conformance!`](crate::store_conformance), which makes one `#[tokio::test]` per
//! function inside a module named after the backend (`memory::accept_race_makes_one_room`):
//!
//! ```
//! // tests/conformance.rs of a store crate (needs tokio with `macros` and `rt-multi-thread`).
//! use std::sync::Arc;
//!
//! use chat_core::MemoryStore;
//! use chat_core::testing::Fixture;
//!
//! async fn memory_fixture() -> Fixture {
//!     let store = MemoryStore::new();
//!     Fixture::new(Arc::new(store.clone()), Arc::new(store))
//! }
//!
//! chat_core::store_conformance!(memory, memory_fixture());
//! # fn main() {}
//! ```
//!
//! Time: every store method takes `now` and deadlines from its caller, so the suite drives time
//! with a [`ManualClock`] for any store. The clock starts at the real time, and every deadline
//! the suite hands a store lies at or after that start, so a store that also sets server-side
//! key expiry a margin after the deadlines it is given never loses data the suite still reads.
//! The lifetimes the suite uses are [`Lifetimes`]; a backend may shorten or lengthen them.
//!
//! Events: the fixture attaches a [`RecordingSink`] to the backend's own bus. Tests subscribe
//! to the audiences they watch (as a node with sockets would) and wait, bounded, for what the
//! store published: `append_message` must publish `receive_message` in history order.

mod blocks;
mod bus;
mod helpers;
mod nodes;
mod notifications;
mod presence;
mod reads;
mod requests;
mod rooms;
mod sessions;
mod timers;

pub use blocks::*;
pub use bus::*;
pub use nodes::*;
pub use notifications::*;
pub use presence::*;
pub use reads::*;
pub use requests::*;
pub use rooms::*;
pub use sessions::*;
pub use timers::*;

use std::any::Any;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::event::{Audience, Delivery, Event, EventBus, EventSink, RecordingSink};
use crate::store::Store;
use crate::time::{Clock, ManualClock, SystemClock};
use crate::types::{Millis, Phone};

/// The lifetimes (in milliseconds) the suite gives the store. The defaults are long enough that
/// real time never reaches a deadline while a test runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lifetimes {
    /// HTTP presence window (`http_until = now + presence_ms`).
    pub presence_ms: u64,
    /// How long a session outlives going offline.
    pub session_idle_ms: u64,
    /// How long a request stays pending.
    pub request_ttl_ms: u64,
    /// A room's maximum life.
    pub room_ttl_ms: u64,
    /// How long a heartbeat keeps a node alive.
    pub node_ttl_ms: u64,
    /// How long a leased timer stays with its caller.
    pub lease_ms: u64,
}

impl Default for Lifetimes {
    fn default() -> Lifetimes {
        Lifetimes {
            presence_ms: 60_000,
            session_idle_ms: 120_000,
            request_ttl_ms: 60_000,
            room_ttl_ms: 300_000,
            node_ttl_ms: 30_000,
            lease_ms: 30_000,
        }
    }
}

/// What each suite function gets: a fresh store, its bus with a recording sink attached, and a
/// clock the test moves.
pub struct Fixture {
    /// The store under test; empty, or at least sharing nothing with other fixtures.
    pub store: Arc<dyn Store>,
    /// The same backend's bus.
    pub bus: Arc<dyn EventBus>,
    /// Every delivery that reached this node through `bus`.
    pub events: Arc<RecordingSink>,
    /// The time the suite hands the store.
    pub clock: ManualClock,
    /// The lifetimes the suite uses.
    pub lifetimes: Lifetimes,
    /// How long to wait for a published event before failing.
    pub event_timeout: Duration,
    /// Woken on every delivery, so waiting for an event is not polling.
    delivered: Arc<Notify>,
    /// Makes this fixture's phones unlikely to meet another fixture's in a shared backend.
    phone_base: u64,
    /// Whatever the backend needs alive until the test ends (a server process, a temp dir).
    keep: Vec<Box<dyn Any + Send + Sync>>,
}

impl std::fmt::Debug for Fixture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fixture")
            .field("now", &self.clock.now())
            .field("lifetimes", &self.lifetimes)
            .finish_non_exhaustive()
    }
}

/// Records a delivery and wakes the tests waiting for one.
struct NotifyingSink {
    record: Arc<RecordingSink>,
    delivered: Arc<Notify>,
}

impl EventSink for NotifyingSink {
    fn deliver(&self, delivery: &Delivery) {
        self.record.deliver(delivery);
        self.delivered.notify_waiters();
    }
}

impl Fixture {
    /// A fixture over `store` and its `bus`: attaches a recording sink to the bus and starts the
    /// clock at the real time.
    pub fn new(store: Arc<dyn Store>, bus: Arc<dyn EventBus>) -> Fixture {
        let events = Arc::new(RecordingSink::default());
        let delivered = Arc::new(Notify::new());
        bus.attach(Arc::new(NotifyingSink {
            record: events.clone(),
            delivered: delivered.clone(),
        }));
        let random = uuid::Uuid::new_v4().as_u128();
        Fixture {
            store,
            bus,
            events,
            clock: ManualClock::new(SystemClock.now()),
            lifetimes: Lifetimes::default(),
            event_timeout: Duration::from_secs(5),
            delivered,
            // Eight digits: phones are "+" then these and three more (11 digits).
            phone_base: 10_000_000 + u64::try_from(random % 90_000_000).unwrap_or(0),
            keep: Vec::new(),
        }
    }

    /// The same fixture with other lifetimes.
    pub fn with_lifetimes(mut self, lifetimes: Lifetimes) -> Fixture {
        self.lifetimes = lifetimes;
        self
    }

    /// Keeps `guard` alive as long as the fixture (e.g. the backend's server process).
    pub fn keep_alive(mut self, guard: impl Any + Send + Sync) -> Fixture {
        self.keep.push(Box::new(guard));
        self
    }

    /// Now, by the fixture's clock.
    pub fn now(&self) -> Millis {
        self.clock.now()
    }

    /// Moves the clock forward.
    pub fn advance(&self, ms: u64) {
        self.clock.advance(ms);
    }

    /// The `n`th phone of this fixture.
    pub fn phone(&self, n: u32) -> Phone {
        Phone::parse(&format!("+{}{:03}", self.phone_base, n % 1000)).expect("a valid phone")
    }

    /// Waits (at most `event_timeout`) until at least `n` events reached `audience`; returns
    /// all of them.
    pub async fn wait_for_events(&self, audience: &Audience, n: usize) -> Vec<Event> {
        let deadline = tokio::time::Instant::now() + self.event_timeout;
        loop {
            // SessionCreated before looking, so a delivery between the look and the wait is not lost.
            let mut woken = std::pin::pin!(self.delivered.notified());
            woken.as_mut().enable();
            let got = self.events.events_for(audience);
            if got.len() >= n {
                return got;
            }
            if tokio::time::timeout_at(deadline, woken).await.is_err() {
                panic!(
                    "waited {:?} for {n} events for {audience:?}; got {}: {got:?}",
                    self.event_timeout,
                    got.len()
                );
            }
        }
    }
}

/// Runs one suite function, failing it if it takes longer than a minute (a hung store).
pub async fn bounded(name: &str, test: impl Future<Output = ()>) {
    if tokio::time::timeout(Duration::from_secs(60), test)
        .await
        .is_err()
    {
        panic!("conformance test {name} did not finish within 60 s");
    }
}

/// Expands to one `#[tokio::test]` per conformance test, in a module named `$backend`, each
/// running the suite function on a fixture from `$fixture` (an expression evaluating to a
/// `Future<Output = Fixture>`, evaluated once per test; it may name items of the calling scope).
///
/// The calling crate needs `tokio` with the `macros` and `rt-multi-thread` features.
#[macro_export]
macro_rules! store_conformance {
    ($backend:ident, $fixture:expr $(,)?) => {
        $crate::__store_conformance_tests!($backend, $fixture;
            create_session_then_phone_in_use,
            create_session_refresh_needs_the_token,
            session_and_touch_find_only_live_tokens,
            tickets_work_once_until_they_expire,
            tickets_end_with_their_session,
            concurrent_takes_of_a_ticket_one_wins,
            touch_never_shortens_the_window,
            touch_reschedules_presence_timer,
            connections_hold_presence,
            remove_conn_schedules_presence_timer,
            last_socket_cuts_the_http_window_to_the_grace,
            a_dead_node_cuts_its_users_windows_to_the_grace,
            names_of_live_sessions,
            go_offline_only_when_nothing_holds_the_user,
            go_offline_schedules_session_end,
            online_page_walks_everyone,
            online_page_rejects_foreign_cursor,
            reap_claims_each_dead_node_once,
            concurrent_reaps_claim_each_node_once,
            remove_node_forgets_its_sockets,
            send_request_then_already_pending,
            send_request_schedules_expiry,
            crossed_send_request_accepts,
            send_request_to_room_partner_is_room_exists,
            send_request_to_phone_without_session_is_user_not_found,
            send_request_to_offline_user_is_user_not_found,
            requests_and_accepts_are_published,
            expired_request_counts_as_absent,
            accept_request_makes_room_once,
            remove_request_reports_pending,
            requests_lists_both_directions,
            room_lookup_and_delete,
            accept_schedules_room_expiry,
            append_message_needs_room_and_membership,
            append_message_ids_strictly_increase,
            append_message_dedupes_client_id,
            append_message_publishes_in_order,
            append_messages_answers_each_in_order,
            append_messages_burst_is_each_message_alone,
            history_pages,
            history_max_keeps_last_n,
            end_session_conditions,
            end_session_deletes_everything,
            due_timers_lease_and_finish,
            finish_keeps_rescheduled_timer,
            due_timers_respects_limit,
            concurrent_due_timers_lease_each_once,
            notifications_only_for_users_without_sockets,
            notifications_lease_in_order_per_recipient,
            notification_queue_is_bounded,
            concurrent_due_notifications_lease_each_once,
            ping_answers,
            bus_delivers_published_events,
            accept_race_makes_one_room,
            crossed_send_race_makes_one_room,
            concurrent_appends_get_unique_increasing_ids,
            concurrent_create_session_one_wins,
            mark_read_moves_forward_only,
            mark_read_checks_room_member_and_id,
            room_overviews_count_unread_and_last_message,
            unread_is_exact_up_to_the_bound,
            read_marks_end_with_the_room,
            concurrent_marks_end_at_the_largest,
            block_unblock_and_list,
            block_is_capped_and_needs_a_session,
            block_removes_requests_and_room,
            blocks_refuse_requests_and_accepts,
            hidden_from_both_directions,
            decline_request_starts_cooldown,
            send_request_capped_counts_pending,
            end_session_frees_blocks,
            block_racing_accept_leaves_nothing,
        );
    };
}

/// The expansion of [`store_conformance!`]; not for direct use.
#[doc(hidden)]
#[macro_export]
macro_rules! __store_conformance_tests {
    ($backend:ident, $fixture:expr; $($test:ident),+ $(,)?) => {
        mod $backend {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let fixture: $crate::testing::Fixture = $fixture.await;
                    $crate::testing::bounded(
                        stringify!($test),
                        $crate::testing::$test(fixture),
                    )
                    .await;
                }
            )+
        }
    };
}
