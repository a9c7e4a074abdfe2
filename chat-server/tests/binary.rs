//! The `chat-server` binary as a process: flags and `CHAT_*` variables, the `listening on`
//! line, exit codes, SIGTERM/SIGINT, and `--redis-url` wiring two nodes to one store.

#![allow(clippy::unwrap_used)] // helpers too (clippy.toml covers #[test] fns only)

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use chat_store_redis::test_server::RedisServer;

/// A running server process and what it has written to stderr.
struct Server {
    child: Option<Child>,
    pid: u32,
    addr: SocketAddr,
    lines: mpsc::Receiver<String>,
    log: Vec<String>,
}

fn command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_chat-server"));
    cmd.args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

impl Server {
    /// Starts the binary and waits (10 s at most) for its `listening on` line.
    fn start(args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut child = command(args, env).spawn().unwrap();
        let pid = child.id();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut log = Vec::new();
        let addr = loop {
            let line = lines
                .recv_timeout(Duration::from_secs(10))
                .unwrap_or_else(|_| panic!("no `listening on` line; stderr so far: {log:#?}"));
            log.push(line.clone());
            if let Some(rest) = line.split("listening on ").nth(1) {
                let addr = rest.split_whitespace().next().unwrap();
                break addr.parse::<SocketAddr>().unwrap();
            }
        };
        Server {
            child: Some(child),
            pid,
            addr,
            lines,
            log,
        }
    }

    /// One request; the raw response text.
    fn request(&self, method: &str, path: &str, body: &str) -> String {
        let mut s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    /// Sends `signal` and waits (10 s at most, the contract's bound) for the exit.
    fn stop_with(&mut self, signal: &str) -> ExitStatus {
        let ok = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid.to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
        let mut child = self.child.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        let status = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("exited within 10 s")
            .unwrap();
        self.log.extend(self.lines.try_iter());
        status
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs the binary to its exit (it must exit by itself within 10 s).
fn run_to_exit(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let mut child = command(args, env).spawn().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        let _ = tx.send((child.wait(), text));
    });
    let (status, text) = rx.recv_timeout(Duration::from_secs(10)).expect("exited");
    (status.unwrap().code().unwrap_or(-1), text)
}

fn status_of(response: &str) -> u16 {
    response.split(' ').nth(1).unwrap().parse().unwrap()
}

#[test]
fn serves_on_port_0_and_stops_on_sigterm() {
    let mut s = Server::start(&["--bind", "127.0.0.1:0"], &[]);
    assert_ne!(s.addr.port(), 0);
    let r = s.request("GET", "/healthz", "");
    assert_eq!(status_of(&r), 200);
    assert!(r.contains(r#""status":"ok""#));
    let r = s.request("GET", "/", "");
    assert!(
        r.contains("content-security-policy: default-src 'self'"),
        "{r}"
    );
    let r = s.request("POST", "/register_user", r#"{"phone":"+14155550100"}"#);
    assert_eq!(status_of(&r), 200, "{r}");

    // The store is instrumented: its calls show in the latency histogram (one series per
    // store operation).
    let r = s.request("GET", "/metrics", "");
    let count: u64 = r
        .lines()
        .filter(|l| l.starts_with("chat_store_latency_seconds_count{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert!(count > 0, "{r}");
    // No Redis, no bus counters.
    assert!(!r.contains("chat_bus_"), "{r}");

    let status = s.stop_with("TERM");
    assert_eq!(status.code(), Some(0), "{:#?}", s.log);
    assert!(TcpStream::connect(s.addr).is_err());
}

#[test]
fn variables_work_and_flags_win() {
    // Everything from the environment, SIGINT to stop.
    let mut s = Server::start(
        &[],
        &[
            ("CHAT_BIND", "127.0.0.1:0"),
            ("CHAT_REGISTRATIONS_PER_MIN", "1"),
        ],
    );
    let body = r#"{"phone":"+14155550100"}"#;
    assert_eq!(status_of(&s.request("POST", "/register_user", body)), 200);
    let r = s.request("POST", "/register_user", body);
    assert_eq!(status_of(&r), 429, "{r}");
    assert_eq!(s.stop_with("INT").code(), Some(0));

    // A bad variable is refused; the flag wins over it.
    let (code, err) = run_to_exit(&["--bind", "127.0.0.1:0"], &[("CHAT_PRESENCE_SECS", "0")]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("presence-secs"), "{err}");
    let mut s = Server::start(
        &["--bind", "127.0.0.1:0", "--presence-secs", "5"],
        &[("CHAT_PRESENCE_SECS", "0")],
    );
    assert_eq!(s.stop_with("TERM").code(), Some(0));
}

#[test]
fn bad_values_exit_2_with_a_reason() {
    for (args, says) in [
        (
            &["--max-connections-per-address", "0"][..],
            "max-connections-per-address",
        ),
        (&["--header-timeout-secs", "ten"], "header-timeout-secs"),
        (&["--node-id", "two words"], "node-id"),
        (&["--allowed-origins", "example.com"], "allowed-origins"),
        (&["--bind", "not-an-address"], "bind"),
    ] {
        let (code, err) = run_to_exit(args, &[]);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    // A key prefix the Redis store refuses is a usage error too.
    let redis = RedisServer::start();
    let url = redis.url();
    let (code, err) = run_to_exit(
        &[
            "--bind",
            "127.0.0.1:0",
            "--redis-url",
            &url,
            "--key-prefix",
            "{x}",
        ],
        &[],
    );
    assert_eq!(code, 2, "{err}");
}

#[test]
fn two_nodes_on_one_redis_share_sessions() {
    let redis = RedisServer::start();
    let url = redis.url();
    let args = [
        "--bind",
        "127.0.0.1:0",
        "--redis-url",
        &url,
        "--key-prefix",
        "bin-test:",
    ];
    let mut one = Server::start(&args, &[]);
    let mut two = Server::start(&args, &[]);
    let body = r#"{"phone":"+14155550100"}"#;
    assert_eq!(status_of(&one.request("POST", "/register_user", body)), 200);
    let r = two.request("POST", "/register_user", body);
    assert_eq!(status_of(&r), 409, "{r}");
    assert!(r.contains("phone_in_use"));
    let r = two.request("GET", "/readyz", "");
    assert_eq!(status_of(&r), 200, "{r}");
    // The Redis bus's counters reach /metrics (wired by main.rs).
    let r = two.request("GET", "/metrics", "");
    for name in [
        "chat_bus_delivered_total",
        "chat_bus_dropped_total",
        "chat_bus_undecodable_total",
        "chat_bus_disconnects_total",
        "chat_bus_losses_total",
        "chat_bus_resubscriptions_total",
    ] {
        assert!(
            r.contains(&format!("# TYPE {name} counter\n{name} ")),
            "{name} missing from\n{r}"
        );
    }
    assert_eq!(one.stop_with("TERM").code(), Some(0));
    assert_eq!(two.stop_with("TERM").code(), Some(0));
}
