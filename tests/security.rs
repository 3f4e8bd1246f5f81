//! Who gets in (PROTOCOL.md sections 1 and 2): JWT refusals, room
//! permissions, personal delivery, token refresh and expiry (4001), the
//! Origin allowlist, and the admin and publisher routes with CORS; and the
//! section 11 rules on tokens (`crit`, dates past 9999) and on frames that
//! smuggle bytes after their message. Every refusal is shown beside an
//! honest client that keeps working.

use std::time::Duration;

use async_tungstenite::tungstenite::Message;
use serde_json::{Value, json};
use wshub::AllowedOrigins;
use wshub::auth::{MAX_NUMERIC_DATE, unix_now};
use wshub::testing::{Closed, TestClient, TestHub, TokenBuilder, http};

const SECRET: &str = "s3cret-for-tests";

fn jwt_hub() -> TestHub {
    TestHub::with_config(|c| c.jwt_secret = Some(SECRET.into()))
}

/// An authenticated client in room `honest` that must keep receiving.
async fn honest(hub: &TestHub) -> TestClient {
    let token = hub.token("honest").mint();
    hub.client_with_token(&token, "&rooms=honest").await
}

async fn still_receives(hub: &TestHub, c: &mut TestClient) {
    let n = hub.publish("honest", "tick", json!({})).await["seq"].clone();
    assert_eq!(c.expect("tick").await["seq"], n);
}

/// The refusal of an upgrade to `/ws{query}` with extra headers.
async fn refusal(hub: &TestHub, query: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut all = vec![
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Sec-WebSocket-Version", "13"),
    ];
    all.extend_from_slice(headers);
    let r = http(
        hub.handle().addr(),
        "GET",
        &format!("/ws{query}"),
        &all,
        None,
    )
    .await;
    assert_ne!(r.status, 101, "expected a refusal");
    (r.status, r.error_code())
}

fn forge(header: &str, claims: &str, secret: &str) -> String {
    use base64::Engine;
    use hmac::{Hmac, KeyInit, Mac};
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let input = format!("{}.{}", b64.encode(header), b64.encode(claims));
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(input.as_bytes());
    format!("{input}.{}", b64.encode(mac.finalize().into_bytes()))
}

#[test]
fn jwt_refusals_are_403_with_their_codes() {
    let hub = jwt_hub();
    smol::block_on(async {
        let mut ok = honest(&hub).await;
        let exp = wshub::auth::unix_now() as u64 + 600;
        let good = hub.token("alice").mint();
        let (head, rest) = good.split_once('.').unwrap();
        let sig = rest.split_once('.').unwrap().1;
        let tampered = {
            use base64::Engine;
            let claims = format!(r#"{{"sub":"alice","exp":{exp},"admin":true}}"#);
            let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims);
            format!("{head}.{b64}.{sig}")
        };
        let claims = format!(r#"{{"sub":"alice","exp":{exp}}}"#);
        let cases = [
            (String::new(), "unauthenticated"),
            (
                TokenBuilder::new("alice", "wrong-secret").mint(),
                "invalid_token",
            ),
            (
                forge(r#"{"alg":"none","typ":"JWT"}"#, &claims, SECRET),
                "invalid_token",
            ),
            (
                forge(r#"{"alg":"HS512","typ":"JWT"}"#, &claims, SECRET),
                "invalid_token",
            ),
            (
                format!(
                    "{}.",
                    forge(r#"{"alg":"none"}"#, &claims, SECRET)
                        .rsplit_once('.')
                        .unwrap()
                        .0
                ),
                "invalid_token",
            ),
            (tampered, "invalid_token"),
            (
                forge(r#"{"alg":"HS256"}"#, &format!(r#"{{"exp":{exp}}}"#), SECRET),
                "invalid_token",
            ),
            (
                forge(r#"{"alg":"HS256"}"#, r#"{"sub":"alice"}"#, SECRET),
                "invalid_token",
            ),
            (hub.token("alice").expires_in(-5.0).mint(), "token_expired"),
            ("garbage".into(), "invalid_token"),
        ];
        for (token, code) in cases {
            let query = if token.is_empty() {
                String::new()
            } else {
                format!("?token={token}")
            };
            assert_eq!(
                refusal(&hub, &query, &[]).await,
                (403, code.to_string()),
                "{token}"
            );
            let bearer = format!("Bearer {token}");
            if !token.is_empty() {
                assert_eq!(
                    refusal(&hub, "", &[("Authorization", &bearer)]).await,
                    (403, code.to_string()),
                    "bearer {token}"
                );
            }
            still_receives(&hub, &mut ok).await;
        }
        let m = hub.request("GET", "/metrics", None).await.text();
        assert!(
            m.contains("wshub_handshake_rejections_total{code=\"invalid_token\"} 16"),
            "{m}"
        );
    });
}

/// Tokens for `sub`, signed with the hub's secret, that section 11 (or a
/// not-yet-valid `nbf`) makes `invalid_token`, each with what is wrong.
fn section_11_tokens(hub: &TestHub, sub: &str) -> Vec<(&'static str, String)> {
    let t = || hub.token(sub).rooms(&["a", "b"]);
    vec![
        ("crit", t().header("crit", json!(["exp"])).mint()),
        ("empty crit", t().header("crit", json!([])).mint()),
        ("exp 1e300", t().claim("exp", json!(1e300)).mint()),
        (
            "exp after 9999",
            t().claim("exp", json!(MAX_NUMERIC_DATE + 1)).mint(),
        ),
        ("negative exp", t().claim("exp", json!(-1)).mint()),
        ("string exp", t().claim("exp", json!("tomorrow")).mint()),
        (
            "nbf after 9999",
            t().claim("nbf", json!(MAX_NUMERIC_DATE + 1)).mint(),
        ),
        (
            "nbf in an hour",
            t().claim("nbf", json!(unix_now() + 3600.0)).mint(),
        ),
    ]
}

#[test]
fn crit_headers_and_dates_past_9999_are_refused_at_the_handshake() {
    let hub = jwt_hub();
    smol::block_on(async {
        let mut ok = honest(&hub).await;
        for (what, token) in section_11_tokens(&hub, "mallory") {
            assert_eq!(
                refusal(&hub, &format!("?token={token}"), &[]).await,
                (403, "invalid_token".to_string()),
                "{what}"
            );
            let bearer = format!("Bearer {token}");
            assert_eq!(
                refusal(&hub, "", &[("Authorization", &bearer)]).await,
                (403, "invalid_token".to_string()),
                "bearer, {what}"
            );
            still_receives(&hub, &mut ok).await;
        }
        // The edges: the last second of 9999, and an `nbf` already past.
        let last = hub
            .token("pat")
            .claim("exp", json!(MAX_NUMERIC_DATE))
            .mint();
        let c = hub.client_with_token(&last, "").await;
        assert_eq!(c.welcome["payload"]["user"], "pat");
        let begun = hub
            .token("pat")
            .claim("nbf", json!(unix_now() - 5.0))
            .mint();
        assert_eq!(
            hub.client_with_token(&begun, "").await.welcome["payload"]["user"],
            "pat"
        );
        still_receives(&hub, &mut ok).await;
    });
}

#[test]
fn refresh_refuses_crit_headers_and_dates_past_9999_and_the_connection_stays_usable() {
    let hub = jwt_hub();
    smol::block_on(async {
        let mut ok = honest(&hub).await;
        let mut c = hub
            .client_with_token(&hub.token("quinn").rooms(&["a"]).mint(), "")
            .await;
        for (what, token) in section_11_tokens(&hub, "quinn") {
            let e = c.request(json!({"type": "refresh", "token": token})).await;
            assert_eq!(e["type"], "error", "{what}: {e}");
            assert_eq!(e["payload"]["code"], "invalid_token", "{what}: {e}");
            // The refused token's claims (rooms a and b) did not apply.
            assert_eq!(
                c.request(json!({"type": "subscribe", "rooms": ["b"]}))
                    .await["payload"]["code"],
                "forbidden",
                "{what}"
            );
            assert_eq!(c.request(json!({"type": "ping"})).await["type"], "pong");
            still_receives(&hub, &mut ok).await;
        }
        // A token good to the last second of 9999 refreshes, and says so in
        // a timestamp with a four-digit year.
        let last = hub
            .token("quinn")
            .claim("exp", json!(MAX_NUMERIC_DATE))
            .mint();
        let r = c.request(json!({"type": "refresh", "token": last})).await;
        assert_eq!(r["type"], "refreshed", "{r}");
        assert_eq!(r["payload"]["expires_at"], "9999-12-31T23:59:59.000Z");
        assert_eq!(c.request(json!({"type": "ping"})).await["type"], "pong");
    });
}

#[test]
fn a_frame_with_bytes_after_its_message_is_invalid_json_and_nothing_is_smuggled() {
    let hub = TestHub::start();
    smol::block_on(async {
        let mut ok = hub.client("?rooms=honest").await;
        let smuggled =
            json!({"type": "publish", "room": "honest", "event": "smuggled", "payload": {}});
        let mut m = TestClient::connect_with(
            &hub.ws_url(""),
            &[("Sec-WebSocket-Protocol", "wshub.msgpack")],
        )
        .await
        .unwrap();
        let ping = rmp_serde::to_vec_named(&json!({"type": "ping"})).unwrap();
        let publish = rmp_serde::to_vec_named(&smuggled).unwrap();
        for (what, frame) in [
            ("a second map", [ping.clone(), publish].concat()),
            ("a stray byte", [ping.clone(), vec![0xc0]].concat()),
        ] {
            m.send_raw(Message::binary(frame)).await;
            let e = m.expect("error").await;
            assert_eq!(e["payload"]["code"], "invalid_json", "{what}: {e}");
            let message = e["payload"]["message"].as_str().unwrap_or_default();
            assert!(message.contains("nothing after it"), "{what}: {message}");
            assert_eq!(m.request(json!({"type": "ping"})).await["type"], "pong");
        }

        // JSON text frames: serde_json already refuses text after the object.
        let mut j = hub.client("").await;
        j.send_raw(Message::text(format!(r#"{{"type":"ping"}}{smuggled}"#)))
            .await;
        assert_eq!(j.expect("error").await["payload"]["code"], "invalid_json");
        assert_eq!(j.request(json!({"type": "ping"})).await["type"], "pong");

        // Neither smuggled publish reached the room.
        ok.expect_silence(Duration::from_millis(200)).await;
        still_receives(&hub, &mut ok).await;
    });
}

#[test]
fn a_bearer_header_authenticates_and_the_welcome_names_the_user() {
    let hub = jwt_hub();
    smol::block_on(async {
        let token = hub.token("bob").mint();
        let auth = format!("Bearer {token}");
        let c = TestClient::connect_with(&hub.ws_url(""), &[("Authorization", &auth)])
            .await
            .unwrap();
        assert_eq!(c.welcome["payload"]["user"], "bob");
    });
}

#[test]
fn room_permissions_follow_the_rooms_and_publish_claims() {
    let hub = jwt_hub();
    smol::block_on(async {
        let mut ok = honest(&hub).await;
        let token = hub
            .token("carol")
            .rooms(&["project:*", "lobby"])
            .publish(&["project:*"])
            .mint();
        assert_eq!(
            refusal(&hub, &format!("?token={token}&rooms=lobby,secret"), &[]).await,
            (403, "forbidden".into())
        );
        still_receives(&hub, &mut ok).await;

        let mut c = hub
            .client_with_token(&token, "&rooms=lobby,project:1")
            .await;
        let e = c
            .request(json!({"type": "subscribe", "rooms": ["project:2", "admin"]}))
            .await;
        assert_eq!(e["payload"]["code"], "forbidden");
        assert_eq!(e["payload"]["room"], "admin");
        assert_eq!(
            c.subscribe(&["project:2"]).await["payload"]["rooms"],
            json!(["project:2"])
        );

        let e = c.publish("lobby", "said", json!({})).await;
        assert_eq!(
            (e["type"].as_str(), e["payload"]["code"].as_str()),
            (Some("error"), Some("forbidden"))
        );
        assert_eq!(
            c.publish("project:1", "said", json!({})).await["type"],
            "published"
        );

        let e = c
            .request(json!({"type": "presence", "room": "admin"}))
            .await;
        assert_eq!(e["payload"]["code"], "forbidden");
        let p = c
            .request(json!({"type": "presence", "room": "lobby"}))
            .await;
        assert_eq!(p["payload"]["members"][0]["user"], "carol");
        still_receives(&hub, &mut ok).await;

        // Without a `publish` claim nobody may publish; admins may do anything.
        let mut reader = hub.client_with_token(&hub.token("dave").mint(), "").await;
        assert_eq!(
            reader.publish("any", "t", json!({})).await["payload"]["code"],
            "forbidden"
        );
        let mut admin = hub
            .client_with_token(&hub.token("root").rooms(&[]).admin().mint(), "&rooms=x")
            .await;
        assert_eq!(
            admin.publish("x", "t", json!({})).await["type"],
            "published"
        );
    });
}

#[test]
fn personal_events_reach_all_of_one_users_connections_and_nobody_else() {
    let hub = jwt_hub();
    smol::block_on(async {
        let mut erin_a = hub.client_with_token(&hub.token("erin").mint(), "").await;
        let mut erin_b = hub
            .client_with_token(&hub.token("erin").mint(), "&rooms=r")
            .await;
        let mut frank = hub
            .client_with_token(&hub.token("frank").mint(), "&rooms=r")
            .await;
        let r = hub
            .post_event(json!({"user": "erin", "type": "dm", "payload": {"hi": 1}}))
            .await;
        assert_eq!(r.json()["recipients"], 2);
        for c in [&mut erin_a, &mut erin_b] {
            let e = c.expect("dm").await;
            assert_eq!(e["room"], Value::Null);
            assert!(e.get("seq").is_none());
        }
        frank.expect_nothing_before_pong().await;
        let none = hub
            .post_event(json!({"user": "nobody", "type": "dm", "payload": {}}))
            .await;
        assert_eq!(none.json()["recipients"], 0);
    });
}

#[test]
fn refresh_extends_and_changes_claims_but_not_the_user() {
    let hub = jwt_hub();
    smol::block_on(async {
        let mut c = hub
            .client_with_token(&hub.token("gina").rooms(&["a"]).expires_in(60.0).mint(), "")
            .await;
        assert_eq!(
            c.request(json!({"type": "subscribe", "rooms": ["b"]}))
                .await["payload"]["code"],
            "forbidden"
        );
        let fresh = hub.token("gina").rooms(&["a", "b"]).mint();
        let r = c.request(json!({"type": "refresh", "token": fresh})).await;
        assert_eq!(r["type"], "refreshed");
        assert!(r["payload"]["expires_at"].as_str().unwrap().ends_with('Z'));
        assert_eq!(
            c.subscribe(&["b"]).await["type"],
            "subscribed",
            "new claims apply"
        );

        let other = hub.token("mallory").mint();
        let e = c.request(json!({"type": "refresh", "token": other})).await;
        assert_eq!(e["payload"]["code"], "forbidden");
        let e = c.request(json!({"type": "refresh", "token": "nope"})).await;
        assert_eq!(e["payload"]["code"], "invalid_token");
        let e = c
            .request(json!({"type": "refresh", "token": hub.token("gina").expires_in(-1.0).mint()}))
            .await;
        assert_eq!(e["payload"]["code"], "token_expired");
        assert_eq!(c.request(json!({"type": "ping"})).await["type"], "pong");
    });
}

#[test]
fn an_expiring_token_closes_with_4001_unless_refreshed() {
    let hub = jwt_hub();
    smol::block_on(async {
        let mut ok = honest(&hub).await;
        let mut expiring = hub
            .client_with_token(&hub.token("h").expires_in(1.5).mint(), "")
            .await;
        let mut refreshed = hub
            .client_with_token(&hub.token("i").expires_in(1.5).mint(), "")
            .await;
        let r = refreshed
            .request(json!({"type": "refresh", "token": hub.token("i").mint()}))
            .await;
        assert_eq!(r["type"], "refreshed");
        assert_eq!(expiring.expect_close().await, Closed::Code(4001));
        // The refreshed one lives on past the first expiry.
        refreshed.expect_silence(Duration::from_millis(800)).await;
        assert_eq!(
            refreshed.request(json!({"type": "ping"})).await["type"],
            "pong"
        );
        still_receives(&hub, &mut ok).await;
        let m = hub.request("GET", "/metrics", None).await.text();
        assert!(
            m.contains("wshub_disconnects_total{reason=\"token_expired\"} 1"),
            "{m}"
        );
    });
}

#[test]
fn default_origins_allow_loopback_and_same_host_only() {
    let hub = TestHub::start();
    smol::block_on(async {
        let mut ok = hub.client("?rooms=honest").await;
        let host = hub.handle().addr().to_string();
        let same_host = format!("http://{host}");
        for origin in [
            "http://localhost:3000",
            "https://127.0.0.1",
            "http://[::1]:8080",
            same_host.as_str(),
        ] {
            let c = TestClient::connect_with(&hub.ws_url(""), &[("Origin", origin)]).await;
            assert!(c.is_ok(), "{origin} should be allowed");
        }
        for origin in [
            "http://evil.example",
            "http://localhost.evil.example",
            "null",
        ] {
            assert_eq!(
                refusal(&hub, "", &[("Origin", origin)]).await,
                (403, "origin_not_allowed".into()),
                "{origin}"
            );
            still_receives(&hub, &mut ok).await;
        }
    });
}

#[test]
fn allowed_origins_replaces_the_list_and_star_opens_it() {
    let listed = TestHub::with_config(|c| {
        c.allowed_origins = AllowedOrigins::List(vec!["https://app.example".into()]);
    });
    smol::block_on(async {
        assert!(
            TestClient::connect_with(&listed.ws_url(""), &[("Origin", "https://app.example")])
                .await
                .is_ok()
        );
        assert_eq!(
            refusal(&listed, "", &[("Origin", "http://localhost:3000")]).await,
            (403, "origin_not_allowed".into())
        );
        assert!(
            TestClient::connect_with(&listed.ws_url(""), &[])
                .await
                .is_ok(),
            "no Origin passes"
        );
    });
    let open = TestHub::with_config(|c| c.allowed_origins = AllowedOrigins::Any);
    smol::block_on(async {
        assert!(
            TestClient::connect_with(&open.ws_url(""), &[("Origin", "https://anything.example")])
                .await
                .is_ok()
        );
    });
}

#[test]
fn admin_routes_need_the_admin_key_or_an_admin_jwt() {
    let hub = TestHub::with_config(|c| {
        c.admin_key = Some("k3y".into());
        c.jwt_secret = Some(SECRET.into());
    });
    let addr = hub.handle().addr();
    let admin_jwt = format!("Bearer {}", TokenBuilder::new("ops", SECRET).admin().mint());
    let user_jwt = format!("Bearer {}", TokenBuilder::new("joe", SECRET).mint());
    smol::block_on(async {
        for (method, path, body) in [
            ("GET", "/api/connections", None),
            ("GET", "/api/rooms", None),
            ("GET", "/metrics", None),
            ("POST", "/api/events", Some(r#"{"type":"t","payload":{}}"#)),
            ("PUT", "/api/health/db", Some(r#"{"status":"ok"}"#)),
        ] {
            let r = http(addr, method, path, &[], body).await;
            assert_eq!(
                (r.status, r.error_code().as_str()),
                (401, "unauthenticated"),
                "{path}"
            );
            for wrong in ["Bearer nope", user_jwt.as_str(), "Basic azN5"] {
                let r = http(addr, method, path, &[("Authorization", wrong)], body).await;
                let expected = if wrong.starts_with("Basic") { 401 } else { 403 };
                assert_eq!(r.status, expected, "{path} with {wrong}");
            }
            for right in ["Bearer k3y", admin_jwt.as_str()] {
                let r = http(addr, method, path, &[("Authorization", right)], body).await;
                assert!(r.status < 300, "{path} with {right}: {}", r.text());
            }
        }
        assert_eq!(
            http(addr, "GET", "/health", &[], None).await.status,
            200,
            "health is for anyone"
        );
    });
}

#[test]
fn cors_answers_allowed_origins_only() {
    let hub = TestHub::start();
    let addr = hub.handle().addr();
    smol::block_on(async {
        let pre = [
            ("Origin", "http://localhost:5173"),
            ("Access-Control-Request-Method", "POST"),
            ("Access-Control-Request-Headers", "content-type"),
        ];
        // Every path has a preflight, the upgrade's and the stream's too.
        for path in ["/ws", "/sse", "/metrics"] {
            let r = http(addr, "OPTIONS", path, &pre, None).await;
            assert_eq!(r.status, 204, "{path}");
            assert_eq!(
                r.header("access-control-allow-origin"),
                Some("http://localhost:5173"),
                "{path}"
            );
        }
        let r = http(addr, "OPTIONS", "/api/events", &pre, None).await;
        assert_eq!(r.status, 204);
        assert_eq!(
            r.header("access-control-allow-origin"),
            Some("http://localhost:5173")
        );
        assert!(
            r.header("access-control-allow-methods")
                .unwrap()
                .contains("POST")
        );
        assert!(
            r.header("access-control-allow-headers")
                .unwrap()
                .to_ascii_lowercase()
                .contains("content-type")
        );

        let r = http(
            addr,
            "OPTIONS",
            "/api/events",
            &[("Origin", "http://evil.example")],
            None,
        )
        .await;
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (403, "origin_not_allowed")
        );
        assert!(r.header("access-control-allow-origin").is_none());

        let r = http(
            addr,
            "GET",
            "/health",
            &[("Origin", "http://localhost:5173")],
            None,
        )
        .await;
        assert_eq!(
            r.header("access-control-allow-origin"),
            Some("http://localhost:5173")
        );
        assert!(
            r.header("access-control-expose-headers")
                .unwrap()
                .contains("X-Correlation-ID")
        );
        let r = http(
            addr,
            "GET",
            "/health",
            &[("Origin", "http://evil.example")],
            None,
        )
        .await;
        assert!(r.header("access-control-allow-origin").is_none());
    });
}
