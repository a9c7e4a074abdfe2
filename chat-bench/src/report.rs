//! The end-of-run output: a table for people, or one JSON line for programs, from the same
//! rows. Also the once-a-second progress line on stderr.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{Map, Value};

/// Ordered results of one run.
#[derive(Debug)]
pub struct Report {
    rows: Vec<(&'static str, Value, &'static str)>,
}

impl Report {
    pub fn new(mode: &'static str) -> Report {
        Report {
            rows: vec![("mode", Value::from(mode), "")],
        }
    }

    /// Adds a row: JSON key, value (`None` becomes null / "-"), and the unit or explanation
    /// shown in the table.
    pub fn add(
        &mut self,
        key: &'static str,
        value: impl Into<Value>,
        note: &'static str,
    ) -> &mut Self {
        self.rows.push((key, value.into(), note));
        self
    }

    /// Adds a float rounded to three decimals (JSON stays readable).
    pub fn num(&mut self, key: &'static str, value: Option<f64>, note: &'static str) -> &mut Self {
        let v = value
            .filter(|v| v.is_finite())
            .map(|v| Value::from((v * 1000.0).round() / 1000.0))
            .unwrap_or(Value::Null);
        self.rows.push((key, v, note));
        self
    }

    /// p50/p90/p99/max of a microsecond histogram, as `<prefix>_p50_us`... keys.
    pub fn latency(&mut self, keys: [&'static str; 5], h: &Histogram<u64>) -> &mut Self {
        let [p50, p90, p99, max, mean] = keys;
        let q = |q: f64| (!h.is_empty()).then(|| h.value_at_quantile(q));
        self.add(p50, q(0.5), "µs");
        self.add(p90, q(0.9), "µs");
        self.add(p99, q(0.99), "µs");
        self.add(max, (!h.is_empty()).then(|| h.max()), "µs");
        self.num(mean, (!h.is_empty()).then(|| h.mean()), "µs")
    }

    pub fn print(&self, json: bool) {
        if json {
            let map: Map<String, Value> = self
                .rows
                .iter()
                .map(|(k, v, _)| (k.to_string(), v.clone()))
                .collect();
            println!("{}", Value::Object(map));
            return;
        }
        let width = self.rows.iter().map(|(k, _, _)| k.len()).max().unwrap_or(0);
        for (k, v, note) in &self.rows {
            let shown = match v {
                Value::Null => "-".to_string(),
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            println!("{k:<width$}  {shown:>14}  {note}");
        }
    }
}

/// A microsecond latency histogram: 1 µs to 10 minutes at 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("constant bounds the library accepts")
}

/// Prints `line()` on stderr once a second until dropped.
#[derive(Debug)]
pub struct Progress {
    stop: Arc<AtomicBool>,
}

impl Progress {
    pub fn start(
        mode: &'static str,
        mut line: impl FnMut() -> String + Send + 'static,
    ) -> Progress {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let started = Instant::now();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(
                tokio::time::Instant::now() + Duration::from_secs(1),
                Duration::from_secs(1),
            );
            loop {
                tick.tick().await;
                if flag.load(Ordering::Relaxed) {
                    return;
                }
                eprintln!(
                    "[{mode} {:>4.0}s] {}",
                    started.elapsed().as_secs_f64(),
                    line()
                );
            }
        });
        Progress { stop }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
