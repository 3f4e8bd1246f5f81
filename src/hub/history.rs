//! The hub-wide history budget, `max_history_bytes` (PROTOCOL.md section 5):
//! every event held in any room's ring, in publish order, and their bytes.
//! Past the budget the hub's oldest events leave first, whatever their room,
//! and a room left with neither members nor history is forgotten (its seq
//! is not: see [`Rooms`]).
//!
//! What is counted is [`EventRecord::size`]: each held event's JSON frame
//! and, once made, its MessagePack frame (the hub keeps both to send them
//! again). Not counted: the bookkeeping around each event (its ring slot and
//! its entry here, under 100 bytes), nor the rooms themselves.
//!
//! Each publish costs O(log n): one entry added here, and at most one
//! removed for the event its ring pushes out, or per event the budget
//! pushes out. The ledger holds exactly the events the rings hold, so it is
//! no larger than they are.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use super::room::EventRecord;
use super::rooms::Rooms;

/// Every event the rooms' rings hold, oldest first, and their total size.
#[derive(Debug)]
pub(crate) struct HistoryLedger {
    /// Serial (growing in publish order) to the event's room and the time
    /// it was kept (so the oldest first, for `history_ttl`).
    order: BTreeMap<u64, (Arc<str>, Instant)>,
    /// The [`EventRecord::size`] of every event in `order`.
    bytes: usize,
    /// `max_history_bytes`.
    limit: usize,
    next_serial: u64,
}

impl HistoryLedger {
    /// An empty ledger holding at most `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            order: BTreeMap::new(),
            bytes: 0,
            limit,
            next_serial: 0,
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Events held.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Keeps `record` as the newest event of room `name` (a ring of
    /// `capacity`), then lets the hub's oldest events go until the budget
    /// holds. The room must exist; with `capacity` 0 nothing is kept.
    pub fn keep(&mut self, rooms: &mut Rooms, name: &str, record: EventRecord, capacity: usize) {
        self.keep_at(rooms, name, record, capacity, Instant::now());
    }

    /// [`HistoryLedger::keep`], for an event kept at `at`.
    pub fn keep_at(
        &mut self,
        rooms: &mut Rooms,
        name: &str,
        record: EventRecord,
        capacity: usize,
        at: Instant,
    ) {
        if capacity == 0 {
            return;
        }
        let Some(key) = rooms.get_key_value(name).map(|(key, _)| key.clone()) else {
            return;
        };
        let Some(room) = rooms.get_mut(name) else {
            return;
        };
        self.next_serial += 1;
        let serial = self.next_serial;
        self.bytes += record.size();
        self.order.insert(serial, (key, at));
        room.remember(serial, record, capacity, |serial, size| {
            self.order.remove(&serial);
            self.bytes -= size;
        });
        self.trim(rooms);
    }

    /// Counts bytes a room's history grew by (a MessagePack form kept by a
    /// replay); the next [`HistoryLedger::trim`] enforces the budget.
    pub fn grew(&mut self, bytes: usize) {
        self.bytes += bytes;
    }

    /// Drops the hub's oldest events until the budget holds, and forgets
    /// each room this leaves with neither members nor history.
    pub fn trim(&mut self, rooms: &mut Rooms) {
        while self.bytes > self.limit {
            if !self.drop_first(rooms) {
                // Only a bug could leave bytes counted with no event; start
                // counting afresh rather than trim every publish from now on.
                debug_assert_eq!(self.bytes, 0, "bytes counted for no event");
                self.bytes = 0;
                break;
            }
        }
    }

    /// Drops every event kept before `cutoff` (`history_ttl`), oldest
    /// first, and forgets each room this leaves idle; returns how many.
    pub fn expire(&mut self, rooms: &mut Rooms, cutoff: Instant) -> usize {
        let mut dropped = 0;
        while self
            .order
            .first_key_value()
            .is_some_and(|(_, (_, at))| *at < cutoff)
        {
            self.drop_first(rooms);
            dropped += 1;
        }
        dropped
    }

    /// Drops the hub's oldest event; `false` if there is none.
    fn drop_first(&mut self, rooms: &mut Rooms) -> bool {
        let Some((serial, (name, _))) = self.order.pop_first() else {
            return false;
        };
        let Some(room) = rooms.get_mut(&*name) else {
            debug_assert!(false, "a ledger entry for a forgotten room");
            return true;
        };
        // The oldest event of the hub is the oldest of its room: every
        // older one of that room came earlier here and has left.
        match room.drop_oldest(serial) {
            Some(size) => self.bytes -= size,
            None => debug_assert!(false, "a ledger entry its ring does not hold"),
        }
        rooms.forget_if_idle(&name);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::room::Room;
    use crate::protocol::{Encoding, encode};

    /// An event of about `size` bytes.
    fn event(seq: u64, size: usize) -> EventRecord {
        let json = encode(
            &serde_json::json!({"seq": seq, "pad": "x".repeat(size.saturating_sub(24))}),
            Encoding::Json,
        );
        EventRecord::new(Some(seq), json)
    }

    fn publish(ledger: &mut HistoryLedger, rooms: &mut Rooms, name: &str, size: usize, cap: usize) {
        let seq = rooms.open(name).1.next_seq();
        ledger.keep(rooms, name, event(seq, size), cap);
    }

    /// The ledger and the rings agree, and the budget holds.
    fn assert_consistent(ledger: &HistoryLedger, rooms: &Rooms) {
        let held: usize = rooms.values().map(Room::history_bytes).sum();
        assert_eq!(ledger.bytes(), held, "ledger bytes are the rings' bytes");
        assert!(ledger.bytes() <= ledger.limit);
        for (name, _) in ledger.order.values() {
            assert!(rooms.contains_key(name), "no entry for a forgotten room");
        }
    }

    fn oldest(rooms: &Rooms, name: &str) -> Option<u64> {
        rooms.get(name).map(Room::oldest_seq)
    }

    #[test]
    fn the_oldest_events_of_the_whole_hub_leave_first() {
        let mut rooms = Rooms::new();
        let mut ledger = HistoryLedger::new(10_000);
        let size = event(1, 1000).size();
        // Room a gets 5 events, then b gets 10: a's leave first, all of them,
        // though b is the room that keeps publishing.
        for _ in 0..5 {
            publish(&mut ledger, &mut rooms, "a", 1000, 100);
        }
        rooms.open("kept"); // a room with no event stays as it is
        for _ in 0..10 {
            publish(&mut ledger, &mut rooms, "b", 1000, 100);
            assert_consistent(&ledger, &rooms);
        }
        let fits = 10_000 / size;
        assert_eq!(ledger.len(), fits);
        assert_eq!(
            oldest(&rooms, "a"),
            None,
            "emptied and no members: forgotten"
        );
        assert_eq!(oldest(&rooms, "b"), Some(1 + 10 - fits as u64));
        assert!(rooms.contains_key("kept"));
    }

    #[test]
    fn interleaved_rooms_lose_their_events_in_publish_order() {
        let mut rooms = Rooms::new();
        let mut ledger = HistoryLedger::new(6_000);
        for _ in 0..20 {
            for name in ["a", "b", "c"] {
                publish(&mut ledger, &mut rooms, name, 1000, 100);
                assert_consistent(&ledger, &rooms);
            }
        }
        // What fits is the hub's newest events: each room holds its share
        // of them, the room published last at least as many as the others.
        let fits = ledger.len();
        assert!(fits >= 3, "{fits}");
        let held: Vec<u64> = ["a", "b", "c"]
            .iter()
            .map(|n| {
                rooms
                    .get(*n)
                    .map_or(0, |r| r.last_seq() + 1 - r.oldest_seq())
            })
            .collect();
        assert_eq!(held.iter().sum::<u64>(), fits as u64);
        assert!(held[2] >= held[1] && held[1] >= held[0], "{held:?}");
        assert!(held[2] - held[0] <= 1, "{held:?}");
    }

    #[test]
    fn events_pushed_out_by_history_size_leave_the_ledger_too() {
        let mut rooms = Rooms::new();
        let mut ledger = HistoryLedger::new(usize::MAX);
        for _ in 0..1000 {
            publish(&mut ledger, &mut rooms, "a", 100, 3);
        }
        assert_eq!(ledger.len(), 3, "the ledger holds what the rings hold");
        assert_consistent(&ledger, &rooms);
        publish(&mut ledger, &mut rooms, "none", 100, 0);
        assert_eq!(ledger.len(), 3, "history_size 0 keeps nothing");
    }

    #[test]
    fn an_event_larger_than_the_budget_is_not_kept() {
        let mut rooms = Rooms::new();
        let mut ledger = HistoryLedger::new(500);
        publish(&mut ledger, &mut rooms, "a", 100, 10);
        publish(&mut ledger, &mut rooms, "a", 2000, 10);
        assert_eq!(ledger.len(), 0);
        assert_eq!((ledger.bytes(), oldest(&rooms, "a")), (0, None));
        // The room was forgotten, but not its seq: the next event is 3.
        publish(&mut ledger, &mut rooms, "a", 100, 10);
        assert_eq!(rooms["a"].last_seq(), 3);
    }

    #[test]
    fn a_replay_that_keeps_msgpack_counts_and_is_trimmed() {
        let mut rooms = Rooms::new();
        let size = event(1, 1000).size();
        let mut ledger = HistoryLedger::new(size * 4);
        for _ in 0..4 {
            publish(&mut ledger, &mut rooms, "a", 1000, 100);
        }
        assert_eq!(ledger.len(), 4);
        let replay = rooms
            .get_mut("a")
            .unwrap()
            .replay(0, Encoding::MsgPack, |_| true);
        let replay = replay.unwrap();
        assert!(replay.grew > 0);
        ledger.grew(replay.grew);
        ledger.trim(&mut rooms);
        assert_consistent(&ledger, &rooms);
        assert!(ledger.len() < 4, "the transcodings pushed the oldest out");
    }

    #[test]
    fn events_older_than_the_ttl_leave_oldest_first() {
        let mut rooms = Rooms::new();
        let mut ledger = HistoryLedger::new(usize::MAX);
        let t0 = Instant::now();
        let at = |ms| t0 + std::time::Duration::from_millis(ms);
        for (i, name) in ["a", "b", "a", "c"].iter().enumerate() {
            let seq = rooms.open(name).1.next_seq();
            ledger.keep_at(&mut rooms, name, event(seq, 100), 10, at(i as u64 * 10));
        }
        assert_eq!(ledger.expire(&mut rooms, at(15)), 2, "a's first and b's");
        assert_consistent(&ledger, &rooms);
        assert_eq!(oldest(&rooms, "a"), Some(2));
        assert_eq!(
            oldest(&rooms, "b"),
            None,
            "no members and no events: forgotten"
        );
        assert_eq!(ledger.expire(&mut rooms, at(15)), 0);
        assert_eq!(ledger.expire(&mut rooms, at(1000)), 2);
        assert!(rooms.is_empty());
    }

    proptest::proptest! {
        #[test]
        fn the_ledger_always_matches_the_rings(
            ops in proptest::collection::vec((0u8..6, 10usize..3000, proptest::bool::ANY), 1..200),
            limit in 1usize..20_000,
            cap in 0usize..8,
        ) {
            let mut rooms = Rooms::new();
            let mut ledger = HistoryLedger::new(limit);
            for (room, size, msgpack) in ops {
                let name = format!("r{room}");
                publish(&mut ledger, &mut rooms, &name, size, cap);
                if msgpack && let Some(r) = rooms.get_mut(name.as_str()) {
                    let replay = r.replay(0, Encoding::MsgPack, |_| true);
                    if let Ok(replay) = replay {
                        ledger.grew(replay.grew);
                        ledger.trim(&mut rooms);
                    }
                }
                assert_consistent(&ledger, &rooms);
                let events: usize = rooms
                    .values()
                    .map(|r| (r.last_seq() + 1 - r.oldest_seq()) as usize)
                    .sum();
                proptest::prop_assert_eq!(events, ledger.len());
            }
        }
    }
}
