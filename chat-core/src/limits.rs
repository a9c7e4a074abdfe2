//! Rate limits as pure values over a clock reading: a token bucket, and a bounded map of
//! buckets per key (client address). The adapters own one per socket and one per node.

use std::collections::HashMap;
use std::hash::Hash;

use crate::types::Millis;

/// A token bucket refilled evenly at `rate` tokens per `per_ms`, holding at most `burst`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    /// Tokens, in thousandths, so slow refills stay exact.
    milli_tokens: u64,
    /// Last refill time.
    at: Millis,
    /// Capacity in thousandths.
    burst_milli: u64,
    /// Tokens per `per_ms`.
    rate: u64,
    /// The refill period.
    per_ms: u64,
}

impl TokenBucket {
    /// A full bucket of `burst` tokens refilling `rate` per `per_ms` milliseconds.
    pub fn new(rate: u64, per_ms: u64, burst: u64, now: Millis) -> TokenBucket {
        TokenBucket {
            milli_tokens: burst.saturating_mul(1000),
            at: now,
            burst_milli: burst.saturating_mul(1000),
            rate,
            per_ms: per_ms.max(1),
        }
    }

    /// `rate` tokens per second.
    pub fn per_second(rate: u64, burst: u64, now: Millis) -> TokenBucket {
        TokenBucket::new(rate, 1000, burst, now)
    }

    fn refill(&mut self, now: Millis) {
        if now > self.at {
            let gained = (now - self.at)
                .saturating_mul(self.rate)
                .saturating_mul(1000)
                / self.per_ms;
            self.milli_tokens = self
                .milli_tokens
                .saturating_add(gained)
                .min(self.burst_milli);
            self.at = now;
        }
    }

    /// Takes one token. `Err(ms)` says how long until one is there.
    pub fn take(&mut self, now: Millis) -> Result<(), u64> {
        self.refill(now);
        if self.milli_tokens >= 1000 {
            self.milli_tokens -= 1000;
            Ok(())
        } else if self.rate == 0 {
            Err(u64::MAX)
        } else {
            let missing = 1000 - self.milli_tokens;
            Err((missing.saturating_mul(self.per_ms)).div_ceil(self.rate.saturating_mul(1000)))
        }
    }

    /// Whether the bucket is full at `now` (so forgetting it changes nothing).
    pub fn is_full(&mut self, now: Millis) -> bool {
        self.refill(now);
        self.milli_tokens >= self.burst_milli
    }
}

/// One token bucket per key, e.g. per client address. Buckets that refilled completely are
/// forgotten, so memory tracks only keys that were active within one refill period.
#[derive(Debug)]
pub struct KeyedLimiter<K> {
    buckets: HashMap<K, TokenBucket>,
    rate: u64,
    per_ms: u64,
    burst: u64,
    /// When full buckets were last swept.
    swept_at: Millis,
}

impl<K: Hash + Eq + Clone> KeyedLimiter<K> {
    /// `rate` per `per_ms` with `burst`, per key.
    pub fn new(rate: u64, per_ms: u64, burst: u64) -> KeyedLimiter<K> {
        KeyedLimiter {
            buckets: HashMap::new(),
            rate,
            per_ms,
            burst,
            swept_at: 0,
        }
    }

    /// Takes one token for `key`. `Err(secs)`: retry after that many whole seconds (≥ 1).
    pub fn take(&mut self, key: &K, now: Millis) -> Result<(), u64> {
        if now.saturating_sub(self.swept_at) >= self.per_ms {
            self.buckets.retain(|_, b| !b.is_full(now));
            self.swept_at = now;
        }
        let (rate, per_ms, burst) = (self.rate, self.per_ms, self.burst);
        self.buckets
            .entry(key.clone())
            .or_insert_with(|| TokenBucket::new(rate, per_ms, burst, now))
            .take(now)
            .map_err(|ms| ms.div_ceil(1000).max(1))
    }

    /// How many keys are tracked.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_burst_then_refills_evenly() {
        let mut b = TokenBucket::per_second(20, 40, 0);
        for _ in 0..40 {
            assert!(b.take(0).is_ok());
        }
        assert_eq!(b.take(0), Err(50));
        assert!(b.take(49).is_err());
        assert!(b.take(50).is_ok());
        assert!(b.take(50).is_err());
    }

    #[test]
    fn keyed_limiter_says_retry_after_and_forgets_idle_keys() {
        let mut l = KeyedLimiter::new(10, 60_000, 10);
        for _ in 0..10 {
            assert!(l.take(&"a", 0).is_ok());
        }
        assert_eq!(l.take(&"a", 0), Err(6));
        assert!(l.take(&"b", 0).is_ok());
        assert_eq!(l.len(), 2);
        // A full refill later, both buckets are full and are swept on the next take.
        assert!(l.take(&"c", 120_000).is_ok());
        assert_eq!(l.len(), 1);
    }
}
