//! The end-to-end suite: PROTOCOL.md, executed against real `chat-server` processes.
//!
//! One test binary (one link) with a module per area. Tests that depend on the store run once per
//! backend (`<area>::memory::<name>`, `<area>::redis::<name>`); each test starts its own server
//! (and redis-server) and kills them when it ends.

mod api;
mod bad_input;
mod blocking;
mod ceiling;
mod cluster;
mod failover;
mod lifecycle;
mod openapi;
mod pages;
mod people;
mod races;
mod reads;
mod secrets;
mod socket;
mod timed;
mod webhooks;

use std::time::{SystemTime, UNIX_EPOCH};

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_millis(),
    )
    .expect("ms fit u64")
}
