//! Process-wide metrics the adapters export on `/metrics`.
//!
//! The store's metrics are `prometheus-client` types (a histogram family and a counter family
//! labelled by the store operation); the hot-path counters stay plain atomics, read by a
//! collector at each scrape. This module only keeps values: no I/O, no text format. chat-http
//! builds the registry ([`Metrics::register`]) and encodes it.

use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// Upper bounds (seconds) of the store latency histogram's buckets (`+Inf` is implicit).
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.0,
];

/// The label set of the store metrics: `op`, the name of the [`Store`](crate::Store) method
/// (`"append_message"`). Bounded: the names are the trait's fixed set of `&'static str`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreOp {
    /// The store method's name.
    pub op: &'static str,
}

/// Metrics shared by the service, the store decorator and the adapters.
///
/// `connections`, `messages_total` and `slow_consumers_closed_total` are plain atomics: they
/// are bumped on the socket and message hot paths through the `Arc<Metrics>` the caller already
/// holds (one relaxed add on a field, no further pointer to follow, no map lookup), and read
/// directly by the socket code and tests; a collector reads them at each scrape, so they still
/// reach the same registry. The store metrics are labelled families and need
/// `prometheus-client`'s types.
#[derive(Debug)]
pub struct Metrics {
    /// Open WebSockets on this node (`chat_connections`).
    pub connections: AtomicI64,
    /// Messages stored through this node (`chat_messages_total`).
    pub messages_total: AtomicU64,
    /// Sockets closed for not reading fast enough (`chat_slow_consumers_closed_total`).
    pub slow_consumers_closed_total: AtomicU64,
    /// Store calls that failed with `store_unavailable`, by operation
    /// (`chat_store_errors_total{op}`). Prefer [`Metrics::observe_store`].
    pub store_errors_total: StoreErrors,
    /// Store call latency, by operation (`chat_store_latency_seconds{op}`). Prefer
    /// [`Metrics::observe_store`].
    pub store_latency: StoreLatency,
    /// Collectors of metrics kept elsewhere (the Redis bus's counters), exported with these.
    /// Added once at start-up; a handful at most.
    collectors: Mutex<Vec<Arc<dyn Collector>>>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            connections: AtomicI64::new(0),
            messages_total: AtomicU64::new(0),
            slow_consumers_closed_total: AtomicU64::new(0),
            store_errors_total: StoreErrors::default(),
            store_latency: StoreLatency::default(),
            collectors: Mutex::default(),
        }
    }
}

impl Metrics {
    /// Records one store call of `op` (the `Store` method's name) that took `elapsed`;
    /// `unavailable` when it failed with `Error::StoreUnavailable` (other errors are answers, not
    /// store errors). Creates `op`'s error series at 0 on its first call, so a dashboard sees 0
    /// rather than no data.
    pub fn observe_store(&self, op: &'static str, elapsed: Duration, unavailable: bool) {
        self.observe_store_batch(op, elapsed, u64::from(unavailable));
    }

    /// Records one store call of `op` that carried several items (`append_messages`): timed
    /// once, and each of its `unavailable` items that failed with `Error::StoreUnavailable`
    /// counted as an error.
    pub fn observe_store_batch(&self, op: &'static str, elapsed: Duration, unavailable: u64) {
        self.store_latency.observe_op(op, elapsed);
        self.store_errors_total.add(op, unavailable);
    }

    /// Adds `collector` to what [`Metrics::register`] exports: metrics an adapter keeps itself
    /// (chat-server adds the Redis bus's counters this way, so chat-http, which renders
    /// `/metrics`, needs to know nothing of Redis). Each call adds one; call it once per
    /// collector, at start-up.
    pub fn register_collector(&self, collector: impl Collector) {
        self.collectors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::new(collector));
    }

    /// Registers every metric of this struct, and every collector added with
    /// [`Metrics::register_collector`], in `registry`. The registry holds handles (clones share
    /// the values), so it may be built per scrape and still see collectors added later.
    pub fn register(self: &Arc<Self>, registry: &mut Registry) {
        registry.register_collector(Box::new(Core(Arc::clone(self))));
        let collectors = self
            .collectors
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for collector in collectors.iter() {
            registry.register_collector(Box::new(Shared(Arc::clone(collector))));
        }
    }
}

/// The family type of the store latency: one histogram over [`LATENCY_BUCKETS`] per operation.
type LatencyFamily = Family<StoreOp, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// Store call latency per operation. Each histogram takes its buckets, sum and count under one
/// lock, so the exposition's `_count` always equals its `+Inf` bucket.
#[derive(Debug)]
pub struct StoreLatency {
    /// `op` → histogram; clones share it (the registry holds one).
    family: LatencyFamily,
}

impl Default for StoreLatency {
    fn default() -> StoreLatency {
        StoreLatency {
            family: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
        }
    }
}

impl StoreLatency {
    /// Records one call of `op` that took `elapsed`.
    pub fn observe_op(&self, op: &'static str, elapsed: Duration) {
        self.family
            .get_or_create(&StoreOp { op })
            .observe(elapsed.as_secs_f64());
    }

    /// Over every operation: cumulative counts per bound of [`LATENCY_BUCKETS`] (then `+Inf`),
    /// the sum in seconds, and the count. For tests; it encodes the family to read it.
    pub fn snapshot(&self) -> (Vec<u64>, f64, u64) {
        self.read(None)
    }

    /// As [`StoreLatency::snapshot`], for one operation only.
    pub fn snapshot_op(&self, op: &str) -> (Vec<u64>, f64, u64) {
        self.read(Some(op))
    }

    /// Reads the family back from its own Prometheus text (prometheus-client keeps bucket
    /// counts private), summing the operations `op` selects.
    fn read(&self, op: Option<&str>) -> (Vec<u64>, f64, u64) {
        let mut buckets = vec![0; LATENCY_BUCKETS.len() + 1];
        let (mut sum, mut count) = (0.0, 0);
        let mut registry = Registry::default();
        registry.register("h", "", self.family.clone());
        let mut text = String::new();
        if prometheus_client::encoding::prometheus_text::encode(&mut text, &registry).is_err() {
            return (buckets, sum, count);
        }
        let selector = op.map(|op| format!("op=\"{op}\""));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            if selector
                .as_ref()
                .is_some_and(|s| !series.contains(s.as_str()))
            {
                continue;
            }
            if series.starts_with("h_bucket{") {
                let le = series
                    .split("le=\"")
                    .nth(1)
                    .and_then(|rest| rest.split('"').next())
                    .and_then(|le| le.parse::<f64>().ok());
                let i = le
                    .and_then(|le| LATENCY_BUCKETS.iter().position(|b| *b == le))
                    .unwrap_or(LATENCY_BUCKETS.len());
                buckets[i] += value.parse::<u64>().unwrap_or(0);
            } else if series.starts_with("h_sum") {
                sum += value.parse::<f64>().unwrap_or(0.0);
            } else if series.starts_with("h_count") {
                count += value.parse::<u64>().unwrap_or(0);
            }
        }
        (buckets, sum, count)
    }
}

/// Store calls that failed as unavailable, per operation.
#[derive(Debug, Default)]
pub struct StoreErrors {
    /// `op` → counter; clones share it (the registry holds one).
    family: Family<StoreOp, Counter>,
    /// The sum over every operation (errors are rare: one more relaxed add is nothing), for
    /// [`StoreErrors::total`].
    total: AtomicU64,
}

impl StoreErrors {
    /// Counts `n` errors of `op`, creating its series (at 0 when `n` is 0).
    pub fn add(&self, op: &'static str, n: u64) {
        let counter = self.family.get_or_create(&StoreOp { op });
        if n > 0 {
            counter.inc_by(n);
            self.total.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// The errors counted for `op`.
    pub fn get(&self, op: &'static str) -> u64 {
        self.family.get(&StoreOp { op }).map_or(0, |c| c.get())
    }

    /// The errors counted over every operation.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }
}

/// Encodes [`Metrics`] at each scrape: the plain atomics, and the store families. Through a
/// collector rather than `Registry::register`, which leaves out a family with no series yet: the
/// store families are declared (`# HELP`, `# TYPE`) from the start, as they always were.
#[derive(Debug)]
struct Core(Arc<Metrics>);

impl Collector for Core {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let m = &self.0;
        let latency = &m.store_latency.family;
        latency.encode(encoder.encode_descriptor(
            "chat_store_latency",
            "Store call latency, by store operation.",
            Some(&Unit::Seconds),
            latency.metric_type(),
        )?)?;
        let errors = &m.store_errors_total.family;
        errors.encode(encoder.encode_descriptor(
            "chat_store_errors",
            "Store calls that failed as unavailable, by store operation.",
            None,
            errors.metric_type(),
        )?)?;
        let gauge = ConstGauge::new(m.connections.load(Ordering::Relaxed));
        gauge.encode(encoder.encode_descriptor(
            "chat_connections",
            "Open WebSockets on this node.",
            None,
            gauge.metric_type(),
        )?)?;
        // Counter names without `_total`: the encoder appends it.
        for (name, help, value) in [
            (
                "chat_messages",
                "Messages stored through this node.",
                &m.messages_total,
            ),
            (
                "chat_slow_consumers_closed",
                "WebSockets closed for not reading fast enough.",
                &m.slow_consumers_closed_total,
            ),
        ] {
            encode_counter(&mut encoder, name, help, value)?;
        }
        Ok(())
    }
}

/// Encodes a plain atomic as a counter `name` (without `_total`: the encoder appends it), for
/// collectors of counters kept as atomics on a hot path (the core's, the Redis bus's).
pub fn encode_counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: &AtomicU64,
) -> Result<(), fmt::Error> {
    let counter = ConstCounter::new(value.load(Ordering::Relaxed));
    counter.encode(encoder.encode_descriptor(name, help, None, counter.metric_type())?)
}

/// A collector added with [`Metrics::register_collector`], registered by handle.
#[derive(Debug)]
struct Shared(Arc<dyn Collector>);

impl Collector for Shared {
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        self.0.encode(encoder)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(metrics: &Arc<Metrics>) -> String {
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &registry).expect("encode");
        text
    }

    #[test]
    fn store_calls_are_labelled_by_operation() {
        let metrics = Arc::new(Metrics::default());
        metrics.observe_store("append_message", Duration::from_millis(3), false);
        metrics.observe_store("append_message", Duration::from_millis(30), true);
        metrics.observe_store("presence", Duration::from_micros(50), false);
        metrics.observe_store_batch("append_messages", Duration::from_millis(1), 2);

        let text = render(&metrics);
        for line in [
            "# TYPE chat_store_latency_seconds histogram\n",
            "chat_store_latency_seconds_bucket{op=\"append_message\",le=\"0.005\"} 1\n",
            "chat_store_latency_seconds_bucket{op=\"append_message\",le=\"+Inf\"} 2\n",
            "chat_store_latency_seconds_count{op=\"append_message\"} 2\n",
            "chat_store_latency_seconds_bucket{op=\"presence\",le=\"0.0001\"} 1\n",
            "# TYPE chat_store_errors_total counter\n",
            "chat_store_errors_total{op=\"append_message\"} 1\n",
            "chat_store_errors_total{op=\"presence\"} 0\n",
            "chat_store_errors_total{op=\"append_messages\"} 2\n",
        ] {
            assert!(text.contains(line), "{line:?} missing from\n{text}");
        }
        assert_eq!(metrics.store_errors_total.get("append_message"), 1);
        assert_eq!(metrics.store_errors_total.total(), 3);
        let (buckets, sum, count) = metrics.store_latency.snapshot_op("append_message");
        assert_eq!((buckets.last(), count), (Some(&2), 2));
        assert!((sum - 0.033).abs() < 1e-9, "{sum}");
        assert_eq!(metrics.store_latency.snapshot().2, 4);
    }

    #[test]
    fn hot_counters_and_added_collectors_are_exported() {
        #[derive(Debug)]
        struct Extra;
        impl Collector for Extra {
            fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
                let c = ConstCounter::new(7u64);
                c.encode(encoder.encode_descriptor("extra", "An extra.", None, c.metric_type())?)
            }
        }
        let metrics = Arc::new(Metrics::default());
        metrics.connections.fetch_add(2, Ordering::Relaxed);
        metrics.messages_total.fetch_add(5, Ordering::Relaxed);
        metrics.register_collector(Extra);
        let text = render(&metrics);
        for line in [
            "# TYPE chat_connections gauge\nchat_connections 2\n",
            "# TYPE chat_messages_total counter\nchat_messages_total 5\n",
            "# TYPE chat_slow_consumers_closed_total counter\nchat_slow_consumers_closed_total 0\n",
            "extra_total 7\n",
        ] {
            assert!(text.contains(line), "{line:?} missing from\n{text}");
        }
    }
}
