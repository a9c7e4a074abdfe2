//! Deadlines: `schedule`, `due_timers`, `finish_timer`.

use std::collections::{BTreeSet, HashSet};

use tokio::task::JoinSet;

use crate::store::{DueTimer, Timer};
use crate::types::RoomId;

use super::Fixture;
use super::helpers::*;

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
