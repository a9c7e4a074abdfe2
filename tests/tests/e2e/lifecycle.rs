//! Process lifecycle: graceful shutdown on SIGTERM/SIGINT, and a restart on the same Redis that
//! loses nothing.

use std::time::Duration;

use chat_tests::{App, Backend, Server, bounded};
use serde_json::json;

const A: &str = "+14155550151";
const B: &str = "+14155550152";

/// The contract's bound on a graceful exit.
const EXIT_BOUND: Duration = Duration::from_secs(10);

async fn shuts_down_gracefully(signal: &str) {
    let mut app = App::start(Backend::Memory, &[]).await;
    let a = app.register(A).await;
    let bu = app.register(B).await;
    let room = app.make_room(&a, &bu).await;
    let mut a_ws = app.ws(&a).await;
    let mut b_ws = app.ws(&bu).await;
    a_ws.join(&room).await;
    match signal {
        "TERM" => app.server.sigterm(),
        _ => app.server.sigint(),
    }
    for ws in [&mut a_ws, &mut b_ws] {
        let code = ws.expect_close(EXIT_BOUND).await;
        assert_eq!(code, Some(1001), "[{}] close code on shutdown", ws.phone);
    }
    let status = app
        .server
        .wait_exit(EXIT_BOUND)
        .await
        .unwrap_or_else(|| panic!("still running {EXIT_BOUND:?} after SIG{signal}"));
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIG{signal}: {status}"
    );
    // Nobody listens any more.
    assert!(
        tokio::net::TcpStream::connect(app.addr).await.is_err(),
        "still accepting after exit"
    );
}

#[tokio::test]
async fn sigterm_closes_sockets_1001_and_exits_0() {
    bounded(shuts_down_gracefully("TERM")).await
}

#[tokio::test]
async fn sigint_closes_sockets_1001_and_exits_0() {
    bounded(shuts_down_gracefully("INT")).await
}

#[tokio::test]
async fn restart_on_the_same_redis_loses_nothing() {
    bounded(async {
        let mut app = App::start(Backend::Redis, &[]).await;
        let a = app.register(A).await;
        let bu = app.register(B).await;
        let room = app.make_room(&a, &bu).await;
        let mut a_ws = app.ws(&a).await;
        let mut b_ws = app.ws(&bu).await;
        a_ws.join(&room).await;
        let first = b_ws.say(&room, "before").await;
        assert_eq!(a_ws.recv_event("receive_message").await["data"], first);
        // A stops listening; B goes on.
        a_ws.close().await;
        let missed = vec![
            b_ws.say(&room, "while away 1").await,
            b_ws.say(&room, "while away 2").await,
        ];
        // A pending request survives too.
        let c = app.register("+14155550153").await;
        app.post("/send_request", Some(&c.token), &json!({ "phone2": A }))
            .await
            .ok();

        app.server.sigterm();
        assert_eq!(b_ws.expect_close(EXIT_BOUND).await, Some(1001));
        let status = app
            .server
            .wait_exit(EXIT_BOUND)
            .await
            .expect("exits within 10 s of SIGTERM");
        assert_eq!(status.code(), Some(0), "{status}");

        let new = Server::start(&app.server.args).await;
        let old = app.replace_server(new);
        drop(old);
        // The token still works, the room and its history are there.
        let v = app.get("/active_chatrooms", Some(&a.token)).await.ok();
        assert_eq!(v["chatrooms"][0]["chat_id"], room.as_str(), "{v}");
        let v = app.get("/incoming_request", Some(&a.token)).await.ok();
        assert_eq!(v["incoming_request"], json!([c.phone]), "{v}");
        let h = app
            .get(&format!("/chatrooms/{room}/messages"), Some(&bu.token))
            .await
            .ok();
        let mut all = vec![first.clone()];
        all.extend(missed.iter().cloned());
        assert_eq!(h["messages"], json!(all));
        // Resuming with `since` misses nothing, and new messages follow in order.
        let mut a_ws = app.ws(&a).await;
        let hist = a_ws
            .join_with(json!({"room": room, "since": first["id"]}))
            .await;
        assert_eq!(hist["messages"], json!(missed));
        let mut b_ws = app.ws(&bu).await;
        let after = b_ws.say(&room, "after restart").await;
        assert_eq!(a_ws.recv_event("receive_message").await["data"], after);
        let ids = chat_tests::ids(
            &app.get(&format!("/chatrooms/{room}/messages"), Some(&a.token))
                .await
                .ok()["messages"],
        );
        assert_eq!(ids.len(), 4);
        assert_eq!(ids.last(), after["id"].as_str().map(str::to_owned).as_ref());
        // Phones in use stay in use.
        app.post("/register_user", None, &json!({ "phone": A }))
            .await
            .err(409, "phone_in_use");
    })
    .await
}
