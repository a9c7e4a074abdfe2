//! Test support: a served [`chat_http::App`] on 127.0.0.1:0 over a memory store that tests
//! can make fail, and a tiny HTTP/1.1 client over a raw `TcpStream` (so tests see exactly
//! what goes over the wire, and the dev-dependencies stay lean).

#![allow(dead_code)] // each test binary uses a part of it
#![allow(clippy::unwrap_used)] // helpers too (clippy.toml covers #[test] fns only)

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use chat_core::{
    ChatService, Config, Error, InstrumentedStore, MemoryStore, Metrics, NodeId, Result, Store,
    SystemClock,
};
use chat_http::{App, HttpConfig};
use chat_ws::{Hub, WsConfig};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How the [`FlakyStore`] behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// Delegates to the memory store.
    Up = 0,
    /// Every call fails with `StoreUnavailable`.
    Down = 1,
    /// Every call panics.
    Panics = 2,
    /// Every call hangs forever.
    Hangs = 3,
}

/// A [`MemoryStore`] whose calls can be made to fail, panic or hang.
#[derive(Clone, Default)]
pub struct FlakyStore {
    inner: MemoryStore,
    mode: Arc<AtomicU8>,
}

impl FlakyStore {
    pub fn set(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }

    async fn gate(&self) -> Result<()> {
        match self.mode.load(Ordering::SeqCst) {
            0 => Ok(()),
            1 => Err(Error::unavailable("down")),
            2 => panic!("the test store panics, as told"),
            _ => std::future::pending().await,
        }
    }
}

chat_core::delegate_store!(FlakyStore, self => self.inner, call => {
    self.gate().await?;
    call.await
});

/// A server under test.
pub struct TestServer {
    pub addr: SocketAddr,
    pub service: ChatService,
    pub store: FlakyStore,
    stop: Option<oneshot::Sender<()>>,
    pub task: Option<JoinHandle<()>>,
}

impl TestServer {
    /// A server with the default settings, except a generous registration limit.
    pub async fn start() -> TestServer {
        TestServer::with(HttpConfig {
            registrations_per_min: 1000,
            ..HttpConfig::default()
        })
        .await
    }

    pub async fn with(config: HttpConfig) -> TestServer {
        let store = FlakyStore::default();
        // Instrumented as chat-server's store is, so `/metrics` shows store calls.
        let metrics = Arc::new(Metrics::default());
        let arc: Arc<dyn Store> = Arc::new(InstrumentedStore::new(
            Arc::new(store.clone()),
            Arc::clone(&metrics),
        ));
        let service = ChatService::new(
            arc.clone(),
            Arc::new(store.inner.clone()),
            Arc::new(SystemClock),
            Config::default(),
            NodeId::random(),
        )
        .with_metrics(metrics);
        let hub = Hub::new(service.clone(), WsConfig::default());
        let app = App::new(service.clone(), hub, arc, config);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(chat_http::serve(listener, app, async move {
            let _ = rx.await;
        }));
        TestServer {
            addr,
            service,
            store,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// Triggers the shutdown.
    pub fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }

    /// One request on a fresh connection.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> Reply {
        let mut headers = Vec::new();
        if let Some(t) = token {
            headers.push(("Authorization".to_owned(), format!("Bearer {t}")));
        }
        self.raw(method, path, &headers, body.map(str::as_bytes))
            .await
    }

    /// One request with the given headers on a fresh connection.
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        headers: &[(String, String)],
        body: Option<&[u8]>,
    ) -> Reply {
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            self.addr
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if let Some(b) = body {
            req.push_str(&format!("Content-Length: {}\r\n", b.len()));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        if let Some(b) = body {
            bytes.extend_from_slice(b);
        }
        self.send_bytes(&bytes).await
    }

    /// Writes `bytes` on a fresh connection and reads the response until the server closes.
    pub async fn send_bytes(&self, bytes: &[u8]) -> Reply {
        let mut s = TcpStream::connect(self.addr).await.unwrap();
        s.write_all(bytes).await.unwrap();
        read_reply(&mut s).await
    }

    /// Registers `phone` and returns its token.
    pub async fn register(&self, phone: &str) -> String {
        let r = self
            .call(
                "POST",
                "/register_user",
                None,
                Some(&format!(r#"{{"phone":"{phone}"}}"#)),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        r.json["token"].as_str().unwrap().to_owned()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A parsed response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub text: String,
    pub json: Value,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Asserts the failure envelope and returns the code.
    pub fn code(&self) -> &str {
        assert_eq!(self.json["success"], false, "{}", self.text);
        assert!(self.json["error"].is_string(), "{}", self.text);
        self.json["code"].as_str().unwrap()
    }
}

/// Reads one response from a connection the server closes after it (`Connection: close`).
pub async fn read_reply(s: &mut TcpStream) -> Reply {
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .expect("the server answered within 10 s")
        .unwrap();
    parse_reply(&buf).expect("a complete HTTP response")
}

/// Parses one response (`Content-Length` body, or up to the end); `None` unless the head is
/// complete and well-formed.
pub fn parse_reply(buf: &[u8]) -> Option<Reply> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut head = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(end) = head.parse(buf).ok()? else {
        return None;
    };
    let status = head.code?;
    let headers = head
        .headers
        .iter()
        .map(|h| {
            Some((
                h.name.to_owned(),
                std::str::from_utf8(h.value).ok()?.to_owned(),
            ))
        })
        .collect::<Option<Vec<_>>>()?;
    let rest = &buf[end..];
    let len = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(rest.len());
    // A HEAD answer announces a length and sends no body.
    let body = rest.get(..len).unwrap_or(rest);
    let text = String::from_utf8_lossy(body).into_owned();
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    Some(Reply {
        status,
        headers,
        text,
        json,
    })
}
