//! WebSocket framing from a raw socket (RFC 6455): fragmented messages,
//! control frames, the closing handshake, and every malformed frame
//! closing only its own connection with the right code while an honest
//! client beside it keeps receiving.

use std::io::{Read, Write};
use std::net::TcpStream;

use serde_json::{Value, json};
use wshub::testing::TestHub;

/// A raw client that speaks frames by hand.
struct Raw {
    s: TcpStream,
    buf: Vec<u8>,
}

/// A server frame as read back.
#[derive(Debug, PartialEq)]
struct Frame {
    opcode: u8,
    payload: Vec<u8>,
}

impl Raw {
    fn connect(hub: &TestHub, query: &str) -> Raw {
        let s = wshub::testing::raw_upgrade(hub.handle().addr(), query);
        let mut raw = Raw { s, buf: Vec::new() };
        let welcome = raw.frame().expect("a welcome frame");
        assert_eq!(welcome.opcode, 1);
        raw
    }

    fn fill(&mut self) -> usize {
        let mut chunk = [0u8; 4096];
        let n = self.s.read(&mut chunk).unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        n
    }

    /// Sends one frame with `first` as its first byte, masked.
    fn send(&mut self, first: u8, payload: &[u8]) {
        self.s.write_all(&masked(first, payload)).unwrap();
    }

    /// The next server frame, or `None` once the socket is closed.
    fn frame(&mut self) -> Option<Frame> {
        loop {
            if self.buf.len() >= 2 {
                let (len, at) = match self.buf[1] & 0x7F {
                    126 if self.buf.len() >= 4 => {
                        (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4)
                    }
                    127 if self.buf.len() >= 10 => (
                        u64::from_be_bytes(self.buf[2..10].try_into().unwrap()) as usize,
                        10,
                    ),
                    126 | 127 => (usize::MAX, 0),
                    n => (n as usize, 2),
                };
                assert_eq!(self.buf[1] & 0x80, 0, "server frames are not masked");
                if len != usize::MAX && self.buf.len() >= at + len {
                    let frame = Frame {
                        opcode: self.buf[0] & 0x0F,
                        payload: self.buf[at..at + len].to_vec(),
                    };
                    assert_eq!(self.buf[0] & 0x80, 0x80, "server frames are final");
                    self.buf.drain(..at + len);
                    return Some(frame);
                }
            }
            if self.fill() == 0 {
                return None;
            }
        }
    }

    /// The next text message, skipping heartbeats and control frames.
    fn message(&mut self) -> Value {
        loop {
            let f = self.frame().expect("a message");
            if f.opcode == 1 {
                let v: Value = serde_json::from_slice(&f.payload).unwrap();
                if v["type"] != "heartbeat" {
                    return v;
                }
            }
        }
    }

    /// Reads until a close frame, returning its code.
    fn close_code(&mut self) -> Option<u16> {
        while let Some(f) = self.frame() {
            if f.opcode == 8 {
                return f.payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]]));
            }
        }
        None
    }
}

fn masked(first: u8, payload: &[u8]) -> Vec<u8> {
    wshub::testing::client_frame(first, payload)
}

#[test]
fn fragmented_messages_and_control_frames_are_handled() {
    let hub = TestHub::start();
    let mut c = Raw::connect(&hub, "");
    let ping = br#"{"type":"ping","ref":"frag"}"#;
    c.send(0x01, &ping[..5]);
    c.send(0x89, b"are you there");
    c.send(0x00, &ping[5..12]);
    c.send(0x80, &ping[12..]);
    assert_eq!(
        c.frame(),
        Some(Frame {
            opcode: 0xA,
            payload: b"are you there".to_vec()
        })
    );
    let pong = c.message();
    assert_eq!(
        (pong["type"].as_str(), pong["ref"].as_str()),
        (Some("pong"), Some("frag"))
    );

    // Several frames in one write, and one frame over several writes.
    let mut both = masked(0x81, br#"{"type":"ping","ref":"a"}"#);
    both.extend(masked(0x81, br#"{"type":"ping","ref":"b"}"#));
    c.s.write_all(&both).unwrap();
    assert_eq!(c.message()["ref"], "a");
    assert_eq!(c.message()["ref"], "b");
    let one = masked(0x81, br#"{"type":"ping","ref":"slow"}"#);
    for byte in &one {
        c.s.write_all(&[*byte]).unwrap();
        c.s.flush().unwrap();
    }
    assert_eq!(c.message()["ref"], "slow");

    // A large message crosses the read chunk.
    let big = json!({"type": "ping", "ref": "big", "pad": "p".repeat(40_000)}).to_string();
    c.send(0x81, big.as_bytes());
    assert_eq!(c.message()["ref"], "big");
}

#[test]
fn a_client_close_is_echoed_and_counted_as_normal() {
    let hub = TestHub::start();
    let mut c = Raw::connect(&hub, "");
    let mut payload = 1000u16.to_be_bytes().to_vec();
    payload.extend_from_slice(b"bye");
    c.send(0x88, &payload);
    assert_eq!(c.close_code(), Some(1000));
    assert_eq!(c.frame(), None, "then the socket closes");
    let mut empty = Raw::connect(&hub, "");
    empty.send(0x88, b"");
    assert_eq!(
        empty.frame(),
        Some(Frame {
            opcode: 8,
            payload: vec![]
        })
    );
    smol::block_on(async {
        let m = hub.request("GET", "/metrics", None).await.text();
        assert!(
            m.contains("wshub_disconnects_total{reason=\"normal\"} 2"),
            "{m}"
        );
    });
}

#[test]
fn malformed_frames_close_only_their_connection_with_the_right_code() {
    let hub = TestHub::with_config(|c| c.max_message_bytes = 4096);
    let mut honest = smol::block_on(hub.client("?rooms=r"));
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("unmasked", vec![0x81, 0x02, b'{', b'}'], 1002),
        ("RSV1 set", masked(0xC1, b"{}"), 1002),
        ("reserved opcode", masked(0x83, b"{}"), 1002),
        ("reserved control opcode", masked(0x8B, b""), 1002),
        ("fragmented ping", masked(0x09, b"x"), 1002),
        ("ping over 125 bytes", masked(0x89, &[0; 126]), 1002),
        ("continuation out of nowhere", masked(0x80, b"x"), 1002),
        ("one-byte close", masked(0x88, &[1]), 1002),
        (
            "close code 1005",
            masked(0x88, &1005u16.to_be_bytes()),
            1002,
        ),
        ("close code 999", masked(0x88, &999u16.to_be_bytes()), 1002),
        ("text that is not UTF-8", masked(0x81, &[0xC3, 0x28]), 1007),
        (
            "close reason not UTF-8",
            masked(0x88, &[0x03, 0xE8, 0xFF]),
            1007,
        ),
        ("over max_message_bytes", masked(0x81, &[b' '; 5000]), 1009),
        (
            "length with the top bit",
            vec![0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            1002,
        ),
    ];
    for (name, bytes, code) in cases {
        let mut c = Raw::connect(&hub, "");
        c.s.write_all(&bytes).unwrap();
        assert_eq!(c.close_code(), Some(code), "{name}");
        smol::block_on(async {
            hub.publish("r", "still", json!({})).await;
            honest.expect("still").await;
        });
    }
    let mut interleaved = Raw::connect(&hub, "");
    interleaved.send(0x01, b"{\"type\"");
    interleaved.send(0x81, b"{}");
    assert_eq!(
        interleaved.close_code(),
        Some(1002),
        "a new message inside a fragmented one"
    );
    smol::block_on(async {
        let m = hub.request("GET", "/metrics", None).await.text();
        assert!(
            m.contains("wshub_disconnects_total{reason=\"too_big\"} 1"),
            "{m}"
        );
        assert!(
            m.contains("wshub_disconnects_total{reason=\"error\"} 14"),
            "{m}"
        );
        assert_eq!(
            hub.handle().connections().await.unwrap().len(),
            1,
            "only the honest client is left"
        );
    });
}
