//! Offline notifications (v3): what reaches `--webhook-url` when a message or a chat request is
//! for a user with no open socket, against a receiver each test runs on 127.0.0.1:0. The hidden
//! `--webhook-backoff-ms`, `--webhook-timeout-ms` and `--webhook-lease-ms` flags shorten the
//! contract's 1 s backoff, 5 s timeout and 30 s lease so each test takes seconds.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chat_tests::{App, Backend, Server, User, backends, bounded, eventually, metric_value};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinSet;

const A: &str = "+14155550171";
const B: &str = "+14155550172";
const SECRET: &str = "s3cret-for-tests";
/// Longest wait for a notification the test expects.
const WAIT: Duration = Duration::from_secs(20);

/// How the receiver answers one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reply {
    Status(u16),
    /// Reads the request and never answers (the connection stays open).
    Silent,
}

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Got {
    body: Vec<u8>,
    json: Value,
    content_type: Option<String>,
    signature: Option<String>,
    /// What it answered (`None`: silent).
    answered: Option<u16>,
    when: Instant,
}

#[derive(Default)]
struct State {
    /// Replies for the next requests, in order; once empty, `then`.
    script: VecDeque<Reply>,
    then: Option<Reply>,
    got: Vec<Got>,
}

/// A minimal HTTP/1.1 receiver of webhooks: one request per connection, answered as scripted.
struct Receiver {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    arrived: Arc<Notify>,
    tasks: JoinSet<()>,
}

impl Receiver {
    async fn start(script: &[Reply], then: Reply) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        Receiver::serve(listener, script, then)
    }

    /// On a port given up earlier (see [`closed_port`]).
    async fn start_on(addr: SocketAddr, then: Reply) -> Receiver {
        let listener = TcpListener::bind(addr).await.expect("bind again");
        Receiver::serve(listener, &[], then)
    }

    fn serve(listener: TcpListener, script: &[Reply], then: Reply) -> Receiver {
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(Mutex::new(State {
            script: script.iter().copied().collect(),
            then: Some(then),
            got: Vec::new(),
        }));
        let arrived = Arc::new(Notify::new());
        let mut tasks = JoinSet::new();
        let (s, n) = (state.clone(), arrived.clone());
        tasks.spawn(async move {
            let mut conns = JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                conns.spawn(handle(stream, s.clone(), n.clone()));
            }
        });
        Receiver {
            addr,
            state,
            arrived,
            tasks,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn set_reply(&self, reply: Reply) {
        let mut s = self.state.lock().expect("lock");
        s.script.clear();
        s.then = Some(reply);
    }

    fn got(&self) -> Vec<Got> {
        self.state.lock().expect("lock").got.clone()
    }

    /// Waits (on arrivals, bounded) until `check` holds for what arrived.
    async fn wait_until(&self, what: &str, check: impl Fn(&[Got]) -> bool) -> Vec<Got> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let mut woken = std::pin::pin!(self.arrived.notified());
            woken.as_mut().enable();
            let got = self.got();
            if check(&got) {
                return got;
            }
            if tokio::time::timeout_at(deadline, woken).await.is_err() {
                panic!("waited {WAIT:?} for {what}; got {got:#?}");
            }
        }
    }

    /// Waits until `n` requests were answered 2xx.
    async fn delivered(&self, n: usize) -> Vec<Got> {
        let got = self
            .wait_until(&format!("{n} delivered"), |g| delivered(g).len() >= n)
            .await;
        delivered(&got)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.tasks.abort_all();
    }
}

fn delivered(got: &[Got]) -> Vec<Got> {
    got.iter()
        .filter(|g| g.answered.is_some_and(|s| (200..300).contains(&s)))
        .cloned()
        .collect()
}

async fn handle(mut stream: TcpStream, state: Arc<Mutex<State>>, arrived: Arc<Notify>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let (head_len, content_length, content_type, signature) = loop {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        if let Ok(httparse::Status::Complete(len)) = req.parse(&buf) {
            assert_eq!(req.method, Some("POST"));
            assert_eq!(req.path, Some("/hook"));
            let header = |name: &str| {
                req.headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case(name))
                    .map(|h| String::from_utf8_lossy(h.value).into_owned())
            };
            let cl: usize = header("content-length")
                .and_then(|v| v.parse().ok())
                .expect("a content-length");
            break (len, cl, header("content-type"), header("x-chat-signature"));
        }
        assert!(buf.len() < 64 * 1024, "request head too long");
    };
    while buf.len() < head_len + content_length {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let body = buf[head_len..head_len + content_length].to_vec();
    let reply = {
        let mut s = state.lock().expect("lock");
        let reply = s
            .script
            .pop_front()
            .or(s.then)
            .unwrap_or(Reply::Status(200));
        s.got.push(Got {
            json: serde_json::from_slice(&body).expect("the body is JSON"),
            body,
            content_type,
            signature,
            answered: match reply {
                Reply::Status(code) => Some(code),
                Reply::Silent => None,
            },
            when: Instant::now(),
        });
        reply
    };
    match reply {
        Reply::Status(code) => {
            let answer =
                format!("HTTP/1.1 {code} X\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
            let _ = stream.write_all(answer.as_bytes()).await;
            let _ = stream.shutdown().await;
            arrived.notify_waiters();
        }
        Reply::Silent => {
            arrived.notify_waiters();
            // Holds the connection open, unanswered, until the receiver is dropped.
            std::future::pending::<()>().await;
        }
    }
}

/// A port that refuses connections now (bound, then given up), to bring a receiver up on later.
async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    l.local_addr().expect("addr")
}

fn verifies(secret: &str, got: &Got) -> bool {
    let Some(sig) = got
        .signature
        .as_deref()
        .and_then(|s| s.strip_prefix("sha256="))
    else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(&got.body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    hex == sig
}

/// Flags of a server posting to `url` with the test's short timings.
fn flags(url: &str) -> Vec<String> {
    [
        "--webhook-url",
        url,
        "--webhook-backoff-ms",
        "200",
        "--webhook-timeout-ms",
        "1000",
        "--webhook-lease-ms",
        "3000",
    ]
    .map(str::to_owned)
    .to_vec()
}

async fn start(b: Backend, url: &str, extra: &[&str]) -> App {
    let mut args = flags(url);
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    App::start(b, &refs).await
}

/// A asks B (who has no socket): a `chat_request` for B. Returns (A, B).
async fn request_to_offline(app: &App) -> (User, User) {
    let a = app.register(A).await;
    let b = app.register(B).await;
    app.post(
        "/send_request",
        Some(&a.token),
        &json!({"phone1": a.phone, "phone2": b.phone}),
    )
    .await
    .ok();
    (a, b)
}

fn metric(text: &str, name: &str) -> f64 {
    metric_value(text, name).unwrap_or(-1.0)
}

backends!(
    answered_500_then_200_is_retried_and_delivered_once,
    a_silent_receiver_is_retried,
    a_receiver_down_then_up_gets_what_was_queued,
    nothing_for_a_user_with_a_socket,
);

/// 500 first: retried after the backoff, delivered by the 200, never again; the body is the
/// contract's and its signature verifies with the secret, not with another.
async fn answered_500_then_200_is_retried_and_delivered_once(b: Backend) {
    let rx = Receiver::start(&[Reply::Status(500)], Reply::Status(200)).await;
    let app = start(b, &rx.url(), &["--webhook-secret", SECRET]).await;
    let sent_at = chat_tests_now();
    let (a, bu) = request_to_offline(&app).await;
    let got = rx.delivered(1).await;
    let all = rx.got();
    assert_eq!(all.len(), 2, "one failed attempt, one delivery: {all:#?}");
    assert_eq!(all[0].answered, Some(500));
    assert_eq!(
        all[0].body, all[1].body,
        "the retry is the same notification"
    );
    let retry_gap = all[1].when - all[0].when;
    assert!(
        retry_gap >= Duration::from_millis(150),
        "retried after the backoff, not at once: {retry_gap:?}"
    );
    let n = &got[0];
    assert_eq!(n.content_type.as_deref(), Some("application/json"));
    let at = n.json["at"].as_u64().expect("at");
    assert!(at >= sent_at && at <= chat_tests_now(), "at: {at}");
    assert_eq!(
        n.json,
        json!({"type": "chat_request", "to": B, "from": A, "names": {}, "at": at})
    );
    assert!(
        verifies(SECRET, n),
        "the signature verifies with the secret"
    );
    assert!(
        !verifies("not-the-secret", n),
        "a wrong secret does not verify the signature"
    );

    // The next notification for B arrives only after the first was acknowledged (in order per
    // recipient), so seeing it means the first will not be sent again.
    let room = app.accept(&bu, &a.phone).await;
    let mut ws = app.ws(&a).await;
    ws.join(&room).await;
    let long = "é".repeat(150);
    let m = ws.say(&room, &long).await;
    let got = rx.delivered(2).await;
    assert_eq!(rx.got().len(), 3, "nothing sent twice: {:#?}", rx.got());
    let n = &got[1];
    assert_eq!(
        n.json,
        json!({"type": "message", "to": B, "from": A, "names": {}, "room": room,
            "id": m["id"], "preview": "é".repeat(100), "at": n.json["at"]})
    );
    assert!(verifies(SECRET, n));
    let ok = eventually(WAIT, || async {
        let text = app.metrics().await;
        metric(&text, "chat_webhook_sent_total") == 2.0
            && metric(&text, "chat_webhook_failed_total") == 1.0
            && metric(&text, "chat_webhook_dropped_total") == 0.0
            && metric(&text, "chat_webhook_queue") == 0.0
    })
    .await;
    assert!(ok, "metrics: {}", app.metrics().await);
}

/// No answer within the timeout is a failed attempt: retried, then delivered.
async fn a_silent_receiver_is_retried(b: Backend) {
    let rx = Receiver::start(&[Reply::Silent, Reply::Silent], Reply::Status(204)).await;
    let app = start(b, &rx.url(), &[]).await;
    request_to_offline(&app).await;
    let got = rx.delivered(1).await;
    let all = rx.got();
    assert_eq!(all.len(), 3, "two timeouts, one delivery: {all:#?}");
    assert!(got[0].signature.is_none(), "unsigned without a secret");
    // Timeout (1 s) then the backoff (200 ms, then 400 ms) before each retry.
    assert!(all[1].when - all[0].when >= Duration::from_millis(1100));
    assert!(all[2].when - all[1].when >= Duration::from_millis(1300));
    let ok = eventually(WAIT, || async {
        let text = app.metrics().await;
        metric(&text, "chat_webhook_sent_total") == 1.0
            && metric(&text, "chat_webhook_failed_total") == 2.0
    })
    .await;
    assert!(ok, "metrics: {}", app.metrics().await);
}

/// While the receiver is down, notifications wait in the queue (and the chat goes on); once it
/// is up they are delivered, in order.
async fn a_receiver_down_then_up_gets_what_was_queued(b: Backend) {
    let addr = closed_port().await;
    let app = start(b, &format!("http://{addr}/hook"), &[]).await;
    let (a, bu) = request_to_offline(&app).await;
    let room = app.accept(&bu, &a.phone).await;
    let mut ws = app.ws(&a).await;
    ws.join(&room).await;
    let started = Instant::now();
    for i in 0..3 {
        ws.say(&room, &format!("m{i}")).await;
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a receiver that is down does not slow the chat"
    );
    let queued = eventually(WAIT, || async {
        let text = app.metrics().await;
        metric(&text, "chat_webhook_queue") == 4.0
            && metric(&text, "chat_webhook_failed_total") >= 2.0
    })
    .await;
    assert!(queued, "metrics: {}", app.metrics().await);
    let rx = Receiver::start_on(addr, Reply::Status(200)).await;
    let got = rx.delivered(4).await;
    let kinds: Vec<String> = got
        .iter()
        .map(|g| match g.json["type"].as_str() {
            Some("message") => g.json["preview"].as_str().unwrap_or("?").to_owned(),
            other => other.unwrap_or("?").to_owned(),
        })
        .collect();
    assert_eq!(kinds, ["chat_request", "m0", "m1", "m2"], "in order");
    assert_eq!(rx.got().len(), 4, "each once");
}

/// A member with an open socket is told over it, not by webhook.
async fn nothing_for_a_user_with_a_socket(b: Backend) {
    let rx = Receiver::start(&[], Reply::Status(200)).await;
    let app = start(b, &rx.url(), &["--presence-grace-secs", "0"]).await;
    let a = app.register(A).await;
    let bu = app.register(B).await;
    let b_ws = app.ws(&bu).await;
    let room = app.make_room(&a, &bu).await;
    let mut a_ws = app.ws(&a).await;
    a_ws.join(&room).await;
    a_ws.say(&room, "while B is here").await;
    // B leaves: once B is offline, the next message is notified, and it is the first thing
    // the receiver gets.
    b_ws.close().await;
    a_ws.recv_where("B offline", WAIT, |v| {
        v["event"] == "presence" && v["data"]["phone"] == B && v["data"]["online"] == false
    })
    .await;
    let sent = Instant::now();
    a_ws.say(&room, "after B left").await;
    let got = rx.delivered(1).await;
    eprintln!(
        "delivery delay (send_message to the receiver, {b:?}): {:?}",
        got[0].when - sent
    );
    assert_eq!(got[0].json["preview"], "after B left");
    assert_eq!(rx.got().len(), 1, "{:#?}", rx.got());
}

/// The secret may come from `CHAT_WEBHOOK_SECRET`.
#[tokio::test]
async fn the_secret_may_come_from_the_environment() {
    bounded(async {
        let rx = Receiver::start(&[], Reply::Status(200)).await;
        let mut args = flags(&rx.url());
        args.extend(["--registrations-per-min".into(), "1000".into()]);
        let server = Server::start_with_env(&args, &[("CHAT_WEBHOOK_SECRET", SECRET)]).await;
        let app = chat_tests::Client::new(server.addr);
        let a = app.register(A).await;
        let b = app.register(B).await;
        app.post(
            "/send_request",
            Some(&a.token),
            &json!({"phone1": a.phone, "phone2": b.phone}),
        )
        .await
        .ok();
        let got = rx.delivered(1).await;
        assert!(verifies(SECRET, &got[0]));
        assert!(!verifies("wrong", &got[0]));
    })
    .await;
}

/// Two nodes on one Redis: node 1 takes notifications (its receiver never answers) and is
/// killed while holding them; node 2 delivers every one once their leases run out, and none
/// twice.
#[tokio::test]
async fn a_killed_node_loses_nothing_it_had_queued() {
    bounded(async {
        let rx = Receiver::start(&[], Reply::Silent).await;
        let mut app = start(Backend::Redis, &rx.url(), &[]).await;
        let a = app.register(A).await;
        let recipients: Vec<User> = {
            let mut v = Vec::new();
            for i in 0..4 {
                v.push(app.register(&format!("+1415555018{i}")).await);
            }
            v
        };
        for r in &recipients {
            app.post(
                "/send_request",
                Some(&a.token),
                &json!({"phone1": a.phone, "phone2": r.phone}),
            )
            .await
            .ok();
        }
        // Node 1 has each recipient's notification in flight, unanswered.
        rx.wait_until("node 1's four attempts", |g| g.len() >= 4)
            .await;
        app.server.kill();
        let killed = Instant::now();
        rx.set_reply(Reply::Status(200));
        let node2 = app.another_node().await;
        let got = rx.delivered(4).await;
        let took = killed.elapsed();
        let mut per_recipient: HashMap<String, usize> = HashMap::new();
        for g in &got {
            *per_recipient
                .entry(g.json["to"].as_str().unwrap_or("?").to_owned())
                .or_default() += 1;
        }
        let want: HashMap<String, usize> =
            recipients.iter().map(|r| (r.phone.clone(), 1)).collect();
        assert_eq!(per_recipient, want, "each delivered once: {got:#?}");
        eprintln!("node 2 delivered node 1's leased notifications {took:?} after the kill");
        let c = chat_tests::Client::new(node2.addr);
        let drained = eventually(WAIT, || async {
            let text = c.metrics().await;
            metric(&text, "chat_webhook_queue") == 0.0
                && metric(&text, "chat_webhook_sent_total") == 4.0
        })
        .await;
        assert!(drained, "metrics: {}", c.metrics().await);
        assert_eq!(delivered(&rx.got()).len(), 4, "none twice");
    })
    .await;
}

/// Unix ms now.
fn chat_tests_now() -> u64 {
    super::now_ms()
}
