//! A Ping flood from a peer that never reads (PROTOCOL.md section 11,
//! "Control frames"): the peer is closed, and the hub's memory stays
//! bounded while it floods. The hub runs inside the test process and the
//! bound is read from the process's RSS, so this is the only test in its
//! binary: no other test's traffic runs beside it.

use std::io::{ErrorKind, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use wshub::testing::{TestHub, client_frame, raw_upgrade};

mod common;

use common::{connection_count, disconnects};

/// This process's resident memory, in bytes: the test hub runs inside it.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmRSS in /proc/self/status")
        * 1024
}

#[test]
fn a_ping_flood_from_a_peer_that_never_reads_is_closed_in_bounded_memory() {
    let hub = TestHub::with_config(|c| {
        c.send_queue = 8;
        c.rate_limit_per_s = 50;
        c.rate_limit_burst = 50;
        c.handshake_timeout = Duration::from_secs(1);
    });
    smol::block_on(async {
        let mut honest = hub.client("?rooms=r").await;
        let before = rss();
        let flooder = raw_upgrade(hub.handle().addr(), "");
        let stop = Arc::new(AtomicBool::new(false));
        let flood = {
            let (mut s, stop) = (flooder.try_clone().unwrap(), stop.clone());
            std::thread::spawn(move || {
                // Empty masked Pings, 6 bytes each, as fast as the hub takes them.
                let pings: Vec<u8> = (0..10_000).flat_map(|_| client_frame(0x89, b"")).collect();
                s.set_write_timeout(Some(Duration::from_millis(200)))
                    .unwrap();
                let (mut sent, mut at) = (0u64, 0);
                while !stop.load(Ordering::Relaxed) {
                    // Partial writes resume mid-frame: the stream stays well formed.
                    match s.write(&pings[at..]) {
                        Ok(n) => {
                            sent += n as u64;
                            at = (at + n) % pings.len();
                        }
                        Err(e)
                            if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                        Err(_) => break,
                    }
                }
                sent / 6
            })
        };

        let deadline = Instant::now() + Duration::from_secs(30);
        let mut peak = before;
        let mut n = 0;
        while connection_count(&hub).await > 1 {
            assert!(
                Instant::now() < deadline,
                "the flooding peer was never closed"
            );
            n += 1;
            hub.publish("r", "tick", json!({"n": n})).await;
            assert_eq!(honest.expect("tick").await["payload"]["n"], n);
            peak = peak.max(rss());
            smol::Timer::after(Duration::from_millis(50)).await;
        }
        stop.store(true, Ordering::Relaxed);
        let pings = flood.join().unwrap();
        peak = peak.max(rss());
        let growth = peak.saturating_sub(before);
        assert!(
            growth < 200 << 20,
            "{pings} Pings grew the hub by {} MiB",
            growth >> 20
        );
        assert!(pings > 10_000, "a flood: {pings} Pings");
        let closed =
            disconnects(&hub, "rate_limit").await + disconnects(&hub, "slow_consumer").await;
        assert_eq!(closed, 1.0, "closed for the rate (1008) or as slow (4009)");
        // The honest client is still served.
        hub.publish("r", "after", json!({})).await;
        honest.expect("after").await;
        drop(flooder);
    });
}
