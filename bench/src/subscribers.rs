//! The subscriber side: threads of their own (named `bench-sub-N`, so their
//! CPU time can be read apart from the publisher's). Each thread works in
//! two steps. While its subscribers connect it runs one single-threaded
//! executor with a small task per connection: a task connects from its
//! source address, upgrades and waits for the welcome, under the connect
//! timeout and the thread's concurrency limit. Once every task is done, the
//! welcomed sockets go to the thread's steady loop ([`super::steady`]), which
//! reads them all on one edge-triggered `mio::Poll`. Both steps parse with a
//! [`Conn`]: each event is scanned for its seq and timestamps without a JSON
//! parser; per subscriber it checks seq order (losses and duplicates); per
//! thread it keeps latency histograms, handed back when the run stops.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_channel::{Receiver, Sender};
use futures_lite::FutureExt;
use mio::{Poll, Waker};
use smol::lock::Semaphore;
use smol::{Async, LocalExecutor, Timer};

use super::client::{self, ConnectError, Incoming, Reader};
use super::record::Run;
use super::stats::Histogram;
use super::steady::{self, WAKE};
use super::wire::{self, Transport, opcode};

/// Bytes one read takes from a socket, in the buffer a thread shares among
/// its connections (in both steps).
pub(crate) const READ_CHUNK: usize = 64 * 1024;
/// Prefix of the subscriber threads' names.
pub(crate) const THREAD_PREFIX: &str = "bench-sub";

/// Where and how the subscribers connect.
#[derive(Debug, Clone)]
pub(crate) struct ConnectPlan {
    /// The hubs (address and `Host` header); subscriber `i` of a thread
    /// goes to hub `i % len`.
    pub hubs: Vec<(SocketAddr, String)>,
    /// The upgrade's query, `?rooms=<room>`.
    pub query: String,
    /// WebSocket or SSE.
    pub transport: Transport,
    pub subscribers: usize,
    pub threads: usize,
    /// Source addresses, used round-robin; empty for the kernel's choice.
    pub sources: Vec<IpAddr>,
    /// Connections being opened at once, per thread.
    pub concurrency: usize,
    /// Time allowed from connect to welcome.
    pub timeout: Duration,
}

/// One subscriber's view of the room's seqs.
#[derive(Debug, Clone, Default)]
pub(crate) struct SeqTrack {
    pub welcomed: bool,
    /// The highest seq received (0 before the first).
    pub last_seq: u64,
    /// Seqs received that were above all before them.
    pub unique: u64,
    /// Seqs received at or below one already received.
    pub repeated: u64,
    /// How the connection ended, if it did before the run stopped.
    pub ended: Option<String>,
}

impl SeqTrack {
    fn saw(&mut self, seq: u64) {
        if seq > self.last_seq {
            self.last_seq = seq;
            self.unique += 1;
        } else {
            self.repeated += 1;
        }
    }
}

/// What one subscriber thread hands back.
#[derive(Debug, Default)]
pub(crate) struct ThreadReport {
    pub tracks: Vec<SeqTrack>,
    pub connect_failures: BTreeMap<String, u64>,
    /// Per-delivery latency (due to arrival) of the latency phase.
    pub latency: Histogram,
    /// The same for the flood phase.
    pub flood: Histogram,
    /// A first message that was not a `welcome`.
    pub not_welcome_first: u64,
    /// Messages that were not bench events (heartbeats and the like).
    pub other_messages: u64,
}

/// The running subscriber threads.
#[derive(Debug)]
pub(crate) struct Subscribers {
    threads: Vec<JoinHandle<ThreadReport>>,
    /// Wakes each thread's steady loop when the run stops.
    wakers: Vec<Waker>,
    /// Closed when the run stops.
    stop: Sender<()>,
}

impl Subscribers {
    /// Starts the threads; each begins connecting its share at once.
    pub fn start(plan: &ConnectPlan, run: &Arc<Run>) -> io::Result<Self> {
        let (stop, stopped) = async_channel::bounded::<()>(1);
        let threads = plan.threads.clamp(1, plan.subscribers.max(1));
        let mut handles = Vec::with_capacity(threads);
        let mut wakers = Vec::with_capacity(threads);
        for t in 0..threads {
            let poll = Poll::new()?;
            wakers.push(Waker::new(poll.registry(), WAKE)?);
            // Thread t takes subscribers t, t + threads, t + 2 * threads, ...
            let share: Vec<usize> = (t..plan.subscribers).step_by(threads).collect();
            let plan = plan.clone();
            let run = run.clone();
            let stopped = stopped.clone();
            let handle = std::thread::Builder::new()
                .name(format!("{THREAD_PREFIX}-{t}"))
                .spawn(move || thread_main(&plan, share, &run, &stopped, poll))?;
            handles.push(handle);
        }
        Ok(Self {
            threads: handles,
            wakers,
            stop,
        })
    }

    /// Stops every thread (closing its connections) and merges their reports.
    pub fn stop(self) -> ThreadReport {
        drop(self.stop);
        for waker in &self.wakers {
            // A thread still connecting sees the closed channel instead.
            let _ = waker.wake();
        }
        let mut all = ThreadReport::default();
        for handle in self.threads {
            // A panicked thread has nothing to report; its subscribers are
            // counted as missing by the caller.
            let Ok(report) = handle.join() else { continue };
            all.tracks.extend(report.tracks);
            for (kind, n) in report.connect_failures {
                *all.connect_failures.entry(kind).or_default() += n;
            }
            all.latency.merge(&report.latency);
            all.flood.merge(&report.flood);
            all.not_welcome_first += report.not_welcome_first;
            all.other_messages += report.other_messages;
        }
        all
    }
}

/// What the tasks of one thread share while they connect.
struct Shared {
    plan: ConnectPlan,
    run: Arc<Run>,
    accept: String,
    permits: Semaphore,
    buffer: RefCell<Vec<u8>>,
    report: RefCell<ThreadReport>,
    /// Connections welcomed and still open, for the steady loop.
    welcomed: RefCell<Vec<(Conn, TcpStream)>>,
}

impl Shared {
    /// Hands `data`, just read, to `conn`.
    fn take(&self, conn: &mut Conn, data: &[u8]) {
        conn.take(
            data,
            self.run.now(),
            &mut self.report.borrow_mut(),
            &self.run,
        );
    }

    fn welcomed(&self, conn: &Conn) -> bool {
        self.report.borrow().tracks[conn.local].welcomed
    }
}

fn thread_main(
    plan: &ConnectPlan,
    share: Vec<usize>,
    run: &Arc<Run>,
    stopped: &Receiver<()>,
    poll: Poll,
) -> ThreadReport {
    let shared = Rc::new(Shared {
        plan: plan.clone(),
        run: run.clone(),
        accept: wire::expected_accept(),
        permits: Semaphore::new(plan.concurrency.max(1)),
        buffer: RefCell::new(vec![0; READ_CHUNK]),
        report: RefCell::new(ThreadReport {
            tracks: vec![SeqTrack::default(); share.len()],
            ..ThreadReport::default()
        }),
        welcomed: RefCell::new(Vec::new()),
    });
    let executor = LocalExecutor::new();
    let tasks: Vec<_> = share
        .into_iter()
        .enumerate()
        .map(|(local, global)| {
            let source =
                (!plan.sources.is_empty()).then(|| plan.sources[global % plan.sources.len()]);
            executor.spawn(subscriber(shared.clone(), local, source))
        })
        .collect();
    // Every task ends by its connect timeout (after waiting for a permit),
    // so this step is bounded; the run may also stop during it.
    let stopped_early = smol::block_on(
        executor.run(
            async {
                for task in tasks {
                    task.await;
                }
                false
            }
            .or(async {
                // The channel closes when the run stops.
                let _ = stopped.recv().await;
                true
            }),
        ),
    );
    // Dropping the executor cancels any task left and closes its socket.
    drop(executor);
    let (mut report, welcomed) = match Rc::try_unwrap(shared) {
        Ok(shared) => (shared.report.into_inner(), shared.welcomed.into_inner()),
        Err(shared) => (
            std::mem::take(&mut *shared.report.borrow_mut()),
            std::mem::take(&mut *shared.welcomed.borrow_mut()),
        ),
    };
    if !stopped_early {
        steady::run(poll, welcomed, &mut report, run, stopped);
    }
    report
}

/// One subscriber from connect to welcome; then its socket goes to the
/// steady loop (unless the hub closed it already).
async fn subscriber(shared: Rc<Shared>, local: usize, source: Option<IpAddr>) {
    let permit = shared.permits.acquire().await;
    let deadline = Instant::now() + shared.plan.timeout;
    let (stream, leftover) = match open(&shared, source, local).or(expire(deadline)).await {
        Ok(opened) => opened,
        Err(e) => return failed(&shared, &e),
    };
    let mut conn = Conn::new(local, shared.plan.transport);
    // The welcome may have come with the 101 (or the stream's 200).
    shared.take(&mut conn, &leftover);
    while !shared.welcomed(&conn) && conn.ended.is_none() {
        // Still connecting: bounded by the connect deadline.
        let read = stream.read_with(|io| (&*io).read(&mut shared.buffer.borrow_mut()));
        let read = async { read.await.map_err(ConnectError::Io) };
        let n = match read.or(expire(deadline)).await {
            Ok(0) => return failed(&shared, &ConnectError::Closed),
            Ok(n) => n,
            Err(e) => return failed(&shared, &e),
        };
        // No task runs between the read and this parse: the buffer is ours.
        shared.take(&mut conn, &shared.buffer.borrow()[..n]);
        reply(&stream, &mut conn, deadline).await;
    }
    if !shared.welcomed(&conn) {
        return failed(&shared, &ConnectError::Closed);
    }
    drop(permit);
    shared.run.connected.fetch_add(1, Relaxed);
    reply(&stream, &mut conn, deadline).await;
    if conn.ended.is_none() {
        // The steady loop reads it from here on; `into_inner` takes it out
        // of the executor's reactor.
        match stream.into_inner() {
            Ok(stream) => {
                shared.welcomed.borrow_mut().push((conn, stream));
                return;
            }
            Err(e) => conn.ended = Some(format!("read error: {:?}", e.kind())),
        }
    }
    conn.finish(&mut shared.report.borrow_mut(), &shared.run);
}

/// The connect deadline passing.
async fn expire<T>(deadline: Instant) -> Result<T, ConnectError> {
    Timer::at(deadline).await;
    Err(ConnectError::TimedOut)
}

/// Writes the replies `conn` has waiting, by `deadline` at the latest.
async fn reply(stream: &Async<TcpStream>, conn: &mut Conn, deadline: Instant) {
    if conn.outbox.is_empty() {
        return;
    }
    let out = std::mem::take(&mut conn.outbox);
    // A peer that stopped reading is seen on the next read.
    let _ = client::send(stream, &out)
        .or(async {
            Timer::at(deadline).await;
            Ok(())
        })
        .await;
}

async fn open(
    shared: &Shared,
    source: Option<IpAddr>,
    local: usize,
) -> Result<(Async<TcpStream>, Vec<u8>), ConnectError> {
    let plan = &shared.plan;
    let (addr, host) = &plan.hubs[local % plan.hubs.len()];
    let stream = client::connect(source, *addr).await?;
    let leftover = match plan.transport {
        Transport::Websocket => client::upgrade(&stream, host, &plan.query, &shared.accept).await?,
        Transport::Sse => client::open_stream(&stream, host, &plan.query).await?,
    };
    Ok((stream, leftover))
}

fn failed(shared: &Shared, error: &ConnectError) {
    *shared
        .report
        .borrow_mut()
        .connect_failures
        .entry(error.kind())
        .or_default() += 1;
    shared.run.failed.fetch_add(1, Relaxed);
}

/// A subscriber's reading state, from its first frame to its end.
#[derive(Debug)]
pub(crate) struct Conn {
    /// Its index in the thread's share (and its `mio` token).
    pub local: usize,
    reader: Reader,
    /// Frames to write back (Pongs, the Close reply), not written yet.
    pub outbox: Vec<u8>,
    /// Why it ended, once it did.
    pub ended: Option<String>,
}

impl Conn {
    pub fn new(local: usize, transport: Transport) -> Self {
        Self {
            local,
            reader: Reader::new(transport),
            outbox: Vec::new(),
            ended: None,
        }
    }

    /// Handles the bytes of one read, received at `now`.
    pub fn take(&mut self, data: &[u8], now: u64, report: &mut ThreadReport, run: &Run) {
        let local = self.local;
        let outbox = &mut self.outbox;
        let mut ended = None;
        let mut delivered = 0;
        let fed = self.reader.feed(data, |incoming| match incoming {
            Incoming::Message(text) => {
                let track = &mut report.tracks[local];
                if !track.welcomed {
                    track.welcomed = true;
                    if !text.starts_with(b"{\"type\":\"welcome\"")
                        && !contains(text, b"\"type\":\"welcome\"")
                    {
                        report.not_welcome_first += 1;
                    }
                    return;
                }
                let Some(event) = wire::scan_event(text) else {
                    report.other_messages += 1;
                    return;
                };
                track.saw(event.seq);
                run.saw_seq(event.seq);
                run.arrived(event.index, now);
                delivered += 1;
                let latency = now.saturating_sub(event.due_ns);
                if event.index < run.latency_publishes {
                    report.latency.record(latency);
                } else {
                    report.flood.record(latency);
                }
            }
            Incoming::Ping(payload) => {
                outbox.extend_from_slice(&wire::client_frame(opcode::PONG, payload));
            }
            Incoming::Close(code) => {
                if ended.is_none() {
                    outbox
                        .extend_from_slice(&wire::client_frame(opcode::CLOSE, &code.to_be_bytes()));
                    ended = Some(format!("close {code}"));
                }
            }
        });
        if delivered > 0 {
            run.deliveries.fetch_add(delivered, Relaxed);
        }
        if let Err(e) = fed {
            ended = Some(e.to_string());
        }
        if self.ended.is_none() {
            self.ended = ended;
        }
    }

    /// Notes that this welcomed subscriber ended (why, if known).
    pub fn finish(mut self, report: &mut ThreadReport, run: &Run) {
        report.tracks[self.local].ended = self.ended.take();
        run.closed.fetch_add(1, Relaxed);
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(text: &str) -> Vec<u8> {
        assert!(text.len() < 126);
        let mut frame = vec![0x81, text.len() as u8];
        frame.extend_from_slice(text.as_bytes());
        frame
    }

    fn event(index: u64, due: u64, seq: u64) -> Vec<u8> {
        text(&format!(
            "{{\"type\":\"bench\",\"payload\":{{\"i\":{index},\"t\":{due},\"pad\":\"x\"}},\"seq\":{seq}}}"
        ))
    }

    fn report(subscribers: usize) -> ThreadReport {
        ThreadReport {
            tracks: vec![SeqTrack::default(); subscribers],
            ..ThreadReport::default()
        }
    }

    #[test]
    fn a_connection_counts_its_events_by_phase_and_seq() {
        // Publishes 0 and 1 are the latency phase, 2 the flood.
        let run = Run::new(2, 1);
        let mut report = report(2);
        let mut conn = Conn::new(1, Transport::Websocket);
        let mut bytes = text(r#"{"type":"welcome","payload":{}}"#);
        bytes.extend(event(0, 1_450, 7));
        bytes.extend(text(r#"{"type":"heartbeat"}"#));
        bytes.extend(event(1, 1_400, 8));
        bytes.extend(event(1, 1_400, 8));
        bytes.extend(event(2, 300, 9));
        let (first, rest) = bytes.split_at(40);
        conn.take(first, 1_000, &mut report, &run);
        assert!(report.tracks[1].welcomed && !report.tracks[0].welcomed);
        conn.take(rest, 1_500, &mut report, &run);
        let track = &report.tracks[1];
        assert_eq!((track.last_seq, track.unique, track.repeated), (9, 3, 1));
        assert_eq!((report.latency.count(), report.flood.count()), (3, 1));
        // Event 0 was cut by the first read: it arrived with the second.
        assert_eq!(report.latency.quantile(0.0), 50);
        assert_eq!(report.latency.quantile(1.0), 100);
        assert_eq!((report.not_welcome_first, report.other_messages), (0, 1));
        assert_eq!(run.deliveries.load(Relaxed), 4);
        assert_eq!(run.arrivals(0, 3), 4);
        assert_eq!(run.slot(1).unwrap().last_arrival.load(Relaxed), 1_500);
        assert_eq!(run.max_seq.load(Relaxed), 9);
        assert!(conn.outbox.is_empty() && conn.ended.is_none());
        conn.finish(&mut report, &run);
        assert_eq!(run.closed.load(Relaxed), 1);
        assert_eq!(report.tracks[1].ended, None);
    }

    #[test]
    fn a_connection_answers_pings_and_closes() {
        let run = Run::new(1, 0);
        let mut report = report(1);
        let mut conn = Conn::new(0, Transport::Websocket);
        conn.take(&text(r#"{"type":"event"}"#), 0, &mut report, &run);
        assert_eq!(report.not_welcome_first, 1);
        conn.take(
            b"\x89\x01p\x88\x02\x0f\xa9\x88\x02\x03\xe8",
            0,
            &mut report,
            &run,
        );
        assert_eq!(conn.ended.as_deref(), Some("close 4009"));
        // A Pong (6 + 1 bytes), then one Close reply (6 + 2), masked.
        assert_eq!(conn.outbox.len(), 15);
        assert_eq!((conn.outbox[0], conn.outbox[7]), (0x8A, 0x88));
        let mut conn = Conn::new(0, Transport::Websocket);
        conn.take(b"\x81\x81masked", 0, &mut report, &run);
        assert_eq!(
            conn.ended.as_deref(),
            Some("bad frame: a server frame must not be masked")
        );
        conn.finish(&mut report, &run);
        assert_eq!(
            report.tracks[0].ended.as_deref(),
            Some("bad frame: a server frame must not be masked")
        );
    }
}
