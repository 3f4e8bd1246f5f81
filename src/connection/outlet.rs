//! The hub's end of a connection: a queue for the writer task, and a write
//! straight to the socket when nothing is queued or in flight and the hub
//! has nothing else waiting. Paced events then cost one `send` each and no
//! task wake; under load the queue fills and the writer sends many frames
//! per syscall.

use std::io::{ErrorKind, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_channel::Sender;
use bytes::Bytes;

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
    /// Close with this code after what is queued before it. The same code
    /// also goes on the control channel, which interrupts a write that the
    /// peer is not taking.
    Close(CloseCode),
}

/// The hub's handle on one connection's writer.
#[derive(Debug, Clone)]
pub struct Outlet {
    socket: Socket,
    queue: Sender<Outbound>,
    control: Sender<CloseCode>,
    /// Set while the writer holds frames it has taken from the queue but not
    /// yet written: a direct write then would overtake them.
    writing: Arc<AtomicBool>,
}

impl Outlet {
    pub(super) fn new(
        socket: Socket,
        queue: Sender<Outbound>,
        control: Sender<CloseCode>,
        writing: Arc<AtomicBool>,
    ) -> Self {
        Self {
            socket,
            queue,
            control,
            writing,
        }
    }

    /// Items waiting for the writer.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Hands `item` to the connection: written at once when `write_through`
    /// and the connection is idle, queued for the writer otherwise.
    pub fn send(&self, item: Outbound, write_through: bool) {
        if write_through && self.queue.is_empty() && !self.writing.load(Ordering::Relaxed) {
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
    /// control channel also interrupts a write the peer is not taking.
    pub fn close(&self, code: CloseCode) {
        self.enqueue(Outbound::Close(code));
        // Holds one close; a second one for the same connection is moot.
        let _ = self.control.try_send(code);
    }
}
