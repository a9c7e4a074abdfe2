//! # chat-bench
//!
//! The load generator behind the project's performance figures. It drives a running
//! `chat-server` through the public wire contract only (docs/PROTOCOL.md: REST over HTTP/1.1,
//! events over WebSocket), exactly as an outside client would, and reads the server's and
//! Redis's resource use from the outside (`/proc/<pid>`, `INFO cpu`).
//!
//! It must not know the server's internals: no chat-core, no store, no server crate. It only
//! talks to loopback addresses (the URL and Redis URL it is given are checked), and every mode
//! ends by itself: setup steps are bounded by `--connect-timeout` and `--setup-timeout`, the
//! measurement by `--duration` plus a bounded drain.
//!
//! Modes: `chat` (message throughput and latency between paired users), `idle` (memory and CPU
//! cost of open idle sockets), `setup` (registrations and request+accept per second).

mod api;
mod chat;
mod http;
mod idle;
mod report;
mod setup;
mod stats;
mod target;
mod users;
mod work;
mod ws;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// Errors of a run: a sentence for the operator, printed on stderr.
pub type Error = Box<dyn std::error::Error + Send + Sync>;
/// Result of a run step.
pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, Parser)]
#[command(
    name = "chat-bench",
    version,
    about = "Load generator for chat-server: drives a running server through its REST + WebSocket contract"
)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Paired users exchange messages; reports delivered/s, latency at the peer, losses.
    Chat(chat::ChatArgs),
    /// N authenticated sockets join rooms and stay idle; reports server RSS and CPU per socket.
    Idle(idle::IdleArgs),
    /// Registrations/s and request+accept/s at a given concurrency.
    Setup(setup::SetupArgs),
}

/// Flags shared by every mode.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// Base URL of the running server, e.g. http://127.0.0.1:5000 (loopback only).
    #[arg(long)]
    pub url: String,
    /// Bound on every single network wait of the setup: TCP connect, WebSocket handshake, one
    /// HTTP response, one join acknowledgement (seconds).
    #[arg(long, default_value_t = 10.0)]
    pub connect_timeout: f64,
    /// Bound on the whole setup phase (registrations, pairing, connecting), in seconds.
    #[arg(long, default_value_t = 600.0)]
    pub setup_timeout: f64,
    /// The server's process id: enables its CPU and RSS figures (read from /proc).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// The Redis the server uses (redis://127.0.0.1:PORT): enables Redis CPU and memory figures
    /// (INFO cpu memory). Several URLs, comma-separated (a cluster's nodes), are summed.
    #[arg(long)]
    pub redis_url: Option<String>,
    /// Print one JSON line on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Concurrent HTTP connections used by the setup phase (registrations, pairing).
    #[arg(long, default_value_t = 16)]
    pub http_concurrency: usize,
    /// WebSocket connects (handshake + join) in flight at once during the setup.
    #[arg(long, default_value_t = 64)]
    pub connect_concurrency: usize,
}

impl CommonArgs {
    pub fn connect_timeout(&self) -> Duration {
        secs(self.connect_timeout)
    }

    pub fn setup_timeout(&self) -> Duration {
        secs(self.setup_timeout)
    }
}

/// A duration from a user-given number of seconds; negative or NaN counts as zero and huge
/// values are capped (a day), so a typo cannot make a run endless.
pub fn secs(s: f64) -> Duration {
    if s.is_finite() && s > 0.0 {
        Duration::from_secs_f64(s.min(86_400.0))
    } else {
        Duration::ZERO
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("chat-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        match cli.mode {
            Mode::Chat(args) => chat::run(args).await,
            Mode::Idle(args) => idle::run(args).await,
            Mode::Setup(args) => setup::run(args).await,
        }
    });
    // Sockets still open in detached tasks must not delay the exit.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chat-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
