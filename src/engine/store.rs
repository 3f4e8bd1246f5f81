//! The embedded store (`store = DIR`): an [`Engine`] whose database is
//! written by its own thread. The hub queues requests on a channel and
//! goes on; the thread takes everything queued, writes it in one
//! transaction with one sync (group commit), and only then answers the
//! whole batch, in order, through the hub's [`Sink`]. So publishes that
//! arrive together share one sync, and the disk's sync rate does not cap
//! the publish rate at one publish per sync.
//!
//! Every second (or sooner, for a short `history_ttl`) the thread also
//! removes events older than `history_ttl` and keys past their window,
//! copies the write-ahead log into the database when a checkpoint is due
//! (kept out of the commits, and rare while publishes flow, so that few
//! publishes wait for one: [`Checkpoint`]), and, while writes fail, tries
//! a small one to notice the disk is back.

use std::path::Path;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::sqlite::Db;
use super::{Answer, Append, Engine, EngineError, Progress, Recovered, Sink, unix_ms};
use crate::log::as_json;

/// Requests one commit takes at most, so that one answer is never huge.
const MAX_BATCH: usize = 4096;
/// How often the thread expires old events and probes a failing disk.
const MAX_TICK: Duration = Duration::from_secs(1);
/// ...and never more often than this.
const MIN_TICK: Duration = Duration::from_millis(20);
/// Debug builds only: abort the process right after this many commits,
/// before answering (the crash tests' fault hook).
const CRASH_AFTER_COMMITS_ENV: &str = "WSHUB_TEST_CRASH_AFTER_COMMITS";

/// A request for the store thread.
#[derive(Debug)]
enum Request {
    Append(Append),
    Read {
        token: u64,
        room: String,
        after: u64,
    },
}

/// The store engine: a handle on the store thread.
#[derive(Debug)]
pub(crate) struct Store {
    epoch: String,
    recovered: Option<Recovered>,
    requests: Option<Sender<Request>>,
    thread: Option<JoinHandle<()>>,
}

/// The settings the store needs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StoreLimits {
    /// `history_size`: events kept per room.
    pub history_size: usize,
    /// `history_ttl`: zero for no limit.
    pub history_ttl: Duration,
}

impl Store {
    /// Opens the store in `dir` (creating it if need be), reads what it
    /// holds, and starts its thread, which answers through `sink`.
    ///
    /// Fails when the directory is held by another running hub, is not a
    /// directory, holds files of something else, or cannot be read.
    pub fn open(dir: &Path, limits: StoreLimits, sink: Sink) -> Result<Self, String> {
        let started = Instant::now();
        let opened = Db::open(dir, limits.history_size)?;
        let events: u64 = opened
            .recovered
            .rooms
            .iter()
            .map(|r| (r.last_seq + 1).saturating_sub(r.oldest_seq))
            .sum();
        tracing::info!(
            store = as_json(opened.path.display().to_string()),
            created = as_json(opened.created),
            epoch = as_json(&opened.epoch),
            rooms = as_json(
                opened
                    .recovered
                    .rooms
                    .iter()
                    .filter(|r| r.oldest_seq <= r.last_seq)
                    .count()
            ),
            events = as_json(events),
            idempotency_keys = as_json(opened.recovered.keys.len()),
            open_ms = as_json((started.elapsed().as_secs_f64() * 1e4).round() / 10.0),
            "store opened"
        );
        let (tx, rx) = mpsc::channel();
        let db = opened.db;
        let thread = std::thread::Builder::new()
            .name("wshub-store".into())
            .spawn(move || run(db, &rx, &sink, limits.history_ttl))
            .map_err(|e| format!("cannot start the store thread: {e}"))?;
        Ok(Self {
            epoch: opened.epoch,
            recovered: Some(opened.recovered),
            requests: Some(tx),
            thread: Some(thread),
        })
    }

    fn queue(&self, request: Request) -> Progress {
        let sent = self
            .requests
            .as_ref()
            .is_some_and(|tx| tx.send(request).is_ok());
        if sent {
            Progress::Queued
        } else {
            Progress::Refused(EngineError::new("the store thread has stopped"))
        }
    }
}

impl Engine for Store {
    fn kind(&self) -> &'static str {
        "store"
    }

    fn epoch(&self) -> &str {
        &self.epoch
    }

    fn recovered(&mut self) -> Recovered {
        self.recovered.take().unwrap_or_default()
    }

    fn in_place(&self) -> bool {
        false
    }

    fn append(&mut self, append: Append) -> Progress {
        self.queue(Request::Append(append))
    }

    fn read(&mut self, token: u64, room: &str, after: u64) -> Progress {
        self.queue(Request::Read {
            token,
            room: room.to_string(),
            after,
        })
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // Closing the channel ends the thread after what it is writing.
        self.requests.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// When the store thread copies the log into the database. A checkpoint
/// holds the thread that commits, so a publish arriving meanwhile waits
/// for it: it runs at a tick with nothing written since the last one, or
/// once [`CHECKPOINT_REQUESTS`] requests or [`CHECKPOINT_EVERY`] have
/// passed, whichever comes first. At 50 publishes/s that is one stall
/// in 500 publishes rather than one in 50; under a flood, about as often
/// as every second, and the log stays a few MiB.
struct Checkpoint {
    requests: usize,
    quiet: bool,
    last: Instant,
}

/// Requests written after which a checkpoint is due.
const CHECKPOINT_REQUESTS: usize = 10_000;
/// Time after which a checkpoint is due, whatever was written.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(10);

impl Checkpoint {
    fn new() -> Self {
        Self {
            requests: 0,
            quiet: true,
            last: Instant::now(),
        }
    }

    /// Counts a batch of `n` requests.
    fn wrote(&mut self, n: usize) {
        self.requests += n;
        self.quiet = false;
    }

    /// Whether to checkpoint at this tick; if so, starts counting again.
    fn due(&mut self) -> bool {
        let idle = std::mem::replace(&mut self.quiet, true);
        let due = self.requests > 0
            && (idle
                || self.requests >= CHECKPOINT_REQUESTS
                || self.last.elapsed() >= CHECKPOINT_EVERY);
        if due {
            self.requests = 0;
            self.last = Instant::now();
        }
        due
    }
}

/// The store thread: batches, commits, answers; expires and probes on a tick.
fn run(mut db: Db, requests: &Receiver<Request>, sink: &Sink, ttl: Duration) {
    let tick = if ttl.is_zero() {
        MAX_TICK
    } else {
        (ttl / 4).clamp(MIN_TICK, MAX_TICK)
    };
    let crash_after = crash_after_commits();
    let mut commits = 0u64;
    let mut up = true;
    let mut next_tick = Instant::now() + tick;
    let mut batch: Vec<Request> = Vec::new();
    let mut checkpoint = Checkpoint::new();
    loop {
        let wait = next_tick.saturating_duration_since(Instant::now());
        match requests.recv_timeout(wait) {
            Ok(first) => {
                batch.push(first);
                while batch.len() < MAX_BATCH {
                    match requests.try_recv() {
                        Ok(more) => batch.push(more),
                        Err(_) => break,
                    }
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        let mut answers = Vec::new();
        if !batch.is_empty() {
            checkpoint.wrote(batch.len());
            let wrote = serve(&mut db, std::mem::take(&mut batch), &mut answers);
            if let Some(ok) = wrote {
                commits += 1;
                if crash_after.is_some_and(|n| commits >= n) {
                    // The fault hook: the commit is on disk, nobody was answered.
                    std::process::abort();
                }
                health(&mut up, ok, &mut answers);
            }
        }
        if Instant::now() >= next_tick {
            next_tick = Instant::now() + tick;
            let started = Instant::now();
            let before = (!ttl.is_zero()).then(|| unix_ms().saturating_sub(ttl.as_millis() as u64));
            let copy = checkpoint.due();
            match db
                .expire(before)
                .and_then(|rooms| copy.then(|| db.checkpoint()).transpose().map(|_| rooms))
            {
                Ok(rooms) => {
                    answers.push(Answer::Timing {
                        op: "expire",
                        seconds: started.elapsed().as_secs_f64(),
                    });
                    if !rooms.is_empty() {
                        answers.push(Answer::Expired { rooms });
                    }
                    if !up {
                        health(&mut up, db.probe(), &mut answers);
                    }
                }
                Err(e) => health(&mut up, Err(e), &mut answers),
            }
        }
        if !answers.is_empty() && !sink(answers) {
            break; // the hub has stopped
        }
    }
}

/// Commits the batch's appends in one transaction, then runs its reads,
/// and answers everything in the order it came. Returns the commit's
/// outcome when there was one.
fn serve(
    db: &mut Db,
    batch: Vec<Request>,
    answers: &mut Vec<Answer>,
) -> Option<Result<(), EngineError>> {
    let mut appends = Vec::new();
    for request in &batch {
        if let Request::Append(append) = request {
            appends.push(append.clone());
        }
    }
    let mut outcome = None;
    let mut results = Vec::new().into_iter();
    if !appends.is_empty() {
        let started = Instant::now();
        let done = db.append(&appends);
        answers.push(Answer::Timing {
            op: "append",
            seconds: started.elapsed().as_secs_f64(),
        });
        results = match &done {
            Ok(each) => each.clone().into_iter(),
            Err(e) => vec![Err(e.clone()); appends.len()].into_iter(),
        };
        outcome = Some(done.map(|_| ()));
    }
    for request in batch {
        match request {
            Request::Append(append) => answers.push(Answer::Appended {
                token: append.token,
                result: results
                    .next()
                    .unwrap_or_else(|| Err(EngineError::new("no answer"))),
            }),
            Request::Read { token, room, after } => {
                let started = Instant::now();
                let result = db.read(&room, after);
                answers.push(Answer::Timing {
                    op: "read",
                    seconds: started.elapsed().as_secs_f64(),
                });
                answers.push(Answer::Read {
                    token,
                    room,
                    result,
                });
            }
        }
    }
    outcome
}

/// Reports a change between writing and failing to the hub.
fn health(up: &mut bool, wrote: Result<(), EngineError>, answers: &mut Vec<Answer>) {
    match wrote {
        Ok(()) if !*up => {
            *up = true;
            tracing::info!("the store takes writes again");
            answers.push(Answer::Health {
                up: true,
                detail: None,
            });
        }
        Err(e) if *up => {
            *up = false;
            tracing::error!(error = as_json(&e.message), "the store cannot write");
            answers.push(Answer::Health {
                up: false,
                detail: Some(e.message),
            });
        }
        _ => {}
    }
}

/// The fault hook's setting, honoured by debug builds only.
fn crash_after_commits() -> Option<u64> {
    if !cfg!(debug_assertions) {
        return None;
    }
    std::env::var(CRASH_AFTER_COMMITS_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
}
