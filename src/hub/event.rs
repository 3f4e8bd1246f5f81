//! An event as the hub keeps it: encoded once per encoding that asked for
//! it, shared by every queue it goes to and by the room's history.

use serde_json::Value;

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

    /// The bytes of the frames it holds: the JSON frame, and the MessagePack
    /// frame once made. This is what `max_history_bytes` counts.
    pub fn size(&self) -> usize {
        self.json.wire().len() + self.msgpack.as_ref().map_or(0, |m| m.wire().len())
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

#[cfg(test)]
mod tests {
    use super::*;

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
        let crate::protocol::ClientAction::Publish { payload, .. } = message.request else {
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
