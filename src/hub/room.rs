//! A room: its members, its seq counter, its ring of recent events, and the
//! resume rule of PROTOCOL.md section 4.
//!
//! Joining and leaving are O(1) whatever the order: the members are one
//! array (a fan-out walks it in order) with an index from connection to
//! position, and a leave swaps the last member into the gap.

use std::collections::{HashMap, VecDeque};

use super::ConnId;
pub(crate) use super::event::EventRecord;
use crate::outlet::Outlet;
use crate::protocol::{Encoded, Encoding};

/// Why a room could not be resumed from a position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unavailable {
    /// The oldest seq the room still holds (last + 1 when it holds none).
    pub oldest_seq: u64,
}

/// A room member: what a broadcast needs to reach it, kept in one array
/// so that a fan-out walks memory in order.
#[derive(Debug, Clone)]
pub(crate) struct Recipient {
    pub id: ConnId,
    pub encoding: Encoding,
    pub outlet: Outlet,
}

/// An event in a room's history, with its number in the hub-wide ledger
/// (`super::history`), which says which event of the hub is oldest.
#[derive(Debug)]
struct Kept {
    serial: u64,
    record: EventRecord,
}

/// What a [`Room::replay`] did besides handing out events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Replay {
    /// Events transcoded to MessagePack or SSE (and kept so) on the way.
    pub transcoded: usize,
    /// Bytes the history grew by keeping those transcodings.
    pub grew: usize,
    /// Whether every event was taken (`false`: the push refused one).
    pub complete: bool,
}

/// A room's members and history.
#[derive(Debug, Default)]
pub(crate) struct Room {
    members: Vec<Recipient>,
    /// Where each member sits in `members`.
    index: HashMap<ConnId, usize>,
    /// Consecutive seqs, oldest first.
    history: VecDeque<Kept>,
    /// The [`EventRecord::size`] of everything in `history`.
    history_bytes: usize,
    /// The newest event delivered (and, with a store, stored).
    last_seq: u64,
    /// The newest seq handed out: ahead of `last_seq` while appends to a
    /// store are in flight.
    reserved: u64,
    /// Appends handed to the engine and not answered yet.
    in_flight: u32,
    /// Moves on each refused append: the answers of appends made before
    /// it no longer move `reserved` back.
    generation: u32,
    /// With a store: the oldest seq the store holds (`last_seq + 1` when it
    /// holds none). `None`: the ring is all there is.
    stored_from: Option<u64>,
    /// In a cluster: the hub watches it, and only letting go of the watch
    /// takes it out of the table (never idleness).
    watched: bool,
}

impl Room {
    /// An empty room whose next event has seq `last_seq + 1`.
    pub fn continuing(last_seq: u64) -> Self {
        Self {
            last_seq,
            reserved: last_seq,
            ..Self::default()
        }
    }

    /// Adds a member; `false` if it was one already.
    pub fn join(&mut self, member: Recipient) -> bool {
        if self.index.contains_key(&member.id) {
            return false;
        }
        self.index.insert(member.id, self.members.len());
        self.members.push(member);
        true
    }

    /// Removes a member; `false` if it was not one.
    pub fn leave(&mut self, id: ConnId) -> bool {
        let Some(at) = self.index.remove(&id) else {
            return false;
        };
        self.members.swap_remove(at);
        if let Some(moved) = self.members.get(at) {
            self.index.insert(moved.id, at);
        }
        true
    }

    /// The members, in no particular order.
    pub fn members(&self) -> &[Recipient] {
        &self.members
    }

    /// How many members the room has.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// The seq of the newest event, 0 before the first.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Takes the next seq for an event about to be published and
    /// delivered at once (the memory engine).
    pub fn next_seq(&mut self) -> u64 {
        self.last_seq += 1;
        self.reserved = self.last_seq;
        self.last_seq
    }

    /// Takes the next seq for an event the store must hold before it is
    /// delivered; returns it with the generation its answer must match.
    pub fn reserve_seq(&mut self) -> (u64, u32) {
        if self.stored_from.is_none() {
            self.stored_from = Some(self.last_seq + 1);
        }
        self.reserved += 1;
        self.in_flight += 1;
        (self.reserved, self.generation)
    }

    /// The store holds event `seq` (the next after `last_seq`), and at most
    /// the last `capacity` events.
    pub fn stored(&mut self, seq: u64, capacity: usize) {
        debug_assert_eq!(seq, self.last_seq + 1, "stored in seq order");
        self.in_flight = self.in_flight.saturating_sub(1);
        self.last_seq = seq;
        let kept_from = (seq + 1).saturating_sub(capacity as u64);
        let oldest = self.stored_from.unwrap_or(seq).min(seq);
        self.stored_from = Some(oldest.max(kept_from));
    }

    /// A cluster's event `seq` was delivered (a later one than `last_seq`,
    /// not always the next: Redis may have let some go), and Redis holds at
    /// most the last `capacity` events.
    pub fn delivered(&mut self, seq: u64, capacity: usize) {
        self.last_seq = seq;
        self.reserved = seq;
        let kept_from = (seq + 1).saturating_sub(capacity as u64);
        let oldest = self.stored_from.unwrap_or(seq).min(seq);
        self.stored_from = Some(oldest.max(kept_from));
    }

    /// Empties the ring, giving each event's ledger serial and size to
    /// `left`.
    pub fn clear_history(&mut self, mut left: impl FnMut(u64, usize)) {
        for kept in self.history.drain(..) {
            left(kept.serial, kept.record.size());
        }
        self.history_bytes = 0;
    }

    /// The store refused the append of `seq` made in `generation`: the
    /// seqs from `seq` on are handed out again (once per generation, so an
    /// older refusal cannot take back a seq handed out since).
    pub fn refused(&mut self, seq: u64, generation: u32) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if generation == self.generation {
            self.reserved = seq.saturating_sub(1).max(self.last_seq);
            self.generation = self.generation.wrapping_add(1);
        }
    }

    /// A room the store holds from `oldest_seq` to `last_seq`, as it was
    /// found when the store was opened.
    pub fn recovered(last_seq: u64, oldest_seq: u64) -> Self {
        Self {
            last_seq,
            reserved: last_seq,
            stored_from: Some(oldest_seq),
            ..Self::default()
        }
    }

    /// A cluster's room as Redis holds it, from `oldest_seq` to
    /// `last_seq`, watched by this hub.
    pub fn watched(last_seq: u64, oldest_seq: u64) -> Self {
        Self {
            watched: true,
            ..Self::recovered(last_seq, oldest_seq)
        }
    }

    /// The store's events before `oldest_seq` have expired.
    pub fn expired(&mut self, oldest_seq: u64) {
        if let Some(from) = &mut self.stored_from {
            *from = (*from).max(oldest_seq);
        }
    }

    /// Whether resuming after `since` needs events the ring no longer
    /// holds but the store does: they must be read from it first.
    pub fn needs_read(&self, since: u64) -> bool {
        self.stored_from.is_some() && since < self.last_seq && self.ring_oldest() > since + 1
    }

    /// The oldest seq the ring holds, or `last + 1`.
    fn ring_oldest(&self) -> u64 {
        self.history
            .front()
            .and_then(|e| e.record.seq)
            .unwrap_or(self.last_seq + 1)
    }

    /// Keeps `event`, ledger number `serial`, as the newest. Each event it
    /// pushes out of the ring's `capacity` goes to `left` with its serial
    /// and size. With `capacity` 0 nothing is kept.
    pub fn remember(
        &mut self,
        serial: u64,
        event: EventRecord,
        capacity: usize,
        mut left: impl FnMut(u64, usize),
    ) {
        if capacity == 0 {
            return;
        }
        while self.history.len() >= capacity {
            let Some(old) = self.history.pop_front() else {
                break;
            };
            let size = old.record.size();
            self.history_bytes -= size;
            left(old.serial, size);
        }
        self.history_bytes += event.size();
        self.history.push_back(Kept {
            serial,
            record: event,
        });
    }

    /// Drops the oldest event if it is ledger number `serial`, and returns
    /// its size; `None` (and nothing dropped) otherwise.
    pub fn drop_oldest(&mut self, serial: u64) -> Option<usize> {
        if self.history.front()?.serial != serial {
            return None;
        }
        let old = self.history.pop_front()?;
        let size = old.record.size();
        self.history_bytes -= size;
        Some(size)
    }

    /// The bytes its history holds, as [`EventRecord::size`] counts them.
    #[cfg(test)]
    pub fn history_bytes(&self) -> usize {
        self.history_bytes
    }

    /// The oldest seq held, in the ring or the store, or `last + 1` when
    /// nothing is held.
    pub fn oldest_seq(&self) -> u64 {
        let ring = self.ring_oldest();
        self.stored_from.map_or(ring, |stored| stored.min(ring))
    }

    /// Whether the events after `since` can be replayed: the resume rule of
    /// section 4, `oldest - 1 <= since <= last`.
    pub fn can_resume(&self, since: u64) -> Result<(), Unavailable> {
        let oldest = self.oldest_seq();
        if since.saturating_add(1) < oldest || since > self.last_seq {
            Err(Unavailable { oldest_seq: oldest })
        } else {
            Ok(())
        }
    }

    /// Hands the events after `since`, oldest first and in `encoding`, to
    /// `push` until it refuses one, if [`Room::can_resume`]. A MessagePack
    /// or SSE form made on the way is kept, and counted in the history's
    /// bytes. The events are consecutive: the n-th has seq `since + n`.
    pub fn replay(
        &mut self,
        since: u64,
        encoding: Encoding,
        mut push: impl FnMut(&Encoded) -> bool,
    ) -> Result<Replay, Unavailable> {
        self.can_resume(since)?;
        let start = self
            .history
            .partition_point(|k| k.record.seq.is_some_and(|s| s <= since));
        let mut replay = Replay {
            complete: true,
            ..Replay::default()
        };
        for kept in self.history.range_mut(start..) {
            let before = kept.record.size();
            let fresh = match encoding {
                Encoding::Json => false,
                Encoding::MsgPack => !kept.record.has_msgpack(),
                Encoding::Sse => !kept.record.has_sse(),
            };
            let taken = push(kept.record.encoded(encoding));
            if fresh {
                replay.transcoded += 1;
                replay.grew += kept.record.size() - before;
            }
            if !taken {
                replay.complete = false;
                break;
            }
        }
        self.history_bytes += replay.grew;
        Ok(replay)
    }

    /// Whether the room has neither members nor history (in memory or in
    /// the store) nor appends in flight, and can be dropped.
    pub fn is_idle(&self) -> bool {
        !self.watched
            && self.members.is_empty()
            && self.history.is_empty()
            && self.in_flight == 0
            && self.stored_from.is_none_or(|from| from > self.last_seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn event(seq: u64) -> EventRecord {
        let json = crate::protocol::encode(&serde_json::json!({"seq": seq}), Encoding::Json);
        EventRecord::new(Some(seq), json)
    }

    /// A room that was given `n` events, serials 1..=n, in a ring of `capacity`.
    fn room_with(n: u64, capacity: usize) -> Room {
        let mut room = Room::default();
        for serial in 1..=n {
            let seq = room.next_seq();
            room.remember(serial, event(seq), capacity, |_, _| {});
        }
        room
    }

    fn seqs(room: &mut Room, since: u64) -> Result<Vec<u64>, Unavailable> {
        let mut seen = Vec::new();
        room.replay(since, Encoding::Json, |e| {
            let v: Value = serde_json::from_slice(e.payload()).unwrap();
            seen.push(v["seq"].as_u64().unwrap());
            true
        })?;
        Ok(seen)
    }

    fn sum_of_sizes(room: &Room) -> usize {
        room.history.iter().map(|k| k.record.size()).sum()
    }

    #[test]
    fn resumes_exactly_the_missed_events() {
        let mut room = room_with(10, 4); // holds 7..=10
        assert_eq!(room.oldest_seq(), 7);
        assert_eq!(seqs(&mut room, 6), Ok(vec![7, 8, 9, 10]));
        assert_eq!(seqs(&mut room, 8), Ok(vec![9, 10]));
        assert_eq!(seqs(&mut room, 10), Ok(vec![]));
        assert_eq!(seqs(&mut room, 5), Err(Unavailable { oldest_seq: 7 }));
        assert_eq!(seqs(&mut room, 11), Err(Unavailable { oldest_seq: 7 }));
    }

    #[test]
    fn a_store_room_hands_out_seqs_again_after_a_refusal_and_continues() {
        let mut room = Room::continuing(7);
        let (a, gen_a) = room.reserve_seq();
        let (b, gen_b) = room.reserve_seq();
        assert_eq!(
            (a, b),
            (8, 9),
            "a continuing room reserves after its last seq"
        );
        room.refused(a, gen_a); // 8 failed: 8 is handed out again
        let (c, gen_c) = room.reserve_seq();
        assert_eq!(c, 8);
        room.refused(b, gen_b); // the older 9 failing takes nothing back
        room.stored(c, 100);
        let _ = gen_c;
        assert_eq!(room.last_seq(), 8);
        assert_eq!(room.reserve_seq().0, 9);
        assert!(!room.is_idle(), "an append in flight");
    }

    #[test]
    fn an_empty_room_resumes_only_from_its_last_seq() {
        let mut room = Room::default();
        assert_eq!(seqs(&mut room, 0), Ok(vec![]));
        assert_eq!(seqs(&mut room, 1), Err(Unavailable { oldest_seq: 1 }));
        let mut no_history = room_with(3, 0);
        assert_eq!(seqs(&mut no_history, 3), Ok(vec![]));
        assert_eq!(seqs(&mut no_history, 2), Err(Unavailable { oldest_seq: 4 }));
    }

    #[test]
    fn history_bytes_follow_the_ring() {
        let mut room = Room::default();
        let mut left = Vec::new();
        for serial in 10..20 {
            let seq = room.next_seq();
            let mut e = event(seq);
            let size = e.size();
            let json = e.encoded(Encoding::Json).wire().len();
            assert_eq!(size, json, "JSON only until transcoded");
            room.remember(serial, e, 4, |s, b| left.push((s, b)));
            assert_eq!(room.history_bytes(), sum_of_sizes(&room));
            assert!(size > 0);
        }
        assert_eq!(
            left.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            [10, 11, 12, 13, 14, 15],
            "pushed out oldest first, with their serials"
        );
        assert_eq!(room.oldest_seq(), 7);
        let mut none = Room::default();
        none.remember(1, event(1), 0, |_, _| panic!("nothing kept, nothing left"));
        assert_eq!((none.history_bytes(), none.oldest_seq()), (0, 1));
    }

    #[test]
    fn only_the_named_oldest_event_is_dropped() {
        let mut room = room_with(3, 10); // serials 1, 2, 3
        let before = room.history_bytes();
        assert_eq!(room.drop_oldest(2), None, "not the oldest");
        assert_eq!(room.history_bytes(), before);
        let size = room.drop_oldest(1).unwrap();
        assert_eq!(room.history_bytes(), before - size);
        assert_eq!(room.oldest_seq(), 2);
        assert_eq!(seqs(&mut room, 0), Err(Unavailable { oldest_seq: 2 }));
        assert_eq!(seqs(&mut room, 1), Ok(vec![2, 3]));
        room.drop_oldest(2).unwrap();
        room.drop_oldest(3).unwrap();
        assert_eq!(room.drop_oldest(4), None);
        assert_eq!((room.history_bytes(), room.oldest_seq()), (0, 4));
        assert!(room.is_idle(), "no members and no history");
        assert_eq!(seqs(&mut room, 3), Ok(vec![]));
    }

    #[test]
    fn a_msgpack_replay_counts_what_it_keeps() {
        let mut room = room_with(5, 10);
        let json_bytes = room.history_bytes();
        let mut frames = Vec::new();
        let replay = room
            .replay(2, Encoding::MsgPack, |e| {
                frames.push(e.wire().len());
                true
            })
            .unwrap();
        assert_eq!(frames.len(), 3);
        assert_eq!(replay.transcoded, 3);
        assert_eq!(replay.grew, frames.iter().sum::<usize>());
        assert!(replay.complete);
        assert_eq!(room.history_bytes(), json_bytes + replay.grew);
        assert_eq!(room.history_bytes(), sum_of_sizes(&room));
        let again = room.replay(0, Encoding::MsgPack, |_| true).unwrap();
        assert_eq!(
            (again.transcoded, again.grew),
            (2, room.history_bytes() - json_bytes - replay.grew)
        );
        assert_eq!(room.history_bytes(), sum_of_sizes(&room));
        // Evicting a transcoded event gives back both its frames.
        let mut left = 0;
        let seq = room.next_seq();
        room.remember(6, event(seq), 5, |_, b| left = b);
        assert_eq!(room.history_bytes(), sum_of_sizes(&room));
        assert!(left > 0);
    }

    #[test]
    fn a_replay_stops_where_the_queue_refuses() {
        let mut room = room_with(5, 10);
        let mut n = 0;
        let replay = room
            .replay(0, Encoding::Json, |_| {
                n += 1;
                n < 3
            })
            .unwrap();
        assert_eq!(n, 3);
        assert!(!replay.complete);
        assert_eq!(replay.grew, 0);
    }

    /// One outlet to stand for every member: the property below is about
    /// the member array and its index, not delivery.
    fn outlet() -> Outlet {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let socket = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let link = std::sync::Arc::new(crate::outlet::Link::new(smol::Async::new(socket).unwrap()));
        Outlet::new(link, async_channel::unbounded().0)
    }

    fn assert_consistent(room: &Room, model: &std::collections::BTreeSet<u128>, ids: &[ConnId]) {
        let members: std::collections::BTreeSet<ConnId> =
            room.members().iter().map(|m| m.id).collect();
        let expected: std::collections::BTreeSet<ConnId> =
            model.iter().map(|&i| ids[i as usize]).collect();
        assert_eq!(members, expected);
        assert_eq!(room.len(), model.len(), "no duplicates");
        assert_eq!(room.index.len(), room.members.len());
        for (at, m) in room.members.iter().enumerate() {
            assert_eq!(room.index[&m.id], at, "the index points at each member");
        }
    }

    proptest::proptest! {
        #[test]
        fn joins_and_leaves_in_any_order_keep_the_member_set(
            ops in proptest::collection::vec((proptest::bool::ANY, 0u128..40), 0..400)
        ) {
            let outlet = outlet();
            let ids: Vec<ConnId> = (0..40).map(|_| ConnId::random()).collect();
            let mut room = Room::default();
            let mut model = std::collections::BTreeSet::new();
            for (join, i) in ops {
                let id = ids[i as usize];
                if join {
                    let member = Recipient { id, encoding: Encoding::Json, outlet: outlet.clone() };
                    proptest::prop_assert_eq!(room.join(member), model.insert(i));
                } else {
                    proptest::prop_assert_eq!(room.leave(id), model.remove(&i));
                }
                assert_consistent(&room, &model, &ids);
            }
            proptest::prop_assert_eq!(room.is_idle(), model.is_empty());
        }
    }

    #[test]
    fn joining_many_in_descending_order_then_leaving_is_linear() {
        let outlet = outlet();
        let mut ids: Vec<ConnId> = (0..50_000).map(|_| ConnId::random()).collect();
        ids.sort_unstable_by(|a, b| b.cmp(a));
        let mut room = Room::default();
        for &id in &ids {
            assert!(room.join(Recipient {
                id,
                encoding: Encoding::Json,
                outlet: outlet.clone()
            }));
        }
        assert_eq!(room.len(), ids.len());
        for &id in ids.iter().rev() {
            assert!(room.leave(id));
        }
        assert!(room.is_idle());
    }
}
