//! `wshub listen` and `wshub publish`: a command-line client that prints a
//! hub's events as JSON lines (reconnecting and resuming by itself), and one
//! that publishes an event over HTTP or WebSocket.

use std::collections::BTreeMap;
use std::io::Read;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::Message;
use clap::Args;
use futures_lite::{FutureExt, StreamExt};
use serde_json::{Value, json};
use smol::net::TcpStream;

use crate::config::LogLevel;
use crate::log::Logger;
use crate::testing::{connect_raw, http};

/// Backoff before the first reconnect; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A connection that lasted this long resets the backoff.
const STABLE_AFTER: Duration = Duration::from_secs(10);

#[derive(Debug, Args)]
pub(crate) struct ListenArgs {
    /// The hub's WebSocket URL [default: ws://127.0.0.1:8000/ws]
    #[arg(long, default_value = "ws://127.0.0.1:8000/ws")]
    url: String,
    /// Rooms to join, comma-separated
    #[arg(long, value_name = "LIST", default_value = "")]
    rooms: String,
    /// JWT for hubs with a jwt_secret (sent as ?token=)
    #[arg(long)]
    token: Option<String>,
    /// Exit after printing this many events
    #[arg(long, value_name = "N")]
    max_events: Option<u64>,
}

#[derive(Debug, Args)]
pub(crate) struct PublishArgs {
    /// The hub: http://host:port publishes with POST /api/events,
    /// ws://host:port/ws with a `publish` message [default: http://127.0.0.1:8000]
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    url: String,
    /// Target room (required over WebSocket)
    #[arg(long)]
    room: Option<String>,
    /// Target user (HTTP only; instead of a room)
    #[arg(long)]
    user: Option<String>,
    /// The event type
    #[arg(long = "type", value_name = "TYPE")]
    kind: String,
    /// The payload, a JSON object; `-` or absent reads it from stdin
    #[arg(long)]
    payload: Option<String>,
    /// Bearer credential: the admin key or a JWT
    #[arg(long)]
    token: Option<String>,
}

/// Prints events until interrupted, or until `--max-events`.
pub(crate) fn listen(args: ListenArgs) -> ExitCode {
    let log = Logger::new(LogLevel::Info);
    let rooms: Vec<String> = args
        .rooms
        .split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(str::to_string)
        .collect();
    let url = match &args.token {
        Some(token) => format!(
            "{}{}token={token}",
            args.url,
            if args.url.contains('?') { '&' } else { '?' }
        ),
        None => args.url.clone(),
    };
    smol::block_on(async {
        let mut state = Resume::default();
        let mut printed = 0u64;
        let mut backoff = FIRST_BACKOFF;
        for attempt in 1u64.. {
            let started = Instant::now();
            let ended = match connect_raw(&url, &[]).await {
                Ok(ws) => {
                    log.info("connected")
                        .field("url", &args.url)
                        .field("attempt", attempt)
                        .emit();
                    session(ws, &rooms, &mut state, &mut printed, args.max_events, log).await
                }
                Err(e) => Ended::Failed(e.to_string()),
            };
            match ended {
                Ended::Done => return ExitCode::SUCCESS,
                Ended::Final(code) => {
                    log.error("closed for good")
                        .field("close_code", code)
                        .emit();
                    return ExitCode::FAILURE;
                }
                Ended::Closed(code) => log.warn("disconnected").maybe("close_code", code).emit(),
                Ended::Failed(error) => log.warn("cannot connect").field("error", error).emit(),
            }
            if started.elapsed() >= STABLE_AFTER {
                backoff = FIRST_BACKOFF;
            }
            let wait = backoff.mul_f64(0.5 + fastrand::f64());
            log.info("reconnecting")
                .field("in_ms", wait.as_millis() as u64)
                .emit();
            smol::Timer::after(wait).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        ExitCode::SUCCESS
    })
}

/// What a listener remembers across connections to resume without gaps.
#[derive(Debug, Default)]
struct Resume {
    epoch: Option<String>,
    last_seq: BTreeMap<String, u64>,
}

enum Ended {
    Done,
    Final(u16),
    Closed(Option<u16>),
    Failed(String),
}

async fn session(
    mut ws: WebSocketStream<TcpStream>,
    rooms: &[String],
    state: &mut Resume,
    printed: &mut u64,
    max_events: Option<u64>,
    log: Logger,
) -> Ended {
    let mut timeout = Duration::from_secs(90);
    loop {
        let next = async { Some(ws.next().await) }
            .or(async {
                smol::Timer::after(timeout).await;
                None
            })
            .await;
        let message = match next {
            None => {
                return Ended::Failed(
                    "no message or heartbeat within the heartbeat timeout".into(),
                );
            }
            Some(None) => return Ended::Closed(None),
            Some(Some(Err(e))) => return Ended::Failed(e.to_string()),
            Some(Some(Ok(Message::Close(frame)))) => {
                let code = frame.map(|f| u16::from(f.code));
                return match code {
                    Some(code @ (4003 | 1008)) => Ended::Final(code),
                    other => Ended::Closed(other),
                };
            }
            Some(Some(Ok(Message::Text(text)))) => match serde_json::from_str::<Value>(&text) {
                Ok(v) => v,
                Err(_) => continue,
            },
            Some(Some(Ok(_))) => continue,
        };
        match message["type"].as_str().unwrap_or("") {
            "welcome" => {
                if let Some(ms) = message["payload"]["heartbeat_timeout_ms"].as_u64() {
                    timeout = Duration::from_millis(ms) + Duration::from_secs(1);
                }
                let epoch = message["payload"]["epoch"].as_str().map(str::to_string);
                if rooms.is_empty() {
                    state.epoch = epoch;
                    continue;
                }
                let mut subscribe = json!({"type": "subscribe", "rooms": rooms});
                let known: BTreeMap<&String, u64> = rooms
                    .iter()
                    .filter_map(|r| Some((r, *state.last_seq.get(r)?)))
                    .collect();
                if let (Some(old), false) = (&state.epoch, known.is_empty()) {
                    subscribe["since"] = json!(known);
                    subscribe["epoch"] = json!(old);
                }
                if ws.send(Message::text(subscribe.to_string())).await.is_err() {
                    return Ended::Failed("cannot subscribe".into());
                }
            }
            "subscribed" => {
                let payload = &message["payload"];
                state.epoch = payload["epoch"].as_str().map(str::to_string);
                if let Some(positions) = payload["positions"].as_object() {
                    for (room, seq) in positions {
                        let recovered = payload["recovered"][room].as_bool().unwrap_or(false);
                        if !recovered {
                            state
                                .last_seq
                                .insert(room.clone(), seq.as_u64().unwrap_or(0));
                        }
                    }
                }
                log.info("subscribed")
                    .field("rooms", &payload["rooms"])
                    .field("recovered", &payload["recovered"])
                    .field("positions", &payload["positions"])
                    .emit();
            }
            "error" => {
                log.warn("hub error")
                    .field("error", &message["payload"])
                    .emit();
            }
            _ if message.get("id").is_some() => {
                if let (Some(room), Some(seq)) = (message["room"].as_str(), message["seq"].as_u64())
                {
                    let last = state.last_seq.entry(room.to_string()).or_default();
                    if seq <= *last {
                        continue; // already printed before a reconnect
                    }
                    *last = seq;
                }
                println!("{message}");
                *printed += 1;
                if max_events.is_some_and(|max| *printed >= max) {
                    let _ = ws.close(None).await;
                    return Ended::Done;
                }
            }
            _ => {}
        }
    }
}

/// Publishes one event and prints the hub's reply.
pub(crate) fn publish(args: PublishArgs) -> ExitCode {
    let log = Logger::new(LogLevel::Info);
    let payload_text = match args.payload.as_deref() {
        Some(text) if text != "-" => text.to_string(),
        _ => {
            let mut text = String::new();
            if std::io::stdin().read_to_string(&mut text).is_err() {
                log.error("cannot read the payload from stdin").emit();
                return ExitCode::from(2);
            }
            text
        }
    };
    let payload: Value = match serde_json::from_str(&payload_text) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            log.error("the payload must be a JSON object").emit();
            return ExitCode::from(2);
        }
    };
    smol::block_on(async {
        if args.url.starts_with("ws://") {
            publish_ws(&args, payload, log).await
        } else {
            publish_http(&args, payload, log).await
        }
    })
}

async fn publish_http(args: &PublishArgs, payload: Value, log: Logger) -> ExitCode {
    let Some(rest) = args.url.strip_prefix("http://") else {
        log.error("--url must start with http:// or ws://").emit();
        return ExitCode::from(2);
    };
    let (authority, base) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
    let addr = match smol::net::resolve(authority)
        .await
        .ok()
        .and_then(|a| a.into_iter().next())
    {
        Some(addr) => addr,
        None => {
            log.error("cannot resolve the hub's address")
                .field("url", &args.url)
                .emit();
            return ExitCode::from(2);
        }
    };
    let mut body = json!({"type": args.kind, "payload": payload});
    if let Some(room) = &args.room {
        body["room"] = json!(room);
    }
    if let Some(user) = &args.user {
        body["user"] = json!(user);
    }
    let auth = args.token.as_ref().map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(auth) = &auth {
        headers.push(("Authorization", auth.as_str()));
    }
    let path = format!("/{}/api/events", base.trim_matches('/')).replace("//", "/");
    let reply = http(addr, "POST", &path, &headers, Some(&body.to_string())).await;
    if reply.status == 202 {
        println!("{}", reply.text());
        ExitCode::SUCCESS
    } else {
        eprintln!("{}", reply.text());
        ExitCode::FAILURE
    }
}

async fn publish_ws(args: &PublishArgs, payload: Value, log: Logger) -> ExitCode {
    let Some(room) = &args.room else {
        log.error("--room is required to publish over WebSocket")
            .emit();
        return ExitCode::from(2);
    };
    let url = match &args.token {
        Some(token) => format!("{}?token={token}", args.url),
        None => args.url.clone(),
    };
    let mut ws = match connect_raw(&url, &[]).await {
        Ok(ws) => ws,
        Err(e) => {
            log.error("cannot connect")
                .field("error", e.to_string())
                .emit();
            return ExitCode::FAILURE;
        }
    };
    let message = json!({"type": "publish", "room": room, "event": args.kind, "payload": payload, "ref": "cli"});
    if ws.send(Message::text(message.to_string())).await.is_err() {
        return ExitCode::FAILURE;
    }
    while let Some(Ok(frame)) = ws.next().await {
        let Message::Text(text) = frame else { continue };
        let Ok(reply) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        if reply["ref"] == "cli" {
            let _ = ws.close(None).await;
            return if reply["type"] == "published" {
                println!("{reply}");
                ExitCode::SUCCESS
            } else {
                eprintln!("{reply}");
                ExitCode::FAILURE
            };
        }
    }
    log.error("the connection ended before the reply").emit();
    ExitCode::FAILURE
}
