//! Process-wide counters the adapters export on `/metrics`. Plain atomics: no I/O, no format.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Upper bounds (seconds) of the store latency histogram's buckets.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.0,
];

/// Counters shared by the service, the store decorator and the adapters.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Open WebSockets on this node (`chat_connections`).
    pub connections: AtomicI64,
    /// Messages stored through this node (`chat_messages_total`).
    pub messages_total: AtomicU64,
    /// Sockets closed for not reading fast enough (`chat_slow_consumers_closed_total`).
    pub slow_consumers_closed_total: AtomicU64,
    /// Store calls that failed with `store_unavailable` (`chat_store_errors_total`).
    pub store_errors_total: AtomicU64,
    /// Store call latency histogram (`chat_store_latency_seconds`).
    pub store_latency: Histogram,
}

/// A fixed-bucket histogram over [`LATENCY_BUCKETS`].
#[derive(Debug, Default)]
pub struct Histogram {
    /// Per-bucket counts (not cumulative); the last slot counts observations over every bound.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    /// Sum of observations, in microseconds.
    sum_micros: AtomicU64,
    /// Number of observations.
    count: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: std::time::Duration) {
        let secs = d.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(
            u64::try_from(d.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Cumulative counts per bound of [`LATENCY_BUCKETS`] (then `+Inf`), the sum in seconds,
    /// and the count: what the Prometheus text format wants.
    pub fn snapshot(&self) -> (Vec<u64>, f64, u64) {
        let mut acc = 0;
        let cumulative = self
            .buckets
            .iter()
            .map(|b| {
                acc += b.load(Ordering::Relaxed);
                acc
            })
            .collect();
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        (cumulative, sum, self.count.load(Ordering::Relaxed))
    }
}
