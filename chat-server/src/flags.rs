//! The command line: every flag of the contract's table, each also `CHAT_<FLAG>` in the
//! environment (the flag wins), checked into the settings the crates take.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

/// A real-time chat server: REST API, pages and WebSocket on one HTTP/1.1 port.
#[derive(Debug, Clone, Parser)]
#[command(name = "chat-server", version, about)]
pub struct Flags {
    /// Listen address; port 0 picks a free port.
    #[arg(long, env = "CHAT_BIND", default_value = "127.0.0.1:5000")]
    pub bind: SocketAddr,

    /// Redis URL of the shared store and bus; without it, an in-memory store (one process).
    #[arg(long, env = "CHAT_REDIS_URL")]
    pub redis_url: Option<String>,

    /// A Redis Cluster to run on instead: the URLs of some of its nodes, comma-separated (the
    /// client learns the others). Not with --redis-url.
    #[arg(
        long,
        env = "CHAT_REDIS_CLUSTER",
        value_delimiter = ',',
        num_args = 1..,
        conflicts_with = "redis_url"
    )]
    pub redis_cluster: Vec<String>,

    /// Replicas that must hold a new message before it is acknowledged (Redis `WAIT`), so an
    /// acknowledged message survives the loss of its master; 0 does not wait.
    #[arg(long, env = "CHAT_REDIS_WAIT_REPLICAS", default_value_t = 0)]
    pub redis_wait_replicas: u32,

    /// The format of the events this node publishes through Redis (1 or 2; it reads both). 1
    /// only during a rolling upgrade from a release before format versions, until every node
    /// runs this one (see the README's "Upgrading node by node").
    #[arg(long, env = "CHAT_BUS_FORMAT", default_value_t = chat_store_redis::bus::FORMAT,
          value_parser = clap::value_parser!(u8).range(1..=i64::from(chat_store_redis::bus::FORMAT)))]
    pub bus_format: u8,

    /// PEM CA certificate(s) to trust for a rediss:// URL instead of the system's roots.
    #[arg(long, env = "CHAT_REDIS_CA_FILE")]
    pub redis_ca_file: Option<std::path::PathBuf>,

    /// PEM client certificate for Redis services that require mutual TLS (with --redis-client-key).
    #[arg(long, env = "CHAT_REDIS_CLIENT_CERT", requires = "redis_client_key")]
    pub redis_client_cert: Option<std::path::PathBuf>,

    /// PEM private key of --redis-client-cert.
    #[arg(long, env = "CHAT_REDIS_CLIENT_KEY", requires = "redis_client_cert")]
    pub redis_client_key: Option<std::path::PathBuf>,

    /// Namespace of every Redis key and channel.
    #[arg(long, env = "CHAT_KEY_PREFIX", default_value = "chat:")]
    pub key_prefix: String,

    /// This process's name among the nodes sharing a Redis (default: random).
    #[arg(long, env = "CHAT_NODE_ID")]
    pub node_id: Option<String>,

    /// Threads that run the server's tasks (default: the CPUs this process may use, as
    /// `taskset` or a container's CPU set allows).
    #[arg(long, env = "CHAT_WORKER_THREADS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub worker_threads: Option<u16>,

    /// How long a session outlives its user's last moment online.
    #[arg(long, env = "CHAT_SESSION_IDLE_SECS", default_value_t = 21_600, value_parser = positive)]
    pub session_idle_secs: u64,

    /// How long an HTTP API request keeps its user online.
    #[arg(long, env = "CHAT_PRESENCE_SECS", default_value_t = 600, value_parser = positive)]
    pub presence_secs: u64,

    /// How long after a user's last socket closes they may stay online (0: at once).
    #[arg(long, env = "CHAT_PRESENCE_GRACE_SECS", default_value_t = 5)]
    pub presence_grace_secs: u64,

    /// How long a chat request stays pending.
    #[arg(long, env = "CHAT_REQUEST_TTL_SECS", default_value_t = 6_000, value_parser = positive)]
    pub request_ttl_secs: u64,

    /// A room's maximum life.
    #[arg(long, env = "CHAT_ROOM_TTL_SECS", default_value_t = 21_600, value_parser = positive)]
    pub room_ttl_secs: u64,

    /// A room ends once both members have been offline this long.
    #[arg(long, env = "CHAT_ROOM_IDLE_SECS", default_value_t = 300, value_parser = positive)]
    pub room_idle_secs: u64,

    /// A node silent this long is dead and its users' sockets no longer count.
    #[arg(long, env = "CHAT_NODE_TTL_SECS", default_value_t = 10, value_parser = positive)]
    pub node_ttl_secs: u64,

    /// Longest message, in Unicode scalar values.
    #[arg(long, env = "CHAT_MAX_MESSAGE_CHARS", default_value_t = 4096, value_parser = positive)]
    pub max_message_chars: u64,

    /// Largest WebSocket frame a client may send.
    #[arg(long, env = "CHAT_MAX_FRAME_BYTES", default_value_t = 65_536, value_parser = positive)]
    pub max_frame_bytes: u64,

    /// Messages a room keeps at least.
    #[arg(long, env = "CHAT_HISTORY_MAX", default_value_t = 10_000, value_parser = positive)]
    pub history_max: u64,

    /// Most outgoing pending chat requests a user may have.
    #[arg(long, env = "CHAT_MAX_PENDING_REQUESTS", default_value_t = 20, value_parser = positive)]
    pub max_pending_requests: u64,

    /// After a decline, how long the requester's next request to the decliner is refused
    /// (0: not at all).
    #[arg(long, env = "CHAT_DECLINE_COOLDOWN_SECS", default_value_t = 600)]
    pub decline_cooldown_secs: u64,

    /// Per socket: frames per second, refilled evenly.
    #[arg(long, env = "CHAT_FRAMES_PER_SEC", default_value_t = 20, value_parser = positive)]
    pub frames_per_sec: u64,

    /// Per socket: burst of frames.
    #[arg(long, env = "CHAT_FRAME_BURST", default_value_t = 40, value_parser = positive)]
    pub frame_burst: u64,

    /// Per client address on this node: registrations per minute (and burst).
    #[arg(long, env = "CHAT_REGISTRATIONS_PER_MIN", default_value_t = 10, value_parser = positive)]
    pub registrations_per_min: u64,

    /// The server pings every socket this often.
    #[arg(long, env = "CHAT_PING_INTERVAL_SECS", default_value_t = 25, value_parser = positive)]
    pub ping_interval_secs: u64,

    /// A socket silent this long (no frame, no pong) is closed.
    #[arg(long, env = "CHAT_IDLE_TIMEOUT_SECS", default_value_t = 60, value_parser = positive)]
    pub idle_timeout_secs: u64,

    /// A connection must deliver a request's headers within this.
    #[arg(long, env = "CHAT_HEADER_TIMEOUT_SECS", default_value_t = 10, value_parser = positive)]
    pub header_timeout_secs: u64,

    /// Open TCP connections per client address; more are closed at once.
    #[arg(long, env = "CHAT_MAX_CONNECTIONS_PER_ADDRESS", default_value_t = 1000, value_parser = positive)]
    pub max_connections_per_address: u64,

    /// Open TCP connections in all; more are closed at once (default: a little under the
    /// process's open-file limit, read at start).
    #[arg(long, env = "CHAT_MAX_CONNECTIONS", value_parser = positive)]
    pub max_connections: Option<u64>,

    /// Comma-separated origins a WebSocket upgrade may come from, or `any`.
    #[arg(long, env = "CHAT_ALLOWED_ORIGINS", default_value = "any")]
    pub allowed_origins: String,

    /// POST offline notifications (for users with no open socket) to this http(s):// URL.
    #[arg(long, env = "CHAT_WEBHOOK_URL")]
    pub webhook_url: Option<String>,

    /// Sign offline notifications with this secret (X-Chat-Signature: `sha256=<HMAC-SHA256>`).
    /// Prefer CHAT_WEBHOOK_SECRET: a flag shows in the process list.
    #[arg(
        long,
        env = "CHAT_WEBHOOK_SECRET",
        hide_env_values = true,
        requires = "webhook_url"
    )]
    pub webhook_secret: Option<String>,

    /// (testing) Delay before the first retry of a notification, in ms; it doubles per retry.
    #[arg(long, env = "CHAT_WEBHOOK_BACKOFF_MS", default_value_t = 1000, value_parser = positive, hide = true)]
    pub webhook_backoff_ms: u64,

    /// (testing) How long the receiver has to answer 2xx, in ms.
    #[arg(long, env = "CHAT_WEBHOOK_TIMEOUT_MS", default_value_t = 5000, value_parser = positive, hide = true)]
    pub webhook_timeout_ms: u64,

    /// (testing) How long a node owns a notification it took before another may, in ms.
    #[arg(long, env = "CHAT_WEBHOOK_LEASE_MS", default_value_t = 30_000, value_parser = positive, hide = true)]
    pub webhook_lease_ms: u64,

    /// (testing) The notification queue's bound.
    #[arg(long, env = "CHAT_WEBHOOK_QUEUE_MAX", default_value_t = 10_000, value_parser = positive, hide = true)]
    pub webhook_queue_max: u64,
}

/// Zero is meaningless for every number of the table (a lifetime of nothing, a rate of
/// nothing, no connections), so each must be a whole number of at least 1.
fn positive(raw: &str) -> Result<u64, String> {
    match raw.trim().parse::<u64>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err("must be a whole number of at least 1".into()),
    }
}

/// Longest node id: it becomes part of Redis keys.
const MAX_NODE_ID: usize = 64;

impl Flags {
    /// Checks what clap's parsers cannot; the message says which flag and why.
    pub fn check(&self) -> Result<(), String> {
        if let Some(id) = &self.node_id {
            let ok = !id.is_empty()
                && id.len() <= MAX_NODE_ID
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
            if !ok {
                return Err(format!(
                    "--node-id must be 1 to {MAX_NODE_ID} characters of A-Z a-z 0-9 - _ ."
                ));
            }
        }
        if self.key_prefix.chars().any(char::is_whitespace) {
            return Err("--key-prefix must not contain white space".into());
        }
        self.origins()?;
        self.webhook().map(|_| ())
    }

    /// The offline notification worker's settings, if `--webhook-url` is set.
    pub fn webhook(&self) -> Result<Option<crate::webhook::WebhookConfig>, String> {
        let Some(raw) = &self.webhook_url else {
            return Ok(None);
        };
        let url = crate::webhook::parse_url(raw)?;
        if self.webhook_lease_ms <= self.webhook_timeout_ms {
            return Err("--webhook-lease-ms must be longer than --webhook-timeout-ms".into());
        }
        let secret = self
            .webhook_secret
            .as_ref()
            .filter(|s| !s.is_empty())
            .map(|s| s.as_bytes().to_vec());
        let mut config = crate::webhook::WebhookConfig::new(url, secret);
        config.backoff_base = Duration::from_millis(self.webhook_backoff_ms);
        config.timeout = Duration::from_millis(self.webhook_timeout_ms);
        config.lease = Duration::from_millis(self.webhook_lease_ms);
        config.queue_max = to_usize(self.webhook_queue_max);
        Ok(Some(config))
    }

    /// The allowed origins: `None` for any.
    pub fn origins(&self) -> Result<Option<Vec<String>>, String> {
        let raw = self.allowed_origins.trim();
        if raw.eq_ignore_ascii_case("any") || raw == "*" {
            return Ok(None);
        }
        let list: Vec<String> = raw
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(chat_http::normalize_origin)
            .collect();
        if list.is_empty() {
            return Err("--allowed-origins must name at least one origin, or be `any`".into());
        }
        if let Some(bad) = list.iter().find(|o| {
            let rest = o
                .strip_prefix("http://")
                .or_else(|| o.strip_prefix("https://"));
            rest.is_none_or(|host| host.is_empty() || host.contains('/'))
        }) {
            return Err(format!(
                "--allowed-origins: `{bad}` is not an origin like https://chat.example or http://localhost:5000"
            ));
        }
        Ok(Some(list))
    }

    /// The domain's settings.
    pub fn core_config(&self) -> chat_core::Config {
        chat_core::Config {
            session_idle_secs: self.session_idle_secs,
            presence_secs: self.presence_secs,
            presence_grace_secs: self.presence_grace_secs,
            request_ttl_secs: self.request_ttl_secs,
            room_ttl_secs: self.room_ttl_secs,
            room_idle_secs: self.room_idle_secs,
            node_ttl_secs: self.node_ttl_secs,
            max_message_chars: to_usize(self.max_message_chars),
            history_max: to_usize(self.history_max),
            max_pending_requests: to_usize(self.max_pending_requests),
            decline_cooldown_secs: self.decline_cooldown_secs,
        }
    }

    /// The sockets' settings.
    pub fn ws_config(&self) -> chat_ws::WsConfig {
        chat_ws::WsConfig {
            max_frame_bytes: to_usize(self.max_frame_bytes),
            frames_per_sec: self.frames_per_sec,
            frame_burst: self.frame_burst,
            ping_interval: Duration::from_secs(self.ping_interval_secs),
            idle_timeout: Duration::from_secs(self.idle_timeout_secs),
            ..chat_ws::WsConfig::default()
        }
    }

    /// The HTTP side's settings; `shutdown_grace` keeps the whole shutdown under 10 s.
    pub fn http_config(&self, shutdown_grace: Duration) -> Result<chat_http::HttpConfig, String> {
        Ok(chat_http::HttpConfig {
            header_timeout: Duration::from_secs(self.header_timeout_secs),
            max_connections_per_address: to_usize(self.max_connections_per_address),
            max_connections: self
                .max_connections
                .map_or_else(default_max_connections, to_usize),
            registrations_per_min: self.registrations_per_min,
            allowed_origins: self.origins()?,
            shutdown_grace,
        })
    }
}

/// A little under the process's open-file limit: each connection holds a descriptor, and the
/// process needs some of its own (the listener, Redis connections, logs), so it refuses
/// connections cleanly before `accept` fails for want of descriptors. Keeps a twentieth of the
/// limit and at least 64 for itself.
fn default_max_connections() -> usize {
    let limit = open_file_limit().unwrap_or(FALLBACK_FILE_LIMIT);
    let reserve = (limit / 20).max(64);
    limit.saturating_sub(reserve).max(1)
}

/// The open-file limit assumed where the process cannot read its own.
const FALLBACK_FILE_LIMIT: usize = 1024;

/// The soft limit on open files (`ulimit -n`), from `/proc/self/limits` (Linux); `None` where
/// that cannot be read or says "unlimited".
fn open_file_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    parse_open_file_limit(&limits)
}

fn parse_open_file_limit(limits: &str) -> Option<usize> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .next()?;
    soft.parse().ok()
}

fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Flags, clap::Error> {
        Flags::try_parse_from(std::iter::once("chat-server").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_are_the_contracts() {
        let f = parse(&[]).unwrap();
        assert_eq!(f.bind.to_string(), "127.0.0.1:5000");
        assert_eq!(f.core_config(), chat_core::Config::default());
        assert_eq!(f.key_prefix, "chat:");
        assert_eq!(f.origins().unwrap(), None);
        let h = f.http_config(Duration::from_secs(1)).unwrap();
        assert_eq!(h.header_timeout, Duration::from_secs(10));
        assert_eq!(h.max_connections_per_address, 1000);
        assert_eq!(h.registrations_per_min, 10);
        let w = f.ws_config();
        assert_eq!(
            (w.frames_per_sec, w.frame_burst, w.max_frame_bytes),
            (20, 40, 65_536)
        );
        assert_eq!(w.ping_interval, Duration::from_secs(25));
        assert_eq!(w.idle_timeout, Duration::from_secs(60));
    }

    #[test]
    fn max_connections_defaults_under_the_open_file_limit() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max cpu time              unlimited            unlimited            seconds   \n\
                      Max open files            20000                20000                files     \n";
        assert_eq!(parse_open_file_limit(limits), Some(20_000));
        assert_eq!(
            parse_open_file_limit("Max open files  unlimited unlimited files"),
            None
        );
        assert_eq!(parse_open_file_limit(""), None);
        let own = open_file_limit().expect("Linux tells its limits");
        let h = parse(&[])
            .unwrap()
            .http_config(Duration::from_secs(1))
            .unwrap();
        assert!(
            h.max_connections < own && h.max_connections >= own * 9 / 10 - 64,
            "{own}"
        );
        let set = parse(&["--max-connections", "50"]).unwrap();
        assert_eq!(
            set.http_config(Duration::from_secs(1))
                .unwrap()
                .max_connections,
            50
        );
        assert_eq!(
            parse(&["--max-connections", "0"]).unwrap_err().exit_code(),
            2
        );
    }

    #[test]
    fn request_limits() {
        let c = parse(&[]).unwrap().core_config();
        assert_eq!((c.max_pending_requests, c.decline_cooldown_secs), (20, 600));
        let c = parse(&[
            "--max-pending-requests",
            "3",
            "--decline-cooldown-secs",
            "0",
        ])
        .unwrap()
        .core_config();
        assert_eq!((c.max_pending_requests, c.decline_cooldown_secs), (3, 0));
        assert_eq!(
            parse(&["--max-pending-requests", "0"])
                .unwrap_err()
                .exit_code(),
            2
        );
    }

    #[test]
    fn redis_tls_files_and_the_grace() {
        let f = parse(&[
            "--redis-ca-file",
            "/etc/ca.pem",
            "--presence-grace-secs",
            "0",
        ])
        .unwrap();
        assert_eq!(
            f.redis_ca_file.as_deref(),
            Some(std::path::Path::new("/etc/ca.pem"))
        );
        assert_eq!(f.core_config().presence_grace_secs, 0);
        assert_eq!(parse(&[]).unwrap().core_config().presence_grace_secs, 5);
        // A client certificate without its key (or the reverse) is refused.
        for args in [
            &["--redis-client-cert", "c.pem"][..],
            &["--redis-client-key", "k.pem"],
        ] {
            assert_eq!(parse(args).unwrap_err().exit_code(), 2, "{args:?}");
        }
        let both = parse(&[
            "--redis-client-cert",
            "c.pem",
            "--redis-client-key",
            "k.pem",
        ]);
        assert!(both.is_ok());
    }

    #[test]
    fn zero_and_junk_are_refused_with_exit_2() {
        for args in [
            &["--presence-secs", "0"][..],
            &["--frames-per-sec", "-1"],
            &["--bind", "nowhere"],
            &["--history-max", "lots"],
        ] {
            let e = parse(args).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{args:?}");
        }
    }

    #[test]
    fn checks_what_clap_cannot() {
        assert!(parse(&["--node-id", "a b"]).unwrap().check().is_err());
        assert!(parse(&["--node-id", "node-1"]).unwrap().check().is_ok());
        assert_eq!(
            parse(&["--worker-threads", "2"]).unwrap().worker_threads,
            Some(2)
        );
        assert!(parse(&["--worker-threads", "0"]).is_err());
        assert!(parse(&["--allowed-origins", ","]).unwrap().check().is_err());
        assert!(
            parse(&["--allowed-origins", "chat.example"])
                .unwrap()
                .check()
                .is_err()
        );
        assert!(parse(&[]).unwrap().webhook().unwrap().is_none());
        let w = parse(&[
            "--webhook-url",
            "http://127.0.0.1:9/hook",
            "--webhook-secret",
            "s",
        ])
        .unwrap()
        .webhook()
        .unwrap()
        .expect("on");
        assert_eq!(w.secret.as_deref(), Some(&b"s"[..]));
        assert_eq!(w.timeout, Duration::from_secs(5));
        assert_eq!(w.backoff_base, Duration::from_secs(1));
        assert_eq!(w.queue_max, 10_000);
        assert!(parse(&["--webhook-url", "nope"]).unwrap().check().is_err());
        assert!(
            parse(&["--webhook-secret", "s"]).is_err(),
            "a secret needs a URL"
        );
        let f = parse(&[
            "--allowed-origins",
            "https://Chat.example/, http://localhost:5000",
        ])
        .unwrap();
        assert_eq!(
            f.origins().unwrap(),
            Some(vec![
                "https://chat.example".into(),
                "http://localhost:5000".into()
            ])
        );
    }
}
