//! `/metrics`: the domain counters of [`chat_core::Metrics`] plus this adapter's request
//! counter, in the Prometheus text format.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use chat_core::{LATENCY_BUCKETS, Metrics};

/// Requests by route pattern and status. Bounded: patterns are the router's fixed set (plus
/// `unmatched`) and statuses are the few this adapter answers.
#[derive(Debug, Default)]
pub(crate) struct HttpMetrics {
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    /// Connections closed unanswered for their address's limit.
    refused_address: AtomicU64,
    /// Connections closed unanswered for the node's limit.
    refused_total: AtomicU64,
    /// Connections closed unanswered because the process was out of descriptors.
    refused_descriptors: AtomicU64,
    /// `accept` calls that failed (out of descriptors, most likely).
    accept_errors: AtomicU64,
}

impl HttpMetrics {
    /// Counts a connection closed unanswered.
    pub(crate) fn refused(&self, why: crate::conn::Refusal) {
        let counter = match why {
            crate::conn::Refusal::Address => &self.refused_address,
            crate::conn::Refusal::Total => &self.refused_total,
            crate::conn::Refusal::Descriptors => &self.refused_descriptors,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a failed `accept`.
    pub(crate) fn accept_failed(&self) {
        self.accept_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one answered request.
    pub(crate) fn count(&self, pattern: &'static str, status: u16) {
        if let Ok(mut map) = self.requests.lock() {
            *map.entry((pattern, status)).or_insert(0) += 1;
        }
    }

    /// The whole exposition.
    pub(crate) fn render(&self, core: &Metrics) -> String {
        let mut out = String::with_capacity(4096);
        let mut metric = |name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name} {value}");
        };
        metric(
            "chat_connections",
            "gauge",
            "Open WebSockets on this node.",
            core.connections.load(Ordering::Relaxed).to_string(),
        );
        metric(
            "chat_messages_total",
            "counter",
            "Messages stored through this node.",
            core.messages_total.load(Ordering::Relaxed).to_string(),
        );
        metric(
            "chat_store_errors_total",
            "counter",
            "Store calls that failed as unavailable.",
            core.store_errors_total.load(Ordering::Relaxed).to_string(),
        );
        metric(
            "chat_accept_errors_total",
            "counter",
            "Failed accepts (out of file descriptors, most likely).",
            self.accept_errors.load(Ordering::Relaxed).to_string(),
        );
        metric(
            "chat_slow_consumers_closed_total",
            "counter",
            "WebSockets closed for not reading fast enough.",
            core.slow_consumers_closed_total
                .load(Ordering::Relaxed)
                .to_string(),
        );

        let _ = writeln!(
            out,
            "# HELP chat_connections_refused_total TCP connections closed unanswered, by the \
             limit they met."
        );
        let _ = writeln!(out, "# TYPE chat_connections_refused_total counter");
        for (reason, n) in [
            ("address", &self.refused_address),
            ("total", &self.refused_total),
            ("descriptors", &self.refused_descriptors),
        ] {
            let _ = writeln!(
                out,
                "chat_connections_refused_total{{reason=\"{reason}\"}} {}",
                n.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP chat_http_requests_total HTTP requests answered, by route pattern and status."
        );
        let _ = writeln!(out, "# TYPE chat_http_requests_total counter");
        if let Ok(map) = self.requests.lock() {
            for ((route, status), n) in map.iter() {
                let _ = writeln!(
                    out,
                    "chat_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
                );
            }
        }

        let (cumulative, sum, count) = core.store_latency.snapshot();
        let _ = writeln!(out, "# HELP chat_store_latency_seconds Store call latency.");
        let _ = writeln!(out, "# TYPE chat_store_latency_seconds histogram");
        for (i, n) in cumulative.iter().enumerate() {
            let le = LATENCY_BUCKETS
                .get(i)
                .map_or_else(|| "+Inf".to_owned(), |b| b.to_string());
            let _ = writeln!(out, "chat_store_latency_seconds_bucket{{le=\"{le}\"}} {n}");
        }
        let _ = writeln!(out, "chat_store_latency_seconds_sum {sum}");
        let _ = writeln!(out, "chat_store_latency_seconds_count {count}");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family() {
        let m = HttpMetrics::default();
        m.count("/healthz", 200);
        m.count("/healthz", 200);
        let core = Metrics::default();
        core.store_latency
            .observe(std::time::Duration::from_millis(3));
        let text = m.render(&core);
        assert!(text.contains("chat_http_requests_total{route=\"/healthz\",status=\"200\"} 2\n"));
        assert!(text.contains("# TYPE chat_store_latency_seconds histogram\n"));
        assert!(text.contains("chat_store_latency_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(text.contains("chat_store_latency_seconds_bucket{le=\"+Inf\"} 1\n"));
        assert!(text.contains("chat_store_latency_seconds_count 1\n"));
        assert!(text.contains("chat_connections 0\n"));
    }
}
