//! A client for Rust programs that consume or feed a hub: [`Client`] is one
//! WebSocket connection (welcome, requests matched by `ref`, every wait
//! bounded by the caller), [`Resume`] remembers what a consumer has seen
//! so that a new connection resumes with `since` and `epoch` and delivers
//! each event once, [`Subscriber`] reconnects with backoff and resumes by
//! itself, [`http`] is a small HTTP/1.1 client for the publisher routes,
//! and [`EventStream`] reads a hub's Server-Sent Events stream (`/sse`).
//!
//! ```no_run
//! use wshub::client::{Subscriber, Update};
//!
//! smol::block_on(async {
//!     let mut scans = Subscriber::new("ws://127.0.0.1:8000/ws", &["scans"]);
//!     while let Some(update) = scans.next().await {
//!         match update {
//!             Update::Event(event) => println!("{event}"),
//!             Update::Reconnecting { delay } => eprintln!("reconnecting in {delay:?}"),
//!             Update::Closed(code) => eprintln!("closed for good: {code}"),
//!             _ => {}
//!         }
//!     }
//! });
//! ```

mod http;
mod resume;
mod sse;
mod subscriber;

pub use http::{HttpResponse, http, parse_response};
pub use resume::Resume;
pub use sse::{EventStream, SseItem};
pub use subscriber::{Subscriber, Update};

use std::fmt;
use std::time::Duration;

use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use async_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use async_tungstenite::tungstenite::{self, Message};
use futures_lite::{FutureExt, StreamExt};
use serde_json::{Value, json};
use smol::net::TcpStream;

use crate::protocol::Encoding;

/// How long [`Client::connect`] waits for the TCP connection, the upgrade
/// and the welcome together.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a client call failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum ClientError {
    /// The URL, a header or the upgrade was refused or broken.
    WebSocket(tungstenite::Error),
    /// Nothing came within the time the call allows.
    TimedOut,
    /// The connection has ended.
    Closed(Closed),
    /// The hub sent something that is not a hub message.
    Protocol(String),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::WebSocket(e) => write!(f, "websocket: {e}"),
            Self::TimedOut => f.write_str("the hub did not answer in time"),
            Self::Closed(Closed::Code(code)) => write!(f, "the hub closed the connection ({code})"),
            Self::Closed(Closed::Dropped) => f.write_str("the connection dropped"),
            Self::Protocol(message) => write!(f, "unexpected message from the hub: {message}"),
        }
    }
}

impl std::error::Error for ClientError {}

impl From<tungstenite::Error> for ClientError {
    fn from(e: tungstenite::Error) -> Self {
        Self::WebSocket(e)
    }
}

/// How a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// A close frame with this code arrived.
    Code(u16),
    /// The socket closed without a close frame.
    Dropped,
}

/// What one read brought.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// A hub message (heartbeats included).
    Message(Value),
    /// The connection ended.
    Closed(Closed),
    /// Nothing arrived in the time allowed.
    TimedOut,
}

/// One WebSocket connection to a hub, opened and welcomed.
#[derive(Debug)]
pub struct Client {
    ws: WebSocketStream<TcpStream>,
    encoding: Encoding,
    welcome: Value,
    next_ref: u64,
    closed: Option<Closed>,
}

impl Client {
    /// Connects to `url` (`ws://host:port/ws?rooms=…`) and reads the welcome.
    pub async fn connect(url: &str) -> Result<Self, ClientError> {
        Self::connect_with(url, &[]).await
    }

    /// Connects with extra request headers (`Authorization`,
    /// `Sec-WebSocket-Protocol: wshub.msgpack`, …); the welcome must be the
    /// first message.
    pub async fn connect_with(url: &str, headers: &[(&str, &str)]) -> Result<Self, ClientError> {
        let encoding = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("sec-websocket-protocol"))
            .and_then(|(_, v)| {
                v.split(',')
                    .map(str::trim)
                    .find_map(Encoding::from_protocol)
            })
            .unwrap_or(Encoding::Json);
        let opened = async {
            let ws = connect_raw(url, headers).await?;
            let mut client = Self {
                ws,
                encoding,
                welcome: Value::Null,
                next_ref: 0,
                closed: None,
            };
            match client.next_within(CONNECT_TIMEOUT).await {
                Next::Message(m) if m["type"] == "welcome" => client.welcome = m,
                Next::Message(m) => return Err(ClientError::Protocol(m.to_string())),
                Next::Closed(closed) => return Err(ClientError::Closed(closed)),
                Next::TimedOut => return Err(ClientError::TimedOut),
            }
            Ok(client)
        };
        bounded(CONNECT_TIMEOUT, opened).await?
    }

    /// The hub's `welcome` message.
    pub fn welcome(&self) -> &Value {
        &self.welcome
    }

    /// This connection's ID, from the welcome.
    pub fn id(&self) -> &str {
        self.welcome["payload"]["connection_id"]
            .as_str()
            .unwrap_or_default()
    }

    /// The hub's epoch, from the welcome.
    pub fn epoch(&self) -> &str {
        self.welcome["payload"]["epoch"]
            .as_str()
            .unwrap_or_default()
    }

    /// How the connection ended, once a read has seen it end.
    pub fn closed(&self) -> Option<Closed> {
        self.closed
    }

    /// Sends `message` in the connection's encoding.
    pub async fn send(&mut self, message: &Value) -> Result<(), ClientError> {
        let frame = match self.encoding {
            Encoding::MsgPack => Message::binary(
                rmp_serde::to_vec_named(message)
                    .map_err(|e| ClientError::Protocol(e.to_string()))?,
            ),
            // A WebSocket client is never `Sse` (no subprotocol names it).
            Encoding::Json | Encoding::Sse => Message::text(message.to_string()),
        };
        self.send_frame(frame).await
    }

    /// Sends one raw frame, as built by tungstenite.
    pub async fn send_frame(&mut self, frame: Message) -> Result<(), ClientError> {
        bounded(CONNECT_TIMEOUT, self.ws.send(frame)).await??;
        Ok(())
    }

    /// The next hub message (heartbeats included), the end of the
    /// connection, or [`Next::TimedOut`] after `wait`. Frames that are not
    /// hub messages (Pings, Pongs, undecodable data) are skipped.
    pub async fn next_within(&mut self, wait: Duration) -> Next {
        if let Some(closed) = self.closed {
            return Next::Closed(closed);
        }
        let deadline = std::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let Ok(frame) = bounded(left, self.ws.next()).await else {
                return Next::TimedOut;
            };
            let message = match frame {
                Some(Ok(Message::Text(text))) => serde_json::from_str(&text).ok(),
                Some(Ok(Message::Binary(bytes))) => rmp_serde::from_slice(&bytes).ok(),
                Some(Ok(Message::Close(frame))) => {
                    return self.ended(Closed::Code(frame.map_or(1005, |f| u16::from(f.code))));
                }
                Some(Ok(_)) => None,
                Some(Err(_)) | None => return self.ended(Closed::Dropped),
            };
            if let Some(message) = message {
                return Next::Message(message);
            }
        }
    }

    fn ended(&mut self, closed: Closed) -> Next {
        Next::Closed(*self.closed.get_or_insert(closed))
    }

    /// Sends `message` with a fresh `ref` and returns the reply that
    /// carries it, waiting at most `wait`. Messages arriving meanwhile are
    /// passed to `skipped` in order, so a caller can keep the events.
    pub async fn request(
        &mut self,
        mut message: Value,
        wait: Duration,
        mut skipped: impl FnMut(Value),
    ) -> Result<Value, ClientError> {
        self.next_ref += 1;
        let reference = format!("r{}", self.next_ref);
        message["ref"] = json!(reference);
        self.send(&message).await?;
        let deadline = std::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.next_within(left).await {
                Next::Message(reply) if reply["ref"] == reference => return Ok(reply),
                Next::Message(other) => skipped(other),
                Next::Closed(closed) => return Err(ClientError::Closed(closed)),
                Next::TimedOut => return Err(ClientError::TimedOut),
            }
        }
    }

    /// Closes with 1000 and waits up to `wait` for the hub's reply.
    pub async fn close(mut self, wait: Duration) {
        let frame = CloseFrame {
            code: 1000.into(),
            reason: "bye".into(),
        };
        let _ = bounded(wait, self.ws.close(Some(frame))).await;
        let _ = bounded(wait, async { while self.ws.next().await.is_some() {} }).await;
    }
}

/// Opens a WebSocket to `url` with extra headers, without reading anything:
/// for callers that speak to the hub frame by frame.
pub async fn connect_raw(
    url: &str,
    headers: &[(&str, &str)],
) -> Result<WebSocketStream<TcpStream>, ClientError> {
    let mut request = url.into_client_request()?;
    for (name, value) in headers {
        let bad = |what: &str| {
            ClientError::WebSocket(tungstenite::Error::Url(
                tungstenite::error::UrlError::UnableToConnect(format!("bad header {what}")),
            ))
        };
        let name: HeaderName = name.parse().map_err(|_| bad("name"))?;
        let value = HeaderValue::from_str(value).map_err(|_| bad("value"))?;
        request.headers_mut().insert(name, value);
    }
    let host = request
        .uri()
        .host()
        .unwrap_or("127.0.0.1")
        .trim_matches(['[', ']'])
        .to_string();
    let port = request.uri().port_u16().unwrap_or(80);
    let stream = bounded(CONNECT_TIMEOUT, TcpStream::connect((host.as_str(), port)))
        .await?
        .map_err(tungstenite::Error::Io)?;
    // Hub messages are small; a large read buffer per client would only
    // cost memory when a program opens many.
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .max_message_size(Some(16 << 20))
        .max_frame_size(Some(16 << 20));
    let (ws, _) = bounded(
        CONNECT_TIMEOUT,
        async_tungstenite::client_async_with_config(request, stream, Some(config)),
    )
    .await??;
    Ok(ws)
}

/// Runs `future` for at most `wait`.
async fn bounded<T>(
    wait: Duration,
    future: impl std::future::Future<Output = T>,
) -> Result<T, ClientError> {
    async { Ok(future.await) }
        .or(async {
            smol::Timer::after(wait).await;
            Err(ClientError::TimedOut)
        })
        .await
}
