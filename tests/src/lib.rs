//! End-to-end harness: real `chat-server` processes, real redis-servers, real HTTP and WebSocket
//! over loopback. The suite in `tests/e2e` is the executable form of `PROTOCOL.md`.
//!
//! This crate must not know the server's internals: it speaks only the wire contract. Its one
//! server-side dependency is chat-store-redis's `test_server` (a private redis-server per test),
//! never the store itself. Every process it starts is killed when its handle drops, and every
//! wait is bounded.
//!
//! Running: `cargo test -p chat-tests` (or plain `cargo test` at the workspace root). The first
//! test runs `cargo build -p chat-server` once, so the binary under test is never stale.
//! `redis-server` must be on `PATH` (tests never skip without it). Knobs, all optional:
//! `CHAT_E2E_LOG` (the servers' `RUST_LOG`, default `info`; their stderr is printed when a test
//! fails), `CHAT_SERVER_BIN` (test another binary), `CHAT_E2E_SKIP_BUILD=1` (use the binary as
//! it is). Store-bound tests are named `<area>::memory::<test>` and `<area>::redis::<test>`.

pub mod http;
pub mod server;
pub mod ws;

use std::future::Future;
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

pub use crate::http::Response;
pub use crate::server::Server;
pub use crate::ws::{Auth, EVENT_TIMEOUT, Next, RawWs, Ws};
pub use chat_store_redis::test_server::{RedisCluster, RedisServer};

/// The bound on one whole test.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(90);

/// Runs a test body with [`TEST_TIMEOUT`]. The server binary is built (once) before the clock
/// starts, so a first build never eats a test's time.
pub async fn bounded<F: Future<Output = ()>>(body: F) {
    tokio::task::spawn_blocking(server::server_binary)
        .await
        .expect("server build task");
    if tokio::time::timeout(TEST_TIMEOUT, body).await.is_err() {
        panic!("test did not finish within {TEST_TIMEOUT:?}");
    }
}

/// Which store a server runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The in-memory store (no `--redis-url`).
    Memory,
    /// A private redis-server.
    Redis,
    /// A private Redis Cluster (3 masters, 3 replicas): `--redis-cluster`.
    RedisCluster,
}

/// Generates, for each named `async fn name(backend: Backend)` of the enclosing module, a test
/// `memory::name` and a test `redis::name`.
#[macro_export]
macro_rules! backends {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $name() {
                    $crate::bounded(super::$name($crate::Backend::Memory)).await
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test]
                async fn $name() {
                    $crate::bounded(super::$name($crate::Backend::Redis)).await
                }
            )*
        }
    };
}

/// A unique key prefix per call, so tests sharing a Redis never see each other.
pub fn unique_prefix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "e2e{}x{}:",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A registered user.
#[derive(Debug, Clone)]
pub struct User {
    /// The normalised phone.
    pub phone: String,
    /// The session token.
    pub token: String,
}

/// Talks the contract to one server address.
#[derive(Debug, Clone, Copy)]
pub struct Client {
    /// The server's address.
    pub addr: SocketAddr,
}

impl Client {
    /// A client for `addr`.
    pub fn new(addr: SocketAddr) -> Client {
        Client { addr }
    }

    /// Any request.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&[u8]>,
    ) -> Response {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers = vec![];
        if let Some(a) = &auth {
            headers.push(("Authorization", a.as_str()));
        }
        if body.is_some() {
            headers.push(("Content-Type", "application/json"));
        }
        http::request(self.addr, method, path, &headers, body).await
    }

    /// `GET path` with an optional token.
    pub async fn get(&self, path: &str, token: Option<&str>) -> Response {
        self.request("GET", path, token, None).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> Response {
        self.request("POST", path, token, Some(body.to_string().as_bytes()))
            .await
    }

    /// `POST path` with raw bytes.
    pub async fn post_raw(&self, path: &str, token: Option<&str>, body: &[u8]) -> Response {
        self.request("POST", path, token, Some(body)).await
    }

    /// Registers `phone` (as typed) and returns the user with the normalised phone.
    pub async fn register(&self, phone: &str) -> User {
        let v = self
            .post("/register_user", None, &json!({"phone": phone}))
            .await
            .ok();
        let user = User {
            phone: v["phone"]
                .as_str()
                .expect("phone in register answer")
                .to_owned(),
            token: v["token"]
                .as_str()
                .expect("token in register answer")
                .to_owned(),
        };
        assert!(
            user.token.len() >= 22,
            "token too short to hold 128 bits: {v}"
        );
        user
    }

    /// Opens a socket for `user` and consumes `connection_status`.
    pub async fn ws(&self, user: &User) -> Ws {
        Ws::connect(self.addr, &user.token, &user.phone).await
    }

    /// `a` asks `b`, `b` accepts; returns the room id.
    pub async fn make_room(&self, a: &User, b: &User) -> String {
        self.post(
            "/send_request",
            Some(&a.token),
            &json!({"phone1": a.phone, "phone2": b.phone}),
        )
        .await
        .ok();
        self.accept(b, &a.phone).await
    }

    /// `me` accepts the pending request of `requester`; returns the room id.
    pub async fn accept(&self, me: &User, requester: &str) -> String {
        let v = self
            .post(
                "/respond_request",
                Some(&me.token),
                &json!({"phone1": requester, "phone2": me.phone, "action": "accept"}),
            )
            .await
            .ok();
        assert_eq!(v["message"]["accepted"], true, "accept answer: {v}");
        v["message"]["chat_id"]
            .as_str()
            .expect("chat_id in accept answer")
            .to_owned()
    }

    /// The phones `GET /online_users` lists, walking every page.
    pub async fn online(&self, token: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..1000 {
            let path = match &cursor {
                Some(c) => format!("/online_users?cursor={c}"),
                None => "/online_users".to_owned(),
            };
            let v = self.get(&path, Some(token)).await.ok();
            for p in v["online_users"].as_array().expect("online_users array") {
                out.push(p.as_str().expect("phone string").to_owned());
            }
            match v["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => {
                    assert!(v["next_cursor"].is_null(), "next_cursor: {v}");
                    return out;
                }
            }
        }
        panic!("online_users walk did not end");
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        let r = self.get("/metrics", None).await;
        assert_eq!(r.status, 200, "metrics: {}", r.text());
        r.text()
    }
}

/// One server (and its Redis, when it has one). Derefs to a [`Client`] for that server.
pub struct App {
    /// The server process.
    pub server: Server,
    /// The private redis-server, for [`Backend::Redis`].
    pub redis: Option<RedisServer>,
    /// The private Redis Cluster, for [`Backend::RedisCluster`].
    pub cluster: Option<Arc<RedisCluster>>,
    /// The key prefix the server uses on that Redis.
    pub prefix: String,
    client: Client,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").field("server", &self.server).finish()
    }
}

impl Deref for App {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

/// Flags every test server gets unless the test sets them: registrations are not what most tests
/// are about.
fn with_defaults(flags: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = flags.iter().map(|s| (*s).to_owned()).collect();
    if !flags.contains(&"--registrations-per-min") {
        args.extend(["--registrations-per-min".into(), "100000".into()]);
    }
    args
}

impl App {
    /// Starts a server on `backend` with extra `flags`.
    pub async fn start(backend: Backend, flags: &[&str]) -> App {
        let redis = match backend {
            Backend::Memory => None,
            Backend::Redis => Some(start_redis().await),
            Backend::RedisCluster => {
                return App::start_on_cluster(Arc::new(start_cluster().await), flags).await;
            }
        };
        App::start_on(redis, flags).await
    }

    /// Starts a server on this Redis Cluster (`--redis-cluster` with every node's URL) with
    /// extra `flags`.
    pub async fn start_on_cluster(cluster: Arc<RedisCluster>, flags: &[&str]) -> App {
        App::launch(flags, None, Some(cluster)).await
    }

    /// Starts a server on this redis-server (or the in-memory store) with extra `flags`.
    pub async fn start_on(redis: Option<RedisServer>, flags: &[&str]) -> App {
        App::launch(flags, redis, None).await
    }

    /// Starts a server on the redis-server, else the cluster, else the in-memory store, under a
    /// key prefix of its own.
    async fn launch(
        flags: &[&str],
        redis: Option<RedisServer>,
        cluster: Option<Arc<RedisCluster>>,
    ) -> App {
        let prefix = unique_prefix();
        let mut args = with_defaults(flags);
        let store = match (&redis, &cluster) {
            (Some(r), _) => Some(("--redis-url", r.url())),
            (None, Some(c)) => Some(("--redis-cluster", c.url())),
            (None, None) => None,
        };
        if let Some((flag, url)) = store {
            args.extend([flag.into(), url, "--key-prefix".into(), prefix.clone()]);
        }
        let server = Server::start(&args).await;
        let client = Client::new(server.addr);
        App {
            server,
            redis,
            cluster,
            prefix,
            client,
        }
    }

    /// Starts another server with the same flags (the same Redis and key prefix, if any).
    pub async fn another_node(&self) -> Server {
        Server::start(&self.server.args).await
    }

    /// The private redis-server; panics on the memory backend.
    pub fn redis(&self) -> &RedisServer {
        self.redis.as_ref().expect("this app runs on Redis")
    }

    /// Replaces the server by `server` (after a restart).
    pub fn replace_server(&mut self, server: Server) -> Server {
        self.client = Client::new(server.addr);
        std::mem::replace(&mut self.server, server)
    }
}

/// Starts a private redis-server (without persistence) off the async threads.
pub async fn start_redis() -> RedisServer {
    tokio::task::spawn_blocking(RedisServer::start)
        .await
        .expect("redis start task")
}

/// Starts a private Redis Cluster (3 masters, 3 replicas) off the async threads.
pub async fn start_cluster() -> RedisCluster {
    tokio::task::spawn_blocking(RedisCluster::start)
        .await
        .expect("redis cluster start task")
}

/// Starts a private redis-server with AOF `appendfsync always` (survives its own restart).
pub async fn start_redis_persistent() -> RedisServer {
    tokio::task::spawn_blocking(RedisServer::start_persistent)
        .await
        .expect("redis start task")
}

/// Polls `check` every 50 ms until it returns true or `wait` passes; returns whether it did.
/// For state that has no event to wait on (e.g. an HTTP-visible list).
pub async fn eventually<F, Fut>(wait: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The sum of a Prometheus metric's samples (over its labels) in `/metrics` text, if it has any.
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            continue;
        }
        let value: f64 = line.rsplit(' ').next()?.parse().ok()?;
        *found.get_or_insert(0.0) += value;
    }
    found
}

/// Checks a `<message>` object's shape and returns it.
#[track_caller]
pub fn assert_message(m: &Value, room: &str, sender: &str, text: &str) {
    assert_eq!(m["room"], room, "message room: {m}");
    assert_eq!(m["sender"], sender, "message sender: {m}");
    assert_eq!(m["message"], text, "message text: {m}");
    assert!(
        m["id"].as_str().is_some_and(|s| !s.is_empty()),
        "message id: {m}"
    );
    assert!(
        m["client_id"].is_null() || m["client_id"].is_string(),
        "client_id: {m}"
    );
    assert!(m.get("client_id").is_some(), "client_id field missing: {m}");
    let ts = m["timestamp"].as_str().unwrap_or_default();
    assert!(
        is_rfc3339_millis(ts),
        "timestamp not RFC 3339 UTC with ms: {m}"
    );
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn is_rfc3339_millis(ts: &str) -> bool {
    let b = ts.as_bytes();
    b.len() == 24
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'.',
            23 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

/// The ids of a list of messages.
pub fn ids(messages: &Value) -> Vec<String> {
    messages
        .as_array()
        .expect("messages array")
        .iter()
        .map(|m| m["id"].as_str().expect("id").to_owned())
        .collect()
}

/// The texts of a list of messages.
pub fn texts(messages: &Value) -> Vec<String> {
    messages
        .as_array()
        .expect("messages array")
        .iter()
        .map(|m| m["message"].as_str().expect("message text").to_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps() {
        assert!(super::is_rfc3339_millis("2026-11-25T17:40:00.123Z"));
        assert!(!super::is_rfc3339_millis("2026-11-25T17:40:00Z"));
        assert!(!super::is_rfc3339_millis("2026-11-25 17:40:00.123Z"));
    }
}
