//! # chat-ws
//!
//! The WebSocket adapter: the contract's event protocol over raw tokio-tungstenite, on a
//! connection that `chat-http` has already upgraded. It owns the wire format of socket frames,
//! the per-socket limits and timers, and the local registry of sockets ([`Hub`]) that receives
//! this node's deliveries from the bus. It knows nothing of Redis or of HTTP routing.
//!
//! INTERFACE (agreed with chat-http; the implementation fills it in).

use std::time::Duration;

use chat_core::{ChatService, Delivery, EventSink, Session};
use tokio::io::{AsyncRead, AsyncWrite};

/// Per-socket limits and timers (the contract's flags).
#[derive(Debug, Clone)]
pub struct WsConfig {
    /// Largest client frame; bigger closes the socket with 1009.
    pub max_frame_bytes: usize,
    /// Token bucket refill per second over client frames.
    pub frames_per_sec: u64,
    /// Token bucket burst.
    pub frame_burst: u64,
    /// The server pings every socket this often.
    pub ping_interval: Duration,
    /// A socket silent this long (no frame, no pong) is closed with 1000.
    pub idle_timeout: Duration,
    /// Outgoing frames queued per socket before it counts as a slow reader (closed with 1008).
    pub send_queue: usize,
}

impl Default for WsConfig {
    fn default() -> WsConfig {
        WsConfig {
            max_frame_bytes: 65_536,
            frames_per_sec: 20,
            frame_burst: 40,
            ping_interval: Duration::from_secs(25),
            idle_timeout: Duration::from_secs(60),
            send_queue: 1024,
        }
    }
}

/// The sockets of this node. Cheap to clone. Attach it to the bus as the sink.
#[derive(Clone, Debug)]
pub struct Hub {
    service: ChatService,
    config: WsConfig,
}

impl Hub {
    /// A hub serving sockets for `service`; attaches itself to the service's bus as its sink.
    pub fn new(service: ChatService, config: WsConfig) -> Hub {
        Hub { service, config }
    }

    /// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`; `None` when the key is not
    /// 24 base64 characters (the upgrade is then refused with 400).
    pub fn accept_key(client_key: &str) -> Option<String> {
        let _ = client_key;
        None
    }

    /// Serves one upgraded connection of an authenticated session until it closes.
    pub async fn serve<IO>(&self, io: IO, session: Session)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let _ = (io, session, &self.service, &self.config);
    }

    /// Starts the shutdown: every socket is closed with 1001.
    pub fn shutdown(&self) {}

    /// Resolves when every socket has closed after [`Hub::shutdown`].
    pub async fn closed(&self) {}
}

impl EventSink for Hub {
    fn deliver(&self, delivery: &Delivery) {
        let _ = delivery;
    }
}
