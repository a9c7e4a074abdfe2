//! Time, injected: every lifetime rule reads a [`Clock`], so tests move time instead of sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::types::Millis;

/// A source of the current unix time in milliseconds.
pub trait Clock: Send + Sync + 'static {
    /// Now, in unix milliseconds.
    fn now(&self) -> Millis;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Millis {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }
}

/// A clock that only moves when told to. Clones share the same time.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// A clock standing at `start` (unix ms).
    pub fn new(start: Millis) -> ManualClock {
        ManualClock(Arc::new(AtomicU64::new(start)))
    }

    /// Moves the clock forward by `ms`.
    pub fn advance(&self, ms: u64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }

    /// Sets the clock.
    pub fn set(&self, at: Millis) {
        self.0.store(at, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Millis {
        self.0.load(Ordering::SeqCst)
    }
}

/// Formats unix milliseconds as RFC 3339 UTC with milliseconds, e.g. `2026-11-25T17:40:00.123Z`.
///
/// ```
/// assert_eq!(chat_core::time::rfc3339(1_795_628_400_123), "2026-11-25T17:40:00.123Z");
/// assert_eq!(chat_core::time::rfc3339(0), "1970-01-01T00:00:00.000Z");
/// ```
pub fn rfc3339(ms: Millis) -> String {
    let mut out = String::with_capacity(24);
    push_rfc3339(&mut out, ms);
    out
}

/// Appends [`rfc3339`]`(ms)` to `out` without allocating: the socket adapter writes every
/// message's timestamp this way, straight into the frame it is building.
pub fn push_rfc3339(out: &mut String, ms: Millis) {
    let secs = ms / 1000;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2));
    let Ok(year @ 0..=9999) = u64::try_from(y) else {
        // Five-digit years (from 10000-01-01): the rare, slow path.
        use std::fmt::Write as _;
        let _ = write!(
            out,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
            rem / 3600,
            (rem % 3600) / 60,
            rem % 60,
            ms % 1000
        );
        return;
    };
    push_padded(out, year, 4);
    out.push('-');
    push_padded(out, u64::from(m), 2);
    out.push('-');
    push_padded(out, u64::from(d), 2);
    out.push('T');
    push_padded(out, rem / 3600, 2);
    out.push(':');
    push_padded(out, (rem % 3600) / 60, 2);
    out.push(':');
    push_padded(out, rem % 60, 2);
    out.push('.');
    push_padded(out, ms % 1000, 3);
    out.push('Z');
}

/// `n` in decimal with leading zeros to `width` digits (`n` has at most `width`, at most 4).
fn push_padded(out: &mut String, mut n: u64, width: usize) {
    let mut digits = [b'0'; 4];
    for at in (0..width).rev() {
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    for &d in &digits[..width] {
        out.push(char::from(d));
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let m = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plain `format!` rendering, as the fast writer must produce it.
    fn reference(ms: Millis) -> String {
        let secs = ms / 1000;
        let rem = secs % 86_400;
        let (y, m, d) = civil_from_days(i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2));
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
            rem / 3600,
            (rem % 3600) / 60,
            rem % 60,
            ms % 1000
        )
    }

    #[test]
    fn the_writer_agrees_with_format_everywhere() {
        const YEAR_10000_MS: u64 = 253_402_300_800_000;
        let check = |ms: u64| assert_eq!(rfc3339(ms), reference(ms), "{ms}");
        // Every leap-year corner and month end of a few centuries, and a pseudo-random sweep.
        for day in (0..160_000u64).step_by(7) {
            check(day * 86_400_000 + day % 86_400_000);
            check(day * 86_400_000 + 86_399_999);
        }
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            check(x % (YEAR_10000_MS + 1_000_000));
        }
        for ms in [0, YEAR_10000_MS - 1, YEAR_10000_MS, u64::MAX] {
            check(ms);
        }
        assert_eq!(rfc3339(YEAR_10000_MS), "10000-01-01T00:00:00.000Z");
    }

    #[test]
    fn leap_day_and_year_end() {
        // 2024-02-29T12:00:00Z
        assert_eq!(rfc3339(1_709_208_000_000), "2024-02-29T12:00:00.000Z");
        // 1999-12-31T23:59:59.999Z
        assert_eq!(rfc3339(946_684_799_999), "1999-12-31T23:59:59.999Z");
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new(10);
        let c2 = c.clone();
        assert_eq!(c.now(), 10);
        c2.advance(5);
        assert_eq!(c.now(), 15);
        c.set(100);
        assert_eq!(c2.now(), 100);
    }
}
