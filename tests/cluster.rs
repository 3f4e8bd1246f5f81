//! Several hubs on one Redis are one cluster (PROTOCOL.md section 9):
//! each event of a room reaches every subscriber on every hub once and in
//! seq order, whichever hub it was published on; a client resumes on
//! another hub from the shared history; presence, `recipients`, admin
//! `DELETE`, health components and user events span the hubs; `node` is in
//! the welcome and the metadata; `redis_url` with `store` exits 2.
//!
//! Every test starts its own `redis-server` (tests/common/redis.rs) and
//! skips when it is not installed (CI installs it and fails instead).

#[path = "common/redis.rs"]
mod redis_server;

use std::time::{Duration, Instant};

use redis_server::{Redis, hub_with};
use serde_json::{Value, json};
use wshub::testing::{TIMEOUT, TestClient, TestHub};

/// A hub of the cluster on `redis`, named `node`.
fn hub(redis: &Redis, node: &str) -> TestHub {
    hub_with(redis, node, |_| {})
}

/// Reads events of `room` until `n` have come; every other message but
/// heartbeats fails the test.
async fn events(client: &mut TestClient, n: usize) -> Vec<Value> {
    let mut out = Vec::new();
    while out.len() < n {
        let message = client.recv().await;
        assert!(
            message.get("seq").is_some(),
            "expected an event, got {message}"
        );
        out.push(message);
    }
    out
}

fn seqs(events: &[Value]) -> Vec<u64> {
    events.iter().map(|e| e["seq"].as_u64().unwrap()).collect()
}

/// Polls `check` until it holds; panics after [`TIMEOUT`].
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + TIMEOUT;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {TIMEOUT:?}");
        smol::Timer::after(Duration::from_millis(20)).await;
    }
}

#[test]
fn two_hubs_deliver_each_event_once_in_seq_order() {
    let Some(redis) = Redis::start("order") else {
        return;
    };
    smol::block_on(async {
        let a = hub(&redis, "node-a");
        let b = hub(&redis, "node-b");
        let c = hub(&redis, "node-c");
        let mut on_a = a.client("?rooms=lobby").await;
        let mut on_b = b.client("?rooms=lobby").await;
        let mut on_c = c.client("").await;
        // A room named twice is one room.
        let reply = on_c
            .request(json!({"type": "subscribe", "rooms": ["lobby", "lobby"]}))
            .await;
        assert_eq!(reply["type"], "subscribed", "{reply}");
        // A MessagePack tab gets the same events, transcoded once on its hub.
        let mut packed = TestClient::connect_with(
            &c.ws_url("?rooms=lobby"),
            &[("Sec-WebSocket-Protocol", "wshub.msgpack")],
        )
        .await
        .expect("a MessagePack tab");
        assert_eq!(on_a.welcome["payload"]["node"], "node-a");
        assert_eq!(on_b.welcome["payload"]["node"], "node-b");
        assert_eq!(
            on_a.welcome["payload"]["epoch"], on_b.welcome["payload"]["epoch"],
            "one cluster, one epoch"
        );
        assert_eq!(a.handle().epoch(), b.handle().epoch());

        // Publishes on every hub, interleaved, some by clients.
        let hubs = [&a, &b, &c];
        for i in 0..30 {
            let reply = hubs[i % 3]
                .post_event(json!({"room": "lobby", "type": "tick", "payload": {"i": i}}))
                .await;
            assert_eq!(reply.status, 202, "{}", reply.text());
        }
        // The publisher reads its 30 first: a request skips what comes meanwhile.
        let got = events(&mut on_a, 30).await;
        assert_eq!(seqs(&got), (1..=30).collect::<Vec<_>>());
        let reply = on_a.publish("lobby", "said", json!({"by": "a"})).await;
        assert_eq!(reply["type"], "published", "{reply}");
        assert_eq!(reply["payload"]["seq"], 31);
        assert_eq!(reply["payload"]["recipients"], 3, "the three others");

        let expected: Vec<u64> = (1..=31).collect();
        for client in [&mut on_b, &mut on_c, &mut packed] {
            let got = events(client, 31).await;
            assert_eq!(seqs(&got), expected);
            assert_eq!(got[30]["type"], "said");
            client.expect_nothing_before_pong().await;
        }
        // The publisher does not get its own.
        on_a.expect_nothing_before_pong().await;

        // The API's `recipients` counts the cluster's subscribers.
        let reply = b
            .post_event(json!({"room": "lobby", "type": "tick", "payload": {}}))
            .await;
        assert_eq!(reply.json()["recipients"], 4, "{}", reply.text());
        assert_eq!(reply.json()["seq"], 32);
    });
}

#[test]
fn a_client_resumes_on_another_hub_from_the_shared_history() {
    let Some(redis) = Redis::start("resume") else {
        return;
    };
    smol::block_on(async {
        let a = hub(&redis, "a");
        let b = hub(&redis, "b");
        let mut tab = a.client("?rooms=feed").await;
        let epoch = tab.welcome["payload"]["epoch"].clone();
        for i in 0..5 {
            a.post_event(json!({"room": "feed", "type": "e", "payload": {"i": i}}))
                .await;
        }
        let seen = events(&mut tab, 5).await;
        let last = seen[4]["seq"].as_u64().unwrap();
        tab.close().await;
        // Missed while away, published on both hubs.
        for i in 5..12 {
            let hub = if i % 2 == 0 { &a } else { &b };
            hub.post_event(json!({"room": "feed", "type": "e", "payload": {"i": i}}))
                .await;
        }
        // Back, on the other hub, which never held the room.
        let mut tab = b.client("").await;
        let reply = tab
            .request(json!({
                "type": "subscribe", "rooms": ["feed"],
                "since": {"feed": last}, "epoch": epoch,
            }))
            .await;
        assert_eq!(reply["type"], "subscribed", "{reply}");
        assert_eq!(reply["payload"]["recovered"]["feed"], true, "{reply}");
        assert_eq!(reply["payload"]["positions"]["feed"], 12);
        let missed = events(&mut tab, 7).await;
        assert_eq!(seqs(&missed), (6..=12).collect::<Vec<_>>());
        assert_eq!(missed[0]["payload"]["i"], 5);
        // And then live, with no duplicate.
        a.post_event(json!({"room": "feed", "type": "e", "payload": {"i": 12}}))
            .await;
        let live = events(&mut tab, 1).await;
        assert_eq!(live[0]["seq"], 13);
        tab.expect_nothing_before_pong().await;

        // A stale position is refused with history_unavailable, as on one hub.
        let mut late = b.client("").await;
        let reply = late
            .request(json!({
                "type": "subscribe", "rooms": ["feed"],
                "since": {"feed": 1}, "epoch": "another-epoch",
            }))
            .await;
        assert_eq!(reply["type"], "error", "{reply}");
        assert_eq!(reply["payload"]["code"], "history_unavailable");
    });
}

#[test]
fn presence_delete_health_and_user_events_span_the_cluster() {
    let Some(redis) = Redis::start("shared") else {
        return;
    };
    smol::block_on(async {
        let secret = "cluster-secret".to_string();
        let config = |c: &mut wshub::Config| c.jwt_secret = Some("cluster-secret".into());
        let a = hub_with(&redis, "a", config);
        let b = hub_with(&redis, "b", config);
        let alice = a.token("alice").rooms(&["*"]).publish(&["*"]).mint();
        let bob = wshub::testing::TokenBuilder::new("bob", &secret)
            .rooms(&["*"])
            .mint();
        let mut alice_a = a.client_with_token(&alice, "&rooms=team").await;
        let mut alice_b = b.client_with_token(&alice, "").await;
        let mut bob_b = b.client_with_token(&bob, "&rooms=team").await;

        // Presence lists the members of every hub.
        let reply = bob_b
            .request(json!({"type": "presence", "room": "team"}))
            .await;
        assert_eq!(reply["type"], "presence", "{reply}");
        let mut users: Vec<String> = reply["payload"]["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["user"].as_str().unwrap().to_string())
            .collect();
        users.sort();
        assert_eq!(users, ["alice", "bob"]);

        // So do the admin's rooms, on any hub.
        let room = a.request("GET", "/api/rooms/team", None).await;
        assert_eq!(room.status, 200, "{}", room.text());
        assert_eq!(room.json()["subscribers"], 2, "{}", room.text());
        assert_eq!(room.json()["members"].as_array().map(Vec::len), Some(2));
        let rooms = b.request("GET", "/api/rooms", None).await.json();
        assert_eq!(
            rooms["rooms"],
            json!([{"room": "team", "subscribers": 2, "last_seq": 0}]),
            "{rooms}"
        );
        let none = a.request("GET", "/api/rooms/nobody", None).await;
        assert_eq!(none.status, 404);

        // An event for a user reaches its connections on every hub.
        let reply = b
            .post_event(json!({"user": "alice", "type": "note", "payload": {}}))
            .await;
        assert_eq!(reply.status, 202);
        assert_eq!(reply.json()["recipients"], 2, "{}", reply.text());
        assert_eq!(alice_a.expect("note").await["room"], Value::Null);
        alice_b.expect("note").await;
        // ...and one for everyone reaches every connection.
        a.post_event(json!({"type": "all", "payload": {}})).await;
        for client in [&mut alice_a, &mut alice_b, &mut bob_b] {
            client.expect("all").await;
        }

        // A health component set on one hub is on all.
        let reply = a
            .request(
                "PUT",
                "/api/health/scanner",
                Some(&json!({"status": "degraded", "detail": "slow"})),
            )
            .await;
        assert_eq!(reply.status, 200);
        let status = bob_b.expect("health_status").await;
        assert_eq!(status["payload"]["component"], "scanner");
        assert_eq!(status["payload"]["status"], "degraded");
        eventually("b reports scanner degraded", || async {
            let health = b.request("GET", "/health", None).await.json();
            health["components"]["scanner"]["status"] == "degraded"
        })
        .await;

        // Metadata names the node.
        let list = b.request("GET", "/api/connections", None).await.json();
        assert!(
            list["connections"]
                .as_array()
                .unwrap()
                .iter()
                .all(|c| c["node"] == "b"),
            "{list}"
        );

        // DELETE on hub b closes a connection held by hub a.
        let id = alice_a.id();
        let reply = b
            .request("DELETE", &format!("/api/connections/{id}"), None)
            .await;
        assert_eq!(reply.status, 204, "{}", reply.text());
        assert_eq!(
            alice_a.expect_close().await,
            wshub::client::Closed::Code(4003)
        );
        let missing = "00000000-0000-4000-8000-000000000000";
        let reply = b
            .request("DELETE", &format!("/api/connections/{missing}"), None)
            .await;
        assert_eq!(reply.status, 404);
    });
}

#[test]
fn an_idempotency_key_is_shared_by_the_hubs() {
    let Some(redis) = Redis::start("idempotency") else {
        return;
    };
    smol::block_on(async {
        let a = hub(&redis, "a");
        let b = hub(&redis, "b");
        let mut tab = b.client("?rooms=orders").await;
        let body = json!({
            "room": "orders", "type": "paid", "payload": {"n": 1}, "idempotency_key": "order-42",
        });
        let first = a.post_event(body.clone()).await;
        assert_eq!(first.status, 202, "{}", first.text());
        // The same key on the other hub answers as the first publish did
        // and publishes nothing.
        let again = b.post_event(body).await;
        assert_eq!(again.status, 202, "{}", again.text());
        for field in ["id", "seq", "recipients", "correlation_id"] {
            assert_eq!(again.json()[field], first.json()[field], "{field}");
        }
        assert_eq!(events(&mut tab, 1).await[0]["seq"], 1);
        tab.expect_nothing_before_pong().await;
        let next = a
            .post_event(json!({"room": "orders", "type": "paid", "payload": {"n": 2}}))
            .await;
        assert_eq!(next.json()["seq"], 2, "the repeat took no seq");
    });
}

#[test]
fn redis_url_with_store_stops_the_start() {
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_wshub"))
        .args(["--redis-url", "redis://127.0.0.1:1", "--store", "/tmp/x"])
        .args(["--bind", "127.0.0.1:0"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("run wshub");
    assert_eq!(status.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&status.stderr).contains("redis_url"));
}

#[test]
fn an_unreachable_redis_stops_the_start() {
    let port = redis_server::free_port();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_wshub"))
        .args(["--redis-url", &format!("redis://127.0.0.1:{port}")])
        .args(["--bind", "127.0.0.1:0"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("run wshub");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("redis_url"), "{stderr}");
}

#[test]
fn an_sse_stream_on_one_hub_gets_another_hubs_events_and_resumes_on_a_third() {
    let Some(redis) = Redis::start("sse") else {
        return;
    };
    smol::block_on(async {
        let a = hub(&redis, "node-a");
        let b = hub(&redis, "node-b");
        let c = hub(&redis, "node-c");
        let mut stream = b.stream("?rooms=feed").await;
        let epoch = stream.welcome["payload"]["epoch"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(stream.welcome["payload"]["node"], "node-b");
        for n in 1..=3 {
            a.publish("feed", "tick", json!({ "n": n })).await;
        }
        for seq in 1..=3u64 {
            let (id, event) = stream.recv_tagged().await;
            assert_eq!(event["seq"], seq, "{event}");
            assert_eq!(id, Some(format!("{epoch};feed={seq}")));
        }
        let cursor = stream.last_event_id();
        drop(stream);
        // Missed while away, published on yet another hub.
        for n in 4..=5 {
            a.publish("feed", "tick", json!({ "n": n })).await;
        }
        let mut resumed = c
            .stream_with("?rooms=feed", &[("Last-Event-ID", &cursor)])
            .await
            .expect("a stream on the third hub");
        assert_eq!(resumed.welcome_id, cursor);
        for seq in 4..=5u64 {
            let (id, event) = resumed.recv_tagged().await;
            assert_eq!(event["seq"], seq, "{event}");
            assert_eq!(id, Some(format!("{epoch};feed={seq}")));
        }
        b.publish("feed", "tick", json!({ "n": 6 })).await;
        let (_, event) = resumed.recv_tagged().await;
        assert_eq!(event["seq"], 6, "each once, in order: {event}");
    });
}
