//! A WebSocket connection as a pair of tasks joined to the hub. The reader
//! (this module) decodes frames, applies the rate limit and sends commands
//! to the hub; the writer ([`writer`]) drains the outbound queue the hub
//! fills. The reader always ends by telling the hub `Leave`; the writer ends
//! when the hub and the reader are both done with it, and closes the socket.

mod rate;
mod writer;

pub use rate::{RateLimiter, Verdict};

use std::time::{Duration, Instant};

use async_channel::{Receiver, Sender};
use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::Message;
use async_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use async_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use futures_lite::StreamExt;
use smol::net::TcpStream;

use crate::executor::Spawner;
use crate::hub::{ConnId, HubClient, Outbound};
use crate::protocol::{CloseCode, DecodeError, Encoding, ErrorCode, ProtocolError, decode};

/// Bytes tungstenite reads per syscall, and keeps allocated per connection.
/// Client messages are small; a large one grows the buffer as needed.
pub const READ_BUFFER_BYTES: usize = 1024;
/// Bytes of frames gathered before a write; a flush writes the rest.
pub const WRITE_BUFFER_BYTES: usize = 8 * 1024;
/// Pings and Pongs update the hub's last-seen time at most this often.
const ALIVE_EVERY: Duration = Duration::from_millis(50);
/// Rate-limit drops are reported to the hub at most this often.
const DROPS_EVERY: Duration = Duration::from_secs(1);

/// Everything an accepted upgrade needs to become a running connection.
#[derive(Debug)]
pub(crate) struct Upgraded {
    pub id: ConnId,
    pub encoding: Encoding,
    pub hub: HubClient,
    pub outbound: Receiver<Outbound>,
    pub control_rx: Receiver<CloseCode>,
    pub control_tx: Sender<CloseCode>,
    pub max_message_bytes: usize,
    pub rate_limit_per_s: u32,
    pub rate_limit_burst: u32,
    pub shutdown_grace: Duration,
    /// Dropped when the writer ends; the server waits for all of them at shutdown.
    pub done: Sender<()>,
}

/// The tungstenite settings for one connection (see DESIGN.md on memory).
pub fn websocket_config(max_message_bytes: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .max_write_buffer_size(usize::MAX)
        .max_message_size(Some(max_message_bytes))
        .max_frame_size(Some(max_message_bytes))
}

/// Runs the connection on `socket`, whose upgrade response has been written;
/// `leftover` holds bytes read past the request head. Returns when the
/// reader ends; the writer finishes on its own.
pub(crate) async fn run(socket: TcpStream, leftover: Vec<u8>, conn: Upgraded, spawner: &Spawner) {
    let config = websocket_config(conn.max_message_bytes);
    let ws =
        WebSocketStream::from_partially_read(socket.clone(), leftover, Role::Server, Some(config))
            .await;
    let (sink, source) = ws.split();
    let writer = writer::Writer {
        sink,
        socket,
        outbound: conn.outbound,
        control: conn.control_rx,
        shutdown_grace: conn.shutdown_grace,
        done: conn.done,
    };
    spawner.spawn(writer.run());

    let mut reader = Reader {
        id: conn.id,
        encoding: conn.encoding,
        hub: conn.hub,
        control: conn.control_tx,
        limiter: RateLimiter::new(conn.rate_limit_per_s, conn.rate_limit_burst, Instant::now()),
        pending_drops: 0,
        drops_reported: Instant::now(),
        alive_reported: Instant::now(),
    };
    let ending = reader.read_loop(source).await;
    if reader.pending_drops > 0 {
        reader.report_drops(false).await;
    }
    reader
        .hub
        .leave(conn.id, ending.reason, ending.close_code)
        .await;
}

/// How a connection ended, as its reader saw it.
struct Ending {
    /// The `reason` label of `wshub_disconnects_total`.
    reason: &'static str,
    /// The close code sent or received, if there was one.
    close_code: Option<u16>,
}

impl Ending {
    fn with(code: CloseCode) -> Self {
        Self {
            reason: code.disconnect_reason(),
            close_code: Some(code.code()),
        }
    }

    fn error() -> Self {
        Self {
            reason: "error",
            close_code: None,
        }
    }
}

struct Reader {
    id: ConnId,
    encoding: Encoding,
    hub: HubClient,
    control: Sender<CloseCode>,
    limiter: RateLimiter,
    pending_drops: u64,
    drops_reported: Instant,
    alive_reported: Instant,
}

impl Reader {
    /// Reads until the peer closes or breaks the connection, or a limit
    /// closes it.
    async fn read_loop(
        &mut self,
        mut source: async_tungstenite::WebSocketReceiver<TcpStream>,
    ) -> Ending {
        loop {
            let message = match source.next().await {
                // The stream ends after a completed closing handshake.
                None => return Ending::with(CloseCode::Normal),
                Some(Ok(message)) => message,
                Some(Err(e)) => return self.failed(e),
            };
            let now = Instant::now();
            let (bytes, frame_ok) = match &message {
                Message::Text(t) => (t.as_bytes(), self.encoding == Encoding::Json),
                Message::Binary(b) => (&b[..], self.encoding == Encoding::MsgPack),
                Message::Ping(_) | Message::Pong(_) => {
                    if now.duration_since(self.alive_reported) >= ALIVE_EVERY {
                        self.alive_reported = now;
                        if self.hub.alive(self.id).await.is_err() {
                            return Ending::with(CloseCode::GoingAway);
                        }
                    }
                    continue;
                }
                Message::Close(frame) => {
                    return Ending {
                        reason: CloseCode::Normal.disconnect_reason(),
                        close_code: Some(frame.as_ref().map_or(1005, |f| u16::from(f.code))),
                    };
                }
                Message::Frame(_) => continue,
            };
            match self.limiter.check(now) {
                // Drops not yet reported go with the next message let through,
                // so the registry's count is current whenever the client is.
                Verdict::Allow if self.pending_drops > 0 => self.report_drops(false).await,
                Verdict::Allow => {}
                Verdict::Drop { notify } => {
                    self.pending_drops += 1;
                    if notify || now.duration_since(self.drops_reported) >= DROPS_EVERY {
                        self.report_drops(notify).await;
                    }
                    continue;
                }
                Verdict::Abuse => {
                    self.pending_drops += 1;
                    self.report_drops(false).await;
                    return self.close(CloseCode::Policy);
                }
            }
            let decoded = if frame_ok {
                decode(bytes, self.encoding)
            } else {
                Err(unsupported_frame(self.encoding))
            };
            if self
                .hub
                .message(self.id, decoded, bytes.len())
                .await
                .is_err()
            {
                return Ending::with(CloseCode::GoingAway);
            }
        }
    }

    async fn report_drops(&mut self, notify: bool) {
        let count = std::mem::take(&mut self.pending_drops);
        self.drops_reported = Instant::now();
        // If the hub is gone the connection is being closed anyway.
        let _ = self.hub.dropped(self.id, count, notify).await;
    }

    /// How a read error ends the connection, after asking the writer to
    /// send the close code the error calls for.
    fn failed(&mut self, error: WsError) -> Ending {
        match error {
            WsError::Capacity(CapacityError::MessageTooLong { .. }) => self.close(CloseCode::TooBig),
            WsError::Capacity(_) => self.close(CloseCode::TooBig),
            WsError::Utf8(_) => self.close(CloseCode::InvalidPayload),
            WsError::Protocol(p) if !matches!(p, async_tungstenite::tungstenite::error::ProtocolError::ResetWithoutClosingHandshake) => {
                self.close(CloseCode::ProtocolError)
            }
            _ => Ending::error(),
        }
    }

    fn close(&mut self, code: CloseCode) -> Ending {
        // A full control channel already holds a close from the hub.
        let _ = self.control.try_send(code);
        Ending::with(code)
    }
}

fn unsupported_frame(encoding: Encoding) -> DecodeError {
    let message = match encoding {
        Encoding::Json => "binary frames are not accepted on wshub.json; send JSON text frames",
        Encoding::MsgPack => {
            "text frames are not accepted on wshub.msgpack; send MessagePack binary frames"
        }
    };
    DecodeError {
        reference: None,
        correlation_id: None,
        error: ProtocolError::new(ErrorCode::UnsupportedFrame, message),
    }
}
