//! A WebSocket connection as a pair of tasks joined to the hub. The reader
//! (this module) decodes client frames ([`frame`]), applies the rate limit
//! and sends commands to the hub; the writer ([`writer`]) drains the
//! outbound queue the hub fills, several frames per write. The reader
//! always ends by telling the hub `Leave`; the writer ends when the hub and
//! the reader are both done with it, and closes the socket.
//!
//! Neither task keeps a buffer while the connection is idle: the reader
//! reads into the thread's stack and keeps only an incomplete frame, and
//! the writer writes frames the hub encoded once for every recipient.

mod frame;
mod outlet;
mod rate;
mod writer;

pub use frame::FrameDecoder;
pub(crate) use outlet::Link;
pub use outlet::{Outbound, Outlet};
pub use rate::{RateLimiter, Verdict};

use std::io::{ErrorKind, Read};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_channel::{Receiver, Sender};

use crate::executor::Spawner;
use crate::hub::{Command, ConnId, HubClient};
use crate::protocol::{CloseCode, DecodeError, Encoding, ErrorCode, ProtocolError, decode};
use frame::{Decoder, Incoming, Violation};

/// Bytes read per syscall, into the stack: a burst of small messages is
/// one read, and nothing stays allocated between reads.
const READ_CHUNK: usize = 16 * 1024;
/// Pings and Pongs update the hub's last-seen time at most this often.
const ALIVE_EVERY: Duration = Duration::from_millis(50);
/// Rate-limit drops are reported to the hub at most this often.
const DROPS_EVERY: Duration = Duration::from_secs(1);

/// The queue between the hub, the reader and the writer of one connection,
/// as the tasks keep it (the hub keeps the [`Outlet`]).
#[derive(Debug)]
pub(crate) struct Pipes {
    outbound_rx: Receiver<Outbound>,
    /// The reader's own outlet: Pongs, closes and the echo of a client's
    /// Close go through the writer like everything else.
    reader_outlet: Outlet,
}

/// The hub's outlet to a new connection on `link`, and the rest of its pipes.
pub(crate) fn pipes(link: &Arc<Link>) -> (Outlet, Pipes) {
    let (outbound_tx, outbound_rx) = async_channel::unbounded();
    let outlet = Outlet::new(link.clone(), outbound_tx);
    let pipes = Pipes {
        outbound_rx,
        reader_outlet: outlet.clone(),
    };
    (outlet, pipes)
}

/// Everything an accepted upgrade needs to become a running connection.
#[derive(Debug)]
pub(crate) struct Upgraded {
    pub id: ConnId,
    pub encoding: Encoding,
    pub hub: HubClient,
    pub pipes: Pipes,
    pub max_message_bytes: usize,
    pub rate_limit_per_s: u32,
    pub rate_limit_burst: u32,
    pub shutdown_grace: Duration,
    /// Dropped when the writer ends; the server waits for all of them at shutdown.
    pub done: Sender<()>,
}

/// Starts the connection's reader and writer tasks on `link`, whose
/// upgrade response (and welcome) has been written; `leftover` holds bytes
/// read past the request head. Each task is spawned on its own, so neither
/// carries the state of the HTTP exchange that led here.
pub(crate) fn start(link: Arc<Link>, leftover: Vec<u8>, conn: Upgraded, spawner: &Spawner) {
    let pipes = conn.pipes;
    let writer = writer::Writer {
        link: link.clone(),
        outbound: pipes.outbound_rx,
        shutdown_grace: conn.shutdown_grace,
        done: conn.done,
    };
    let now = Instant::now();
    let reader = Reader {
        link,
        id: conn.id,
        encoding: conn.encoding,
        hub: conn.hub,
        outlet: pipes.reader_outlet,
        decoder: Decoder::new(conn.max_message_bytes),
        pending: leftover,
        limiter: RateLimiter::new(conn.rate_limit_per_s, conn.rate_limit_burst, now),
        pending_drops: 0,
        drops_reported: now,
        alive_reported: now,
    };
    spawner.spawn(writer.run());
    spawner.spawn(reader.run());
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

/// What one read brought.
enum Got {
    /// Bytes arrived; complete messages (if any) are in the output.
    Data,
    /// Nothing to read now.
    WouldBlock,
    /// The peer closed the socket.
    Eof,
    /// The socket failed.
    Failed,
    /// The bytes broke RFC 6455.
    Broken(Violation),
}

struct Reader {
    link: Arc<Link>,
    id: ConnId,
    encoding: Encoding,
    hub: HubClient,
    outlet: Outlet,
    decoder: Decoder,
    /// Bytes of an incomplete frame; empty (and unallocated) between frames.
    pending: Vec<u8>,
    limiter: RateLimiter,
    pending_drops: u64,
    drops_reported: Instant,
    alive_reported: Instant,
}

/// What to do after one client message.
enum Step {
    Next,
    Send(Command),
    /// Send, then end the connection.
    Last(Command, Ending),
    End(Ending),
}

impl Reader {
    /// Reads until the connection ends, then tells the hub.
    async fn run(mut self) {
        let ending = self.read_loop().await;
        if self.pending_drops > 0 {
            let report = self.drops(false);
            let _ = self.hub.command(report).await;
        }
        self.hub
            .leave(self.id, ending.reason, ending.close_code)
            .await;
    }

    /// Reads until the peer closes or breaks the connection, or a limit
    /// closes it. Each await holds at most one command, so the task stays
    /// small while it waits.
    async fn read_loop(&mut self) -> Ending {
        let mut messages = Vec::new();
        // Bytes that came with the request head may hold whole frames.
        if !self.pending.is_empty()
            && let Err(v) = self.decode_pending(&mut messages)
        {
            return self.broken(v);
        }
        loop {
            for message in messages.drain(..) {
                let (command, ending) = match self.handle(message) {
                    Step::Next => continue,
                    Step::Send(command) => (command, None),
                    Step::Last(command, ending) => (command, Some(ending)),
                    Step::End(ending) => return ending,
                };
                if self.hub.command(command).await.is_err() {
                    return Ending::with(CloseCode::GoingAway);
                }
                if let Some(ending) = ending {
                    return ending;
                }
            }
            // An idle connection keeps no message list either.
            messages = Vec::new();
            match self.read(&mut messages) {
                // Let everyone else run between two reads of a busy client.
                Got::Data => futures_lite::future::yield_now().await,
                Got::WouldBlock => {
                    if self.link.socket.readable().await.is_err() {
                        return Ending::error();
                    }
                }
                Got::Eof | Got::Failed => return Ending::error(),
                Got::Broken(v) => return self.broken(v),
            }
        }
    }

    /// One non-blocking read into the stack, decoded into `messages`.
    fn read(&mut self, messages: &mut Vec<Incoming>) -> Got {
        let mut chunk = [0u8; READ_CHUNK];
        let n = loop {
            match self.link.socket.get_ref().read(&mut chunk) {
                Ok(0) => return Got::Eof,
                Ok(n) => break n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Got::WouldBlock,
                Err(_) => return Got::Failed,
            }
        };
        let result = if self.pending.is_empty() {
            // The common case: whole frames straight from the stack.
            match self.decoder.decode(&chunk[..n], messages) {
                Ok(used) => {
                    self.pending.extend_from_slice(&chunk[used..n]);
                    Ok(())
                }
                Err(v) => Err(v),
            }
        } else {
            self.pending.extend_from_slice(&chunk[..n]);
            self.decode_pending(messages)
        };
        match result {
            Ok(()) => Got::Data,
            Err(v) => Got::Broken(v),
        }
    }

    fn decode_pending(&mut self, messages: &mut Vec<Incoming>) -> Result<(), Violation> {
        let used = self.decoder.decode(&self.pending, messages)?;
        if used == self.pending.len() {
            // Give the memory back: an idle connection keeps no buffer.
            self.pending = Vec::new();
        } else {
            self.pending.drain(..used);
            if let Some(need) = self.decoder.frame_len(&self.pending) {
                self.pending
                    .reserve(need.saturating_sub(self.pending.len()));
            }
        }
        Ok(())
    }

    /// What one message calls for: answered here (Pings, Closes, drops
    /// over the rate) or turned into a command for the hub.
    fn handle(&mut self, message: Incoming) -> Step {
        let now = Instant::now();
        let (bytes, frame_ok) = match message {
            Incoming::Text(bytes) => (bytes, self.encoding == Encoding::Json),
            Incoming::Binary(bytes) => (bytes, self.encoding == Encoding::MsgPack),
            Incoming::Ping(payload) => {
                // The writer owns the socket's write side; a failed send
                // means it is already closing.
                let pong = Outbound::Message(frame::pong_frame(&payload));
                self.outlet.enqueue(pong);
                return self.alive(now);
            }
            Incoming::Pong => return self.alive(now),
            Incoming::Close(code) => {
                let echo = Outbound::Message(frame::close_frame(code, ""));
                self.outlet.enqueue(echo);
                return Step::End(Ending {
                    reason: CloseCode::Normal.disconnect_reason(),
                    close_code: Some(code.unwrap_or(1005)),
                });
            }
        };
        match self.limiter.check(now) {
            Verdict::Allow => {}
            Verdict::Drop { notify } => {
                self.pending_drops += 1;
                return if notify || now.duration_since(self.drops_reported) >= DROPS_EVERY {
                    Step::Send(self.drops(notify))
                } else {
                    Step::Next
                };
            }
            Verdict::Abuse => {
                self.pending_drops += 1;
                let report = self.drops(false);
                return Step::Last(report, self.close(CloseCode::Policy));
            }
        }
        let decoded = if frame_ok {
            decode(&bytes, self.encoding)
        } else {
            Err(unsupported_frame(self.encoding))
        };
        // Drops not yet reported go with the next message let through, so
        // the registry's count is current whenever the client is.
        Step::Send(Command::Message {
            conn: self.id,
            message: Box::new(decoded),
            bytes: bytes.len(),
            dropped: std::mem::take(&mut self.pending_drops),
        })
    }

    fn alive(&mut self, now: Instant) -> Step {
        if now.duration_since(self.alive_reported) < ALIVE_EVERY {
            return Step::Next;
        }
        self.alive_reported = now;
        Step::Send(Command::Alive(self.id))
    }

    /// The report of the drops not yet told to the hub.
    fn drops(&mut self, notify: bool) -> Command {
        self.drops_reported = Instant::now();
        Command::Dropped {
            conn: self.id,
            count: std::mem::take(&mut self.pending_drops),
            notify,
        }
    }

    /// Ends the connection for a framing violation, with its close code.
    fn broken(&mut self, violation: Violation) -> Ending {
        self.close(match violation {
            Violation::Protocol(_) => CloseCode::ProtocolError,
            Violation::InvalidUtf8 => CloseCode::InvalidPayload,
            Violation::TooBig => CloseCode::TooBig,
        })
    }

    fn close(&mut self, code: CloseCode) -> Ending {
        // As the hub does it: queued, and recorded to interrupt a stuck write.
        self.outlet.close(code);
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
