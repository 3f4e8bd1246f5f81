//! A broadcast server on tokio + axum, speaking the subset of the wshub
//! protocol that `wshub bench` uses, in its fastest honest configuration:
//!
//! - `GET /ws?rooms=a,b`: upgrade; a `welcome` first, then events as JSON text.
//! - `POST /api/events` `{"room","type","payload"}`: 202 `{"id","seq","recipients"}`.
//!
//! The multi-threaded runtime (one worker per core); each event serialised
//! once into a shared `Utf8Bytes` that every member's bounded queue gets a
//! clone of; a member whose queue is full is dropped and closed with 4009,
//! as wshub does; the writer feeds a batch of frames and flushes once; a
//! 1 KiB read buffer and an 8 KiB write buffer, as wshub's. Run with
//! `wshub-bench-peer-axum --bind 127.0.0.1:0`; the first stdout line is
//! `{"event":"listening","addr":"127.0.0.1:PORT","epoch":"…"}`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::rejection::JsonRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::SinkExt;
use serde::{Deserialize, Serialize};
use serde_json::json;
use serde_json::value::RawValue;
use tokio::sync::mpsc;

/// Messages queued per connection before it counts as a slow consumer.
const SEND_QUEUE: usize = 1024;
/// Largest request body or client message.
const MAX_MESSAGE_BYTES: usize = 65536;
/// Pending connections the kernel may hold, as wshub's.
const LISTEN_BACKLOG: u32 = 4096;
/// Frames fed before one flush at most.
const MAX_BATCH: usize = 256;

#[derive(Default)]
struct Room {
    seq: u64,
    members: HashMap<u64, mpsc::Sender<Utf8Bytes>>,
}

struct Hub {
    epoch: String,
    next_id: AtomicU64,
    rooms: Mutex<HashMap<String, Room>>,
}

impl Hub {
    fn rooms(&self) -> MutexGuard<'_, HashMap<String, Room>> {
        // A panic elsewhere leaves the map usable; keep serving.
        self.rooms.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Deserialize)]
struct PublishBody {
    room: String,
    #[serde(rename = "type")]
    kind: String,
    payload: Box<RawValue>,
}

#[derive(Serialize)]
struct Event<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    payload: &'a RawValue,
    correlation_id: &'a str,
    timestamp: &'a str,
    id: &'a str,
    room: &'a str,
    seq: u64,
}

fn valid_room(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({"error": {"code": code, "message": message}});
    (status, Json(body)).into_response()
}

async fn publish(State(hub): State<Arc<Hub>>, body: Result<Json<PublishBody>, JsonRejection>) -> Response {
    let Ok(Json(body)) = body else {
        return error(StatusCode::BAD_REQUEST, "bad_request", "body is not a publish");
    };
    if !valid_room(&body.room) || !body.payload.get().starts_with('{') {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_message", "needs a room and an object payload");
    }
    let id = uuid::Uuid::new_v4().to_string();
    let correlation_id = uuid::Uuid::new_v4().to_string();
    let timestamp = timestamp_now();
    let mut rooms = hub.rooms();
    let room = rooms.entry(body.room.clone()).or_default();
    room.seq += 1;
    let event = Event {
        kind: &body.kind,
        payload: &body.payload,
        correlation_id: &correlation_id,
        timestamp: &timestamp,
        id: &id,
        room: &body.room,
        seq: room.seq,
    };
    let frame = Utf8Bytes::from(serde_json::to_string(&event).unwrap_or_default());
    let mut recipients = 0;
    // Dropping a member's sender ends its writer, which closes with 4009.
    room.members.retain(|_, member| match member.try_send(frame.clone()) {
        Ok(()) => {
            recipients += 1;
            true
        }
        Err(_) => false,
    });
    let seq = room.seq;
    drop(rooms);
    (StatusCode::ACCEPTED, Json(json!({"id": id, "seq": seq, "recipients": recipients}))).into_response()
}

async fn upgrade(
    ws: WebSocketUpgrade,
    Query(query): Query<HashMap<String, String>>,
    State(hub): State<Arc<Hub>>,
) -> Response {
    let rooms: Vec<String> = query
        .get("rooms")
        .map(|list| list.split(',').filter(|r| !r.is_empty()).map(str::to_string).collect())
        .unwrap_or_default();
    if !rooms.iter().all(|r| valid_room(r)) {
        return error(StatusCode::BAD_REQUEST, "bad_request", "bad room name");
    }
    ws.read_buffer_size(1024)
        .write_buffer_size(8 * 1024)
        .max_write_buffer_size(usize::MAX)
        .max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| connection(socket, hub, rooms))
}

async fn connection(mut socket: WebSocket, hub: Arc<Hub>, rooms: Vec<String>) {
    let id = hub.next_id.fetch_add(1, Ordering::Relaxed);
    let welcome = json!({
        "type": "welcome",
        "payload": {
            "connection_id": uuid::Uuid::new_v4().to_string(),
            "epoch": hub.epoch,
            "protocol": "wshub.json",
            "user": null,
            "rooms": rooms,
            "heartbeat_interval_ms": 30000,
            "heartbeat_timeout_ms": 60000,
            "max_message_bytes": MAX_MESSAGE_BYTES,
        },
        "correlation_id": uuid::Uuid::new_v4().to_string(),
        "timestamp": timestamp_now(),
    });
    if socket.send(Message::Text(welcome.to_string().into())).await.is_err() {
        return;
    }
    let (tx, mut rx) = mpsc::channel(SEND_QUEUE);
    {
        let mut map = hub.rooms();
        for name in &rooms {
            map.entry(name.clone()).or_default().members.insert(id, tx.clone());
        }
    }
    drop(tx);
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        tokio::select! {
            n = rx.recv_many(&mut batch, MAX_BATCH) => {
                if n == 0 {
                    let close = CloseFrame { code: 4009, reason: "slow consumer".into() };
                    let _ = socket.send(Message::Close(Some(close))).await;
                    break;
                }
                let mut sent = true;
                for frame in batch.drain(..) {
                    if socket.feed(Message::Text(frame)).await.is_err() {
                        sent = false;
                        break;
                    }
                }
                if !sent || socket.flush().await.is_err() {
                    break;
                }
            }
            incoming = socket.recv() => match incoming {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
                // Pings are answered by tungstenite; nothing else is expected.
                Some(Ok(_)) => {}
            },
        }
    }
    let mut map = hub.rooms();
    for name in &rooms {
        if let Some(room) = map.get_mut(name) {
            room.members.remove(&id);
        }
    }
}

/// Now as RFC 3339 UTC with milliseconds.
fn timestamp_now() -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = now.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        now.subsec_millis()
    )
}

/// A listener with wshub's backlog (tokio's `bind` uses 1024), so a burst
/// of connects is not dropped and retried a second later.
fn listen(bind: &str) -> std::io::Result<tokio::net::TcpListener> {
    let addr: std::net::SocketAddr = bind
        .parse()
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "not an address"))?;
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let bind = args
        .iter()
        .position(|a| a == "--bind")
        .and_then(|i| args.get(i + 1))
        .map_or("127.0.0.1:8002", String::as_str);
    let listener = match listen(bind) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("cannot bind {bind}: {e}");
            std::process::exit(2);
        }
    };
    let hub = Arc::new(Hub {
        epoch: uuid::Uuid::new_v4().to_string(),
        next_id: AtomicU64::new(1),
        rooms: Mutex::new(HashMap::new()),
    });
    let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    println!("{}", json!({"event": "listening", "addr": addr, "epoch": hub.epoch}));
    let app = Router::new()
        .route("/ws", get(upgrade))
        .route("/api/events", post(publish))
        .with_state(hub);
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        // Events are small; latency matters more than packing.
        let _ = tcp.set_nodelay(true);
    });
    if let Err(e) = axum::serve(listener, app).await {
        eprintln!("server error: {e}");
        std::process::exit(1);
    }
}
