//! # chat-server
//!
//! The binary: reads the contract's flags (or `CHAT_*` variables), sets up logging to stderr,
//! wires a store (Redis or in memory) into the [`chat_core::ChatService`], the socket
//! [`chat_ws::Hub`] and the HTTP [`chat_http::App`], runs the lifetime loop, and shuts down
//! cleanly on SIGINT or SIGTERM.
//!
//! It holds no rule of the chat and no wire format: those are chat-core's and the adapters'.

mod flags;
mod webhook;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{CommandFactory, Parser};
use tokio::net::TcpListener;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use chat_core::{
    ChatService, EventBus, InstrumentedStore, MemoryStore, Metrics, NodeId, Store, SystemClock,
};
use chat_http::App;
use chat_store_redis::{ConnectError, RedisConfig, RedisStore, RedisTls};
use chat_ws::Hub;

use crate::flags::Flags;

/// How often the lifetimes run (heartbeat, dead nodes, due deadlines).
const TICK: Duration = Duration::from_millis(250);
/// A failing lifetime loop logs at most once per this.
const TICK_WARN_EVERY: Duration = Duration::from_secs(10);
/// At shutdown: in-flight requests and open sockets get this long ...
const SHUTDOWN_GRACE: Duration = Duration::from_secs(6);
/// ... and leaving the cluster this long, which keeps the exit within the contract's 10 s.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(2);

fn main() -> ExitCode {
    let flags = Flags::parse();
    if let Err(why) = flags.check() {
        // Exits 2, as clap does for values it refuses itself.
        Flags::command()
            .error(clap::error::ErrorKind::ValueValidation, why)
            .exit();
    }
    init_logs();
    raise_fd_limit();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = flags.worker_threads {
        builder.worker_threads(usize::from(n));
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the runtime");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(run(flags));
    // Tasks still running (late handlers) are dropped here rather than waited for.
    runtime.shutdown_timeout(Duration::from_millis(200));
    code
}

/// Logs go to stderr; `RUST_LOG` sets the filter (default `info`).
fn init_logs() {
    let (filter, bad) = match EnvFilter::try_from_default_env() {
        Ok(f) => (f, None),
        Err(e) => (
            EnvFilter::new("info"),
            std::env::var("RUST_LOG").ok().map(|v| (v, e)),
        ),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours for people at a terminal; plain text for files and log collectors.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    if let Some((value, e)) = bad {
        tracing::warn!(%value, error = %e, "RUST_LOG not understood; logging at info");
    }
}

/// Each socket is a file descriptor; the usual soft limit of 1024 would cap the server far
/// below what it can hold.
fn raise_fd_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::debug!(limit = n, "open file limit"),
        Err(e) => tracing::warn!(error = %e, "could not raise the open file limit"),
    }
}

async fn run(flags: Flags) -> ExitCode {
    // Signal handlers first, so a signal that comes right after the `listening` line counts.
    let signals = match Signals::new() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for signals");
            return ExitCode::FAILURE;
        }
    };
    let http_config = match flags.http_config(SHUTDOWN_GRACE) {
        Ok(c) => c,
        Err(why) => {
            tracing::error!("{why}");
            return ExitCode::from(2);
        }
    };
    let node = flags.node_id.clone().map_or_else(NodeId::random, NodeId);
    let metrics = Arc::new(Metrics::default());

    let (store, bus) = match open_store(&flags, &node, &metrics).await {
        Ok(parts) => parts,
        Err(e @ ConnectError::Config(_)) => {
            // A flag the store refuses (URL, key prefix, TLS files): a usage error, exit 2
            // like clap's.
            tracing::error!(error = %e, "cannot open the store");
            return ExitCode::from(2);
        }
        Err(ConnectError::Unavailable(e)) => {
            let cause = std::error::Error::source(&e).map(ToString::to_string);
            tracing::error!(error = %e, cause, "cannot open the store");
            return ExitCode::FAILURE;
        }
    };
    // Every store call is timed and its failures counted, for /metrics; /readyz pings
    // through it too.
    let store: Arc<dyn Store> = Arc::new(InstrumentedStore::new(store, Arc::clone(&metrics)));
    let service = ChatService::new(
        Arc::clone(&store),
        bus,
        Arc::new(SystemClock),
        flags.core_config(),
        node.clone(),
    )
    .with_metrics(Arc::clone(&metrics));
    // Checked by `Flags::check` at start.
    let webhook = match flags.webhook().ok().flatten().map(|config| {
        let client = webhook::client(&config)?;
        Ok::<_, String>((config, client))
    }) {
        None => None,
        Some(Ok(parts)) => Some(parts),
        Some(Err(why)) => {
            tracing::error!("{why}");
            return ExitCode::FAILURE;
        }
    };
    let service = match &webhook {
        Some((w, _)) => service.with_notifications(w.queue_max),
        None => service,
    };
    let hub = Hub::new(service.clone(), flags.ws_config());
    let app = App::new(service.clone(), hub, Arc::clone(&store), http_config);

    let listener = match TcpListener::bind(flags.bind).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(bind = %flags.bind, error = %e, "cannot listen");
            return ExitCode::FAILURE;
        }
    };
    let addr = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the listening address");
            return ExitCode::FAILURE;
        }
    };
    let store_kind = if flags.redis_url.is_some() {
        "redis"
    } else if !flags.redis_cluster.is_empty() {
        "redis-cluster"
    } else {
        "memory"
    };
    tracing::info!(node = %node, store = store_kind, "listening on {addr}");

    let stop_ticking = CancellationToken::new();
    let ticker = tokio::spawn(lifetimes(service.clone(), stop_ticking.clone()));
    let notifier = webhook.map(|(config, client)| {
        let stats = Arc::new(webhook::WebhookStats::default());
        metrics.register_collector(webhook::WebhookCollector {
            stats: Arc::clone(&stats),
            service: service.clone(),
        });
        tokio::spawn(webhook::run(
            service.clone(),
            Arc::clone(&store),
            client,
            config,
            stats,
            stop_ticking.clone(),
        ))
    });

    chat_http::serve(listener, app, signals.recv()).await;

    stop_ticking.cancel();
    let _ = ticker.await;
    if let Some(notifier) = notifier {
        let _ = notifier.await;
    }
    match tokio::time::timeout(LEAVE_TIMEOUT, service.leave_cluster()).await {
        Ok(Ok(())) => tracing::info!("left the cluster"),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "could not leave the cluster; peers will reap this node")
        }
        Err(_) => tracing::warn!("leaving the cluster timed out; peers will reap this node"),
    }
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

/// The store and bus: Redis when `--redis-url` (or a cluster when `--redis-cluster`) is given,
/// else one in-memory store for both.
/// The Redis bus's counters (deliveries dropped, disconnects, resubscriptions, …) are added to
/// `metrics`, so `/metrics` shows them without chat-http knowing of Redis.
async fn open_store(
    flags: &Flags,
    node: &NodeId,
    metrics: &Metrics,
) -> Result<(Arc<dyn Store>, Arc<dyn EventBus>), ConnectError> {
    let mut config = match &flags.redis_url {
        Some(url) => RedisConfig::single(url),
        None if !flags.redis_cluster.is_empty() => RedisConfig::cluster(&flags.redis_cluster),
        None => {
            if flags.redis_wait_replicas > 0 {
                tracing::warn!("--redis-wait-replicas has no effect without Redis");
            }
            let memory = Arc::new(MemoryStore::new());
            return Ok((memory.clone(), memory));
        }
    };
    config.tls = RedisTls::from_files(
        flags.redis_ca_file.as_deref(),
        flags.redis_client_cert.as_deref(),
        flags.redis_client_key.as_deref(),
    )?;
    config.wait_replicas = flags.redis_wait_replicas;
    config.bus_format = flags.bus_format;
    let redis =
        Arc::new(RedisStore::connect_config(&config, &flags.key_prefix, node.clone()).await?);
    metrics.register_collector(redis.bus_collector());
    Ok((redis.clone(), redis))
}

/// Runs the lifetimes every [`TICK`] until `stop`. Each tick runs on its own task, so a panic
/// in one is logged and the next tick still comes.
async fn lifetimes(service: ChatService, stop: CancellationToken) {
    let mut every = tokio::time::interval(TICK);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_warn: Option<Instant> = None;
    let mut suppressed = 0u64;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        let tick = tokio::spawn({
            let service = service.clone();
            async move { service.tick().await }
        });
        let outcome = tokio::select! {
            () = stop.cancelled() => return,
            outcome = tick => outcome,
        };
        let failure = match outcome {
            Ok(Ok(report)) => {
                if report.timers > 0 || report.orphaned_users > 0 {
                    tracing::debug!(
                        timers = report.timers,
                        orphaned = report.orphaned_users,
                        "tick"
                    );
                }
                continue;
            }
            Ok(Err(e)) => e.to_string(),
            Err(e) => format!("the tick failed: {e}"),
        };
        if last_warn.is_none_or(|t| t.elapsed() >= TICK_WARN_EVERY) {
            tracing::warn!(error = %failure, suppressed, "lifetime tick failed");
            last_warn = Some(Instant::now());
            suppressed = 0;
        } else {
            suppressed += 1;
        }
    }
}

/// SIGINT and SIGTERM.
struct Signals {
    interrupt: Signal,
    terminate: Signal,
}

impl Signals {
    fn new() -> std::io::Result<Signals> {
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    /// Resolves at the first of them.
    async fn recv(mut self) {
        let which = tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
        };
        tracing::info!(signal = which, "shutting down");
    }
}
