//! chat-store-redis (in progress)
