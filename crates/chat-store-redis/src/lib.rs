//! # chat-store-redis
//!
//! The Redis implementation of chat-core's `Store` and `EventBus` (in progress).
//!
//! Feature `test-server`: [`test_server::RedisServer`] starts a private `redis-server` for tests.

#[cfg(feature = "test-server")]
pub mod test_server;
