//! A room: its members, its seq counter, its ring of recent events, and the
//! resume rule of PROTOCOL.md section 4. Also the encoded event itself.

use std::collections::{HashMap, VecDeque};

use serde_json::Value;

use super::ConnId;
use crate::outlet::Outlet;
use crate::protocol::{Encoded, Encoding};

/// One published event, encoded once per encoding that asked for it.
#[derive(Debug, Clone)]
pub(crate) struct EventRecord {
    /// The room's seq, if it went to a room.
    pub seq: Option<u64>,
    json: Encoded,
    msgpack: Option<Encoded>,
}

impl EventRecord {
    /// A record around an event already encoded as JSON.
    pub fn new(seq: Option<u64>, json: Encoded) -> Self {
        Self {
            seq,
            json,
            msgpack: None,
        }
    }

    /// Whether the MessagePack form has been made.
    pub fn has_msgpack(&self) -> bool {
        self.msgpack.is_some()
    }

    /// The event in `encoding`; MessagePack is transcoded from the JSON the
    /// first time a MessagePack member needs it, then shared.
    pub fn encoded(&mut self, encoding: Encoding) -> &Encoded {
        match encoding {
            Encoding::Json => &self.json,
            Encoding::MsgPack => {
                let json = &self.json;
                self.msgpack.get_or_insert_with(|| {
                    // The hub's own JSON, no deeper than the input it was
                    // made from (both parsers stop at depth 128), so it
                    // parses; a null stands in rather than a panic.
                    let value: Value =
                        serde_json::from_slice(json.payload()).unwrap_or(Value::Null);
                    crate::protocol::encode(&value, Encoding::MsgPack)
                })
            }
        }
    }
}

/// Why a room could not be resumed from a position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unavailable {
    /// The oldest seq the room still holds (last + 1 when it holds none).
    pub oldest_seq: u64,
}

/// A room member: what a broadcast needs to reach it, kept in one array
/// so that a fan-out walks memory in order.
#[derive(Debug, Clone)]
pub(crate) struct Member {
    pub id: ConnId,
    pub encoding: Encoding,
    pub outlet: Outlet,
}

/// A room's members and history.
#[derive(Debug, Default)]
pub(crate) struct Room {
    members: Vec<Member>,
    /// Where each member sits in `members`.
    index: HashMap<ConnId, usize>,
    history: VecDeque<EventRecord>,
    last_seq: u64,
}

impl Room {
    /// Adds a member; `false` if it was one already.
    pub fn join(&mut self, member: Member) -> bool {
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
    pub fn members(&self) -> &[Member] {
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

    /// Takes the next seq for an event about to be published.
    pub fn next_seq(&mut self) -> u64 {
        self.last_seq += 1;
        self.last_seq
    }

    /// Keeps `event` as the newest, dropping the oldest beyond `capacity`.
    pub fn remember(&mut self, event: EventRecord, capacity: usize) {
        if capacity == 0 {
            return;
        }
        while self.history.len() >= capacity {
            self.history.pop_front();
        }
        self.history.push_back(event);
    }

    /// The oldest seq held, or `last + 1` when nothing is held.
    pub fn oldest_seq(&self) -> u64 {
        self.history
            .front()
            .and_then(|e| e.seq)
            .unwrap_or(self.last_seq + 1)
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

    /// The events after `since`, oldest first, if [`Room::can_resume`].
    pub fn events_after(
        &mut self,
        since: u64,
    ) -> Result<impl Iterator<Item = &mut EventRecord>, Unavailable> {
        self.can_resume(since)?;
        Ok(self
            .history
            .iter_mut()
            .filter(move |e| e.seq.is_some_and(|s| s > since)))
    }

    /// Whether the room has neither members nor history, and can be dropped.
    pub fn is_idle(&self) -> bool {
        self.members.is_empty() && self.history.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room_with(n: u64, capacity: usize) -> Room {
        let mut room = Room::default();
        for _ in 0..n {
            let seq = room.next_seq();
            room.remember(
                EventRecord::new(
                    Some(seq),
                    crate::protocol::encode(&serde_json::json!({"seq": seq}), Encoding::Json),
                ),
                capacity,
            );
        }
        room
    }

    fn seqs(room: &mut Room, since: u64) -> Result<Vec<u64>, Unavailable> {
        room.events_after(since)
            .map(|it| it.map(|e| e.seq.unwrap()).collect())
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
    fn an_empty_room_resumes_only_from_its_last_seq() {
        let mut room = Room::default();
        assert_eq!(seqs(&mut room, 0), Ok(vec![]));
        assert_eq!(seqs(&mut room, 1), Err(Unavailable { oldest_seq: 1 }));
        let mut no_history = room_with(3, 0);
        assert_eq!(seqs(&mut no_history, 3), Ok(vec![]));
        assert_eq!(seqs(&mut no_history, 2), Err(Unavailable { oldest_seq: 4 }));
    }

    #[test]
    fn the_deepest_accepted_payload_transcodes() {
        // The deepest client message the JSON decoder accepts...
        let body = |depth: usize| {
            format!(
                "{{\"type\":\"publish\",\"room\":\"r\",\"event\":\"t\",\"payload\":{{\"a\":{}{}}}}}",
                "[".repeat(depth),
                "]".repeat(depth)
            )
        };
        let message = (100..200)
            .rev()
            .find_map(|depth| crate::protocol::decode(body(depth).as_bytes(), Encoding::Json).ok())
            .unwrap();
        let crate::protocol::Request::Publish { payload, .. } = message.request else {
            panic!()
        };
        // ...becomes an event whose JSON parses again for MessagePack.
        let env = crate::protocol::Envelope::message("t", &payload, None, "ts", None);
        let mut e = EventRecord::new(Some(1), crate::protocol::encode(&env, Encoding::Json));
        let v: Value = rmp_serde::from_slice(e.encoded(Encoding::MsgPack).payload()).unwrap();
        assert!(v.is_object(), "transcoded, not the null fallback");
    }

    #[test]
    fn msgpack_is_transcoded_once_from_json() {
        let json = crate::protocol::encode(&serde_json::json!({"type":"t","n":1}), Encoding::Json);
        let mut e = EventRecord::new(Some(1), json);
        let first = e.encoded(Encoding::MsgPack).clone();
        let second = e.encoded(Encoding::MsgPack).clone();
        assert!(first.is_binary());
        assert_eq!(
            first.wire().as_ptr(),
            second.wire().as_ptr(),
            "shared, not re-encoded"
        );
        let v: Value = rmp_serde::from_slice(first.payload()).unwrap();
        assert_eq!(v, serde_json::json!({"type":"t","n":1}));
    }
}
