//! The subscriber side: threads of their own (named `bench-sub-N`, so their
//! CPU time can be read apart from the publisher's), each running one
//! single-threaded executor with a small task per connection. A task
//! connects from its source address, upgrades, waits for the welcome, then
//! reads: all tasks of a thread share one read buffer, and each event is
//! scanned for its seq and timestamps without a JSON parser. Per
//! subscriber it checks seq order (losses and duplicates); per thread it
//! keeps latency histograms, handed back when the run stops.

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
use smol::lock::Semaphore;
use smol::{Async, LocalExecutor, Timer};

use super::client::{self, ConnectError, FrameReader, Incoming};
use super::record::Run;
use super::stats::Histogram;
use super::wire::{self, opcode};

/// Bytes one read takes from a socket, in the buffer a thread's tasks share.
const READ_CHUNK: usize = 64 * 1024;
/// Prefix of the subscriber threads' names.
pub(crate) const THREAD_PREFIX: &str = "bench-sub";

/// Where and how the subscribers connect.
#[derive(Debug, Clone)]
pub(crate) struct ConnectPlan {
    pub addr: SocketAddr,
    /// The `Host` header.
    pub host: String,
    /// The upgrade's query, `?rooms=<room>`.
    pub query: String,
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
    stop: Sender<()>,
}

impl Subscribers {
    /// Starts the threads; each begins connecting its share at once.
    pub fn start(plan: &ConnectPlan, run: &Arc<Run>) -> io::Result<Self> {
        let (stop, stopped) = async_channel::bounded::<()>(1);
        let threads = plan.threads.clamp(1, plan.subscribers.max(1));
        let mut handles = Vec::with_capacity(threads);
        for t in 0..threads {
            // Thread t takes subscribers t, t + threads, t + 2 * threads, ...
            let share: Vec<usize> = (t..plan.subscribers).step_by(threads).collect();
            let plan = plan.clone();
            let run = run.clone();
            let stopped = stopped.clone();
            let handle = std::thread::Builder::new()
                .name(format!("{THREAD_PREFIX}-{t}"))
                .spawn(move || thread_main(&plan, share, &run, &stopped))?;
            handles.push(handle);
        }
        Ok(Self {
            threads: handles,
            stop,
        })
    }

    /// Stops every thread (closing its connections) and merges their reports.
    pub fn stop(self) -> ThreadReport {
        drop(self.stop);
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

/// What the tasks of one thread share.
struct Shared {
    plan: ConnectPlan,
    run: Arc<Run>,
    accept: String,
    permits: Semaphore,
    buffer: RefCell<Vec<u8>>,
    report: RefCell<ThreadReport>,
}

fn thread_main(
    plan: &ConnectPlan,
    share: Vec<usize>,
    run: &Arc<Run>,
    stopped: &Receiver<()>,
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
    });
    let executor = LocalExecutor::new();
    for (local, global) in share.into_iter().enumerate() {
        let source = (!plan.sources.is_empty()).then(|| plan.sources[global % plan.sources.len()]);
        executor
            .spawn(subscriber(shared.clone(), local, source))
            .detach();
    }
    smol::block_on(executor.run(async {
        // The channel closes when the run stops.
        let _ = stopped.recv().await;
    }));
    // Dropping the executor cancels every task and closes its socket.
    drop(executor);
    match Rc::try_unwrap(shared) {
        Ok(shared) => shared.report.into_inner(),
        Err(shared) => std::mem::take(&mut *shared.report.borrow_mut()),
    }
}

/// One subscriber, from connect until the run stops or the hub closes it.
async fn subscriber(shared: Rc<Shared>, local: usize, source: Option<IpAddr>) {
    let permit = shared.permits.acquire().await;
    let deadline = Instant::now() + shared.plan.timeout;
    let opened = open(&shared, source)
        .or(async {
            Timer::at(deadline).await;
            Err(ConnectError::TimedOut)
        })
        .await;
    let (stream, leftover) = match opened {
        Ok(opened) => opened,
        Err(e) => return failed(&shared, &e),
    };
    let mut conn = Connection {
        shared: &shared,
        local,
        reader: FrameReader::default(),
        replies: Vec::new(),
        ended: None,
    };
    // The welcome may have come with the 101.
    conn.take(&leftover, shared.run.now());
    let mut permit = Some(permit);
    loop {
        if permit.is_some() && conn.welcomed() {
            permit = None;
            shared.run.connected.fetch_add(1, Relaxed);
        }
        if conn.ended.is_some() {
            break;
        }
        let read = stream.read_with(|io| (&*io).read(&mut shared.buffer.borrow_mut()));
        let n = if permit.is_some() {
            // Still connecting: bounded by the connect deadline.
            match read
                .or(async {
                    Timer::at(deadline).await;
                    Err(io::ErrorKind::TimedOut.into())
                })
                .await
            {
                Ok(n) => n,
                Err(e) => return failed(&shared, &ConnectError::Io(e)),
            }
        } else {
            match read.await {
                Ok(n) => n,
                Err(e) => {
                    conn.ended = Some(format!("read error: {:?}", e.kind()));
                    break;
                }
            }
        };
        if n == 0 {
            if permit.is_some() {
                return failed(&shared, &ConnectError::Closed);
            }
            conn.ended = Some("closed without a close frame".into());
            break;
        }
        let now = shared.run.now();
        // No task runs between the read and this parse: the buffer is ours.
        conn.take(&shared.buffer.borrow()[..n], now);
        for reply in std::mem::take(&mut conn.replies) {
            // A peer that stopped reading is seen on the next read.
            let _ = client::send(&stream, &reply).await;
        }
    }
    if permit.is_some() {
        return failed(&shared, &ConnectError::Closed);
    }
    let reason = conn.ended.take();
    shared.report.borrow_mut().tracks[local].ended = reason;
    shared.run.closed.fetch_add(1, Relaxed);
}

async fn open(
    shared: &Shared,
    source: Option<IpAddr>,
) -> Result<(Async<TcpStream>, Vec<u8>), ConnectError> {
    let stream = client::connect(source, shared.plan.addr).await?;
    let leftover = client::upgrade(
        &stream,
        &shared.plan.host,
        &shared.plan.query,
        &shared.accept,
    )
    .await?;
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

/// A subscriber's reading state.
struct Connection<'a> {
    shared: &'a Shared,
    local: usize,
    reader: FrameReader,
    /// Frames to write back (Pongs, the Close reply).
    replies: Vec<Vec<u8>>,
    ended: Option<String>,
}

impl Connection<'_> {
    fn welcomed(&self) -> bool {
        self.shared.report.borrow().tracks[self.local].welcomed
    }

    /// Handles the bytes of one read, received at `now`.
    fn take(&mut self, data: &[u8], now: u64) {
        let mut report = self.shared.report.borrow_mut();
        let report = &mut *report;
        let run = &*self.shared.run;
        let local = self.local;
        let mut replies = Vec::new();
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
            Incoming::Ping(payload) => replies.push(wire::client_frame(opcode::PONG, payload)),
            Incoming::Close(code) => {
                if ended.is_none() {
                    replies.push(wire::client_frame(opcode::CLOSE, &code.to_be_bytes()));
                    ended = Some(format!("close {code}"));
                }
            }
        });
        run.deliveries.fetch_add(delivered, Relaxed);
        if let Err(e) = fed {
            ended = Some(e.to_string());
        }
        self.replies.extend(replies);
        if self.ended.is_none() {
            self.ended = ended;
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
