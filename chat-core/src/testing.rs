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

use std::any::Any;
use std::collections::{BTreeSet, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinSet;

use crate::error::Error;
use crate::event::{Audience, Delivery, Event, EventBus, EventSink, Except, RecordingSink};
use crate::store::{Appended, DueTimer, NewRoom, SendOutcome, Store, Timer};
use crate::time::{Clock, ManualClock, SystemClock};
use crate::types::{
    ChatRequest, ConnKey, Message, MessageId, Millis, Names, NewMessage, NodeId, Phone, Room,
    RoomId, Session, Token,
};

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
            // Registered before looking, so a delivery between the look and the wait is not lost.
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
            history_pages,
            history_max_keeps_last_n,
            end_session_conditions,
            end_session_deletes_everything,
            due_timers_lease_and_finish,
            finish_keeps_rescheduled_timer,
            due_timers_respects_limit,
            concurrent_due_timers_lease_each_once,
            ping_answers,
            bus_delivers_published_events,
            accept_race_makes_one_room,
            crossed_send_race_makes_one_room,
            concurrent_appends_get_unique_increasing_ids,
            concurrent_create_session_one_wins,
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

// ------------------------------------------------------------------------------------ helpers

/// Creates a session for `phone` now, online for `presence_ms`.
async fn register(fx: &Fixture, phone: &Phone) -> Session {
    let session = new_session(fx, phone);
    let registered = fx
        .store
        .create_session(session.clone(), None, fx.now() + fx.lifetimes.presence_ms)
        .await
        .expect("create_session");
    assert!(!registered.refreshed, "a new session is not a refresh");
    assert!(registered.came_online, "a new session comes online");
    assert_eq!(registered.session, session);
    session
}

fn new_session(fx: &Fixture, phone: &Phone) -> Session {
    Session {
        phone: phone.clone(),
        name: Some("Test".into()),
        token_digest: Token::generate().expect("a token").digest(),
        created_at: fx.now(),
    }
}

/// Registers `n` users numbered from `first`.
async fn users(fx: &Fixture, first: u32, n: u32) -> Vec<Phone> {
    let mut phones = Vec::new();
    for i in first..first + n {
        let p = fx.phone(i);
        register(fx, &p).await;
        phones.push(p);
    }
    phones
}

fn new_room(fx: &Fixture) -> NewRoom {
    NewRoom {
        id: RoomId::generate(),
        created_at: fx.now(),
        expires_at: fx.now() + fx.lifetimes.room_ttl_ms,
        names: Names::new(),
    }
}

/// Passed as `grace_until` where the presence grace is not what a test is about.
const NO_CUT: Millis = Millis::MAX / 2;

fn request(fx: &Fixture, from: &Phone, to: &Phone) -> ChatRequest {
    ChatRequest {
        from: from.clone(),
        to: to.clone(),
        created_at: fx.now(),
        expires_at: fx.now() + fx.lifetimes.request_ttl_ms,
    }
}

/// A room made the ordinary way: `a` asks, `b` accepts.
async fn room_between(fx: &Fixture, a: &Phone, b: &Phone) -> Room {
    let sent = fx
        .store
        .send_request(request(fx, a, b), new_room(fx))
        .await
        .expect("send_request");
    assert_eq!(sent, SendOutcome::Sent);
    fx.store
        .accept_request(a, b, new_room(fx), fx.now())
        .await
        .expect("accept_request")
        .expect("the request was pending")
}

fn message(fx: &Fixture, sender: &Phone, text: &str, client_id: Option<&str>) -> NewMessage {
    NewMessage {
        sender: sender.clone(),
        message: text.into(),
        timestamp: fx.now(),
        client_id: client_id.map(Into::into),
    }
}

async fn append(fx: &Fixture, room: &Room, m: NewMessage) -> Appended {
    fx.store
        .append_message(&room.id, m, 10_000)
        .await
        .expect("append_message")
}

async fn append_new(fx: &Fixture, room: &Room, m: NewMessage) -> Message {
    match append(fx, room, m).await {
        Appended::New(m) => m,
        Appended::Duplicate(m) => panic!("unexpected duplicate {m:?}"),
    }
}

/// Leases every timer due at `at` and returns them.
async fn lease(fx: &Fixture, at: Millis) -> Vec<DueTimer> {
    fx.store
        .due_timers(at, at + fx.lifetimes.lease_ms, 1000)
        .await
        .expect("due_timers")
}

/// Whether `timer` is due at `at` (leasing whatever is due then).
async fn is_due(fx: &Fixture, at: Millis, timer: &Timer) -> bool {
    lease(fx, at).await.iter().any(|d| &d.timer == timer)
}

/// Asserts that `timer` comes due exactly at `at`: not a millisecond before.
async fn assert_due_at(fx: &Fixture, at: Millis, timer: &Timer) {
    assert!(
        !is_due(fx, at - 1, timer).await,
        "{timer} must not be due before {at}"
    );
    assert!(is_due(fx, at, timer).await, "{timer} must be due at {at}");
}

fn conn(node: &NodeId, id: u64) -> ConnKey {
    ConnKey {
        node: node.clone(),
        id,
    }
}

async fn conns(fx: &Fixture, phone: &Phone) -> u32 {
    fx.store
        .presence(phone)
        .await
        .expect("presence")
        .expect("a session")
        .conns
}

fn room_ids(rooms: &[Room]) -> BTreeSet<RoomId> {
    rooms.iter().map(|r| r.id).collect()
}

fn set<T: Ord + Clone>(items: &[T]) -> BTreeSet<T> {
    items.iter().cloned().collect()
}

// --------------------------------------------------------------------- sessions and presence

/// A phone has one live session: a second registration without its token is `PhoneInUse`.
pub async fn create_session_then_phone_in_use(fx: Fixture) {
    let a = fx.phone(1);
    let first = register(&fx, &a).await;
    assert_eq!(
        fx.store
            .session(&first.token_digest)
            .await
            .expect("session"),
        Some(first.clone())
    );
    let presence = fx
        .store
        .presence(&a)
        .await
        .expect("presence")
        .expect("a new session has presence");
    assert_eq!(presence.conns, 0);
    assert_eq!(presence.http_until, fx.now() + fx.lifetimes.presence_ms);
    assert_eq!(presence.offline_since, None);
    assert!(presence.online_at(fx.now()));

    let second = new_session(&fx, &a);
    let refused = fx
        .store
        .create_session(second.clone(), None, fx.now() + fx.lifetimes.presence_ms)
        .await;
    assert_eq!(refused, Err(Error::PhoneInUse));
    assert_eq!(
        fx.store
            .session(&second.token_digest)
            .await
            .expect("session"),
        None,
        "a refused registration leaves no session behind"
    );
    // Another phone is unaffected.
    register(&fx, &fx.phone(2)).await;
}

/// A registration carrying the live session's token refreshes it: same session, longer window;
/// any other token is `PhoneInUse`.
pub async fn create_session_refresh_needs_the_token(fx: Fixture) {
    let a = fx.phone(1);
    let first = register(&fx, &a).await;
    let stranger = Token::generate().expect("token").digest();
    let refused = fx
        .store
        .create_session(
            new_session(&fx, &a),
            Some(stranger),
            fx.now() + fx.lifetimes.presence_ms,
        )
        .await;
    assert_eq!(refused, Err(Error::PhoneInUse));

    fx.advance(1_000);
    let later = fx.now() + fx.lifetimes.presence_ms;
    let refreshed = fx
        .store
        .create_session(new_session(&fx, &a), Some(first.token_digest), later)
        .await
        .expect("refresh");
    assert!(refreshed.refreshed);
    assert!(!refreshed.came_online, "the user was online already");
    assert_eq!(
        refreshed.session, first,
        "a refresh keeps the session and its token"
    );
    let presence = fx
        .store
        .presence(&a)
        .await
        .expect("presence")
        .expect("some");
    assert_eq!(presence.http_until, later);

    // After going offline, a refresh brings the user back online.
    fx.clock.set(later);
    assert!(
        fx.store
            .go_offline(&a, fx.now(), fx.now() + fx.lifetimes.session_idle_ms)
            .await
            .expect("go_offline")
    );
    let back = fx
        .store
        .create_session(
            new_session(&fx, &a),
            Some(first.token_digest),
            fx.now() + fx.lifetimes.presence_ms,
        )
        .await
        .expect("refresh");
    assert!(back.refreshed);
    assert!(back.came_online);
    let presence = fx
        .store
        .presence(&a)
        .await
        .expect("presence")
        .expect("some");
    assert_eq!(presence.offline_since, None);
    assert!(presence.online_at(fx.now()));
}

/// `session` and `touch` know only the tokens of live sessions.
pub async fn session_and_touch_find_only_live_tokens(fx: Fixture) {
    let a = register(&fx, &fx.phone(1)).await;
    let unknown = Token::generate().expect("token").digest();
    assert_eq!(fx.store.session(&unknown).await.expect("session"), None);
    assert_eq!(
        fx.store
            .touch(&unknown, fx.now() + fx.lifetimes.presence_ms)
            .await
            .expect("touch"),
        None
    );
    let touched = fx
        .store
        .touch(&a.token_digest, fx.now() + fx.lifetimes.presence_ms)
        .await
        .expect("touch")
        .expect("a live token");
    assert_eq!(touched.session, a);
    assert!(!touched.came_online);
    assert_eq!(
        fx.store.presence(&fx.phone(9)).await.expect("presence"),
        None
    );
}

/// A ticket stands for its session once, until it expires; unknown tickets are nothing.
pub async fn tickets_work_once_until_they_expire(fx: Fixture) {
    let a = register(&fx, &fx.phone(1)).await;
    let ttl = 30_000;
    let t = Token::generate().expect("ticket").digest();
    let now = fx.now();
    fx.store
        .create_ticket(&t, &a.token_digest, now, now + ttl)
        .await
        .expect("create_ticket");
    let unknown = Token::generate().expect("ticket").digest();
    assert_eq!(
        fx.store.take_ticket(&unknown, now).await.expect("take"),
        None
    );
    // A session token is not a ticket.
    assert_eq!(
        fx.store
            .take_ticket(&a.token_digest, now)
            .await
            .expect("take"),
        None
    );
    fx.advance(ttl - 1);
    assert_eq!(
        fx.store.take_ticket(&t, fx.now()).await.expect("take"),
        Some(a.clone())
    );
    assert_eq!(
        fx.store.take_ticket(&t, fx.now()).await.expect("take"),
        None,
        "a ticket works once"
    );
    // Expired: refused at its deadline, and taken (gone) by the refusal too.
    let late = Token::generate().expect("ticket").digest();
    let now = fx.now();
    fx.store
        .create_ticket(&late, &a.token_digest, now, now + ttl)
        .await
        .expect("create_ticket");
    fx.advance(ttl);
    assert_eq!(
        fx.store.take_ticket(&late, fx.now()).await.expect("take"),
        None
    );
    // Creating more frees the expired ones and keeps the live ones.
    let fresh = Token::generate().expect("ticket").digest();
    let now = fx.now();
    fx.store
        .create_ticket(&fresh, &a.token_digest, now, now + ttl)
        .await
        .expect("create_ticket");
    assert_eq!(
        fx.store.take_ticket(&fresh, now).await.expect("take"),
        Some(a)
    );
}

/// A ticket of a session that ended opens nothing, also for the phone's next session.
pub async fn tickets_end_with_their_session(fx: Fixture) {
    let a = fx.phone(1);
    let first = register(&fx, &a).await;
    let t = Token::generate().expect("ticket").digest();
    let now = fx.now();
    fx.store
        .create_ticket(&t, &first.token_digest, now, now + 30_000)
        .await
        .expect("create_ticket");
    fx.advance(fx.lifetimes.presence_ms);
    let now = fx.now();
    assert!(fx.store.go_offline(&a, now, now).await.expect("go_offline"));
    fx.store
        .end_session(&a, now)
        .await
        .expect("end_session")
        .expect("due");
    let second = register(&fx, &a).await;
    assert_ne!(second.token_digest, first.token_digest);
    assert_eq!(
        fx.store.take_ticket(&t, fx.now()).await.expect("take"),
        None
    );
}

/// Of many concurrent takes of one ticket (as from several nodes), exactly one gets the session.
pub async fn concurrent_takes_of_a_ticket_one_wins(fx: Fixture) {
    let a = register(&fx, &fx.phone(1)).await;
    let t = Token::generate().expect("ticket").digest();
    let now = fx.now();
    fx.store
        .create_ticket(&t, &a.token_digest, now, now + 30_000)
        .await
        .expect("create_ticket");
    let mut takes = JoinSet::new();
    for _ in 0..8 {
        let (store, t) = (Arc::clone(&fx.store), t);
        takes.spawn(async move { store.take_ticket(&t, now).await.expect("take") });
    }
    let mut won = 0;
    while let Some(taken) = takes.join_next().await {
        if taken.expect("take task").is_some() {
            won += 1;
        }
    }
    assert_eq!(won, 1, "exactly one take gets the session");
}

/// `touch` extends the HTTP window and never shortens it; it brings an offline user back.
pub async fn touch_never_shortens_the_window(fx: Fixture) {
    let a = fx.phone(1);
    let s = register(&fx, &a).await;
    let t0 = fx.now();
    let p = fx.lifetimes.presence_ms;
    let http_until = |fx: &Fixture| {
        let store = fx.store.clone();
        let a = a.clone();
        async move {
            store
                .presence(&a)
                .await
                .expect("presence")
                .expect("some")
                .http_until
        }
    };

    fx.advance(10);
    let t = fx
        .store
        .touch(&s.token_digest, t0 + 2 * p)
        .await
        .expect("touch");
    assert!(t.is_some_and(|t| !t.came_online));
    assert_eq!(http_until(&fx).await, t0 + 2 * p);

    let t = fx
        .store
        .touch(&s.token_digest, t0 + p / 2)
        .await
        .expect("touch");
    assert!(t.is_some());
    assert_eq!(http_until(&fx).await, t0 + 2 * p, "touch never shortens");

    fx.clock.set(t0 + 2 * p);
    assert!(
        fx.store
            .go_offline(&a, fx.now(), fx.now() + fx.lifetimes.session_idle_ms)
            .await
            .expect("go_offline")
    );
    let t = fx
        .store
        .touch(&s.token_digest, fx.now() + p)
        .await
        .expect("touch")
        .expect("live");
    assert!(t.came_online, "touch brings an offline user back online");
    let presence = fx
        .store
        .presence(&a)
        .await
        .expect("presence")
        .expect("some");
    assert_eq!(presence.offline_since, None);
    assert!(presence.online_at(fx.now()));
}

/// `touch` moves `Timer::Presence` to the end of the (longest) window.
pub async fn touch_reschedules_presence_timer(fx: Fixture) {
    let a = fx.phone(1);
    let s = register(&fx, &a).await;
    let t0 = fx.now();
    let p = fx.lifetimes.presence_ms;
    fx.store
        .touch(&s.token_digest, t0 + 2 * p)
        .await
        .expect("touch");
    // An attempt to shorten leaves the timer where the window ends.
    fx.store
        .touch(&s.token_digest, t0 + p)
        .await
        .expect("touch");
    assert_due_at(&fx, t0 + 2 * p, &Timer::Presence(a)).await;
}

/// Sockets keep a user online and count; the first one after going offline brings them back.
pub async fn connections_hold_presence(fx: Fixture) {
    let a = fx.phone(1);
    register(&fx, &a).await;
    let node = NodeId::random();
    fx.advance(fx.lifetimes.presence_ms);
    let now = fx.now();
    assert!(
        fx.store
            .go_offline(&a, now, now + fx.lifetimes.session_idle_ms)
            .await
            .expect("go_offline")
    );
    let presence = fx
        .store
        .presence(&a)
        .await
        .expect("presence")
        .expect("some");
    assert_eq!(presence.offline_since, Some(now));
    assert!(!presence.online_at(now));

    assert!(
        fx.store
            .add_conn(&a, &conn(&node, 1))
            .await
            .expect("add_conn"),
        "the first socket of an offline user brings them online"
    );
    assert!(
        !fx.store
            .add_conn(&a, &conn(&node, 2))
            .await
            .expect("add_conn")
    );
    let presence = fx
        .store
        .presence(&a)
        .await
        .expect("presence")
        .expect("some");
    assert_eq!(presence.conns, 2);
    assert_eq!(presence.offline_since, None);
    assert!(presence.online_at(now));

    fx.store
        .remove_conn(&a, &conn(&node, 1), now, NO_CUT)
        .await
        .expect("remove_conn");
    assert_eq!(conns(&fx, &a).await, 1);
    assert!(
        !fx.store
            .go_offline(&a, now, now + fx.lifetimes.session_idle_ms)
            .await
            .expect("go_offline"),
        "a socket holds the user online"
    );
    // Unknown sockets are ignored.
    fx.store
        .remove_conn(&a, &conn(&node, 99), now, NO_CUT)
        .await
        .expect("remove_conn of an unknown socket");
    fx.store
        .remove_conn(&a, &conn(&NodeId::random(), 1), now, NO_CUT)
        .await
        .expect("remove_conn of an unknown node");
    assert_eq!(conns(&fx, &a).await, 1);
    fx.store
        .remove_conn(&a, &conn(&node, 2), now, NO_CUT)
        .await
        .expect("remove_conn");
    assert_eq!(conns(&fx, &a).await, 0);
    assert!(
        fx.store
            .go_offline(&a, now, now + fx.lifetimes.session_idle_ms)
            .await
            .expect("go_offline")
    );
}

/// Removing the last socket schedules `Timer::Presence` at `max(http_until, now)`.
pub async fn remove_conn_schedules_presence_timer(fx: Fixture) {
    let node = NodeId::random();
    // Window still open: the timer stays at its end, not at `now`.
    let a = fx.phone(1);
    register(&fx, &a).await;
    let a_until = fx.now() + fx.lifetimes.presence_ms;
    fx.store
        .add_conn(&a, &conn(&node, 1))
        .await
        .expect("add_conn");
    fx.advance(10);
    fx.store
        .remove_conn(&a, &conn(&node, 1), fx.now(), NO_CUT)
        .await
        .expect("remove_conn");
    assert_due_at(&fx, a_until, &Timer::Presence(a.clone())).await;

    // Window over: the timer moves to `now`.
    let b = fx.phone(2);
    register(&fx, &b).await;
    fx.store
        .add_conn(&b, &conn(&node, 2))
        .await
        .expect("add_conn");
    fx.advance(fx.lifetimes.presence_ms + 5_000);
    let now = fx.now();
    // Take (and finish) the timer of the window, as a tick would have.
    for due in lease(&fx, now - 1).await {
        fx.store.finish_timer(&due).await.expect("finish_timer");
    }
    fx.store
        .remove_conn(&b, &conn(&node, 2), now, NO_CUT)
        .await
        .expect("remove_conn");
    assert_due_at(&fx, now, &Timer::Presence(b)).await;
}

/// The last socket closing cuts the HTTP window to `grace_until` (never lengthens it) and moves
/// the presence timer there; a socket that is not the last changes nothing.
pub async fn last_socket_cuts_the_http_window_to_the_grace(fx: Fixture) {
    let node = NodeId::random();
    let a = fx.phone(1);
    register(&fx, &a).await;
    let window_end = fx.now() + fx.lifetimes.presence_ms;
    for id in [1, 2] {
        fx.store
            .add_conn(&a, &conn(&node, id))
            .await
            .expect("add_conn");
    }
    fx.advance(10);
    let now = fx.now();
    let grace = now + 5_000;
    fx.store
        .remove_conn(&a, &conn(&node, 1), now, grace)
        .await
        .expect("remove_conn");
    let p = fx
        .store
        .presence(&a)
        .await
        .expect("presence")
        .expect("some");
    assert_eq!(p.http_until, window_end, "not the last socket: no cut");
    fx.store
        .remove_conn(&a, &conn(&node, 2), now, grace)
        .await
        .expect("remove_conn");
    let p = fx
        .store
        .presence(&a)
        .await
        .expect("presence")
        .expect("some");
    assert_eq!(p.http_until, grace, "the last socket: cut to the grace");
    assert!(p.online_at(grace - 1) && !p.online_at(grace));
    assert_due_at(&fx, grace, &Timer::Presence(a.clone())).await;

    // A grace later than the window does not lengthen it.
    let b = fx.phone(2);
    register(&fx, &b).await;
    let b_end = fx.now() + fx.lifetimes.presence_ms;
    fx.store
        .add_conn(&b, &conn(&node, 3))
        .await
        .expect("add_conn");
    fx.store
        .remove_conn(&b, &conn(&node, 3), fx.now(), b_end + 60_000)
        .await
        .expect("remove_conn");
    let p = fx
        .store
        .presence(&b)
        .await
        .expect("presence")
        .expect("some");
    assert_eq!(p.http_until, b_end);
}

/// A dead node's users left without a socket get the same cut, from the reap.
pub async fn a_dead_node_cuts_its_users_windows_to_the_grace(fx: Fixture) {
    let dead = NodeId::random();
    let a = fx.phone(1);
    register(&fx, &a).await;
    fx.store
        .heartbeat(&dead, fx.now() + 1_000)
        .await
        .expect("heartbeat");
    fx.store
        .add_conn(&a, &conn(&dead, 1))
        .await
        .expect("add_conn");
    fx.advance(2_000);
    let now = fx.now();
    let orphans = fx
        .store
        .reap_dead_nodes(now, now + 5_000)
        .await
        .expect("reap");
    assert_eq!(orphans, vec![a.clone()]);
    let p = fx
        .store
        .presence(&a)
        .await
        .expect("presence")
        .expect("some");
    assert_eq!((p.conns, p.http_until), (0, now + 5_000));
}

/// `names` answers the names of live sessions that have one, and nothing for the others.
pub async fn names_of_live_sessions(fx: Fixture) {
    let [a, b, c] = [fx.phone(1), fx.phone(2), fx.phone(3)];
    let named = register(&fx, &a).await;
    let unnamed = Session {
        name: None,
        ..new_session(&fx, &b)
    };
    fx.store
        .create_session(unnamed, None, fx.now() + fx.lifetimes.presence_ms)
        .await
        .expect("create_session");
    assert_eq!(
        fx.store
            .names(&[a.clone(), b.clone(), c.clone()])
            .await
            .expect("names"),
        Names::from([(a.clone(), named.name.clone().expect("a name"))])
    );
    assert_eq!(fx.store.names(&[]).await.expect("names"), Names::new());
    // An ended session's name goes with it.
    fx.advance(fx.lifetimes.presence_ms);
    let now = fx.now();
    assert!(fx.store.go_offline(&a, now, now).await.expect("go_offline"));
    fx.store
        .end_session(&a, now)
        .await
        .expect("end_session")
        .expect("due");
    assert_eq!(fx.store.names(&[a]).await.expect("names"), Names::new());
}

/// `go_offline` acts only with no socket, the window over, and the user not offline already.
pub async fn go_offline_only_when_nothing_holds_the_user(fx: Fixture) {
    let a = fx.phone(1);
    register(&fx, &a).await;
    let until = fx.now() + fx.lifetimes.presence_ms;
    let end = |at: Millis| at + fx.lifetimes.session_idle_ms;
    assert!(
        !fx.store
            .go_offline(&a, until - 1, end(until - 1))
            .await
            .expect("go_offline"),
        "the HTTP window is still open"
    );
    let node = NodeId::random();
    fx.store
        .add_conn(&a, &conn(&node, 1))
        .await
        .expect("add_conn");
    fx.clock.set(until);
    assert!(
        !fx.store
            .go_offline(&a, until, end(until))
            .await
            .expect("go_offline"),
        "a socket holds the user online"
    );
    fx.store
        .remove_conn(&a, &conn(&node, 1), until, NO_CUT)
        .await
        .expect("remove_conn");
    assert!(
        fx.store
            .go_offline(&a, until, end(until))
            .await
            .expect("go_offline"),
        "offline once the window ends (at http_until exactly)"
    );
    assert!(
        !fx.store
            .go_offline(&a, until + 1, end(until + 1))
            .await
            .expect("go_offline"),
        "already offline"
    );
    let presence = fx
        .store
        .presence(&a)
        .await
        .expect("presence")
        .expect("some");
    assert_eq!(presence.offline_since, Some(until));
    assert!(
        !fx.store
            .go_offline(&fx.phone(2), until, end(until))
            .await
            .expect("go_offline of an unknown user")
    );
}

/// Going offline schedules `Timer::SessionEnd` at the given time.
pub async fn go_offline_schedules_session_end(fx: Fixture) {
    let a = fx.phone(1);
    register(&fx, &a).await;
    fx.advance(fx.lifetimes.presence_ms);
    let now = fx.now();
    let end_at = now + fx.lifetimes.session_idle_ms;
    assert!(
        fx.store
            .go_offline(&a, now, end_at)
            .await
            .expect("go_offline")
    );
    assert_due_at(&fx, end_at, &Timer::SessionEnd(a)).await;
}

async fn walk_online(fx: &Fixture, limit: usize) -> Vec<Phone> {
    let mut all = Vec::new();
    let mut cursor = None;
    for _ in 0..1000 {
        let page = fx
            .store
            .online_page(cursor, limit, fx.now())
            .await
            .expect("online_page");
        assert!(page.phones.len() <= limit, "a page holds at most `limit`");
        all.extend(page.phones);
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return all,
        }
    }
    panic!("the online walk did not end within 1000 pages");
}

/// Walking `online_page` with a small limit returns everyone online, and nobody offline.
pub async fn online_page_walks_everyone(fx: Fixture) {
    let early = users(&fx, 100, 4).await;
    let (gone1, gone2, lapsed, on_socket) = (&early[0], &early[1], &early[2], &early[3]);
    let node = NodeId::random();
    fx.store
        .add_conn(on_socket, &conn(&node, 1))
        .await
        .expect("add_conn");
    fx.advance(fx.lifetimes.presence_ms);
    let now = fx.now();
    for p in [gone1, gone2] {
        assert!(
            fx.store
                .go_offline(p, now, now + fx.lifetimes.session_idle_ms)
                .await
                .expect("go_offline")
        );
    }
    let online = users(&fx, 1, 7).await;
    let mut expected = set(&online);
    expected.insert(on_socket.clone());

    for limit in [1, 2, 3, 1000] {
        let walked: BTreeSet<Phone> = walk_online(&fx, limit).await.into_iter().collect();
        assert!(
            walked.is_superset(&expected),
            "limit {limit}: missing {:?}",
            expected.difference(&walked).collect::<Vec<_>>()
        );
        for p in [gone1, gone2, lapsed] {
            assert!(
                !walked.contains(p),
                "limit {limit}: {p} is offline but listed"
            );
        }
    }
}

/// A cursor this store did not give is `BadRequest`.
pub async fn online_page_rejects_foreign_cursor(fx: Fixture) {
    users(&fx, 1, 3).await;
    for cursor in ["nonsense", "", "0", "%%%"] {
        let got = fx
            .store
            .online_page(Some(cursor.into()), 10, fx.now())
            .await;
        assert!(
            matches!(got, Err(Error::BadRequest(_))),
            "cursor {cursor:?} gave {got:?}"
        );
    }
}

// --------------------------------------------------------------------------------- nodes

/// A node whose heartbeat ran out is claimed once: its sockets are forgotten and the users left
/// with none are returned, with `Timer::Presence` at `max(http_until, now)`.
pub async fn reap_claims_each_dead_node_once(fx: Fixture) {
    let [a, b, c] = [fx.phone(1), fx.phone(2), fx.phone(3)];
    for p in [&a, &b, &c] {
        register(&fx, p).await;
    }
    let (n1, n2) = (NodeId::random(), NodeId::random());
    let ttl = fx.lifetimes.node_ttl_ms;
    for n in [&n1, &n2] {
        fx.store
            .heartbeat(n, fx.now() + ttl)
            .await
            .expect("heartbeat");
    }
    for (p, k) in [
        (&a, conn(&n1, 1)),
        (&b, conn(&n1, 2)),
        (&b, conn(&n2, 1)),
        (&c, conn(&n2, 2)),
    ] {
        fx.store.add_conn(p, &k).await.expect("add_conn");
    }
    assert_eq!(
        fx.store
            .reap_dead_nodes(fx.now(), NO_CUT)
            .await
            .expect("reap"),
        Vec::<Phone>::new(),
        "nobody is dead yet"
    );

    // Past both the node TTL and the users' windows; n2 keeps beating.
    fx.advance(ttl.max(fx.lifetimes.presence_ms) + 1);
    let now = fx.now();
    fx.store.heartbeat(&n2, now + ttl).await.expect("heartbeat");
    let orphans = fx.store.reap_dead_nodes(now, NO_CUT).await.expect("reap");
    assert_eq!(orphans, vec![a.clone()], "only A lost their last socket");
    assert_eq!(conns(&fx, &a).await, 0);
    assert_eq!(conns(&fx, &b).await, 1);
    assert_eq!(conns(&fx, &c).await, 1);
    assert_eq!(
        fx.store
            .reap_dead_nodes(now + 1, NO_CUT)
            .await
            .expect("reap"),
        Vec::<Phone>::new(),
        "a dead node is claimed once"
    );
    assert_due_at(&fx, now, &Timer::Presence(a)).await;
}

/// Concurrent reaps share out the dead nodes: each orphan is returned exactly once.
pub async fn concurrent_reaps_claim_each_node_once(fx: Fixture) {
    let phones = users(&fx, 1, 6).await;
    let ttl = fx.lifetimes.node_ttl_ms;
    for (i, p) in phones.iter().enumerate() {
        let node = NodeId::random();
        fx.store
            .heartbeat(&node, fx.now() + ttl)
            .await
            .expect("heartbeat");
        fx.store
            .add_conn(p, &conn(&node, u64::try_from(i).unwrap_or(0)))
            .await
            .expect("add_conn");
    }
    fx.advance(ttl + 1);
    let now = fx.now();
    let mut tasks = JoinSet::new();
    for _ in 0..8 {
        let store = fx.store.clone();
        tasks.spawn(async move { store.reap_dead_nodes(now, NO_CUT).await });
    }
    let mut orphans = Vec::new();
    for got in tasks.join_all().await {
        orphans.extend(got.expect("reap"));
    }
    orphans.sort();
    let mut expected = phones.clone();
    expected.sort();
    assert_eq!(orphans, expected, "every orphan exactly once");
}

/// `remove_node` forgets a node and its sockets at once, like a reap.
pub async fn remove_node_forgets_its_sockets(fx: Fixture) {
    let [a, b] = [fx.phone(1), fx.phone(2)];
    for p in [&a, &b] {
        register(&fx, p).await;
    }
    let (n1, n2) = (NodeId::random(), NodeId::random());
    let ttl = fx.lifetimes.node_ttl_ms;
    fx.store
        .heartbeat(&n1, fx.now() + ttl)
        .await
        .expect("heartbeat");
    fx.store
        .heartbeat(&n2, fx.now() + 10 * ttl)
        .await
        .expect("heartbeat");
    fx.store
        .add_conn(&a, &conn(&n1, 1))
        .await
        .expect("add_conn");
    fx.store
        .add_conn(&b, &conn(&n1, 2))
        .await
        .expect("add_conn");
    fx.store
        .add_conn(&b, &conn(&n2, 1))
        .await
        .expect("add_conn");
    let removed = fx
        .store
        .remove_node(&n1, fx.now(), NO_CUT)
        .await
        .expect("remove_node");
    assert_eq!(removed, vec![a.clone()]);
    assert_eq!(conns(&fx, &a).await, 0);
    assert_eq!(conns(&fx, &b).await, 1);
    assert_eq!(
        fx.store
            .remove_node(&n1, fx.now(), NO_CUT)
            .await
            .expect("remove_node"),
        Vec::<Phone>::new()
    );
    fx.advance(ttl + 1);
    assert_eq!(
        fx.store
            .reap_dead_nodes(fx.now(), NO_CUT)
            .await
            .expect("reap"),
        Vec::<Phone>::new(),
        "a removed node is not reaped again"
    );
}

// ------------------------------------------------------------------------------ requests

/// A request is pending once: the same again is `AlreadyPending`; both sides list it.
pub async fn send_request_then_already_pending(fx: Fixture) {
    let [a, b] = [fx.phone(1), fx.phone(2)];
    for p in [&a, &b] {
        register(&fx, p).await;
    }
    let sent = fx
        .store
        .send_request(request(&fx, &a, &b), new_room(&fx))
        .await
        .expect("send_request");
    assert_eq!(sent, SendOutcome::Sent);
    fx.advance(10);
    let again = fx
        .store
        .send_request(request(&fx, &a, &b), new_room(&fx))
        .await
        .expect("send_request");
    assert_eq!(again, SendOutcome::AlreadyPending);
    let ra = fx.store.requests(&a, fx.now()).await.expect("requests");
    assert_eq!((ra.incoming, ra.sent), (vec![], vec![b.clone()]));
    let rb = fx.store.requests(&b, fx.now()).await.expect("requests");
    assert_eq!((rb.incoming, rb.sent), (vec![a.clone()], vec![]));
    assert!(fx.store.rooms_of(&a).await.expect("rooms_of").is_empty());
}

/// Sending schedules `Timer::RequestExpiry` at the request's `expires_at`.
pub async fn send_request_schedules_expiry(fx: Fixture) {
    let [a, b] = [fx.phone(1), fx.phone(2)];
    for p in [&a, &b] {
        register(&fx, p).await;
    }
    let r = request(&fx, &a, &b);
    let expires_at = r.expires_at;
    fx.store
        .send_request(r, new_room(&fx))
        .await
        .expect("send_request");
    assert_due_at(&fx, expires_at, &Timer::RequestExpiry { from: a, to: b }).await;
}

/// A request crossing a pending one accepts it: one room, members `[to, from]`.
pub async fn crossed_send_request_accepts(fx: Fixture) {
    let [a, b] = [fx.phone(1), fx.phone(2)];
    for p in [&a, &b] {
        register(&fx, p).await;
    }
    fx.store
        .send_request(request(&fx, &a, &b), new_room(&fx))
        .await
        .expect("send_request");
    fx.advance(10);
    let nr = new_room(&fx);
    let got = fx
        .store
        .send_request(request(&fx, &b, &a), nr.clone())
        .await
        .expect("send_request");
    let expected = Room {
        id: nr.id,
        members: [a.clone(), b.clone()],
        created_at: nr.created_at,
        expires_at: nr.expires_at,
    };
    assert_eq!(got, SendOutcome::Accepted(expected.clone()));
    assert_eq!(
        fx.store.room(&nr.id).await.expect("room"),
        Some(expected.clone())
    );
    assert_eq!(
        fx.store.rooms_of(&a).await.expect("rooms_of"),
        vec![expected.clone()]
    );
    assert_eq!(
        fx.store.rooms_of(&b).await.expect("rooms_of"),
        vec![expected]
    );
    for p in [&a, &b] {
        let r = fx.store.requests(p, fx.now()).await.expect("requests");
        assert!(r.incoming.is_empty() && r.sent.is_empty(), "{p}: {r:?}");
    }
}

/// Two users who share a room cannot send each other requests: `RoomExists` with its id.
pub async fn send_request_to_room_partner_is_room_exists(fx: Fixture) {
    let [a, b] = [fx.phone(1), fx.phone(2)];
    for p in [&a, &b] {
        register(&fx, p).await;
    }
    let room = room_between(&fx, &a, &b).await;
    for (from, to) in [(&a, &b), (&b, &a)] {
        let got = fx
            .store
            .send_request(request(&fx, from, to), new_room(&fx))
            .await
            .expect("send_request");
        assert_eq!(got, SendOutcome::RoomExists(room.id));
    }
    let r = fx.store.requests(&b, fx.now()).await.expect("requests");
    assert!(r.incoming.is_empty() && r.sent.is_empty());
}

/// A request to a phone without a session, never registered or ended, is `UserNotFound` and
/// stores nothing: the session that phone gets next inherits no request.
pub async fn send_request_to_phone_without_session_is_user_not_found(fx: Fixture) {
    let [a, b, c] = [fx.phone(1), fx.phone(2), fx.phone(3)];
    register(&fx, &a).await;
    let r = request(&fx, &a, &b);
    let expires_at = r.expires_at;
    assert_eq!(
        fx.store.send_request(r, new_room(&fx)).await,
        Err(Error::UserNotFound)
    );
    // C had a session that ended (as when it ends between the caller's check and the send).
    let c_session = new_session(&fx, &c);
    fx.store
        .create_session(c_session, None, fx.now() + 1)
        .await
        .expect("create_session");
    fx.advance(1);
    let now = fx.now();
    assert!(
        fx.store
            .go_offline(&c, now, now + fx.lifetimes.session_idle_ms)
            .await
            .expect("go_offline")
    );
    fx.store
        .end_session(&c, now)
        .await
        .expect("end_session")
        .expect("due");
    assert_eq!(
        fx.store
            .send_request(request(&fx, &a, &c), new_room(&fx))
            .await,
        Err(Error::UserNotFound)
    );

    let ra = fx.store.requests(&a, fx.now()).await.expect("requests");
    assert!(ra.incoming.is_empty() && ra.sent.is_empty(), "{ra:?}");
    assert!(
        !is_due(
            &fx,
            expires_at,
            &Timer::RequestExpiry {
                from: a.clone(),
                to: b.clone()
            }
        )
        .await,
        "no expiry timer for a request never stored"
    );
    for p in [&b, &c] {
        register(&fx, p).await;
        let r = fx.store.requests(p, fx.now()).await.expect("requests");
        assert!(r.incoming.is_empty() && r.sent.is_empty(), "{p}: {r:?}");
        assert!(fx.store.rooms_of(p).await.expect("rooms_of").is_empty());
    }
    // With a session, the same request is sent.
    assert_eq!(
        fx.store
            .send_request(request(&fx, &a, &b), new_room(&fx))
            .await
            .expect("send_request"),
        SendOutcome::Sent
    );
}

/// A sent request is published to its target as `ChatRequest`, and a room made (by an accept,
/// or by a crossed request) to both members as `RequestAccepted` naming the other; refused and
/// repeated ones publish nothing.
pub async fn requests_and_accepts_are_published(fx: Fixture) {
    let [a, b, c] = [fx.phone(1), fx.phone(2), fx.phone(3)];
    for p in [&a, &b, &c] {
        register(&fx, p).await;
    }
    for p in [&a, &b, &c] {
        fx.bus
            .subscribe(Audience::User(p.clone()))
            .await
            .expect("subscribe");
    }
    // The names the caller gives go out with the events (only those of the two users).
    let named = |fx: &Fixture| NewRoom {
        names: Names::from([
            (a.clone(), "Asha".to_owned()),
            (c.clone(), "Cyd".to_owned()),
        ]),
        ..new_room(fx)
    };
    let ab = request(&fx, &a, &b);
    let created_at = ab.created_at;
    assert_eq!(
        fx.store.send_request(ab, named(&fx)).await,
        Ok(SendOutcome::Sent)
    );
    assert_eq!(
        fx.store
            .send_request(request(&fx, &a, &b), new_room(&fx))
            .await,
        Ok(SendOutcome::AlreadyPending)
    );
    let first = fx.wait_for_events(&Audience::User(b.clone()), 1).await;
    assert_eq!(
        first,
        vec![Event::ChatRequest {
            from: a.clone(),
            to: b.clone(),
            created_at,
            names: Names::from([(a.clone(), "Asha".to_owned())]),
        }]
    );
    let made = named(&fx);
    let room_ab = fx
        .store
        .accept_request(&a, &b, made, fx.now())
        .await
        .expect("accept")
        .expect("pending");
    let accepted = |chat_id, from_user: &Phone, to_user: &Phone| Event::RequestAccepted {
        chat_id,
        from_user: from_user.clone(),
        to_user: to_user.clone(),
        names: [from_user, to_user]
            .into_iter()
            .filter_map(|p| {
                let name = if *p == a {
                    "Asha"
                } else if *p == c {
                    "Cyd"
                } else {
                    return None;
                };
                Some((p.clone(), name.to_owned()))
            })
            .collect(),
    };
    assert_eq!(
        fx.wait_for_events(&Audience::User(a.clone()), 1).await,
        vec![accepted(room_ab.id, &b, &a)]
    );
    assert_eq!(
        fx.wait_for_events(&Audience::User(b.clone()), 2).await[1],
        accepted(room_ab.id, &a, &b)
    );
    // Crossed: C asks A, then A asks C, which makes the room at once.
    fx.store
        .send_request(request(&fx, &c, &a), new_room(&fx))
        .await
        .expect("send_request");
    let crossed = named(&fx);
    let crossed_id = crossed.id;
    assert!(matches!(
        fx.store.send_request(request(&fx, &a, &c), crossed).await,
        Ok(SendOutcome::Accepted(r)) if r.id == crossed_id
    ));
    let to_a = fx.wait_for_events(&Audience::User(a.clone()), 3).await;
    assert!(
        matches!(&to_a[1], Event::ChatRequest { from, .. } if from == &c),
        "{to_a:?}"
    );
    assert_eq!(to_a[2], accepted(crossed_id, &c, &a));
    assert_eq!(
        fx.wait_for_events(&Audience::User(c.clone()), 1).await,
        vec![accepted(crossed_id, &a, &c)]
    );
    for p in [&a, &b, &c] {
        fx.bus
            .unsubscribe(Audience::User(p.clone()))
            .await
            .expect("unsubscribe");
    }
}

/// A request to a user with a session but offline (no socket, HTTP window over) is
/// `UserNotFound` and stores nothing; a socket, or a new HTTP window, makes them reachable.
pub async fn send_request_to_offline_user_is_user_not_found(fx: Fixture) {
    let [a, b] = [fx.phone(1), fx.phone(2)];
    register(&fx, &a).await;
    let b_session = register(&fx, &b).await;
    fx.advance(fx.lifetimes.presence_ms);
    // A's own window is over too; only the target's presence counts.
    assert_eq!(
        fx.store
            .send_request(request(&fx, &a, &b), new_room(&fx))
            .await,
        Err(Error::UserNotFound)
    );
    let r = fx.store.requests(&b, fx.now()).await.expect("requests");
    assert!(r.incoming.is_empty(), "nothing stored: {r:?}");
    let conn = conn(&NodeId::random(), 1);
    fx.store.add_conn(&b, &conn).await.expect("add_conn");
    assert_eq!(
        fx.store
            .send_request(request(&fx, &a, &b), new_room(&fx))
            .await,
        Ok(SendOutcome::Sent),
        "a socket makes the user reachable"
    );
    fx.store
        .remove_conn(&b, &conn, fx.now(), NO_CUT)
        .await
        .expect("remove_conn");
    fx.store
        .touch(&b_session.token_digest, fx.now() + fx.lifetimes.presence_ms)
        .await
        .expect("touch")
        .expect("live session");
    assert_eq!(
        fx.store
            .send_request(request(&fx, &b, &a), new_room(&fx))
            .await,
        Err(Error::UserNotFound),
        "A is still offline"
    );
}

/// A request past its `expires_at` is absent for every operation, even before its timer ran.
pub async fn expired_request_counts_as_absent(fx: Fixture) {
    let [a, b, c] = [fx.phone(1), fx.phone(2), fx.phone(3)];
    let mut sessions = Vec::new();
    for p in [&a, &b, &c] {
        sessions.push(register(&fx, p).await);
    }
    fx.store
        .send_request(request(&fx, &a, &b), new_room(&fx))
        .await
        .expect("send_request");
    fx.store
        .send_request(request(&fx, &c, &a), new_room(&fx))
        .await
        .expect("send_request");
    fx.advance(fx.lifetimes.request_ttl_ms);
    let now = fx.now();
    for p in [&a, &b, &c] {
        let r = fx.store.requests(p, now).await.expect("requests");
        assert!(r.incoming.is_empty() && r.sent.is_empty(), "{p}: {r:?}");
    }
    assert_eq!(
        fx.store
            .accept_request(&a, &b, new_room(&fx), now)
            .await
            .expect("accept"),
        None
    );
    assert!(
        !fx.store
            .remove_request(&c, &a, now)
            .await
            .expect("remove_request")
    );
    // Sending again is a new request, not a duplicate; crossing an expired one is not an accept.
    // (The targets come back online first: their HTTP windows ended with the requests.)
    for s in &sessions[1..] {
        fx.store
            .touch(&s.token_digest, now + fx.lifetimes.presence_ms)
            .await
            .expect("touch")
            .expect("live session");
    }
    assert_eq!(
        fx.store
            .send_request(request(&fx, &a, &b), new_room(&fx))
            .await
            .expect("send_request"),
        SendOutcome::Sent
    );
    let c_to_a_expired = fx
        .store
        .send_request(request(&fx, &a, &c), new_room(&fx))
        .await
        .expect("send_request");
    assert_eq!(c_to_a_expired, SendOutcome::Sent);
    assert!(fx.store.rooms_of(&a).await.expect("rooms_of").is_empty());
}

/// Accepting makes the room `[from, to]` and consumes the request: a second accept is `None`.
pub async fn accept_request_makes_room_once(fx: Fixture) {
    let [a, b, c] = [fx.phone(1), fx.phone(2), fx.phone(3)];
    for p in [&a, &b, &c] {
        register(&fx, p).await;
    }
    fx.store
        .send_request(request(&fx, &a, &b), new_room(&fx))
        .await
        .expect("send_request");
    fx.advance(10);
    let nr = new_room(&fx);
    let room = fx
        .store
        .accept_request(&a, &b, nr.clone(), fx.now())
        .await
        .expect("accept")
        .expect("pending");
    assert_eq!(
        room,
        Room {
            id: nr.id,
            members: [a.clone(), b.clone()],
            created_at: nr.created_at,
            expires_at: nr.expires_at,
        }
    );
    for (from, to) in [(&a, &b), (&b, &a), (&c, &a)] {
        assert_eq!(
            fx.store
                .accept_request(from, to, new_room(&fx), fx.now())
                .await
                .expect("accept"),
            None,
            "{from} -> {to}"
        );
    }
    assert_eq!(
        fx.store.rooms_of(&a).await.expect("rooms_of"),
        vec![room.clone()]
    );
    assert_eq!(fx.store.rooms_of(&b).await.expect("rooms_of"), vec![room]);
    let r = fx.store.requests(&b, fx.now()).await.expect("requests");
    assert!(r.incoming.is_empty() && r.sent.is_empty());
}

/// `remove_request` says whether the request was pending, and removes it.
pub async fn remove_request_reports_pending(fx: Fixture) {
    let [a, b] = [fx.phone(1), fx.phone(2)];
    for p in [&a, &b] {
        register(&fx, p).await;
    }
    assert!(
        !fx.store
            .remove_request(&a, &b, fx.now())
            .await
            .expect("remove")
    );
    fx.store
        .send_request(request(&fx, &a, &b), new_room(&fx))
        .await
        .expect("send_request");
    assert!(
        !fx.store
            .remove_request(&b, &a, fx.now())
            .await
            .expect("remove"),
        "the other direction is not pending"
    );
    assert!(
        fx.store
            .remove_request(&a, &b, fx.now())
            .await
            .expect("remove")
    );
    assert!(
        !fx.store
            .remove_request(&a, &b, fx.now())
            .await
            .expect("remove")
    );
    let r = fx.store.requests(&b, fx.now()).await.expect("requests");
    assert!(r.incoming.is_empty());
    assert_eq!(
        fx.store
            .send_request(request(&fx, &a, &b), new_room(&fx))
            .await
            .expect("send_request"),
        SendOutcome::Sent
    );
}

/// `requests` lists incoming and sent requests separately.
pub async fn requests_lists_both_directions(fx: Fixture) {
    let p = users(&fx, 1, 5).await;
    let (a, b, c, d, e) = (&p[0], &p[1], &p[2], &p[3], &p[4]);
    for (from, to) in [(a, b), (a, c), (d, a), (e, b)] {
        fx.store
            .send_request(request(&fx, from, to), new_room(&fx))
            .await
            .expect("send_request");
    }
    let r = fx.store.requests(a, fx.now()).await.expect("requests");
    assert_eq!(r.incoming, vec![d.clone()]);
    assert_eq!(set(&r.sent), set(&[b.clone(), c.clone()]));
    let r = fx.store.requests(b, fx.now()).await.expect("requests");
    assert_eq!(set(&r.incoming), set(&[a.clone(), e.clone()]));
    assert!(r.sent.is_empty());
}

// ------------------------------------------------------------------------- rooms, history

/// `room`, `rooms_of` and `delete_room`: a deleted room is gone with its history.
pub async fn room_lookup_and_delete(fx: Fixture) {
    let [a, b, c] = [fx.phone(1), fx.phone(2), fx.phone(3)];
    for p in [&a, &b, &c] {
        register(&fx, p).await;
    }
    let ab = room_between(&fx, &a, &b).await;
    let ca = room_between(&fx, &c, &a).await;
    assert_eq!(fx.store.room(&ab.id).await.expect("room"), Some(ab.clone()));
    assert_eq!(
        room_ids(&fx.store.rooms_of(&a).await.expect("rooms_of")).len(),
        2
    );
    append_new(&fx, &ab, message(&fx, &a, "hello", None)).await;

    assert_eq!(
        fx.store.delete_room(&ab.id).await.expect("delete"),
        Some(ab.clone())
    );
    assert_eq!(fx.store.delete_room(&ab.id).await.expect("delete"), None);
    assert_eq!(fx.store.room(&ab.id).await.expect("room"), None);
    assert_eq!(fx.store.rooms_of(&a).await.expect("rooms_of"), vec![ca]);
    assert!(fx.store.rooms_of(&b).await.expect("rooms_of").is_empty());
    assert_eq!(
        fx.store.history(&ab.id, None, 10).await,
        Err(Error::RoomNotFound)
    );
    assert_eq!(
        fx.store
            .append_message(&ab.id, message(&fx, &a, "late", None), 100)
            .await,
        Err(Error::RoomNotFound)
    );
    assert_eq!(
        fx.store.room(&RoomId::generate()).await.expect("room"),
        None
    );
    assert!(
        fx.store
            .rooms_of(&fx.phone(9))
            .await
            .expect("rooms_of")
            .is_empty()
    );
    // The pair is free again.
    assert_eq!(
        fx.store
            .send_request(request(&fx, &a, &b), new_room(&fx))
            .await
            .expect("send_request"),
        SendOutcome::Sent
    );
}

/// An accept schedules `Timer::RoomExpiry` at the room's `expires_at`.
pub async fn accept_schedules_room_expiry(fx: Fixture) {
    let [a, b] = [fx.phone(1), fx.phone(2)];
    for p in [&a, &b] {
        register(&fx, p).await;
    }
    let room = room_between(&fx, &a, &b).await;
    assert_due_at(&fx, room.expires_at, &Timer::RoomExpiry(room.id)).await;
}

/// Appending needs a live room (`RoomNotFound`) and a member sender (`Forbidden`).
pub async fn append_message_needs_room_and_membership(fx: Fixture) {
    let [a, b, c] = [fx.phone(1), fx.phone(2), fx.phone(3)];
    for p in [&a, &b, &c] {
        register(&fx, p).await;
    }
    let room = room_between(&fx, &a, &b).await;
    assert_eq!(
        fx.store
            .append_message(&RoomId::generate(), message(&fx, &a, "x", None), 100)
            .await,
        Err(Error::RoomNotFound)
    );
    let got = fx
        .store
        .append_message(&room.id, message(&fx, &c, "x", None), 100)
        .await;
    assert!(matches!(got, Err(Error::Forbidden(_))), "{got:?}");
    let page = fx.store.history(&room.id, None, 10).await.expect("history");
    assert!(page.messages.is_empty(), "a refused message is not stored");
}

/// Ids strictly increase in append order, whatever the timestamps do.
pub async fn append_message_ids_strictly_increase(fx: Fixture) {
    let [a, b] = [fx.phone(1), fx.phone(2)];
    for p in [&a, &b] {
        register(&fx, p).await;
    }
    let room = room_between(&fx, &a, &b).await;
    let t = fx.now();
    let mut stored = Vec::new();
    for (i, ts) in [t, t, t - 5, t + 10, t + 10, t + 3, t + 11]
        .into_iter()
        .enumerate()
    {
        let sender = if i % 2 == 0 { &a } else { &b };
        let m = NewMessage {
            sender: sender.clone(),
            message: format!("m{i}"),
            timestamp: ts,
            client_id: None,
        };
        let got = append_new(&fx, &room, m).await;
        assert_eq!(got.timestamp, ts, "the timestamp is kept as given");
        assert_eq!(got.message, format!("m{i}"));
        assert_eq!(&got.sender, sender);
        assert_eq!(got.room, room.id);
        stored.push(got);
    }
    for w in stored.windows(2) {
        assert!(w[0].id < w[1].id, "{} then {}", w[0].id, w[1].id);
    }
    let page = fx
        .store
        .history(&room.id, None, 100)
        .await
        .expect("history");
    assert_eq!(page.messages, stored);
}

/// The same `client_id` from the same sender is stored once; the repeat returns the first.
pub async fn append_message_dedupes_client_id(fx: Fixture) {
    let [a, b] = [fx.phone(1), fx.phone(2)];
    for p in [&a, &b] {
        register(&fx, p).await;
    }
    let room = room_between(&fx, &a, &b).await;
    let first = append_new(&fx, &room, message(&fx, &a, "one", Some("x"))).await;
    assert_eq!(first.client_id.as_deref(), Some("x"));
    fx.advance(5);
    let again = append(&fx, &room, message(&fx, &a, "two", Some("x"))).await;
    assert_eq!(again, Appended::Duplicate(first.clone()));
    let other_sender = append_new(&fx, &room, message(&fx, &b, "b", Some("x"))).await;
    let other_id = append_new(&fx, &room, message(&fx, &a, "y", Some("y"))).await;
    let plain1 = append_new(&fx, &room, message(&fx, &a, "same", None)).await;
    let plain2 = append_new(&fx, &room, message(&fx, &a, "same", None)).await;
    let page = fx
        .store
        .history(&room.id, None, 100)
        .await
        .expect("history");
    assert_eq!(
        page.messages,
        vec![first, other_sender, other_id, plain1, plain2]
    );
}

/// Each new message is published to its room as `ReceiveMessage`, in history order; a
/// duplicate is not published again.
pub async fn append_message_publishes_in_order(fx: Fixture) {
    let [a, b] = [fx.phone(1), fx.phone(2)];
    for p in [&a, &b] {
        register(&fx, p).await;
    }
    let room = room_between(&fx, &a, &b).await;
    let audience = Audience::Room(room.id);
    fx.bus.subscribe(audience.clone()).await.expect("subscribe");
    let mut stored = Vec::new();
    for i in 0..5 {
        let sender = if i % 2 == 0 { &a } else { &b };
        let cid = format!("c{i}");
        stored.push(
            append_new(
                &fx,
                &room,
                message(&fx, sender, &format!("m{i}"), Some(&cid)),
            )
            .await,
        );
    }
    let dup = append(&fx, &room, message(&fx, &a, "again", Some("c0"))).await;
    assert!(matches!(dup, Appended::Duplicate(_)));
    stored.push(append_new(&fx, &room, message(&fx, &b, "last", None)).await);

    let got = fx.wait_for_events(&audience, stored.len()).await;
    let expected: Vec<Event> = stored.iter().cloned().map(Event::ReceiveMessage).collect();
    assert_eq!(got, expected, "published once each, in history order");
    let history = fx
        .store
        .history(&room.id, None, 100)
        .await
        .expect("history");
    assert_eq!(history.messages, stored);
    fx.bus.unsubscribe(audience).await.expect("unsubscribe");
}

/// A batch is appended in order, each item answered in its position as `append_message`
/// would answer it alone: a refused item (no room, not a member) leaves the others standing, a
/// `client_id` repeated within the batch is a duplicate of the earlier item, and the new ones
/// are published in history order.
pub async fn append_messages_answers_each_in_order(fx: Fixture) {
    let [a, b, c] = [fx.phone(1), fx.phone(2), fx.phone(3)];
    for p in [&a, &b, &c] {
        register(&fx, p).await;
    }
    let room = room_between(&fx, &a, &b).await;
    let other = room_between(&fx, &a, &c).await;
    let audience = Audience::Room(room.id);
    fx.bus.subscribe(audience.clone()).await.expect("subscribe");
    let batch = vec![
        (room.id, message(&fx, &a, "m0", Some("k"))),
        (RoomId::generate(), message(&fx, &a, "nowhere", None)),
        (room.id, message(&fx, &b, "m1", None)),
        (room.id, message(&fx, &c, "intruder", None)),
        (other.id, message(&fx, &c, "elsewhere", None)),
        (room.id, message(&fx, &a, "m0 again", Some("k"))),
        (room.id, message(&fx, &a, "m2", Some("l"))),
    ];
    let got = fx.store.append_messages(batch, 100).await;
    assert_eq!(got.len(), 7, "one result per item: {got:?}");
    let new = |i: usize| match &got[i] {
        Ok(Appended::New(m)) => m.clone(),
        other => panic!("item {i}: expected a new message, got {other:?}"),
    };
    let (m0, m1, elsewhere, m2) = (new(0), new(2), new(4), new(6));
    assert_eq!(got[1], Err(Error::RoomNotFound));
    assert!(matches!(got[3], Err(Error::Forbidden(_))), "{:?}", got[3]);
    assert_eq!(got[5], Ok(Appended::Duplicate(m0.clone())));
    assert_eq!((m0.message.as_str(), m0.room), ("m0", room.id));
    assert_eq!((m1.sender.clone(), elsewhere.room), (b.clone(), other.id));
    assert!(
        m0.id < m1.id && m1.id < m2.id,
        "ids increase in batch order"
    );

    let history = fx
        .store
        .history(&room.id, None, 100)
        .await
        .expect("history");
    assert_eq!(history.messages, vec![m0.clone(), m1.clone(), m2.clone()]);
    let published = fx.wait_for_events(&audience, 3).await;
    let expected: Vec<Event> = [m0, m1, m2]
        .into_iter()
        .map(Event::ReceiveMessage)
        .collect();
    assert_eq!(published, expected, "published once each, in history order");
    assert!(
        fx.store.append_messages(Vec::new(), 100).await.is_empty(),
        "an empty batch answers nothing"
    );
    fx.bus.unsubscribe(audience).await.expect("unsubscribe");
}

/// History pages: strictly after `after` (`more`: newer exist), or the latest (`more`: older).
pub async fn history_pages(fx: Fixture) {
    let [a, b] = [fx.phone(1), fx.phone(2)];
    for p in [&a, &b] {
        register(&fx, p).await;
    }
    let room = room_between(&fx, &a, &b).await;
    let empty = fx.store.history(&room.id, None, 5).await.expect("history");
    assert!(empty.messages.is_empty() && !empty.more);
    let mut m = Vec::new();
    for i in 0..10 {
        m.push(append_new(&fx, &room, message(&fx, &a, &format!("m{i}"), None)).await);
        if i % 3 == 0 {
            fx.advance(1);
        }
    }
    let page = |after: Option<MessageId>, limit: usize| {
        let store = fx.store.clone();
        async move {
            store
                .history(&room.id, after, limit)
                .await
                .expect("history")
        }
    };
    let p = page(None, 3).await;
    assert_eq!((p.messages, p.more), (m[7..].to_vec(), true));
    let p = page(None, 10).await;
    assert_eq!((p.messages, p.more), (m.clone(), false));
    let p = page(None, 50).await;
    assert_eq!((p.messages, p.more), (m.clone(), false));
    let p = page(Some(m[2].id), 3).await;
    assert_eq!((p.messages, p.more), (m[3..6].to_vec(), true));
    let p = page(Some(m[6].id), 3).await;
    assert_eq!((p.messages, p.more), (m[7..].to_vec(), false));
    let p = page(Some(m[9].id), 3).await;
    assert_eq!((p.messages, p.more), (vec![], false));
    let p = page(Some(MessageId { ms: 0, seq: 0 }), 10).await;
    assert_eq!((p.messages, p.more), (m.clone(), false));
    let p = page(Some(MessageId { ms: 0, seq: 0 }), 9).await;
    assert_eq!((p.messages, p.more), (m[..9].to_vec(), true));
}

/// With `history_max`, a room keeps at least its last `history_max` messages, in order.
pub async fn history_max_keeps_last_n(fx: Fixture) {
    let [a, b] = [fx.phone(1), fx.phone(2)];
    for p in [&a, &b] {
        register(&fx, p).await;
    }
    let room = room_between(&fx, &a, &b).await;
    let mut all = Vec::new();
    for i in 0..20 {
        let got = fx
            .store
            .append_message(&room.id, message(&fx, &b, &format!("m{i}"), None), 5)
            .await
            .expect("append")
            .into_message();
        all.push(got);
    }
    let kept = fx
        .store
        .history(&room.id, None, 100)
        .await
        .expect("history");
    assert!(kept.messages.len() >= 5, "kept {}", kept.messages.len());
    assert!(!kept.more);
    assert!(
        all.ends_with(&kept.messages),
        "what is kept is the latest messages, in order"
    );
    let last5 = fx.store.history(&room.id, None, 5).await.expect("history");
    assert_eq!(last5.messages, all[15..].to_vec());
}

// ---------------------------------------------------------------------- sessions ending

/// `end_session` acts only for a user with no socket, offline at or before `offline_before`.
pub async fn end_session_conditions(fx: Fixture) {
    let a = fx.phone(1);
    register(&fx, &a).await;
    let far = fx.now() + 100 * fx.lifetimes.session_idle_ms;
    assert_eq!(
        fx.store.end_session(&a, far).await.expect("end_session"),
        None,
        "never offline"
    );
    fx.advance(fx.lifetimes.presence_ms);
    let t1 = fx.now();
    assert!(
        fx.store
            .go_offline(&a, t1, t1 + fx.lifetimes.session_idle_ms)
            .await
            .expect("go_offline")
    );
    let node = NodeId::random();
    fx.store
        .add_conn(&a, &conn(&node, 1))
        .await
        .expect("add_conn");
    assert_eq!(
        fx.store.end_session(&a, far).await.expect("end_session"),
        None,
        "a socket is open"
    );
    fx.advance(10);
    let t2 = fx.now();
    fx.store
        .remove_conn(&a, &conn(&node, 1), t2, NO_CUT)
        .await
        .expect("remove_conn");
    assert!(
        fx.store
            .go_offline(&a, t2, t2 + fx.lifetimes.session_idle_ms)
            .await
            .expect("go_offline")
    );
    assert_eq!(
        fx.store.end_session(&a, t2 - 1).await.expect("end_session"),
        None,
        "offline since after offline_before"
    );
    let ended = fx
        .store
        .end_session(&a, t2)
        .await
        .expect("end_session")
        .expect("offline at offline_before exactly");
    assert_eq!(ended.session.phone, a);
    assert_eq!(
        fx.store.end_session(&a, far).await.expect("end_session"),
        None,
        "ended once"
    );
    assert_eq!(
        fx.store
            .end_session(&fx.phone(2), far)
            .await
            .expect("end_session"),
        None,
        "no session"
    );
}

/// Ending a session deletes it, its token, presence, requests both ways and rooms with their
/// history; the phone is free for a fresh session.
pub async fn end_session_deletes_everything(fx: Fixture) {
    let a = &fx.phone(1);
    // A's HTTP window is short, so A can go offline while everyone's requests are still live.
    let a_session = new_session(&fx, a);
    fx.store
        .create_session(a_session.clone(), None, fx.now() + 1)
        .await
        .expect("create_session");
    let p = users(&fx, 2, 4).await;
    let (b, c, d, e) = (&p[0], &p[1], &p[2], &p[3]);
    let ab = room_between(&fx, a, b).await;
    let ca = room_between(&fx, c, a).await;
    append_new(&fx, &ab, message(&fx, a, "hi", Some("k"))).await;
    append_new(&fx, &ca, message(&fx, c, "yo", None)).await;
    for (from, to) in [(a, d), (e, a), (b, d)] {
        fx.store
            .send_request(request(&fx, from, to), new_room(&fx))
            .await
            .expect("send_request");
    }
    fx.advance(1);
    let now = fx.now();
    assert!(
        fx.store
            .go_offline(a, now, now + fx.lifetimes.session_idle_ms)
            .await
            .expect("go_offline")
    );
    let ended = fx
        .store
        .end_session(a, now)
        .await
        .expect("end_session")
        .expect("due");
    assert_eq!(ended.session, a_session);
    assert_eq!(room_ids(&ended.rooms), room_ids(&[ab.clone(), ca.clone()]));
    assert_eq!(ended.requests.incoming, vec![e.clone()]);
    assert_eq!(ended.requests.sent, vec![d.clone()]);

    assert_eq!(
        fx.store
            .session(&a_session.token_digest)
            .await
            .expect("session"),
        None
    );
    assert_eq!(
        fx.store
            .touch(&a_session.token_digest, now + fx.lifetimes.presence_ms)
            .await
            .expect("touch"),
        None
    );
    assert_eq!(fx.store.presence(a).await.expect("presence"), None);
    for room in [&ab, &ca] {
        assert_eq!(fx.store.room(&room.id).await.expect("room"), None);
        assert_eq!(
            fx.store.history(&room.id, None, 10).await,
            Err(Error::RoomNotFound)
        );
    }
    for other in [b, c] {
        assert!(fx.store.rooms_of(other).await.expect("rooms_of").is_empty());
    }
    assert!(fx.store.rooms_of(a).await.expect("rooms_of").is_empty());
    let rd = fx.store.requests(d, now).await.expect("requests");
    assert_eq!(
        rd.incoming,
        vec![b.clone()],
        "only A's requests are dropped"
    );
    let re = fx.store.requests(e, now).await.expect("requests");
    assert!(re.sent.is_empty());
    let ra = fx.store.requests(a, now).await.expect("requests");
    assert!(ra.incoming.is_empty() && ra.sent.is_empty());
    let listed = walk_online(&fx, 1000).await;
    assert!(!listed.contains(a));

    // The phone starts fresh.
    let fresh = new_session(&fx, a);
    let registered = fx
        .store
        .create_session(fresh.clone(), None, now + fx.lifetimes.presence_ms)
        .await
        .expect("a fresh session");
    assert!(!registered.refreshed && registered.came_online);
    assert_eq!(registered.session, fresh);
    assert!(fx.store.rooms_of(a).await.expect("rooms_of").is_empty());
    assert_eq!(
        fx.store
            .send_request(request(&fx, a, b), new_room(&fx))
            .await
            .expect("send_request"),
        SendOutcome::Sent,
        "no room is inherited"
    );
}

// ------------------------------------------------------------------------------ deadlines

/// `due_timers` leases what is due (moving it to `lease_until`); `finish_timer` removes it.
pub async fn due_timers_lease_and_finish(fx: Fixture) {
    let t0 = fx.now();
    let l = fx.lifetimes.lease_ms;
    let t1 = Timer::Presence(fx.phone(1));
    let t2 = Timer::RoomIdle(RoomId::generate());
    fx.store
        .schedule(t1.clone(), t0 + 10)
        .await
        .expect("schedule");
    fx.store
        .schedule(t2.clone(), t0 + 20)
        .await
        .expect("schedule");
    let mine = |due: Vec<DueTimer>| -> Vec<DueTimer> {
        due.into_iter()
            .filter(|d| d.timer == t1 || d.timer == t2)
            .collect()
    };
    assert!(mine(lease(&fx, t0 + 9).await).is_empty());
    let first = mine(lease(&fx, t0 + 10).await);
    assert_eq!(
        first,
        vec![DueTimer {
            timer: t1.clone(),
            lease_until: t0 + 10 + l
        }]
    );
    assert!(
        mine(lease(&fx, t0 + 15).await).is_empty(),
        "a leased timer is not handed out again during its lease"
    );
    // The caller died: the timer comes due again when the lease ends.
    let again = mine(lease(&fx, t0 + 10 + l).await);
    let t1_again: Vec<&DueTimer> = again.iter().filter(|d| d.timer == t1).collect();
    assert_eq!(t1_again.len(), 1);
    assert_eq!(t1_again[0].lease_until, t0 + 10 + 2 * l);
    for d in &again {
        fx.store.finish_timer(d).await.expect("finish_timer");
    }
    assert!(
        mine(lease(&fx, t0 + 100 * l).await).is_empty(),
        "finished timers are gone"
    );

    // Scheduling again moves a timer; it is kept once.
    let t3 = Timer::SessionEnd(fx.phone(3));
    fx.store
        .schedule(t3.clone(), t0 + 1000)
        .await
        .expect("schedule");
    fx.store
        .schedule(t3.clone(), t0 + 500)
        .await
        .expect("schedule");
    let due = lease(&fx, t0 + 500).await;
    let got: Vec<&DueTimer> = due.iter().filter(|d| d.timer == t3).collect();
    assert_eq!(got.len(), 1);
    fx.store.finish_timer(got[0]).await.expect("finish_timer");
    assert!(
        !is_due(&fx, t0 + 1000 + 100 * l, &t3).await,
        "moved, not copied"
    );
}

/// A timer rescheduled while leased survives `finish_timer` of the old lease.
pub async fn finish_keeps_rescheduled_timer(fx: Fixture) {
    let t0 = fx.now();
    let timer = Timer::RequestExpiry {
        from: fx.phone(1),
        to: fx.phone(2),
    };
    fx.store
        .schedule(timer.clone(), t0 + 5)
        .await
        .expect("schedule");
    let due = lease(&fx, t0 + 5).await;
    let leased = due.iter().find(|d| d.timer == timer).expect("due").clone();
    fx.store
        .schedule(timer.clone(), t0 + 1_000)
        .await
        .expect("schedule");
    fx.store.finish_timer(&leased).await.expect("finish_timer");
    assert_due_at(&fx, t0 + 1_000, &timer).await;
}

/// `due_timers` hands out at most `limit` timers; the rest stay due.
pub async fn due_timers_respects_limit(fx: Fixture) {
    let t = fx.now() + 1;
    let timers: Vec<Timer> = (0..5)
        .map(|_| Timer::RoomExpiry(RoomId::generate()))
        .collect();
    for timer in &timers {
        fx.store.schedule(timer.clone(), t).await.expect("schedule");
    }
    let lease_until = t + fx.lifetimes.lease_ms;
    let first = fx.store.due_timers(t, lease_until, 2).await.expect("due");
    assert_eq!(first.len(), 2);
    let rest = fx.store.due_timers(t, lease_until, 10).await.expect("due");
    assert_eq!(rest.len(), 3);
    let got: BTreeSet<Timer> = first.into_iter().chain(rest).map(|d| d.timer).collect();
    assert_eq!(got, set(&timers));
}

/// Concurrent callers of `due_timers` never get the same timer.
pub async fn concurrent_due_timers_lease_each_once(fx: Fixture) {
    let t = fx.now() + 1;
    let timers: Vec<Timer> = (0..30)
        .map(|_| Timer::RoomIdle(RoomId::generate()))
        .collect();
    for timer in &timers {
        fx.store.schedule(timer.clone(), t).await.expect("schedule");
    }
    let lease_until = t + fx.lifetimes.lease_ms;
    let mut tasks = JoinSet::new();
    for _ in 0..6 {
        let store = fx.store.clone();
        tasks.spawn(async move { store.due_timers(t, lease_until, 10).await });
    }
    let mut handed: Vec<Timer> = Vec::new();
    for got in tasks.join_all().await {
        handed.extend(got.expect("due_timers").into_iter().map(|d| d.timer));
    }
    let distinct: HashSet<&Timer> = handed.iter().collect();
    assert_eq!(distinct.len(), handed.len(), "a timer was handed out twice");
    assert_eq!(set(&handed), set(&timers));
}

/// A working store answers `ping`.
pub async fn ping_answers(fx: Fixture) {
    fx.store.ping().await.expect("ping");
}

/// The backend's bus delivers what is published to a subscribed audience, with its exceptions.
pub async fn bus_delivers_published_events(fx: Fixture) {
    let a = fx.phone(1);
    let room = RoomId::generate();
    let user = Audience::User(a.clone());
    let in_room = Audience::Room(room);
    fx.bus.subscribe(user.clone()).await.expect("subscribe");
    fx.bus.subscribe(in_room.clone()).await.expect("subscribe");
    let presence = Event::Presence {
        phone: fx.phone(2),
        online: true,
        names: Names::from([(fx.phone(2), "Ben".to_owned())]),
    };
    let typing = Delivery::to_room(
        room,
        Event::Typing {
            room,
            user: a.clone(),
            typing: true,
        },
    )
    .except(Except::User(a.clone()));
    fx.bus
        .publish(Delivery::to_user(a.clone(), presence.clone()))
        .await
        .expect("publish");
    fx.bus.publish(typing.clone()).await.expect("publish");
    assert_eq!(fx.wait_for_events(&user, 1).await, vec![presence]);
    fx.wait_for_events(&in_room, 1).await;
    let got: Vec<Delivery> = fx
        .events
        .take()
        .into_iter()
        .filter(|d| d.audience == in_room)
        .collect();
    assert_eq!(got, vec![typing], "the exception travels with the event");
    fx.bus.unsubscribe(user).await.expect("unsubscribe");
    fx.bus.unsubscribe(in_room).await.expect("unsubscribe");
}

// ---------------------------------------------------------------------------- concurrency

/// Twenty concurrent accepts of one request make exactly one room.
pub async fn accept_race_makes_one_room(fx: Fixture) {
    let [a, b] = [fx.phone(1), fx.phone(2)];
    for p in [&a, &b] {
        register(&fx, p).await;
    }
    fx.store
        .send_request(request(&fx, &a, &b), new_room(&fx))
        .await
        .expect("send_request");
    let mut tasks = JoinSet::new();
    for _ in 0..20 {
        let (store, a, b, nr, now) = (
            fx.store.clone(),
            a.clone(),
            b.clone(),
            new_room(&fx),
            fx.now(),
        );
        tasks.spawn(async move { store.accept_request(&a, &b, nr, now).await });
    }
    let rooms: Vec<Room> = tasks
        .join_all()
        .await
        .into_iter()
        .filter_map(|r| r.expect("accept_request"))
        .collect();
    assert_eq!(rooms.len(), 1, "exactly one accept wins: {rooms:?}");
    assert_eq!(fx.store.rooms_of(&a).await.expect("rooms_of"), rooms);
    assert_eq!(fx.store.rooms_of(&b).await.expect("rooms_of"), rooms);
}

/// Crossed requests sent at the same time make exactly one room.
pub async fn crossed_send_race_makes_one_room(fx: Fixture) {
    let phones = users(&fx, 1, 20).await;
    let mut tasks = JoinSet::new();
    for pair in phones.chunks(2) {
        for (from, to) in [(&pair[0], &pair[1]), (&pair[1], &pair[0])] {
            let (store, r, nr) = (fx.store.clone(), request(&fx, from, to), new_room(&fx));
            tasks.spawn(async move { store.send_request(r, nr).await });
        }
    }
    let outcomes: Vec<SendOutcome> = tasks
        .join_all()
        .await
        .into_iter()
        .map(|r| r.expect("send_request"))
        .collect();
    let accepted = outcomes
        .iter()
        .filter(|o| matches!(o, SendOutcome::Accepted(_)))
        .count();
    let sent = outcomes.iter().filter(|o| **o == SendOutcome::Sent).count();
    assert_eq!((accepted, sent), (10, 10), "{outcomes:?}");
    for p in &phones {
        assert_eq!(
            fx.store.rooms_of(p).await.expect("rooms_of").len(),
            1,
            "{p}"
        );
    }

    // Many sends both ways between one pair: still one room.
    let [x, y] = [fx.phone(900), fx.phone(901)];
    for p in [&x, &y] {
        register(&fx, p).await;
    }
    let mut tasks = JoinSet::new();
    for i in 0..10 {
        let (from, to) = if i % 2 == 0 { (&x, &y) } else { (&y, &x) };
        let (store, r, nr) = (fx.store.clone(), request(&fx, from, to), new_room(&fx));
        tasks.spawn(async move { store.send_request(r, nr).await });
    }
    let outcomes: Vec<SendOutcome> = tasks
        .join_all()
        .await
        .into_iter()
        .map(|r| r.expect("send_request"))
        .collect();
    let rooms: Vec<&Room> = outcomes
        .iter()
        .filter_map(|o| match o {
            SendOutcome::Accepted(r) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(rooms.len(), 1, "{outcomes:?}");
    assert_eq!(
        fx.store.rooms_of(&x).await.expect("rooms_of"),
        vec![rooms[0].clone()]
    );
}

/// Concurrent appends get unique ids; history and deliveries follow id order.
pub async fn concurrent_appends_get_unique_increasing_ids(fx: Fixture) {
    let [a, b] = [fx.phone(1), fx.phone(2)];
    for p in [&a, &b] {
        register(&fx, p).await;
    }
    let room = room_between(&fx, &a, &b).await;
    let audience = Audience::Room(room.id);
    fx.bus.subscribe(audience.clone()).await.expect("subscribe");
    let mut tasks = JoinSet::new();
    for i in 0..50u64 {
        let sender = if i % 2 == 0 { a.clone() } else { b.clone() };
        let m = NewMessage {
            sender,
            message: format!("m{i}"),
            // Clocks of different nodes disagree a little.
            timestamp: fx.now() + i % 3,
            client_id: None,
        };
        let (store, id) = (fx.store.clone(), room.id);
        tasks.spawn(async move { store.append_message(&id, m, 10_000).await });
    }
    let stored: Vec<Message> = tasks
        .join_all()
        .await
        .into_iter()
        .map(|r| r.expect("append").into_message())
        .collect();
    let ids: HashSet<MessageId> = stored.iter().map(|m| m.id).collect();
    assert_eq!(ids.len(), 50, "ids are unique");
    let history = fx
        .store
        .history(&room.id, None, 100)
        .await
        .expect("history");
    assert_eq!(history.messages.len(), 50);
    for w in history.messages.windows(2) {
        assert!(w[0].id < w[1].id);
    }
    let got = fx.wait_for_events(&audience, 50).await;
    let expected: Vec<Event> = history
        .messages
        .iter()
        .cloned()
        .map(Event::ReceiveMessage)
        .collect();
    assert_eq!(got, expected, "deliveries follow history order");
    fx.bus.unsubscribe(audience).await.expect("unsubscribe");
}

/// Concurrent registrations of one phone: exactly one session is created.
pub async fn concurrent_create_session_one_wins(fx: Fixture) {
    let a = fx.phone(1);
    let mut tasks = JoinSet::new();
    for _ in 0..20 {
        let (store, s, until) = (
            fx.store.clone(),
            new_session(&fx, &a),
            fx.now() + fx.lifetimes.presence_ms,
        );
        tasks.spawn(async move { (s.clone(), store.create_session(s, None, until).await) });
    }
    let results = tasks.join_all().await;
    let winners: Vec<&Session> = results
        .iter()
        .filter_map(|(s, r)| r.as_ref().ok().map(|_| s))
        .collect();
    assert_eq!(winners.len(), 1, "exactly one registration wins");
    for (s, r) in &results {
        match r {
            Ok(reg) => assert!(!reg.refreshed && reg.session == *s),
            Err(e) => assert_eq!(e, &Error::PhoneInUse),
        }
        let found = fx.store.session(&s.token_digest).await.expect("session");
        assert_eq!(found.is_some(), std::ptr::eq(s, winners[0]));
    }
}
