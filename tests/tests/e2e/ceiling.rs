//! The connection ceiling: `--max-connections`, and a process that runs out of file
//! descriptors. Connections come from several loopback addresses (127.0.0.2, .3, ...), so the
//! per-address cap does not stop them first. In both cases the server keeps serving the
//! connections it has, refuses the rest cleanly (closed unanswered, never left hanging), counts
//! them in `/metrics`, does not spin, and serves new connections as soon as old ones close.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use chat_tests::{App, Backend, Server, bounded, metric_value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// A TCP connection to `server` from `127.0.0.<host>`.
async fn connect_from(host: u8, server: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::from((Ipv4Addr::new(127, 0, 0, host), 0)))
        .expect("bind a loopback address");
    tokio::time::timeout(Duration::from_secs(5), socket.connect(server))
        .await
        .expect("connect within 5 s")
        .expect("connect")
}

/// One keep-alive `GET path` on `stream`: the status and body, or `None` when the server closed
/// the connection without answering.
async fn get(stream: &mut TcpStream, path: &str) -> Option<(u16, String)> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return None;
    }
    let mut buf = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut chunk = [0u8; 4096];
        let left = deadline.saturating_duration_since(Instant::now());
        let n = match tokio::time::timeout(left, stream.read(&mut chunk)).await {
            Err(_) => panic!("no answer and no close within 5 s: the connection hangs"),
            Ok(Err(_)) | Ok(Ok(0)) => return None,
            Ok(Ok(n)) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            continue;
        };
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0);
        if body.len() >= length {
            let status = head.split(' ').nth(1)?.parse().ok()?;
            return Some((status, body[..length].to_owned()));
        }
    }
}

/// The connections held, from `127.0.0.2` on (ten per address), each answered once.
async fn hold(server: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut held = Vec::new();
    for i in 0..n {
        let mut s = connect_from(2 + u8::try_from(i / 10).expect("few addresses"), server).await;
        let answered = get(&mut s, "/healthz").await;
        assert_eq!(
            answered.map(|a| a.0),
            Some(200),
            "connection {i} not served"
        );
        held.push(s);
    }
    held
}

/// Opens connections until `refused` of them were closed unanswered; returns the held ones.
async fn fill(server: SocketAddr, limit: usize, refused: usize) -> (Vec<TcpStream>, usize) {
    let mut held = Vec::new();
    let mut closed = 0;
    for i in 0..limit {
        let mut s = connect_from(2 + u8::try_from(i / 10).expect("few addresses"), server).await;
        match get(&mut s, "/healthz").await {
            Some((200, _)) => held.push(s),
            Some(other) => panic!("connection {i} answered {other:?}"),
            None => {
                closed += 1;
                if closed == refused {
                    break;
                }
            }
        }
    }
    (held, closed)
}

/// How long until a new connection is served again, trying every 10 ms for up to 5 s.
async fn time_to_serve_again(server: SocketAddr) -> Duration {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(5) {
        let mut s = connect_from(100, server).await;
        if let Some((200, _)) = get(&mut s, "/healthz").await {
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("not served again within 5 s of connections closing");
}

fn refused(metrics: &str, reason: &str) -> f64 {
    metrics
        .lines()
        .find(|l| {
            l.starts_with(&format!(
                "chat_connections_refused_total{{reason=\"{reason}\"}}"
            ))
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no refused count for {reason} in:\n{metrics}"))
}

/// CPU time (user + system) the process used so far, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc stat");
    let after_name = stat.rsplit_once(')').expect("stat format").1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat; 12 and 13 after the name.
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

#[tokio::test]
async fn max_connections_refuses_cleanly_and_serves_again() {
    bounded(async {
        let app = App::start(Backend::Memory, &["--max-connections", "40"]).await;
        let addr = app.server.addr;
        let mut held = hold(addr, 40).await;
        // Past the ceiling: each new connection is closed unanswered, at once.
        for _ in 0..10 {
            let mut s = connect_from(60, addr).await;
            assert_eq!(get(&mut s, "/healthz").await, None, "past the ceiling");
        }
        // The connections it has are served on.
        for s in held.iter_mut().take(5) {
            assert_eq!(get(s, "/healthz").await.map(|a| a.0), Some(200));
        }
        let (status, metrics) = get(&mut held[0], "/metrics").await.expect("metrics");
        assert_eq!(status, 200);
        assert_eq!(refused(&metrics, "total"), 10.0, "{metrics}");
        // Closing some frees room for new ones.
        held.truncate(30);
        let again = time_to_serve_again(addr).await;
        assert!(
            again < Duration::from_secs(1),
            "served again after {again:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn out_of_descriptors_backs_off_refuses_cleanly_and_recovers() {
    bounded(async {
        // A tiny descriptor limit and a ceiling above it: accept itself fails (EMFILE).
        let args: Vec<String> = [
            "--max-connections",
            "100000",
            "--registrations-per-min",
            "1000",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let server = Server::start_with_fd_limit(&args, 64).await;
        let addr = server.addr;
        let (mut held, closed) = fill(addr, 120, 5).await;
        assert_eq!(
            closed, 5,
            "the connections past the limit are refused, not left hanging"
        );
        assert!(held.len() >= 30, "only {} connections held", held.len());
        // Refusals keep coming without the server spinning or flooding its log.
        let ticks = cpu_ticks(server.pid());
        let started = Instant::now();
        for _ in 0..20 {
            let mut s = connect_from(61, addr).await;
            assert_eq!(get(&mut s, "/healthz").await, None);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let spent = cpu_ticks(server.pid()) - ticks;
        let elapsed = started.elapsed();
        // Clock ticks are 1/100 s: under a fifth of one core while refusing.
        assert!(
            (spent as f64) < elapsed.as_secs_f64() * 100.0 / 5.0,
            "{spent} ticks of CPU in {elapsed:?}"
        );
        let warnings = server
            .log
            .text()
            .lines()
            .filter(|l| l.contains("accept failed"))
            .count();
        let allowed = started.elapsed().as_secs() as usize + 3;
        assert!(
            warnings <= allowed,
            "{warnings} accept warnings, at most {allowed} expected"
        );
        // The held connections are served, and count what happened.
        for s in held.iter_mut().take(5) {
            assert_eq!(get(s, "/healthz").await.map(|a| a.0), Some(200));
        }
        let (_, metrics) = get(&mut held[0], "/metrics").await.expect("metrics");
        assert!(refused(&metrics, "descriptors") >= 25.0, "{metrics}");
        assert!(
            metric_value(&metrics, "chat_accept_errors_total").is_some_and(|n| n >= 25.0),
            "{metrics}"
        );
        // Descriptors free again: new connections are served.
        held.truncate(held.len() - 10);
        let again = time_to_serve_again(addr).await;
        assert!(
            again < Duration::from_secs(1),
            "served again after {again:?}"
        );
    })
    .await;
}
