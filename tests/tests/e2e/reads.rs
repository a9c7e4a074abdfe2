//! Read marks (v3): `mark_read`, the `read` event, `room_history`'s `read`, and `unread` /
//! `last_message` in `active_chatrooms` and `reconnect` — on one node (memory, Redis) and with
//! the two members on two nodes sharing one Redis.

use chat_tests::{App, Backend, Client, Server, User, bounded};
use serde_json::{Value, json};

const A: &str = "+14155550161";
const B: &str = "+14155550162";
const C: &str = "+14155550163";

/// Generates `memory::name`, `redis::name` and `two_nodes::name` for each `async fn
/// name(topology: Topology)`.
macro_rules! topologies {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $name() {
                    super::bounded(super::$name(super::Topology::One(super::Backend::Memory))).await
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test]
                async fn $name() {
                    super::bounded(super::$name(super::Topology::One(super::Backend::Redis))).await
                }
            )*
        }
        mod two_nodes {
            $(
                #[tokio::test]
                async fn $name() {
                    super::bounded(super::$name(super::Topology::TwoNodes)).await
                }
            )*
        }
    };
}

topologies!(
    marks_reach_the_other_member_and_room_history,
    active_chatrooms_and_reconnect_carry_unread_and_last_message,
    bad_marks_are_refused,
);

#[derive(Debug, Clone, Copy)]
enum Topology {
    One(Backend),
    /// A on the first node, B (and C) on the second, one Redis.
    TwoNodes,
}

/// A and B share `room`; C shares `other` with A.
struct Fixture {
    _app: App,
    _node2: Option<Server>,
    na: Client,
    nb: Client,
    a: User,
    b: User,
    c: User,
    room: String,
    other: String,
}

async fn fixture(topology: Topology) -> Fixture {
    let backend = match topology {
        Topology::One(b) => b,
        Topology::TwoNodes => Backend::Redis,
    };
    let app = App::start(backend, &[]).await;
    let node2 = match topology {
        Topology::TwoNodes => Some(app.another_node().await),
        Topology::One(_) => None,
    };
    let na = Client::new(app.server.addr);
    let nb = Client::new(node2.as_ref().map_or(app.server.addr, |s| s.addr));
    let a = na.register(A).await;
    let b = nb.register(B).await;
    let c = nb.register(C).await;
    let room = na.make_room(&a, &b).await;
    let other = nb.make_room(&c, &a).await;
    Fixture {
        _app: app,
        _node2: node2,
        na,
        nb,
        a,
        b,
        c,
        room,
        other,
    }
}

/// The `active_chatrooms` entry of `room`.
fn entry<'a>(rooms: &'a Value, room: &str) -> &'a Value {
    rooms
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["chat_id"] == room))
        .unwrap_or_else(|| panic!("{room} not in {rooms}"))
}

async fn marks_reach_the_other_member_and_room_history(topology: Topology) {
    let f = fixture(topology).await;
    let mut a_ws = f.na.ws(&f.a).await;
    let mut b_ws = f.nb.ws(&f.b).await;
    let h = a_ws.join(&f.room).await;
    assert_eq!(h["read"], json!({A: null, B: null}), "{h}");
    b_ws.join(&f.room).await;
    let sent = b_ws.send_burst(&f.room, "m", 3).await;
    let id = |i: usize| sent[i]["id"].clone();

    // The mark moves: acked with {}, and B's joined socket (on whichever node) hears it.
    let ack = a_ws
        .call_ok("mark_read", json!({"room": f.room, "id": id(0)}))
        .await;
    assert_eq!(ack["event"], "ack", "{ack}");
    assert_eq!(ack["data"], json!({}));
    let ev = b_ws.recv_event("read").await;
    assert_eq!(ev["data"], json!({"room": f.room, "user": A, "id": id(0)}));

    // At or before the mark: acked, nobody told. The next `read` B hears is the next move.
    for again in [id(0), id(0)] {
        let ack = a_ws
            .call_ok("mark_read", json!({"room": f.room, "id": again}))
            .await;
        assert_eq!(ack["data"], json!({}));
    }
    a_ws.call_ok("mark_read", json!({"room": f.room, "id": id(2)}))
        .await;
    a_ws.call_ok("mark_read", json!({"room": f.room, "id": id(1)}))
        .await;
    let ev = b_ws.recv_event("read").await;
    assert_eq!(ev["data"], json!({"room": f.room, "user": A, "id": id(2)}));
    // B marks its own message: A hears it; the reader's own sockets never hear their reads.
    b_ws.call_ok("mark_read", json!({"room": f.room, "id": id(1)}))
        .await;
    let ev = a_ws.recv_event("read").await;
    assert_eq!(ev["data"], json!({"room": f.room, "user": B, "id": id(1)}));
    assert!(
        a_ws.drain_backlog("read")
            .iter()
            .all(|e| e["data"]["user"] == B),
        "A heard its own read"
    );

    // room_history carries both marks, on either node.
    for (node, user) in [(&f.na, &f.a), (&f.nb, &f.b)] {
        let mut ws = node.ws(user).await;
        let h = ws.join(&f.room).await;
        assert_eq!(h["read"], json!({A: id(2), B: id(1)}), "{h}");
        ws.close().await;
    }
    // A closed room takes its marks along: the pair's next room starts without.
    f.na.post("/close_room", Some(&f.a.token), &json!({"chat_id": f.room}))
        .await
        .ok();
    a_ws.call_err(
        "mark_read",
        json!({"room": f.room, "id": id(2)}),
        "room_not_found",
    )
    .await;
    let next = f.na.make_room(&f.a, &f.b).await;
    let h = a_ws.join(&next).await;
    assert_eq!(h["read"], json!({A: null, B: null}), "{h}");
}

async fn active_chatrooms_and_reconnect_carry_unread_and_last_message(topology: Topology) {
    let f = fixture(topology).await;
    let rooms = f.na.get("/active_chatrooms", Some(&f.a.token)).await.ok();
    for room in [&f.room, &f.other] {
        let e = entry(&rooms["chatrooms"], room);
        assert_eq!(
            (&e["unread"], &e["last_message"]),
            (&json!(0), &Value::Null)
        );
    }
    let mut a_ws = f.na.ws(&f.a).await;
    let mut b_ws = f.nb.ws(&f.b).await;
    let b_sent = b_ws.send_burst(&f.room, "b", 3).await;
    let a_sent = a_ws.send_burst(&f.room, "a", 2).await;
    let last = b_ws.send_burst(&f.room, "z", 1).await.remove(0);

    // A: B's four messages; B: A's two. Both see the newest message as sent.
    let rooms = f.na.get("/active_chatrooms", Some(&f.a.token)).await.ok();
    let e = entry(&rooms["chatrooms"], &f.room);
    assert_eq!(e["unread"], 4, "{e}");
    assert_eq!(e["last_message"], last);
    assert_eq!(e["other_user"], B);
    let rooms = f.nb.get("/active_chatrooms", Some(&f.b.token)).await.ok();
    let e = entry(&rooms["chatrooms"], &f.room);
    assert_eq!((&e["unread"], &e["last_message"]), (&json!(2), &last));

    // After a mark: only what follows it; one's own messages never count.
    a_ws.call_ok("mark_read", json!({"room": f.room, "id": b_sent[1]["id"]}))
        .await;
    let rooms = f.na.get("/active_chatrooms", Some(&f.a.token)).await.ok();
    assert_eq!(entry(&rooms["chatrooms"], &f.room)["unread"], 2);
    a_ws.call_ok("mark_read", json!({"room": f.room, "id": a_sent[1]["id"]}))
        .await;
    // `/reconnect` answers the same entries, through either node.
    for node in [&f.na, &f.nb] {
        let v = node
            .post("/reconnect", Some(&f.a.token), &json!({}))
            .await
            .ok();
        assert_eq!(v["data"]["status"], "reconnected");
        let e = entry(&v["data"]["chatrooms"], &f.room);
        assert_eq!(
            (&e["unread"], &e["last_message"]),
            (&json!(1), &last),
            "{e}"
        );
        let e = entry(&v["data"]["chatrooms"], &f.other);
        assert_eq!(
            (&e["unread"], &e["last_message"]),
            (&json!(0), &Value::Null)
        );
    }
    a_ws.call_ok("mark_read", json!({"room": f.room, "id": last["id"]}))
        .await;
    let rooms = f.nb.get("/active_chatrooms", Some(&f.a.token)).await.ok();
    assert_eq!(entry(&rooms["chatrooms"], &f.room)["unread"], 0);
    // C's message counts for A in the other room only.
    let mut c_ws = f.nb.ws(&f.c).await;
    let hi = c_ws.send_burst(&f.other, "c", 1).await.remove(0);
    let rooms = f.na.get("/active_chatrooms", Some(&f.a.token)).await.ok();
    let e = entry(&rooms["chatrooms"], &f.other);
    assert_eq!((&e["unread"], &e["last_message"]), (&json!(1), &hi));
    assert_eq!(entry(&rooms["chatrooms"], &f.room)["unread"], 0);
}

async fn bad_marks_are_refused(topology: Topology) {
    let f = fixture(topology).await;
    let mut a_ws = f.na.ws(&f.a).await;
    let mut c_ws = f.nb.ws(&f.c).await;
    let m = a_ws.send_burst(&f.room, "m", 1).await.remove(0);
    let id = m["id"].as_str().expect("id").to_owned();
    // An id of another room's message: ids are per room (`ms-seq` of each room's stream), so one
    // sent in the same millisecond can be an id this room holds too. Send until it is not.
    let mut elsewhere = c_ws.send_burst(&f.other, "o", 1).await.remove(0);
    for _ in 0..100 {
        if elsewhere["id"].as_str() != Some(id.as_str()) {
            break;
        }
        elsewhere = c_ws.send_burst(&f.other, "o", 1).await.remove(0);
    }
    assert_ne!(
        elsewhere["id"].as_str(),
        Some(id.as_str()),
        "ids kept colliding"
    );
    let (ms, seq) = id.split_once('-').expect("ms-seq");
    let next = format!("{ms}-{}", seq.parse::<u64>().expect("seq") + 1);
    // Not ids, ids this room does not hold, wrong types, missing fields: bad_request.
    for bad in [
        json!({"room": f.room, "id": "nope"}),
        json!({"room": f.room, "id": ""}),
        json!({"room": f.room, "id": "1-0"}),
        json!({"room": f.room, "id": next}),
        json!({"room": f.room, "id": "18446744073709551615-18446744073709551615"}),
        json!({"room": f.room, "id": elsewhere["id"]}),
        json!({"room": f.room, "id": 17}),
        json!({"room": f.room, "id": null}),
        json!({"room": f.room}),
        json!({"id": id}),
    ] {
        a_ws.call_err("mark_read", bad, "bad_request").await;
    }
    // Members only; an unknown room is not found.
    c_ws.call_err("mark_read", json!({"room": f.room, "id": id}), "forbidden")
        .await;
    c_ws.call_err(
        "mark_read",
        json!({"room": f.room, "id": "nope"}),
        "forbidden",
    )
    .await;
    for unknown in ["67e55044-10b1-426f-9247-bb680e5fe0c8", "not-a-room"] {
        a_ws.call_err(
            "mark_read",
            json!({"room": unknown, "id": id}),
            "room_not_found",
        )
        .await;
    }
    // Nothing moved: room_history shows no marks.
    let h = a_ws.join(&f.room).await;
    assert_eq!(h["read"], json!({A: null, B: null}), "{h}");
    // A frame without an ack that fails gets an error without one; the socket stays open.
    a_ws.send("mark_read", json!({"room": f.room, "id": "nope"}), None)
        .await;
    let err = a_ws.recv_event("error").await;
    assert_eq!(err["data"]["code"], "bad_request");
    assert!(err.get("ack").is_none(), "{err}");
    a_ws.call_ok("mark_read", json!({"room": f.room, "id": id}))
        .await;
}
