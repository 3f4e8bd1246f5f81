//! What a consumer remembers across connections: the hub's epoch and the
//! last seq it delivered of each room, so that the next `subscribe` asks
//! for exactly the missed events and a replayed one is never delivered
//! twice (PROTOCOL.md section 4, `subscribe` with `since`).

use std::collections::BTreeMap;

use serde_json::{Value, json};

/// The resume state of one consumer.
///
/// ```
/// use serde_json::json;
/// use wshub::client::Resume;
///
/// let mut resume = Resume::default();
/// resume.subscribed(&json!({"rooms": ["a"], "epoch": "e1", "positions": {"a": 4}}));
/// assert!(resume.accept(&json!({"room": "a", "seq": 5})));
/// assert!(!resume.accept(&json!({"room": "a", "seq": 5})), "a duplicate");
/// let next = resume.subscribe_message(&["a"]);
/// assert_eq!(next["since"], json!({"a": 5}));
/// assert_eq!(next["epoch"], "e1");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resume {
    epoch: Option<String>,
    last_seq: BTreeMap<String, u64>,
}

impl Resume {
    /// The epoch the positions belong to, once a `subscribed` has told it.
    pub fn epoch(&self) -> Option<&str> {
        self.epoch.as_deref()
    }

    /// The last seq delivered (or the starting position) of `room`.
    pub fn position(&self, room: &str) -> Option<u64> {
        self.last_seq.get(room).copied()
    }

    /// The `subscribe` message for `rooms`: with `since` and `epoch` for
    /// the rooms this consumer has positions for.
    pub fn subscribe_message(&self, rooms: &[impl AsRef<str>]) -> Value {
        let rooms: Vec<&str> = rooms.iter().map(AsRef::as_ref).collect();
        let mut message = json!({"type": "subscribe", "rooms": rooms});
        let known: BTreeMap<&str, u64> = rooms
            .iter()
            .filter_map(|r| Some((*r, *self.last_seq.get(*r)?)))
            .collect();
        if let (Some(epoch), false) = (&self.epoch, known.is_empty()) {
            message["since"] = json!(known);
            message["epoch"] = json!(epoch);
        }
        message
    }

    /// Takes in a `subscribed` payload: the epoch, and the starting
    /// position of every room that was not recovered (a recovered room
    /// keeps its position; its missed events follow).
    pub fn subscribed(&mut self, payload: &Value) {
        self.epoch = payload["epoch"].as_str().map(str::to_string);
        if let Some(positions) = payload["positions"].as_object() {
            for (room, seq) in positions {
                if payload["recovered"][room].as_bool() != Some(true) {
                    self.last_seq
                        .insert(room.clone(), seq.as_u64().unwrap_or(0));
                }
            }
        }
    }

    /// Whether `event` is new: room events at or below the room's last
    /// seq were delivered before (a replay) and are refused; everything
    /// else is accepted, and a room event moves its room's position.
    pub fn accept(&mut self, event: &Value) -> bool {
        let (Some(room), Some(seq)) = (event["room"].as_str(), event["seq"].as_u64()) else {
            return true;
        };
        let last = self.last_seq.entry(room.to_string()).or_default();
        if seq <= *last {
            return false;
        }
        *last = seq;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_first_subscribe_asks_for_nothing_old() {
        let message = Resume::default().subscribe_message(&["a", "b"]);
        assert_eq!(message, json!({"type": "subscribe", "rooms": ["a", "b"]}));
    }

    #[test]
    fn recovered_rooms_keep_their_position() {
        let mut resume = Resume::default();
        resume.subscribed(&json!({"epoch": "e", "positions": {"a": 3, "b": 0}}));
        assert!(resume.accept(&json!({"room": "a", "seq": 4})));
        resume.subscribed(&json!({
            "epoch": "e",
            "positions": {"a": 9, "b": 7},
            "recovered": {"a": true, "b": false}
        }));
        assert_eq!(resume.position("a"), Some(4), "replay of 5..9 follows");
        assert_eq!(
            resume.position("b"),
            Some(7),
            "b starts over at its position"
        );
    }

    #[test]
    fn events_without_a_room_are_always_new() {
        let mut resume = Resume::default();
        assert!(resume.accept(&json!({"room": null, "type": "health_status"})));
        assert!(resume.accept(&json!({"room": null, "type": "health_status"})));
    }
}
