//! An SSE stream is a connection (PROTOCOL.md section 12): admitted with
//! the handshake's refusals, listed in the registry as `sse`, counted by
//! the limits and metrics, and ended — with no close code to send — by a
//! full queue, an admin `DELETE`, an expired token (after an `error`), the
//! shutdown, or its client going away.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::json;
mod common;

use common::{connection_count, metric};
use wshub::testing::{TIMEOUT, TestHub};

const SECRET: &str = "sse-secret";

/// A request (query, headers) and the refusal it must get (status, code).
type Case<'a> = (String, Vec<(&'a str, &'a str)>, u16, &'a str);

/// Polls the registry until it holds `n` connections; panics after [`TIMEOUT`].
async fn wait_for(hub: &TestHub, n: usize) {
    let deadline = Instant::now() + TIMEOUT;
    while connection_count(hub).await != n {
        assert!(Instant::now() < deadline, "the registry never reached {n}");
        smol::Timer::after(Duration::from_millis(10)).await;
    }
}

async fn refused(hub: &TestHub, query: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let r = hub.stream_with(query, headers).await.expect_err("refused");
    assert_eq!(
        r.header("content-type"),
        Some("application/json"),
        "{}",
        r.text()
    );
    (r.status, r.error_code())
}

#[test]
fn refusals_are_the_handshakes_with_the_same_statuses_and_bodies() {
    let hub = TestHub::with_config(|c| {
        c.jwt_secret = Some(SECRET.into());
        c.max_rooms_per_connection = 2;
    });
    smol::block_on(async {
        let token = hub.token("alice").rooms(&["team:*"]).mint();
        let bearer = format!("Bearer {token}");
        let ok = format!("?rooms=team:a&token={token}");
        let expired = hub.token("alice").expires_in(-10.0).mint();
        let cases: Vec<Case<'_>> = vec![
            ("?rooms=team:a".into(), vec![], 403, "unauthenticated"),
            (
                "?rooms=team:a&token=not.a.jwt".into(),
                vec![],
                403,
                "invalid_token",
            ),
            (
                format!("?rooms=team:a&token={expired}"),
                vec![],
                403,
                "token_expired",
            ),
            (
                format!("?rooms=lobby&token={token}"),
                vec![],
                403,
                "forbidden",
            ),
            (
                format!("?rooms=a%20b&token={token}"),
                vec![],
                400,
                "bad_request",
            ),
            (
                format!("?rooms=team:a,team:b,team:c&token={token}"),
                vec![],
                400,
                "too_many_rooms",
            ),
            (
                ok.clone(),
                vec![("Origin", "http://evil.example")],
                403,
                "origin_not_allowed",
            ),
            (
                ok.clone(),
                vec![("Host", "rebound.example")],
                403,
                "host_not_allowed",
            ),
        ];
        for (query, headers, status, code) in cases {
            let got = refused(&hub, &query, &headers).await;
            assert_eq!(got, (status, code.to_string()), "{query} {headers:?}");
        }
        // The token by header works as well as by query.
        let mut stream = hub
            .stream_with("?rooms=team:a", &[("Authorization", &bearer)])
            .await
            .expect("admitted");
        assert_eq!(stream.welcome["payload"]["user"], "alice");
        hub.publish("team:a", "hello", json!({})).await;
        stream.expect("hello").await;
        let m = hub.request("GET", "/metrics", None).await.text();
        assert_eq!(
            metric(
                &m,
                "wshub_handshake_rejections_total{code=\"too_many_rooms\"}"
            ),
            1.0
        );
        assert_eq!(
            metric(
                &m,
                "wshub_handshake_rejections_total{code=\"origin_not_allowed\"}"
            ),
            1.0
        );
    });
}

#[test]
fn a_stream_counts_toward_the_connection_limits() {
    let hub = TestHub::with_config(|c| c.max_connections_per_ip = 2);
    smol::block_on(async {
        let _ws = hub.client("").await;
        let _stream = hub.stream("?rooms=r").await;
        let (status, code) = refused(&hub, "?rooms=r", &[]).await;
        assert_eq!((status, code.as_str()), (429, "too_many_connections"));
    });
    let hub = TestHub::with_config(|c| c.max_connections = 1);
    smol::block_on(async {
        let _stream = hub.stream("").await;
        let r = hub.stream_with("", &[]).await.expect_err("full");
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (503, "too_many_connections")
        );
        assert_eq!(r.header("retry-after"), Some("1"));
    });
}

#[test]
fn other_methods_are_405_and_allowed_origins_get_cors_headers() {
    let hub = TestHub::start();
    smol::block_on(async {
        let r = hub.request("POST", "/sse?rooms=r", Some(&json!({}))).await;
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (405, "method_not_allowed")
        );
        assert_eq!(r.header("allow"), Some("GET"));
        let origin = "http://localhost:5173";
        let stream = hub
            .stream_with("?rooms=r", &[("Origin", origin)])
            .await
            .expect("an allowed origin");
        assert_eq!(
            stream.head().header("access-control-allow-origin"),
            Some(origin)
        );
        let r = hub.request("OPTIONS", "/sse", None).await;
        assert_eq!(
            r.status, 403,
            "a preflight without Origin, as on every route"
        );
    });
}

#[test]
fn the_registry_lists_a_stream_as_sse_with_its_rooms_and_counters() {
    let hub = TestHub::start();
    smol::block_on(async {
        let mut stream = hub
            .stream_with("?rooms=b,a", &[("User-Agent", "sse-test/1")])
            .await
            .expect("admitted");
        hub.publish("a", "one", json!({})).await;
        stream.expect("one").await;
        let id = stream.id();
        let info = hub
            .request("GET", &format!("/api/connections/{id}"), None)
            .await
            .json();
        assert_eq!(info["protocol"], "sse");
        assert_eq!(info["rooms"], json!(["a", "b"]));
        assert_eq!(info["user_agent"], "sse-test/1");
        assert_eq!(info["messages_in"], 0);
        assert_eq!(info["messages_out"], 2, "the welcome and the event");
        let room = hub.request("GET", "/api/rooms/a", None).await.json();
        assert_eq!(room["members"][0]["connection_id"], id);
        let m = hub.request("GET", "/metrics", None).await.text();
        assert_eq!(metric(&m, "wshub_connections_active"), 1.0);
        assert_eq!(metric(&m, "wshub_connections_accepted_total"), 1.0);
        let health = hub.request("GET", "/health", None).await.json();
        assert_eq!(health["connections"], 1);
    });
}

#[test]
fn a_client_that_goes_away_is_removed_at_once() {
    let hub = TestHub::start();
    smol::block_on(async {
        let stream = hub.stream("?rooms=r").await;
        wait_for(&hub, 1).await;
        drop(stream);
        wait_for(&hub, 0).await;
        let m = hub.request("GET", "/metrics", None).await.text();
        assert_eq!(
            metric(&m, "wshub_disconnects_total{reason=\"normal\"}"),
            1.0
        );
        let rooms = hub.request("GET", "/api/rooms", None).await.json();
        assert_eq!(rooms["rooms"], json!([]));
    });
}

#[test]
fn an_admin_delete_ends_the_stream() {
    let hub = TestHub::start();
    smol::block_on(async {
        let mut stream = hub.stream("?rooms=r").await;
        let r = hub
            .request("DELETE", &format!("/api/connections/{}", stream.id()), None)
            .await;
        assert_eq!(r.status, 204);
        assert!(stream.expect_end().await.is_empty());
        wait_for(&hub, 0).await;
        let m = hub.request("GET", "/metrics", None).await.text();
        assert_eq!(metric(&m, "wshub_disconnects_total{reason=\"admin\"}"), 1.0);
    });
}

#[test]
fn an_expired_token_ends_the_stream_after_a_token_expired_error() {
    let hub = TestHub::with_config(|c| c.jwt_secret = Some(SECRET.into()));
    smol::block_on(async {
        let token = hub.token("bob").expires_in(1.0).mint();
        let mut stream = hub.stream(&format!("?rooms=r&token={token}")).await;
        let started = Instant::now();
        let before_end = stream.expect_end().await;
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(before_end.len(), 1, "{before_end:?}");
        let error = &before_end[0];
        assert_eq!(error["type"], "error");
        assert_eq!(error["payload"]["code"], "token_expired");
        wait_for(&hub, 0).await;
        let m = hub.request("GET", "/metrics", None).await.text();
        assert_eq!(
            metric(&m, "wshub_disconnects_total{reason=\"token_expired\"}"),
            1.0
        );
    });
}

#[test]
fn a_stream_whose_reader_stalls_is_ended_and_others_keep_receiving() {
    let hub = TestHub::with_config(|c| c.send_queue = 16);
    smol::block_on(async {
        let mut fast = hub.stream("?rooms=flood").await;
        // A client that asks for the stream and then reads nothing.
        let mut stuck = TcpStream::connect(hub.handle().addr()).unwrap();
        write!(
            stuck,
            "GET /sse?rooms=flood HTTP/1.1\r\nHost: {}\r\n\r\n",
            hub.handle().addr()
        )
        .unwrap();
        wait_for(&hub, 2).await;
        let payload = json!({"blob": "x".repeat(50_000)});
        let mut ended = false;
        for n in 0..400u64 {
            let r = hub.publish("flood", "big", payload.clone()).await;
            assert_eq!(
                r["seq"],
                n + 1,
                "publishers never wait for the stuck stream"
            );
            assert_eq!(fast.expect("big").await["seq"], n + 1);
            if r["recipients"] == 1 {
                ended = true;
                break;
            }
        }
        assert!(ended, "the stuck stream was never ended");
        wait_for(&hub, 1).await;
        let m = hub.request("GET", "/metrics", None).await.text();
        assert_eq!(
            metric(&m, "wshub_disconnects_total{reason=\"slow_consumer\"}"),
            1.0
        );
        drop(stuck);
    });
}

#[test]
fn a_stream_write_that_makes_no_progress_for_the_handshake_timeout_ends_it() {
    // A queue too long to fill: only the writer's stall timeout can end it.
    let hub = TestHub::with_config(|c| {
        c.send_queue = 1_000_000;
        c.handshake_timeout = Duration::from_millis(300);
    });
    smol::block_on(async {
        let mut stuck = TcpStream::connect(hub.handle().addr()).unwrap();
        write!(
            stuck,
            "GET /sse?rooms=flood HTTP/1.1\r\nHost: {}\r\n\r\n",
            hub.handle().addr()
        )
        .unwrap();
        wait_for(&hub, 1).await;
        let payload = json!({"blob": "x".repeat(60_000)});
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let r = hub.publish("flood", "big", payload.clone()).await;
            if r["recipients"] == 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the stalled stream was never ended"
            );
        }
        wait_for(&hub, 0).await;
        let m = hub.request("GET", "/metrics", None).await.text();
        assert_eq!(
            metric(&m, "wshub_disconnects_total{reason=\"slow_consumer\"}"),
            1.0
        );
        drop(stuck);
    });
}

#[test]
fn shutdown_ends_every_stream() {
    let hub = TestHub::start();
    smol::block_on(async {
        let mut a = hub.stream("?rooms=r").await;
        let mut b = hub.stream("").await;
        hub.handle().request_shutdown().await;
        assert!(a.expect_end().await.is_empty());
        assert!(b.expect_end().await.is_empty());
    });
}
