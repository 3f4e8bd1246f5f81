//! The writer task: drains the outbound queue, writing every queued frame
//! with one `send` (or `sendmsg` for several), and performs the close the
//! hub or the reader queued. Idle, it waits on the queue alone; only a
//! write the peer is not taking also listens for close requests, so a
//! close can interrupt it, and gives up once the peer has taken nothing
//! for the write timeout (PROTOCOL.md section 11, "Slow readers").
//!
//! An SSE stream (section 12) has no close frame: its close is the end of
//! the response, so the writer sends what was queued before the close,
//! shuts its side of the socket and waits briefly for the peer to go.

use std::io::{ErrorKind, IoSlice, Write};
use std::time::{Duration, Instant};

use async_channel::Receiver;
use bytes::Bytes;
use futures_lite::FutureExt;
use socket2::SockRef;

use std::sync::Arc;

use crate::outlet::{Link, Outbound, PongSlot};
use crate::protocol::{CloseCode, PING_FRAME, close_frame};
use crate::shutdown::TaskGuard;

/// Frames gathered into one write at most; also keeps one busy connection
/// from holding the executor.
const MAX_BATCH: usize = 128;
/// How long a close frame and the peer's reply may take, except at shutdown
/// (which allows `shutdown_grace`).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

pub(super) struct Writer {
    pub link: Arc<Link>,
    pub outbound: Receiver<Outbound>,
    pub shutdown_grace: Duration,
    /// How long a write may make no progress (`handshake_timeout`).
    pub write_timeout: Duration,
    /// Dropped once the socket is finished: the drain waits for it.
    pub task: TaskGuard,
    /// The newest unsent Pong, which the reader fills.
    pub pong: PongSlot,
}

/// How a batch went.
enum Written {
    All,
    /// The batch ended with a close frame (the echo of the client's Close).
    Echoed,
    /// The batch ended with a close request.
    Close(CloseCode),
    Failed,
    /// A close was asked for while the peer was not taking a write;
    /// `partial` if a frame was cut short.
    Interrupted {
        code: CloseCode,
        partial: bool,
    },
    /// The peer took nothing for the write timeout; `partial` as above.
    Stalled {
        partial: bool,
    },
}

/// What a write the peer is not taking waits for.
enum Wait {
    Writable(std::io::Result<()>),
    CloseRequested,
    TimedOut,
}

impl Writer {
    pub(super) async fn run(self) {
        // Spawned once the upgrade response is out: from now on the hub may
        // write to the socket itself while nothing is queued.
        self.link.set_writing(false);
        // The queue closes once the hub and the reader have both let go.
        while let Ok(first) = self.outbound.recv().await {
            self.link.set_writing(true);
            self.link.dequeued();
            let sent = self.write_batch(first).await;
            // A closing connection keeps `writing` set: the hub no longer
            // writes to the socket itself, so no data frame can follow the
            // close frame.
            self.link.set_writing(!matches!(sent, Written::All));
            match sent {
                Written::All => continue,
                Written::Echoed => self.linger(CLOSE_TIMEOUT).await,
                Written::Close(code) => self.close_with(code, true).await,
                Written::Interrupted { code, partial } => self.close_with(code, !partial).await,
                Written::Stalled { partial } => self.give_up(partial),
                Written::Failed => {}
            }
            break;
        }
        // Whatever state the peer is in, the socket is finished; this also
        // wakes the reader if it is still waiting.
        let _ = self
            .link
            .socket
            .get_ref()
            .shutdown(std::net::Shutdown::Both);
        drop(self.task);
    }

    /// Writes `first` and whatever else is queued, in as few writes as the
    /// socket allows, up to a close request.
    async fn write_batch(&self, first: Outbound) -> Written {
        let mut items = Vec::new();
        self.gather(first, &mut items);
        while items.last().is_none_or(|i| !ends_batch(i)) && items.len() < MAX_BATCH {
            match self.outbound.try_recv() {
                Ok(item) => {
                    self.link.dequeued();
                    self.gather(item, &mut items);
                }
                Err(_) => break,
            }
        }
        let last = match items.last() {
            Some(Outbound::Close(code)) => Some(Written::Close(*code)),
            Some(Outbound::Message(m)) if m.is_close() => Some(Written::Echoed),
            _ => None,
        };
        let frames: Vec<&[u8]> = items
            .iter()
            .flat_map(|i| wire(i).into_iter().flatten())
            .collect();
        let (mut index, mut offset) = (0, 0);
        // When the peer last took bytes, once a write has had to wait.
        let mut progress: Option<Instant> = None;
        while index < frames.len() {
            let n = match self.write_now(&frames[index..], offset) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    // The peer is not keeping up: wait for room, unless a
                    // close is asked for meanwhile or the peer has taken
                    // nothing for too long.
                    let listener = self.link.listen();
                    let partial = offset > 0;
                    if let Some(code) = self.link.close_requested() {
                        return Written::Interrupted { code, partial };
                    }
                    let deadline = *progress.get_or_insert_with(Instant::now) + self.write_timeout;
                    let wait = async { Wait::Writable(self.link.socket.writable().await) }
                        .or(async {
                            listener.await;
                            Wait::CloseRequested
                        })
                        .or(async {
                            smol::Timer::at(deadline).await;
                            Wait::TimedOut
                        })
                        .await;
                    match wait {
                        Wait::Writable(Ok(())) | Wait::CloseRequested => continue,
                        Wait::Writable(Err(_)) => return Written::Failed,
                        Wait::TimedOut => return Written::Stalled { partial },
                    }
                }
                Err(_) => return Written::Failed,
            };
            if n == 0 {
                return Written::Failed;
            }
            progress = None;
            (index, offset) = advance(&frames, index, offset, n);
        }
        last.unwrap_or(Written::All)
    }

    /// Adds a dequeued `item` to a batch; a Pong becomes the newest Pong
    /// the reader left in the link (taken now, so a Ping arriving from here
    /// on queues a Pong of its own).
    fn gather(&self, item: Outbound, items: &mut Vec<Outbound>) {
        match item {
            Outbound::Pong => {
                let pong = self.pong.take();
                items.extend(pong.map(|frame| Outbound::Rest(Bytes::from(frame))));
            }
            other => items.push(other),
        }
    }

    /// Ends a connection whose peer has taken nothing for the write
    /// timeout: a slow consumer, whose queue would only have filled.
    /// The close is recorded (so the reader, woken by the shutdown that
    /// follows, tells the hub `slow_consumer`) and a 4009 close frame is
    /// tried once, without waiting: the peer is not reading.
    fn give_up(&self, partial: bool) {
        let code = CloseCode::SlowConsumer;
        self.link.request_close(code);
        if !partial && !self.link.is_stream() {
            let frame = close_frame(Some(code.code()), code.reason());
            // Most likely refused; the connection ends either way.
            let _ = self.write_now(&[frame.wire()], 0);
        }
    }

    /// One non-blocking write of `frames` (the first from `offset` on).
    fn write_now(&self, frames: &[&[u8]], offset: usize) -> std::io::Result<usize> {
        loop {
            let result = if frames.len() == 1 {
                // std's TcpStream write is send(MSG_NOSIGNAL).
                self.link.socket.get_ref().write(&frames[0][offset..])
            } else {
                let slices: Vec<IoSlice<'_>> = frames
                    .iter()
                    .take(MAX_BATCH)
                    .enumerate()
                    .map(|(i, f)| IoSlice::new(if i == 0 { &f[offset..] } else { f }))
                    .collect();
                // sendmsg rather than writev: no SIGPIPE for a program that
                // embeds the hub without ignoring it.
                SockRef::from(self.link.socket.get_ref())
                    .send_vectored_with_flags(&slices, libc::MSG_NOSIGNAL)
            };
            match result {
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }

    /// Sends a close frame with `code` (unless a frame was cut short, which
    /// would garble it), then waits for the reader to end.
    async fn close_with(&self, code: CloseCode, send_frame: bool) {
        let wait = if code == CloseCode::GoingAway {
            self.shutdown_grace
        } else {
            CLOSE_TIMEOUT.min(self.shutdown_grace.max(Duration::from_millis(100)))
        };
        if self.link.is_stream() {
            // The end of the response is the close: the peer reads to the
            // FIN, and its own close ends the reader.
            let _ = self
                .link
                .socket
                .get_ref()
                .shutdown(std::net::Shutdown::Write);
            self.linger(wait).await;
            return;
        }
        if send_frame {
            let frame = close_frame(Some(code.code()), code.reason());
            let bytes: &[u8] = frame.wire();
            let sent = async {
                let mut offset = 0;
                while offset < bytes.len() {
                    match self.write_now(&[bytes], offset) {
                        Ok(0) => return false,
                        Ok(n) => offset += n,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {
                            if self.link.socket.writable().await.is_err() {
                                return false;
                            }
                        }
                        Err(_) => return false,
                    }
                }
                true
            }
            .or(async {
                smol::Timer::after(wait).await;
                false
            })
            .await;
            if !sent {
                return;
            }
        }
        self.linger(wait).await;
    }

    /// Waits (at most `wait`) for the reader to see the peer's reply and
    /// end: the queue closes once the reader and the hub let go of it.
    async fn linger(&self, wait: Duration) {
        let outbound = &self.outbound;
        async { while outbound.recv().await.is_ok() {} }
            .or(async {
                smol::Timer::after(wait).await;
            })
            .await;
    }
}

/// The bytes of one queued item, in one or two pieces; a close request has
/// none.
fn wire(item: &Outbound) -> [Option<&[u8]>; 2] {
    match item {
        Outbound::Message(encoded) => [Some(encoded.wire()), None],
        Outbound::Ping => [Some(&PING_FRAME), None],
        Outbound::Rest(bytes) => [Some(bytes), None],
        Outbound::Tagged(event) => [Some(&event.id), Some(event.data.wire())],
        // Turned into its frame as the batch is gathered.
        Outbound::Pong | Outbound::Close(_) => [None, None],
    }
}

/// Whether nothing may be written after `item`.
fn ends_batch(item: &Outbound) -> bool {
    match item {
        Outbound::Message(m) => m.is_close(),
        Outbound::Ping | Outbound::Pong | Outbound::Rest(_) | Outbound::Tagged(_) => false,
        Outbound::Close(_) => true,
    }
}

/// The position after `n` more bytes of `frames` were written from
/// (`index`, `offset`).
fn advance(frames: &[&[u8]], mut index: usize, mut offset: usize, mut n: usize) -> (usize, usize) {
    while n > 0 && index < frames.len() {
        let left = frames[index].len() - offset;
        if n >= left {
            n -= left;
            index += 1;
            offset = 0;
        } else {
            offset += n;
            n = 0;
        }
    }
    (index, offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advance_walks_partial_writes() {
        let frames: [&[u8]; 3] = [b"abc", b"de", b"fghi"];
        assert_eq!(advance(&frames, 0, 0, 2), (0, 2));
        assert_eq!(advance(&frames, 0, 2, 1), (1, 0));
        assert_eq!(advance(&frames, 0, 0, 5), (2, 0));
        assert_eq!(advance(&frames, 1, 1, 2), (2, 1));
        assert_eq!(advance(&frames, 0, 0, 9), (3, 0));
    }
}
