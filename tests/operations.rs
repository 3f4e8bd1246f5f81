//! Operating the hub (PROTOCOL.md sections 1 and 7): the connection
//! registry, rooms, and `/metrics` checked with a real Prometheus parser
//! against a scripted scenario, counter by counter.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::Message;
use serde_json::json;
mod common;

use common::{connection_count, scrape};
use wshub::testing::{Closed, TestClient, TestHub, http};

const SECRET: &str = "ops-secret";

/// A socket that upgraded to `/ws{query}` and then neither reads nor writes.
fn raw_websocket(hub: &TestHub, query: &str) -> TcpStream {
    wshub::testing::raw_upgrade(hub.handle().addr(), query)
}

/// Tallies of what the scenario did, to compare with the hub's counters.
#[derive(Default)]
struct Tally {
    accepted: f64,
    messages_in: f64,
    messages_out: f64,
    published: f64,
}

impl Tally {
    /// A connection opened: one welcome queued.
    fn connected(&mut self) {
        self.accepted += 1.0;
        self.messages_out += 1.0;
    }

    /// A request and its one reply.
    fn exchanged(&mut self) {
        self.messages_in += 1.0;
        self.messages_out += 1.0;
    }
}

async fn ping_all(clients: &mut [&mut TestClient], tally: &mut Tally) {
    for c in clients.iter_mut() {
        assert_eq!(c.request(json!({"type": "ping"})).await["type"], "pong");
        tally.exchanged();
    }
}

#[test]
fn metrics_match_a_scripted_scenario_counter_by_counter() {
    let hub = TestHub::with_config(|c| {
        c.jwt_secret = Some(SECRET.into());
        c.heartbeat_interval = Duration::from_secs(600);
        // Well past the 1 s token below, so that a loaded machine's late
        // sweep cannot take the expiring client for a silent one.
        c.heartbeat_timeout = Duration::from_secs(4);
        c.send_queue = 8;
    });
    let addr = hub.handle().addr();
    let mut t = Tally::default();
    smol::block_on(async {
        let token = |sub: &str| hub.token(sub).mint();
        let o1_token = hub.token("o1").publish(&["r"]).mint();
        let mut o1 = hub.client_with_token(&o1_token, "&rooms=r").await;
        let mut o2 = hub.client_with_token(&token("o2"), "&rooms=r").await;
        t.connected();
        t.connected();

        // slow_consumer: a subscriber that never reads, until it is dropped.
        let stuck = raw_websocket(&hub, &format!("?token={}&rooms=r", token("stuck")));
        t.connected();
        let blob = json!({"blob": "x".repeat(50_000)});
        for n in 1.. {
            let r = hub.publish("r", "big", blob.clone()).await;
            t.published += 1.0;
            t.messages_out += r["recipients"].as_f64().unwrap();
            o1.expect("big").await;
            o2.expect("big").await;
            if r["recipients"] == 2 {
                break;
            }
            if n % 20 == 0 {
                ping_all(&mut [&mut o1, &mut o2], &mut t).await;
            }
            assert!(n < 2000, "the stuck subscriber was never dropped");
        }
        drop(stuck);

        // normal, error, too_big, admin.
        TestClient::connect(&hub.ws_url(&format!("?token={}", token("n"))))
            .await
            .close()
            .await;
        t.connected();
        let gone = raw_websocket(&hub, &format!("?token={}", token("e")));
        socket2::SockRef::from(&gone)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(gone);
        t.connected();
        let mut big = hub.client_with_token(&token("b"), "").await;
        t.connected();
        big.send_raw(Message::text("y".repeat(70_000))).await;
        assert_eq!(big.expect_close().await, Closed::Code(1009));
        let mut kicked = hub.client_with_token(&token("k"), "").await;
        t.connected();
        let r = hub
            .request("DELETE", &format!("/api/connections/{}", kicked.id()), None)
            .await;
        assert_eq!(r.status, 204);
        assert_eq!(kicked.expect_close().await, Closed::Code(4003));

        // heartbeat_timeout and token_expired, while the observers keep pinging.
        let mut silent = hub.client_with_token(&token("s"), "").await;
        let mut expiring = hub
            .client_with_token(&hub.token("x").expires_in(1.0).mint(), "")
            .await;
        t.connected();
        t.connected();
        let deadline = Instant::now() + Duration::from_secs(20);
        while connection_count(&hub).await > 2 {
            assert!(
                Instant::now() < deadline,
                "silent and expiring clients never closed"
            );
            ping_all(&mut [&mut o1, &mut o2], &mut t).await;
            smol::Timer::after(Duration::from_millis(200)).await;
        }
        assert_eq!(silent.expect_close().await, Closed::Code(4000));
        assert_eq!(expiring.expect_close().await, Closed::Code(4001));

        // Traffic: a subscribe, a client publish, an error reply, an HTTP publish.
        assert_eq!(o1.subscribe(&["s2"]).await["type"], "subscribed");
        t.exchanged();
        let p = o1.publish("r", "note", json!({})).await;
        assert_eq!(p["payload"]["recipients"], 1);
        t.exchanged();
        t.published += 1.0;
        t.messages_out += 1.0;
        o2.expect("note").await;
        o1.send(json!({"type": "nope"})).await;
        o1.expect("error").await;
        t.exchanged();
        let r = hub.publish("s2", "e", json!({})).await;
        t.published += 1.0;
        t.messages_out += r["recipients"].as_f64().unwrap();
        o1.expect("e").await;

        // Refused handshakes.
        let upgrade = [
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("Sec-WebSocket-Version", "13"),
        ];
        assert_eq!(http(addr, "GET", "/ws", &upgrade, None).await.status, 403);
        assert_eq!(
            http(addr, "GET", "/ws?token=bad", &upgrade, None)
                .await
                .status,
            403
        );
        assert_eq!(http(addr, "GET", "/ws", &[], None).await.status, 400);
        let mut evil = upgrade.to_vec();
        evil.push(("Origin", "http://evil.example"));
        assert_eq!(
            http(
                addr,
                "GET",
                &format!("/ws?token={}", token("z")),
                &evil,
                None
            )
            .await
            .status,
            403
        );

        let m = scrape(&hub.request("GET", "/metrics", None).await.text());
        let get = |k: &str| *m.get(k).unwrap_or_else(|| panic!("no series {k}"));
        assert_eq!(get("wshub_connections_active"), 2.0);
        assert_eq!(get("wshub_connections_accepted_total"), t.accepted);
        for (reason, n) in [
            ("normal", 1.0),
            ("error", 1.0),
            ("too_big", 1.0),
            ("admin", 1.0),
            ("heartbeat_timeout", 1.0),
            ("token_expired", 1.0),
            ("slow_consumer", 1.0),
            ("rate_limit", 0.0),
            ("shutdown", 0.0),
        ] {
            assert_eq!(
                get(&format!("wshub_disconnects_total{{reason=\"{reason}\"}}")),
                n,
                "{reason}"
            );
        }
        assert_eq!(get("wshub_messages_in_total"), t.messages_in);
        assert_eq!(get("wshub_messages_out_total"), t.messages_out);
        assert_eq!(get("wshub_events_published_total"), t.published);
        assert_eq!(get("wshub_broadcast_seconds_count"), t.published);
        assert_eq!(get("wshub_connection_duration_seconds_count"), 7.0);
        assert_eq!(get("wshub_rooms"), 2.0, "r and s2");
        for (code, n) in [
            ("unauthenticated", 1.0),
            ("invalid_token", 1.0),
            ("bad_request", 1.0),
            ("origin_not_allowed", 1.0),
        ] {
            assert_eq!(
                get(&format!(
                    "wshub_handshake_rejections_total{{code=\"{code}\"}}"
                )),
                n,
                "{code}"
            );
        }
        assert_eq!(
            get("wshub_event_encodings_total{protocol=\"wshub.json\"}"),
            t.published
        );
        assert_eq!(
            get("wshub_event_encodings_total{protocol=\"wshub.msgpack\"}"),
            0.0
        );
    });
}

#[test]
fn the_registry_shows_every_field_and_follows_the_connection() {
    let hub = TestHub::with_config(|c| c.jwt_secret = Some(SECRET.into()));
    smol::block_on(async {
        let token = hub.token("una").mint();
        let mut c = TestClient::connect_with(
            &hub.ws_url(&format!("?token={token}&rooms=a")),
            &[
                ("Origin", "http://localhost:3000"),
                ("User-Agent", "registry-test/1.0"),
            ],
        )
        .await
        .unwrap();
        let path = format!("/api/connections/{}", c.id());
        let info = hub.request("GET", &path, None).await.json();
        assert_eq!(info["connection_id"], c.id());
        assert_eq!(info["user"], "una");
        assert_eq!(info["ip"], "127.0.0.1");
        assert!(info["port"].as_u64().unwrap() > 0);
        assert!(info["connected_at"].as_str().unwrap().ends_with('Z'));
        assert_eq!(info["protocol"], "wshub.json");
        assert_eq!(info["origin"], "http://localhost:3000");
        assert_eq!(info["user_agent"], "registry-test/1.0");
        assert_eq!(info["rooms"], json!(["a"]));
        assert_eq!(
            (info["messages_in"].as_u64(), info["messages_out"].as_u64()),
            (Some(0), Some(1))
        );
        assert_eq!(info["dropped"], 0);
        let welcome_bytes = info["bytes_out"].as_u64().unwrap();
        assert_eq!(
            welcome_bytes as usize,
            c.welcome.to_string().len(),
            "bytes of the welcome"
        );

        c.subscribe(&["b", "c"]).await;
        c.request(json!({"type": "unsubscribe", "rooms": ["a"]}))
            .await;
        let info = hub.request("GET", &path, None).await.json();
        assert_eq!(info["rooms"], json!(["b", "c"]));
        assert_eq!(
            (info["messages_in"].as_u64(), info["messages_out"].as_u64()),
            (Some(2), Some(3))
        );
        assert!(info["bytes_in"].as_u64().unwrap() > 40);

        let rooms = hub.request("GET", "/api/rooms", None).await.json();
        let names: Vec<&str> = rooms["rooms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["room"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["b", "c"]);
        hub.publish("b", "e", json!({})).await;
        let b = hub.request("GET", "/api/rooms/b", None).await.json();
        assert_eq!(b["subscribers"], 1);
        assert_eq!(b["last_seq"], 1);
        assert_eq!(
            b["members"],
            json!([{"connection_id": c.id(), "user": "una"}])
        );

        let mine = hub
            .request("GET", "/api/connections?user=una", None)
            .await
            .json();
        assert_eq!(mine["connections"].as_array().unwrap().len(), 1);
        let theirs = hub
            .request("GET", "/api/connections?user=nobody", None)
            .await
            .json();
        assert_eq!(theirs["connections"], json!([]));

        let id = c.id();
        c.close().await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while hub.request("GET", &path, None).await.status != 404 {
            assert!(Instant::now() < deadline);
            smol::Timer::after(Duration::from_millis(10)).await;
        }
        let gone = hub
            .request("GET", &format!("/api/connections/{id}"), None)
            .await;
        assert_eq!(gone.error_code(), "not_found");
        assert_eq!(
            hub.request("DELETE", &format!("/api/connections/{id}"), None)
                .await
                .status,
            404
        );
        let b = hub.request("GET", "/api/rooms/b", None).await.json();
        assert_eq!(
            b["subscribers"], 0,
            "history keeps the room, not the member"
        );
        assert_eq!(hub.request("GET", "/api/rooms/c", None).await.status, 404);
    });
}

#[test]
fn a_mixed_room_encodes_each_event_once_per_encoding() {
    let hub = TestHub::start();
    smol::block_on(async {
        let mut json_tabs = hub.clients(3, "?rooms=mix").await;
        let mut packed = Vec::new();
        for _ in 0..3 {
            let c = TestClient::connect_with(
                &hub.ws_url("?rooms=mix"),
                &[("Sec-WebSocket-Protocol", "wshub.msgpack")],
            )
            .await
            .unwrap();
            packed.push(c);
        }
        let before = scrape(&hub.request("GET", "/metrics", None).await.text());
        for n in 0..4 {
            hub.publish("mix", "e", json!({"n": n})).await;
        }
        for c in json_tabs.iter_mut().chain(packed.iter_mut()) {
            for n in 0..4 {
                assert_eq!(c.expect("e").await["payload"]["n"], n);
            }
        }
        let after = scrape(&hub.request("GET", "/metrics", None).await.text());
        for protocol in ["wshub.json", "wshub.msgpack"] {
            let key = format!("wshub_event_encodings_total{{protocol=\"{protocol}\"}}");
            assert_eq!(
                after[&key] - before[&key],
                4.0,
                "{protocol}: once per event, not per member"
            );
        }
        // A MessagePack tab that resumes gets the same shared encoding.
        let mut late = TestClient::connect_with(
            &hub.ws_url(""),
            &[("Sec-WebSocket-Protocol", "wshub.msgpack")],
        )
        .await
        .unwrap();
        late.send(json!({"type": "subscribe", "rooms": ["mix"], "since": {"mix": 0}, "epoch": hub.handle().epoch()}))
            .await;
        late.expect("subscribed").await;
        assert_eq!(late.expect("e").await["seq"], 1);
        let again = scrape(&hub.request("GET", "/metrics", None).await.text());
        assert_eq!(
            again["wshub_event_encodings_total{protocol=\"wshub.msgpack\"}"],
            after["wshub_event_encodings_total{protocol=\"wshub.msgpack\"}"]
        );
    });
}
