//! The HTTP front door against hostile peers and pages (PROTOCOL.md section
//! 11): the Host check, Origin on every route, strict Content-Length,
//! loopback on a dual-stack listener, and peers that pipeline without
//! reading. Every refusal is shown beside an honest client that keeps
//! receiving.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::json;
use wshub::testing::{HttpResponse, TestClient, TestHub, http, parse_response};
use wshub::{AllowedHosts, Config, Publish};

mod common;

use common::{connection_count, metric};

/// How long a raw socket waits for the hub to answer or close.
const BOUND: Duration = Duration::from_secs(10);

const UPGRADE: &str = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";

/// A client subscribed to room `honest`.
async fn honest(hub: &TestHub) -> TestClient {
    hub.client("?rooms=honest").await
}

/// Publishes to `honest` over HTTP; the client's next event must be it.
async fn still_receives(hub: &TestHub, c: &mut TestClient) {
    let seq = hub.publish("honest", "tick", json!({})).await["seq"].clone();
    assert_eq!(c.expect("tick").await["seq"], seq);
}

/// Writes `bytes` on a fresh socket and reads until the hub closes it (EOF
/// or reset) or [`BOUND`] passes; the flag says whether it closed.
fn exchange(addr: SocketAddr, bytes: &[u8]) -> (Vec<u8>, bool) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(BOUND)).unwrap();
    s.write_all(bytes).unwrap();
    read_until_closed(&mut s)
}

fn read_until_closed(s: &mut TcpStream) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return (out, false);
            }
            Err(_) => return (out, true),
        }
    }
}

/// Every complete response in `raw`, in order.
fn responses(mut raw: &[u8]) -> Vec<HttpResponse> {
    let mut all = Vec::new();
    while let Some(head) = parse_response(raw) {
        let head_len = raw.len() - head.body.len();
        let len: usize = head
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let end = (head_len + len).min(raw.len());
        all.push(parse_response(&raw[..end]).unwrap());
        raw = &raw[end..];
    }
    all
}

/// The only response in `raw`, after which the hub closed the socket.
fn sole_response(raw: &[u8], closed: bool) -> HttpResponse {
    assert!(
        closed,
        "the hub did not close the connection within {BOUND:?}"
    );
    let mut all = responses(raw);
    assert_eq!(
        all.len(),
        1,
        "expected one response: {:?}",
        String::from_utf8_lossy(raw)
    );
    all.remove(0)
}

/// A request head with `lines` (each ending in CRLF) and no Host of its own.
fn head(method: &str, path: &str, lines: &str) -> String {
    format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n{lines}\r\n")
}

/// `GET /health` with `Host: host`, on a connection the hub then closes.
fn health_with_host(addr: SocketAddr, host: &str) -> HttpResponse {
    let (raw, closed) = exchange(
        addr,
        head("GET", "/health", &format!("Host: {host}\r\n")).as_bytes(),
    );
    sole_response(&raw, closed)
}

fn status_and_code(r: &HttpResponse) -> (u16, String) {
    (r.status, r.error_code())
}

/// Every route the Host check covers, as (method, path, extra lines).
const ROUTES: [(&str, &str, &str); 7] = [
    ("GET", "/ws", UPGRADE),
    ("POST", "/api/events", ""),
    ("GET", "/metrics", ""),
    ("GET", "/api/connections", ""),
    ("GET", "/health", ""),
    ("GET", "/", ""),
    (
        "OPTIONS",
        "/api/events",
        "Origin: http://localhost:3000\r\n",
    ),
];

#[test]
fn missing_or_repeated_host_is_400_on_every_route() {
    let hub = TestHub::start();
    let addr = hub.handle().addr();
    smol::block_on(async {
        let mut ok = honest(&hub).await;
        for (method, path, extra) in ROUTES {
            for hosts in ["", "Host: localhost\r\nHost: localhost\r\n"] {
                let (raw, closed) = exchange(
                    addr,
                    head(method, path, &format!("{hosts}{extra}")).as_bytes(),
                );
                let r = sole_response(&raw, closed);
                assert_eq!(
                    status_and_code(&r),
                    (400, "bad_request".into()),
                    "{method} {path} with {hosts:?}"
                );
            }
            still_receives(&hub, &mut ok).await;
        }
        let m = hub.request("GET", "/metrics", None).await.text();
        assert_eq!(
            metric(&m, "wshub_handshake_rejections_total{code=\"bad_request\"}"),
            2.0
        );
    });
}

#[test]
fn foreign_hosts_are_403_host_not_allowed_on_every_route() {
    let hub = TestHub::start();
    let addr = hub.handle().addr();
    let port = addr.port();
    smol::block_on(async {
        let mut ok = honest(&hub).await;
        let publish = r#"{"room":"honest","type":"rebound","payload":{}}"#;
        for host in [
            "evil.example".to_string(),
            format!("evil.example:{port}"),
            "localhost.evil.example".into(),
            "127.0.0.1.nip.io".into(),
        ] {
            for (method, path, extra) in ROUTES {
                let mut raw = head(method, path, &format!("Host: {host}\r\n{extra}"));
                if method == "POST" {
                    raw = raw.replace(
                        "\r\n\r\n",
                        &format!("\r\nContent-Length: {}\r\n\r\n{publish}", publish.len()),
                    );
                }
                let (raw, closed) = exchange(addr, raw.as_bytes());
                let r = sole_response(&raw, closed);
                assert_eq!(
                    status_and_code(&r),
                    (403, "host_not_allowed".into()),
                    "{method} {path} with Host: {host}"
                );
            }
            // Nothing was published: the next event is this one.
            still_receives(&hub, &mut ok).await;
        }
        let m = hub.request("GET", "/metrics", None).await.text();
        assert_eq!(
            metric(
                &m,
                "wshub_handshake_rejections_total{code=\"host_not_allowed\"}"
            ),
            4.0
        );
    });
}

#[test]
fn local_hosts_are_allowed_by_default() {
    let hub = TestHub::start();
    let addr = hub.handle().addr();
    let port = addr.port();
    smol::block_on(async {
        let mut ok = honest(&hub).await;
        for host in [
            "localhost".to_string(),
            format!("LocalHost:{port}"),
            "foo.localhost".into(),
            format!("app.foo.localhost:{port}"),
            format!("127.0.0.1:{port}"),
            "127.0.0.1".into(),
            "[::1]".into(),
            format!("[::1]:{port}"),
            "10.0.0.7".into(),
        ] {
            assert_eq!(health_with_host(addr, &host).status, 200, "Host: {host}");
        }
        let mut tab =
            TestClient::connect_with(&hub.ws_url("?rooms=honest"), &[("Host", "foo.localhost")])
                .await
                .expect("an upgrade with Host: foo.localhost is accepted");
        still_receives(&hub, &mut ok).await;
        tab.expect("tick").await;
    });
}

#[test]
fn allowed_hosts_replaces_the_default_and_star_allows_any() {
    let listed = TestHub::with_config(|c| {
        c.allowed_hosts = AllowedHosts::List(vec!["hub.example".into()]);
    });
    let addr = listed.handle().addr();
    smol::block_on(async {
        let mut ok =
            TestClient::connect_with(&listed.ws_url("?rooms=honest"), &[("Host", "hub.example")])
                .await
                .expect("the listed host upgrades");
        for (host, expected) in [
            ("hub.example", 200),
            ("HUB.example:8443", 200),
            ("localhost", 403),
            ("127.0.0.1", 403),
            ("evil.example", 403),
        ] {
            assert_eq!(
                health_with_host(addr, host).status,
                expected,
                "Host: {host}"
            );
        }
        let published = listed
            .handle()
            .publish(Publish::to_room("honest", "tick", json!({})))
            .await
            .unwrap();
        assert_eq!(ok.expect("tick").await["seq"], published.seq.unwrap());
    });

    let open = TestHub::with_config(|c| c.allowed_hosts = AllowedHosts::Any);
    let addr = open.handle().addr();
    smol::block_on(async {
        let mut ok = honest(&open).await;
        for host in ["evil.example", "anything.example:1"] {
            assert_eq!(health_with_host(addr, host).status, 200, "Host: {host}");
        }
        let (raw, closed) = exchange(addr, head("GET", "/health", "").as_bytes());
        assert_eq!(
            status_and_code(&sole_response(&raw, closed)),
            (400, "bad_request".into()),
            "`*` still needs a Host"
        );
        still_receives(&open, &mut ok).await;
    });
}

#[test]
fn foreign_origins_are_refused_beyond_the_open_routes() {
    let hub = TestHub::start();
    let addr = hub.handle().addr();
    let evil = [("Origin", "http://evil.example")];
    smol::block_on(async {
        let mut ok = honest(&hub).await;

        // A form-like POST without Content-Type: refused, and nothing published.
        let smuggled = r#"{"room":"honest","type":"forged","payload":{}}"#;
        let r = http(addr, "POST", "/api/events", &evil, Some(smuggled)).await;
        assert_eq!(status_and_code(&r), (403, "origin_not_allowed".into()));
        still_receives(&hub, &mut ok).await;

        let r = http(
            addr,
            "PUT",
            "/api/health/db",
            &evil,
            Some(r#"{"status":"down"}"#),
        )
        .await;
        assert_eq!(status_and_code(&r), (403, "origin_not_allowed".into()));
        let health = hub.request("GET", "/health", None).await.json();
        assert_eq!(health["status"], "ok");
        assert_eq!(health["components"], json!({}));

        for (method, path) in [
            ("GET", "/metrics"),
            ("GET", "/api/connections"),
            ("GET", "/api/rooms"),
            ("OPTIONS", "/api/events"),
            ("DELETE", "/api/connections/x"),
            // `/ws` and `/sse` too, before anything else is looked at:
            // not an upgrade, another method, a bad room name.
            ("GET", "/ws"),
            ("POST", "/ws"),
            ("GET", "/ws?rooms=a%20b"),
            ("POST", "/sse"),
            ("DELETE", "/sse"),
            ("GET", "/sse?rooms=a%20b"),
        ] {
            let r = http(addr, method, path, &evil, None).await;
            assert_eq!(
                status_and_code(&r),
                (403, "origin_not_allowed".into()),
                "{method} {path}"
            );
            assert!(r.header("access-control-allow-origin").is_none(), "{path}");
        }
        for path in ["/health", "/", "/client.js"] {
            let r = http(addr, "GET", path, &evil, None).await;
            assert_eq!(r.status, 200, "{path}");
            assert!(r.header("access-control-allow-origin").is_none(), "{path}");
        }
        // An allowed origin is still served, with CORS.
        let r = http(
            addr,
            "GET",
            "/metrics",
            &[("Origin", "http://localhost:5173")],
            None,
        )
        .await;
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("access-control-allow-origin"),
            Some("http://localhost:5173")
        );
        still_receives(&hub, &mut ok).await;
    });
}

#[test]
fn a_refused_request_with_a_body_keeps_the_connection_in_step() {
    let hub = TestHub::start();
    let body = r#"{"room":"honest","type":"forged","payload":{}}"#;
    let refused = format!(
        "POST /api/events HTTP/1.1\r\nHost: localhost\r\nOrigin: http://evil.example\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let next = head("GET", "/health", "Host: localhost\r\n");
    let (raw, closed) = exchange(hub.handle().addr(), format!("{refused}{next}").as_bytes());
    assert!(closed);
    let all = responses(&raw);
    let statuses: Vec<u16> = all.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [403, 200], "{:?}", String::from_utf8_lossy(&raw));
    assert_eq!(all[0].header("connection"), Some("keep-alive"));
}

#[test]
fn loose_content_length_is_400_and_closes_the_connection() {
    let hub = TestHub::start();
    let addr = hub.handle().addr();
    // What a lenient reader would take as a second request.
    let smuggled = "GET /api/connections HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let body = r#"{"room":"honest","type":"t","payload":{"n":10}}"#;
    assert_eq!(body.len(), 47);
    smol::block_on(async {
        let mut ok = honest(&hub).await;
        for lines in [
            "Content-Length: +47\r\n",
            "Content-Length:  47\r\n",
            "Content-Length: 4 7\r\n",
            "Content-Length: 47 \r\n",
            "Content-Length: -47\r\n",
            "Content-Length: \r\n",
            "Content-Length: 47\r\nContent-Length: 48\r\n",
            "Content-Length: 0\r\nContent-Length: 47\r\n",
        ] {
            let request = format!(
                "POST /api/events HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n{lines}\r\n{body}{smuggled}"
            );
            let (raw, closed) = exchange(addr, request.as_bytes());
            let r = sole_response(&raw, closed);
            assert_eq!(
                status_and_code(&r),
                (400, "bad_request".into()),
                "{lines:?}"
            );
            assert_eq!(r.header("connection"), Some("close"), "{lines:?}");
        }
        // Nothing of those bodies was published.
        still_receives(&hub, &mut ok).await;

        // Repeated and equal is one length; the connection stays in step.
        let request = format!(
            "POST /api/events HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 47\r\ncontent-length: 47\r\n\r\n{body}{}",
            head("GET", "/health", "Host: localhost\r\n")
        );
        let (raw, closed) = exchange(addr, request.as_bytes());
        assert!(closed);
        let statuses: Vec<u16> = responses(&raw).iter().map(|r| r.status).collect();
        assert_eq!(statuses, [202, 200], "{:?}", String::from_utf8_lossy(&raw));
        assert_eq!(ok.expect("t").await["payload"]["n"], 10);
        still_receives(&hub, &mut ok).await;
    });
}

#[test]
fn oversize_bodies_are_413_before_a_byte_of_them_arrives() {
    let hub = TestHub::with_config(|c| c.max_message_bytes = 1024);
    let addr = hub.handle().addr();
    smol::block_on(async {
        let mut ok = honest(&hub).await;
        for len in ["1025", "10000000000", "99999999999999999999999999"] {
            // The body is never sent: the answer cannot be waiting for it.
            let request = format!(
                "POST /api/events HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
            );
            let (raw, closed) = exchange(addr, request.as_bytes());
            let r = sole_response(&raw, closed);
            assert_eq!(
                status_and_code(&r),
                (413, "payload_too_large".into()),
                "{len}"
            );
        }
        still_receives(&hub, &mut ok).await;
    });
}

/// A socket with a small receive buffer, so that unread responses back up
/// into the hub quickly.
fn small_window_socket(addr: SocketAddr) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&addr.into()).unwrap();
    socket.into()
}

/// Whether the hub has closed `s`, found without reading: a write to a
/// socket the peer has closed fails (at the latest on the second try).
fn closed_within(s: &mut TcpStream, bound: Duration) -> bool {
    s.set_write_timeout(Some(Duration::from_secs(1))).unwrap();
    let deadline = Instant::now() + bound;
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        match s.write(b"\r\n") {
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return true,
            Ok(_) => {}
        }
    }
    false
}

#[test]
fn pipelining_without_reading_is_closed_after_handshake_timeout() {
    let hub = TestHub::with_config(|c| c.handshake_timeout = Duration::from_secs(1));
    let addr = hub.handle().addr();
    smol::block_on(async {
        let mut ok = honest(&hub).await;
        let mut greedy = small_window_socket(addr);
        let request = "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n".repeat(200);
        greedy.write_all(request.as_bytes()).unwrap();
        // Meanwhile, others are served.
        still_receives(&hub, &mut ok).await;
        assert!(
            closed_within(&mut greedy, BOUND),
            "the hub kept a peer that never reads for {BOUND:?}"
        );
        let health = hub.request("GET", "/health", None).await;
        assert_eq!(health.status, 200);
        assert_eq!(health.json()["connections"], 1);
        assert_eq!(connection_count(&hub).await, 1);
        still_receives(&hub, &mut ok).await;
    });
}

#[test]
fn a_dual_stack_hub_treats_ipv4_loopback_peers_as_loopback() {
    let mut config = Config::default();
    config.bind = "[::]:0".parse().unwrap();
    let handle = match wshub::serve(config) {
        Ok(handle) => handle,
        Err(e) => {
            eprintln!("skipped: this system cannot listen on [::] ({e})");
            return;
        }
    };
    let v4: SocketAddr = format!("127.0.0.1:{}", handle.addr().port())
        .parse()
        .unwrap();
    smol::block_on(async {
        let mut tab = TestClient::connect(&format!("ws://{v4}/ws?rooms=honest")).await;
        // No admin_key and no jwt_secret: the admin and publisher routes
        // answer loopback peers only, and 127.0.0.1 arrives as ::ffff:127.0.0.1.
        let r = http(v4, "GET", "/api/connections", &[], None).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["connections"].as_array().unwrap().len(), 1);
        let body = r#"{"room":"honest","type":"tick","payload":{}}"#;
        let r = http(
            v4,
            "POST",
            "/api/events",
            &[("Content-Type", "application/json")],
            Some(body),
        )
        .await;
        assert_eq!(r.status, 202, "{}", r.text());
        tab.expect("tick").await;
        let v6: SocketAddr = format!("[::1]:{}", handle.addr().port()).parse().unwrap();
        if std::net::TcpStream::connect(v6).is_ok() {
            assert_eq!(http(v6, "GET", "/metrics", &[], None).await.status, 200);
        }
        handle.shutdown().await;
    });
}
