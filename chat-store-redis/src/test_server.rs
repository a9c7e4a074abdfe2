//! A private `redis-server` for tests (feature `test-server`).
//!
//! Each [`RedisServer`] runs its own process on a free loopback port, in its own temporary
//! directory, so tests never touch a shared Redis (never the one on 6379) and never see each
//! other's data or channels. The process is killed when the value is dropped.
//!
//! `redis-server` must be on `PATH`; when it is not, starting one panics with the install
//! command, so a test that needs Redis fails loudly instead of being skipped.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a started (or restarted) server may take to answer `PING`.
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// How often readiness is polled.
const READY_POLL: Duration = Duration::from_millis(20);

/// How a [`RedisServer`] is started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedisServerOptions {
    /// Turn on the append-only file with `appendfsync always`: every acknowledged write is on
    /// disk before the reply, so a killed and restarted server has all of it.
    pub aof_always: bool,
    /// Also listen with TLS, on [`RedisServer::tls_port`], with these PEM files.
    pub tls: Option<TlsFiles>,
    /// ACL users, each one `user` directive's rules (`"chat on >secret ~p* &p* +ping"`). The
    /// default user stays as it is (the harness's readiness `PING` uses it on the plain port).
    pub users: Vec<String>,
}

/// The PEM files of a TLS listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server's certificate.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// The CA that signed it (also the CA client certificates would be checked against).
    pub ca: PathBuf,
}

/// A `redis-server` process owned by a test. Killed (SIGKILL) on drop; its directory removed.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    /// The TLS port, when [`RedisServerOptions::tls`] is set.
    tls_port: Option<u16>,
    dir: PathBuf,
    options: RedisServerOptions,
    /// The running process, if any (`None` after [`RedisServer::kill`]).
    child: Mutex<Option<Child>>,
}

/// Makes temporary directory names unique within the process.
static NEXT_DIR: AtomicU64 = AtomicU64::new(0);

impl RedisServer {
    /// Starts a server without persistence. Blocks until it answers `PING`.
    ///
    /// # Panics
    /// When `redis-server` is not installed or does not come up in time.
    pub fn start() -> RedisServer {
        RedisServer::start_with(RedisServerOptions::default())
    }

    /// Starts a server with AOF `appendfsync always`, for tests that kill and restart it.
    pub fn start_persistent() -> RedisServer {
        RedisServer::start_with(RedisServerOptions {
            aof_always: true,
            ..RedisServerOptions::default()
        })
    }

    /// Starts a server with `options`. Blocks until it answers `PING`.
    ///
    /// # Panics
    /// When `redis-server` is not installed or does not come up in time.
    pub fn start_with(options: RedisServerOptions) -> RedisServer {
        let dir = std::env::temp_dir().join(format!(
            "chat-redis-test-{}-{}",
            std::process::id(),
            NEXT_DIR.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        // A free port may be taken by another process (another test's server) between
        // `free_port` and redis-server's bind: then it exits at once, and a new pair of ports
        // is tried.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let server = RedisServer {
                port: free_port(),
                tls_port: options.tls.as_ref().map(|_| free_port()),
                dir: dir.clone(),
                options: options.clone(),
                child: Mutex::new(None),
            };
            match server.try_spawn() {
                Ok(()) => return server,
                Err(log) if attempt < 5 && log.contains("Address already in use") => {
                    // Not dropped: that would remove the directory the next attempt uses.
                    std::mem::forget(server);
                }
                Err(log) => panic!("redis-server exited at start:\n{log}"),
            }
        }
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The port it listens on (loopback only).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The TLS port, if it was started with [`RedisServerOptions::tls`].
    pub fn tls_port(&self) -> Option<u16> {
        self.tls_port
    }

    /// The server's working directory (AOF files, `redis.log`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Kills the process hard (SIGKILL) and waits for it to be gone. No-op if not running.
    pub fn kill(&self) {
        let mut child = self.child.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(mut c) = child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kills the process if it runs, then starts it again on the same port and directory, so
    /// an AOF-persisted dataset comes back. Blocks until it answers `PING`.
    pub fn restart(&self) {
        self.kill();
        self.spawn_and_wait();
    }

    /// Whether the process is running (it was started and not killed, and has not exited).
    pub fn is_running(&self) -> bool {
        let mut child = self.child.lock().unwrap_or_else(|p| p.into_inner());
        match child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    fn spawn_and_wait(&self) {
        if let Err(log) = self.try_spawn() {
            panic!("redis-server exited at start on {log}");
        }
    }

    /// Starts the process and waits until it answers `PING`; its log when it exits first.
    fn try_spawn(&self) -> Result<(), String> {
        let mut cmd = Command::new("redis-server");
        cmd.current_dir(&self.dir)
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--dir", &self.dir.to_string_lossy()])
            .args(["--logfile", &self.dir.join("redis.log").to_string_lossy()])
            .args(["--daemonize", "no"])
            .args(["--save", ""])
            .args(["--protected-mode", "yes"]);
        if let (Some(tls), Some(tls_port)) = (&self.options.tls, self.tls_port) {
            cmd.args(["--tls-port", &tls_port.to_string()])
                .args(["--tls-cert-file", &tls.cert.to_string_lossy()])
                .args(["--tls-key-file", &tls.key.to_string_lossy()])
                .args(["--tls-ca-cert-file", &tls.ca.to_string_lossy()])
                .args(["--tls-auth-clients", "optional"]);
        }
        for rules in &self.options.users {
            cmd.arg("--user").args(rules.split_whitespace());
        }
        if self.options.aof_always {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "redis-server is not on PATH; the Redis store tests need it. Install it with \
                 `apt-get install redis-server` (Debian/Ubuntu) or `brew install redis` (macOS)."
            ),
            Err(e) => panic!("cannot start redis-server: {e}"),
        };
        *self.child.lock().unwrap_or_else(|p| p.into_inner()) = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            // Our process must be the one answering, not another server that took the port.
            if ping(self.port) && self.is_running() {
                return Ok(());
            }
            if !self.is_running() {
                let log = std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default();
                return Err(format!("port {}:\n{log}", self.port));
            }
            if Instant::now() > deadline {
                self.kill();
                panic!(
                    "redis-server on port {} did not answer PING within {READY_TIMEOUT:?}",
                    self.port
                );
            }
            std::thread::sleep(READY_POLL);
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A port nobody listens on now: bind port 0 and let it go. Another process could take it before
/// redis-server binds it; then the server fails to start and the caller's readiness wait reports it.
fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap_or_else(|e| panic!("cannot bind a loopback port: {e}"));
    listener
        .local_addr()
        .unwrap_or_else(|e| panic!("no local address: {e}"))
        .port()
}

/// One `PING` over a fresh connection; true on `+PONG` (not while loading the AOF).
fn ping(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(n) => buf[..n].starts_with(b"+PONG"),
        Err(_) => false,
    }
}
