//! Two `chat-server` processes sharing one Redis and key prefix behave as one server.

use std::time::Duration;

use chat_tests::{App, Backend, Client, bounded, eventually};
use serde_json::json;

const A: &str = "+14155550141";
const B: &str = "+14155550142";
const C: &str = "+14155550143";

#[tokio::test]
async fn users_on_two_nodes_find_each_other_and_chat() {
    bounded(two_nodes_chat(Backend::Redis)).await;
}

/// The same on a Redis Cluster: the users are in the directory's slot, each room in its own
/// (so the rooms of this test are spread over the three shards), events on sharded channels.
#[tokio::test]
async fn users_on_two_nodes_chat_over_a_redis_cluster() {
    bounded(two_nodes_chat(Backend::RedisCluster)).await;
}

async fn two_nodes_chat(backend: Backend) {
    {
        let app = App::start(backend, &[]).await;
        let node2 = app.another_node().await;
        let n1 = Client::new(app.server.addr);
        let n2 = Client::new(node2.addr);
        let a = n1.register(A).await;
        let bu = n2.register(B).await;
        let c = n2.register(C).await;
        // A phone is one identity across nodes.
        n1.post("/register_user", None, &json!({ "phone": B }))
            .await
            .err(409, "phone_in_use");
        let mut a_ws = n1.ws(&a).await;
        let mut b_ws = n2.ws(&bu).await;
        let mut c_ws = n2.ws(&c).await;
        // Each node lists the other's users.
        for (node, me) in [(&n1, &a), (&n2, &bu)] {
            let online = node.online(&me.token).await;
            for p in [A, B, C] {
                assert!(
                    online.contains(&p.to_owned()),
                    "{p} missing from {online:?}"
                );
            }
        }
        // Tokens work on either node, and so does a ticket (once, on whichever node).
        n2.get("/active_chatrooms", Some(&a.token)).await.ok();
        let ticket = n1.post("/ws_ticket", Some(&a.token), &json!({})).await.ok()["ticket"]
            .as_str()
            .expect("ticket")
            .to_owned();
        let mut by_ticket =
            chat_tests::Ws::open(node2.addr, &ticket, chat_tests::Auth::Ticket, &[])
                .await
                .unwrap_or_else(|r| panic!("ticket refused on the other node: {}", r.status));
        by_ticket.phone = A.into();
        by_ticket.recv_event("connection_status").await;
        let again = chat_tests::Ws::open(app.server.addr, &ticket, chat_tests::Auth::Ticket, &[])
            .await
            .expect_err("a ticket works once across nodes");
        assert_eq!(again.status, 401);
        by_ticket.close().await;

        // Request through node 1, accept through node 2.
        n1.post("/send_request", Some(&a.token), &json!({ "phone2": B }))
            .await
            .ok();
        let ev = b_ws.recv_event("chat_request").await;
        assert_eq!(ev["data"]["from"], A);
        let v = n2.get("/incoming_request", Some(&bu.token)).await.ok();
        assert_eq!(v["incoming_request"], json!([A]));
        let room = n2.accept(&bu, A).await;
        let ea = a_ws.recv_event("request_accepted").await;
        assert_eq!(
            ea["data"],
            json!({"chat_id": room, "from_user": B, "to_user": A, "names": {}})
        );
        let eb = b_ws.recv_event("request_accepted").await;
        assert_eq!(
            eb["data"],
            json!({"chat_id": room, "from_user": A, "to_user": B, "names": {}})
        );

        // Decline and cancel cross nodes too.
        n1.post("/send_request", Some(&a.token), &json!({ "phone2": C }))
            .await
            .ok();
        c_ws.recv_event("chat_request").await;
        n1.post("/cancel_request", Some(&a.token), &json!({ "phone2": C }))
            .await
            .ok();
        let ev = c_ws.recv_event("request_cancelled").await;
        assert_eq!(
            ev["data"],
            json!({"from_user": A, "to_user": C, "names": {}})
        );
        n2.post("/send_request", Some(&c.token), &json!({ "phone2": A }))
            .await
            .ok();
        a_ws.recv_event("chat_request").await;
        n1.post(
            "/respond_request",
            Some(&a.token),
            &json!({"phone1": C, "action": "decline"}),
        )
        .await
        .ok();
        let ev = c_ws.recv_event("request_declined").await;
        assert_eq!(
            ev["data"],
            json!({"from_user": A, "to_user": C, "names": {}})
        );

        // Chat both ways: joins, messages in one order on both nodes, typing.
        a_ws.join(&room).await;
        b_ws.join(&room).await;
        let ev = a_ws
            .recv_where("B joined", chat_tests::EVENT_TIMEOUT, |v| {
                v["event"] == "user_joined" && v["data"]["user"] == B
            })
            .await;
        assert_eq!(ev["data"]["room"], room.as_str());
        let mut acked = Vec::new();
        for i in 0..10 {
            let (ws, who) = if i % 2 == 0 {
                (&mut a_ws, "a")
            } else {
                (&mut b_ws, "b")
            };
            acked.push(ws.say(&room, &format!("{who}{i}")).await);
        }
        let mut orders = Vec::new();
        for ws in [&mut a_ws, &mut b_ws] {
            let mut got = Vec::new();
            for _ in 0..10 {
                got.push(ws.recv_event("receive_message").await["data"].clone());
            }
            orders.push(got);
        }
        assert_eq!(orders[0], orders[1], "both nodes deliver one order");
        let history = n2
            .get(&format!("/chatrooms/{room}/messages"), Some(&bu.token))
            .await
            .ok();
        assert_eq!(
            history["messages"],
            json!(orders[0]),
            "the order of history"
        );
        assert_eq!(
            chat_tests::texts(&json!(acked)),
            chat_tests::texts(&history["messages"]),
            "sequential sends keep their order"
        );
        // Concurrent senders on both nodes: every joined socket sees one order, history's.
        let mut a_send = n1.ws(&a).await;
        let mut b_send = n2.ws(&bu).await;
        let (sa, sb) = tokio::join!(
            a_send.send_burst(&room, "ca", 25),
            b_send.send_burst(&room, "cb", 25)
        );
        let mut orders = Vec::new();
        for ws in [&mut a_ws, &mut b_ws] {
            let mut got = Vec::new();
            for _ in 0..50 {
                got.push(ws.recv_event("receive_message").await["data"].clone());
            }
            orders.push(got);
        }
        assert_eq!(orders[0], orders[1], "the two nodes delivered two orders");
        let history = n1
            .get(
                &format!("/chatrooms/{room}/messages?limit=50"),
                Some(&a.token),
            )
            .await
            .ok();
        assert_eq!(
            history["messages"],
            json!(orders[0]),
            "delivery order is history order"
        );
        for mine in [&sa, &sb] {
            let positions: Vec<usize> = mine
                .iter()
                .map(|m| {
                    orders[0]
                        .iter()
                        .position(|o| o == m)
                        .expect("acked message delivered")
                })
                .collect();
            assert!(
                positions.windows(2).all(|w| w[0] < w[1]),
                "a sender's order was changed"
            );
        }
        b_ws.call_ok("typing", json!({"room": room, "typing": true}))
            .await;
        let ev = a_ws.recv_event("typing").await;
        assert_eq!(ev["data"], json!({"room": room, "user": B, "typing": true}));

        // A socket leaving on node 2 is seen on node 1.
        b_send.close().await;
        b_ws.call_ok("leave_room", json!({ "room": room })).await;
        let ev = a_ws.recv_event("user_left").await;
        assert_eq!(ev["data"], json!({"room": room, "user": B}));
        b_ws.join(&room).await;
        // Close through node 2: both told.
        n2.post("/close_room", Some(&bu.token), &json!({ "chat_id": room }))
            .await
            .ok();
        for ws in [&mut a_ws, &mut b_ws] {
            let ev = ws.recv_event("room_closed").await;
            assert_eq!(ev["data"], json!({"room": room, "by": B}));
        }
        drop(node2);
    }
}

#[tokio::test]
async fn presence_changes_cross_nodes() {
    bounded(async {
        let app = App::start(Backend::Redis, &["--presence-secs", "1"]).await;
        let node2 = app.another_node().await;
        let n1 = Client::new(app.server.addr);
        let n2 = Client::new(node2.addr);
        let a = n1.register(A).await;
        let bu = n2.register(B).await;
        let mut a_ws = n1.ws(&a).await;
        n1.post("/send_request", Some(&a.token), &json!({ "phone2": B }))
            .await
            .ok();
        // B's HTTP presence lapses: A (on node 1) hears B went offline.
        let ev = a_ws
            .recv_event_within("presence", Duration::from_secs(10))
            .await;
        assert_eq!(
            ev["data"],
            json!({"phone": B, "online": false, "names": {}})
        );
        // B opens a socket on node 2: online on node 1.
        let b_ws = n2.ws(&bu).await;
        let ev = a_ws.recv_event("presence").await;
        assert_eq!(ev["data"], json!({"phone": B, "online": true, "names": {}}));
        assert!(n1.online(&a.token).await.contains(&B.to_owned()));
        // B closes it: offline on node 1.
        b_ws.close().await;
        let ev = a_ws
            .recv_event_within("presence", Duration::from_secs(10))
            .await;
        assert_eq!(
            ev["data"],
            json!({"phone": B, "online": false, "names": {}})
        );
        assert!(!n1.online(&a.token).await.contains(&B.to_owned()));
    })
    .await
}

#[tokio::test]
async fn a_killed_node_stops_counting_its_users_within_node_ttl() {
    bounded(async {
        let app = App::start(
            Backend::Redis,
            &["--presence-secs", "1", "--node-ttl-secs", "2"],
        )
        .await;
        let mut node2 = app.another_node().await;
        let n1 = Client::new(app.server.addr);
        let n2 = Client::new(node2.addr);
        let a = n1.register(A).await;
        let bu = n2.register(B).await;
        let mut a_ws = n1.ws(&a).await;
        let _b_ws = n2.ws(&bu).await;
        let room = n1.make_room(&a, &bu).await;
        // Past B's HTTP presence window, B is online only through the socket on node 2.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(
            n1.online(&a.token).await.contains(&B.to_owned()),
            "B's open socket on node 2 keeps B online"
        );
        a_ws.drain_backlog("presence");
        node2.kill();
        let started = std::time::Instant::now();
        let ev = a_ws
            .recv_where("B offline", Duration::from_secs(10), |v| {
                v["event"] == "presence" && v["data"]["phone"] == B
            })
            .await;
        assert_eq!(
            ev["data"],
            json!({"phone": B, "online": false, "names": {}})
        );
        let offline = eventually(Duration::from_secs(5), || async {
            !n1.online(&a.token).await.contains(&B.to_owned())
        })
        .await;
        assert!(offline, "B still listed online after node 2 died");
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "took {:?} with node_ttl 2 s",
            started.elapsed()
        );
        // Node 1 keeps serving, and the room is still there.
        a_ws.say(&room, "anyone?").await;
    })
    .await
}

/// Two deployments on one Redis with different key prefixes never see each other: not their
/// phones, not their presence, not their events.
#[tokio::test]
async fn key_prefixes_isolate_deployments() {
    bounded(async {
        let app = App::start(Backend::Redis, &[]).await;
        let other_prefix = chat_tests::unique_prefix();
        let mut args = app.server.args.clone();
        let i = args
            .iter()
            .position(|a| a == "--key-prefix")
            .expect("redis apps set a prefix");
        args[i + 1] = other_prefix;
        let other = chat_tests::Server::start(&args).await;
        let n1 = Client::new(app.server.addr);
        let n2 = Client::new(other.addr);
        // The same phones register on both: separate identities.
        let a1 = n1.register(A).await;
        let b1 = n1.register(B).await;
        let a2 = n2.register(A).await;
        let b2 = n2.register(B).await;
        assert_ne!(a1.token, a2.token);
        n2.get("/active_chatrooms", Some(&a1.token))
            .await
            .err(401, "unauthorized");
        let c1 = n1.register(C).await;
        assert!(!n2.online(&a2.token).await.contains(&C.to_owned()));
        // Events stay in their deployment.
        let mut b2_ws = n2.ws(&b2).await;
        let mut b1_ws = n1.ws(&b1).await;
        let room1 = n1.make_room(&a1, &b1).await;
        b1_ws.recv_event("request_accepted").await;
        b1_ws.join(&room1).await;
        let mut a1_ws = n1.ws(&a1).await;
        a1_ws.say(&room1, "deployment one").await;
        b1_ws.recv_event("receive_message").await;
        b2_ws.call_ok("ping", json!({})).await;
        b2_ws
            .expect_no_event("chat_request", Duration::from_millis(300))
            .await;
        assert!(
            b2_ws.backlog().is_empty(),
            "events crossed deployments: {:?}",
            b2_ws.backlog()
        );
        n2.get(&format!("/chatrooms/{room1}/messages"), Some(&a2.token))
            .await
            .err(404, "room_not_found");
        drop(c1);
    })
    .await
}

/// A node that stops gracefully says goodbye: its users go offline on the other node at once,
/// without waiting for `node_ttl_secs`.
#[tokio::test]
async fn a_node_shutting_down_takes_its_users_offline_at_once() {
    bounded(async {
        let app = App::start(
            Backend::Redis,
            &["--presence-secs", "1", "--node-ttl-secs", "30"],
        )
        .await;
        let mut node2 = app.another_node().await;
        let n1 = Client::new(app.server.addr);
        let n2 = Client::new(node2.addr);
        let a = n1.register(A).await;
        let bu = n2.register(B).await;
        let mut a_ws = n1.ws(&a).await;
        let mut b_ws = n2.ws(&bu).await;
        n1.make_room(&a, &bu).await;
        b_ws.recv_event("request_accepted").await;
        // Past B's HTTP presence window, only the socket on node 2 keeps B online.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        a_ws.drain_backlog("presence");
        node2.sigterm();
        assert_eq!(b_ws.expect_close(Duration::from_secs(10)).await, Some(1001));
        let started = std::time::Instant::now();
        let ev = a_ws
            .recv_where("B offline", Duration::from_secs(10), |v| {
                v["event"] == "presence" && v["data"]["phone"] == B
            })
            .await;
        assert_eq!(
            ev["data"],
            json!({"phone": B, "online": false, "names": {}})
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "B went offline only after {:?}",
            started.elapsed()
        );
        let status = node2
            .wait_exit(Duration::from_secs(10))
            .await
            .expect("exits");
        assert_eq!(status.code(), Some(0));
    })
    .await
}

/// With two nodes running the same lifetime sweeps, each expiry is announced once.
#[tokio::test]
async fn lifetimes_are_announced_once_across_nodes() {
    bounded(async {
        let app = App::start(
            Backend::Redis,
            &[
                "--room-ttl-secs",
                "4",
                "--presence-secs",
                "1",
                "--session-idle-secs",
                "1",
            ],
        )
        .await;
        let node2 = app.another_node().await;
        let n1 = Client::new(app.server.addr);
        let n2 = Client::new(node2.addr);
        let a = n1.register(A).await;
        let bu = n2.register(B).await;
        let c = n2.register(C).await;
        let mut a_ws = n1.ws(&a).await;
        let mut b_ws = n2.ws(&bu).await;
        // A room that expires by its ttl while both are online.
        let expiring = n1.make_room(&a, &bu).await;
        // A room whose member C goes away: closed when C's session ends.
        let closing = n2.make_room(&c, &a).await;
        let ev = a_ws
            .recv_event_within("room_expired", Duration::from_secs(10))
            .await;
        assert_eq!(ev["data"], json!({ "room": expiring }));
        let ev = b_ws
            .recv_event_within("room_expired", Duration::from_secs(10))
            .await;
        assert_eq!(ev["data"], json!({ "room": expiring }));
        let ev = a_ws
            .recv_event_within("room_closed", Duration::from_secs(10))
            .await;
        assert_eq!(ev["data"], json!({"room": closing, "by": C}));
        // Neither is announced a second time (by the other node's sweep).
        for ws in [&mut a_ws, &mut b_ws] {
            ws.expect_no_event("room_expired", Duration::from_millis(1500))
                .await;
            assert!(
                ws.drain_backlog("room_closed").is_empty(),
                "[{}] room_closed twice",
                ws.phone
            );
        }
        let offline_events: Vec<_> = a_ws
            .drain_backlog("presence")
            .into_iter()
            .filter(|e| e["data"] == json!({"phone": C, "online": false, "names": {}}))
            .collect();
        assert!(
            offline_events.len() <= 1,
            "C's offline announced {} times",
            offline_events.len()
        );
    })
    .await
}

/// Races through two nodes: one phone registered twice at once, one request accepted on both
/// nodes at once, two users asking each other at once. Each ends in exactly one winner.
#[tokio::test]
async fn races_through_two_nodes_have_one_winner() {
    bounded(races_through_two_nodes(Backend::Redis)).await;
}

/// The same races on a Redis Cluster, where accepting is a directory step then a room step.
#[tokio::test]
async fn races_through_two_nodes_over_a_redis_cluster_have_one_winner() {
    bounded(races_through_two_nodes(Backend::RedisCluster)).await;
}

async fn races_through_two_nodes(backend: Backend) {
    {
        let app = App::start(backend, &[]).await;
        let node2 = app.another_node().await;
        let n1 = Client::new(app.server.addr);
        let n2 = Client::new(node2.addr);

        // The same phone on both nodes at once: one session.
        for i in 0..5 {
            let phone = format!("+1415555090{i}");
            let body = json!({ "phone": phone });
            let (r1, r2) = tokio::join!(
                n1.post("/register_user", None, &body),
                n2.post("/register_user", None, &body)
            );
            let wins = [&r1, &r2].iter().filter(|r| r.status == 200).count();
            assert_eq!(
                wins,
                1,
                "{phone} registered {wins} times: {} {} / {} {}",
                r1.status,
                r1.text(),
                r2.status,
                r2.text()
            );
            for r in [&r1, &r2] {
                if r.status != 200 {
                    r.err(409, "phone_in_use");
                }
            }
        }

        // One request accepted through both nodes at once: one room.
        let a = n1.register(A).await;
        let bu = n2.register(B).await;
        n1.post("/send_request", Some(&a.token), &json!({ "phone2": B }))
            .await
            .ok();
        let accept = json!({"phone1": A, "action": "accept"});
        let (r1, r2, r3, r4) = tokio::join!(
            n1.post("/respond_request", Some(&bu.token), &accept),
            n2.post("/respond_request", Some(&bu.token), &accept),
            n1.post("/respond_request", Some(&bu.token), &accept),
            n2.post("/respond_request", Some(&bu.token), &accept)
        );
        let wins = [&r1, &r2, &r3, &r4]
            .iter()
            .filter(|r| r.status == 200)
            .count();
        assert_eq!(wins, 1, "concurrent accepts on two nodes made {wins} rooms");
        for r in [&r1, &r2, &r3, &r4] {
            if r.status != 200 {
                r.err(404, "request_not_found");
            }
        }
        let v = n1.get("/active_chatrooms", Some(&a.token)).await.ok();
        assert_eq!(v["chatrooms"].as_array().map(Vec::len), Some(1), "{v}");

        // Two users asking each other at once, on two nodes: never two crossed pending requests.
        for i in 0..6 {
            let x = n1.register(&format!("+1415555091{i}")).await;
            let y = n2.register(&format!("+1415555092{i}")).await;
            let bx = json!({ "phone2": y.phone });
            let by = json!({ "phone2": x.phone });
            let (rx, ry) = tokio::join!(
                n1.post("/send_request", Some(&x.token), &bx),
                n2.post("/send_request", Some(&y.token), &by)
            );
            for r in [&rx, &ry] {
                assert!(
                    matches!(r.status, 200 | 404 | 409),
                    "crossed requests: {} {}",
                    r.status,
                    r.text()
                );
            }
            let vx = n1.get("/incoming_request", Some(&x.token)).await.ok();
            let rooms = n1.get("/active_chatrooms", Some(&x.token)).await.ok();
            let pending_both_ways = vx["incoming_request"] == json!([y.phone])
                && vx["sent_request"] == json!([y.phone]);
            assert!(
                !pending_both_ways,
                "pair {i}: two crossed pending requests and no room ({} {} / {} {})",
                rx.status,
                rx.text(),
                ry.status,
                ry.text()
            );
            let n_rooms = rooms["chatrooms"].as_array().map(Vec::len).unwrap_or(0);
            assert!(n_rooms <= 1, "pair {i}: {n_rooms} rooms");
            if n_rooms == 1 {
                assert_eq!(
                    vx,
                    json!({"success": true, "incoming_request": [], "sent_request": [], "names": {}}),
                    "pair {i}: a room and a pending request"
                );
            }
        }
    }
}
