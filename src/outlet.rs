//! The hub's end of a connection: a queue for the writer task, and a write
//! straight to the socket when nothing is queued or in flight and the hub
//! has nothing else waiting. Paced events then cost one `send` each and no
//! task wake; under load the queue fills and the writer sends many frames
//! per syscall.
//!
//! Everything a delivery looks at — the socket, the queue length, the
//! writer's flag, the counters — sits in one [`Link`], so a broadcast to
//! thousands of connections touches one cache line per connection.
//!
//! A Server-Sent Events stream (PROTOCOL.md section 12) is a link with a
//! [`StreamCursor`]: the hub hands it the shared `data:` bytes of a room
//! event and the outlet writes the stream's own `id:` line before them.

use std::cell::Cell;
use std::fmt;
use std::io::{ErrorKind, IoSlice, Write};
use std::net::TcpStream;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, AtomicU64, Ordering};

use async_channel::Sender;
use bytes::Bytes;
use event_listener::Event;
use smol::Async;
use socket2::SockRef;

use crate::protocol::{CloseCode, Encoded, PING_FRAME, close_frame, pong_frame};

/// What the hub queues for a connection's writer.
#[derive(Debug, Clone)]
pub enum Outbound {
    /// A hub message, already encoded.
    Message(Encoded),
    /// A protocol Ping frame.
    Ping,
    /// The Pong waiting in the connection's `Link`, written as it is when
    /// the writer comes to this item: a newer Ping replaces it there rather
    /// than queue another (RFC 6455, 5.5.3), so one is queued at most.
    Pong,
    /// Bytes to write as they are: the unwritten end of a frame the hub
    /// began to write itself (or, once the writer has taken it, a Pong).
    Rest(Bytes),
    /// A room event on a stream whose `id:` line is its own: the line,
    /// then the event's shared `data:` bytes (boxed: the queue's items stay
    /// small for every other connection).
    Tagged(Box<TaggedEvent>),
    /// Close with this code after what is queued before it. The request is
    /// also recorded in the connection's `Link`, which interrupts a write that the
    /// peer is not taking.
    Close(CloseCode),
}

/// An SSE room event with the `id:` line of one stream.
#[derive(Debug, Clone)]
pub struct TaggedEvent {
    /// `id: <cursor>\n`.
    pub id: Bytes,
    /// `data: …\n\n`, shared with every other stream.
    pub data: Encoded,
}

/// Where an SSE stream stands (PROTOCOL.md section 12): the hub's epoch and,
/// for each room of the stream in the order of `?rooms=`, the seq of the
/// last event of it handed to the stream (or where the room stood when the
/// stream joined). The stream's rooms never change, so the seqs are a
/// fixed array of atomics, and the hub thread updates them as it delivers.
///
/// A stream of one room needs no cursor of its own after the welcome: its
/// `id:` lines are the room's, built once per event and shared
/// ([`Outlet::push_message`] of the tagged form). Only streams of several
/// rooms go through [`Outlet::push_tagged`], which advances the cursor and
/// writes it out.
#[derive(Debug)]
pub struct StreamCursor {
    /// Set again by the hub as the stream joins: a cluster's epoch may
    /// have changed since the server started ([`StreamCursor::set_epoch`]).
    epoch: std::sync::Mutex<Arc<str>>,
    rooms: Box<[(Box<str>, AtomicU64)]>,
}

impl StreamCursor {
    /// A cursor of `rooms` (in order, without duplicates), each at seq 0.
    pub fn new(epoch: Arc<str>, rooms: &[String]) -> Self {
        Self {
            epoch: std::sync::Mutex::new(epoch),
            rooms: rooms
                .iter()
                .map(|r| (r.as_str().into(), AtomicU64::new(0)))
                .collect(),
        }
    }

    /// The epoch the cursor is of.
    pub fn epoch(&self) -> Arc<str> {
        self.epoch
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Makes the cursor one of `epoch` (the hub's as the stream joins).
    pub fn set_epoch(&self, epoch: &str) {
        let mut held = self
            .epoch
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if **held != *epoch {
            *held = epoch.into();
        }
    }

    /// Whether the stream has exactly one room, whose shared `id:` line
    /// is then the stream's too.
    pub fn is_single_room(&self) -> bool {
        self.rooms.len() == 1
    }

    /// `id: <cursor>\n`, made per delivery to a stream of several rooms:
    /// measured to the byte first, so it is one allocation the `Bytes`
    /// takes over as it is, and written without the formatting machinery.
    pub fn id_line(&self) -> Bytes {
        let epoch = self.epoch();
        let mut len = b"id: ".len() + epoch.len() + 1;
        for (room, seq) in self.rooms.iter() {
            len += 2 + room.len() + decimal_len(seq.load(Ordering::Relaxed));
        }
        let mut line = Vec::with_capacity(len);
        line.extend_from_slice(b"id: ");
        line.extend_from_slice(epoch.as_bytes());
        for (room, seq) in self.rooms.iter() {
            line.push(b';');
            line.extend_from_slice(room.as_bytes());
            line.push(b'=');
            push_decimal(&mut line, seq.load(Ordering::Relaxed));
        }
        line.push(b'\n');
        Bytes::from(line)
    }

    /// Records that the stream is at `seq` in `room` (a room not in the
    /// stream is ignored).
    pub fn set(&self, room: &str, seq: u64) {
        if let Some((_, at)) = self.rooms.iter().find(|(r, _)| &**r == room) {
            at.store(seq, Ordering::Relaxed);
        }
    }
}

impl fmt::Display for StreamCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.epoch())?;
        for (room, seq) in self.rooms.iter() {
            write!(f, ";{room}={}", seq.load(Ordering::Relaxed))?;
        }
        Ok(())
    }
}

/// How many decimal digits `n` has.
fn decimal_len(mut n: u64) -> usize {
    let mut digits = 1;
    while n >= 10 {
        n /= 10;
        digits += 1;
    }
    digits
}

/// Appends `n` in decimal.
fn push_decimal(out: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut n = n;
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
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
    /// Set once a close frame (a close request or the echo of the client's
    /// Close) is queued: there is never a second one.
    close_queued: AtomicBool,
    /// Wakes a writer waiting for the peer to take a write, so that a close
    /// does not wait behind a stuck socket.
    closing: Event,
    messages_out: AtomicU64,
    bytes_out: AtomicU64,
    /// Set for an SSE stream: what its `id:` lines say.
    cursor: Option<StreamCursor>,
}

/// The newest Pong frame not yet written, shared by one connection's
/// reader and writer only (both tasks of the hub thread, so an `Rc<Cell>`:
/// no lock, and two words a connection). Full exactly while an
/// [`Outbound::Pong`] is queued.
#[derive(Clone, Default)]
pub(crate) struct PongSlot(Rc<Cell<Option<Box<[u8]>>>>);

impl fmt::Debug for PongSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A Cell cannot be read without taking what it holds.
        f.write_str("PongSlot")
    }
}

impl PongSlot {
    /// Takes the Pong an [`Outbound::Pong`] stands for (the writer, as it
    /// comes to that item).
    pub fn take(&self) -> Option<Box<[u8]>> {
        self.0.take()
    }
}

impl Link {
    /// A link around an upgraded socket. Until the writer starts, the
    /// upgrade response may not be written yet, so nothing may be written
    /// around it: `writing` starts set.
    pub fn new(socket: Async<TcpStream>) -> Self {
        Self::with_cursor(socket, None)
    }

    /// A link around the socket of an SSE stream whose response head is
    /// not written yet.
    pub fn stream(socket: Async<TcpStream>, cursor: StreamCursor) -> Self {
        Self::with_cursor(socket, Some(cursor))
    }

    fn with_cursor(socket: Async<TcpStream>, cursor: Option<StreamCursor>) -> Self {
        Self {
            socket,
            queued: AtomicU32::new(0),
            writing: AtomicBool::new(true),
            close: AtomicU16::new(0),
            close_queued: AtomicBool::new(false),
            closing: Event::new(),
            messages_out: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            cursor,
        }
    }

    /// Whether this is an SSE stream (no close frame ends it: the socket
    /// does).
    pub fn is_stream(&self) -> bool {
        self.cursor.is_some()
    }

    /// The stream's cursor, for an SSE stream.
    pub fn cursor(&self) -> Option<&StreamCursor> {
        self.cursor.as_ref()
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

    /// Claims the connection's one close frame: `false` if one is queued.
    fn claim_close_frame(&self) -> bool {
        !self.close_queued.swap(true, Ordering::Relaxed)
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
            // The reader's Pongs go through `Outlet::pong` (one at most);
            // the hub makes none.
            Outbound::Pong => {
                debug_assert!(false, "a Pong pushed past Outlet::pong");
                true
            }
            // A close is one at most and waits for no room.
            Outbound::Close(code) => {
                self.close(code);
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

    /// Hands a room event to an SSE stream of several rooms: advances the
    /// stream's cursor to `seq` in `room` and writes the cursor's `id:`
    /// line before `data`, the event's `data:` bytes every stream shares.
    /// Only the line is made per stream. `false` as for [`Outlet::push`].
    pub fn push_tagged(
        &self,
        data: &Encoded,
        room: &str,
        seq: u64,
        limit: usize,
        write_through: bool,
    ) -> bool {
        let Some(cursor) = self.link.cursor() else {
            return self.push_message(data, limit, write_through);
        };
        if !self.has_room(limit) {
            return false;
        }
        cursor.set(room, seq);
        let id = cursor.id_line();
        self.count_sent(data.len());
        if write_through {
            let whole = id.len() + data.wire().len();
            match self.write_idle_pair(&id, data.wire()) {
                Some(n) if n == whole => return true,
                Some(n) => {
                    // Rare (the socket took part of a small write): the
                    // rest is copied once into one buffer for the writer.
                    let mut rest = Vec::with_capacity(whole - n);
                    if n < id.len() {
                        rest.extend_from_slice(&id[n..]);
                        rest.extend_from_slice(data.wire());
                    } else {
                        rest.extend_from_slice(&data.wire()[n - id.len()..]);
                    }
                    self.enqueue(Outbound::Rest(Bytes::from(rest)));
                    return true;
                }
                None => {}
            }
        }
        let tagged = TaggedEvent {
            id,
            data: data.clone(),
        };
        self.enqueue(Outbound::Tagged(Box::new(tagged)));
        true
    }

    /// The stream's cursor, if this is an SSE stream.
    pub fn cursor(&self) -> Option<&StreamCursor> {
        self.link.cursor()
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

    /// [`Outlet::write_idle`] of two buffers in one `sendmsg`.
    fn write_idle_pair(&self, first: &[u8], second: &[u8]) -> Option<usize> {
        let link = &*self.link;
        if link.queued.load(Ordering::Relaxed) != 0 || link.writing.load(Ordering::Relaxed) {
            return None;
        }
        let slices = [IoSlice::new(first), IoSlice::new(second)];
        loop {
            // sendmsg, as the writer does: no SIGPIPE for an embedding program.
            match SockRef::from(link.socket.get_ref())
                .send_vectored_with_flags(&slices, libc::MSG_NOSIGNAL)
            {
                Ok(0) => return None,
                Ok(n) => return Some(n),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return None,
            }
        }
    }

    /// Queues `item` for the writer, whatever the limit.
    fn enqueue(&self, item: Outbound) {
        self.link.enqueue(&self.queue, item);
    }

    /// Queues the Pong answering a Ping with `payload` (PROTOCOL.md section
    /// 11). While an earlier Pong is unsent, this one replaces it and takes
    /// no room; otherwise it takes a place in the queue like any message,
    /// and `false` means `limit` items already wait (a slow consumer). A
    /// peer that pings and never reads so holds one Pong at most.
    pub(crate) fn pong(&self, slot: &PongSlot, payload: &[u8], limit: usize) -> bool {
        let older = slot.0.take();
        if older.is_none() && !self.has_room(limit) {
            return false;
        }
        if older.is_none() {
            self.enqueue(Outbound::Pong);
        }
        // The writer takes the slot as it dequeues the item, so it always
        // finds the newest.
        slot.0.set(Some(pong_frame(payload)));
        true
    }

    /// Queues the echo of the client's Close, unless a close frame is
    /// queued already (there is one at most).
    pub(super) fn echo_close(&self, code: Option<u16>) {
        if self.link.claim_close_frame() {
            self.enqueue(Outbound::Message(close_frame(code, "")));
        }
    }

    /// Asks the writer to close with `code` after what is queued; the
    /// request also interrupts a write the peer is not taking. Only the
    /// first close (request or echo) is queued, so repeated requests add
    /// nothing.
    pub fn close(&self, code: CloseCode) {
        if self.link.claim_close_frame() {
            self.enqueue(Outbound::Close(code));
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// An outlet on one end of a loopback connection, with its queue.
    fn connected() -> (Outlet, async_channel::Receiver<Outbound>, TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let peer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (socket, _) = listener.accept().unwrap();
        let link = Arc::new(Link::new(Async::new(socket).unwrap()));
        let (tx, rx) = async_channel::unbounded();
        (Outlet::new(link, tx), rx, peer)
    }

    fn wire(item: &Outbound) -> Vec<u8> {
        match item {
            Outbound::Message(m) => m.wire().to_vec(),
            other => panic!("not a message: {other:?}"),
        }
    }

    #[test]
    fn a_cursor_line_is_the_cursor_to_the_byte() {
        let cursor = StreamCursor::new("e".into(), &["a".into(), "bb".into()]);
        assert_eq!(&cursor.id_line()[..], b"id: e;a=0;bb=0\n");
        cursor.set("bb", u64::MAX);
        cursor.set("a", 10);
        cursor.set("not-in-it", 3);
        let line = cursor.id_line();
        assert_eq!(line, format!("id: {cursor}\n").into_bytes());
        assert_eq!(&line[..], b"id: e;a=10;bb=18446744073709551615\n");
        for n in [0, 9, 10, 99, 100, 12345, u64::MAX] {
            let mut out = Vec::new();
            push_decimal(&mut out, n);
            assert_eq!(
                (out.len(), out),
                (decimal_len(n), n.to_string().into_bytes())
            );
        }
    }

    #[test]
    fn a_newer_ping_replaces_the_unsent_pong() {
        let (outlet, rx, _peer) = connected();
        let slot = PongSlot::default();
        for i in 0..1000u32 {
            assert!(outlet.pong(&slot, &i.to_be_bytes(), 4));
        }
        assert_eq!(rx.len(), 1, "one Pong queued for a thousand Pings");
        assert!(matches!(rx.try_recv(), Ok(Outbound::Pong)));
        outlet.link.dequeued();
        let pong = slot.take().expect("the newest Pong");
        assert_eq!(pong[..], [0x8A, 4, 0, 0, 3, 231]);
        assert!(slot.take().is_none());
        // Taken: the next Ping queues a Pong of its own.
        assert!(outlet.pong(&slot, b"again", 4));
        assert_eq!(rx.len(), 1);
    }

    #[test]
    fn a_pong_needs_room_in_the_queue() {
        let (outlet, rx, _peer) = connected();
        for _ in 0..3 {
            outlet.enqueue(Outbound::Ping);
        }
        let slot = PongSlot::default();
        assert!(!outlet.pong(&slot, b"x", 3), "full: a slow consumer");
        assert!(slot.take().is_none());
        assert!(outlet.pong(&slot, b"x", 4));
        // A replacement takes no room, even in a queue that filled since.
        outlet.enqueue(Outbound::Ping);
        assert!(outlet.pong(&slot, b"y", 4));
        assert_eq!(rx.len(), 5);
        let pong = slot.take().unwrap();
        assert_eq!(pong[..], [0x8A, 1, b'y']);
    }

    #[test]
    fn one_close_frame_is_queued_at_most() {
        let (outlet, rx, _peer) = connected();
        outlet.close(CloseCode::SlowConsumer);
        outlet.close(CloseCode::Policy);
        outlet.echo_close(Some(1000));
        assert!(outlet.push(Outbound::Close(CloseCode::Admin), 0, false));
        assert_eq!(rx.len(), 1);
        assert!(matches!(
            rx.try_recv(),
            Ok(Outbound::Close(CloseCode::SlowConsumer))
        ));
        assert_eq!(outlet.link.close_requested(), Some(CloseCode::SlowConsumer));

        let (outlet, rx, _peer) = connected();
        outlet.echo_close(None);
        outlet.echo_close(Some(1000));
        outlet.close(CloseCode::GoingAway);
        assert_eq!(rx.len(), 1);
        assert_eq!(wire(&rx.try_recv().unwrap()), [0x88, 0]);
    }
}
