//! The engine seam (ARCHITECTURE.md, "The engine seam"): what a hub must
//! remember — the epoch, every room's seq and history, the idempotency
//! keys — behind one interface, [`Engine`], while the hub task keeps
//! delivery. Two implementations: [`Memory`] (the default: the hub's own
//! rings are the record) and [`store::Store`] (`store = DIR`, an SQLite
//! database written by its own thread with group commit). Redis is the
//! third, planned.
//!
//! The engine never calls into the hub: an engine that answers later does
//! so through the [`Sink`] it was given, which the hub turns into one of its
//! own commands, so the hub thread never waits on the engine.

pub(crate) mod store;

mod sqlite;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::protocol::{Published, new_uuid};

/// How an engine answers the hub later: each call hands over one batch of
/// answers and says whether the hub is still there to take it.
pub(crate) type Sink = Box<dyn Fn(Vec<Answer>) -> bool + Send>;

/// What the hub must remember, and the questions it asks about it.
///
/// # Contract
///
/// - **Ordering.** Appends to one room are sequenced in the order the hub
///   makes them: the hub gives each room event its seq (`last + 1`) and the
///   engine refuses one that does not follow the room's last stored seq, or
///   that follows a refused one, until the hub gives that seq again. The
///   answers to every request come back in the order the requests were
///   made, so the hub delivers a room's events in seq order with no gap,
///   and a [`Engine::read`] answered after an append's answer holds it.
/// - **Durability.** An append is done when its answer says so: for
///   [`Memory`] when [`Engine::append`] returns [`Progress::Done`], for the
///   store once the commit that holds it has been synced to disk (several
///   appends share one commit and one sync), for Redis once the script that
///   sequenced it has returned. The hub answers the publish and fans the
///   event out only then, so no client sees a seq that a crash could give
///   to another event. What is durable is the event's frame, its seq and
///   time, and the idempotency key with its first reply; presence and
///   connections never are (they belong to live sockets).
/// - **Failure.** An engine that cannot take a request says so
///   ([`Progress::Refused`], or an [`Answer`] holding an [`EngineError`]);
///   nothing of a refused append is kept (no event is half-written), and
///   the hub answers `engine_unavailable`, reports the health component
///   `engine` as `down` from a [`Answer::Health`], and keeps its
///   connections and heartbeats. The engine keeps trying by itself and
///   reports `up` again when a write succeeds.
/// - **The hub thread never waits.** Every method returns at once: the
///   memory engine works in place, the store queues to its own thread and
///   answers through its [`Sink`].
/// - **Bounds.** An engine holds at most `history_size` events per room,
///   none older than `history_ttl`, idempotency keys for their five
///   minutes (100,000 at most); a room with no events left keeps only its
///   last seq (100,000 such rooms at most), so that within the epoch no seq
///   is given to two events of one room. `max_history_bytes` bounds only what the hub holds in
///   memory.
pub(crate) trait Engine: fmt::Debug + Send {
    /// The engine's name for logs and `/health`: `memory` or `store`.
    fn kind(&self) -> &'static str;

    /// The epoch, fixed for the engine's life (for the store, for the life
    /// of its directory).
    fn epoch(&self) -> &str;

    /// What the engine held when it was opened, for the hub to start from;
    /// empty after the first call.
    fn recovered(&mut self) -> Recovered;

    /// Whether appends are done in place ([`Progress::Done`]) rather than
    /// answered later: the hub then keeps its one-step publish.
    fn in_place(&self) -> bool;

    /// Asks for `append` to be sequenced and stored.
    fn append(&mut self, append: Append) -> Progress;

    /// Asks for room `room`'s events after seq `after` (every one held),
    /// answered as [`Answer::Read`] with `token`.
    fn read(&mut self, token: u64, room: &str, after: u64) -> Progress;
}

/// How far a request got when its call returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Progress {
    /// Done, and durable as the engine makes things durable.
    Done,
    /// Queued: the answer comes through the engine's [`Sink`].
    Queued,
    /// Not taken.
    Refused(EngineError),
}

/// An event (or only an idempotency key) for the engine to keep.
#[derive(Debug, Clone)]
pub(crate) struct Append {
    /// The hub's name for the request, given back in the answer.
    pub token: u64,
    /// The room and the event's seq in it; `None` for a publish without a
    /// room, of which only the key is kept.
    pub room: Option<(Arc<str>, u64)>,
    /// The event as its JSON message (the frame's payload).
    pub json: bytes::Bytes,
    /// When it was published, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The idempotency key and the reply it must keep giving.
    pub key: Option<(String, Published)>,
}

/// An event as an engine gives it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredEvent {
    /// Its seq in its room.
    pub seq: u64,
    /// Its JSON message.
    pub json: bytes::Bytes,
}

/// A room as an engine held it when opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RecoveredRoom {
    /// The room's name.
    pub name: String,
    /// The seq of its newest event.
    pub last_seq: u64,
    /// The seq of its oldest event held.
    pub oldest_seq: u64,
}

/// An idempotency key as an engine held it when opened.
#[derive(Debug, Clone)]
pub(crate) struct RecoveredKey {
    /// The key.
    pub key: String,
    /// When it was first used, as an instant of this process.
    pub at: Instant,
    /// The first publish's reply.
    pub reply: Published,
}

/// What an engine held when opened.
#[derive(Debug, Default)]
pub(crate) struct Recovered {
    /// Every room with events, and the rooms with none left that keep
    /// their last seq (`oldest_seq > last_seq`), in no order.
    pub rooms: Vec<RecoveredRoom>,
    /// The idempotency keys still within their window, oldest first.
    pub keys: Vec<RecoveredKey>,
}

/// An engine's answer to one request, or news from it.
#[derive(Debug)]
pub(crate) enum Answer {
    /// Append `token` is durable, or was refused.
    Appended {
        token: u64,
        result: Result<(), EngineError>,
    },
    /// The events of `room` after the seq asked for, oldest first.
    Read {
        token: u64,
        room: String,
        result: Result<Vec<StoredEvent>, EngineError>,
    },
    /// The engine's events older than `history_ttl` have left; each room is
    /// given with its oldest seq now (`last + 1` when none is left).
    Expired { rooms: Vec<(String, u64)> },
    /// The engine can take writes (`up`), or cannot and why.
    Health { up: bool, detail: Option<String> },
    /// How long an operation took (`op` is `append`, `read` or `expire`).
    Timing { op: &'static str, seconds: f64 },
}

/// Why an engine could not take a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EngineError {
    /// For logs and the `engine` component's detail.
    pub message: String,
}

impl EngineError {
    /// An error saying `message`.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// The default engine: a new epoch per process, and the hub's own rooms,
/// rings and keys are the record. Appends are done when made.
#[derive(Debug)]
pub(crate) struct Memory {
    epoch: String,
}

impl Memory {
    /// A memory engine with a fresh random epoch.
    pub fn new() -> Self {
        Self { epoch: new_uuid() }
    }
}

impl Engine for Memory {
    fn kind(&self) -> &'static str {
        "memory"
    }

    fn epoch(&self) -> &str {
        &self.epoch
    }

    fn recovered(&mut self) -> Recovered {
        Recovered::default()
    }

    fn in_place(&self) -> bool {
        true
    }

    fn append(&mut self, _: Append) -> Progress {
        Progress::Done
    }

    fn read(&mut self, _: u64, _: &str, _: u64) -> Progress {
        // The rings hold everything this engine has; the hub never asks.
        Progress::Refused(EngineError::new("the memory engine holds only the rings"))
    }
}

/// Milliseconds since the Unix epoch, now.
pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The instant of this process that is `age` ago, or now if the process
/// clock does not reach back that far.
pub(crate) fn instant_ago(age: Duration) -> Instant {
    let now = Instant::now();
    now.checked_sub(age).unwrap_or(now)
}
