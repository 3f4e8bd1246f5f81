//! RFC 6455 framing on the server side, as pure functions over bytes: the
//! decoder turns what a client sends (masked frames, possibly fragmented,
//! control frames in between) into whole messages or the close code its
//! violation calls for. Server frames are built by `protocol::encode`, once
//! per message, so they can be written to any number of sockets as they are.

use super::inbox::extend_within;
use crate::protocol::MAX_CONTROL_PAYLOAD;
use crate::protocol::opcode::{BINARY, CLOSE, CONTINUATION, PING, PONG, TEXT};

/// The longest client frame header: 2 bytes, an 8-byte length, the mask.
pub(crate) const MAX_CLIENT_HEADER: usize = 14;

/// A whole message or control frame from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Inbound {
    /// A text message, valid UTF-8.
    Text(Vec<u8>),
    /// A binary message.
    Binary(Vec<u8>),
    /// A Ping, with the payload its Pong must echo.
    Ping(Vec<u8>),
    /// A Pong.
    Pong,
    /// A Close, with its code (none when the frame had no payload).
    Close(Option<u16>),
}

/// Why the byte stream cannot go on: the close code to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Violation {
    /// 1002: a framing rule was broken.
    Protocol(&'static str),
    /// 1007: a text message or close reason that is not UTF-8.
    InvalidUtf8,
    /// 1009: a message over the size limit.
    TooBig,
}

/// Reassembles client messages from frames, across reads.
#[derive(Debug)]
pub(crate) struct Decoder {
    max_message: usize,
    /// The opcode and payload so far of a fragmented message.
    partial: Option<(u8, Vec<u8>)>,
}

impl Decoder {
    /// A decoder refusing messages over `max_message` bytes.
    pub(crate) fn new(max_message: usize) -> Self {
        Self {
            max_message,
            partial: None,
        }
    }

    /// Decodes every complete frame at the start of `buf`, pushing whole
    /// messages to `out`; returns how many bytes were used. The rest of
    /// `buf` is an incomplete frame to be completed by the next read.
    pub(crate) fn decode(
        &mut self,
        buf: &[u8],
        out: &mut Vec<Inbound>,
    ) -> Result<usize, Violation> {
        let mut used = 0;
        while let Some((header, header_len)) = self.header(&buf[used..])? {
            let start = used + header_len;
            let Some(end) = start
                .checked_add(header.len)
                .filter(|end| *end <= buf.len())
            else {
                break;
            };
            // A Pong's payload is never looked at: it costs no copy.
            let mut payload = if header.opcode == PONG {
                Vec::new()
            } else {
                buf[start..end].to_vec()
            };
            unmask(&mut payload, header.mask);
            used = end;
            if let Some(message) = self.frame(header, payload)? {
                let closing = matches!(message, Inbound::Close(_));
                out.push(message);
                if closing {
                    // Nothing after a Close counts.
                    return Ok(buf.len());
                }
            }
        }
        Ok(used)
    }

    /// How many bytes the frame starting at `buf` needs in all; while its
    /// header is incomplete, how many the header needs (its first two
    /// bytes tell its length). The reader takes no more than this into its
    /// buffer, so the buffer never holds more than one frame: at most
    /// [`MAX_CLIENT_HEADER`] plus the size limit, since a header past the
    /// limit is a violation.
    pub(crate) fn frame_len(&self, buf: &[u8]) -> usize {
        if let Ok(Some((header, header_len))) = self.header(buf) {
            return header_len.saturating_add(header.len);
        }
        // Incomplete, or broken (which decoding reports).
        match buf.get(1).map(|b| b & 0x7F) {
            None => 2,
            Some(126) => 8,
            Some(127) => MAX_CLIENT_HEADER,
            Some(_) => 6,
        }
    }

    fn header(&self, buf: &[u8]) -> Result<Option<(Header, usize)>, Violation> {
        let [b0, b1, ..] = *buf else {
            return Ok(None);
        };
        let fin = b0 & 0x80 != 0;
        if b0 & 0x70 != 0 {
            return Err(Violation::Protocol(
                "reserved bits set without an extension",
            ));
        }
        let opcode = b0 & 0x0F;
        if b1 & 0x80 == 0 {
            return Err(Violation::Protocol("client frames must be masked"));
        }
        let (len, mut at) = match b1 & 0x7F {
            126 => match buf.get(2..4) {
                Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
                None => return Ok(None),
            },
            127 => match buf.get(2..10) {
                Some(b) => (u64::from_be_bytes(b.try_into().expect("8 bytes")), 10),
                None => return Ok(None),
            },
            n => (u64::from(n), 2),
        };
        if len >> 63 != 0 {
            return Err(Violation::Protocol("frame length with the top bit set"));
        }
        let control = opcode & 0x08 != 0;
        match opcode {
            CONTINUATION | TEXT | BINARY | CLOSE | PING | PONG => {}
            _ => return Err(Violation::Protocol("reserved opcode")),
        }
        if control && (!fin || len > MAX_CONTROL_PAYLOAD as u64) {
            return Err(Violation::Protocol(
                "control frames are single and at most 125 bytes",
            ));
        }
        let so_far = self.partial.as_ref().map_or(0, |(_, p)| p.len() as u64);
        if !control && len.saturating_add(so_far) > self.max_message as u64 {
            return Err(Violation::TooBig);
        }
        let Some(mask) = buf.get(at..at + 4) else {
            return Ok(None);
        };
        let mask: [u8; 4] = mask.try_into().expect("4 bytes");
        at += 4;
        Ok(Some((
            Header {
                fin,
                opcode,
                len: len as usize,
                mask,
            },
            at,
        )))
    }

    fn frame(&mut self, header: Header, payload: Vec<u8>) -> Result<Option<Inbound>, Violation> {
        match header.opcode {
            PING => Ok(Some(Inbound::Ping(payload))),
            PONG => Ok(Some(Inbound::Pong)),
            CLOSE => close(&payload).map(|code| Some(Inbound::Close(code))),
            CONTINUATION => {
                let Some((_, so_far)) = &mut self.partial else {
                    return Err(Violation::Protocol(
                        "continuation without a message to continue",
                    ));
                };
                // The header check keeps the total within the limit; the
                // buffer's capacity stays within it too.
                extend_within(so_far, &payload, self.max_message);
                if !header.fin {
                    return Ok(None);
                }
                let (opcode, whole) = self.partial.take().expect("checked above");
                message(opcode, whole).map(Some)
            }
            opcode => {
                if self.partial.is_some() {
                    return Err(Violation::Protocol("a new message inside a fragmented one"));
                }
                if header.fin {
                    message(opcode, payload).map(Some)
                } else {
                    self.partial = Some((opcode, payload));
                    Ok(None)
                }
            }
        }
    }
}

/// The decoder as fuzz targets and property tests drive it: bytes in; the
/// bytes used and the data messages' payloads out, or the close code a
/// violation calls for.
#[derive(Debug)]
pub struct FrameDecoder(Decoder);

impl FrameDecoder {
    /// A decoder refusing messages over `max_message` bytes.
    pub fn new(max_message: usize) -> Self {
        Self(Decoder::new(max_message))
    }

    /// Decodes the complete frames at the start of `buf`.
    pub fn decode(&mut self, buf: &[u8]) -> Result<(usize, Vec<Vec<u8>>), u16> {
        let mut out = Vec::new();
        let used = self.0.decode(buf, &mut out).map_err(|v| -> u16 {
            match v {
                Violation::Protocol(_) => 1002,
                Violation::InvalidUtf8 => 1007,
                Violation::TooBig => 1009,
            }
        })?;
        let data = out
            .into_iter()
            .filter_map(|m| match m {
                Inbound::Text(p) | Inbound::Binary(p) => Some(p),
                _ => None,
            })
            .collect();
        Ok((used, data))
    }
}

#[derive(Debug, Clone, Copy)]
struct Header {
    fin: bool,
    opcode: u8,
    len: usize,
    mask: [u8; 4],
}

fn message(opcode: u8, payload: Vec<u8>) -> Result<Inbound, Violation> {
    if opcode == TEXT {
        if std::str::from_utf8(&payload).is_err() {
            return Err(Violation::InvalidUtf8);
        }
        Ok(Inbound::Text(payload))
    } else {
        Ok(Inbound::Binary(payload))
    }
}

/// The code of a Close frame's payload, checked as RFC 6455 section 7.4 says.
fn close(payload: &[u8]) -> Result<Option<u16>, Violation> {
    match payload {
        [] => Ok(None),
        [_] => Err(Violation::Protocol("a close payload of one byte")),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999) {
                return Err(Violation::Protocol("a close code that may not be sent"));
            }
            if std::str::from_utf8(reason).is_err() {
                return Err(Violation::InvalidUtf8);
            }
            Ok(Some(code))
        }
    }
}

/// XORs `payload` with the frame's masking key.
fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    let word = u32::from_ne_bytes(mask);
    let mut chunks = payload.chunks_exact_mut(4);
    for chunk in &mut chunks {
        let v = u32::from_ne_bytes(chunk.try_into().expect("4 bytes")) ^ word;
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(first: u8, payload: &[u8]) -> Vec<u8> {
        crate::testing::client_frame_masked(first, payload, [0x37, 0xfa, 0x21, 0x3d])
    }

    fn decode_all(bytes: &[u8]) -> Result<Vec<Inbound>, Violation> {
        let mut d = Decoder::new(1 << 16);
        let mut out = Vec::new();
        let used = d.decode(bytes, &mut out)?;
        assert_eq!(used, bytes.len(), "everything used");
        Ok(out)
    }

    #[test]
    fn rfc_example_masked_hello() {
        // RFC 6455 section 5.7: a single-frame masked text message "Hello".
        let bytes = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        assert_eq!(
            decode_all(&bytes),
            Ok(vec![Inbound::Text(b"Hello".to_vec())])
        );
    }

    #[test]
    fn fragments_reassemble_around_control_frames() {
        let mut bytes = client(0x01, b"Hel");
        bytes.extend(client(0x89, b"ping!"));
        bytes.extend(client(0x80, b"lo"));
        assert_eq!(
            decode_all(&bytes),
            Ok(vec![
                Inbound::Ping(b"ping!".to_vec()),
                Inbound::Text(b"Hello".to_vec())
            ])
        );
    }

    #[test]
    fn incomplete_frames_wait_for_more_bytes() {
        let frame = client(0x82, &[7u8; 300]);
        let mut d = Decoder::new(1 << 16);
        for cut in 0..frame.len() {
            let mut out = Vec::new();
            assert_eq!(d.decode(&frame[..cut], &mut out), Ok(0), "cut at {cut}");
            assert!(out.is_empty());
        }
        assert_eq!(d.frame_len(&frame[..1]), 2);
        assert_eq!(d.frame_len(&frame[..2]), 8, "a 16-bit length and the mask");
        assert_eq!(d.frame_len(&frame[..8]), frame.len());
        assert_eq!(d.frame_len(&client(0x89, b"")[..2]), 6);
        let mut out = Vec::new();
        assert_eq!(d.decode(&frame, &mut out), Ok(frame.len()));
        assert_eq!(out, [Inbound::Binary(vec![7; 300])]);
    }

    #[test]
    fn lengths_of_every_width_decode() {
        for n in [0, 125, 126, 65_535, 65_536, 70_000] {
            let mut d = Decoder::new(1 << 20);
            let mut out = Vec::new();
            let frame = client(0x82, &vec![1u8; n]);
            assert_eq!(d.decode(&frame, &mut out), Ok(frame.len()));
            assert_eq!(out, [Inbound::Binary(vec![1; n])]);
        }
    }

    #[test]
    fn violations_have_their_close_codes() {
        let protocol = |bytes: Vec<u8>| matches!(decode_all(&bytes), Err(Violation::Protocol(_)));
        assert!(protocol(client(0xC1, b"x")), "RSV1 without an extension");
        assert!(protocol(client(0x83, b"x")), "reserved data opcode");
        assert!(protocol(client(0x8B, b"x")), "reserved control opcode");
        assert!(protocol(client(0x09, b"x")), "fragmented ping");
        assert!(protocol(client(0x89, &[0; 126])), "long ping");
        assert!(protocol(client(0x80, b"x")), "continuation out of nowhere");
        let mut two = client(0x01, b"a");
        two.extend(client(0x81, b"b"));
        assert!(protocol(two), "a new message inside a fragmented one");
        assert!(protocol(vec![0x81, 0x01, b'x']), "unmasked");
        assert!(protocol(client(0x88, &[3])), "one-byte close");
        for code in [0u16, 999, 1004, 1005, 1006, 1015, 2000, 2999, 5000] {
            assert!(
                protocol(client(0x88, &code.to_be_bytes())),
                "close code {code}"
            );
        }
        assert_eq!(
            decode_all(&client(0x81, &[0xff, 0xfe])),
            Err(Violation::InvalidUtf8)
        );
        let mut bad_reason = 1000u16.to_be_bytes().to_vec();
        bad_reason.push(0xff);
        assert_eq!(
            decode_all(&client(0x88, &bad_reason)),
            Err(Violation::InvalidUtf8)
        );
        let mut d = Decoder::new(10);
        assert_eq!(
            d.decode(&client(0x81, &[b'a'; 11]), &mut Vec::new()),
            Err(Violation::TooBig)
        );
        let mut d = Decoder::new(10);
        let mut parts = client(0x01, &[b'a'; 6]);
        parts.extend(client(0x80, &[b'a'; 6]));
        assert_eq!(
            d.decode(&parts, &mut Vec::new()),
            Err(Violation::TooBig),
            "fragments add up"
        );
        let huge = [0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0];
        assert!(Decoder::new(10).decode(&huge, &mut Vec::new()).is_err());
    }

    #[test]
    fn fragments_are_held_within_the_limit() {
        let max = 1000;
        let mut d = Decoder::new(max);
        let mut out = Vec::new();
        let first = client(0x01, b"a");
        assert_eq!(d.decode(&first, &mut out), Ok(first.len()));
        for _ in 1..max {
            let piece = client(0x00, b"a");
            assert_eq!(d.decode(&piece, &mut out), Ok(piece.len()));
            let held = d.partial.as_ref().map_or(0, |(_, p)| p.capacity());
            assert!(held <= max, "{held} bytes held for a {max}-byte limit");
        }
        assert!(out.is_empty());
        // One byte more is refused on the header, before its payload came.
        let over = client(0x00, b"a");
        assert_eq!(d.decode(&over[..6], &mut out), Err(Violation::TooBig));
        // Empty fragments cost nothing.
        let mut d = Decoder::new(max);
        d.decode(&client(0x01, b""), &mut out).unwrap();
        for _ in 0..10_000 {
            d.decode(&client(0x00, b""), &mut out).unwrap();
        }
        assert_eq!(d.partial.as_ref().map(|(_, p)| p.capacity()), Some(0));
    }

    #[test]
    fn split_utf8_across_fragments_is_fine() {
        let euro = "€".as_bytes();
        let mut bytes = client(0x01, &euro[..1]);
        bytes.extend(client(0x80, &euro[1..]));
        assert_eq!(decode_all(&bytes), Ok(vec![Inbound::Text(euro.to_vec())]));
    }

    #[test]
    fn close_ends_decoding() {
        let mut bytes = client(0x88, &1000u16.to_be_bytes());
        bytes.extend(client(0x81, b"after"));
        assert_eq!(decode_all(&bytes), Ok(vec![Inbound::Close(Some(1000))]));
        assert_eq!(
            decode_all(&client(0x88, b"")),
            Ok(vec![Inbound::Close(None)])
        );
    }
}
