//! The writer task: drains the outbound queue, writing every queued frame
//! with one vectored write, and performs the close the hub or the reader
//! asks for on the control channel.

use std::io::{ErrorKind, IoSlice, Write};
use std::time::Duration;

use async_channel::{Receiver, Sender};
use futures_lite::FutureExt;

use super::Socket;
use super::frame::{PING_FRAME, close_frame};
use crate::hub::Outbound;
use crate::protocol::{CloseCode, Encoded};

/// Frames gathered into one write at most; also keeps one busy connection
/// from holding the executor.
const MAX_BATCH: usize = 128;
/// How long a close frame and the peer's reply may take, except at shutdown
/// (which allows `shutdown_grace`).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

pub(super) struct Writer {
    pub socket: Socket,
    pub outbound: Receiver<Outbound>,
    pub control: Receiver<CloseCode>,
    pub shutdown_grace: Duration,
    pub done: Sender<()>,
}

/// What woke the writer.
enum Wake {
    Item(Outbound),
    Close(CloseCode),
    /// Both the hub and the reader have let go of the connection.
    Finished,
}

/// How a batch went.
enum Sent {
    All,
    /// A close frame (the echo of the client's Close) went out.
    Closed,
    Failed,
    /// A close was asked for mid-write; `partial` if a frame was cut short.
    Interrupted {
        code: CloseCode,
        partial: bool,
    },
}

impl Writer {
    pub(super) async fn run(self) {
        let control = &self.control;
        loop {
            // The control channel is polled first: a close jumps the queue.
            let wake = async {
                match control.recv().await {
                    Ok(code) => Wake::Close(code),
                    Err(_) => Wake::Finished,
                }
            }
            .or(async {
                match self.outbound.recv().await {
                    Ok(item) => Wake::Item(item),
                    Err(_) => Wake::Finished,
                }
            })
            .await;
            match wake {
                Wake::Item(first) => match self.write_batch(first, true).await {
                    Sent::All => continue,
                    Sent::Closed => self.linger(CLOSE_TIMEOUT).await,
                    Sent::Failed => {}
                    Sent::Interrupted { code, partial } => self.close_with(code, !partial).await,
                },
                Wake::Close(code) => self.close_with(code, true).await,
                Wake::Finished => self.flush_rest().await,
            }
            break;
        }
        // Whatever state the peer is in, the socket is finished; this also
        // wakes the reader if it is still waiting.
        let _ = self.socket.get_ref().shutdown(std::net::Shutdown::Both);
        drop(self.done);
    }

    /// The hub and the reader have let go: write what they queued last (the
    /// echo of a client's Close, typically), within [`CLOSE_TIMEOUT`].
    async fn flush_rest(&self) {
        async {
            while let Ok(item) = self.outbound.try_recv() {
                if !matches!(self.write_batch(item, false).await, Sent::All) {
                    break;
                }
            }
        }
        .or(async {
            smol::Timer::after(CLOSE_TIMEOUT).await;
        })
        .await;
    }

    /// Writes `first` and whatever else is queued, in as few writes as the
    /// socket allows; when `interruptible`, a close asked for meanwhile
    /// stops it.
    async fn write_batch(&self, first: Outbound, interruptible: bool) -> Sent {
        let mut closing = frame_is_close(&first);
        let mut items = vec![first];
        while !closing && items.len() < MAX_BATCH {
            match self.outbound.try_recv() {
                Ok(item) => {
                    closing = frame_is_close(&item);
                    items.push(item);
                }
                Err(_) => break,
            }
        }
        let frames: Vec<&[u8]> = items.iter().map(wire).collect();
        let (mut index, mut offset) = (0, 0);
        while index < frames.len() {
            let write = self.write_some(&frames[index..], offset);
            let wrote = if interruptible {
                async { Ok(write.await) }
                    .or(async { Err(self.control.recv().await) })
                    .await
            } else {
                Ok(write.await)
            };
            let n = match wrote {
                Ok(Ok(n)) if n > 0 => n,
                Ok(_) => return Sent::Failed,
                Err(Ok(code)) => {
                    return Sent::Interrupted {
                        code,
                        partial: offset > 0,
                    };
                }
                // The reader and the hub let go mid-write: the peer may
                // still be reading, so finish without racing the channel.
                Err(Err(_)) => match self.write_some(&frames[index..], offset).await {
                    Ok(n) if n > 0 => n,
                    _ => return Sent::Failed,
                },
            };
            (index, offset) = advance(&frames, index, offset, n);
        }
        if closing { Sent::Closed } else { Sent::All }
    }

    /// One vectored write of `frames` (the first from `offset` on), waiting
    /// for the socket to accept at least a byte.
    async fn write_some(&self, frames: &[&[u8]], offset: usize) -> std::io::Result<usize> {
        self.socket
            .write_with(|stream| {
                let mut slices = [IoSlice::new(&[]); MAX_BATCH];
                let mut count = 0;
                for (i, frame) in frames.iter().enumerate().take(MAX_BATCH) {
                    slices[i] = IoSlice::new(if i == 0 { &frame[offset..] } else { frame });
                    count += 1;
                }
                let mut stream = stream;
                loop {
                    match stream.write_vectored(&slices[..count]) {
                        Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                        other => return other,
                    }
                }
            })
            .await
    }

    /// Sends a close frame with `code` (unless a frame was cut short, which
    /// would garble it), then waits for the reader to end.
    async fn close_with(&self, code: CloseCode, send_frame: bool) {
        let wait = if code == CloseCode::GoingAway {
            self.shutdown_grace
        } else {
            CLOSE_TIMEOUT.min(self.shutdown_grace.max(Duration::from_millis(100)))
        };
        if send_frame {
            let frame = close_frame(Some(code.code()), code.reason());
            let bytes: &[u8] = frame.wire();
            let sent =
                async { matches!(self.write_some(&[bytes], 0).await, Ok(n) if n == bytes.len()) }
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

    /// Waits (at most `wait`) for the reader to see the peer's reply and end:
    /// the control channel closes once the reader and the hub let go.
    async fn linger(&self, wait: Duration) {
        let control = &self.control;
        async { while control.recv().await.is_ok() {} }
            .or(async {
                smol::Timer::after(wait).await;
            })
            .await;
    }
}

/// The bytes of one queued item.
fn wire(item: &Outbound) -> &[u8] {
    match item {
        Outbound::Message(encoded) => encoded.wire(),
        Outbound::Ping => &PING_FRAME,
    }
}

fn frame_is_close(item: &Outbound) -> bool {
    matches!(item, Outbound::Message(e) if Encoded::is_close(e))
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
