//! The four attackers of `wshub-bench --attack`, each on loopback, bounded
//! by a deadline and by the hub's RSS passing the cap (the sampler's flag),
//! and each leaving (closing every socket) before it returns:
//!
//! - [`ping_flood`]: one WebSocket that writes empty masked Pings as fast
//!   as the hub takes them and never reads a byte.
//! - [`pipeline`]: connections that each write many pipelined `GET /`
//!   requests at once, never read, and hold the socket until the deadline.
//! - [`history_flood`]: large events published over keep-alive HTTP to
//!   many rooms, with nobody subscribed: all of it is history.
//! - [`many_rooms`]: one WebSocket subscribing to many rooms in chunks,
//!   names in descending order, each chunk after the last one's reply.

use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::blocking::{self, Http, Message, Ws};
use super::procfs;
use super::stats::Summary;
use super::wire::{self, opcode};

/// Time allowed for one connect, upgrade or reply.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// Pings written per `write` call of the flood (6 bytes each).
const PINGS_PER_WRITE: usize = 8 * 1024;

/// What every attacker is given.
#[derive(Debug, Clone)]
pub(crate) struct Ctx {
    pub addr: SocketAddr,
    pub pid: u32,
    pub deadline: Instant,
    /// Set once the hub's RSS passed the cap.
    pub over_cap: Arc<AtomicBool>,
}

impl Ctx {
    /// Why the attack should stop now, if it should.
    fn stop(&self) -> Option<Stop> {
        if self.over_cap.load(Relaxed) {
            Some(Stop::RssCap)
        } else if Instant::now() >= self.deadline {
            Some(Stop::Time)
        } else {
            None
        }
    }
}

/// Why an attack ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Stop {
    /// Its time was up.
    Time,
    /// The hub's RSS passed the cap.
    RssCap,
    /// It did all it meant to.
    Done,
    /// The hub closed or refused it.
    Hub,
}

/// What an attacker did, and what it saw of the hub.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Work {
    pub stopped_by: Stop,
    /// Bytes written to the hub.
    pub bytes_sent: u64,
    /// Pings, requests, publishes or subscribe messages written.
    pub messages_sent: u64,
    /// Replies or answers read (publishes and subscribes only).
    pub answered: u64,
    /// Connections the attacker held.
    pub connections: u64,
    /// The hub's open files just before the attacker left.
    pub hub_fds_before_leaving: Option<u64>,
    /// Seconds into the attack at which the hub closed or refused it.
    pub hub_acted_after_s: Option<f64>,
    /// What the hub said or did then (a status, an error code, an I/O error).
    pub hub_action: Option<String>,
    /// many-rooms: rooms subscribed when the attacker left.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rooms_subscribed: Option<u64>,
    /// many-rooms: time per subscribe reply; history-flood: per publish.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply_ms: Option<Summary>,
    /// many-rooms: the first and the last chunk's reply time, in ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_last_reply_ms: Option<(f64, f64)>,
}

impl Work {
    fn new(connections: u64) -> Self {
        Self {
            stopped_by: Stop::Done,
            bytes_sent: 0,
            messages_sent: 0,
            answered: 0,
            connections,
            hub_fds_before_leaving: None,
            hub_acted_after_s: None,
            hub_action: None,
            rooms_subscribed: None,
            reply_ms: None,
            first_last_reply_ms: None,
        }
    }

    fn hub_acted(&mut self, started: Instant, what: String) {
        if self.hub_action.is_none() {
            self.hub_acted_after_s = Some(round3(started.elapsed().as_secs_f64()));
            self.hub_action = Some(what);
        }
        self.stopped_by = Stop::Hub;
    }
}

/// One WebSocket writing Pings and never reading, until stopped.
pub(crate) fn ping_flood(ctx: &Ctx) -> Result<Work, String> {
    let ws = Ws::open(None, ctx.addr, "", STEP_TIMEOUT)?;
    let stream = ws.into_stream();
    // Short, so the loop looks at its deadline while the hub is not reading.
    stream
        .set_write_timeout(Some(Duration::from_millis(100)))
        .map_err(|e| e.to_string())?;
    let ping = wire::client_frame(opcode::PING, b"");
    let batch = ping.repeat(PINGS_PER_WRITE);
    let mut work = Work::new(1);
    let started = Instant::now();
    let mut at = 0;
    loop {
        if let Some(stop) = ctx.stop() {
            work.stopped_by = stop;
            break;
        }
        match (&stream).write(&batch[at..]) {
            Ok(n) => {
                work.bytes_sent += n as u64;
                at = (at + n) % batch.len();
            }
            Err(e) if blocked(&e) => {}
            Err(e) => {
                work.hub_acted(started, format!("write: {:?}", e.kind()));
                break;
            }
        }
    }
    work.messages_sent = work.bytes_sent / ping.len() as u64;
    work.hub_fds_before_leaving = procfs::open_fds(ctx.pid);
    Ok(work)
}

/// `connections` sockets each writing `requests` pipelined `GET /` and
/// holding on, never reading, until stopped.
pub(crate) fn pipeline(ctx: &Ctx, connections: usize, requests: usize) -> Result<Work, String> {
    let request = format!("GET / HTTP/1.1\r\nHost: {}\r\n\r\n", ctx.addr);
    let burst = request.repeat(requests);
    let mut work = Work::new(0);
    let started = Instant::now();
    let mut sockets: Vec<TcpStream> = Vec::with_capacity(connections);
    for _ in 0..connections {
        if ctx.stop().is_some() {
            break;
        }
        let socket = blocking::tcp(None, ctx.addr, STEP_TIMEOUT).map_err(|e| e.to_string())?;
        socket
            .set_write_timeout(Some(Duration::from_secs(1)))
            .map_err(|e| e.to_string())?;
        // What the hub does not take within a second stays unsent.
        let mut sent = 0;
        while sent < burst.len() {
            match (&socket).write(&burst.as_bytes()[sent..]) {
                Ok(n) => sent += n,
                Err(e) if blocked(&e) => break,
                Err(e) => {
                    work.hub_acted(started, format!("write: {:?}", e.kind()));
                    break;
                }
            }
        }
        work.bytes_sent += sent as u64;
        work.messages_sent += (sent / request.len()) as u64;
        sockets.push(socket);
    }
    work.connections = sockets.len() as u64;
    let stop = loop {
        if let Some(stop) = ctx.stop() {
            break stop;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    if work.hub_action.is_none() {
        work.stopped_by = stop;
    }
    work.hub_fds_before_leaving = procfs::open_fds(ctx.pid);
    drop(sockets);
    Ok(work)
}

/// Publishes `events` events of about `event_bytes` to each of `rooms`
/// rooms (round-robin), over one keep-alive connection.
pub(crate) fn history_flood(
    ctx: &Ctx,
    rooms: usize,
    events: usize,
    event_bytes: usize,
) -> Result<Work, String> {
    let mut http = Http::open(ctx.addr, STEP_TIMEOUT).map_err(|e| e.to_string())?;
    let pad = "x".repeat(event_bytes);
    let mut work = Work::new(1);
    let started = Instant::now();
    let mut times = Vec::with_capacity(rooms * events);
    'all: for _ in 0..events {
        for room in 0..rooms {
            if let Some(stop) = ctx.stop() {
                work.stopped_by = stop;
                break 'all;
            }
            let body = format!(
                r#"{{"room":"flood-{room:03}","type":"flood","payload":{{"pad":"{pad}"}}}}"#
            );
            let request = wire::publish_request(&ctx.addr.to_string(), &body, None);
            let sent = Instant::now();
            work.bytes_sent += request.len() as u64;
            work.messages_sent += 1;
            match http.exchange(&request, sent + STEP_TIMEOUT) {
                Ok(answer) if answer.status == 202 => {
                    work.answered += 1;
                    times.push(sent.elapsed().as_nanos() as u64);
                }
                Ok(answer) => {
                    work.hub_acted(started, format!("HTTP {}", answer.status));
                    break 'all;
                }
                Err(e) => {
                    work.hub_acted(started, e);
                    break 'all;
                }
            }
        }
    }
    work.reply_ms = Some(Summary::of(&mut times));
    work.hub_fds_before_leaving = procfs::open_fds(ctx.pid);
    Ok(work)
}

/// Subscribes one connection to `rooms` rooms, `chunk` per message, names
/// in descending order; stops at the first refusal.
pub(crate) fn many_rooms(ctx: &Ctx, rooms: usize, chunk: usize) -> Result<Work, String> {
    let mut ws = Ws::open(None, ctx.addr, "", STEP_TIMEOUT)?;
    ws.recv(Instant::now() + STEP_TIMEOUT)?
        .ok_or("no welcome")?;
    let mut work = Work::new(1);
    let started = Instant::now();
    let mut times = Vec::new();
    let mut subscribed = 0u64;
    let names = descending_rooms(rooms);
    for (n, group) in names.chunks(chunk.max(1)).enumerate() {
        if let Some(stop) = ctx.stop() {
            work.stopped_by = stop;
            break;
        }
        let reference = format!("sub-{n}");
        let message = serde_json::json!({"type": "subscribe", "rooms": group, "ref": reference});
        let text = message.to_string();
        let sent = Instant::now();
        if let Err(e) = ws.send_text(&text) {
            work.hub_acted(started, format!("send: {:?}", e.kind()));
            break;
        }
        work.bytes_sent += text.len() as u64;
        work.messages_sent += 1;
        // The reply may take long (that is the attack): up to the deadline.
        let deadline = ctx.deadline.max(sent + STEP_TIMEOUT);
        match reply_to(&mut ws, &reference, deadline) {
            Ok(Some(reply)) if reply["type"] == "subscribed" => {
                work.answered += 1;
                subscribed += group.len() as u64;
                times.push(sent.elapsed().as_nanos() as u64);
            }
            Ok(Some(reply)) => {
                let code = reply["payload"]["code"].as_str().unwrap_or("?").to_string();
                work.hub_acted(started, format!("error {code} after {subscribed} rooms"));
                break;
            }
            Ok(None) => {
                work.stopped_by = Stop::Time;
                break;
            }
            Err(e) => {
                work.hub_acted(started, e);
                break;
            }
        }
    }
    work.rooms_subscribed = Some(subscribed);
    if let (Some(first), Some(last)) = (times.first(), times.last()) {
        work.first_last_reply_ms = Some((super::stats::ms(*first), super::stats::ms(*last)));
    }
    work.reply_ms = Some(Summary::of(&mut times));
    work.hub_fds_before_leaving = procfs::open_fds(ctx.pid);
    ws.close(Duration::from_secs(2));
    Ok(work)
}

/// `count` room names whose order as sent is descending: m099999, m099998, ...
fn descending_rooms(count: usize) -> Vec<String> {
    (0..count).rev().map(|i| format!("m{i:06}")).collect()
}

/// The reply with `ref` = `reference`: `Ok(None)` if none came by `deadline`.
fn reply_to(
    ws: &mut Ws,
    reference: &str,
    deadline: Instant,
) -> Result<Option<serde_json::Value>, String> {
    loop {
        match ws.recv(deadline)? {
            None => return Ok(None),
            Some(Message::Close(code)) => return Err(format!("closed with {code}")),
            Some(Message::Data(text)) => {
                let Ok(value) = serde_json::from_slice::<serde_json::Value>(&text) else {
                    continue;
                };
                if value["ref"].as_str() == Some(reference) {
                    return Ok(Some(value));
                }
            }
        }
    }
}

/// Whether a write error only means the hub is not taking bytes now.
fn blocked(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names_descend_and_are_valid() {
        let names = descending_rooms(100_000);
        assert_eq!(names[0], "m099999");
        assert_eq!(names[99_999], "m000000");
        assert!(names.windows(2).all(|w| w[0] > w[1]));
        assert!(names.iter().all(|n| wshub::protocol::is_valid_room(n)));
    }

    #[test]
    fn a_stopped_context_says_why() {
        let over_cap = Arc::new(AtomicBool::new(false));
        let ctx = Ctx {
            addr: "127.0.0.1:1".parse().unwrap(),
            pid: 1,
            deadline: Instant::now() + Duration::from_secs(60),
            over_cap: over_cap.clone(),
        };
        assert_eq!(ctx.stop(), None);
        over_cap.store(true, Relaxed);
        assert_eq!(ctx.stop(), Some(Stop::RssCap));
        let late = Ctx {
            deadline: Instant::now(),
            ..ctx
        };
        assert_eq!(late.stop(), Some(Stop::RssCap), "the cap is named first");
    }
}
