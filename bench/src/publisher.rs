//! The publisher: a few keep-alive connections (HTTP `POST /api/events`, or
//! WebSocket `publish` messages) on the calling thread, each with one
//! request in flight. [`open_loop`] sends on a fixed schedule whatever the
//! replies do — a publish that finds every connection busy waits and is
//! counted late, and its latency still counts from when it was due, so a
//! slow server cannot slow its own load. [`flood`] sends as fast as the
//! connections allow, bounded in count and time.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use futures_lite::FutureExt;
use serde_json::Value;
use smol::{Async, LocalExecutor, Timer};

use super::client::{self, ConnectError, FrameReader, Incoming};
use super::record::{Run, Slot};
use super::wire::{self, opcode};

/// A publish sent this long after it was due counts as late.
const LATE_NS: u64 = 1_000_000;

/// How publishes reach the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Via {
    /// `POST /api/events` over keep-alive HTTP/1.1.
    Http,
    /// `publish` messages over WebSocket (wshub only; mind its rate limit).
    Ws,
}

/// Where and how to publish.
#[derive(Debug, Clone)]
pub(crate) struct PublishPlan {
    /// The hubs (address and `Host` header); publisher connection `i`
    /// goes to hub `i % len`.
    pub hubs: Vec<(SocketAddr, String)>,
    pub room: String,
    pub payload_bytes: usize,
    /// Connections, each with one publish in flight.
    pub connections: usize,
    pub via: Via,
    pub bearer: Option<String>,
    /// Time allowed for one publish's reply.
    pub timeout: Duration,
}

/// How a batch of publishes went.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub(crate) struct Outcome {
    /// Publishes attempted.
    pub attempted: u64,
    /// Publishes answered with 202 (or `published`).
    pub accepted: u64,
    /// Failures by kind.
    pub failures: BTreeMap<String, u64>,
    /// Publishes sent more than 1 ms after they were due.
    pub late: u64,
    /// The longest wait between due and sent, in ms.
    pub max_send_lag_ms: f64,
    /// Recipients the hub reported, summed.
    pub recipients: u64,
}

/// Publishes `count` events with indexes from `first`, `rate` per second.
pub(crate) fn open_loop(
    plan: &PublishPlan,
    run: &Run,
    first: u64,
    count: u64,
    rate: f64,
) -> Outcome {
    let interval_ns = (1e9 / rate.max(1e-3)) as u64;
    let start = run.now() + 10_000_000;
    let (jobs_tx, jobs) = async_channel::unbounded::<u64>();
    let outcome = RefCell::new(Outcome::default());
    let executor = LocalExecutor::new();
    let mut workers = Vec::new();
    for worker in 0..plan.connections.max(1) {
        let jobs = jobs.clone();
        let outcome = &outcome;
        workers.push(executor.spawn(async move {
            let mut conn = None;
            while let Ok(index) = jobs.recv().await {
                publish(plan, run, &mut conn, worker, index, outcome).await;
            }
        }));
    }
    drop(jobs);
    smol::block_on(executor.run(async {
        for i in 0..count {
            let due = start + i * interval_ns;
            Timer::at(run.instant(due)).await;
            if let Some(slot) = run.slot(first + i) {
                slot.due.store(due, Relaxed);
            }
            // The workers hold the receiving end until the queue is closed.
            let _ = jobs_tx.send(first + i).await;
        }
        // Closing the queue ends each worker once it is empty.
        drop(jobs_tx);
        for worker in workers {
            worker.await;
        }
    }));
    // The workers borrow the outcome until the executor is gone.
    drop(executor);
    outcome.into_inner()
}

/// Publishes as fast as the connections allow, indexes from `first`, at
/// most `max` of them and until `duration` has passed.
pub(crate) fn flood(
    plan: &PublishPlan,
    run: &Run,
    first: u64,
    max: u64,
    duration: Duration,
) -> Outcome {
    let deadline = Instant::now() + duration;
    let next = Cell::new(first);
    let outcome = RefCell::new(Outcome::default());
    let executor = LocalExecutor::new();
    let mut workers = Vec::new();
    for worker in 0..plan.connections.max(1) {
        let (next, outcome) = (&next, &outcome);
        workers.push(executor.spawn(async move {
            let mut conn = None;
            while Instant::now() < deadline && next.get() < first + max {
                let index = next.get();
                next.set(index + 1);
                if let Some(slot) = run.slot(index) {
                    slot.due.store(run.now(), Relaxed);
                }
                publish(plan, run, &mut conn, worker, index, outcome).await;
            }
        }));
    }
    smol::block_on(executor.run(async {
        for worker in workers {
            worker.await;
        }
    }));
    // The workers borrow the outcome until the executor is gone.
    drop(executor);
    outcome.into_inner()
}

/// A publisher connection.
enum Conn {
    Http(Async<TcpStream>, Vec<u8>),
    Ws(Async<TcpStream>, FrameReader),
}

/// Sends publish `index` on `conn` (opened first if needed) and waits for
/// its reply; a connection that failed is dropped and reopened next time.
async fn publish(
    plan: &PublishPlan,
    run: &Run,
    conn: &mut Option<Conn>,
    worker: usize,
    index: u64,
    outcome: &RefCell<Outcome>,
) {
    let hub = &plan.hubs[worker % plan.hubs.len()];
    let Some(slot) = run.slot(index) else { return };
    let due = slot.due.load(Relaxed);
    let deadline = Instant::now() + plan.timeout;
    let result = exchange(plan, run, conn, hub, index, slot)
        .or(async {
            Timer::at(deadline).await;
            Err("timed out".to_string())
        })
        .await;
    let mut o = outcome.borrow_mut();
    o.attempted += 1;
    let sent = slot.sent.load(Relaxed);
    if sent != super::record::NEVER {
        let lag = sent.saturating_sub(due);
        if lag > LATE_NS {
            o.late += 1;
        }
        o.max_send_lag_ms = o.max_send_lag_ms.max(super::stats::ms(lag));
    }
    match result {
        Ok(recipients) => {
            o.accepted += 1;
            o.recipients += recipients;
        }
        Err(kind) => {
            *o.failures.entry(kind).or_default() += 1;
            *conn = None;
        }
    }
}

/// One request and its reply; the recipients on success.
async fn exchange(
    plan: &PublishPlan,
    run: &Run,
    conn: &mut Option<Conn>,
    hub: &(SocketAddr, String),
    index: u64,
    slot: &Slot,
) -> Result<u64, String> {
    if conn.is_none() {
        *conn = Some(
            open(plan, hub)
                .await
                .map_err(|e| format!("connect: {}", e.kind()))?,
        );
    }
    let due = slot.due.load(Relaxed);
    let body = wire::publish_body(&plan.room, index, due, plan.payload_bytes);
    let reply = match conn.as_mut() {
        Some(Conn::Http(stream, buf)) => {
            let request = wire::publish_request(&hub.1, &body, plan.bearer.as_deref());
            slot.sent.store(run.now(), Relaxed);
            client::send(stream, &request).await.map_err(io_kind)?;
            http_reply(stream, buf).await?
        }
        Some(Conn::Ws(stream, reader)) => {
            let message = ws_publish_message(&body, index);
            let frame = wire::client_frame(opcode::TEXT, message.as_bytes());
            slot.sent.store(run.now(), Relaxed);
            client::send(stream, &frame).await.map_err(io_kind)?;
            ws_reply(stream, reader, index).await?
        }
        None => return Err("no connection".into()),
    };
    slot.replied.store(run.now(), Relaxed);
    let seq = reply["seq"].as_u64().unwrap_or(0);
    slot.seq.store(seq, Relaxed);
    run.saw_seq(seq);
    let recipients = reply["recipients"].as_u64().unwrap_or(0);
    slot.recipients.store(recipients, Relaxed);
    Ok(recipients)
}

fn io_kind(e: std::io::Error) -> String {
    format!("{:?}", e.kind())
}

async fn open(plan: &PublishPlan, hub: &(SocketAddr, String)) -> Result<Conn, ConnectError> {
    let stream = client::connect(None, hub.0).await?;
    match plan.via {
        Via::Http => Ok(Conn::Http(stream, Vec::with_capacity(1024))),
        Via::Ws => {
            let accept = wire::expected_accept();
            let leftover = client::upgrade(&stream, &hub.1, "", &accept).await?;
            let mut reader = FrameReader::default();
            // The welcome is skipped by `ws_reply` like any other message.
            reader.feed(&leftover, |_| {})?;
            Ok(Conn::Ws(stream, reader))
        }
    }
}

/// Reads one HTTP reply; the JSON body of a 202.
async fn http_reply(stream: &Async<TcpStream>, buf: &mut Vec<u8>) -> Result<Value, String> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(reply) = wire::parse_reply(buf).map_err(|e| e.to_string())? {
            let body = buf[reply.body_at..reply.body_at + reply.body_len].to_vec();
            buf.drain(..reply.body_at + reply.body_len);
            if reply.status != 202 {
                return Err(format!("HTTP {}", reply.status));
            }
            if reply.closes {
                return Err("server closed the keep-alive connection".into());
            }
            return serde_json::from_slice(&body).map_err(|_| "reply is not JSON".into());
        }
        let n = stream
            .read_with(|io| (&*io).read(&mut chunk))
            .await
            .map_err(io_kind)?;
        if n == 0 {
            return Err("connection closed".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The `publish` message for `body` (a POST body), with `ref` = `index`.
fn ws_publish_message(body: &str, index: u64) -> String {
    let mut message: Value = serde_json::from_str(body).unwrap_or_default();
    if let Some(m) = message.as_object_mut() {
        let kind = m.remove("type").unwrap_or_default();
        m.insert("type".into(), "publish".into());
        m.insert("event".into(), kind);
        m.insert("ref".into(), index.to_string().into());
    }
    message.to_string()
}

/// Reads messages until the `published` (or `error`) reply with our `ref`.
async fn ws_reply(
    stream: &Async<TcpStream>,
    reader: &mut FrameReader,
    index: u64,
) -> Result<Value, String> {
    let reference = index.to_string();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream
            .read_with(|io| (&*io).read(&mut chunk))
            .await
            .map_err(io_kind)?;
        if n == 0 {
            return Err("connection closed".into());
        }
        let mut found = None;
        let mut pongs = Vec::new();
        reader
            .feed(&chunk[..n], |incoming| match incoming {
                Incoming::Message(text) => {
                    let Ok(message) = serde_json::from_slice::<Value>(text) else {
                        return;
                    };
                    if message["ref"].as_str() == Some(&reference) {
                        found = Some(message);
                    }
                }
                Incoming::Ping(p) => pongs.push(wire::client_frame(opcode::PONG, p)),
                Incoming::Close(code) => found = Some(serde_json::json!({"closed": code})),
            })
            .map_err(|e| e.to_string())?;
        for pong in pongs {
            client::send(stream, &pong).await.map_err(io_kind)?;
        }
        match found {
            Some(m) if m["type"] == "published" => return Ok(m["payload"].clone()),
            Some(m) if m["type"] == "error" => {
                return Err(format!("error {}", m["payload"]["code"]));
            }
            Some(m) => return Err(format!("unexpected reply {m}")),
            None => {}
        }
    }
}
