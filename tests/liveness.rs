//! Liveness and back-pressure (PROTOCOL.md section 6): heartbeats, the
//! heartbeat timeout (4000) that also frees half-open peers, the slow
//! consumer (4009), oversize messages (1009), and that every kind of
//! disconnect leaves nothing behind in the hub.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::Message;
use futures_lite::StreamExt;
use serde_json::{Value, json};
mod common;

use common::{connection_count, disconnects, metric, wait_for_connections};
use wshub::testing::{Closed, TestClient, TestHub, connect_raw};

/// A socket that upgraded to `/ws{query}` and then neither reads nor writes.
fn raw_websocket(hub: &TestHub, query: &str) -> TcpStream {
    wshub::testing::raw_upgrade(hub.handle().addr(), query)
}

fn quick_heartbeat(c: &mut wshub::Config) {
    c.heartbeat_interval = Duration::from_millis(100);
    c.heartbeat_timeout = Duration::from_millis(400);
}

#[test]
fn heartbeats_come_with_protocol_pings_at_the_configured_interval() {
    let hub = TestHub::with_config(quick_heartbeat);
    smol::block_on(async {
        let mut ws = connect_raw(&hub.ws_url(""), &[]).await.unwrap();
        let (mut pings, mut beats) = (0, 0);
        let deadline = Instant::now() + Duration::from_secs(10);
        while (pings < 3 || beats < 3) && Instant::now() < deadline {
            match ws.next().await {
                Some(Ok(Message::Ping(_))) => pings += 1,
                Some(Ok(Message::Text(t))) => {
                    let m: Value = serde_json::from_str(&t).unwrap();
                    if m["type"] == "heartbeat" {
                        assert_eq!(m["payload"], json!({}));
                        assert_eq!(m["correlation_id"], Value::Null);
                        assert!(m["timestamp"].is_string());
                        beats += 1;
                    }
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(
            pings >= 3 && beats >= 3,
            "pings {pings}, heartbeats {beats}"
        );
        assert_eq!(
            TestClient::connect(&hub.ws_url("")).await.welcome["payload"]["heartbeat_interval_ms"],
            100
        );
    });
}

#[test]
fn a_silent_client_is_closed_with_4000_and_an_answering_one_stays() {
    let hub = TestHub::with_config(quick_heartbeat);
    smol::block_on(async {
        let mut silent = hub.client("").await;
        let mut alive = hub.client("?rooms=r").await;
        // `alive` keeps reading, and so answers every Ping; `silent` reads nothing.
        let until = Instant::now() + Duration::from_millis(1200);
        while Instant::now() < until {
            let _ = alive.recv_within(Duration::from_millis(50)).await;
        }
        assert_eq!(silent.expect_close().await, Closed::Code(4000));
        hub.publish("r", "still_here", json!({})).await;
        alive.expect("still_here").await;
        let m = hub.request("GET", "/metrics", None).await.text();
        assert_eq!(
            metric(&m, "wshub_disconnects_total{reason=\"heartbeat_timeout\"}"),
            1.0
        );
    });
}

#[test]
fn a_half_open_peer_is_freed() {
    let hub = TestHub::with_config(quick_heartbeat);
    smol::block_on(async {
        let mut honest = hub.client("?rooms=r").await;
        let half_open = raw_websocket(&hub, "?rooms=r");
        assert_eq!(connection_count(&hub).await, 2);
        wait_for_connections(&hub, 1, &mut [&mut honest]).await;
        let rooms = hub.request("GET", "/api/rooms/r", None).await.json();
        assert_eq!(rooms["subscribers"], 1);
        hub.publish("r", "after", json!({})).await;
        honest.expect("after").await;
        drop(half_open);
    });
}

#[test]
fn a_slow_consumer_is_closed_with_4009_while_others_keep_receiving() {
    let hub = TestHub::with_config(|c| c.send_queue = 16);
    smol::block_on(async {
        let mut fast = hub.client("?rooms=flood").await;
        let stuck = raw_websocket(&hub, "?rooms=flood");
        let payload = json!({"blob": "x".repeat(50_000)});
        let started = Instant::now();
        let mut slow_closed = false;
        for n in 0..400 {
            let r = hub.publish("flood", "big", payload.clone()).await;
            assert_eq!(
                r["seq"],
                n + 1,
                "publishers never wait for the stuck client"
            );
            let e = fast.expect("big").await;
            assert_eq!(e["seq"], n + 1);
            if r["recipients"] == 1 {
                slow_closed = true;
                break;
            }
        }
        assert!(slow_closed, "the stuck client was never dropped");
        assert!(started.elapsed() < Duration::from_secs(60));
        wait_for_connections(&hub, 1, &mut [&mut fast]).await;
        let m = hub.request("GET", "/metrics", None).await.text();
        assert_eq!(
            metric(&m, "wshub_disconnects_total{reason=\"slow_consumer\"}"),
            1.0
        );
        drop(stuck);
    });
}

#[test]
fn an_oversize_message_is_closed_with_1009_and_others_are_unaffected() {
    let hub = TestHub::with_config(|c| c.max_message_bytes = 1024);
    smol::block_on(async {
        let mut big = hub.client("").await;
        let mut other = hub.client("?rooms=r").await;
        let text = json!({"type": "publish", "room": "r", "event": "e", "payload": {"x": "y".repeat(2000)}});
        big.send(text).await;
        assert_eq!(big.expect_close().await, Closed::Code(1009));
        assert_eq!(other.request(json!({"type": "ping"})).await["type"], "pong");
        hub.publish("r", "fine", json!({})).await;
        other.expect("fine").await;
        let m = hub.request("GET", "/metrics", None).await.text();
        assert_eq!(
            metric(&m, "wshub_disconnects_total{reason=\"too_big\"}"),
            1.0
        );
    });
}

#[test]
fn dead_connections_are_removed_and_broadcasts_go_on() {
    let hub = TestHub::start();
    smol::block_on(async {
        let mut a = hub.client("?rooms=r").await;
        let mut b = hub.client("?rooms=r").await;
        let dead = raw_websocket(&hub, "?rooms=r");
        // Reset, not FIN: the peer is simply gone.
        socket2::SockRef::from(&dead)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(dead);
        for _ in 0..5 {
            hub.publish("r", "e", json!({})).await;
        }
        for c in [&mut a, &mut b] {
            for _ in 0..5 {
                c.expect("e").await;
            }
        }
        wait_for_connections(&hub, 2, &mut []).await;
        let r = hub.publish("r", "e", json!({})).await;
        assert_eq!(r["recipients"], 2);
    });
}

#[test]
fn no_entry_is_left_behind_after_any_kind_of_disconnect() {
    let hub = TestHub::with_config(|c| {
        quick_heartbeat(c);
        c.max_message_bytes = 1024;
    });
    smol::block_on(async {
        // Normal close.
        hub.client("?rooms=r").await.close().await;
        // Abrupt drop without a close frame.
        drop(raw_websocket(&hub, "?rooms=r"));
        // 1009.
        let mut big = hub.client("?rooms=r").await;
        big.send_raw(Message::text("x".repeat(5000))).await;
        assert_eq!(big.expect_close().await, Closed::Code(1009));
        // 4000. A client that reads would answer the hub's Pings (tungstenite
        // does), so the silent peer is a raw socket that neither reads nor
        // writes; with everyone before it gone, the registry empties only
        // once the heartbeat timeout frees it.
        wait_for_connections(&hub, 0, &mut []).await;
        let timeouts = disconnects(&hub, "heartbeat_timeout").await;
        let silent = raw_websocket(&hub, "?rooms=r");
        wait_for_connections(&hub, 0, &mut []).await;
        assert_eq!(disconnects(&hub, "heartbeat_timeout").await, timeouts + 1.0);
        drop(silent);
        // 4003, by an admin.
        let mut kicked = hub.client("?rooms=r").await;
        let r = hub
            .request("DELETE", &format!("/api/connections/{}", kicked.id()), None)
            .await;
        assert_eq!(r.status, 204);
        assert_eq!(kicked.expect_close().await, Closed::Code(4003));

        wait_for_connections(&hub, 0, &mut []).await;
        let rooms = hub.request("GET", "/api/rooms", None).await.json();
        assert_eq!(
            rooms["rooms"],
            json!([]),
            "no room kept for members that left"
        );
        assert_eq!(hub.request("GET", "/api/rooms/r", None).await.status, 404);
        let health = hub.request("GET", "/health", None).await.json();
        assert_eq!(health["connections"], 0);
        let m = hub.request("GET", "/metrics", None).await.text();
        assert_eq!(metric(&m, "wshub_connections_active"), 0.0);
        assert_eq!(metric(&m, "wshub_connections_accepted_total"), 5.0);
    });
}

#[test]
fn shutdown_closes_every_connection_with_1001() {
    let hub = TestHub::start();
    smol::block_on(async {
        let mut a = hub.client("").await;
        let mut b = hub.client("?rooms=x").await;
        hub.handle().request_shutdown().await;
        assert_eq!(a.expect_close().await, Closed::Code(1001));
        assert_eq!(b.expect_close().await, Closed::Code(1001));
        hub.handle().stopped().await;
    });
}
