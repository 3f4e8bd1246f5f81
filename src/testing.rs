//! Helpers for testing against a real hub over real sockets: [`TestHub`]
//! starts one on an ephemeral loopback port, [`TestClient`] is a WebSocket
//! client whose every wait is bounded, [`TestStream`] the same for an SSE
//! stream, [`TokenBuilder`] mints JWTs, and [`http`] is a small HTTP/1.1
//! client.
//!
//! ```
//! use wshub::testing::TestHub;
//! use serde_json::json;
//!
//! smol::block_on(async {
//!     let hub = TestHub::start();
//!     let mut tab = hub.client("?rooms=scans").await;
//!     let reply = hub.post_event(json!({"room": "scans", "type": "scan_started", "payload": {}})).await;
//!     assert_eq!(reply.status, 202);
//!     let event = tab.expect("scan_started").await;
//!     assert_eq!(event["seq"], 1);
//! });
//! ```

use std::time::Duration;

use async_tungstenite::tungstenite::Message;
use futures_lite::FutureExt;
use serde_json::{Value, json};

use crate::auth::{Claims, mint, sign};
use crate::client::{Client, ClientError, EventStream, Next};
pub use crate::client::{Closed, HttpResponse, SseItem, connect_raw, parse_response};
use crate::config::Config;
use crate::server::{Handle, serve};

/// How long a helper waits for anything before failing the test.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A hub on `127.0.0.1:0`, shut down when dropped.
#[derive(Debug)]
pub struct TestHub {
    handle: Handle,
    config: Config,
}

impl TestHub {
    /// A hub with default settings.
    pub fn start() -> Self {
        Self::with_config(|_| {})
    }

    /// A hub with settings changed by `change`; the bind address is always
    /// an ephemeral loopback port. Logs are quiet unless `WSHUB_LOG` is set.
    pub fn with_config(change: impl FnOnce(&mut Config)) -> Self {
        // Quiet unless asked: WSHUB_LOG prints the hub's lines, as the binary does.
        if let Some(level) = std::env::var("WSHUB_LOG").ok().and_then(|v| v.parse().ok()) {
            crate::log::JsonLines::install(level);
        }
        let mut config = Config::default();
        change(&mut config);
        config.bind = "127.0.0.1:0".parse().expect("loopback address");
        let handle = serve(config.clone()).expect("test hub starts");
        Self { handle, config }
    }

    /// The running hub.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// The settings the hub runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// `ws://127.0.0.1:port/ws` followed by `query` (say `?rooms=a`).
    pub fn ws_url(&self, query: &str) -> String {
        format!("{}{query}", self.handle.ws_url())
    }

    /// A connected client (welcome received) with `query` on the URL.
    pub async fn client(&self, query: &str) -> TestClient {
        TestClient::connect(&self.ws_url(query)).await
    }

    /// `n` connected clients.
    pub async fn clients(&self, n: usize, query: &str) -> Vec<TestClient> {
        let mut clients = Vec::with_capacity(n);
        for _ in 0..n {
            clients.push(self.client(query).await);
        }
        clients
    }

    /// A client authenticated with `token` (as `?token=`), plus `query`
    /// parameters such as `&rooms=a`.
    pub async fn client_with_token(&self, token: &str, query: &str) -> TestClient {
        TestClient::connect(&self.ws_url(&format!("?token={token}{query}"))).await
    }

    /// `GET /sse{query}` (say `?rooms=a`): the stream, its `retry:` and
    /// welcome read; panics if it is refused or does not start so.
    pub async fn stream(&self, query: &str) -> TestStream {
        self.stream_with(query, &[])
            .await
            .unwrap_or_else(|r| panic!("/sse{query} refused: {} {}", r.status, r.text()))
    }

    /// `GET /sse{query}` with extra request headers (`Last-Event-ID`,
    /// `Origin`, …): the stream, or the refusal's whole response.
    pub async fn stream_with(
        &self,
        query: &str,
        headers: &[(&str, &str)],
    ) -> Result<TestStream, HttpResponse> {
        let path = format!("/sse{query}");
        let stream = EventStream::open(self.handle.addr(), &path, headers)
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))?;
        Ok(TestStream::start(stream).await)
    }

    /// A token for `sub` signed with the hub's `jwt_secret`.
    pub fn token(&self, sub: &str) -> TokenBuilder {
        let secret = self
            .config
            .jwt_secret
            .clone()
            .expect("TestHub::token needs a jwt_secret in the config");
        TokenBuilder::new(sub, &secret)
    }

    /// An HTTP request to the hub, carrying the admin key, or an admin JWT,
    /// when the hub has one.
    pub async fn request(&self, method: &str, path: &str, body: Option<&Value>) -> HttpResponse {
        let mut headers = vec![];
        let credential = match (&self.config.admin_key, &self.config.jwt_secret) {
            (Some(key), _) => Some(key.clone()),
            (None, Some(secret)) => Some(TokenBuilder::new("wshub-tests", secret).admin().mint()),
            (None, None) => None,
        };
        let auth = credential.map(|c| format!("Bearer {c}"));
        if let Some(auth) = &auth {
            headers.push(("Authorization", auth.as_str()));
        }
        let body = body.map(Value::to_string);
        if body.is_some() {
            headers.push(("Content-Type", "application/json"));
        }
        http(self.handle.addr(), method, path, &headers, body.as_deref()).await
    }

    /// `POST /api/events` with `body`.
    pub async fn post_event(&self, body: Value) -> HttpResponse {
        self.request("POST", "/api/events", Some(&body)).await
    }

    /// Publishes `payload` as `kind` to `room` over HTTP and returns the reply body.
    pub async fn publish(&self, room: &str, kind: &str, payload: Value) -> Value {
        let reply = self
            .post_event(json!({"room": room, "type": kind, "payload": payload}))
            .await;
        assert_eq!(reply.status, 202, "publish failed: {}", reply.text());
        reply.json()
    }
}

impl Drop for TestHub {
    fn drop(&mut self) {
        let handle = self.handle.clone();
        smol::block_on(async {
            // Bounded: a test's leftover clients must not hold the drop up.
            let _ = async {
                handle.shutdown().await;
                true
            }
            .or(async {
                smol::Timer::after(TIMEOUT).await;
                false
            })
            .await;
        });
    }
}

/// Builds HS256 tokens for tests, well-formed or, with [`header`] and
/// [`claim`], not.
///
/// [`header`]: TokenBuilder::header
/// [`claim`]: TokenBuilder::claim
#[derive(Debug, Clone)]
pub struct TokenBuilder {
    claims: Claims,
    /// Raw header fields, over `{"alg":"HS256","typ":"JWT"}`.
    header: serde_json::Map<String, Value>,
    /// Raw claims, over the typed ones.
    raw_claims: serde_json::Map<String, Value>,
    secret: String,
}

impl TokenBuilder {
    /// A token for `sub`, valid for an hour, signed with `secret`.
    pub fn new(sub: &str, secret: &str) -> Self {
        Self {
            claims: Claims::new(sub, 3600),
            header: serde_json::Map::new(),
            raw_claims: serde_json::Map::new(),
            secret: secret.to_string(),
        }
    }

    /// Sets the `rooms` claim.
    pub fn rooms(mut self, patterns: &[&str]) -> Self {
        self.claims.rooms = Some(patterns.iter().map(|p| p.to_string()).collect());
        self
    }

    /// Sets the `publish` claim.
    pub fn publish(mut self, patterns: &[&str]) -> Self {
        self.claims.publish = Some(patterns.iter().map(|p| p.to_string()).collect());
        self
    }

    /// Sets `admin: true`.
    pub fn admin(mut self) -> Self {
        self.claims.admin = true;
        self
    }

    /// Sets `exp` to `secs` seconds from now (negative: already expired).
    pub fn expires_in(mut self, secs: f64) -> Self {
        self.claims.exp = crate::auth::unix_now() + secs;
        self
    }

    /// Sets header field `name` to `value` as it is (say `crit`, or another
    /// `alg`); the signature stays HS256 with the builder's secret.
    pub fn header(mut self, name: &str, value: Value) -> Self {
        self.header.insert(name.to_string(), value);
        self
    }

    /// Sets claim `name` to `value` as it is, over the typed claims (say an
    /// `exp` of `1e300`, or an `nbf`).
    pub fn claim(mut self, name: &str, value: Value) -> Self {
        self.raw_claims.insert(name.to_string(), value);
        self
    }

    /// The signed token.
    pub fn mint(&self) -> String {
        if self.header.is_empty() && self.raw_claims.is_empty() {
            return mint(&self.claims, self.secret.as_bytes());
        }
        let mut header = serde_json::Map::new();
        header.insert("alg".into(), json!("HS256"));
        header.insert("typ".into(), json!("JWT"));
        header.extend(self.header.clone());
        let Ok(Value::Object(mut claims)) = serde_json::to_value(&self.claims) else {
            unreachable!("claims serialise to an object");
        };
        claims.extend(self.raw_claims.clone());
        sign(
            Value::Object(header).to_string().as_bytes(),
            Value::Object(claims).to_string().as_bytes(),
            self.secret.as_bytes(),
        )
    }
}

/// A WebSocket client for tests: a [`Client`] whose every call panics
/// when the hub does not answer within [`TIMEOUT`]; it remembers its
/// `welcome`.
#[derive(Debug)]
pub struct TestClient {
    client: Client,
    /// The hub's `welcome` message.
    pub welcome: Value,
}

impl TestClient {
    /// Connects to `url`, reads the welcome and panics if either fails.
    pub async fn connect(url: &str) -> Self {
        Self::connect_with(url, &[])
            .await
            .expect("connect to the hub")
    }

    /// Connects with extra request headers; the welcome must arrive first.
    pub async fn connect_with(url: &str, headers: &[(&str, &str)]) -> Result<Self, ClientError> {
        let client = Client::connect_with(url, headers).await?;
        let welcome = client.welcome().clone();
        Ok(Self { client, welcome })
    }

    /// This connection's ID, from the welcome.
    pub fn id(&self) -> String {
        self.client.id().to_string()
    }

    /// Sends `message` in the connection's encoding.
    pub async fn send(&mut self, message: Value) {
        self.client
            .send(&message)
            .await
            .expect("send to the hub in time");
    }

    /// Sends one raw frame.
    pub async fn send_raw(&mut self, frame: Message) {
        self.client
            .send_frame(frame)
            .await
            .expect("send to the hub in time");
    }

    /// The next message (heartbeats included), or `None` if the connection
    /// ended or nothing came within `wait`.
    pub async fn recv_within(&mut self, wait: Duration) -> Option<Value> {
        match self.client.next_within(wait).await {
            Next::Message(message) => Some(message),
            Next::Closed(_) | Next::TimedOut => None,
        }
    }

    /// The next message other than a heartbeat; panics after [`TIMEOUT`].
    pub async fn recv(&mut self) -> Value {
        loop {
            let message = self
                .recv_within(TIMEOUT)
                .await
                .expect("a message from the hub in time");
            if message["type"] != "heartbeat" {
                return message;
            }
        }
    }

    /// The next message other than a heartbeat, which must be of `kind`.
    pub async fn expect(&mut self, kind: &str) -> Value {
        let message = self.recv().await;
        assert_eq!(message["type"], kind, "expected `{kind}`, got {message}");
        message
    }

    /// Sends `message` with a fresh `ref` and returns the reply carrying it
    /// (events arriving meanwhile are skipped).
    pub async fn request(&mut self, message: Value) -> Value {
        self.client
            .request(message, TIMEOUT, drop)
            .await
            .expect("a reply from the hub in time")
    }

    /// Subscribes to `rooms` and returns the `subscribed` reply.
    pub async fn subscribe(&mut self, rooms: &[&str]) -> Value {
        let reply = self
            .request(json!({"type": "subscribe", "rooms": rooms}))
            .await;
        assert_eq!(reply["type"], "subscribed", "{reply}");
        reply
    }

    /// Publishes `payload` as `kind` to `room` and returns the reply.
    pub async fn publish(&mut self, room: &str, kind: &str, payload: Value) -> Value {
        self.request(json!({"type": "publish", "room": room, "event": kind, "payload": payload}))
            .await
    }

    /// Asserts that nothing but heartbeats is queued for this client: the
    /// hub answers a `ping` in order, so its `pong` is a barrier that
    /// proves nothing else came before it.
    pub async fn expect_nothing_before_pong(&mut self) {
        let pong = self
            .client
            .request(json!({"type": "ping"}), TIMEOUT, |m| {
                assert_eq!(
                    m["type"], "heartbeat",
                    "expected nothing before the pong, got {m}"
                );
            })
            .await
            .expect("a pong in time");
        assert_eq!(pong["type"], "pong", "{pong}");
    }

    /// Asserts that no message but heartbeats arrives within `wait`.
    pub async fn expect_silence(&mut self, wait: Duration) {
        let deadline = std::time::Instant::now() + wait;
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match self.recv_within(left).await {
                Some(m) if m["type"] == "heartbeat" => continue,
                Some(m) => panic!("expected silence, got {m}"),
                None => return,
            }
        }
    }

    /// Reads until the hub closes the connection; panics after [`TIMEOUT`].
    pub async fn expect_close(&mut self) -> Closed {
        let deadline = std::time::Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.client.next_within(left).await {
                Next::Message(_) => continue,
                Next::Closed(closed) => return closed,
                Next::TimedOut => panic!("the hub did not close the connection in time"),
            }
        }
    }

    /// Closes with 1000 and waits (bounded) for the hub's reply.
    pub async fn close(self) {
        self.client.close(TIMEOUT).await;
    }
}

/// An SSE stream for tests (PROTOCOL.md section 12): an [`EventStream`]
/// whose every wait panics after [`TIMEOUT`]; it remembers its `welcome`
/// and the welcome's `id:`.
#[derive(Debug)]
pub struct TestStream {
    stream: EventStream,
    /// The hub's `welcome` message.
    pub welcome: Value,
    /// The welcome's `id:`: the cursor the stream started at.
    pub welcome_id: String,
}

impl TestStream {
    /// Reads the start every stream must have: `retry: 1000`, then the
    /// welcome with an `id:`.
    async fn start(mut stream: EventStream) -> Self {
        let first = stream.next_within(TIMEOUT).await;
        assert_eq!(
            first,
            Some(SseItem::Retry(1000)),
            "a stream starts with retry"
        );
        match stream.next_within(TIMEOUT).await {
            Some(SseItem::Event { id: Some(id), data }) => {
                let welcome: Value = serde_json::from_str(&data).expect("the welcome is JSON");
                assert_eq!(welcome["type"], "welcome", "{welcome}");
                Self {
                    stream,
                    welcome,
                    welcome_id: id,
                }
            }
            other => panic!("expected the welcome with an id, got {other:?}"),
        }
    }

    /// This stream's connection ID, from the welcome.
    pub fn id(&self) -> String {
        self.welcome["payload"]["connection_id"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The response head of the stream.
    pub fn head(&self) -> &HttpResponse {
        &self.stream.head
    }

    /// The last `id:` seen: what a reconnect sends as `Last-Event-ID`.
    pub fn last_event_id(&self) -> String {
        self.stream.last_event_id().unwrap_or_default().to_string()
    }

    /// The next item (comments included), or `None` if the stream ended or
    /// nothing came within `wait`.
    pub async fn recv_within(&mut self, wait: Duration) -> Option<SseItem> {
        self.stream.next_within(wait).await
    }

    /// The next message with its `id:` line (if it had one), skipping
    /// comments; panics after [`TIMEOUT`] or at the end of the stream.
    pub async fn recv_tagged(&mut self) -> (Option<String>, Value) {
        let deadline = std::time::Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.stream.next_within(left).await {
                Some(SseItem::Event { id, data }) => {
                    let message = serde_json::from_str(&data)
                        .unwrap_or_else(|e| panic!("data is not JSON ({e}): {data}"));
                    return (id, message);
                }
                Some(_) => continue,
                None if self.stream.is_ended() => panic!("the stream ended"),
                None => panic!("no message from the stream in time"),
            }
        }
    }

    /// The next message, skipping comments.
    pub async fn recv(&mut self) -> Value {
        self.recv_tagged().await.1
    }

    /// The next message, which must be of `kind`.
    pub async fn expect(&mut self, kind: &str) -> Value {
        let message = self.recv().await;
        assert_eq!(message["type"], kind, "expected `{kind}`, got {message}");
        message
    }

    /// Asserts that no message but comments arrives within `wait`.
    pub async fn expect_silence(&mut self, wait: Duration) {
        let deadline = std::time::Instant::now() + wait;
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match self.stream.next_within(left).await {
                Some(SseItem::Event { data, .. }) => panic!("expected silence, got {data}"),
                Some(_) => continue,
                None => return,
            }
        }
    }

    /// Reads until the hub ends the stream and returns the messages that
    /// came first; panics after [`TIMEOUT`].
    pub async fn expect_end(&mut self) -> Vec<Value> {
        let deadline = std::time::Instant::now() + TIMEOUT;
        let mut messages = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.stream.next_within(left).await {
                Some(SseItem::Event { data, .. }) => {
                    messages.push(serde_json::from_str(&data).unwrap_or(Value::String(data)));
                }
                Some(_) => continue,
                None if self.stream.is_ended() => return messages,
                None => panic!("the hub did not end the stream in time"),
            }
        }
    }
}

/// A client WebSocket frame: `first` is the first byte (FIN, RSV, opcode),
/// the payload masked as RFC 6455 requires of clients. For tests that send
/// frames by hand, well-formed or not.
pub fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    client_frame_masked(first, payload, [0xA1, 0x02, 0xB3, 0x04])
}

/// [`client_frame`] with a chosen masking key.
pub fn client_frame_masked(first: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    crate::protocol::masked_frame(first, payload, mask)
}

/// A blocking socket that completed the upgrade to `/ws{query}` and has
/// read nothing past the 101 response (the welcome frame is still there);
/// reads time out after [`TIMEOUT`]. Panics if the upgrade is refused.
pub fn raw_upgrade(addr: std::net::SocketAddr, query: &str) -> std::net::TcpStream {
    use std::io::{Read, Write};
    let mut socket = std::net::TcpStream::connect(addr).expect("connect to the hub");
    socket
        .set_read_timeout(Some(TIMEOUT))
        .expect("set a read timeout");
    write!(
        socket,
        "GET /ws{query} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .expect("send the upgrade");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            socket.read(&mut byte).expect("read the response"),
            1,
            "closed mid-response"
        );
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "upgrade refused: {}",
        String::from_utf8_lossy(&head)
    );
    socket
}

/// Runs `future` for at most [`TIMEOUT`].
pub async fn within<T>(future: impl std::future::Future<Output = T>) -> Option<T> {
    async { Some(future.await) }
        .or(async {
            smol::Timer::after(TIMEOUT).await;
            None
        })
        .await
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`);
/// panics if the hub does not answer within [`TIMEOUT`].
pub async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> HttpResponse {
    crate::client::http(addr, method, path, headers, body)
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}
