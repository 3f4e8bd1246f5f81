//! Measurement, not a check (ignored by default): rpc round trips through
//! the hub to a trivial app on loopback, from 100 connections; and
//! handshakes per second with and without a `connect_hook`.
//!
//!     cargo test --release --test hooks_bench -- --ignored --nocapture
//!
//! Prints rpc/s, the round trip's p50/p99, a `ping` round trip's (the same
//! path without a hook), and the app's own time per call, so that the hub's
//! added latency is rpc − ping − app.

mod hook_app;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hook_app::{App, AppResponse};
use serde_json::json;
use wshub::testing::TestHub;

const CONNECTIONS: usize = 100;
const RUN: Duration = Duration::from_secs(5);

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

async fn run(hub: &TestHub, connections: usize, message: serde_json::Value) -> (f64, Vec<f64>) {
    let ex = smol::LocalExecutor::new();
    let clients = hub.clients(connections, "").await;
    let started = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            let message = message.clone();
            ex.spawn(async move {
                let mut lat = Vec::new();
                while started.elapsed() < RUN {
                    let t = Instant::now();
                    let r = c.request(message.clone()).await;
                    assert_ne!(r["type"], "error", "{r}");
                    lat.push(t.elapsed().as_secs_f64() * 1e3);
                }
                lat
            })
        })
        .collect();
    let mut all = Vec::new();
    ex.run(async {
        for t in tasks {
            all.extend(t.await);
        }
    })
    .await;
    let secs = started.elapsed().as_secs_f64();
    all.sort_by(f64::total_cmp);
    (all.len() as f64 / secs, all)
}

#[test]
#[ignore = "a measurement: run with --release -- --ignored --nocapture"]
fn rpc_round_trips_from_100_connections() {
    let app_ns = Arc::new(AtomicU64::new(0));
    let app_calls = Arc::new(AtomicU64::new(0));
    let (ns, calls) = (app_ns.clone(), app_calls.clone());
    let app = App::start(move |r| {
        let t = Instant::now();
        let response = AppResponse::json(200, json!({"result": r.body["params"]}));
        ns.fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
        calls.fetch_add(1, Ordering::Relaxed);
        response
    });
    let url = app.url("/rpc");
    let hub = TestHub::with_config(move |c| {
        c.set_str("rpc_hook", &url).unwrap();
        c.rate_limit_per_s = 0;
    });
    smol::block_on(async {
        // One connection first: the path's own latency, with nothing
        // queued behind it; then 100 at once, for the rate.
        for connections in [1, CONNECTIONS] {
            let (ping_rate, ping) = run(&hub, connections, json!({"type": "ping"})).await;
            let rpc = json!({"type": "rpc", "method": "echo", "params": 1});
            let (rate, rpc) = run(&hub, connections, rpc).await;
            let app_ms = app_ns.swap(0, Ordering::Relaxed) as f64
                / app_calls.swap(0, Ordering::Relaxed).max(1) as f64
                / 1e6;
            println!(
                "{connections} connection(s)\nping: {ping_rate:.0}/s p50 {:.3} ms p99 {:.3} ms\nrpc:  {rate:.0}/s p50 {:.3} ms p99 {:.3} ms\napp handler mean {app_ms:.4} ms; app TCP connections {}",
                pct(&ping, 0.5),
                pct(&ping, 0.99),
                pct(&rpc, 0.5),
                pct(&rpc, 0.99),
                app.connections.load(Ordering::Relaxed),
            );
        }
    });
}

/// Handshakes completed (welcome read) in [`HANDSHAKE_RUN`] by
/// [`CONNECTORS`] tasks, each connecting, reading the welcome and closing
/// in a loop.
async fn handshakes(hub: &TestHub) -> f64 {
    let ex = smol::LocalExecutor::new();
    let url = hub.ws_url("");
    let started = Instant::now();
    let tasks: Vec<_> = (0..CONNECTORS)
        .map(|_| {
            let url = url.clone();
            ex.spawn(async move {
                let mut n = 0u64;
                while started.elapsed() < HANDSHAKE_RUN {
                    let c = wshub::testing::TestClient::connect(&url).await;
                    drop(c);
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut total = 0;
    ex.run(async {
        for t in tasks {
            total += t.await;
        }
    })
    .await;
    total as f64 / started.elapsed().as_secs_f64()
}

const CONNECTORS: usize = 32;
const HANDSHAKE_RUN: Duration = Duration::from_secs(3);

#[test]
#[ignore = "a measurement: run with --release -- --ignored --nocapture"]
fn handshakes_with_and_without_a_connect_hook() {
    let app = App::start(|_| AppResponse::json(200, json!({"user": "u"})));
    let url = app.url("/connect");
    let plain = TestHub::start();
    let hooked = TestHub::with_config(move |c| c.set_str("connect_hook", &url).unwrap());
    smol::block_on(async {
        // Interleaved, three each: the machine is shared.
        let mut rows = Vec::new();
        for _ in 0..3 {
            rows.push((handshakes(&plain).await, handshakes(&hooked).await));
        }
        for (without, with) in &rows {
            println!("handshakes/s: without a hook {without:.0}, with connect_hook {with:.0}");
        }
        println!(
            "app TCP connections {}",
            app.connections.load(Ordering::Relaxed)
        );
    });
}
