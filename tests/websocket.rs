//! The WebSocket endpoint (PROTOCOL.md sections 2 to 4): handshake and its
//! refusals, the welcome, every client message and every error reply, with
//! the connection (and everyone else's) still working afterwards.

use std::time::Duration;

use async_tungstenite::tungstenite::Message;
use serde_json::{Value, json};
use wshub::testing::{TestClient, TestHub, http, parse_response};

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// Sends a raw upgrade request with `extra` header lines and returns the answer.
fn upgrade(hub: &TestHub, target: &str, extra: &str) -> wshub::testing::HttpResponse {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(hub.handle().addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let req = format!("GET {target} HTTP/1.1\r\nHost: localhost\r\n{extra}\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
        if out.windows(4).any(|w| w == b"\r\n\r\n") && out.starts_with(b"HTTP/1.1 101") {
            break;
        }
    }
    parse_response(&out)
        .unwrap_or_else(|| panic!("no response: {:?}", String::from_utf8_lossy(&out)))
}

fn valid_upgrade_headers() -> String {
    format!(
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n"
    )
}

/// Asserts a refusal is plain HTTP with a JSON error, and the hub still
/// accepts a normal client afterwards.
fn assert_refused(hub: &TestHub, r: &wshub::testing::HttpResponse, status: u16, code: &str) {
    assert_eq!(
        (r.status, r.error_code()),
        (status, code.to_string()),
        "{}",
        r.text()
    );
    assert!(r.header("sec-websocket-accept").is_none());
    assert!(r.header("x-correlation-id").is_some());
    smol::block_on(async {
        let mut c = hub.client("").await;
        assert_eq!(c.request(json!({"type": "ping"})).await["type"], "pong");
    });
}

#[test]
fn the_welcome_comes_first_with_every_field() {
    let hub = TestHub::start();
    smol::block_on(async {
        let c =
            TestClient::connect_with(&hub.ws_url("?rooms=a,b"), &[("X-Correlation-ID", "up-1")])
                .await
                .unwrap();
        let w = &c.welcome;
        assert_eq!(w["type"], "welcome");
        assert_eq!(w["correlation_id"], "up-1");
        assert!(w["timestamp"].as_str().unwrap().ends_with('Z'));
        let p = &w["payload"];
        assert!(uuid::Uuid::parse_str(p["connection_id"].as_str().unwrap()).is_ok());
        assert_eq!(p["epoch"], hub.handle().epoch());
        assert_eq!(p["protocol"], "wshub.json");
        assert_eq!(p["user"], Value::Null);
        assert_eq!(p["rooms"], json!(["a", "b"]));
        assert_eq!(p["heartbeat_interval_ms"], 30_000);
        assert_eq!(p["heartbeat_timeout_ms"], 60_000);
        assert_eq!(p["max_message_bytes"], 65_536);
    });
}

#[test]
fn rooms_in_the_query_are_joined_without_a_subscribed_message() {
    let hub = TestHub::start();
    smol::block_on(async {
        let mut c = hub.client("?rooms=scans").await;
        hub.publish("scans", "scan_started", json!({"n": 1})).await;
        let e = c.recv().await;
        assert_eq!(
            e["type"], "scan_started",
            "no `subscribed` before the event"
        );
        assert_eq!(e["room"], "scans");
        assert_eq!(e["seq"], 1);
        assert_eq!(e["payload"], json!({"n": 1}));
    });
}

#[test]
fn upgrade_refusals_are_json_with_their_status() {
    let hub = TestHub::start();
    let v = valid_upgrade_headers();

    let r = upgrade(&hub, "/ws", "");
    assert_refused(&hub, &r, 400, "bad_request");
    let r = upgrade(&hub, "/ws", &v.replace(KEY, "short"));
    assert_refused(&hub, &r, 400, "bad_request");
    let r = upgrade(&hub, "/ws", &v.replace("Upgrade: websocket\r\n", ""));
    assert_refused(&hub, &r, 400, "bad_request");

    let r = upgrade(&hub, "/ws", &v.replace("Version: 13", "Version: 8"));
    assert_refused(&hub, &r, 426, "bad_request");
    assert_eq!(r.header("sec-websocket-version"), Some("13"));

    let r = upgrade(
        &hub,
        "/ws",
        &format!("{v}Sec-WebSocket-Protocol: chat, superchat\r\n"),
    );
    assert_refused(&hub, &r, 400, "unsupported_protocol");

    let r = upgrade(&hub, "/ws?rooms=ok,not%20ok", &v);
    assert_refused(&hub, &r, 400, "bad_request");

    let r = smol::block_on(http(hub.handle().addr(), "POST", "/ws", &[], Some("{}")));
    assert_refused(&hub, &r, 400, "bad_request");
}

#[test]
fn subprotocols_are_negotiated_in_offer_order() {
    let hub = TestHub::start();
    let v = valid_upgrade_headers();
    let r = upgrade(&hub, "/ws", &v);
    assert_eq!(r.status, 101);
    assert_eq!(
        r.header("sec-websocket-protocol"),
        None,
        "none offered, none answered"
    );
    let r = upgrade(
        &hub,
        "/ws",
        &format!("{v}Sec-WebSocket-Protocol: chat, wshub.json, wshub.msgpack\r\n"),
    );
    assert_eq!(r.header("sec-websocket-protocol"), Some("wshub.json"));
    let r = upgrade(
        &hub,
        "/ws",
        &format!(
            "{v}Sec-WebSocket-Protocol: wshub.msgpack\r\nSec-WebSocket-Protocol: wshub.json\r\n"
        ),
    );
    assert_eq!(r.header("sec-websocket-protocol"), Some("wshub.msgpack"));
    assert_eq!(
        r.header("sec-websocket-extensions"),
        None,
        "no permessage-deflate"
    );
}

#[test]
fn ping_gets_pong_with_ref_and_correlation_id() {
    let hub = TestHub::start();
    smol::block_on(async {
        let mut c = hub.client("").await;
        c.send(json!({"type": "ping", "ref": "p1", "correlation_id": "corr-9"}))
            .await;
        let pong = c.expect("pong").await;
        assert_eq!(pong["ref"], "p1");
        assert_eq!(pong["correlation_id"], "corr-9");
        assert_eq!(pong["payload"], json!({}));
        c.send(json!({"type": "ping"})).await;
        let pong = c.expect("pong").await;
        assert!(pong.get("ref").is_none());
        assert!(uuid::Uuid::parse_str(pong["correlation_id"].as_str().unwrap()).is_ok());
    });
}

#[test]
fn subscribe_unsubscribe_and_positions() {
    let hub = TestHub::start();
    smol::block_on(async {
        let mut c = hub.client("").await;
        hub.publish("old", "t", json!({})).await;
        hub.publish("old", "t", json!({})).await;
        let s = c.subscribe(&["old", "new"]).await;
        assert_eq!(s["payload"]["rooms"], json!(["old", "new"]));
        assert_eq!(s["payload"]["epoch"], hub.handle().epoch());
        assert_eq!(s["payload"]["positions"], json!({"old": 2, "new": 0}));
        assert!(s["payload"].get("recovered").is_none());
        hub.publish("new", "t", json!({})).await;
        assert_eq!(c.expect("t").await["room"], "new");

        let u = c
            .request(json!({"type": "unsubscribe", "rooms": ["new"]}))
            .await;
        assert_eq!(u["type"], "unsubscribed");
        assert_eq!(u["payload"]["rooms"], json!(["new"]));
        hub.publish("new", "t", json!({})).await;
        hub.publish("old", "t", json!({})).await;
        assert_eq!(
            c.expect("t").await["room"],
            "old",
            "nothing from `new` any more"
        );
    });
}

#[test]
fn publish_goes_to_every_other_subscriber_never_the_sender() {
    let hub = TestHub::start();
    smol::block_on(async {
        let mut sender = hub.client("?rooms=chat").await;
        let mut a = hub.client("?rooms=chat").await;
        let mut b = hub.client("?rooms=chat").await;
        let mut outsider = hub.client("?rooms=other").await;
        let reply = sender
            .request(json!({"type": "publish", "room": "chat", "event": "said", "payload": {"t": "hi"}, "correlation_id": "c-77"}))
            .await;
        assert_eq!(reply["type"], "published");
        assert_eq!(reply["payload"]["seq"], 1);
        assert_eq!(reply["payload"]["recipients"], 2);
        assert_eq!(reply["correlation_id"], "c-77");
        for c in [&mut a, &mut b] {
            let e = c.expect("said").await;
            assert_eq!(e["id"], reply["payload"]["id"]);
            assert_eq!(e["correlation_id"], "c-77");
            assert_eq!(e["payload"], json!({"t": "hi"}));
        }
        sender.expect_nothing_before_pong().await;
        outsider.expect_nothing_before_pong().await;
    });
}

#[test]
fn presence_lists_the_members() {
    let hub = TestHub::start();
    smol::block_on(async {
        let a = hub.client("?rooms=lobby").await;
        let b = hub.client("?rooms=lobby").await;
        let mut asker = hub.client("").await;
        let p = asker
            .request(json!({"type": "presence", "room": "lobby"}))
            .await;
        assert_eq!(p["type"], "presence");
        assert_eq!(p["payload"]["room"], "lobby");
        let mut ids: Vec<&str> = p["payload"]["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                assert_eq!(m["user"], Value::Null);
                m["connection_id"].as_str().unwrap()
            })
            .collect();
        ids.sort();
        let mut expected = [a.id(), b.id()];
        expected.sort();
        assert_eq!(ids, expected);
        let empty = asker
            .request(json!({"type": "presence", "room": "void"}))
            .await;
        assert_eq!(empty["payload"]["members"], json!([]));
    });
}

#[test]
fn every_error_code_leaves_the_connection_usable_and_others_receiving() {
    let hub = TestHub::start();
    smol::block_on(async {
        let mut c = hub.client("").await;
        let mut bystander = hub.client("?rooms=b").await;
        let cases: Vec<(Message, &str)> = vec![
            (Message::text("not json"), "invalid_json"),
            (Message::text("[1,2,3]"), "invalid_json"),
            (Message::text(r#"{"ref":"x"}"#), "invalid_message"),
            (
                Message::text(r#"{"type":"subscribe","rooms":"a"}"#),
                "invalid_message",
            ),
            (
                Message::text(r#"{"type":"subscribe","rooms":["bad room"]}"#),
                "invalid_message",
            ),
            (
                Message::text(r#"{"type":"publish","room":"r","event":"e"}"#),
                "invalid_message",
            ),
            (
                Message::text(r#"{"type":"refresh","token":"t"}"#),
                "invalid_message",
            ),
            (Message::text(r#"{"type":"dance"}"#), "unknown_type"),
            (
                Message::binary(b"\x81\xa4type\xa4ping".to_vec()),
                "unsupported_frame",
            ),
            (
                Message::text(r#"{"type":"publish","room":"r","event":"welcome","payload":{}}"#),
                "reserved_type",
            ),
        ];
        for (frame, code) in cases {
            c.send_raw(frame.clone()).await;
            let e = c.expect("error").await;
            assert_eq!(e["payload"]["code"], code, "{frame:?}");
            assert!(
                e["payload"]["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty())
            );
            assert!(e["correlation_id"].is_string());
            assert!(e["timestamp"].is_string());
            assert_eq!(
                c.request(json!({"type": "ping"})).await["type"],
                "pong",
                "still usable after {code}"
            );
        }
        let field = c
            .request(json!({"type": "publish", "room": "r", "event": "e"}))
            .await;
        assert!(
            field["payload"]["message"]
                .as_str()
                .unwrap()
                .contains("payload"),
            "{field}"
        );
        hub.publish("b", "still", json!({})).await;
        bystander.expect("still").await;
    });
}

#[test]
fn error_replies_echo_ref_and_correlation_id() {
    let hub = TestHub::start();
    smol::block_on(async {
        let mut c = hub.client("").await;
        c.send(json!({"type": "nope", "ref": "r-5", "correlation_id": "c-5"}))
            .await;
        let e = c.expect("error").await;
        assert_eq!(e["ref"], "r-5");
        assert_eq!(e["correlation_id"], "c-5");
    });
}

#[test]
fn events_to_everyone_and_health_reach_every_connection() {
    let hub = TestHub::start();
    smol::block_on(async {
        let mut clients = hub.clients(10, "").await;
        let r = hub
            .post_event(json!({"type": "scan_completed", "payload": {"files": 3}}))
            .await;
        assert_eq!(r.json()["recipients"], 10);
        for c in &mut clients {
            let e = c.expect("scan_completed").await;
            assert_eq!(e["room"], Value::Null);
            assert!(e.get("seq").is_none());
            assert!(e["id"].is_string());
        }
        let r = hub
            .request(
                "PUT",
                "/api/health/db",
                Some(&json!({"status": "down", "detail": "gone"})),
            )
            .await;
        assert_eq!(r.status, 200);
        let correlation = r.header("x-correlation-id").unwrap().to_string();
        for c in &mut clients {
            let e = c.expect("health_status").await;
            assert_eq!(
                e["payload"],
                json!({"component": "db", "status": "down", "detail": "gone", "overall": "down"})
            );
            assert_eq!(e["room"], Value::Null);
            assert_eq!(e["correlation_id"], correlation);
        }
        // The same state again is not a change and is not broadcast.
        hub.request(
            "PUT",
            "/api/health/db",
            Some(&json!({"status": "down", "detail": "gone"})),
        )
        .await;
        hub.post_event(json!({"type": "marker", "payload": {}}))
            .await;
        for c in &mut clients {
            c.expect("marker").await;
        }
    });
}

#[test]
fn ten_simultaneous_connections_all_receive_room_events() {
    let hub = TestHub::start();
    smol::block_on(async {
        let mut clients = hub.clients(10, "?rooms=activity").await;
        for n in 1..=3 {
            hub.publish("activity", "project_created", json!({"n": n}))
                .await;
        }
        for c in &mut clients {
            for n in 1..=3 {
                let e = c.expect("project_created").await;
                assert_eq!(e["seq"], n);
                assert_eq!(e["payload"]["n"], n);
            }
        }
    });
}

#[test]
fn every_hub_message_has_the_four_common_fields() {
    let hub = TestHub::start();
    smol::block_on(async {
        let mut c = hub.client("?rooms=x").await;
        let mut seen = vec![c.welcome.clone()];
        seen.push(c.request(json!({"type": "ping"})).await);
        seen.push(c.subscribe(&["y"]).await);
        seen.push(c.request(json!({"type": "presence", "room": "x"})).await);
        seen.push(c.publish("x", "t", json!({})).await);
        seen.push(
            c.request(json!({"type": "unsubscribe", "rooms": ["y"]}))
                .await,
        );
        seen.push(c.request(json!({"type": "zzz"})).await);
        hub.publish("x", "from_http", json!({})).await;
        seen.push(c.expect("from_http").await);
        for m in seen {
            assert!(m["type"].is_string(), "{m}");
            assert!(m["payload"].is_object(), "{m}");
            assert!(m["correlation_id"].is_string(), "{m}");
            assert!(
                m["timestamp"].as_str().is_some_and(|t| t.len() == 24),
                "{m}"
            );
        }
    });
}

#[test]
fn a_client_reconnects_without_a_restart() {
    let hub = TestHub::start();
    smol::block_on(async {
        let first = hub.client("?rooms=r").await;
        let first_id = first.id();
        first.close().await;
        let mut again = hub.client("?rooms=r").await;
        assert_ne!(again.id(), first_id);
        hub.publish("r", "t", json!({})).await;
        again.expect("t").await;
    });
}

#[test]
fn msgpack_clients_get_the_same_messages_in_binary_frames() {
    let hub = TestHub::start();
    smol::block_on(async {
        let mut m = TestClient::connect_with(
            &hub.ws_url("?rooms=r"),
            &[("Sec-WebSocket-Protocol", "wshub.msgpack")],
        )
        .await
        .unwrap();
        let mut j = hub.client("?rooms=r").await;
        assert_eq!(m.welcome["payload"]["protocol"], "wshub.msgpack");
        assert_eq!(m.request(json!({"type": "ping"})).await["type"], "pong");
        hub.publish("r", "t", json!({"n": 1})).await;
        let from_m = m.expect("t").await;
        let from_j = j.expect("t").await;
        assert_eq!(from_m, from_j);
        m.send_raw(Message::text(r#"{"type":"ping"}"#)).await;
        assert_eq!(
            m.expect("error").await["payload"]["code"],
            "unsupported_frame"
        );
    });
}
