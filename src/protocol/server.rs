//! Encoding hub messages (section 3): one [`Envelope`] shape for every
//! message, serialised once per encoding into a cheaply clonable buffer.

use bytes::Bytes;
use serde::Serialize;

/// How a connection's messages are put on the wire: the two subprotocols
/// of section 2, or a Server-Sent Events stream (section 12).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Encoding {
    /// `wshub.json`: JSON in text frames.
    #[default]
    Json,
    /// `wshub.msgpack`: MessagePack maps in binary frames.
    MsgPack,
    /// `GET /sse`: the `wshub.json` JSON, one `data:` line per message.
    Sse,
}

impl Encoding {
    /// The `Sec-WebSocket-Protocol` token, or `sse` for an event stream (as
    /// the registry and the welcome show it).
    pub fn protocol(self) -> &'static str {
        match self {
            Self::Json => "wshub.json",
            Self::MsgPack => "wshub.msgpack",
            Self::Sse => "sse",
        }
    }

    /// The encoding named by a `Sec-WebSocket-Protocol` token (never
    /// [`Encoding::Sse`], which is not a subprotocol).
    pub fn from_protocol(token: &str) -> Option<Self> {
        match token {
            "wshub.json" => Some(Self::Json),
            "wshub.msgpack" => Some(Self::MsgPack),
            _ => None,
        }
    }
}

/// Every hub message: the four common fields, the event fields and `ref`.
#[derive(Debug, Serialize)]
pub struct Envelope<'a, P: Serialize> {
    /// The message or event type.
    #[serde(rename = "type")]
    pub kind: &'a str,
    /// The type's payload.
    pub payload: P,
    /// Correlation ID, `null` for heartbeats.
    pub correlation_id: Option<&'a str>,
    /// When the hub made the message.
    pub timestamp: &'a str,
    /// Event ID (events only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a str>,
    /// Event room, `Some(None)` for an event to everyone or a user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub room: Option<Option<&'a str>>,
    /// The room's seq (room events only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// The `ref` of the client message this replies to.
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<&'a str>,
}

impl<'a, P: Serialize> Envelope<'a, P> {
    /// A non-event message: a reply, a heartbeat or an error.
    pub fn message(
        kind: &'a str,
        payload: P,
        correlation_id: Option<&'a str>,
        timestamp: &'a str,
        reference: Option<&'a str>,
    ) -> Self {
        Self {
            kind,
            payload,
            correlation_id,
            timestamp,
            id: None,
            room: None,
            seq: None,
            reference,
        }
    }
}

/// A message ready for the wire: a complete WebSocket frame (header and
/// payload) or SSE event (`data:` line and blank line), built once and
/// shared by every recipient, so writing it to a socket is one more slice
/// in a vectored write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    frame: Bytes,
    /// Bytes before the message: the frame header, or the SSE event's
    /// `id:` line (if any) and `data: `.
    header_len: u32,
    /// An SSE event, which ends in `\n\n` after the message.
    sse: bool,
}

/// Room before a payload for the longest frame header (2 + 8 bytes).
const MAX_HEADER: usize = 10;

/// WebSocket opcodes (RFC 6455, 5.2).
pub mod opcode {
    /// The continuation of a fragmented message.
    pub const CONTINUATION: u8 = 0x0;
    /// A text frame.
    pub const TEXT: u8 = 0x1;
    /// A binary frame.
    pub const BINARY: u8 = 0x2;
    /// A close frame.
    pub const CLOSE: u8 = 0x8;
    /// A ping frame.
    pub const PING: u8 = 0x9;
    /// A pong frame.
    pub const PONG: u8 = 0xA;
}

impl Encoded {
    /// A single, unmasked, final frame of `opcode` around `payload`.
    pub fn frame(opcode: u8, payload: &[u8]) -> Self {
        let mut buf = vec![0; MAX_HEADER];
        buf.extend_from_slice(payload);
        Self::seal(opcode, buf)
    }

    /// Finishes a frame whose payload follows [`MAX_HEADER`] reserved bytes.
    fn seal(opcode: u8, mut buf: Vec<u8>) -> Self {
        let (header, header_len) = frame_header(0x80 | opcode, buf.len() - MAX_HEADER, false);
        let start = MAX_HEADER - header_len;
        buf[start..MAX_HEADER].copy_from_slice(&header[..header_len]);
        Self {
            frame: Bytes::from(buf).slice(start..),
            header_len: header_len as u32,
            sse: false,
        }
    }

    /// An SSE event whose bytes are `frame`: `header_len` bytes of `id:`
    /// line and `data: `, the message, then `\n\n`.
    pub(super) fn sse_event(frame: Bytes, header_len: usize) -> Self {
        debug_assert!(frame.ends_with(b"\n\n") && header_len + 2 <= frame.len());
        Self {
            frame,
            header_len: header_len as u32,
            sse: true,
        }
    }

    /// The same message without the first `n` bytes of its head: an SSE
    /// event without its `id:` line, sharing the bytes.
    pub(super) fn without_head(&self, n: usize) -> Self {
        Self {
            frame: self.frame.slice(n..),
            header_len: self.header_len - n as u32,
            sse: self.sse,
        }
    }

    /// The whole frame, as written to the socket.
    pub fn wire(&self) -> &Bytes {
        &self.frame
    }

    /// The message without the frame header (or the SSE event's lines
    /// around it).
    pub fn payload(&self) -> &[u8] {
        let end = self.frame.len() - if self.sse { 2 } else { 0 };
        &self.frame[self.header_len as usize..end]
    }

    /// Whether this is a binary frame (`wshub.msgpack`).
    pub fn is_binary(&self) -> bool {
        !self.sse && self.frame[0] & 0x0F == opcode::BINARY
    }

    /// Whether this is a close frame.
    pub fn is_close(&self) -> bool {
        !self.sse && self.frame[0] & 0x0F == opcode::CLOSE
    }

    /// Whether this is an SSE event rather than a WebSocket frame.
    pub fn is_sse(&self) -> bool {
        self.sse
    }

    /// Payload length in bytes.
    pub fn len(&self) -> usize {
        self.payload().len()
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Serialises `message` once in `encoding`, as a ready frame (or SSE event).
pub fn encode<T: Serialize + ?Sized>(message: &T, encoding: Encoding) -> Encoded {
    let mut buf = Vec::with_capacity(256);
    buf.resize(MAX_HEADER, 0);
    // Our envelopes hold only string-keyed maps and JSON values, which both
    // serialisers accept; failing here would be a bug in this module.
    match encoding {
        Encoding::Sse => {
            buf.clear();
            buf.extend_from_slice(super::sse::DATA);
            serde_json::to_writer(&mut buf, message).expect("hub messages serialise to JSON");
            buf.extend_from_slice(b"\n\n");
            Encoded::sse_event(Bytes::from(buf), super::sse::DATA.len())
        }
        Encoding::Json => {
            serde_json::to_writer(&mut buf, message).expect("hub messages serialise to JSON");
            Encoded::seal(opcode::TEXT, buf)
        }
        Encoding::MsgPack => {
            rmp_serde::encode::write_named(&mut buf, message)
                .expect("hub messages serialise to MessagePack");
            Encoded::seal(opcode::BINARY, buf)
        }
    }
}

/// The header of a frame without its masking key: `first` (FIN, RSV,
/// opcode), then the payload length `len` in its shortest form, with the
/// mask bit when `masked` (RFC 6455, 5.2). Returns the bytes and how many
/// of them are used.
pub fn frame_header(first: u8, len: usize, masked: bool) -> ([u8; MAX_HEADER], usize) {
    let mask_bit = if masked { 0x80 } else { 0 };
    let mut header = [0u8; MAX_HEADER];
    header[0] = first;
    let used = match len {
        0..=125 => {
            header[1] = mask_bit | len as u8;
            2
        }
        126..=0xFFFF => {
            header[1] = mask_bit | 126;
            header[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            4
        }
        _ => {
            header[1] = mask_bit | 127;
            header[2..10].copy_from_slice(&(len as u64).to_be_bytes());
            10
        }
    };
    (header, used)
}

/// A client frame: `first` (FIN, RSV, opcode) and `payload` masked with
/// `mask`, as RFC 6455 requires of clients. For test kits and load
/// generators that speak to a hub frame by frame, well-formed or not.
pub fn masked_frame(first: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let (header, used) = frame_header(first, payload.len(), true);
    let mut frame = Vec::with_capacity(used + 4 + payload.len());
    frame.extend_from_slice(&header[..used]);
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
    frame
}

/// Largest payload of a control frame (RFC 6455, 5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// The Close frame for `code` (no payload when there is no code).
pub fn close_frame(code: Option<u16>, reason: &str) -> Encoded {
    let mut payload = Vec::with_capacity(2 + reason.len());
    if let Some(code) = code {
        payload.extend_from_slice(&code.to_be_bytes());
        payload.extend_from_slice(&reason.as_bytes()[..reason.len().min(MAX_CONTROL_PAYLOAD - 2)]);
    }
    Encoded::frame(opcode::CLOSE, &payload)
}

/// The Pong frame answering a Ping with `payload` (cut to 125 bytes), as
/// the bytes to write: boxed, it costs the connection's Pong slot two words.
pub fn pong_frame(payload: &[u8]) -> Box<[u8]> {
    let payload = &payload[..payload.len().min(MAX_CONTROL_PAYLOAD)];
    let mut frame = Vec::with_capacity(2 + payload.len());
    // At most 125: the length fits the second byte.
    frame.extend_from_slice(&[0x80 | opcode::PONG, payload.len() as u8]);
    frame.extend_from_slice(payload);
    frame.into_boxed_slice()
}

/// The (empty) Ping frame the heartbeat sends.
pub const PING_FRAME: [u8; 2] = [0x80 | opcode::PING, 0];

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn messages_have_the_four_common_fields_and_ref() {
        let env = Envelope::message("pong", json!({}), Some("c"), "t", Some("r"));
        let encoded = encode(&env, Encoding::Json);
        assert!(!encoded.is_binary());
        let v: Value = serde_json::from_slice(encoded.payload()).unwrap();
        assert_eq!(
            v,
            json!({"type":"pong","payload":{},"correlation_id":"c","timestamp":"t","ref":"r"})
        );
    }

    #[test]
    fn events_carry_room_null_and_omit_seq_without_a_room() {
        let env = Envelope {
            id: Some("i"),
            room: Some(None),
            ..Envelope::message("alert", json!({"x":1}), Some("c"), "t", None)
        };
        let v: Value = serde_json::from_slice(encode(&env, Encoding::Json).payload()).unwrap();
        assert_eq!(v["room"], Value::Null);
        assert!(v.get("seq").is_none());
        assert!(v.get("ref").is_none());
    }

    #[test]
    fn msgpack_uses_the_same_field_names() {
        let env = Envelope::message("heartbeat", json!({}), None, "t", None);
        let encoded = encode(&env, Encoding::MsgPack);
        assert!(encoded.is_binary());
        let v: Value = rmp_serde::from_slice(encoded.payload()).unwrap();
        assert_eq!(
            v,
            json!({"type":"heartbeat","payload":{},"correlation_id":null,"timestamp":"t"})
        );
    }

    #[test]
    fn frames_have_minimal_headers() {
        let hello = Encoded::frame(opcode::TEXT, b"Hello");
        assert_eq!(&hello.wire()[..], [0x81, 5, b'H', b'e', b'l', b'l', b'o']);
        assert_eq!(hello.payload(), b"Hello");
        let mid = Encoded::frame(opcode::BINARY, &[0; 200]);
        assert_eq!(&mid.wire()[..4], [0x82, 126, 0, 200]);
        assert_eq!(mid.len(), 200);
        let big = Encoded::frame(opcode::BINARY, &vec![0; 70_000]);
        assert_eq!(&big.wire()[..10], [0x82, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]);
        assert!(Encoded::frame(opcode::CLOSE, &[3, 232]).is_close());
        for n in [0, 125, 126, 65_535, 65_536] {
            let value = "x".repeat(n);
            let e = encode(&value, Encoding::Json);
            assert_eq!(e.payload().len(), n + 2);
            assert_eq!(
                e.wire().len(),
                e.payload().len()
                    + if n + 2 < 126 {
                        2
                    } else if n + 2 < 65_536 {
                        4
                    } else {
                        10
                    }
            );
        }
    }

    #[test]
    fn protocol_tokens_round_trip() {
        for e in [Encoding::Json, Encoding::MsgPack] {
            assert_eq!(Encoding::from_protocol(e.protocol()), Some(e));
        }
        assert_eq!(Encoding::from_protocol("chat"), None);
    }

    #[test]
    fn control_frames_for_the_server() {
        assert_eq!(
            &close_frame(Some(4009), "slow consumer").wire()[..4],
            [0x88, 15, 0x0f, 0xa9]
        );
        assert_eq!(&close_frame(None, "").wire()[..], [0x88, 0]);
        assert_eq!(pong_frame(b"x")[..], [0x8A, 1, b'x']);
        assert_eq!(pong_frame(&[7; 200]).len(), 127, "cut to 125 bytes");
        assert_eq!(close_frame(Some(1000), &"r".repeat(300)).len(), 125);
    }
}
