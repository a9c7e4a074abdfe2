//! A real `chat-server` process: found (or built) next to the test executable, started on port
//! 0, its port read from the `listening on` log line, its stderr drained in the background so the
//! pipe never fills, and killed when the handle drops.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long a server may take to print its `listening on` line.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How many stderr lines a handle keeps for failure messages.
const LOG_LINES: usize = 200;

/// The path of the `chat-server` binary, built once per test process.
///
/// The binary is looked for in the target directory the test executable lives in
/// (`target/<profile>/deps/<test>` → `target/<profile>/chat-server`). `cargo build -p chat-server`
/// runs once first so a stale binary is never tested (it is a no-op when up to date); set
/// `CHAT_E2E_SKIP_BUILD=1` to skip it, or `CHAT_SERVER_BIN` to test another binary.
pub fn server_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("CHAT_SERVER_BIN") {
            return PathBuf::from(bin);
        }
        let exe = std::env::current_exe().expect("current_exe");
        let deps = exe
            .parent()
            .expect("test executable has a parent directory");
        let profile_dir = if deps.file_name().is_some_and(|n| n == "deps") {
            deps.parent().expect("deps has a parent").to_path_buf()
        } else {
            deps.to_path_buf()
        };
        let bin = profile_dir.join(format!("chat-server{}", std::env::consts::EXE_SUFFIX));
        if std::env::var_os("CHAT_E2E_SKIP_BUILD").is_none() || !bin.exists() {
            build_server(&profile_dir);
        }
        assert!(
            bin.exists(),
            "chat-server binary not found at {} even after `cargo build -p chat-server`",
            bin.display()
        );
        bin
    })
}

/// Runs `cargo build -p chat-server` for the profile the tests were built with.
fn build_server(profile_dir: &Path) {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
        .join("Cargo.toml");
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "dev".to_owned(),
        Some(other) => other.to_owned(),
    };
    // The target dir is the parent of the profile dir, unless a `--target` triple sits between.
    let mut target_dir = profile_dir.parent().map(Path::to_path_buf);
    if let Some(dir) = &target_dir
        && !dir.join("CACHEDIR.TAG").exists()
        && dir
            .parent()
            .is_some_and(|p| p.join("CACHEDIR.TAG").exists())
    {
        target_dir = None; // a cross-target layout: let cargo pick the same dir from its config
    }
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("--manifest-path")
        .arg(&manifest)
        .args([
            "-p",
            "chat-server",
            "--bin",
            "chat-server",
            "--profile",
            &profile,
        ]);
    if let Some(dir) = target_dir {
        cmd.arg("--target-dir").arg(dir);
    }
    let status = cmd
        .stdin(Stdio::null())
        .status()
        .expect("run cargo build -p chat-server");
    assert!(
        status.success(),
        "cargo build -p chat-server failed: {status}"
    );
}

/// The last lines a process wrote to stderr (the last `LOG_LINES`, or all of them when
/// the server was started with `CHAT_E2E_KEEP_LOG=1` in its test environment list).
#[derive(Clone)]
pub struct LogTail(Arc<Mutex<VecDeque<String>>>, usize);

impl Default for LogTail {
    fn default() -> LogTail {
        LogTail(Arc::default(), LOG_LINES)
    }
}

impl LogTail {
    fn unbounded() -> LogTail {
        LogTail(Arc::default(), usize::MAX)
    }

    fn push(&self, line: String) {
        let mut q = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if q.len() == self.1 {
            q.pop_front();
        }
        q.push_back(line);
    }

    /// The kept lines, oldest first, joined by newlines.
    pub fn text(&self) -> String {
        let q = self.0.lock().unwrap_or_else(|e| e.into_inner());
        q.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// Whether any kept line contains `needle`.
    pub fn contains(&self, needle: &str) -> bool {
        let q = self.0.lock().unwrap_or_else(|e| e.into_inner());
        q.iter().any(|l| l.contains(needle))
    }
}

/// A running `chat-server`. Killed (SIGKILL) when dropped.
pub struct Server {
    child: Option<Child>,
    /// The address it listens on.
    pub addr: SocketAddr,
    /// The flags it was started with (to restart it the same way).
    pub args: Vec<String>,
    /// Its stderr.
    pub log: LogTail,
    /// Its stdout (the contract sends every log to stderr, so this stays empty).
    pub stdout: LogTail,
    exit: Option<ExitStatus>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("addr", &self.addr).finish()
    }
}

impl Server {
    /// Starts `chat-server --bind 127.0.0.1:0 <args>` and waits for its `listening on` line.
    pub async fn start(args: &[String]) -> Server {
        Server::start_with_env(args, &[]).await
    }

    /// Like [`Server::start`], with these `CHAT_*` environment variables (and no others from the
    /// test's own environment).
    pub async fn start_with_env(args: &[String], env: &[(&str, &str)]) -> Server {
        let bin = server_binary().to_path_buf();
        let args = args.to_vec();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        tokio::task::spawn_blocking(move || Server::start_blocking(&bin, args, env, None))
            .await
            .expect("server start task")
    }

    /// Like [`Server::start`], with the process's open-file limit lowered to `fd_limit`
    /// (`ulimit -n`, through `sh`).
    pub async fn start_with_fd_limit(args: &[String], fd_limit: u64) -> Server {
        let bin = server_binary().to_path_buf();
        let args = args.to_vec();
        tokio::task::spawn_blocking(move || {
            Server::start_blocking(&bin, args, Vec::new(), Some(fd_limit))
        })
        .await
        .expect("server start task")
    }

    fn start_blocking(
        bin: &Path,
        args: Vec<String>,
        env: Vec<(String, String)>,
        fd_limit: Option<u64>,
    ) -> Server {
        let mut cmd = match fd_limit {
            None => Command::new(bin),
            Some(n) => {
                let mut sh = Command::new("sh");
                sh.arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                    .arg(bin);
                sh
            }
        };
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("CHAT_") {
                cmd.env_remove(k);
            }
        }
        cmd.env(
            "RUST_LOG",
            std::env::var("CHAT_E2E_LOG").unwrap_or_else(|_| "info".into()),
        );
        // The test's own settings win (`RUST_LOG` included); `CHAT_E2E_KEEP_LOG` is the
        // harness's, not the server's.
        let keep_log = env
            .iter()
            .any(|(k, v)| k == "CHAT_E2E_KEEP_LOG" && v == "1");
        cmd.envs(env.into_iter().filter(|(k, _)| k != "CHAT_E2E_KEEP_LOG"));
        let mut child = cmd
            .arg("--bind")
            .arg("127.0.0.1:0")
            .args(&args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        let stderr = child.stderr.take().expect("piped stderr");
        let stdout_pipe = child.stdout.take().expect("piped stdout");
        let stdout = LogTail::default();
        let out_tail = stdout.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout_pipe).lines() {
                let Ok(line) = line else { break };
                out_tail.push(line);
            }
        });
        let log = if keep_log {
            LogTail::unbounded()
        } else {
            LogTail::default()
        };
        let (tx, rx) = std::sync::mpsc::channel::<SocketAddr>();
        let tail = log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = parse_listening(&line)
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(addr);
                }
                tail.push(line);
            }
        });
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(addr) => {
                    return Server {
                        child: Some(child),
                        addr,
                        args,
                        log,
                        stdout,
                        exit: None,
                    };
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    let status = child.wait().ok();
                    panic!(
                        "chat-server {args:?} exited before listening ({status:?}); stderr:\n{}",
                        log.text()
                    );
                }
            }
            if let Ok(Some(status)) = child.try_wait() {
                std::thread::sleep(Duration::from_millis(100)); // let the log thread catch up
                panic!(
                    "chat-server {args:?} exited before listening ({status}); stderr:\n{}",
                    log.text()
                );
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "chat-server {args:?} printed no `listening on` line within {START_TIMEOUT:?}; stderr:\n{}",
                    log.text()
                );
            }
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        self.signal("TERM");
    }

    /// Sends SIGINT.
    pub fn sigint(&self) {
        self.signal("INT");
    }

    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{sig} {} failed", self.pid());
    }

    /// Kills the process at once (SIGKILL), as a crash would, and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            self.exit = child.wait().ok();
        }
    }

    /// Waits up to `bound` for the process to exit; `None` if it is still running then.
    pub async fn wait_exit(&mut self, bound: Duration) -> Option<ExitStatus> {
        let deadline = tokio::time::Instant::now() + bound;
        loop {
            if let Some(status) = self.exit {
                return Some(status);
            }
            let child = self.child.as_mut()?;
            if let Ok(Some(status)) = child.try_wait() {
                self.exit = Some(status);
                self.child = None;
                return Some(status);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "--- chat-server {} stderr (last lines) ---\n{}",
                self.addr,
                self.log.text()
            );
        }
    }
}

/// Finds `listening on <ip>:<port>` in a log line.
fn parse_listening(line: &str) -> Option<SocketAddr> {
    let line = strip_ansi(line);
    let rest = &line[line.find("listening on ")? + "listening on ".len()..];
    let word: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '[' | ']'))
        .collect();
    word.trim_end_matches('.').parse().ok()
}

/// Removes ANSI colour sequences (`ESC [ ... letter`), which log formatters may emit.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::parse_listening;

    #[test]
    fn finds_the_address_in_a_log_line() {
        assert_eq!(
            parse_listening(
                "2026-01-01T00:00:00Z  INFO chat_server: listening on 127.0.0.1:4312 node=ab"
            ),
            Some("127.0.0.1:4312".parse().expect("addr"))
        );
        assert_eq!(
            parse_listening("listening on 127.0.0.1:80"),
            Some("127.0.0.1:80".parse().expect("addr"))
        );
        assert_eq!(
            parse_listening("\u{1b}[32mINFO\u{1b}[0m listening on \u{1b}[3m127.0.0.1:9\u{1b}[0m"),
            Some("127.0.0.1:9".parse().expect("addr"))
        );
        assert_eq!(parse_listening("starting"), None);
    }
}
