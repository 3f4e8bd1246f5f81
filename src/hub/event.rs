//! An event as the hub keeps it: encoded once per encoding that asked for
//! it, shared by every queue it goes to and by the room's history.

use std::fmt;

use serde_json::Value;

use crate::protocol::{Encoded, Encoding, sse};

/// One published event, encoded once per encoding that asked for it.
#[derive(Debug, Clone)]
pub(crate) struct EventRecord {
    /// The room's seq, if it went to a room.
    pub seq: Option<u64>,
    json: Encoded,
    msgpack: Option<Encoded>,
    /// The SSE forms, once a stream needed one.
    sse: Option<SseForms>,
}

/// An event as SSE streams get it: `data: <json>\n\n`, and for a room
/// event, once a stream of that room alone needed it, the same bytes after
/// `id: <epoch>;<room>=<seq>\n` in one buffer (`data` is then a slice of it).
#[derive(Debug, Clone)]
struct SseForms {
    data: Encoded,
    tagged: Option<Encoded>,
}

impl EventRecord {
    /// A record around an event already encoded as JSON.
    pub fn new(seq: Option<u64>, json: Encoded) -> Self {
        Self {
            seq,
            json,
            msgpack: None,
            sse: None,
        }
    }

    /// Whether the MessagePack form has been made.
    pub fn has_msgpack(&self) -> bool {
        self.msgpack.is_some()
    }

    /// Whether an SSE form has been made.
    pub fn has_sse(&self) -> bool {
        self.sse.is_some()
    }

    /// The bytes of the frames it holds: the JSON frame, the MessagePack
    /// frame once made, and the SSE event once made (one buffer, whether
    /// or not it has an `id:` line). This is what `max_history_bytes`
    /// counts.
    pub fn size(&self) -> usize {
        let sse = self
            .sse
            .as_ref()
            .map_or(0, |f| f.tagged.as_ref().unwrap_or(&f.data).wire().len());
        self.json.wire().len() + self.msgpack.as_ref().map_or(0, |m| m.wire().len()) + sse
    }

    /// The SSE event with the `id:` line of a stream of `room` alone,
    /// whose cursor is `<epoch>;<room>=<seq>`: built once, shared by every
    /// such stream. Only for room events.
    pub fn sse_tagged(&mut self, epoch: &str, room: &str) -> &Encoded {
        let seq = self.seq.unwrap_or_default();
        let json = &self.json;
        let forms = self.sse.get_or_insert_with(|| SseForms {
            data: sse::data_event(json.payload()),
            tagged: None,
        });
        if forms.tagged.is_none() {
            // One buffer for both forms: the untagged one becomes a slice
            // of it (a stream that holds the old one keeps it alive).
            let (tagged, data) =
                sse::tagged_event(&RoomCursor { epoch, room, seq }, json.payload());
            forms.data = data;
            forms.tagged = Some(tagged);
        }
        forms.tagged.as_ref().unwrap_or(&forms.data)
    }

    /// The event in `encoding`; MessagePack is transcoded from the JSON the
    /// first time a MessagePack member needs it, then shared.
    pub fn encoded(&mut self, encoding: Encoding) -> &Encoded {
        match encoding {
            Encoding::Json => &self.json,
            Encoding::Sse => {
                let json = &self.json;
                &self
                    .sse
                    .get_or_insert_with(|| SseForms {
                        data: sse::data_event(json.payload()),
                        tagged: None,
                    })
                    .data
            }
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

/// The cursor of a stream of one room: `<epoch>;<room>=<seq>`.
struct RoomCursor<'a> {
    epoch: &'a str,
    room: &'a str,
    seq: u64,
}

impl fmt::Display for RoomCursor<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{};{}={}", self.epoch, self.room, self.seq)
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
    fn sse_forms_share_one_buffer_and_count_once() {
        let json = crate::protocol::encode(&serde_json::json!({"n":1,"type":"t"}), Encoding::Json);
        let mut e = EventRecord::new(Some(7), json);
        let bare = e.size();
        let data = e.encoded(Encoding::Sse).clone();
        assert_eq!(&data.wire()[..], b"data: {\"n\":1,\"type\":\"t\"}\n\n");
        assert_eq!(e.size(), bare + data.wire().len());
        let tagged = e.sse_tagged("E", "r").clone();
        assert_eq!(
            &tagged.wire()[..],
            b"id: E;r=7\ndata: {\"n\":1,\"type\":\"t\"}\n\n".as_slice()
        );
        assert_eq!(
            e.size(),
            bare + tagged.wire().len(),
            "one SSE buffer counted"
        );
        let again = e.encoded(Encoding::Sse).clone();
        assert_eq!(again.wire(), data.wire());
        assert_eq!(again.wire().as_ptr(), tagged.wire()[10..].as_ptr());
        assert!(std::ptr::eq(
            e.sse_tagged("E", "r").wire().as_ptr(),
            tagged.wire().as_ptr()
        ));
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
