//! The soak's crowd: thousands of WebSocket clients on one thread and one
//! edge-triggered `mio::Poll`, each with a [`Role`]. They connect (a few
//! hundred at a time), upgrade into one room, and read what the hub sends,
//! answering Pings; then the controller gives [`Order`]s. Slow consumers
//! and vanishing peers freeze: they stop reading and writing (a slow
//! consumer's small receive buffer and MSS make the hub's queue fill
//! fast; a vanishing peer's large buffers hold what comes until the hub's
//! heartbeat gives up on it). On `Leave`, normal members send Close 1000
//! and wait for the hub to close; frozen ones read what is left, to see
//! how the hub closed them, and drop the socket at its end.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::thread::JoinHandle;
use std::time::Duration;

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};
use socket2::{Domain, Protocol, Socket, Type};

use super::client::{FrameReader, Incoming};
use super::wire::{self, opcode};

/// The token of the crowd's waker (an order came).
const WAKE: Token = Token(usize::MAX);
/// Reads one socket gets per turn before the others have theirs.
const READS_PER_TURN: usize = 16;
/// `EINPROGRESS` on Linux: a non-blocking connect has started.
const EINPROGRESS: i32 = 115;
/// A slow consumer's receive buffer, in bytes (the kernel doubles it).
const SLOW_RCVBUF: usize = 4 * 1024;
/// A slow consumer's MSS, which also keeps the hub's send buffer small.
const SLOW_MSS: u32 = 536;
/// A vanishing peer's receive buffer: room for all it is sent.
const VANISH_RCVBUF: usize = 1 << 20;
/// The text that marks a soak event.
const EVENT_MARK: &[u8] = b"\"type\":\"soak\"";

/// What a member of the crowd does once told to freeze.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Role {
    /// Reads everything, answers Pings, leaves with Close 1000.
    Normal,
    /// Stops reading: the hub should close it with 4009.
    Slow,
    /// Stops reading and writing with the socket open: the hub's heartbeat
    /// should close it with 4000.
    Vanish,
}

impl Role {
    /// The role of member `i`: a third of each.
    pub fn of(i: usize) -> Self {
        match i % 3 {
            0 => Self::Normal,
            1 => Self::Slow,
            _ => Self::Vanish,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Normal => "normal",
            Self::Slow => "slow",
            Self::Vanish => "vanish",
        }
    }
}

/// Who connects, where.
#[derive(Debug, Clone)]
pub(crate) struct CrowdPlan {
    pub addr: SocketAddr,
    /// The upgrade's query, `?rooms=<room>`.
    pub query: String,
    /// The slow consumers' query (their room and one only they are in).
    pub slow_query: String,
    pub members: usize,
    /// Source addresses, round-robin.
    pub sources: Vec<IpAddr>,
    /// Connects in flight at once.
    pub concurrency: usize,
}

/// Counters the controller reads while the crowd runs.
#[derive(Debug, Default)]
pub(crate) struct Counts {
    pub welcomed: AtomicU64,
    pub failed: AtomicU64,
    /// Soak events received, by role.
    pub events: [AtomicU64; 3],
    /// Members whose socket is still open.
    pub open: AtomicU64,
}

/// What the controller tells the crowd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Order {
    /// Slow and vanishing members stop reading and writing.
    Freeze,
    /// Normal members close; frozen ones read to the end and drop.
    Leave,
}

/// How the members ended: "role:code" (or "role:none") → count.
pub(crate) type Tally = BTreeMap<String, u64>;

/// The running crowd.
#[derive(Debug)]
pub(crate) struct Crowd {
    orders: Sender<Order>,
    waker: Waker,
    handle: JoinHandle<Tally>,
    pub counts: Arc<Counts>,
}

impl Crowd {
    /// Starts connecting the crowd on a thread of its own.
    pub fn start(plan: CrowdPlan) -> io::Result<Self> {
        let poll = Poll::new()?;
        let waker = Waker::new(poll.registry(), WAKE)?;
        let counts = Arc::new(Counts::default());
        let (orders, received) = mpsc::channel();
        let shared = counts.clone();
        let handle = std::thread::Builder::new()
            .name("bench-crowd".into())
            .spawn(move || crowd_loop(poll, &plan, &shared, &received))?;
        Ok(Self {
            orders,
            waker,
            handle,
            counts,
        })
    }

    /// Gives an order.
    pub fn order(&self, order: Order) {
        // A crowd that has ended needs no more orders.
        let _ = self.orders.send(order);
        let _ = self.waker.wake();
    }

    /// Closes every socket still open and says how each member ended.
    pub fn stop(self) -> Tally {
        drop(self.orders);
        let _ = self.waker.wake();
        self.handle.join().unwrap_or_default()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Connecting,
    Upgrading,
    Open,
    /// Sent or answered a Close; waiting for the end of the stream.
    Closing,
}

#[derive(Debug)]
struct Member {
    stream: TcpStream,
    role: Role,
    state: State,
    head: Vec<u8>,
    reader: FrameReader,
    outbox: Vec<u8>,
    close_code: Option<u16>,
    welcomed: bool,
}

/// The crowd's state on its thread.
struct Loop<'a> {
    poll: Poll,
    plan: &'a CrowdPlan,
    counts: &'a Counts,
    members: Vec<Option<Member>>,
    next: usize,
    connecting: usize,
    frozen: bool,
    draining: bool,
    buffer: Vec<u8>,
    /// The `Sec-WebSocket-Accept` every upgrade must bring.
    accept: String,
    tally: Tally,
}

fn crowd_loop(poll: Poll, plan: &CrowdPlan, counts: &Counts, orders: &Receiver<Order>) -> Tally {
    let mut crowd = Loop {
        poll,
        plan,
        counts,
        members: (0..plan.members).map(|_| None).collect(),
        next: 0,
        connecting: 0,
        frozen: false,
        draining: false,
        buffer: vec![0; 64 * 1024],
        accept: wire::expected_accept(),
        tally: Tally::new(),
    };
    let mut events = Events::with_capacity(1024);
    let mut ready: Vec<usize> = Vec::new();
    let mut turn: Vec<usize> = Vec::new();
    loop {
        crowd.connect_more();
        let timeout = if ready.is_empty() { 20 } else { 0 };
        if let Err(e) = crowd
            .poll
            .poll(&mut events, Some(Duration::from_millis(timeout)))
            && e.kind() != io::ErrorKind::Interrupted
        {
            break;
        }
        match orders.try_recv() {
            Ok(Order::Freeze) => crowd.frozen = true,
            Ok(Order::Leave) => {
                crowd.draining = true;
                ready.extend(crowd.leave());
            }
            Err(TryRecvError::Empty) => {}
            Err(TryRecvError::Disconnected) => break,
        }
        std::mem::swap(&mut turn, &mut ready);
        turn.extend(
            events
                .iter()
                .map(|e| e.token())
                .filter(|t| *t != WAKE)
                .map(|t| t.0),
        );
        for i in turn.drain(..) {
            if crowd.service(i) {
                ready.push(i);
            }
        }
    }
    // Every socket still open closes as the members drop.
    for member in crowd.members.iter_mut().filter_map(Option::take) {
        crowd.counts.open.fetch_sub(1, Relaxed);
        let key = format!("{}:{}", member.role.name(), code_name(member.close_code));
        *crowd.tally.entry(key).or_default() += 1;
    }
    crowd.tally
}

fn code_name(code: Option<u16>) -> String {
    code.map_or("none".into(), |c| c.to_string())
}

impl Loop<'_> {
    /// Starts connects until `concurrency` are in flight.
    fn connect_more(&mut self) {
        while self.connecting < self.plan.concurrency && self.next < self.plan.members {
            let i = self.next;
            self.next += 1;
            let role = Role::of(i);
            let source = (!self.plan.sources.is_empty())
                .then(|| self.plan.sources[i % self.plan.sources.len()]);
            match open(source, self.plan.addr, role) {
                Ok(mut stream) => {
                    let interest = Interest::READABLE | Interest::WRITABLE;
                    if self
                        .poll
                        .registry()
                        .register(&mut stream, Token(i), interest)
                        .is_err()
                    {
                        self.counts.failed.fetch_add(1, Relaxed);
                        continue;
                    }
                    self.members[i] = Some(Member {
                        stream,
                        role,
                        state: State::Connecting,
                        head: Vec::new(),
                        reader: FrameReader::default(),
                        outbox: Vec::new(),
                        close_code: None,
                        welcomed: false,
                    });
                    self.connecting += 1;
                    self.counts.open.fetch_add(1, Relaxed);
                }
                Err(_) => {
                    self.counts.failed.fetch_add(1, Relaxed);
                }
            }
        }
    }

    /// Normal members send Close 1000; returns every member to read now.
    fn leave(&mut self) -> Vec<usize> {
        let close = wire::client_frame(opcode::CLOSE, &1000u16.to_be_bytes());
        let mut ready = Vec::new();
        for (i, slot) in self.members.iter_mut().enumerate() {
            let Some(m) = slot else { continue };
            if m.role == Role::Normal && m.state == State::Open {
                m.outbox.extend_from_slice(&close);
                m.state = State::Closing;
            }
            ready.push(i);
        }
        ready
    }

    /// Handles member `i`'s readiness; true if it has more to read.
    fn service(&mut self, i: usize) -> bool {
        let Some(m) = self.members.get_mut(i).and_then(Option::as_mut) else {
            return false;
        };
        if m.state == State::Connecting {
            match m.stream.take_error() {
                Ok(None) if m.stream.peer_addr().is_ok() => {}
                Ok(None) => return false, // Not connected yet.
                _ => return self.fail(i),
            }
            let query = match m.role {
                Role::Slow => &self.plan.slow_query,
                _ => &self.plan.query,
            };
            m.outbox = wire::upgrade_request(&self.plan.addr.to_string(), query);
            m.state = State::Upgrading;
        }
        let upgrading = m.state == State::Upgrading;
        let frozen = self.frozen && m.role != Role::Normal;
        if frozen && !self.draining {
            return false;
        }
        let (mut more, mut ended, mut broken) = (false, false, false);
        for reads in 0.. {
            if reads == READS_PER_TURN {
                more = true;
                break;
            }
            match m.stream.read(&mut self.buffer) {
                Ok(0) => ended = true,
                Ok(n) => broken = !take(m, &self.buffer[..n], &self.accept, self.counts, frozen),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => ended = true,
            }
            if ended || broken {
                break;
            }
        }
        if !m.welcomed && (ended || broken) {
            return self.fail(i);
        }
        if upgrading && m.state != State::Upgrading {
            // Upgraded: it no longer counts against the connect window.
            self.connecting = self.connecting.saturating_sub(1);
        }
        if !m.outbox.is_empty() && !frozen {
            match m.stream.write(&m.outbox) {
                Ok(n) => {
                    m.outbox.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // A hub that closed is seen on the next read.
                Err(_) => m.outbox.clear(),
            }
        }
        if ended || broken {
            self.finish(i);
            return false;
        }
        more
    }

    /// A member that never got its welcome.
    fn fail(&mut self, i: usize) -> bool {
        if let Some(mut m) = self.members[i].take() {
            let _ = self.poll.registry().deregister(&mut m.stream);
            if matches!(m.state, State::Connecting | State::Upgrading) {
                self.connecting = self.connecting.saturating_sub(1);
            }
            self.counts.open.fetch_sub(1, Relaxed);
            self.counts.failed.fetch_add(1, Relaxed);
        }
        false
    }

    /// A welcomed member whose stream ended: the socket closes.
    fn finish(&mut self, i: usize) {
        if let Some(mut m) = self.members[i].take() {
            let _ = self.poll.registry().deregister(&mut m.stream);
            self.counts.open.fetch_sub(1, Relaxed);
            let key = format!("{}:{}", m.role.name(), code_name(m.close_code));
            *self.tally.entry(key).or_default() += 1;
        }
    }
}

/// Handles bytes a member read; false once it cannot go on (a bad
/// upgrade or frame). Counts the welcome and the member's events.
fn take(m: &mut Member, data: &[u8], accept: &str, counts: &Counts, frozen: bool) -> bool {
    let after_head;
    let mut rest = data;
    if m.state == State::Upgrading {
        m.head.extend_from_slice(data);
        match wire::check_upgrade(&m.head, accept) {
            Ok(None) => return true,
            Ok(Some(len)) => {
                after_head = m.head.split_off(len);
                m.head = Vec::new();
                m.state = State::Open;
                rest = &after_head;
            }
            Err(_) => return false,
        }
    }
    let role = m.role as usize;
    let (outbox, welcomed, state, close_code) = (
        &mut m.outbox,
        &mut m.welcomed,
        &mut m.state,
        &mut m.close_code,
    );
    let fed = m.reader.feed(rest, |incoming| match incoming {
        Incoming::Message(text) => {
            if !*welcomed {
                *welcomed = true;
                counts.welcomed.fetch_add(1, Relaxed);
            } else if text.windows(EVENT_MARK.len()).any(|w| w == EVENT_MARK) {
                counts.events[role].fetch_add(1, Relaxed);
            }
        }
        Incoming::Ping(payload) if !frozen => {
            outbox.extend_from_slice(&wire::client_frame(opcode::PONG, payload));
        }
        Incoming::Ping(_) => {}
        Incoming::Close(code) => {
            if close_code.is_none() {
                *close_code = Some(code);
            }
            if *state == State::Open && !frozen {
                outbox.extend_from_slice(&wire::client_frame(opcode::CLOSE, &code.to_be_bytes()));
            }
            *state = State::Closing;
        }
    });
    fed.is_ok()
}

/// A non-blocking socket connecting from `from` to `to`, with the buffers
/// of its role.
fn open(from: Option<IpAddr>, to: SocketAddr, role: Role) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(to), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    match role {
        Role::Normal => {}
        Role::Slow => {
            socket.set_recv_buffer_size(SLOW_RCVBUF)?;
            socket.set_tcp_mss(SLOW_MSS)?;
        }
        Role::Vanish => socket.set_recv_buffer_size(VANISH_RCVBUF)?,
    }
    if let Some(ip) = from {
        socket.bind(&SocketAddr::new(ip, 0).into())?;
    }
    match socket.connect(&to.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(socket.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_thirds() {
        let roles: Vec<Role> = (0..6).map(Role::of).collect();
        assert_eq!(
            roles,
            [
                Role::Normal,
                Role::Slow,
                Role::Vanish,
                Role::Normal,
                Role::Slow,
                Role::Vanish
            ]
        );
        assert_eq!(code_name(Some(4009)), "4009");
        assert_eq!(code_name(None), "none");
    }
}
