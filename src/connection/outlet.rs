//! The hub's end of a connection: a queue for the writer task, and a write
//! straight to the socket when nothing is queued or in flight and the hub
//! has nothing else waiting. Paced events then cost one `send` each and no
//! task wake; under load the queue fills and the writer sends many frames
//! per syscall.

use std::io::{ErrorKind, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};

use async_channel::Sender;
use bytes::Bytes;
use event_listener::Event;

use super::Socket;
use super::frame::PING_FRAME;
use crate::protocol::{CloseCode, Encoded};

/// What the hub queues for a connection's writer.
#[derive(Debug, Clone)]
pub enum Outbound {
    /// A hub message, already encoded.
    Message(Encoded),
    /// A protocol Ping frame.
    Ping,
    /// The unwritten end of a frame the hub began to write itself.
    Rest(Bytes),
    /// Close with this code after what is queued before it. The request is
    /// also recorded in the connection's shared state, which interrupts a
    /// write that the peer is not taking.
    Close(CloseCode),
}

/// What the hub, the reader and the writer of one connection share besides
/// the queue (a few bytes: an idle connection should cost little).
#[derive(Debug, Default)]
pub(crate) struct Shared {
    /// Set while the writer holds frames it has taken from the queue but not
    /// yet written: a direct write then would overtake them.
    pub writing: AtomicBool,
    /// The first close code asked for, 0 for none.
    close: AtomicU16,
    /// Wakes a writer waiting for the peer to take a write, so that a close
    /// does not wait behind a stuck socket.
    closing: Event,
}

impl Shared {
    /// Records a close request (the first one counts) and wakes the writer.
    pub fn request_close(&self, code: CloseCode) {
        let _ = self
            .close
            .compare_exchange(0, code.code(), Ordering::Relaxed, Ordering::Relaxed);
        self.closing.notify(usize::MAX);
    }

    /// The close asked for, if any.
    pub fn close_requested(&self) -> Option<CloseCode> {
        CloseCode::from_code(self.close.load(Ordering::Relaxed))
    }

    /// A listener woken by the next close request.
    pub fn listen(&self) -> event_listener::EventListener {
        self.closing.listen()
    }
}

/// The hub's handle on one connection's writer.
#[derive(Debug, Clone)]
pub struct Outlet {
    socket: Socket,
    queue: Sender<Outbound>,
    shared: Arc<Shared>,
}

impl Outlet {
    pub(super) fn new(socket: Socket, queue: Sender<Outbound>, shared: Arc<Shared>) -> Self {
        Self {
            socket,
            queue,
            shared,
        }
    }

    /// Items waiting for the writer.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Hands `item` to the connection: written at once when `write_through`
    /// and the connection is idle, queued for the writer otherwise.
    pub fn send(&self, item: Outbound, write_through: bool) {
        if write_through && self.queue.is_empty() && !self.shared.writing.load(Ordering::Relaxed) {
            let bytes: &[u8] = match &item {
                Outbound::Message(m) if !m.is_close() => m.wire(),
                Outbound::Ping => &PING_FRAME,
                _ => return self.enqueue(item),
            };
            match self.socket.get_ref().write(bytes) {
                Ok(n) if n == bytes.len() => return,
                // The rest waits for the writer, which waits for room.
                Ok(n) => {
                    let rest = match &item {
                        Outbound::Message(m) => m.wire().slice(n..),
                        _ => Bytes::copy_from_slice(&bytes[n..]),
                    };
                    return self.enqueue(Outbound::Rest(rest));
                }
                // Full, interrupted or failed: the writer retries, or meets
                // the error and ends the connection.
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => {}
            }
        }
        self.enqueue(item);
    }

    fn enqueue(&self, item: Outbound) {
        // Unbounded, so never full; closed only once the writer is gone, and
        // then the reader's Leave is on its way and the item is moot.
        let _ = self.queue.try_send(item);
    }

    /// Asks the writer to close with `code` after what is queued; the
    /// request also interrupts a write the peer is not taking.
    pub fn close(&self, code: CloseCode) {
        self.enqueue(Outbound::Close(code));
        self.shared.request_close(code);
    }
}
