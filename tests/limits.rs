//! Limits (PROTOCOL.md sections 2 and 6): connection limits checked before
//! the upgrade and released on every kind of disconnect, the per-connection
//! rate limit with its `rate_limited` notices and close 1008, and slowloris
//! sockets that cannot keep real clients out.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::Message;
use serde_json::json;
mod common;

use common::{connection_count, wait_for_connections};
use wshub::testing::{Closed, TestClient, TestHub, http};

async fn upgrade_status(addr: SocketAddr, query: &str) -> (u16, String, Option<String>) {
    let headers = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Sec-WebSocket-Version", "13"),
    ];
    let r = http(addr, "GET", &format!("/ws{query}"), &headers, None).await;
    let retry = r.header("retry-after").map(str::to_string);
    let code = if r.status == 101 {
        String::new()
    } else {
        r.error_code()
    };
    (r.status, code, retry)
}

#[test]
fn max_connections_is_503_with_retry_after() {
    let hub = TestHub::with_config(|c| c.max_connections = 3);
    smol::block_on(async {
        let mut open = hub.clients(3, "?rooms=r").await;
        let (status, code, retry) = upgrade_status(hub.handle().addr(), "").await;
        assert_eq!((status, code.as_str()), (503, "too_many_connections"));
        assert!(retry.is_some());
        hub.publish("r", "e", json!({})).await;
        for c in &mut open {
            c.expect("e").await;
        }
        open.pop().unwrap().close().await;
        wait_for_connections(&hub, 2, &mut []).await;
        hub.client("").await;
    });
}

#[test]
fn per_ip_and_per_user_limits_are_429() {
    let hub = TestHub::with_config(|c| {
        c.max_connections_per_ip = 2;
        c.jwt_secret = Some("k".into());
    });
    let addr = hub.handle().addr();
    smol::block_on(async {
        let t1 = hub.token("u1").mint();
        let _a = hub.client_with_token(&t1, "").await;
        let _b = hub.client_with_token(&hub.token("u2").mint(), "").await;
        let (status, code, retry) = upgrade_status(addr, &format!("?token={t1}")).await;
        assert_eq!((status, code.as_str()), (429, "too_many_connections"));
        assert!(retry.is_some());
        // Another address still gets in.
        let other = smol::net::TcpStream::try_from({
            let s =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            s.bind(&"127.0.0.2:0".parse::<SocketAddr>().unwrap().into())
                .unwrap();
            s.connect(&addr.into()).unwrap();
            TcpStream::from(s)
        })
        .unwrap();
        let url = hub.ws_url(&format!("?token={}", hub.token("u3").mint()));
        assert!(async_tungstenite::client_async(url, other).await.is_ok());
    });

    let hub = TestHub::with_config(|c| {
        c.max_connections_per_user = 2;
        c.jwt_secret = Some("k".into());
    });
    smol::block_on(async {
        let t = hub.token("same").mint();
        let _a = hub.client_with_token(&t, "").await;
        let _b = hub.client_with_token(&t, "").await;
        let (status, code, _) = upgrade_status(hub.handle().addr(), &format!("?token={t}")).await;
        assert_eq!((status, code.as_str()), (429, "too_many_connections"));
        let _other_user = hub.client_with_token(&hub.token("else").mint(), "").await;
    });
}

#[test]
fn limits_come_back_down_after_every_kind_of_disconnect() {
    let hub = TestHub::with_config(|c| {
        c.max_connections_per_ip = 1;
        c.max_connections_per_user = 1;
        c.max_connections = 1;
        c.max_message_bytes = 1024;
        c.jwt_secret = Some("k".into());
    });
    smol::block_on(async {
        let token = hub.token("cycler").mint();
        for round in 0..60 {
            let mut c = hub.client_with_token(&token, "&rooms=r").await;
            match round % 4 {
                0 => c.close().await,
                1 => drop(c),
                2 => {
                    let r = hub
                        .request("DELETE", &format!("/api/connections/{}", c.id()), None)
                        .await;
                    assert_eq!(r.status, 204);
                    assert_eq!(c.expect_close().await, Closed::Code(4003));
                }
                _ => {
                    c.send_raw(Message::text("x".repeat(2000))).await;
                    assert_eq!(c.expect_close().await, Closed::Code(1009));
                }
            }
            wait_for_connections(&hub, 0, &mut []).await;
        }
        let m = hub.request("GET", "/metrics", None).await.text();
        assert!(m.contains("wshub_connections_accepted_total 60"), "{m}");
        assert!(
            m.contains("wshub_handshake_rejections_total{code=\"too_many_connections\"} 0"),
            "{m}"
        );
    });
}

#[test]
fn over_the_rate_messages_are_dropped_with_one_notice_a_second() {
    let hub = TestHub::with_config(|c| {
        c.rate_limit_per_s = 10;
        c.rate_limit_burst = 5;
    });
    smol::block_on(async {
        let mut c = hub.client("").await;
        for i in 0..30 {
            c.send(json!({"type": "ping", "ref": format!("p{i}")}))
                .await;
        }
        let (mut pongs, mut notices) = (0, 0);
        while let Some(m) = c.recv_within(Duration::from_millis(300)).await {
            match m["type"].as_str() {
                Some("pong") => pongs += 1,
                Some("error") => {
                    assert_eq!(m["payload"]["code"], "rate_limited");
                    notices += 1;
                }
                _ => {}
            }
        }
        assert!(
            (5..30).contains(&pongs),
            "burst answered, the rest dropped: {pongs}"
        );
        assert_eq!(notices, 1, "one notice, further drops are silent");
        // 300 ms of silence ended the loop: the bucket holds 3 tokens again.
        assert_eq!(
            c.request(json!({"type": "ping"})).await["type"],
            "pong",
            "usable again"
        );
        let info = hub
            .request("GET", &format!("/api/connections/{}", c.id()), None)
            .await
            .json();
        assert_eq!(info["dropped"].as_u64().unwrap() + pongs + 1, 31);
    });
}

#[test]
fn a_flooding_client_does_not_slow_the_others() {
    let hub = TestHub::start();
    let url = hub.ws_url("");
    let flooder = std::thread::spawn(move || {
        smol::block_on(async {
            let mut f = TestClient::connect(&url).await;
            for i in 0..20_000 {
                f.send_raw(Message::text(format!(r#"{{"type":"ping","ref":"{i}"}}"#)))
                    .await;
            }
            // Its replies: pongs for the burst and the refill, and rate_limited notices.
            let first = f.recv().await;
            assert!(first["type"] == "pong" || first["payload"]["code"] == "rate_limited");
        })
    });
    smol::block_on(async {
        let mut reader = hub.client("?rooms=news").await;
        for n in 1..=50 {
            hub.publish("news", "item", json!({"n": n})).await;
            assert_eq!(reader.expect("item").await["payload"]["n"], n);
        }
    });
    flooder.join().unwrap();
    let m = smol::block_on(hub.request("GET", "/metrics", None)).text();
    let dropped: f64 = m
        .lines()
        .find_map(|l| l.strip_prefix("wshub_messages_dropped_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(dropped > 0.0, "the flood was rate limited");
}

#[test]
fn ten_seconds_over_the_limit_closes_with_1008() {
    let hub = TestHub::with_config(|c| {
        c.rate_limit_per_s = 5;
        c.rate_limit_burst = 5;
    });
    smol::block_on(async {
        let mut bystander = hub.client("?rooms=r").await;
        let mut abuser = hub.client("").await;
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut closed = None;
        while Instant::now() < deadline {
            for _ in 0..20 {
                abuser.send_raw(Message::text(r#"{"type":"ping"}"#)).await;
            }
            // Drain what came back, looking for the close.
            while let Some(m) = abuser.recv_within(Duration::from_millis(1)).await {
                let _ = m;
            }
            let _ = bystander.recv_within(Duration::from_millis(1)).await;
            if connection_count(&hub).await == 1 {
                closed = Some(abuser.expect_close().await);
                break;
            }
            smol::Timer::after(Duration::from_millis(50)).await;
        }
        assert_eq!(closed, Some(Closed::Code(1008)));
        hub.publish("r", "fine", json!({})).await;
        bystander.expect("fine").await;
        let m = hub.request("GET", "/metrics", None).await.text();
        assert!(
            m.contains("wshub_disconnects_total{reason=\"rate_limit\"} 1"),
            "{m}"
        );
    });
}

#[test]
fn slowloris_sockets_do_not_keep_real_clients_out() {
    let hub = TestHub::with_config(|c| c.handshake_timeout = Duration::from_secs(2));
    let addr = hub.handle().addr();
    let mut stalled: Vec<TcpStream> = (0..500)
        .map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgr").unwrap();
            s
        })
        .collect();
    smol::block_on(async {
        let mut real = hub.clients(20, "?rooms=r").await;
        hub.publish("r", "e", json!({})).await;
        for c in &mut real {
            c.expect("e").await;
        }
    });
    // Every stalled socket is dropped by the hub once its time is up.
    for s in &mut stalled {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(s.read(&mut buf).unwrap_or(0), 0);
    }
}
