//! PROTOCOL v3 about people: display names beside phones, and the presence grace after a
//! user's last socket closes.

use std::time::{Duration, Instant};

use chat_tests::{App, Backend, Client, User, backends};
use serde_json::{Value, json};

const A: &str = "+14155550161";
const B: &str = "+14155550162";
const C: &str = "+14155550163";

backends!(
    names_travel_with_phones,
    closing_the_last_socket_goes_offline_within_the_grace,
    a_socket_within_the_grace_keeps_the_user_online_without_a_flap,
);

/// Registers `phone` with a display name.
async fn register_named(app: &Client, phone: &str, name: &str) -> User {
    let v = app
        .post(
            "/register_user",
            None,
            &json!({"phone": phone, "name": name}),
        )
        .await
        .ok();
    User {
        phone: v["phone"].as_str().expect("phone").to_owned(),
        token: v["token"].as_str().expect("token").to_owned(),
    }
}

/// Every answer that lists users and every event that names them carries their names (as
/// text, exactly as given); users without a name are absent from `names`.
async fn names_travel_with_phones(b: Backend) {
    let app = App::start(b, &[]).await;
    let a = register_named(&app, A, "Asha <b>bold</b>").await;
    let bu = register_named(&app, B, "Ben").await;
    let c = app.register(C).await;
    let asha = "Asha <b>bold</b>";
    let mut b_ws = app.ws(&bu).await;

    let v = app.get("/online_users", Some(&c.token)).await.ok();
    assert_eq!(v["names"], json!({A: asha, B: "Ben"}), "{v}");

    app.post("/send_request", Some(&a.token), &json!({"phone2": B}))
        .await
        .ok();
    let ev = b_ws.recv_event("chat_request").await;
    assert_eq!(ev["data"]["names"], json!({A: asha, B: "Ben"}), "{ev}");
    app.post("/send_request", Some(&c.token), &json!({"phone2": B}))
        .await
        .ok();
    let ev = b_ws.recv_event("chat_request").await;
    assert_eq!(
        ev["data"]["names"],
        json!({B: "Ben"}),
        "C has no name: {ev}"
    );
    let v = app.get("/incoming_request", Some(&bu.token)).await.ok();
    assert_eq!(v["names"], json!({A: asha}), "{v}");

    let room = app.accept(&bu, A).await;
    let ev = b_ws.recv_event("request_accepted").await;
    assert_eq!(ev["data"]["names"], json!({A: asha, B: "Ben"}), "{ev}");
    app.post(
        "/respond_request",
        Some(&bu.token),
        &json!({"phone1": C, "action": "decline"}),
    )
    .await
    .ok();
    for (path, who) in [("/active_chatrooms", &bu), ("/reconnect", &bu)] {
        let v = if path == "/reconnect" {
            app.post(path, Some(&who.token), &json!({})).await.ok()
        } else {
            app.get(path, Some(&who.token)).await.ok()
        };
        assert_eq!(v["names"], json!({A: asha}), "{path}: {v}");
    }

    // user_joined names the joiner; presence names whose presence changed.
    let mut a_ws = app.ws(&a).await;
    a_ws.join(&room).await;
    b_ws.join(&room).await;
    let ev = a_ws
        .recv_where("B's user_joined", chat_tests::EVENT_TIMEOUT, |v| {
            v["event"] == "user_joined" && v["data"]["user"] == B
        })
        .await;
    assert_eq!(ev["data"]["names"], json!({B: "Ben"}), "{ev}");
    b_ws.close().await;
    let ev = a_ws
        .recv_where("B offline", Duration::from_secs(10), |v: &Value| {
            v["event"] == "presence" && v["data"]["phone"] == B
        })
        .await;
    assert_eq!(
        ev["data"],
        json!({"phone": B, "online": false, "names": {B: "Ben"}})
    );
}

/// A user whose last socket closes goes offline within `presence_grace_secs`, although their
/// HTTP window (`presence_secs`, 600 s here) is far from over; an API request brings them back
/// with a full window.
async fn closing_the_last_socket_goes_offline_within_the_grace(b: Backend) {
    let app = App::start(b, &["--presence-grace-secs", "2"]).await;
    let a = app.register(A).await;
    let bu = app.register(B).await;
    let mut a_ws = app.ws(&a).await;
    app.post("/send_request", Some(&a.token), &json!({"phone2": B}))
        .await
        .ok();
    let b_ws = app.ws(&bu).await;
    let closed = Instant::now();
    b_ws.close().await;
    let ev = a_ws
        .recv_where("B offline", Duration::from_secs(10), |v: &Value| {
            v["event"] == "presence" && v["data"]["phone"] == B
        })
        .await;
    assert_eq!(ev["data"]["online"], false, "{ev}");
    let took = closed.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "offline {took:?} after the last socket closed (grace 2 s)"
    );
    assert!(!app.online(&a.token).await.contains(&B.to_owned()));
    // An API request: online again, for the whole window.
    app.get("/incoming_request", Some(&bu.token)).await.ok();
    let ev = a_ws.recv_event("presence").await;
    assert_eq!(
        (&ev["data"]["phone"], &ev["data"]["online"]),
        (&json!(B), &json!(true))
    );
    assert!(app.online(&a.token).await.contains(&B.to_owned()));
}

/// A page reload (the socket closes, another opens within the grace) is no offline/online flap.
async fn a_socket_within_the_grace_keeps_the_user_online_without_a_flap(b: Backend) {
    let app = App::start(b, &["--presence-grace-secs", "2"]).await;
    let a = app.register(A).await;
    let bu = app.register(B).await;
    let mut a_ws = app.ws(&a).await;
    app.post("/send_request", Some(&a.token), &json!({"phone2": B}))
        .await
        .ok();
    let first = app.ws(&bu).await;
    first.close().await;
    let second = app.ws(&bu).await;
    // Past the grace: still online, and A heard nothing.
    a_ws.expect_no_event("presence", Duration::from_secs(3))
        .await;
    assert!(app.online(&a.token).await.contains(&B.to_owned()));
    // The second socket's own close starts the grace again.
    second.close().await;
    let ev = a_ws
        .recv_where("B offline", Duration::from_secs(10), |v: &Value| {
            v["event"] == "presence" && v["data"]["phone"] == B
        })
        .await;
    assert_eq!(ev["data"]["online"], false, "{ev}");
}
