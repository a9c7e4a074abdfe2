//! `/metrics`: one `prometheus-client` registry holding the domain's [`chat_core::Metrics`]
//! (with the collectors added to it, such as the Redis bus's) and this adapter's own counters,
//! encoded in the Prometheus text format (version 0.0.4).

use std::sync::Arc;

use chat_core::Metrics;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// The `Content-Type` of the exposition.
pub(crate) const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Labels of `chat_http_requests_total`, in this order.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteStatus {
    /// The route's pattern (`/chatrooms/{room_id}/messages`), never the path itself.
    route: &'static str,
    /// The status answered.
    status: u16,
}

/// Label of `chat_connections_refused_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    /// Which limit the connection met.
    reason: &'static str,
}

/// This adapter's counters. Clones of the families share their values, so the registry built
/// for each scrape holds the same counters.
#[derive(Debug)]
pub(crate) struct HttpMetrics {
    /// Requests by route pattern and status. Bounded: patterns are the router's fixed set (plus
    /// `unmatched`) and statuses are the few this adapter answers.
    requests: Family<RouteStatus, Counter>,
    /// Connections closed unanswered, by the limit they met: the address's, the node's, or the
    /// process out of descriptors. All three series exist from the start.
    refused: Family<Reason, Counter>,
    /// `accept` calls that failed (out of descriptors, most likely).
    accept_errors: Counter,
}

impl Default for HttpMetrics {
    fn default() -> HttpMetrics {
        let refused = Family::default();
        for why in [
            crate::conn::Refusal::Address,
            crate::conn::Refusal::Total,
            crate::conn::Refusal::Descriptors,
        ] {
            // The series at 0: dashboards see a count, not no data.
            drop(refused.get_or_create(&Reason {
                reason: reason(why),
            }));
        }
        HttpMetrics {
            requests: Family::default(),
            refused,
            accept_errors: Counter::default(),
        }
    }
}

/// The `reason` label of a refusal.
fn reason(why: crate::conn::Refusal) -> &'static str {
    match why {
        crate::conn::Refusal::Address => "address",
        crate::conn::Refusal::Total => "total",
        crate::conn::Refusal::Descriptors => "descriptors",
    }
}

impl HttpMetrics {
    /// Counts a connection closed unanswered.
    pub(crate) fn refused(&self, why: crate::conn::Refusal) {
        self.refused
            .get_or_create(&Reason {
                reason: reason(why),
            })
            .inc();
    }

    /// Counts a failed `accept`.
    pub(crate) fn accept_failed(&self) {
        self.accept_errors.inc();
    }

    /// Counts one answered request.
    pub(crate) fn count(&self, route: &'static str, status: u16) {
        self.requests
            .get_or_create(&RouteStatus { route, status })
            .inc();
    }

    /// The whole exposition: the domain's metrics and this adapter's in one registry. The
    /// registry is built per scrape (it only holds handles, a few allocations), so a collector
    /// added to `core` after the app was built is exported too.
    pub(crate) fn render(&self, core: &Arc<Metrics>) -> String {
        let mut registry = Registry::default();
        core.register(&mut registry);
        // Counter names without `_total`: the encoder appends it.
        registry.register(
            "chat_accept_errors",
            "Failed accepts (out of file descriptors, most likely)",
            self.accept_errors.clone(),
        );
        registry.register(
            "chat_connections_refused",
            "TCP connections closed unanswered, by the limit they met",
            self.refused.clone(),
        );
        // Declared from the start, before its first series (a registered family with no series
        // is left out).
        registry.register_collector(Box::new(Declared {
            name: "chat_http_requests",
            help: "HTTP requests answered, by route pattern and status.",
            metric: self.requests.clone(),
        }));
        let mut out = String::with_capacity(4096);
        // Writing to a String cannot fail; only a collector can, and then the text so far is
        // served (a scrape with some metrics beats none) and the failure logged.
        if prometheus_text::encode(&mut out, &registry).is_err() {
            tracing::warn!("a metrics collector failed; /metrics is incomplete");
        }
        out
    }
}

/// A metric encoded with its `# HELP` and `# TYPE` lines even while it has no series.
#[derive(Debug)]
struct Declared<M> {
    /// The name, without the `_total` the encoder appends to counters.
    name: &'static str,
    /// One sentence.
    help: &'static str,
    /// A handle on the values.
    metric: M,
}

impl<M: EncodeMetric + std::fmt::Debug + Send + Sync + 'static> Collector for Declared<M> {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        self.metric.encode(encoder.encode_descriptor(
            self.name,
            self.help,
            None,
            self.metric.metric_type(),
        )?)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn renders_every_family() {
        let m = HttpMetrics::default();
        m.count("/healthz", 200);
        m.count("/healthz", 200);
        m.refused(crate::conn::Refusal::Total);
        let core = Arc::new(Metrics::default());
        core.observe_store("append_message", Duration::from_millis(3), false);
        let text = m.render(&core);
        for line in [
            "# TYPE chat_connections gauge\n",
            "chat_connections 0\n",
            "# TYPE chat_messages_total counter\n",
            "chat_messages_total 0\n",
            "chat_slow_consumers_closed_total 0\n",
            "chat_accept_errors_total 0\n",
            "# TYPE chat_connections_refused_total counter\n",
            "chat_connections_refused_total{reason=\"address\"} 0\n",
            "chat_connections_refused_total{reason=\"total\"} 1\n",
            "chat_connections_refused_total{reason=\"descriptors\"} 0\n",
            "# TYPE chat_http_requests_total counter\n",
            "chat_http_requests_total{route=\"/healthz\",status=\"200\"} 2\n",
            "# TYPE chat_store_latency_seconds histogram\n",
            "chat_store_latency_seconds_bucket{op=\"append_message\",le=\"0.0025\"} 0\n",
            "chat_store_latency_seconds_bucket{op=\"append_message\",le=\"0.005\"} 1\n",
            "chat_store_latency_seconds_bucket{op=\"append_message\",le=\"2\"} 1\n",
            "chat_store_latency_seconds_bucket{op=\"append_message\",le=\"+Inf\"} 1\n",
            "chat_store_latency_seconds_count{op=\"append_message\"} 1\n",
            "# TYPE chat_store_errors_total counter\n",
            "chat_store_errors_total{op=\"append_message\"} 0\n",
        ] {
            assert!(text.contains(line), "{line:?} missing from\n{text}");
        }
    }

    #[test]
    fn families_are_declared_before_their_first_series() {
        let text = HttpMetrics::default().render(&Arc::new(Metrics::default()));
        for line in [
            "# TYPE chat_http_requests_total counter\n",
            "# TYPE chat_store_latency_seconds histogram\n",
            "# TYPE chat_store_errors_total counter\n",
        ] {
            assert!(text.contains(line), "{line:?} missing from\n{text}");
        }
    }

    /// The value of the one sample `series` (name and labels exactly), if present.
    fn sample(text: &str, series: &str) -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn count_equals_the_inf_bucket_per_operation() {
        let m = HttpMetrics::default();
        let core = Arc::new(Metrics::default());
        for i in 0..500u64 {
            let op = ["append_message", "presence", "rooms_of"][(i % 3) as usize];
            // Spread over every bucket and past the last bound (2 s).
            core.observe_store(op, Duration::from_micros(i * i * 20), i % 7 == 0);
        }
        let text = m.render(&core);
        for op in ["append_message", "presence", "rooms_of"] {
            let inf = sample(
                &text,
                &format!("chat_store_latency_seconds_bucket{{op=\"{op}\",le=\"+Inf\"}}"),
            );
            let count = sample(
                &text,
                &format!("chat_store_latency_seconds_count{{op=\"{op}\"}}"),
            );
            assert!(inf.is_some_and(|n| n > 160), "{op}: {inf:?}\n{text}");
            assert_eq!(inf, count, "{op}:\n{text}");
            let over_2s = inf.zip(sample(
                &text,
                &format!("chat_store_latency_seconds_bucket{{op=\"{op}\",le=\"2\"}}"),
            ));
            assert!(over_2s.is_some_and(|(inf, le2)| inf > le2), "{op}:\n{text}");
        }
    }

    #[test]
    fn collectors_added_after_the_app_are_exported() {
        #[derive(Debug)]
        struct Bus;
        impl prometheus_client::collector::Collector for Bus {
            fn encode(
                &self,
                mut encoder: prometheus_client::encoding::DescriptorEncoder,
            ) -> Result<(), std::fmt::Error> {
                use prometheus_client::encoding::EncodeMetric as _;
                let c = prometheus_client::metrics::counter::ConstCounter::new(3u64);
                c.encode(encoder.encode_descriptor(
                    "chat_bus_dropped",
                    "Dropped.",
                    None,
                    c.metric_type(),
                )?)
            }
        }
        let m = HttpMetrics::default();
        let core = Arc::new(Metrics::default());
        assert!(!m.render(&core).contains("chat_bus_dropped_total"));
        core.register_collector(Bus);
        assert!(m.render(&core).contains("chat_bus_dropped_total 3\n"));
    }
}
