//! The reader's input: bytes as they are read, whole messages out, and
//! nothing kept between reads but the one frame still incomplete — at most
//! a frame header (14 bytes) plus `max_message_bytes`, and never more memory
//! than the peer has sent of it.

use super::frame::{Decoder, Inbound, Violation};

/// A decoder and the incomplete frame it waits to finish.
#[derive(Debug)]
pub(super) struct Inbox {
    decoder: Decoder,
    /// Bytes of an incomplete frame; empty (and unallocated) between frames.
    pending: Vec<u8>,
    /// Set once a Close was decoded: nothing after it counts.
    closed: bool,
}

impl Inbox {
    /// An empty inbox for messages of at most `max_message` bytes.
    pub(super) fn new(max_message: usize) -> Self {
        Self {
            decoder: Decoder::new(max_message),
            pending: Vec::new(),
            closed: false,
        }
    }

    /// Decodes `input`, which follows what came before, into `out`. Only
    /// the bytes that complete the pending frame are copied into it; the
    /// rest is decoded straight from `input`.
    pub(super) fn feed(
        &mut self,
        mut input: &[u8],
        out: &mut Vec<Inbound>,
    ) -> Result<(), Violation> {
        while !input.is_empty() && !self.closed {
            if self.pending.is_empty() {
                // The common case: whole frames straight from the read.
                let used = self.decoder.decode(input, out)?;
                self.see_close(out);
                if !self.closed {
                    // Less than one frame, so within the bound.
                    self.pending.extend_from_slice(&input[used..]);
                }
                return Ok(());
            }
            // Take what completes the pending frame (or its header), no
            // more: once it is decoded, the rest goes the common way.
            let need = self.decoder.frame_len(&self.pending);
            let want = need.saturating_sub(self.pending.len()).max(1);
            let (head, rest) = input.split_at(want.min(input.len()));
            extend_within(&mut self.pending, head, need);
            input = rest;
            self.decode_pending(out)?;
        }
        Ok(())
    }

    fn decode_pending(&mut self, out: &mut Vec<Inbound>) -> Result<(), Violation> {
        let used = self.decoder.decode(&self.pending, out)?;
        self.see_close(out);
        if self.closed || used == self.pending.len() {
            // Give the memory back: an idle connection keeps no buffer.
            self.pending = Vec::new();
        } else {
            self.pending.drain(..used);
        }
        Ok(())
    }

    fn see_close(&mut self, out: &[Inbound]) {
        self.closed |= matches!(out.last(), Some(Inbound::Close(_)));
    }

    /// The memory held for the incomplete frame.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.pending.capacity()
    }
}

/// Appends `bytes` to `buf`, growing it as `Vec` does (doubling, so a
/// payload arriving in pieces is not copied over and over) but never to a
/// capacity past `cap` (when `buf` and `bytes` fit in it): a peer gets no
/// more memory than it sent, and a buffer never more than its bound.
pub(super) fn extend_within(buf: &mut Vec<u8>, bytes: &[u8], cap: usize) {
    let len = buf.len() + bytes.len();
    if len > buf.capacity() {
        let target = (buf.capacity() * 2).max(len).min(cap.max(len));
        buf.reserve_exact(target - buf.len());
    }
    buf.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::super::frame::MAX_CLIENT_HEADER;
    use super::*;

    fn client(first: u8, payload: &[u8]) -> Vec<u8> {
        crate::testing::client_frame(first, payload)
    }

    #[test]
    fn a_frame_in_pieces_is_held_within_one_frame() {
        let max = 70_000;
        let frame = client(0x82, &[9; 65_000]);
        for piece in [1, 7, 1000, 16 * 1024] {
            let mut inbox = Inbox::new(max);
            let mut out = Vec::new();
            let mut stream = frame.clone();
            stream.extend(client(0x82, b"next"));
            for chunk in stream.chunks(piece) {
                inbox.feed(chunk, &mut out).unwrap();
                assert!(
                    inbox.held() <= frame.len(),
                    "{} held for a {}-byte frame (pieces of {piece})",
                    inbox.held(),
                    frame.len()
                );
            }
            assert_eq!(
                out,
                [
                    Inbound::Binary(vec![9; 65_000]),
                    Inbound::Binary(b"next".to_vec())
                ]
            );
            assert_eq!(inbox.held(), 0, "nothing kept between frames");
        }
    }

    #[test]
    fn a_header_alone_reserves_nothing_for_its_payload() {
        let mut inbox = Inbox::new(1 << 20);
        let frame = client(0x82, &[1; 1 << 20]);
        inbox
            .feed(&frame[..MAX_CLIENT_HEADER + 10], &mut Vec::new())
            .unwrap();
        assert!(
            inbox.held() <= 2 * (MAX_CLIENT_HEADER + 10),
            "{}",
            inbox.held()
        );
    }

    #[test]
    fn a_read_full_of_small_frames_keeps_only_the_cut_one() {
        let mut stream = Vec::new();
        for i in 0..5000u32 {
            stream.extend(client(0x89, &i.to_be_bytes()));
        }
        let mut inbox = Inbox::new(1024);
        let mut out = Vec::new();
        let mut decoded = 0;
        for chunk in stream.chunks(16 * 1024) {
            inbox.feed(chunk, &mut out).unwrap();
            assert!(
                inbox.held() <= 10,
                "{} held, more than one frame",
                inbox.held()
            );
            decoded += out.len();
            out.clear();
        }
        assert_eq!(decoded, 5000);
    }

    #[test]
    fn nothing_after_a_close_is_decoded() {
        let mut inbox = Inbox::new(1024);
        let mut out = Vec::new();
        let mut bytes = client(0x88, &1000u16.to_be_bytes());
        bytes.extend([0xFF; 64]);
        // Split so that the Close completes from the pending buffer.
        inbox.feed(&bytes[..3], &mut out).unwrap();
        inbox.feed(&bytes[3..], &mut out).unwrap();
        inbox.feed(&[0x81, 0x00], &mut out).unwrap();
        assert_eq!(out, [Inbound::Close(Some(1000))]);
        assert_eq!(inbox.held(), 0);
    }

    #[test]
    fn too_big_is_refused_on_the_header() {
        let mut inbox = Inbox::new(1000);
        let frame = client(0x82, &[0; 1001]);
        assert_eq!(
            inbox.feed(&frame[..4], &mut Vec::new()),
            Err(Violation::TooBig)
        );
        // A length of a gigabyte: refused as soon as it is read.
        let mut inbox = Inbox::new(1000);
        let mut header = vec![0x82, 0xFF];
        header.extend((1u64 << 30).to_be_bytes());
        assert_eq!(inbox.feed(&header[..1], &mut Vec::new()), Ok(()));
        assert_eq!(
            inbox.feed(&header[1..], &mut Vec::new()),
            Err(Violation::TooBig)
        );
    }

    #[test]
    fn extend_within_doubles_up_to_its_bound() {
        let mut buf = Vec::new();
        for _ in 0..100 {
            extend_within(&mut buf, &[0; 7], 500);
            assert!(buf.capacity() <= 500.max(buf.len()));
        }
        assert_eq!(buf.len(), 700);
        let mut buf = vec![0u8; 10];
        extend_within(&mut buf, &[0; 1], 15);
        assert_eq!(buf.capacity(), 15, "doubling stops at the bound");
    }
}
