//! Deadlines: timers in a due-ordered index, leased to one node at a time.

use std::fmt;

use crate::error::{Error, Result};
use crate::types::{Millis, Phone, RoomId};

/// A deadline the service acts on when it passes. Stores keep them in a due-ordered index
/// (a sorted set in Redis) and hand each one out to one node at a time ([`TimerStore::due_timers`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Timer {
    /// The user's HTTP presence window may have ended: go offline if nothing else holds them.
    Presence(Phone),
    /// The user's session may have outlived its idle time: end it.
    SessionEnd(Phone),
    /// The room reaches its TTL.
    RoomExpiry(RoomId),
    /// Both members of the room may have been offline for `room_idle`.
    RoomIdle(RoomId),
    /// A pending request reaches its TTL (silently).
    RequestExpiry {
        /// Requester.
        from: Phone,
        /// Recipient.
        to: Phone,
    },
}

impl Timer {
    /// A compact text form, for stores that keep timers as strings.
    pub fn encode(&self) -> String {
        match self {
            Timer::Presence(p) => format!("p|{p}"),
            Timer::SessionEnd(p) => format!("s|{p}"),
            Timer::RoomExpiry(r) => format!("e|{r}"),
            Timer::RoomIdle(r) => format!("i|{r}"),
            Timer::RequestExpiry { from, to } => format!("q|{from}|{to}"),
        }
    }

    /// The inverse of [`Timer::encode`].
    pub fn decode(s: &str) -> Result<Timer> {
        let bad = || Error::bad_request(format!("not a timer: {s}"));
        let (kind, rest) = s.split_once('|').ok_or_else(bad)?;
        let room = |r: &str| RoomId::parse(r).ok_or_else(bad);
        Ok(match kind {
            "p" => Timer::Presence(Phone::parse(rest)?),
            "s" => Timer::SessionEnd(Phone::parse(rest)?),
            "e" => Timer::RoomExpiry(room(rest)?),
            "i" => Timer::RoomIdle(room(rest)?),
            "q" => {
                let (from, to) = rest.split_once('|').ok_or_else(bad)?;
                Timer::RequestExpiry {
                    from: Phone::parse(from)?,
                    to: Phone::parse(to)?,
                }
            }
            _ => return Err(bad()),
        })
    }
}

impl fmt::Display for Timer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.encode())
    }
}

/// A timer handed out by [`TimerStore::due_timers`], leased to the caller until `lease_until`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueTimer {
    /// The deadline that passed.
    pub timer: Timer,
    /// The timer was moved to this time; if the caller dies it comes due again then.
    pub lease_until: Millis,
}

/// Deadlines the service acts on when they pass.
///
/// Part of the [`Store`](super::Store) port; its contract holds for every method here.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait::async_trait]
pub trait TimerStore: Send + Sync + 'static {
    /// Sets (or moves) a timer.
    async fn schedule(&self, timer: Timer, at: Millis) -> Result<()>;

    /// Leases up to `limit` timers due at `now` to the caller: each is moved to `lease_until`,
    /// so no other caller gets it before then.
    async fn due_timers(
        &self,
        now: Millis,
        lease_until: Millis,
        limit: usize,
    ) -> Result<Vec<DueTimer>>;

    /// Removes a leased timer that was handled, unless it was rescheduled since the lease.
    async fn finish_timer(&self, due: &DueTimer) -> Result<()>;
}
