//! The HTTP side of the one port (PROTOCOL.md section 1): routes, JSON
//! errors, bodies, correlation IDs, keep-alive and the request-head bounds.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::{Value, json};
use wshub::testing::{HttpResponse, TestHub, http, parse_response};

fn post(hub: &TestHub, path: &str, headers: &[(&str, &str)], body: &str) -> HttpResponse {
    smol::block_on(http(hub.handle().addr(), "POST", path, headers, Some(body)))
}

fn get(hub: &TestHub, path: &str) -> HttpResponse {
    smol::block_on(http(hub.handle().addr(), "GET", path, &[], None))
}

/// Writes raw bytes on a fresh socket and reads everything until the hub closes.
fn raw(hub: &TestHub, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(hub.handle().addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

#[test]
fn health_reports_status_components_connections_uptime_and_version() {
    let hub = TestHub::start();
    let r = get(&hub, "/health");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let body = r.json();
    assert_eq!(body["status"], "ok");
    assert_eq!(body["components"], json!({}));
    assert_eq!(body["connections"], 0);
    assert!(body["uptime_s"].is_u64());
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
}

#[test]
fn health_changes_are_recorded_and_down_is_503() {
    let hub = TestHub::start();
    let r = smol::block_on(hub.request(
        "PUT",
        "/api/health/db",
        Some(&json!({"status": "degraded", "detail": "slow"})),
    ));
    assert_eq!(r.status, 200, "{}", r.text());
    let state = r.json();
    assert_eq!(state["component"], "db");
    assert_eq!(state["status"], "degraded");
    assert_eq!(state["detail"], "slow");
    assert!(state["since"].as_str().unwrap().ends_with('Z'));
    let body = get(&hub, "/health").json();
    assert_eq!(body["status"], "degraded");
    assert_eq!(body["components"]["db"]["detail"], "slow");

    smol::block_on(hub.request(
        "PUT",
        "/api/health/scanner",
        Some(&json!({"status": "down"})),
    ));
    let r = get(&hub, "/health");
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["status"], "down");
}

#[test]
fn bad_health_bodies_are_refused_with_the_documented_codes() {
    let hub = TestHub::start();
    let ct = [("Content-Type", "application/json")];
    let r = smol::block_on(http(
        hub.handle().addr(),
        "PUT",
        "/api/health/db",
        &ct,
        Some("{"),
    ));
    assert_eq!((r.status, r.error_code().as_str()), (400, "bad_request"));
    for body in [
        r#"{"status":"fine"}"#,
        r#"{}"#,
        r#"{"status":"ok","detail":5}"#,
        "[1]",
    ] {
        let r = smol::block_on(http(
            hub.handle().addr(),
            "PUT",
            "/api/health/db",
            &ct,
            Some(body),
        ));
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (422, "invalid_message"),
            "{body}"
        );
    }
    let r = smol::block_on(http(
        hub.handle().addr(),
        "PUT",
        "/api/health/bad%20name",
        &ct,
        Some(r#"{"status":"ok"}"#),
    ));
    assert_eq!(r.status, 400);
    // Nothing was recorded by the refused requests.
    assert_eq!(get(&hub, "/health").json()["components"], json!({}));
}

#[test]
fn publish_answers_202_with_id_seq_recipients_and_correlation_id() {
    let hub = TestHub::start();
    let r = post(
        &hub,
        "/api/events",
        &[
            ("Content-Type", "application/json; charset=utf-8"),
            ("X-Correlation-ID", "trace-42"),
        ],
        r#"{"room":"scans","type":"scan_started","payload":{"path":"/tmp"}}"#,
    );
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.header("x-correlation-id"), Some("trace-42"));
    let body = r.json();
    assert!(uuid::Uuid::parse_str(body["id"].as_str().unwrap()).is_ok());
    assert_eq!(body["seq"], 1);
    assert_eq!(body["recipients"], 0);
    assert_eq!(body["correlation_id"], "trace-42");

    let r = post(&hub, "/api/events", &[], r#"{"type":"alert","payload":{}}"#);
    assert_eq!(r.status, 202);
    assert_eq!(r.json()["seq"], Value::Null, "no seq without a room");
}

#[test]
fn publish_refusals_have_their_statuses_and_codes() {
    let hub = TestHub::start();
    let cases: [(&str, u16, &str); 10] = [
        ("", 400, "bad_request"),
        ("{nope", 400, "bad_request"),
        ("[]", 422, "invalid_message"),
        (r#"{"payload":{}}"#, 422, "invalid_message"),
        (r#"{"type":"t"}"#, 422, "invalid_message"),
        (r#"{"type":"t","payload":[1]}"#, 422, "invalid_message"),
        (
            r#"{"type":"t","payload":{},"room":"r","user":"u"}"#,
            422,
            "invalid_message",
        ),
        (
            r#"{"type":"t","payload":{},"room":"no spaces"}"#,
            422,
            "invalid_message",
        ),
        (r#"{"type":"welcome","payload":{}}"#, 422, "reserved_type"),
        (
            r#"{"type":"health_status","payload":{}}"#,
            422,
            "reserved_type",
        ),
    ];
    for (body, status, code) in cases {
        let r = post(
            &hub,
            "/api/events",
            &[("Content-Type", "application/json")],
            body,
        );
        assert_eq!(
            (r.status, r.error_code()),
            (status, code.to_string()),
            "{body}"
        );
        assert!(
            r.json()["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
        assert!(r.header("x-correlation-id").is_some());
    }
    // The hub is still fine and nothing was published.
    let r = post(
        &hub,
        "/api/events",
        &[],
        r#"{"room":"r","type":"t","payload":{}}"#,
    );
    assert_eq!(r.json()["seq"], 1);
}

#[test]
fn non_json_content_types_are_415_so_forms_cannot_publish() {
    let hub = TestHub::start();
    for ct in [
        "application/x-www-form-urlencoded",
        "text/plain",
        "multipart/form-data; boundary=x",
    ] {
        let r = post(
            &hub,
            "/api/events",
            &[("Content-Type", ct)],
            r#"{"type":"t","payload":{}}"#,
        );
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (415, "unsupported_media_type"),
            "{ct}"
        );
    }
}

#[test]
fn chunked_bodies_are_411_and_oversize_bodies_413() {
    let hub = TestHub::with_config(|c| c.max_message_bytes = 1024);
    let out = raw(
        &hub,
        b"POST /api/events HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    );
    let r = parse_response(&out).unwrap();
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (411, "length_required")
    );

    let big = format!(r#"{{"type":"t","payload":{{"x":"{}"}}}}"#, "a".repeat(2000));
    let r = post(&hub, "/api/events", &[], &big);
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (413, "payload_too_large")
    );
}

#[test]
fn unknown_routes_are_404_and_wrong_methods_405() {
    let hub = TestHub::start();
    let r = get(&hub, "/nope");
    assert_eq!((r.status, r.error_code().as_str()), (404, "not_found"));
    let r = get(&hub, "/api/events");
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (405, "method_not_allowed")
    );
    assert_eq!(r.header("allow"), Some("POST"));
    let r = post(&hub, "/health", &[], "{}");
    assert_eq!(r.status, 405);
    let r = smol::block_on(http(
        hub.handle().addr(),
        "DELETE",
        "/api/connections/not-a-uuid",
        &[],
        None,
    ));
    assert_eq!((r.status, r.error_code().as_str()), (404, "not_found"));
}

#[test]
fn correlation_ids_are_echoed_or_replaced_by_a_uuid() {
    let hub = TestHub::start();
    let addr = hub.handle().addr();
    let r = smol::block_on(http(
        addr,
        "GET",
        "/nope",
        &[("X-Correlation-ID", "abc-1")],
        None,
    ));
    assert_eq!(
        r.header("x-correlation-id"),
        Some("abc-1"),
        "errors carry it too"
    );
    let long = "x".repeat(129);
    for bad in ["has space", long.as_str()] {
        let r = smol::block_on(http(
            addr,
            "GET",
            "/health",
            &[("X-Correlation-ID", bad)],
            None,
        ));
        let id = r.header("x-correlation-id").unwrap();
        assert!(
            uuid::Uuid::parse_str(id).is_ok(),
            "{bad:?} replaced by {id}"
        );
    }
    let r = get(&hub, "/health");
    assert!(uuid::Uuid::parse_str(r.header("x-correlation-id").unwrap()).is_ok());
}

#[test]
fn keep_alive_serves_repeated_publishes_on_one_connection() {
    let hub = TestHub::start();
    let mut s = TcpStream::connect(hub.handle().addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let body = r#"{"room":"k","type":"t","payload":{}}"#;
    let request = format!(
        "POST /api/events HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    for seq in 1..=5 {
        s.write_all(request.as_bytes()).unwrap();
        let r = read_one_response(&mut s);
        assert_eq!(r.status, 202);
        assert_eq!(r.header("connection"), Some("keep-alive"));
        assert_eq!(r.json()["seq"], seq);
    }
    // Two requests in one write (pipelined) are answered in order.
    s.write_all(format!("{request}{request}").as_bytes())
        .unwrap();
    assert_eq!(read_one_response(&mut s).json()["seq"], 6);
    assert_eq!(read_one_response(&mut s).json()["seq"], 7);
}

fn read_one_response(s: &mut TcpStream) -> HttpResponse {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1, "connection closed mid-head");
        buf.push(byte[0]);
    }
    let head = parse_response(&buf).unwrap();
    let len: usize = head.header("content-length").unwrap().parse().unwrap();
    let mut body = vec![0; len];
    s.read_exact(&mut body).unwrap();
    buf.extend_from_slice(&body);
    parse_response(&buf).unwrap()
}

#[test]
fn expect_100_continue_gets_the_go_ahead() {
    let hub = TestHub::start();
    let mut s = TcpStream::connect(hub.handle().addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let body = r#"{"room":"c","type":"t","payload":{}}"#;
    write!(
        s,
        "POST /api/events HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    let mut interim = [0u8; 25];
    s.read_exact(&mut interim).unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(body.as_bytes()).unwrap();
    let r = read_one_response(&mut s);
    assert_eq!(r.status, 202);
}

#[test]
fn idempotency_keys_publish_once() {
    let hub = TestHub::start();
    smol::block_on(async {
        let mut tab = hub.client("?rooms=r").await;
        let body = json!({"room": "r", "type": "t", "payload": {}, "idempotency_key": "once"});
        let first = hub.post_event(body.clone()).await.json();
        let second = hub.post_event(body).await.json();
        assert_eq!(first, second);
        assert_eq!(tab.expect("t").await["id"], first["id"]);
        tab.expect_nothing_before_pong().await;
        assert_eq!(hub.publish("r", "t", json!({})).await["seq"], 2);
    });
}

#[test]
fn malformed_request_heads_get_400_and_the_hub_keeps_serving() {
    let hub = TestHub::start();
    let out = raw(&hub, b"\x16\x03\x01 this is not http\r\n\r\n");
    let r = parse_response(&out).expect("an HTTP answer");
    assert_eq!((r.status, r.error_code().as_str()), (400, "bad_request"));
    assert_eq!(get(&hub, "/health").status, 200);
}

#[test]
fn oversize_request_heads_are_dropped_without_an_answer() {
    let hub = TestHub::start();
    let mut head = b"GET /health HTTP/1.1\r\n".to_vec();
    let filler = format!("X-Filler: {}\r\n", "a".repeat(2000));
    while head.len() < 17 * 1024 {
        head.extend_from_slice(filler.as_bytes());
    }
    head.extend_from_slice(b"\r\n");
    let out = raw(&hub, &head);
    assert!(out.is_empty(), "got {:?}", String::from_utf8_lossy(&out));
    assert_eq!(get(&hub, "/health").status, 200);
}

#[test]
fn too_many_header_lines_are_400() {
    let hub = TestHub::start();
    let mut head = b"GET /health HTTP/1.1\r\n".to_vec();
    for i in 0..200 {
        head.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
    }
    head.extend_from_slice(b"\r\n");
    let r = parse_response(&raw(&hub, &head)).expect("an HTTP answer");
    assert_eq!((r.status, r.error_code().as_str()), (400, "bad_request"));
}

#[test]
fn slow_request_heads_are_dropped_after_handshake_timeout() {
    let hub = TestHub::with_config(|c| c.handshake_timeout = Duration::from_millis(300));
    let mut slow = TcpStream::connect(hub.handle().addr()).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n")
        .unwrap();
    // Meanwhile, others are served.
    assert_eq!(get(&hub, "/health").status, 200);
    let mut out = Vec::new();
    let n = slow.read_to_end(&mut out).unwrap_or(0);
    assert_eq!(n, 0, "closed without an answer");
}

#[test]
fn the_live_page_and_client_are_served() {
    let hub = TestHub::start();
    let page = get(&hub, "/");
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let js = get(&hub, "/client.js");
    assert_eq!(js.status, 200);
    assert_eq!(
        js.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert!(js.text().contains("export class WsHub"));
    assert_eq!(js.header("cache-control"), Some("no-cache"));
    assert_eq!(page.header("cache-control"), Some("no-cache"));
}

#[test]
fn metrics_are_prometheus_text() {
    let hub = TestHub::start();
    let r = get(&hub, "/metrics");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4"),
        "the type PROTOCOL.md section 1 names"
    );
    assert!(r.text().contains("# TYPE wshub_connections_active gauge"));
}

#[test]
fn a_head_request_gets_a_head_and_no_body() {
    // Whatever the answer (HEAD is not one of the routes' methods), it has
    // no body: the next answer on a keep-alive connection starts cleanly.
    let hub = TestHub::start();
    let mut s = TcpStream::connect(hub.handle().addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"HEAD /health HTTP/1.1\r\nHost: localhost\r\n\r\nGET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8(out).unwrap();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 405 "), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("connection: keep-alive"),
        "{head}"
    );
    assert!(
        rest.starts_with("HTTP/1.1 200 OK\r\n"),
        "no body after the head: {rest}"
    );
    let health = parse_response(rest.as_bytes()).unwrap();
    assert_eq!(health.json()["status"], "ok");
}
