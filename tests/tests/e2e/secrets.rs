//! Secrets at rest and in logs: the store keeps digests of session tokens and tickets, never
//! the secrets, and no log line carries them, even at `RUST_LOG=trace`.

use std::process::Command;

use chat_tests::{App, Auth, Backend, Client, Server, User, Ws, bounded};
use serde_json::json;

const A: &str = "+14155550171";
const B: &str = "+14155550172";

/// Everything a session's life writes: a refresh, tickets (one used, one left), sockets by
/// ticket, by header and by `?token=`, a request, an accept, messages, a reconnect, a refused
/// token. Returns the secrets a client held.
async fn a_sessions_life(app: &Client) -> Vec<String> {
    let a = app.register(A).await;
    let b = app.register(B).await;
    // A refresh presents the token again.
    app.post("/register_user", Some(&a.token), &json!({ "phone": A }))
        .await
        .ok();
    let ticket = |user: User| async move {
        app.post("/ws_ticket", Some(&user.token), &json!({}))
            .await
            .ok()["ticket"]
            .as_str()
            .expect("ticket")
            .to_owned()
    };
    let used = ticket(a.clone()).await;
    let unused = ticket(b.clone()).await;
    let mut by_ticket = Ws::open(app.addr, &used, Auth::Ticket, &[])
        .await
        .unwrap_or_else(|r| panic!("ticket refused: {}", r.status));
    by_ticket.phone = A.into();
    by_ticket.recv_event("connection_status").await;
    let mut by_query = Ws::open(app.addr, &b.token, Auth::Query, &[])
        .await
        .unwrap_or_else(|r| panic!("?token= refused: {}", r.status));
    by_query.phone = B.into();
    by_query.recv_event("connection_status").await;
    let room = app.make_room(&a, &b).await;
    let mut ws = app.ws(&b).await;
    ws.join(&room).await;
    by_ticket.join(&room).await;
    by_ticket.say(&room, "hello").await;
    ws.say(&room, "hi").await;
    app.post("/reconnect", Some(&a.token), &json!({}))
        .await
        .ok();
    app.get(&format!("/chatrooms/{room}/messages"), Some(&b.token))
        .await
        .ok();
    // A used ticket and a token with one digit changed are refused (and must not be logged
    // either).
    let refused = Ws::open(app.addr, &used, Auth::Ticket, &[]).await;
    assert_eq!(refused.err().map(|r| r.status), Some(401));
    let wrong: String = a
        .token
        .chars()
        .enumerate()
        .map(|(i, c)| {
            if i == 0 {
                if c == 'a' { 'b' } else { 'a' }
            } else {
                c
            }
        })
        .collect();
    app.get("/active_chatrooms", Some(&wrong))
        .await
        .err(401, "unauthorized");
    ws.close().await;
    by_ticket.close().await;
    by_query.close().await;
    vec![a.token, b.token, used, unused, wrong]
}

/// Every key under `prefix` in the Redis on `port`, with its whole value, as text.
fn redis_dump(port: u16, prefix: &str) -> String {
    let cli = |args: &[&str]| -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &port.to_string(), "--raw"])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("redis-cli (installed with redis-server): {e}"));
        assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let pattern = format!("{prefix}*");
    let keys = cli(&["--scan", "--pattern", &pattern]);
    let mut dump = String::new();
    for key in keys.lines().filter(|k| !k.is_empty()) {
        let kind = cli(&["TYPE", key]);
        let value = match kind.trim() {
            "string" => cli(&["GET", key]),
            "hash" => cli(&["HGETALL", key]),
            "set" => cli(&["SMEMBERS", key]),
            "zset" => cli(&["ZRANGE", key, "0", "-1", "WITHSCORES"]),
            "list" => cli(&["LRANGE", key, "0", "-1"]),
            "stream" => cli(&["XRANGE", key, "-", "+"]),
            other => panic!("key {key} of unexpected type {other}"),
        };
        dump.push_str(&format!("{key} ({}):\n{value}\n", kind.trim()));
    }
    dump
}

/// After a session's life on Redis, no key name and no value holds a token or a ticket: only
/// their digests.
#[tokio::test]
async fn redis_holds_no_token_or_ticket() {
    bounded(async {
        let app = App::start(Backend::Redis, &[]).await;
        let secrets = a_sessions_life(&app).await;
        let dump = redis_dump(app.redis().port(), &app.prefix);
        // The dump is real: the sessions, the room, the messages and the left ticket are there.
        for expected in [A, B, "hello", "hi"] {
            assert!(
                dump.contains(expected),
                "{expected} not in the dump:\n{dump}"
            );
        }
        assert!(
            dump.lines()
                .any(|l| l.starts_with(&format!("{}k:", app.prefix))),
            "the unused ticket's key is missing:\n{dump}"
        );
        for secret in &secrets {
            assert!(
                !dump.contains(secret.as_str()),
                "a secret is stored in clear:\n{dump}"
            );
        }
    })
    .await;
}

/// The same life with the server logging at `trace`: no token or ticket in any line.
#[tokio::test]
async fn trace_logs_hold_no_token_or_ticket() {
    bounded(async {
        let server = Server::start_with_env(
            &["--registrations-per-min".into(), "1000".into()],
            &[("RUST_LOG", "trace"), ("CHAT_E2E_KEEP_LOG", "1")],
        )
        .await;
        let secrets = a_sessions_life(&Client::new(server.addr)).await;
        let log = server.log.text();
        assert!(
            log.lines().count() > 50 && log.contains("TRACE"),
            "the server did not log at trace:\n{log}"
        );
        for secret in &secrets {
            if let Some(line) = log.lines().find(|l| l.contains(secret.as_str())) {
                panic!("a secret in the log: {line}");
            }
        }
    })
    .await;
}
