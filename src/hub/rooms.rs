//! The hub's room table: rooms by name, made on first use and forgotten
//! once they hold neither members nor history (PROTOCOL.md section 5), and
//! the last seq of the rooms forgotten most recently, so that a room made
//! again continues its seq. Within an epoch a seq a client has seen is then
//! never given to another event of its room: a client resuming with an
//! older `since` gets `history_unavailable`, never another room's events
//! under the same numbers.

use std::collections::{HashMap, VecDeque};
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use super::room::Room;

/// How many forgotten rooms' last seqs are remembered (about 100 bytes
/// each). Past it the oldest is dropped, and that room, made again, starts
/// over at seq 1, as in a hub without this memory.
pub(crate) const FORGOTTEN_ROOMS: usize = 100_000;

/// The hub's rooms by name; the names are shared with each member's room
/// set. Reads and in-place changes go through the map; rooms come and go
/// only through [`Rooms::open`] and [`Rooms::forget_if_idle`].
#[derive(Debug, Default)]
pub(crate) struct Rooms {
    table: HashMap<Arc<str>, Room>,
    /// Forgotten rooms' last seqs, with the serial of when each was
    /// forgotten.
    forgotten: HashMap<Arc<str>, (u64, u64)>,
    /// (name, serial) in the order they were forgotten; a place whose
    /// serial is no longer the name's is stale (the room was made again).
    forgotten_order: VecDeque<(Arc<str>, u64)>,
    next_serial: u64,
}

impl Rooms {
    /// No rooms.
    pub fn new() -> Self {
        Self::default()
    }

    /// The room called `name`, and its shared name: made if there is none,
    /// continuing the seq it had when it was forgotten.
    pub fn open(&mut self, name: &str) -> (Arc<str>, &mut Room) {
        if let Some((key, _)) = self.table.get_key_value(name) {
            let key = key.clone();
            return (key.clone(), self.table.get_mut(&key).expect("just found"));
        }
        let key: Arc<str> = Arc::from(name);
        // Its place in `forgotten_order` goes stale; `remember` skips it.
        let last_seq = self.forgotten.remove(name).map_or(0, |(seq, _)| seq);
        let room = self
            .table
            .entry(key.clone())
            .or_insert_with(|| Room::continuing(last_seq));
        (key, room)
    }

    /// Forgets room `name` if it has neither members nor history left.
    pub fn forget_if_idle(&mut self, name: &str) {
        let Some((key, room)) = self.table.get_key_value(name) else {
            return;
        };
        if !room.is_idle() {
            return;
        }
        let (key, last_seq) = (key.clone(), room.last_seq());
        self.table.remove(name);
        if last_seq > 0 {
            self.remember(key, last_seq);
        }
    }

    /// Remembers that room `name`, not in the table, ended at `last_seq`
    /// (a store's room with no events left, as it was opened).
    pub fn forgotten(&mut self, name: &str, last_seq: u64) {
        if !self.table.contains_key(name) && last_seq > 0 {
            self.remember(Arc::from(name), last_seq);
        }
    }

    fn remember(&mut self, name: Arc<str>, last_seq: u64) {
        let serial = self.next_serial;
        self.next_serial += 1;
        self.forgotten.insert(name.clone(), (last_seq, serial));
        self.forgotten_order.push_back((name, serial));
        // Stale places count too, so the memory never passes the bound.
        while self.forgotten_order.len() > FORGOTTEN_ROOMS {
            let Some((oldest, serial)) = self.forgotten_order.pop_front() else {
                break;
            };
            if self
                .forgotten
                .get(&oldest)
                .is_some_and(|&(_, s)| s == serial)
            {
                self.forgotten.remove(&oldest);
            }
        }
    }

    /// The last seq of room `name` if it was forgotten (and is not in the
    /// table again), or 0. A forgotten room holds none of its events: a
    /// resume recovers it only from that seq, as a room whose history
    /// has all left.
    pub fn forgotten_seq(&self, name: &str) -> u64 {
        self.forgotten.get(name).map_or(0, |&(seq, _)| seq)
    }

    /// How many forgotten rooms' seqs are remembered.
    #[cfg(test)]
    pub fn remembered(&self) -> usize {
        self.forgotten.len()
    }
}

impl Deref for Rooms {
    type Target = HashMap<Arc<str>, Room>;

    fn deref(&self) -> &Self::Target {
        &self.table
    }
}

impl DerefMut for Rooms {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.table
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_room_made_again_continues_its_seq() {
        let mut rooms = Rooms::new();
        for _ in 0..7 {
            rooms.open("r").1.next_seq();
        }
        // Seven events, none kept: the room is idle and forgotten.
        rooms.forget_if_idle("r");
        assert!(!rooms.contains_key("r"));
        let (_, room) = rooms.open("r");
        assert_eq!(room.last_seq(), 7);
        assert_eq!(room.next_seq(), 8, "seq 1 to 7 are never given again");
        assert_eq!(rooms.remembered(), 0, "made again: no longer remembered");
    }

    #[test]
    fn a_room_that_never_had_an_event_is_not_remembered() {
        let mut rooms = Rooms::new();
        rooms.open("quiet");
        rooms.forget_if_idle("quiet");
        assert_eq!(rooms.remembered(), 0);
    }

    #[test]
    fn the_memory_of_forgotten_rooms_is_bounded() {
        let mut rooms = Rooms::new();
        for i in 0..FORGOTTEN_ROOMS + 10 {
            let name = format!("r{i}");
            rooms.open(&name).1.next_seq();
            rooms.forget_if_idle(&name);
        }
        assert_eq!(rooms.remembered(), FORGOTTEN_ROOMS);
        assert_eq!(rooms.open("r0").1.last_seq(), 0, "the oldest was dropped");
        assert_eq!(rooms.open("r10").1.last_seq(), 1, "a newer one continues");
    }
}
