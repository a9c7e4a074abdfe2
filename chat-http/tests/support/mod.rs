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
    Appended, ChatRequest, ChatService, Config, ConnKey, DueTimer, EndedSession, Error,
    HistoryPage, MemoryStore, MessageId, Millis, NewMessage, NewRoom, NodeId, OnlinePage, Phone,
    PresenceState, Registered, Requests, Result, Room, RoomId, SendOutcome, Session, Store,
    SystemClock, Timer, TokenDigest, Touched,
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
            1 => Err(Error::StoreUnavailable),
            2 => panic!("the test store panics, as told"),
            _ => std::future::pending().await,
        }
    }
}

#[async_trait::async_trait]
impl Store for FlakyStore {
    async fn create_session(
        &self,
        session: Session,
        refresh: Option<TokenDigest>,
        http_until: Millis,
    ) -> Result<Registered> {
        self.gate().await?;
        self.inner
            .create_session(session, refresh, http_until)
            .await
    }
    async fn session(&self, token: &TokenDigest) -> Result<Option<Session>> {
        self.gate().await?;
        self.inner.session(token).await
    }
    async fn names(&self, phones: &[Phone]) -> Result<chat_core::Names> {
        self.gate().await?;
        self.inner.names(phones).await
    }
    async fn create_ticket(
        &self,
        ticket: &TokenDigest,
        token: &TokenDigest,
        now: Millis,
        expires_at: Millis,
    ) -> Result<()> {
        self.gate().await?;
        self.inner
            .create_ticket(ticket, token, now, expires_at)
            .await
    }
    async fn take_ticket(&self, ticket: &TokenDigest, now: Millis) -> Result<Option<Session>> {
        self.gate().await?;
        self.inner.take_ticket(ticket, now).await
    }
    async fn touch(&self, token: &TokenDigest, http_until: Millis) -> Result<Option<Touched>> {
        self.gate().await?;
        self.inner.touch(token, http_until).await
    }
    async fn add_conn(&self, phone: &Phone, conn: &ConnKey) -> Result<bool> {
        self.gate().await?;
        self.inner.add_conn(phone, conn).await
    }
    async fn remove_conn(
        &self,
        phone: &Phone,
        conn: &ConnKey,
        now: Millis,
        grace_until: Millis,
    ) -> Result<()> {
        self.gate().await?;
        self.inner.remove_conn(phone, conn, now, grace_until).await
    }
    async fn presence(&self, phone: &Phone) -> Result<Option<PresenceState>> {
        self.gate().await?;
        self.inner.presence(phone).await
    }
    async fn go_offline(&self, phone: &Phone, now: Millis, session_end_at: Millis) -> Result<bool> {
        self.gate().await?;
        self.inner.go_offline(phone, now, session_end_at).await
    }
    async fn online_page(
        &self,
        cursor: Option<String>,
        limit: usize,
        now: Millis,
    ) -> Result<OnlinePage> {
        self.gate().await?;
        self.inner.online_page(cursor, limit, now).await
    }
    async fn heartbeat(&self, node: &NodeId, alive_until: Millis) -> Result<()> {
        self.gate().await?;
        self.inner.heartbeat(node, alive_until).await
    }
    async fn reap_dead_nodes(&self, now: Millis, grace_until: Millis) -> Result<Vec<Phone>> {
        self.gate().await?;
        self.inner.reap_dead_nodes(now, grace_until).await
    }
    async fn remove_node(
        &self,
        node: &NodeId,
        now: Millis,
        grace_until: Millis,
    ) -> Result<Vec<Phone>> {
        self.gate().await?;
        self.inner.remove_node(node, now, grace_until).await
    }
    async fn send_request(&self, request: ChatRequest, room: NewRoom) -> Result<SendOutcome> {
        self.gate().await?;
        self.inner.send_request(request, room).await
    }
    async fn accept_request(
        &self,
        from: &Phone,
        to: &Phone,
        room: NewRoom,
        now: Millis,
    ) -> Result<Option<Room>> {
        self.gate().await?;
        self.inner.accept_request(from, to, room, now).await
    }
    async fn remove_request(&self, from: &Phone, to: &Phone, now: Millis) -> Result<bool> {
        self.gate().await?;
        self.inner.remove_request(from, to, now).await
    }
    async fn requests(&self, phone: &Phone, now: Millis) -> Result<Requests> {
        self.gate().await?;
        self.inner.requests(phone, now).await
    }
    async fn room(&self, id: &RoomId) -> Result<Option<Room>> {
        self.gate().await?;
        self.inner.room(id).await
    }
    async fn rooms_of(&self, phone: &Phone) -> Result<Vec<Room>> {
        self.gate().await?;
        self.inner.rooms_of(phone).await
    }
    async fn delete_room(&self, id: &RoomId) -> Result<Option<Room>> {
        self.gate().await?;
        self.inner.delete_room(id).await
    }
    async fn append_message(
        &self,
        room: &RoomId,
        message: NewMessage,
        history_max: usize,
    ) -> Result<Appended> {
        self.gate().await?;
        self.inner.append_message(room, message, history_max).await
    }
    async fn history(
        &self,
        room: &RoomId,
        after: Option<MessageId>,
        limit: usize,
    ) -> Result<HistoryPage> {
        self.gate().await?;
        self.inner.history(room, after, limit).await
    }
    async fn end_session(
        &self,
        phone: &Phone,
        offline_before: Millis,
    ) -> Result<Option<EndedSession>> {
        self.gate().await?;
        self.inner.end_session(phone, offline_before).await
    }
    async fn schedule(&self, timer: Timer, at: Millis) -> Result<()> {
        self.gate().await?;
        self.inner.schedule(timer, at).await
    }
    async fn due_timers(
        &self,
        now: Millis,
        lease_until: Millis,
        limit: usize,
    ) -> Result<Vec<DueTimer>> {
        self.gate().await?;
        self.inner.due_timers(now, lease_until, limit).await
    }
    async fn finish_timer(&self, due: &DueTimer) -> Result<()> {
        self.gate().await?;
        self.inner.finish_timer(due).await
    }
    async fn ping(&self) -> Result<()> {
        self.gate().await?;
        self.inner.ping().await
    }
}

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
        let arc: Arc<FlakyStore> = Arc::new(store.clone());
        let service = ChatService::new(
            arc.clone(),
            Arc::new(store.inner.clone()),
            Arc::new(SystemClock),
            Config::default(),
            NodeId::random(),
        );
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
