//! The hub's end of a connection: a queue for the writer task, and a write
//! straight to the socket when nothing is queued or in flight and the hub
//! has nothing else waiting. Paced events then cost one `send` each and no
//! task wake; under load the queue fills and the writer sends many frames
//! per syscall.
//!
//! Everything a delivery looks at — the socket, the queue length, the
//! writer's flag, the counters — sits in one [`Link`], so a broadcast to
//! thousands of connections touches one cache line per connection.

use std::io::{ErrorKind, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, AtomicU64, Ordering};

use async_channel::Sender;
use bytes::Bytes;
use event_listener::Event;
use smol::Async;

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
    /// also recorded in the connection's `Link`, which interrupts a write that the
    /// peer is not taking.
    Close(CloseCode),
}

/// One connection's socket and the state its hub, reader and writer share.
#[derive(Debug)]
pub(crate) struct Link {
    /// The socket; the reader reads it, the writer (and the hub, when the
    /// connection is idle) writes it.
    pub socket: Async<TcpStream>,
    /// Items in the queue, kept beside the socket so that a delivery need
    /// not look at the channel.
    queued: AtomicU32,
    /// Set while the writer holds frames it has taken from the queue but not
    /// yet written: a direct write then would overtake them.
    writing: AtomicBool,
    /// The first close code asked for, 0 for none.
    close: AtomicU16,
    /// Wakes a writer waiting for the peer to take a write, so that a close
    /// does not wait behind a stuck socket.
    closing: Event,
    messages_out: AtomicU64,
    bytes_out: AtomicU64,
}

impl Link {
    /// A link around an upgraded socket. Until the writer starts, the
    /// upgrade response may not be written yet, so nothing may be written
    /// around it: `writing` starts set.
    pub fn new(socket: Async<TcpStream>) -> Self {
        Self {
            socket,
            queued: AtomicU32::new(0),
            writing: AtomicBool::new(true),
            close: AtomicU16::new(0),
            closing: Event::new(),
            messages_out: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
        }
    }

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

    /// Marks whether the writer holds unwritten frames.
    pub fn set_writing(&self, writing: bool) {
        self.writing.store(writing, Ordering::Relaxed);
    }

    /// The writer took one item off the queue.
    pub fn dequeued(&self) {
        self.queued.fetch_sub(1, Ordering::Relaxed);
    }

    /// Enqueues `item` on `queue`, counting it.
    pub fn enqueue(&self, queue: &Sender<Outbound>, item: Outbound) {
        // Unbounded, so never full; closed only once the writer is gone, and
        // then the reader's Leave is on its way and the item is moot.
        if queue.try_send(item).is_ok() {
            self.queued.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The hub's handle on one connection: where its messages go.
#[derive(Debug, Clone)]
pub struct Outlet {
    link: Arc<Link>,
    queue: Sender<Outbound>,
}

impl Outlet {
    pub(super) fn new(link: Arc<Link>, queue: Sender<Outbound>) -> Self {
        Self { link, queue }
    }

    /// Hands `item` to the connection unless `limit` items already wait
    /// (`false`: the peer is a slow consumer). With `write_through`, an idle
    /// connection gets it written at once; otherwise it is queued for the
    /// writer.
    pub fn push(&self, item: Outbound, limit: usize, write_through: bool) -> bool {
        match item {
            Outbound::Message(m) if !m.is_close() => self.push_message(&m, limit, write_through),
            Outbound::Ping => {
                if !self.has_room(limit) {
                    return false;
                }
                if !(write_through && self.write_now(&PING_FRAME)) {
                    self.enqueue(Outbound::Ping);
                }
                true
            }
            other => {
                if !self.has_room(limit) {
                    return false;
                }
                self.enqueue(other);
                true
            }
        }
    }

    /// [`Outlet::push`] for an event shared by many connections: the frame
    /// is cloned only if it has to wait in the queue.
    pub fn push_message(&self, message: &Encoded, limit: usize, write_through: bool) -> bool {
        if !self.has_room(limit) {
            return false;
        }
        self.count_sent(message.len());
        let bytes: &[u8] = message.wire();
        if write_through {
            match self.write_idle(bytes) {
                Some(n) if n == bytes.len() => return true,
                // The rest waits for the writer, which waits for room.
                Some(n) => {
                    let rest = Outbound::Rest(message.wire().slice(n..));
                    self.enqueue(rest);
                    return true;
                }
                None => {}
            }
        }
        self.link
            .enqueue(&self.queue, Outbound::Message(message.clone()));
        true
    }

    /// Reads the connection's state, so that it is in cache for the push
    /// that follows: a broadcast first warms every member this way, and the
    /// cache misses overlap instead of stalling one send each.
    pub fn warm(&self) {
        std::hint::black_box(self.link.queued.load(Ordering::Relaxed));
    }

    fn has_room(&self, limit: usize) -> bool {
        (self.link.queued.load(Ordering::Relaxed) as usize) < limit
    }

    /// Writes a small frame whole if the connection is idle; `false` if it
    /// must be queued instead.
    fn write_now(&self, frame: &[u8]) -> bool {
        self.write_idle(frame) == Some(frame.len())
    }

    /// Writes `bytes` at once when nothing is queued or in flight: how many
    /// went out, or `None` when nothing was written (busy, full or failed:
    /// the writer then retries, or meets the error and ends the connection).
    fn write_idle(&self, bytes: &[u8]) -> Option<usize> {
        let link = &*self.link;
        if link.queued.load(Ordering::Relaxed) != 0 || link.writing.load(Ordering::Relaxed) {
            return None;
        }
        loop {
            match link.socket.get_ref().write(bytes) {
                Ok(0) => return None,
                Ok(n) => return Some(n),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return None,
            }
        }
    }

    /// Queues `item` for the writer, whatever the limit (the reader's
    /// Pongs and close echoes).
    pub(super) fn enqueue(&self, item: Outbound) {
        self.link.enqueue(&self.queue, item);
    }

    /// Asks the writer to close with `code` after what is queued; the
    /// request also interrupts a write the peer is not taking.
    pub fn close(&self, code: CloseCode) {
        self.enqueue(Outbound::Close(code));
        self.link.request_close(code);
    }

    /// Counts a message of `bytes` sent outside [`Outlet::push`] (the welcome).
    pub fn count_sent(&self, bytes: usize) {
        self.link.messages_out.fetch_add(1, Ordering::Relaxed);
        self.link
            .bytes_out
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Messages and bytes handed to this connection so far.
    pub fn sent(&self) -> (u64, u64) {
        (
            self.link.messages_out.load(Ordering::Relaxed),
            self.link.bytes_out.load(Ordering::Relaxed),
        )
    }
}
