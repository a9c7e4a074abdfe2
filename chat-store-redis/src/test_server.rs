//! A private `redis-server` for tests (feature `test-server`).
//!
//! Each [`RedisServer`] runs its own process on a free loopback port, in its own temporary
//! directory, so tests never touch a shared Redis (never the one on 6379) and never see each
//! other's data or channels. The process is killed when the value is dropped.
//!
//! A [`RedisCluster`] is six such servers (three masters, three replicas) joined into a Redis
//! Cluster by `redis-cli --cluster create`, with a short node timeout so a killed master is
//! replaced within a few seconds.
//!
//! `redis-server` must be on `PATH` (and `redis-cli` for a cluster); when it is not, starting one
//! panics with the install command, so a test that needs Redis fails loudly instead of being
//! skipped.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

/// How long a started (or restarted) server may take to answer `PING`.
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// How often readiness is polled.
const READY_POLL: Duration = Duration::from_millis(20);
/// `cluster-node-timeout` of a [`RedisCluster`]'s nodes: a master that does not answer for this
/// long is suspected, and failed over soon after.
const CLUSTER_NODE_TIMEOUT_MS: u64 = 1000;
/// How long a [`RedisCluster`] may take to be formed and serve all slots.
const CLUSTER_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a [`RedisCluster`]'s state is polled.
const CLUSTER_POLL: Duration = Duration::from_millis(50);
/// The number of hash slots of a Redis Cluster.
const CLUSTER_SLOTS: usize = 16384;

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
    /// The cluster bus port, when the server is a node of a [`RedisCluster`].
    cluster_port: Option<u16>,
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
        RedisServer::start_node(options, false)
    }

    /// Starts a server with `options`, as a cluster node (with its own cluster bus port) when
    /// `cluster` is set. Blocks until it answers `PING`.
    fn start_node(options: RedisServerOptions, cluster: bool) -> RedisServer {
        let dir = std::env::temp_dir().join(format!(
            "chat-redis-test-{}-{}",
            std::process::id(),
            NEXT_DIR.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        // A free port may be taken by another process (another test's server) between
        // `free_port` and redis-server's bind: then it exits at once, and new ports are tried.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let server = RedisServer {
                port: free_port(),
                tls_port: options.tls.as_ref().map(|_| free_port()),
                // Not the default `port + 10000`, which is above 65535 for a high free port.
                cluster_port: cluster.then(free_port),
                dir: dir.clone(),
                options: options.clone(),
                child: Mutex::new(None),
            };
            match server.try_spawn() {
                Ok(()) => return server,
                Err(log) if attempt < 5 && log.contains("Address already in use") => {
                    // Not dropped: that would remove the directory the next attempt uses.
                    std::mem::forget(server);
                    // The failed node's identity, written before it failed to bind.
                    let _ = std::fs::remove_file(dir.join("nodes.conf"));
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
        if let Some(cluster_port) = self.cluster_port {
            cmd.args(["--cluster-enabled", "yes"])
                .args(["--cluster-port", &cluster_port.to_string()])
                .args([
                    "--cluster-config-file",
                    &self.dir.join("nodes.conf").to_string_lossy(),
                ])
                .args([
                    "--cluster-node-timeout",
                    &CLUSTER_NODE_TIMEOUT_MS.to_string(),
                ])
                // A replica's first sync starts at once, not after the default 5 s wait for
                // more replicas.
                .args(["--repl-diskless-sync-delay", "0"]);
        }
        if let (Some(tls), Some(tls_port)) = (&self.options.tls, self.tls_port) {
            cmd.args(["--tls-port", &tls_port.to_string()])
                .args(["--tls-cert-file", &tls.cert.to_string_lossy()])
                .args(["--tls-key-file", &tls.key.to_string_lossy()])
                .args(["--tls-ca-cert-file", &tls.ca.to_string_lossy()])
                .args(["--tls-auth-clients", "optional"]);
            if self.cluster_port.is_some() {
                cmd.args(["--tls-cluster", "yes", "--tls-replication", "yes"]);
            }
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

/// A Redis Cluster of six [`RedisServer`] nodes on loopback: three masters, each with one
/// replica, with `cluster-node-timeout` 1 s, so a killed master is replaced within a few
/// seconds. Every node is killed (SIGKILL) and its directory removed on drop.
///
/// The admin queries (`CLUSTER INFO`, `CLUSTER NODES`, …) run `redis-cli`, which must be on
/// `PATH` as well as `redis-server`.
#[derive(Debug)]
pub struct RedisCluster {
    /// The nodes, in the order given to `redis-cli --cluster create`.
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts six nodes, joins them with `redis-cli --cluster create … --cluster-replicas 1`, and
    /// blocks until every node reports `cluster_state:ok` with all 16384 slots served and knows
    /// all six nodes, and every replica's link to its master is up.
    ///
    /// # Panics
    /// When `redis-server` or `redis-cli` is not installed, or the cluster is not ready within
    /// 30 s.
    pub fn start() -> RedisCluster {
        RedisCluster::start_with(RedisServerOptions::default())
    }

    /// [`RedisCluster::start`] with every node started with `options`. With
    /// [`RedisServerOptions::tls`] the nodes also listen with TLS and speak it to each other
    /// (`tls-cluster`, `tls-replication`), and a client that comes in over TLS is told the
    /// nodes' TLS ports: [`RedisCluster::tls_urls`] are its seeds.
    ///
    /// # Panics
    /// As [`RedisCluster::start`].
    pub fn start_with(options: RedisServerOptions) -> RedisCluster {
        let deadline = Instant::now() + CLUSTER_READY_TIMEOUT;
        let nodes = (0..6)
            .map(|_| RedisServer::start_node(options.clone(), true))
            .collect();
        let cluster = RedisCluster { nodes };
        cluster.create(deadline);
        let left = deadline.saturating_duration_since(Instant::now());
        poll_until(left, || cluster.not_ready()).unwrap_or_else(|why| {
            panic!("the Redis Cluster is not ready within {CLUSTER_READY_TIMEOUT:?}: {why}")
        });
        cluster
    }

    /// A cluster started with `options` for the tests of one test binary that run at the same
    /// time: each holds it while it runs, the last to let go stops it (a later call starts
    /// another).
    ///
    /// # Panics
    /// As [`RedisCluster::start`].
    pub fn shared(options: RedisServerOptions) -> Arc<RedisCluster> {
        type Shared = Vec<(RedisServerOptions, Weak<RedisCluster>)>;
        static SHARED: Mutex<Shared> = Mutex::new(Vec::new());
        let mut shared = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
        shared.retain(|(_, cluster)| cluster.strong_count() > 0);
        if let Some(cluster) = shared
            .iter()
            .filter(|(o, _)| *o == options)
            .find_map(|(_, cluster)| cluster.upgrade())
        {
            return cluster;
        }
        let cluster = Arc::new(RedisCluster::start_with(options.clone()));
        shared.push((options, Arc::downgrade(&cluster)));
        cluster
    }

    /// `redis://127.0.0.1:<port>` of every node (alive or not): the seed list of a cluster
    /// client.
    pub fn urls(&self) -> Vec<String> {
        self.ports()
            .into_iter()
            .map(|port| format!("redis://127.0.0.1:{port}"))
            .collect()
    }

    /// `rediss://127.0.0.1:<tls port>` of every node, for a cluster started with TLS (empty
    /// otherwise).
    pub fn tls_urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter_map(RedisServer::tls_port)
            .map(|port| format!("rediss://127.0.0.1:{port}"))
            .collect()
    }

    /// [`RedisCluster::urls`] joined with `,`.
    pub fn url(&self) -> String {
        self.urls().join(",")
    }

    /// The ports of all six nodes (alive or not), in their creation order.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(RedisServer::port).collect()
    }

    /// The ports of the current masters, as a live node sees them, sorted (see
    /// [`RedisCluster::slot_counts`] for which count).
    ///
    /// # Panics
    /// When no node answers.
    pub fn masters(&self) -> Vec<u16> {
        self.slot_counts()
            .into_iter()
            .map(|(port, _)| port)
            .collect()
    }

    /// For every current master, how many slots it serves, sorted by port. A current master is
    /// not flagged `fail` and serves slots: a master that a replica replaced while it lived (a
    /// failover a loaded machine can cause: the node timeout is 1 s) still calls itself one for
    /// a moment, with no slots and a copy of the data, and is left out.
    ///
    /// # Panics
    /// When no node answers.
    pub fn slot_counts(&self) -> Vec<(u16, usize)> {
        let mut counts: Vec<(u16, usize)> = parse_nodes(&self.ask_any(&["CLUSTER", "NODES"]))
            .into_iter()
            .filter(|n| n.is_master() && !n.is_failed())
            .map(|n| (n.port, n.slot_count()))
            .filter(|&(_, slots)| slots > 0)
            .collect();
        counts.sort_unstable();
        counts
    }

    /// The port of the master that currently serves `key`'s slot (`CLUSTER KEYSLOT`, then
    /// `CLUSTER NODES`), as a live node sees it.
    ///
    /// # Panics
    /// When no node answers or no live master serves the slot.
    pub fn master_of_key(&self, key: &str) -> u16 {
        let reply = self.ask_any(&["CLUSTER", "KEYSLOT", key]);
        let slot: u16 = reply
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("CLUSTER KEYSLOT {key} answered {reply:?}"));
        let nodes = self.ask_any(&["CLUSTER", "NODES"]);
        parse_nodes(&nodes)
            .into_iter()
            .find(|n| n.is_master() && !n.is_failed() && n.serves(slot))
            .map(|n| n.port)
            .unwrap_or_else(|| panic!("no live master serves slot {slot} of {key}:\n{nodes}"))
    }

    /// Kills the node on `port` hard (SIGKILL) and waits for it to be gone. It stays dead.
    ///
    /// # Panics
    /// When no node of this cluster listens on `port`.
    pub fn kill(&self, port: u16) {
        self.node(port).kill();
    }

    /// Starts the killed node on `port` again, on its port and directory: it keeps its cluster
    /// identity (`nodes.conf`), learns that its replica took over, and rejoins as that one's
    /// replica, with an empty dataset it then syncs. Blocks until it answers `PING`; see
    /// [`RedisCluster::wait_until_whole`].
    ///
    /// # Panics
    /// When no node of this cluster listens on `port`, or it does not come up.
    pub fn restart(&self, port: u16) {
        self.node(port).restart();
    }

    /// The node on `port`.
    fn node(&self, port: u16) -> &RedisServer {
        self.nodes
            .iter()
            .find(|n| n.port() == port)
            .unwrap_or_else(|| panic!("no node of this cluster on port {port}"))
    }

    /// Polls (every 50 ms) until the cluster is whole again: all six nodes answer with
    /// `cluster_state:ok` and know each other, and three replicas have their link to their
    /// master up. Returns how long that took from the call.
    ///
    /// # Panics
    /// When that does not happen within `timeout`, with what was still missing.
    pub fn wait_until_whole(&self, timeout: Duration) -> Duration {
        poll_until(timeout, || self.not_ready()).unwrap_or_else(|why| {
            panic!("the Redis Cluster is not whole again within {timeout:?}: {why}")
        })
    }

    /// Polls (every 50 ms) until every live node reports `cluster_state:ok` with all slots served
    /// again and none sees `old_master` serving a slot any more, so another node (its promoted
    /// replica) serves them. Returns how long that took from the call: call it right after
    /// [`RedisCluster::kill`].
    ///
    /// # Panics
    /// When that does not happen within `timeout`, with what was still missing.
    pub fn wait_for_failover(&self, old_master: u16, timeout: Duration) -> Duration {
        poll_until(timeout, || self.failover_pending(old_master)).unwrap_or_else(|why| {
            panic!("no failover of master {old_master} within {timeout:?}: {why}")
        })
    }

    /// Runs `redis-cli --cluster create` over all nodes, bounded by `deadline`; its output goes to
    /// `cluster-create.log` in the first node's directory, and into the panic message on failure.
    fn create(&self, deadline: Instant) {
        let log_path = self.nodes[0].dir().join("cluster-create.log");
        let log = std::fs::File::create(&log_path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", log_path.display()));
        let log_err = log
            .try_clone()
            .unwrap_or_else(|e| panic!("cannot clone the handle of {}: {e}", log_path.display()));
        let read_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
        let mut child = match Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(self.ports().iter().map(|port| format!("127.0.0.1:{port}")))
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
        {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!("{REDIS_CLI_MISSING}"),
            Err(e) => panic!("cannot start redis-cli: {e}"),
        };
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => std::thread::sleep(CLUSTER_POLL),
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "redis-cli --cluster create did not finish within \
                         {CLUSTER_READY_TIMEOUT:?}:\n{}",
                        read_log()
                    );
                }
                Err(e) => panic!("cannot wait for redis-cli: {e}"),
            }
        };
        if !status.success() {
            panic!(
                "redis-cli --cluster create failed ({status}):\n{}",
                read_log()
            );
        }
    }

    /// What keeps the freshly created cluster from being ready, or `None` when it is.
    fn not_ready(&self) -> Option<String> {
        let mut replicas = 0;
        for port in self.ports() {
            let Some(info) = cli(port, &["CLUSTER", "INFO"]) else {
                return Some(format!("node {port} does not answer"));
            };
            if let Some(why) = cluster_not_ok(port, &info) {
                return Some(why);
            }
            let known = field(&info, "cluster_known_nodes");
            if known != Some("6") {
                return Some(format!("node {port} knows {known:?} nodes, not 6"));
            }
            let Some(replication) = cli(port, &["INFO", "replication"]) else {
                return Some(format!("node {port} does not answer"));
            };
            if field(&replication, "role") == Some("slave") {
                replicas += 1;
                let link = field(&replication, "master_link_status");
                if link != Some("up") {
                    return Some(format!("replica {port}: master_link_status {link:?}"));
                }
            }
        }
        (replicas != 3).then(|| format!("{replicas} replicas, not 3"))
    }

    /// What is still missing for `old_master`'s failover to be over, or `None` when it is.
    fn failover_pending(&self, old_master: u16) -> Option<String> {
        let mut live = 0;
        for node in self.nodes.iter().filter(|n| n.is_running()) {
            live += 1;
            let port = node.port();
            let Some(info) = cli(port, &["CLUSTER", "INFO"]) else {
                return Some(format!("node {port} does not answer"));
            };
            if let Some(why) = cluster_not_ok(port, &info) {
                return Some(why);
            }
            let Some(nodes) = cli(port, &["CLUSTER", "NODES"]) else {
                return Some(format!("node {port} does not answer"));
            };
            if parse_nodes(&nodes)
                .iter()
                .any(|n| n.port == old_master && n.slot_count() > 0)
            {
                return Some(format!("node {port} still sees {old_master} serving slots"));
            }
        }
        (live == 0).then(|| "no node is running".to_owned())
    }

    /// The reply of the first running node that answers `args`.
    ///
    /// # Panics
    /// When none answers.
    fn ask_any(&self, args: &[&str]) -> String {
        self.nodes
            .iter()
            .filter(|n| n.is_running())
            .find_map(|n| cli(n.port(), args))
            .unwrap_or_else(|| panic!("no node of the cluster answers {args:?}"))
    }
}

/// The panic message when `redis-cli` cannot be started.
const REDIS_CLI_MISSING: &str = "redis-cli is not on PATH; the Redis Cluster tests need it. \
    Install it with `apt-get install redis-tools` (Debian/Ubuntu) or `brew install redis` (macOS).";

/// Runs `redis-cli -h 127.0.0.1 -p <port> <args…>` and returns its output, or `None` when it
/// cannot reach the server. An error reply is output too (`ERR …`, `CLUSTERDOWN …`).
fn cli(port: u16, args: &[&str]) -> Option<String> {
    let output = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output();
    match output {
        Ok(o) if o.status.success() => Some(String::from_utf8_lossy(&o.stdout).into_owned()),
        Ok(_) => None,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!("{REDIS_CLI_MISSING}"),
        Err(_) => None,
    }
}

/// The value of `name:value` in an `INFO` or `CLUSTER INFO` reply.
fn field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|line| line.trim().strip_prefix(name)?.strip_prefix(':'))
}

/// Why the node on `port` with `CLUSTER INFO` reply `info` does not serve the whole cluster, or
/// `None` when it reports `cluster_state:ok` and all slots ok.
fn cluster_not_ok(port: u16, info: &str) -> Option<String> {
    let state = field(info, "cluster_state");
    if state != Some("ok") {
        return Some(format!("node {port}: cluster_state {state:?}"));
    }
    let slots_ok = field(info, "cluster_slots_ok");
    if slots_ok != Some(&CLUSTER_SLOTS.to_string()) {
        return Some(format!("node {port}: cluster_slots_ok {slots_ok:?}"));
    }
    None
}

/// Calls `pending` every [`CLUSTER_POLL`] until it has nothing left to wait for; how long that
/// took, or, past `timeout`, what it last said was missing.
fn poll_until(timeout: Duration, pending: impl Fn() -> Option<String>) -> Result<Duration, String> {
    let start = Instant::now();
    loop {
        let Some(why) = pending() else {
            return Ok(start.elapsed());
        };
        if start.elapsed() > timeout {
            return Err(why);
        }
        std::thread::sleep(CLUSTER_POLL);
    }
}

/// One line of `CLUSTER NODES`: `<id> <ip:port@cport[,hostname]> <flags> <master> <ping-sent>
/// <pong-recv> <config-epoch> <link-state> <slot>…`.
#[derive(Debug)]
struct NodeLine {
    port: u16,
    flags: Vec<String>,
    /// Inclusive slot ranges (migrating and importing entries, `[…]`, left out).
    slots: Vec<(u16, u16)>,
}

impl NodeLine {
    fn is_master(&self) -> bool {
        self.flags.iter().any(|f| f == "master")
    }

    /// Flagged `fail` (agreed failed), not merely `fail?` (suspected by this node).
    fn is_failed(&self) -> bool {
        self.flags.iter().any(|f| f == "fail")
    }

    fn serves(&self, slot: u16) -> bool {
        self.slots.iter().any(|&(lo, hi)| (lo..=hi).contains(&slot))
    }

    fn slot_count(&self) -> usize {
        self.slots
            .iter()
            .map(|&(lo, hi)| usize::from(hi.saturating_sub(lo)) + 1)
            .sum()
    }
}

/// The lines of a `CLUSTER NODES` reply (lines that do not parse left out).
fn parse_nodes(text: &str) -> Vec<NodeLine> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let addr = fields.get(1)?.split(['@', ',']).next()?;
            let port = addr.rsplit(':').next()?.parse().ok()?;
            let flags = fields.get(2)?.split(',').map(str::to_owned).collect();
            let slots = fields
                .iter()
                .skip(8)
                .filter(|s| !s.starts_with('['))
                .filter_map(|s| match s.split_once('-') {
                    Some((lo, hi)) => Some((lo.parse().ok()?, hi.parse().ok()?)),
                    None => s.parse().ok().map(|slot| (slot, slot)),
                })
                .collect();
            Some(NodeLine { port, flags, slots })
        })
        .collect()
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
