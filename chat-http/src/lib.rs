//! # chat-http
//!
//! The HTTP adapter: the contract's REST API, the HTML pages, the operations endpoints
//! (`/healthz`, `/readyz`, `/metrics`) and the WebSocket upgrade, on hyper 1.x HTTP/1.1 without
//! a web framework. It decodes requests, runs the contract's checks in the contract's order,
//! calls [`chat_core::ChatService`] and encodes the answer; every rule of the chat lives in the
//! service, every frame of the socket protocol in `chat-ws`.
//!
//! It must not know which store runs behind the service (it only pings an `Arc<dyn Store>`
//! for readiness) and must not answer 500: errors map to the contract's statuses in one place
//! (`reply`), and a handler that panics or outlives [`STORE_DEADLINE`] answers 503.
//!
//! Shape (after mini-redis): the caller binds the listener and passes a shutdown future to
//! [`serve`]; tests bind port 0.
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! use std::sync::Arc;
//! use chat_core::{ChatService, Config, MemoryStore, NodeId, SystemClock};
//! use chat_http::{App, HttpConfig};
//! use chat_ws::{Hub, WsConfig};
//!
//! let store = Arc::new(MemoryStore::new());
//! let service = ChatService::new(store.clone(), store.clone(), Arc::new(SystemClock),
//!     Config::default(), NodeId::random());
//! let hub = Hub::new(service.clone(), WsConfig::default());
//! let app = App::new(service, hub, store, HttpConfig::default());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! chat_http::serve(listener, app, async { let _ = tokio::signal::ctrl_c().await; }).await;
//! # Ok(()) }
//! ```

mod api;
mod conn;
mod error;
mod metrics;
mod openapi;
mod pages;
mod query;
mod reply;
mod router;
mod ws;

use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::header::{ALLOW, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use chat_core::limits::KeyedLimiter;
use chat_core::{ChatService, Error, Metrics, Result, Store};

use crate::error::HttpResult;
use chat_ws::Hub;

use crate::conn::{ConnLimiter, CountedStream, Refusal};
use crate::metrics::HttpMetrics;
use crate::reply::Resp;
use crate::router::{Matched, Route};

pub use api::MAX_BODY_BYTES;
pub use error::HttpError;
pub use ws::normalize_origin;

/// Work that needs the store answers within this, else 503 `store_unavailable` (the contract
/// says 2 s; the margin covers the response itself). The work goes on to its end in the
/// background, so a slow store never leaves a request half done.
pub const STORE_DEADLINE: Duration = Duration::from_millis(1800);
/// `/readyz` waits this long for the store's ping.
pub const READY_TIMEOUT: Duration = Duration::from_millis(1500);
/// Largest request head (request line and headers) hyper buffers; more is refused by hyper.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Registration buckets kept at most; past it they are all forgotten (see `take_registration`).
const MAX_TRACKED_ADDRESSES: usize = 100_000;
/// Longest pause after a failed `accept` (e.g. out of file descriptors), so the loop does not
/// spin; it tries again sooner when one of its connections closes.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Failed accepts and refused connections are logged at most this often (with a count).
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(1);

/// The HTTP side's settings (the contract's flags that concern it).
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// A connection must deliver a request's headers within this of opening or of its previous
    /// response, else it is closed. A request body must arrive within it too (else 400).
    pub header_timeout: Duration,
    /// Open TCP connections per client address; more are closed at once, unanswered.
    pub max_connections_per_address: usize,
    /// Open TCP connections in all; more are closed at once, unanswered. Keep it under the
    /// process's descriptor limit (the binary's default: a little under it, read at start), so
    /// the node refuses cleanly instead of running out of descriptors.
    pub max_connections: usize,
    /// `POST /register_user` attempts per client address per minute (burst equal to it).
    pub registrations_per_min: u64,
    /// Origins a WebSocket upgrade may come from (`None`: any). An upgrade without `Origin`
    /// is always allowed.
    pub allowed_origins: Option<Vec<String>>,
    /// At shutdown, how long in-flight requests and open sockets get to finish.
    pub shutdown_grace: Duration,
}

impl Default for HttpConfig {
    fn default() -> HttpConfig {
        HttpConfig {
            header_timeout: Duration::from_secs(10),
            max_connections_per_address: 1000,
            max_connections: 10_000,
            registrations_per_min: 10,
            allowed_origins: None,
            shutdown_grace: Duration::from_secs(7),
        }
    }
}

/// Everything the HTTP side serves from. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct App {
    inner: Arc<Inner>,
}

struct Inner {
    /// The rules.
    service: ChatService,
    /// This node's sockets.
    hub: Hub,
    /// Only pinged, for `/readyz`.
    store: Arc<dyn Store>,
    /// Settings.
    config: HttpConfig,
    /// The domain's counters (the service's own), exported on `/metrics`.
    metrics: Arc<Metrics>,
    /// This adapter's counters (requests by route and status, refusals, failed accepts),
    /// exported on `/metrics` with `metrics`.
    http_metrics: HttpMetrics,
    /// Registration attempts per client address on this node. Bounded by
    /// `MAX_TRACKED_ADDRESSES`.
    registrations: Mutex<KeyedLimiter<IpAddr>>,
    /// Open connections per client address.
    conns: Arc<ConnLimiter>,
    /// Upgraded connections being served, awaited at shutdown.
    sockets: TaskTracker,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("service", &self.inner.service)
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl App {
    /// An app over `service` (whose [`ChatService::metrics`] it exports), its socket `hub`,
    /// and the `store` behind the service (pinged for `/readyz`).
    pub fn new(service: ChatService, hub: Hub, store: Arc<dyn Store>, config: HttpConfig) -> App {
        let per_min = config.registrations_per_min;
        App {
            inner: Arc::new(Inner {
                metrics: Arc::clone(service.metrics()),
                service,
                hub,
                store,
                registrations: Mutex::new(KeyedLimiter::new(per_min, 60_000, per_min)),
                conns: ConnLimiter::new(config.max_connections_per_address, config.max_connections),
                config,
                http_metrics: HttpMetrics::default(),
                sockets: TaskTracker::new(),
            }),
        }
    }

    /// The service.
    pub fn service(&self) -> &ChatService {
        &self.inner.service
    }

    /// The socket hub.
    pub fn hub(&self) -> &Hub {
        &self.inner.hub
    }

    /// The settings.
    pub fn config(&self) -> &HttpConfig {
        &self.inner.config
    }

    /// Whether the store answers, within [`READY_TIMEOUT`].
    pub async fn ready(&self) -> Result<()> {
        let store = Arc::clone(&self.inner.store);
        // On its own task: a store that panics is a store that is not ready.
        match tokio::time::timeout(
            READY_TIMEOUT,
            tokio::spawn(async move { store.ping().await }),
        )
        .await
        {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Error::unavailable("the store's ping panicked")),
            Err(_) => Err(Error::unavailable(format!(
                "the store did not answer a ping within {READY_TIMEOUT:?}"
            ))),
        }
    }

    /// The `/metrics` text.
    pub fn render_metrics(&self) -> String {
        self.inner.http_metrics.render(&self.inner.metrics)
    }

    /// Counts a registration attempt of `peer` (every attempt counts).
    fn take_registration(&self, peer: IpAddr) -> Result<()> {
        let now = self.inner.service.now();
        let mut limiter = self
            .inner
            .registrations
            .lock()
            .map_err(|_| Error::unavailable("the registration limiter's lock is poisoned"))?;
        if limiter.len() >= MAX_TRACKED_ADDRESSES {
            // Only a flood from this many addresses within a minute gets here. Forgetting
            // gives each address a fresh burst, which each new address had anyway.
            tracing::warn!("registration limiter full; forgetting all buckets");
            let per_min = self.inner.config.registrations_per_min;
            *limiter = KeyedLimiter::new(per_min, 60_000, per_min);
        }
        limiter
            .take(&peer, now)
            .map_err(|retry_after_secs| Error::RateLimited { retry_after_secs })
    }

    /// Runs an upgraded socket, tracked for shutdown.
    fn track(&self, fut: impl Future<Output = ()> + Send + 'static) {
        self.inner.sockets.spawn(fut);
    }

    /// Answers one request from client address `peer`.
    async fn handle(&self, req: Request<Incoming>, peer: IpAddr) -> Resp {
        let started = Instant::now();
        let method = req.method().clone();
        let matched = router::route(&method, req.uri().path(), req.uri().query());
        let (pattern, resp) = match matched {
            Matched::NotFound => (router::UNMATCHED, reply::error(HttpError::NotFound)),
            Matched::WrongMethod { pattern, allow } => {
                let mut resp = reply::error(HttpError::MethodNotAllowed);
                resp.headers_mut()
                    .insert(ALLOW, HeaderValue::from_static(allow));
                (pattern, resp)
            }
            Matched::Found(route) => {
                let pattern = route.pattern();
                let resp = self.dispatch(route, req, peer).await;
                (pattern, resp)
            }
        };
        let status = resp.status();
        self.inner.http_metrics.count(pattern, status.as_u16());
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        if status.is_server_error() {
            tracing::warn!(%method, route = pattern, status = status.as_u16(), latency_ms, "request");
        } else {
            tracing::debug!(%method, route = pattern, status = status.as_u16(), latency_ms, "request");
        }
        resp
    }

    async fn dispatch(&self, route: Route, req: Request<Incoming>, peer: IpAddr) -> Resp {
        let result: HttpResult<Resp> = match route {
            Route::Index => Ok(pages::index()),
            Route::Static(asset) => Ok(asset.response()),
            Route::Chatroom(None) => Ok(pages::not_found()),
            Route::Chatroom(Some(id)) => {
                let service = self.inner.service.clone();
                guarded(async move { Ok::<_, HttpError>(service.room_exists(&id).await?) })
                    .await
                    .map(|exists| {
                        if exists {
                            pages::chatroom()
                        } else {
                            pages::not_found()
                        }
                    })
            }
            Route::Healthz => Ok(reply::ok(json!({"status": "ok"}))),
            Route::Readyz => Ok(match self.ready().await {
                Ok(()) => reply::ok(json!({"store": "ok"})),
                Err(e) => reply::json(
                    StatusCode::SERVICE_UNAVAILABLE,
                    json!({
                        "success": false,
                        "store": "unavailable",
                        "code": "store_unavailable",
                        "error": e.to_string(),
                    }),
                ),
            }),
            Route::Metrics => Ok(reply::text(
                StatusCode::OK,
                metrics::CONTENT_TYPE,
                self.render_metrics(),
            )),
            Route::OpenApi => Ok(openapi::response()),
            Route::Ws => ws::upgrade(self, req).await.map_err(HttpError::from),
            api_route => {
                debug_assert!(api_route.is_api());
                let (parts, body) = req.into_parts();
                match api::read_body(&parts.headers, body, self.inner.config.header_timeout).await {
                    Ok(body) => {
                        guarded(api::handle(self.clone(), api_route, parts, body, peer)).await
                    }
                    Err(e) => Err(e),
                }
            }
        };
        result.unwrap_or_else(reply::error)
    }
}

/// Runs `fut` on its own task and waits for it at most [`STORE_DEADLINE`]. A panic or a
/// deadline becomes `StoreUnavailable` (503); the process and the connection live on, and a
/// late task still finishes, so no request is cut off between two store steps.
pub(crate) async fn guarded<T, E, F>(fut: F) -> std::result::Result<T, E>
where
    F: Future<Output = std::result::Result<T, E>> + Send + 'static,
    E: From<Error> + Send + 'static,
    T: Send + 'static,
{
    match tokio::time::timeout(STORE_DEADLINE, tokio::spawn(fut)).await {
        Ok(Ok(result)) => result,
        Ok(Err(join)) => {
            tracing::error!(error = %join, "request handler failed; answered 503");
            Err(E::from(Error::unavailable(format!(
                "the request's task failed: {join}"
            ))))
        }
        Err(_) => {
            tracing::warn!("request not done within the store deadline; answered 503");
            Err(E::from(Error::unavailable(format!(
                "not done within the store deadline ({STORE_DEADLINE:?})"
            ))))
        }
    }
}

/// Whether `accept` failed for want of file descriptors (per process or system-wide).
fn out_of_descriptors(e: &std::io::Error) -> bool {
    // EMFILE and ENFILE (Linux, and the BSDs alike).
    matches!(e.raw_os_error(), Some(24 | 23))
}

/// A descriptor held in reserve (`/dev/null`), given up for a moment when the process has run
/// out: enough to accept the connection waiting in the backlog and close it at once, so its
/// client is told no instead of hanging until a descriptor frees (the classic spare-descriptor
/// trick). Taken back right after.
struct SpareDescriptor(Option<std::fs::File>);

impl SpareDescriptor {
    fn open() -> SpareDescriptor {
        SpareDescriptor(std::fs::File::open("/dev/null").ok())
    }

    /// Frees the spare, accepts and closes one waiting connection, takes the spare back.
    /// Whether a connection was refused.
    async fn refuse_one(&mut self, listener: &TcpListener) -> bool {
        let Some(file) = self.0.take() else {
            *self = SpareDescriptor::open();
            return false;
        };
        drop(file);
        let accepted = tokio::time::timeout(Duration::from_millis(10), listener.accept()).await;
        let refused = matches!(accepted, Ok(Ok(_)));
        // Closed unanswered, which frees its descriptor for the spare again.
        drop(accepted);
        *self = SpareDescriptor::open();
        refused
    }
}

/// Warnings of the accept loop, at most one per [`REFUSAL_LOG_EVERY`]: a flood of refused
/// connections, or an accept failing for want of descriptors, must not flood the log too.
#[derive(Default)]
struct RefusalLog {
    last: Option<tokio::time::Instant>,
    /// Notes not logged since the last line.
    quiet: u64,
}

impl RefusalLog {
    fn note(&mut self, what: std::fmt::Arguments<'_>) {
        let now = tokio::time::Instant::now();
        if self
            .last
            .is_some_and(|at| now.duration_since(at) < REFUSAL_LOG_EVERY)
        {
            self.quiet += 1;
            return;
        }
        tracing::warn!(also_since_last = self.quiet, "{what}");
        self.last = Some(now);
        self.quiet = 0;
    }
}

/// Serves HTTP/1.1 (and WebSocket upgrades) on `listener` until `shutdown` resolves; then
/// stops accepting, lets in-flight requests finish, closes every socket (1001) and waits for
/// them, all within [`HttpConfig::shutdown_grace`].
pub async fn serve(listener: TcpListener, app: App, shutdown: impl Future<Output = ()>) {
    // hyper-util's GracefulShutdown does not take upgradeable connections: each connection
    // task watches this token instead and asks hyper to finish its in-flight request.
    let stop = CancellationToken::new();
    let connections = TaskTracker::new();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(app.config().header_timeout)
        .max_buf_size(MAX_HEAD_BYTES)
        .keep_alive(true);
    tokio::pin!(shutdown);
    let mut refusals = RefusalLog::default();
    let mut spare = SpareDescriptor::open();
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors (EMFILE/ENFILE) or memory: the connections it has are
                    // served on. The one waiting is refused cleanly with the spare descriptor,
                    // and new ones are taken once a connection closes, or after a pause.
                    app.inner.http_metrics.accept_failed();
                    refusals.note(format_args!("accept failed: {e}"));
                    if out_of_descriptors(&e) && spare.refuse_one(&listener).await {
                        app.inner.http_metrics.refused(Refusal::Descriptors);
                    }
                    tokio::select! {
                        () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                        () = app.inner.conns.one_closed() => {}
                    }
                    continue;
                }
            },
        };
        let ip = peer.ip().to_canonical();
        let guard = match app.inner.conns.acquire(ip) {
            Ok(guard) => guard,
            Err(refusal) => {
                app.inner.http_metrics.refused(refusal);
                match refusal {
                    Refusal::Address => {
                        tracing::debug!(%ip, "too many connections from this address; closed");
                    }
                    Refusal::Total | Refusal::Descriptors => refusals.note(format_args!(
                        "max-connections ({}) reached: new connections are closed",
                        app.config().max_connections
                    )),
                }
                drop(stream);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(CountedStream::new(stream, guard));
        let conn_app = app.clone();
        let svc = service_fn(move |req| {
            let app = conn_app.clone();
            async move {
                // Each request on its own task: a panic anywhere in it is answered 503 here
                // instead of dropping the connection, and a client that goes away does not
                // cancel a request half done.
                let resp = match tokio::spawn(async move { app.handle(req, ip).await }).await {
                    Ok(resp) => resp,
                    Err(e) => {
                        tracing::error!(error = %e, "request failed; answered 503");
                        reply::error(Error::unavailable(format!(
                            "the request's task failed: {e}"
                        )))
                    }
                };
                Ok::<_, Infallible>(resp)
            }
        });
        let conn = http.serve_connection(io, svc).with_upgrades();
        let stop = stop.clone();
        connections.spawn(async move {
            tokio::pin!(conn);
            let result = tokio::select! {
                result = conn.as_mut() => result,
                () = stop.cancelled() => {
                    // Finishes the request in flight, if any, then closes.
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!("shutting down: no longer accepting connections");
    stop.cancel();
    app.hub().shutdown();
    connections.close();
    let drained = tokio::time::timeout(app.config().shutdown_grace, async {
        connections.wait().await;
        app.inner.sockets.close();
        app.inner.sockets.wait().await;
        app.hub().closed().await;
    })
    .await;
    if drained.is_err() {
        tracing::warn!("shutdown grace ran out; remaining connections are dropped");
    }
}
