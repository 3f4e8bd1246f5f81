//! Hostile WebSocket peers (PROTOCOL.md section 11, "Control frames" and
//! "Slow readers"): a newer Ping replaces an unsent Pong, Pings count toward
//! the rate limit, a peer that stops reading is closed once writes make no
//! progress for `handshake_timeout`, and a fragmented message past
//! `max_message_bytes` is refused before its payload arrives. The Ping flood
//! that must cost bounded memory is in `ping_flood.rs`, alone in its process.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wshub::testing::{TestHub, client_frame, raw_upgrade};

mod common;

use common::{connection_count, disconnects, metric};

/// A raw client that speaks frames by hand over a blocking socket whose
/// reads time out (after `wshub::testing::TIMEOUT`).
struct Raw {
    s: TcpStream,
    buf: Vec<u8>,
}

/// A server frame as read back.
#[derive(Debug)]
struct Frame {
    opcode: u8,
    payload: Vec<u8>,
}

impl Raw {
    /// Upgraded to `/ws{query}`, the welcome read.
    fn connect(hub: &TestHub, query: &str) -> Raw {
        let mut raw = Raw::upgraded(hub, query);
        assert_eq!(raw.frame().expect("a welcome").opcode, 1);
        raw
    }

    /// Upgraded, nothing read past the 101 response.
    fn upgraded(hub: &TestHub, query: &str) -> Raw {
        Raw {
            s: raw_upgrade(hub.handle().addr(), query),
            buf: Vec::new(),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).expect("send to the hub");
    }

    /// The next server frame, or `None` once the socket is closed (or the
    /// read timed out).
    fn frame(&mut self) -> Option<Frame> {
        loop {
            let b = &self.buf;
            if b.len() >= 2 {
                let (len, at) = match b[1] & 0x7F {
                    126 if b.len() >= 4 => (usize::from(u16::from_be_bytes([b[2], b[3]])), 4),
                    127 if b.len() >= 10 => (
                        u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize,
                        10,
                    ),
                    126 | 127 => (usize::MAX, 0),
                    n => (usize::from(n), 2),
                };
                if len != usize::MAX && b.len() >= at + len {
                    let frame = Frame {
                        opcode: b[0] & 0x0F,
                        payload: b[at..at + len].to_vec(),
                    };
                    self.buf.drain(..at + len);
                    return Some(frame);
                }
            }
            let mut chunk = [0u8; 16 * 1024];
            match self.s.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
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

fn text(frame: &Frame) -> Option<Value> {
    (frame.opcode == 1)
        .then(|| serde_json::from_slice(&frame.payload).ok())
        .flatten()
}

#[test]
fn a_newer_ping_replaces_an_unsent_pong() {
    let hub = TestHub::with_config(|c| c.rate_limit_per_s = 0);
    let mut c = Raw::connect(&hub, "");
    let n = 2000u32;
    let pings: Vec<u8> = (0..n)
        .flat_map(|i| client_frame(0x89, &i.to_be_bytes()))
        .collect();
    c.send(&pings);
    let mut pongs = Vec::new();
    while pongs.last() != Some(&(n - 1)) {
        let f = c.frame().expect("the last Pings's Pong in time");
        if f.opcode == 0xA {
            pongs.push(u32::from_be_bytes(f.payload[..].try_into().unwrap()));
        }
    }
    assert!(
        pongs.len() < (n / 10) as usize,
        "{} Pongs for {n} Pings sent at once",
        pongs.len()
    );
    assert!(
        pongs.windows(2).all(|w| w[0] < w[1]),
        "newest only: {pongs:?}"
    );
    // Still a working connection.
    c.send(&client_frame(0x81, br#"{"type":"ping","ref":"after"}"#));
    let reply = std::iter::from_fn(|| c.frame())
        .find_map(|f| text(&f).filter(|m| m["type"] == "pong"))
        .expect("a pong reply");
    assert_eq!(reply["ref"], "after");
}

#[test]
fn pings_over_the_rate_limit_get_no_pong_and_rate_limited() {
    let burst = 5;
    let hub = TestHub::with_config(|c| {
        c.rate_limit_per_s = 1;
        c.rate_limit_burst = burst;
    });
    let mut c = Raw::connect(&hub, "");
    let pings: Vec<u8> = (0..30u8).flat_map(|i| client_frame(0x89, &[i])).collect();
    c.send(&pings);
    let mut pongs = Vec::new();
    loop {
        let f = c.frame().expect("a rate_limited error in time");
        if f.opcode == 0xA {
            pongs.push(f.payload[0]);
        } else if let Some(m) = text(&f).filter(|m| m["type"] == "error") {
            assert_eq!(m["payload"]["code"], "rate_limited", "{m}");
            break;
        }
    }
    // Then a Close, whose echo comes after anything still queued.
    c.send(&client_frame(0x88, &1000u16.to_be_bytes()));
    while let Some(f) = c.frame() {
        match f.opcode {
            0xA => pongs.push(f.payload[0]),
            8 => break,
            _ => {}
        }
    }
    // Allowing a token of refill while the 30 Pings were read.
    let allowed = burst as u8 + 1;
    assert!(
        !pongs.is_empty() && pongs.len() <= usize::from(allowed),
        "{pongs:?}"
    );
    assert!(
        pongs.iter().all(|p| *p < allowed),
        "Pings past the burst were answered: {pongs:?}"
    );
    smol::block_on(async {
        let m = hub.request("GET", "/metrics", None).await.text();
        assert!(
            metric(&m, "wshub_messages_dropped_total") >= f64::from(30 - allowed),
            "{m}"
        );
    });
}

#[test]
fn a_peer_that_stops_reading_is_closed_once_writes_stall() {
    let timeout = Duration::from_secs(1);
    let hub = TestHub::with_config(|c| {
        c.handshake_timeout = timeout;
        // Far from full: only the write timeout can close the peer.
        c.send_queue = 100_000;
        c.max_message_bytes = 1 << 20;
        c.history_size = 4;
    });
    smol::block_on(async {
        let mut honest = hub.client("?rooms=big").await;
        let stuck = Raw::connect(&hub, "?rooms=big");
        socket2::SockRef::from(&stuck.s)
            .set_recv_buffer_size(4096)
            .unwrap();
        let payload = json!({"blob": "x".repeat(256 * 1024)});
        // Up to 16 MiB: more than the kernel buffers of both ends hold.
        let started = Instant::now();
        let bound = Duration::from_secs(15);
        let mut n = 0;
        while connection_count(&hub).await > 1 {
            assert!(
                started.elapsed() < bound,
                "a peer that takes nothing is still connected after {bound:?}"
            );
            if n < 64 {
                n += 1;
                hub.publish("big", "blob", payload.clone()).await;
                assert_eq!(honest.expect("blob").await["seq"], n);
            } else {
                smol::Timer::after(Duration::from_millis(50)).await;
            }
        }
        assert_eq!(disconnects(&hub, "slow_consumer").await, 1.0);
        assert_eq!(disconnects(&hub, "error").await, 0.0);
        hub.publish("big", "small", json!({})).await;
        honest.expect("small").await;
        drop(stuck);
    });
}

#[test]
fn a_fragmented_message_past_the_limit_is_closed_1009_before_its_payload() {
    let hub = TestHub::with_config(|c| c.max_message_bytes = 4096);
    let mut honest = smol::block_on(hub.client("?rooms=r"));
    let mut c = Raw::connect(&hub, "");
    c.send(&client_frame(0x01, &[b' '; 1000]));
    for _ in 0..3 {
        c.send(&client_frame(0x00, &[b' '; 1000]));
    }
    // 4,000 bytes so far; a fragment of 1,000 more, of which only the
    // header is sent: refused on the header, without waiting for the rest.
    let next = client_frame(0x80, &[b' '; 1000]);
    c.send(&next[..8]);
    assert_eq!(c.close_code(), Some(1009));

    // A single frame announcing a gigabyte, likewise.
    let mut huge = Raw::connect(&hub, "");
    let mut header = vec![0x82, 0xFF];
    header.extend((1u64 << 30).to_be_bytes());
    header.extend([1, 2, 3, 4]);
    huge.send(&header);
    assert_eq!(huge.close_code(), Some(1009));

    smol::block_on(async {
        assert_eq!(disconnects(&hub, "too_big").await, 2.0);
        hub.publish("r", "still", json!({})).await;
        honest.expect("still").await;
    });
}
