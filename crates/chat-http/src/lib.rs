//! chat-http (in progress)
