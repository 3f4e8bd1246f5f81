//! Server-Sent Events (PROTOCOL.md section 12): the lines of a stream and
//! its cursor, `<epoch>;<room>=<seq>;…`, the `id:` of every room event and
//! of the welcome, which a reconnect sends back as `Last-Event-ID`.
//!
//! A message is `data: <JSON>\n\n`: serde_json's compact output escapes
//! every CR and LF inside strings, so the JSON is always one line.

use std::fmt;

use bytes::Bytes;

use super::{Encoded, ErrorCode, ProtocolError, is_valid_room};

/// What every message line starts with.
pub(super) const DATA: &[u8] = b"data: ";

/// The first bytes of every stream: reconnect after one second. A field
/// block without `data` dispatches no event.
pub const RETRY: &[u8] = b"retry: 1000\n\n";

/// The comment that stands for the JSON `heartbeat` on a stream.
pub const HEARTBEAT: &[u8] = b": heartbeat\n\n";

/// The heartbeat comment as a message to queue (its payload is empty).
pub fn heartbeat() -> Encoded {
    Encoded::sse_event(Bytes::from_static(HEARTBEAT), HEARTBEAT.len() - 2)
}

/// `data: <json>\n\n` around a message already encoded as JSON.
pub fn data_event(json: &[u8]) -> Encoded {
    let mut buf = Vec::with_capacity(DATA.len() + json.len() + 2);
    buf.extend_from_slice(DATA);
    buf.extend_from_slice(json);
    buf.extend_from_slice(b"\n\n");
    Encoded::sse_event(Bytes::from(buf), DATA.len())
}

/// `id: <id>\ndata: <json>\n\n` in one buffer, and the same event without
/// its `id:` line, sharing the bytes: the first for the streams whose
/// cursor is `id`, the second for the rest.
pub fn tagged_event(id: &dyn fmt::Display, json: &[u8]) -> (Encoded, Encoded) {
    use std::io::Write as _;
    let mut buf = Vec::with_capacity(64 + DATA.len() + json.len() + 2);
    // Writing to a Vec cannot fail.
    let _ = writeln!(buf, "id: {id}");
    let id_len = buf.len();
    buf.extend_from_slice(DATA);
    buf.extend_from_slice(json);
    buf.extend_from_slice(b"\n\n");
    let tagged = Encoded::sse_event(Bytes::from(buf), id_len + DATA.len());
    let data = tagged.without_head(id_len);
    (tagged, data)
}

/// A stream's position, as an `id:` line carries it and `Last-Event-ID`
/// (or `?since=`) brings it back: the hub's epoch, then each room with the
/// seq of the last event of it the stream delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// The epoch of the hub that made it.
    pub epoch: String,
    /// The stream's rooms in order, each with its seq.
    pub rooms: Vec<(String, u64)>,
}

impl Cursor {
    /// Parses `<epoch>;<room>=<seq>;…` (no room is fine: `<epoch>`). Room
    /// names follow section 4, seqs are decimal digits, a room appears
    /// once; anything else is `bad_request`.
    pub fn parse(text: &str) -> Result<Self, ProtocolError> {
        let bad = |problem: &str| {
            ProtocolError::new(
                ErrorCode::BadRequest,
                format!(
                    "the stream cursor (Last-Event-ID or ?since=) {problem}; it is \
                     <epoch>;<room>=<seq>;… as the stream's `id:` lines carry it"
                ),
            )
        };
        let mut parts = text.trim().split(';');
        let epoch = parts.next().unwrap_or_default();
        if epoch.is_empty() || !epoch.bytes().all(|b| b.is_ascii_graphic() && b != b'=') {
            return Err(bad("has no epoch"));
        }
        let mut rooms: Vec<(String, u64)> = Vec::new();
        for part in parts {
            if part.is_empty() {
                return Err(bad("has an empty part (one `;` too many)"));
            }
            let Some((room, seq)) = part.split_once('=') else {
                return Err(bad(&format!("has `{part}`, not <room>=<seq>")));
            };
            if !is_valid_room(room) {
                return Err(bad(&format!("names `{room}`, not a room")));
            }
            let seq = (!seq.is_empty() && seq.bytes().all(|b| b.is_ascii_digit()))
                .then(|| seq.parse::<u64>().ok())
                .flatten()
                .ok_or_else(|| bad(&format!("has `{seq}` for room `{room}`, not a seq")))?;
            if rooms.iter().any(|(r, _)| r == room) {
                return Err(bad(&format!("names room `{room}` twice")));
            }
            rooms.push((room.to_string(), seq));
        }
        Ok(Self {
            epoch: epoch.to_string(),
            rooms,
        })
    }

    /// The seq the cursor holds for `room`, if it names it.
    pub fn seq(&self, room: &str) -> Option<u64> {
        self.rooms.iter().find(|(r, _)| r == room).map(|(_, s)| *s)
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.epoch)?;
        for (room, seq) in &self.rooms {
            write!(f, ";{room}={seq}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip() {
        let text = "0b6a5c2e-3f7d-4c1e-9a8b-2d4e6f8a0c1e;scans=12;a.b:c-d_e=0";
        let cursor = Cursor::parse(text).unwrap();
        assert_eq!(cursor.epoch, "0b6a5c2e-3f7d-4c1e-9a8b-2d4e6f8a0c1e");
        assert_eq!(
            cursor.rooms,
            [("scans".to_string(), 12), ("a.b:c-d_e".to_string(), 0)]
        );
        assert_eq!(cursor.to_string(), text);
        assert_eq!(cursor.seq("scans"), Some(12));
        assert_eq!(cursor.seq("other"), None);
        let bare = Cursor::parse(" e1 ").unwrap();
        assert_eq!((bare.epoch.as_str(), bare.rooms.len()), ("e1", 0));
    }

    #[test]
    fn bad_cursors_are_bad_requests() {
        for text in [
            "",
            ";a=1",
            "e;a",
            "e;a=",
            "e;a=-1",
            "e;a=+1",
            "e;a=1x",
            "e;a=99999999999999999999",
            "e;a b=1",
            "e;=1",
            "e;a=1;a=2",
            "e;a=1;",
            "e=1;a=1",
            "e\u{7f};a=1",
        ] {
            let e = Cursor::parse(text).unwrap_err();
            assert_eq!(e.code, ErrorCode::BadRequest, "{text:?}");
        }
    }

    #[test]
    fn events_are_one_data_line() {
        let data = data_event(br#"{"type":"t"}"#);
        assert_eq!(&data.wire()[..], b"data: {\"type\":\"t\"}\n\n");
        assert_eq!(data.payload(), br#"{"type":"t"}"#);
        assert!(data.is_sse() && !data.is_close() && !data.is_binary());
        let (tagged, untagged) = tagged_event(&"e;r=3", br#"{"x":"a\nb"}"#);
        assert_eq!(
            &tagged.wire()[..],
            b"id: e;r=3\ndata: {\"x\":\"a\\nb\"}\n\n".as_slice()
        );
        assert_eq!(tagged.payload(), untagged.payload());
        assert_eq!(&untagged.wire()[..], b"data: {\"x\":\"a\\nb\"}\n\n");
        assert_eq!(
            untagged.wire().as_ptr(),
            tagged.wire()[10..].as_ptr(),
            "one buffer"
        );
        assert_eq!(heartbeat().len(), 0);
        let encoded = crate::protocol::encode(
            &serde_json::json!({"s": "line\r\nbreak"}),
            crate::protocol::Encoding::Sse,
        );
        assert_eq!(
            &encoded.wire()[..],
            b"data: {\"s\":\"line\\r\\nbreak\"}\n\n".as_slice()
        );
        assert_eq!(encoded.len(), encoded.payload().len());
    }
}
