//! A connection as a pair of tasks joined to the hub: for a WebSocket, the
//! reader and writer below; for an SSE stream, the same writer and a
//! watcher ([`stream`]). The WebSocket reader
//! (this module) decodes client frames ([`frame`]), applies the rate limit
//! and sends commands to the hub; the writer ([`writer`]) drains the
//! outbound queue the hub fills, several frames per write. The reader
//! always ends by telling the hub `Leave`; the writer ends when the hub and
//! the reader are both done with it, and closes the socket.
//!
//! Neither task keeps a buffer while the connection is idle: the reader
//! reads into the thread's stack and keeps only an incomplete frame, and
//! the writer writes frames the hub encoded once for every recipient.
//!
//! What a peer can make a connection hold is bounded (PROTOCOL.md section
//! 11): one incomplete frame and one fragmented message, each within
//! `max_message_bytes` ([`inbox`], [`frame`]); the messages of one read
//! (a 16 KiB read holds at most ~2,700 frames); one Pong, however many
//! Pings arrive; one close frame; and `send_queue` queued messages.

mod frame;
mod inbox;
mod rate;
mod stream;
mod writer;

pub use frame::FrameDecoder;
pub use rate::{RateLimiter, Verdict};
pub(crate) use stream::{Stream, start_stream};

use std::io::{ErrorKind, Read};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_channel::Receiver;

use crate::executor::Spawner;
use crate::hub::{Command, ConnId, HubClient};
use crate::outlet::{Link, Outbound, Outlet, PongSlot};
use crate::protocol::{CloseCode, DecodeError, Encoding, ErrorCode, ProtocolError, decode};
use crate::shutdown::TaskGuard;
use frame::{Inbound, Violation};
use inbox::Inbox;

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
pub(crate) struct Queues {
    outbound_rx: Receiver<Outbound>,
    /// The reader's own outlet: Pongs, closes and the echo of a client's
    /// Close go through the writer like everything else.
    reader_outlet: Outlet,
    /// The newest unsent Pong, shared by the reader and the writer.
    pong: PongSlot,
}

/// The hub's outlet to a new connection on `link`, and the rest of its pipes.
pub(crate) fn pipes(link: &Arc<Link>) -> (Outlet, Queues) {
    let (outbound_tx, outbound_rx) = async_channel::unbounded();
    let outlet = Outlet::new(link.clone(), outbound_tx);
    let pipes = Queues {
        outbound_rx,
        reader_outlet: outlet.clone(),
        pong: PongSlot::default(),
    };
    (outlet, pipes)
}

/// Everything an accepted upgrade needs to become a running connection.
#[derive(Debug)]
pub(crate) struct Upgraded {
    pub id: ConnId,
    pub encoding: Encoding,
    pub hub: HubClient,
    pub pipes: Queues,
    pub max_message_bytes: usize,
    pub rate_limit_per_s: u32,
    pub rate_limit_burst: u32,
    /// The outbound queue's limit (`send_queue`), which Pongs respect too.
    pub send_queue: usize,
    /// How long a write may make no progress before the connection is
    /// closed (`handshake_timeout`, PROTOCOL.md section 11).
    pub write_timeout: Duration,
    pub shutdown_grace: Duration,
    /// Dropped when the writer ends; the drain waits for all of them.
    pub task: TaskGuard,
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
        write_timeout: conn.write_timeout,
        task: conn.task,
        pong: pipes.pong.clone(),
    };
    let now = Instant::now();
    let reader = Reader {
        link,
        id: conn.id,
        encoding: conn.encoding,
        hub: conn.hub,
        outlet: pipes.reader_outlet,
        pong: pipes.pong,
        inbox: Inbox::new(conn.max_message_bytes),
        leftover,
        send_queue: conn.send_queue,
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
enum ReadOutcome {
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
    pong: PongSlot,
    inbox: Inbox,
    /// Bytes read past the request head, decoded first.
    leftover: Vec<u8>,
    send_queue: usize,
    limiter: RateLimiter,
    pending_drops: u64,
    drops_reported: Instant,
    alive_reported: Instant,
}

/// What to do after one client message.
enum NextStep {
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
        let leftover = std::mem::take(&mut self.leftover);
        if let Err(v) = self.inbox.feed(&leftover, &mut messages) {
            return self.broken(v);
        }
        drop(leftover);
        loop {
            for message in messages.drain(..) {
                let (command, ending) = match self.handle(message) {
                    NextStep::Next => continue,
                    NextStep::Send(command) => (command, None),
                    NextStep::Last(command, ending) => (command, Some(ending)),
                    NextStep::End(ending) => return ending,
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
                ReadOutcome::Data => futures_lite::future::yield_now().await,
                ReadOutcome::WouldBlock => {
                    if self.link.socket.readable().await.is_err() {
                        return self.ended();
                    }
                }
                ReadOutcome::Eof | ReadOutcome::Failed => return self.ended(),
                ReadOutcome::Broken(v) => return self.broken(v),
            }
        }
    }

    /// One non-blocking read into the stack, decoded into `messages`.
    fn read(&mut self, messages: &mut Vec<Inbound>) -> ReadOutcome {
        let mut chunk = [0u8; READ_CHUNK];
        let n = loop {
            match self.link.socket.get_ref().read(&mut chunk) {
                Ok(0) => return ReadOutcome::Eof,
                Ok(n) => break n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return ReadOutcome::WouldBlock,
                Err(_) => return ReadOutcome::Failed,
            }
        };
        match self.inbox.feed(&chunk[..n], messages) {
            Ok(()) => ReadOutcome::Data,
            Err(v) => ReadOutcome::Broken(v),
        }
    }

    /// The socket ended under the reader. If the writer gave up on a peer
    /// that took nothing (it records a 4009 close before shutting the
    /// socket), that is how the connection ended; otherwise an error. A
    /// close requested by the hub is recorded too, but the hub has already
    /// forgotten the connection then.
    fn ended(&self) -> Ending {
        match self.link.close_requested() {
            Some(code) => Ending::with(code),
            None => Ending::error(),
        }
    }

    /// What one message calls for: answered here (Pings, Closes, drops
    /// over the rate) or turned into a command for the hub.
    fn handle(&mut self, message: Inbound) -> NextStep {
        let now = Instant::now();
        let (bytes, frame_ok) = match message {
            Inbound::Text(bytes) => (bytes, self.encoding == Encoding::Json),
            Inbound::Binary(bytes) => (bytes, self.encoding == Encoding::MsgPack),
            Inbound::Ping(payload) => {
                // Section 11: a Ping counts toward the rate limit (over it,
                // no Pong), and its Pong toward the queue limit.
                if let Some(step) = self.over_rate(now) {
                    return step;
                }
                if !self.outlet.pong(&self.pong, &payload, self.send_queue) {
                    return NextStep::End(self.close(CloseCode::SlowConsumer));
                }
                return self.alive(now);
            }
            // A Pong is life, and not rate limited: it is the answer to the
            // hub's own heartbeat Ping, so counting it could push an honest
            // client at its limit into drops, and it costs the hub nothing
            // to take (no reply, no copy of its payload, the hub told at
            // most every 50 ms). Section 4's "every message" are the
            // client's JSON messages; section 11 names Pings alone.
            Inbound::Pong => return self.alive(now),
            Inbound::Close(code) => {
                self.outlet.echo_close(code);
                return NextStep::End(Ending {
                    reason: CloseCode::Normal.disconnect_reason(),
                    close_code: Some(code.unwrap_or(1005)),
                });
            }
        };
        if let Some(step) = self.over_rate(now) {
            return step;
        }
        let decoded = if frame_ok {
            decode(&bytes, self.encoding)
        } else {
            Err(unsupported_frame(self.encoding))
        };
        // Drops not yet reported go with the next message let through, so
        // the registry's count is current whenever the client is.
        NextStep::Send(Command::Message {
            conn: self.id,
            message: Box::new(decoded),
            bytes: bytes.len(),
            dropped: std::mem::take(&mut self.pending_drops),
        })
    }

    /// Takes a token for one message: `None` within the rate, or what to
    /// do with the message dropped over it.
    fn over_rate(&mut self, now: Instant) -> Option<NextStep> {
        match self.limiter.check(now) {
            Verdict::Allow => None,
            Verdict::Drop { notify } => {
                self.pending_drops += 1;
                Some(
                    if notify || now.duration_since(self.drops_reported) >= DROPS_EVERY {
                        NextStep::Send(self.drops(notify))
                    } else {
                        NextStep::Next
                    },
                )
            }
            Verdict::Abuse => {
                self.pending_drops += 1;
                let report = self.drops(false);
                Some(NextStep::Last(report, self.close(CloseCode::Policy)))
            }
        }
    }

    fn alive(&mut self, now: Instant) -> NextStep {
        if now.duration_since(self.alive_reported) < ALIVE_EVERY {
            return NextStep::Next;
        }
        self.alive_reported = now;
        NextStep::Send(Command::Alive(self.id))
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
        // A stream has no reader of messages; only WebSockets get here.
        Encoding::Json | Encoding::Sse => {
            "binary frames are not accepted on wshub.json; send JSON text frames"
        }
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
