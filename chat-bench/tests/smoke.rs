//! Smoke test of chat-bench against a real `chat-server` process (and a real `redis-server`
//! for the Redis run): every mode runs for about two seconds at tiny sizes with `--json`, and
//! the one JSON line it prints must show a clean run (messages delivered, none lost,
//! duplicated or reordered, resource figures present).
//!
//! The server binary is taken from next to this test's executable (target/<profile>/), built
//! once with `cargo build -p chat-server` when it is missing.
#![allow(clippy::unwrap_used)] // helpers too (clippy.toml covers #[test] fns only)

use std::io::{BufRead, BufReader, Read};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Builds of the server binary are serialised between the tests of this file.
static BUILD: Mutex<()> = Mutex::new(());

fn server_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/smoke-<hash> → target/<profile>
    let profile_dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
    let bin = profile_dir.join(format!("chat-server{}", std::env::consts::EXE_SUFFIX));
    let _guard = BUILD.lock().unwrap_or_else(|p| p.into_inner());
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-p", "chat-server"]);
        match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") | None => {}
            Some("release") => {
                cmd.arg("--release");
            }
            Some(other) => {
                cmd.args(["--profile", other]);
            }
        }
        if let Some(target_dir) = profile_dir.parent() {
            cmd.env("CARGO_TARGET_DIR", target_dir);
        }
        let status = cmd.status().unwrap();
        assert!(
            status.success(),
            "cargo build -p chat-server failed: {status}"
        );
    }
    assert!(bin.exists(), "no chat-server binary at {}", bin.display());
    bin
}

/// A child process killed when the test ends, however it ends.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Server {
    proc: Proc,
    url: String,
}

/// A server with limits high enough that the bench never meets them.
fn start_server(extra: &[&str]) -> Server {
    let mut args = vec![
        "--registrations-per-min",
        "100000",
        "--frames-per-sec",
        "100000",
        "--frame-burst",
        "100000",
    ];
    args.extend_from_slice(extra);
    spawn_server(&args)
}

/// A server with its default registration limit (10 a minute per address).
fn start_server_with_limit() -> Server {
    spawn_server(&[])
}

fn spawn_server(args: &[&str]) -> Server {
    let mut child = Command::new(server_binary())
        .args(["--bind", "127.0.0.1:0"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let proc = Proc(child);
    let (tx, rx) = mpsc::channel();
    // Reads the log for the address, then keeps draining it so the server never blocks on a
    // full pipe. Lines before the address are sent too, to explain a failed start.
    std::thread::spawn(move || {
        let mut found = false;
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            if found {
                continue;
            }
            if let Some(rest) = line.split("listening on ").nth(1) {
                // The log may be coloured: keep only the address's own characters.
                let addr: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_hexdigit() || matches!(c, '.' | ':' | '[' | ']'))
                    .collect();
                found = true;
                let _ = tx.send(Ok(addr));
            } else {
                let _ = tx.send(Err(line));
            }
        }
    });
    let mut log = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(Ok(addr)) => break addr,
            Ok(Err(line)) => log.push(line),
            Err(_) => panic!(
                "chat-server {args:?} did not log `listening on <addr>` within 30 s; its log:\n{}",
                log.join("\n")
            ),
        }
    };
    Server {
        proc,
        url: format!("http://{addr}"),
    }
}

impl Server {
    fn pid(&self) -> String {
        self.proc.0.id().to_string()
    }
}

/// Runs chat-bench to completion (bounded) and returns (exit success, stdout, stderr).
fn bench(args: &[&str]) -> (bool, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_chat-bench"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let mut child = Proc(child);
    let status = wait_bounded(&mut child, 90, &format!("chat-bench {args:?}"));
    (
        status.success(),
        out_reader.join().unwrap(),
        err_reader.join().unwrap(),
    )
}

/// Waits for `child` to exit, failing the test after `secs` seconds (the child is then killed
/// by `Proc`'s drop).
fn wait_bounded(child: &mut Proc, secs: u64, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not finish within {secs} s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs chat-bench and parses its single JSON line.
fn bench_json(args: &[&str]) -> Value {
    let (ok, out, err) = bench(args);
    assert!(
        ok,
        "chat-bench {args:?} failed\nstdout: {out}\nstderr: {err}"
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "--json prints exactly one line, got: {out}");
    let v: Value = serde_json::from_str(lines[0]).unwrap();
    eprintln!("chat-bench {}: {v}", args[0]);
    v
}

fn int(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} is not a count in {v}"))
}

fn float(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is not a number in {v}"))
}

fn assert_clean_chat(v: &Value) {
    assert_eq!(v["mode"], "chat");
    assert!(int(v, "delivered") > 0, "{v}");
    assert!(int(v, "echoes") > 0, "{v}");
    for key in [
        "lost",
        "duplicated",
        "out_of_order",
        "refused",
        "unanswered",
        "foreign",
        "sockets_closed",
    ] {
        assert_eq!(int(v, key), 0, "{key} in {v}");
    }
    assert_eq!(
        int(v, "delivered"),
        int(v, "sent"),
        "every sent message reaches the peer: {v}"
    );
    assert_eq!(int(v, "acked"), int(v, "sent"), "{v}");
    assert!(float(v, "delivered_per_sec") > 0.0, "{v}");
    let (p50, p99, max) = (
        int(v, "latency_p50_us"),
        int(v, "latency_p99_us"),
        int(v, "latency_max_us"),
    );
    assert!(0 < p50 && p50 <= p99 && p99 <= max, "{v}");
    assert!(float(v, "server_cpu_us_per_msg") >= 0.0, "{v}");
    assert!(int(v, "server_rss_kib") > 0, "{v}");
}

#[test]
fn chat_closed_loop() {
    let server = start_server(&[]);
    let pid = server.pid();
    let v = bench_json(&[
        "chat",
        "--url",
        &server.url,
        "--pairs",
        "3",
        "--duration",
        "2",
        "--window",
        "4",
        "--json",
        "--server-pid",
        &pid,
    ]);
    assert_clean_chat(&v);
    assert_eq!(v["load"], "closed");
    assert_eq!(int(&v, "senders"), 6, "both members of each pair send: {v}");
}

#[test]
fn chat_open_loop() {
    let server = start_server(&[]);
    let pid = server.pid();
    let v = bench_json(&[
        "chat",
        "--url",
        &server.url,
        "--pairs",
        "3",
        "--duration",
        "2",
        "--rate",
        "300",
        "--one-way",
        "--json",
        "--server-pid",
        &pid,
    ]);
    assert_clean_chat(&v);
    assert_eq!(v["load"], "open");
    assert_eq!(int(&v, "senders"), 3, "{v}");
    // 300/s for 2 s, on schedule (a loaded machine may leave the last few unsent).
    let sent = int(&v, "sent");
    assert!((480..=600).contains(&sent), "sent {sent}: {v}");
}

#[test]
fn chat_over_redis_reports_redis_cpu() {
    let redis = start_redis();
    let redis_url = format!("redis://127.0.0.1:{}", redis.port);
    let server = start_server(&["--redis-url", &redis_url]);
    let pid = server.pid();
    let v = bench_json(&[
        "chat",
        "--url",
        &server.url,
        "--pairs",
        "3",
        "--duration",
        "2",
        "--window",
        "2",
        "--json",
        "--server-pid",
        &pid,
        "--redis-url",
        &redis_url,
    ]);
    assert_clean_chat(&v);
    assert!(float(&v, "redis_cpu_us_per_msg") > 0.0, "{v}");
}

#[test]
fn idle_sockets() {
    let server = start_server(&[]);
    let pid = server.pid();
    let v = bench_json(&[
        "idle",
        "--url",
        &server.url,
        "--sockets",
        "20",
        "--duration",
        "2",
        "--per-addr",
        "5",
        "--json",
        "--server-pid",
        &pid,
    ]);
    assert_eq!(v["mode"], "idle");
    assert_eq!(int(&v, "sockets"), 20, "{v}");
    assert_eq!(int(&v, "source_addrs"), 4, "{v}");
    assert_eq!(int(&v, "sockets_closed"), 0, "{v}");
    assert!(int(&v, "server_rss_with_kib") > 0, "{v}");
    assert!(float(&v, "server_rss_per_socket_bytes") >= 0.0, "{v}");
    assert!(float(&v, "server_cpu_us_per_socket_sec") >= 0.0, "{v}");
    assert!(float(&v, "idle_s") >= 2.0, "{v}");
}

#[test]
fn setup_rates() {
    let server = start_server(&[]);
    let pid = server.pid();
    let v = bench_json(&[
        "setup",
        "--url",
        &server.url,
        "--concurrency",
        "4",
        "--count",
        "20",
        "--json",
        "--server-pid",
        &pid,
    ]);
    assert_eq!(v["mode"], "setup");
    assert_eq!(int(&v, "registrations"), 40, "{v}");
    assert_eq!(int(&v, "request_accepts"), 20, "{v}");
    assert!(float(&v, "registrations_per_sec") > 0.0, "{v}");
    assert!(float(&v, "request_accepts_per_sec") > 0.0, "{v}");
    assert!(int(&v, "register_p99_us") > 0, "{v}");
}

#[test]
fn table_output_and_refusals() {
    let server = start_server(&[]);
    let (ok, out, err) = bench(&[
        "setup",
        "--url",
        &server.url,
        "--concurrency",
        "2",
        "--count",
        "2",
    ]);
    assert!(ok, "{err}");
    assert!(
        out.lines().any(|l| l.starts_with("registrations_per_sec")),
        "{out}"
    );

    // Load is only ever aimed at this machine.
    let (ok, _, err) = bench(&["setup", "--url", "http://192.0.2.1:5000", "--count", "1"]);
    assert!(!ok && err.contains("loopback"), "{err}");
    // A limit the server enforces is reported with the flag to raise.
    let strict = start_server_with_limit();
    let (ok, _, err) = bench(&[
        "setup",
        "--url",
        &strict.url,
        "--concurrency",
        "1",
        "--count",
        "20",
    ]);
    assert!(!ok && err.contains("--registrations-per-min"), "{err}");
}

struct Redis {
    _proc: Proc,
    port: u16,
}

fn start_redis() -> Redis {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("redis-server must be on PATH for this test (apt-get install redis-server): {e}")
        });
    let proc = Proc(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "redis-server did not listen on {port} within 10 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Redis { _proc: proc, port }
}

/// `run-idle-cluster.sh` on debug builds: two nodes on its own Redis, 40 idle sockets in all,
/// summed into one line.
#[test]
fn idle_cluster_script_sums_its_nodes() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("run-idle-cluster.sh");
    let out =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("cluster-{}", std::process::id()));
    let mut child = Proc(
        // `timeout` ends it with SIGTERM, on which it stops what it started, before the
        // test gives up on it and kills it.
        Command::new("timeout")
            .args(["100", "bash"])
            .arg(&script)
            .args(["40", "2"])
            .arg(&out)
            .env("BENCH", env!("CARGO_BIN_EXE_chat-bench"))
            .env("SERVER", server_binary())
            .env("DURATION", "2")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let status = wait_bounded(&mut child, 120, "run-idle-cluster.sh");
    let mut err = String::new();
    if let Some(mut e) = child.0.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    assert!(status.success(), "run-idle-cluster.sh failed: {err}");
    let line = std::fs::read_to_string(out.join("cluster.json")).unwrap();
    let v: Value = serde_json::from_str(line.trim()).unwrap();
    eprintln!("cluster: {v}");
    assert_eq!(v["nodes"], 2, "{v}");
    assert_eq!(v["sockets"], 40, "{v}");
    assert_eq!(v["sockets_closed"], 0, "{v}");
    assert!(float(&v, "server_rss_per_socket_bytes") > 0.0, "{v}");
    assert!(float(&v, "server_cpu_us_per_socket_sec") >= 0.0, "{v}");
    let _ = std::fs::remove_dir_all(&out);
}
