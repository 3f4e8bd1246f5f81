//! What the publisher and the subscriber threads write down while a run
//! goes on, shared lock-free: one [`Slot`] per publish (when it was due,
//! sent and answered, and when its deliveries arrived) and the run's
//! counters. The clock is one `Instant` so every thread's times compare.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

/// Marks a slot time that has not happened.
pub(crate) const NEVER: u64 = u64::MAX;

/// One publish, by its index in the run.
#[derive(Debug)]
pub(crate) struct Slot {
    /// When the schedule wanted it sent (the payload's `t`).
    pub due: AtomicU64,
    /// When its request was written.
    pub sent: AtomicU64,
    /// When its 202 (or `published`) arrived.
    pub replied: AtomicU64,
    /// The seq the hub gave it.
    pub seq: AtomicU64,
    /// The recipients the hub counted.
    pub recipients: AtomicU64,
    /// Deliveries received.
    pub arrivals: AtomicU64,
    /// The latest delivery's arrival.
    pub last_arrival: AtomicU64,
}

impl Default for Slot {
    fn default() -> Self {
        Self {
            due: AtomicU64::new(NEVER),
            sent: AtomicU64::new(NEVER),
            replied: AtomicU64::new(NEVER),
            seq: AtomicU64::new(0),
            recipients: AtomicU64::new(0),
            arrivals: AtomicU64::new(0),
            last_arrival: AtomicU64::new(0),
        }
    }
}

/// The shared record of one run.
#[derive(Debug)]
pub(crate) struct Run {
    start: Instant,
    slots: Vec<Slot>,
    /// Publishes with an index below this belong to the latency phase.
    pub latency_publishes: u64,
    /// Deliveries of bench events received, both phases.
    pub deliveries: AtomicU64,
    /// Subscribers welcomed.
    pub connected: AtomicU64,
    /// Subscribers that could not connect.
    pub failed: AtomicU64,
    /// Subscribers welcomed and closed since.
    pub closed: AtomicU64,
    /// The highest seq seen in a reply or a delivery.
    pub max_seq: AtomicU64,
}

impl Run {
    /// A record for `latency_publishes` scheduled publishes and up to
    /// `flood_publishes` more.
    pub fn new(latency_publishes: u64, flood_publishes: u64) -> Self {
        let total = latency_publishes + flood_publishes;
        Self {
            start: Instant::now(),
            slots: (0..total).map(|_| Slot::default()).collect(),
            latency_publishes,
            deliveries: AtomicU64::new(0),
            connected: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            closed: AtomicU64::new(0),
            max_seq: AtomicU64::new(0),
        }
    }

    /// Nanoseconds since the run's clock started.
    pub fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// The instant `ns` after the clock started.
    pub fn instant(&self, ns: u64) -> Instant {
        self.start + std::time::Duration::from_nanos(ns)
    }

    /// The slot of publish `index`, if the run has one.
    pub fn slot(&self, index: u64) -> Option<&Slot> {
        self.slots.get(usize::try_from(index).ok()?)
    }

    /// The slots of publishes `from..to`.
    pub fn slots(&self, from: u64, to: u64) -> &[Slot] {
        let to = (to as usize).min(self.slots.len());
        &self.slots[(from as usize).min(to)..to]
    }

    /// How many publishes the run has room for.
    pub fn capacity(&self) -> u64 {
        self.slots.len() as u64
    }

    /// Subscribers welcomed and still open.
    pub fn open(&self) -> u64 {
        self.connected
            .load(Relaxed)
            .saturating_sub(self.closed.load(Relaxed))
    }

    /// Notes a seq seen in a reply or a delivery.
    pub fn saw_seq(&self, seq: u64) {
        self.max_seq.fetch_max(seq, Relaxed);
    }

    /// Notes one delivery of publish `index` at `now`.
    pub fn arrived(&self, index: u64, now: u64) {
        if let Some(slot) = self.slot(index) {
            slot.arrivals.fetch_add(1, Relaxed);
            slot.last_arrival.fetch_max(now, Relaxed);
        }
    }

    /// Deliveries received of publishes `from..to`.
    pub fn arrivals(&self, from: u64, to: u64) -> u64 {
        self.slots(from, to)
            .iter()
            .map(|s| s.arrivals.load(Relaxed))
            .sum()
    }
}
