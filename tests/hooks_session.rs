//! `connect_hook`, `subscribe_hook`, `publish_hook` and `disconnect_hook`
//! (PROTOCOL.md section 10) against a real HTTP app on a loopback port.

mod common;
mod hook_app;

use std::io::{Read, Write};
use std::net::TcpStream;

use hook_app::{App, AppResponse, SHORT_HOOK_TIMEOUT, dead_url};
use serde_json::{Value, json};
use wshub::client::Closed;
use wshub::testing::{TIMEOUT, TestClient, TestHub};

fn hub(hooks: &[(&str, String)], change: impl FnOnce(&mut wshub::Config)) -> TestHub {
    let hooks: Vec<(String, String)> = hooks
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    TestHub::with_config(move |c| {
        for (k, v) in &hooks {
            c.set_str(k, v).expect("a hook setting");
        }
        c.hook_timeout = SHORT_HOOK_TIMEOUT;
        change(c);
    })
}

/// A raw upgrade request: the status and the JSON body of a refusal.
fn upgrade_status(hub: &TestHub, query: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut s = TcpStream::connect(hub.handle().addr()).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut req = format!(
        "GET /ws{query} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&chunk[..n]),
        }
        if out.starts_with(b"HTTP/1.1 101") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text[9..12].parse().unwrap();
    let body = text
        .split("\r\n\r\n")
        .nth(1)
        .and_then(|b| serde_json::from_str(b).ok())
        .unwrap_or(Value::Null);
    (status, body)
}

#[test]
fn connect_hook_reads_a_cookie_and_names_the_user() {
    let app = App::start(|r| {
        let cookie = r.body["headers"]["cookie"].as_str().unwrap_or("");
        if cookie.contains("session=good") {
            AppResponse::json(200, json!({"user": "alice", "subscribe": ["inbox:alice"]}))
        } else {
            AppResponse::json(
                401,
                json!({"error": {"code": "login_required", "message": "log in first"}}),
            )
        }
    });
    let hub = hub(&[("connect_hook", app.url("/hooks/connect"))], |_| {});
    smol::block_on(async {
        let url = hub.ws_url("?rooms=news&x=1");
        let c = TestClient::connect_with(
            &url,
            &[
                ("Cookie", "session=good"),
                ("Origin", "http://localhost:3000"),
                ("Authorization", "Bearer abc"),
                ("X-Other", "no"),
            ],
        )
        .await
        .expect("admitted");
        assert_eq!(c.welcome["payload"]["user"], "alice");
        assert_eq!(
            c.welcome["payload"]["rooms"],
            json!(["news", "inbox:alice"])
        );
        let asked = app.next().await;
        let b = &asked.body;
        assert_eq!(b["hook"], "connect");
        assert_eq!(b["connection_id"], c.id());
        assert_eq!(b["user"], Value::Null);
        assert_eq!(b["ip"], "127.0.0.1");
        assert_eq!(b["origin"], "http://localhost:3000");
        assert_eq!(b["protocol"], "wshub.json");
        assert_eq!(b["query"], json!({"rooms": "news", "x": "1"}));
        assert_eq!(
            b["headers"],
            json!({"cookie": "session=good", "authorization": "Bearer abc"})
        );
        assert_eq!(
            asked.headers["x-correlation-id"],
            c.welcome["correlation_id"].as_str().unwrap()
        );
        // The event of the app-joined room reaches it.
        let mut c = c;
        hub.publish("inbox:alice", "mail", json!({"n": 1})).await;
        assert_eq!(c.expect("mail").await["room"], "inbox:alice");
        let info = hub.handle().connections().await.unwrap();
        assert_eq!(info[0].user.as_deref(), Some("alice"));
    });
    let (status, body) = upgrade_status(&hub, "", &[("Cookie", "session=bad")]);
    assert_eq!(status, 403);
    assert_eq!(body["error"]["code"], "login_required");
    assert_eq!(body["error"]["message"], "log in first");
}

#[test]
fn an_sse_stream_asks_the_connect_hook_as_an_upgrade_does() {
    let app = App::start(|r| {
        let cookie = r.body["headers"]["cookie"].as_str().unwrap_or("");
        if cookie.contains("session=good") {
            AppResponse::json(200, json!({"user": "alice", "subscribe": ["inbox:alice"]}))
        } else {
            AppResponse::json(
                401,
                json!({"error": {"code": "login_required", "message": "log in first"}}),
            )
        }
    });
    let hub = hub(&[("connect_hook", app.url("/hooks/connect"))], |_| {});
    smol::block_on(async {
        let mut stream = hub
            .stream_with("?rooms=news", &[("Cookie", "session=good")])
            .await
            .expect("admitted");
        assert_eq!(stream.welcome["payload"]["user"], "alice");
        assert_eq!(
            stream.welcome["payload"]["rooms"],
            json!(["news", "inbox:alice"])
        );
        let epoch = stream.welcome["payload"]["epoch"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(stream.welcome_id, format!("{epoch};news=0;inbox:alice=0"));
        let asked = app.next().await;
        assert_eq!(asked.body["hook"], "connect");
        assert_eq!(asked.body["protocol"], "sse");
        assert_eq!(asked.body["connection_id"], stream.id());
        // The app's room is the stream's: its events come, with the cursor.
        hub.publish("inbox:alice", "mail", json!({"n": 1})).await;
        let (id, mail) = stream.recv_tagged().await;
        assert_eq!(mail["type"], "mail");
        assert_eq!(id, Some(format!("{epoch};news=0;inbox:alice=1")));
        let refused = match hub
            .stream_with("?rooms=news", &[("Cookie", "session=bad")])
            .await
        {
            Ok(_) => panic!("a bad session is refused"),
            Err(refused) => refused,
        };
        assert_eq!(refused.status, 403);
        assert_eq!(refused.json()["error"]["code"], "login_required");
        // The refusal left the admitted stream alone.
        hub.publish("news", "n", json!({})).await;
        assert_eq!(stream.expect("n").await["room"], "news");
    });
}

#[test]
fn connect_answers_merge_with_jwt_claims() {
    let app = App::start(|r| {
        assert_eq!(r.body["user"], "jwt-user");
        AppResponse::json(200, json!({"publish": ["chat"]}))
    });
    let hub = hub(&[("connect_hook", app.url("/c"))], |c| {
        c.jwt_secret = Some("k".into())
    });
    smol::block_on(async {
        let token = hub.token("jwt-user").rooms(&["chat"]).mint();
        let mut c = hub.client_with_token(&token, "").await;
        assert_eq!(c.welcome["payload"]["user"], "jwt-user");
        // publish granted by the app; rooms still the JWT's.
        let r = c.publish("chat", "msg", json!({})).await;
        assert_eq!(r["type"], "published", "{r}");
        let r = c
            .request(json!({"type": "subscribe", "rooms": ["other"]}))
            .await;
        assert_eq!(r["payload"]["code"], "forbidden");
    });
}

#[test]
fn connect_hook_failures_are_503_hook_unavailable() {
    for (what, app) in [
        (
            "500",
            Some(App::start(|_| AppResponse::json(500, json!({})))),
        ),
        (
            "not json",
            Some(App::start(|_| AppResponse::raw(200, "hello"))),
        ),
        (
            "bad answer",
            Some(App::start(|_| AppResponse::json(200, json!({"user": 5})))),
        ),
        ("refused connection", None),
    ] {
        let url = app.as_ref().map_or_else(dead_url, |a| a.url("/c"));
        let hub = hub(&[("connect_hook", url)], |_| {});
        let (status, body) = upgrade_status(&hub, "", &[]);
        assert_eq!(status, 503, "{what}");
        assert_eq!(body["error"]["code"], "hook_unavailable", "{what}");
    }
}

#[test]
fn connect_expires_at_closes_with_4001() {
    let app = App::start(|_| {
        let at = std::time::SystemTime::now() + std::time::Duration::from_millis(300);
        let ts = wshub::protocol::Timestamp::from_system(at).to_string();
        AppResponse::json(200, json!({"user": "u", "expires_at": ts}))
    });
    let hub = hub(&[("connect_hook", app.url("/c"))], |_| {});
    smol::block_on(async {
        let mut c = hub.client("").await;
        assert_eq!(c.expect_close().await, Closed::Code(4001));
    });
}

#[test]
fn subscribe_hook_decides_each_room() {
    let app = App::start(|r| match r.body["room"].as_str() {
        Some("secret") => AppResponse::json(
            403,
            json!({"error": {"code": "not_a_member", "message": "members only"}}),
        ),
        Some("down") => AppResponse::json(502, json!({})),
        _ => AppResponse::json(200, json!({})),
    });
    let hub = hub(&[("subscribe_hook", app.url("/s"))], |_| {});
    smol::block_on(async {
        let mut c = hub.client("").await;
        let r = c
            .request(json!({"type": "subscribe", "rooms": ["open", "secret"]}))
            .await;
        assert_eq!(r["type"], "error");
        assert_eq!(r["payload"]["code"], "not_a_member");
        assert_eq!(r["payload"]["room"], "secret");
        let r = c
            .request(json!({"type": "subscribe", "rooms": ["down"]}))
            .await;
        assert_eq!(r["payload"]["code"], "hook_unavailable");
        assert_eq!(r["payload"]["room"], "down");
        let r = c.subscribe(&["open"]).await;
        assert_eq!(r["payload"]["rooms"], json!(["open"]));
        let info = hub.handle().connections().await.unwrap();
        assert_eq!(info[0].rooms, ["open"]);
        let rooms: Vec<String> = app
            .drain()
            .iter()
            .map(|r| r.body["room"].as_str().unwrap().to_string())
            .collect();
        assert!(rooms.contains(&"open".to_string()) && rooms.contains(&"secret".to_string()));
    });
    // ?rooms= asks too: 403 with the app's code.
    let (status, body) = upgrade_status(&hub, "?rooms=open,secret", &[]);
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (403, json!("not_a_member"))
    );
    let (status, _) = upgrade_status(&hub, "?rooms=open", &[]);
    assert_eq!(status, 101);
}

#[test]
fn publish_hook_may_refuse_or_replace_the_payload() {
    let app = App::start(|r| match r.body["event"].as_str() {
        Some("spam") => AppResponse::json(422, json!({"error": {"code": "spam", "message": "no"}})),
        _ => {
            let text = r.body["payload"]["text"]
                .as_str()
                .unwrap_or("")
                .replace("darn", "****");
            AppResponse::json(200, json!({"payload": {"text": text, "checked": true}}))
        }
    });
    let hub = hub(&[("publish_hook", app.url("/p"))], |_| {});
    smol::block_on(async {
        let mut a = hub.client("").await;
        let mut b = hub.client("").await;
        b.subscribe(&["chat"]).await;
        let r = a.publish("chat", "msg", json!({"text": "oh darn"})).await;
        assert_eq!(r["type"], "published", "{r}");
        let got = b.expect("msg").await;
        assert_eq!(got["payload"], json!({"text": "oh ****", "checked": true}));
        let asked = app.next().await;
        assert_eq!(asked.body["hook"], "publish");
        assert_eq!(asked.body["room"], "chat");
        assert_eq!(asked.body["payload"], json!({"text": "oh darn"}));
        let r = a.publish("chat", "spam", json!({})).await;
        assert_eq!(r["payload"]["code"], "spam");
        // HTTP publishes come from the app: not asked.
        hub.publish("chat", "notice", json!({})).await;
        b.expect("notice").await;
        assert!(app.drain().iter().all(|r| r.body["event"] != "notice"));
    });
}

#[test]
fn disconnect_hook_hears_every_kind_of_close() {
    let app = App::start(|_| AppResponse::json(200, json!({})));
    let hub = hub(&[("disconnect_hook", app.url("/d"))], |c| {
        c.max_message_bytes = 1024;
    });
    smol::block_on(async {
        // A normal close.
        let c = hub.client("").await;
        let id = c.id();
        c.close().await;
        let d = app.next().await.body;
        assert_eq!(
            (d["hook"].clone(), d["connection_id"].clone()),
            (json!("disconnect"), json!(id))
        );
        assert_eq!(
            (d["reason"].clone(), d["close_code"].clone()),
            (json!("normal"), json!(1000))
        );
        assert!(d["duration_s"].as_f64().is_some());
        assert_eq!(d["user"], Value::Null);

        // Too big.
        let mut c = hub.client("").await;
        c.send(json!({"type": "ping", "pad": "x".repeat(2000)}))
            .await;
        c.expect_close().await;
        assert_eq!(app.next().await.body["reason"], "too_big");

        // Admin.
        let c = hub.client("").await;
        let id = c.id();
        let r = hub
            .request("DELETE", &format!("/api/connections/{id}"), None)
            .await;
        assert_eq!(r.status, 204);
        let d = app.next().await.body;
        assert_eq!(
            (d["reason"].clone(), d["close_code"].clone()),
            (json!("admin"), json!(4003))
        );

        // The socket dropped without a close frame.
        let raw = wshub::testing::raw_upgrade(hub.handle().addr(), "");
        drop(raw);
        let d = app.next().await.body;
        assert_eq!(d["close_code"], Value::Null, "{d}");

        // An SSE stream has no close code, whatever ended it.
        let mut stream = hub.stream("").await;
        let r = hub
            .request("DELETE", &format!("/api/connections/{}", stream.id()), None)
            .await;
        assert_eq!(r.status, 204);
        stream.expect_end().await;
        let d = app.next().await.body;
        assert_eq!(
            (d["reason"].clone(), d["close_code"].clone()),
            (json!("admin"), Value::Null),
            "{d}"
        );
    });
}

#[test]
fn disconnect_hook_hears_the_shutdown() {
    let app = App::start(|_| AppResponse::json(200, json!({})));
    let url = app.url("/d");
    let hub = TestHub::with_config(move |c| c.set_str("disconnect_hook", &url).unwrap());
    smol::block_on(async {
        let _c = hub.client("").await;
        hub.handle().request_shutdown().await;
        let d = app.next().await.body;
        assert_eq!(
            (d["reason"].clone(), d["close_code"].clone()),
            (json!("shutdown"), json!(1001))
        );
    });
}

#[test]
fn hooks_do_not_hold_back_other_connections() {
    // An app that never answers in time: the other connections' pings,
    // publishes and heartbeats go on.
    let gate = hook_app::Gate::new();
    let hang = gate.clone();
    let app = App::start(move |_| {
        hang.wait();
        AppResponse::json(200, json!({}))
    });
    let url = app.url("/rpc");
    let hub = TestHub::with_config(move |c| {
        c.set_str("rpc_hook", &url).unwrap();
        c.heartbeat_interval = std::time::Duration::from_millis(100);
    });
    smol::block_on(async {
        let mut slow = hub.client("").await;
        for _ in 0..16 {
            slow.send(json!({"type": "rpc", "method": "m"})).await;
        }
        let mut other = hub.client("").await;
        other.subscribe(&["r"]).await;
        assert_eq!(other.request(json!({"type": "ping"})).await["type"], "pong");
        hub.publish("r", "e", json!({})).await;
        other.expect("e").await;
        let beat = loop {
            let m = other.recv_within(TIMEOUT).await.expect("a heartbeat");
            if m["type"] == "heartbeat" {
                break m;
            }
        };
        assert_eq!(beat["type"], "heartbeat");
        gate.open();
    });
    let _ = common::scrape;
}
