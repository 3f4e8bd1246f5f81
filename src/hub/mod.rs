//! The hub task: the one owner of connections, rooms, history, limits and
//! counters. Everything else reaches it through `Command`s; it answers on
//! one-shot channels and feeds each connection's writer through a queue it
//! only ever `try_send`s to, so no publisher waits for a client.
//!
//! Its single timer drives the heartbeat and the liveness sweep (heartbeat
//! timeouts, token expiry, idempotency keys).
//!
//! Nothing a peer sends grows the hub without a bound: a connection's rooms
//! are capped by `max_rooms_per_connection`, all history together by
//! `max_history_bytes`, idempotency keys by their window and a count; the
//! per-user and per-IP tables hold only open connections, and `presence`
//! is computed from a room's members when asked, not stored.

mod admin;
mod admission;
mod cluster;
mod command;
mod conn;
mod durable;
mod event;
mod health;
mod history;
mod hooks;
mod idempotency;
mod membership;
mod publish;
mod room;
mod rooms;
mod session;
mod stream;

pub use crate::outlet::Outbound;
pub use command::{ComponentState, HubGone, JoinRequest, PresenceMember, Refusal, RoomInfo};
pub use conn::{ConnId, ConnectionInfo};
pub use health::{Component, HealthReport, Status};

pub(crate) use command::{Command, HubClient, Joined};

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use std::rc::Rc;

use async_channel::{Receiver, WeakSender};
use futures_lite::FutureExt;
use serde::Serialize;
use serde_json::json;

use crate::auth::unix_now;
use crate::config::Config;
use crate::engine::Engine;
use crate::executor::Spawner;
use crate::hook::Hooks;
use crate::log::{as_json, opt_json};
use crate::metrics::Metrics;
use crate::protocol::{
    CloseCode, Encoding, Envelope, ProtocolError, Timestamp, encode, sse, timestamp_now,
};
use crate::shutdown::TaskGuard;
use conn::{Conn, RoomSet};
use health::Health;
use history::HistoryLedger;
use idempotency::IdempotencyKeys;
use rooms::Rooms;
/// The liveness sweep runs at least this often (token expiry is due within 1 s).
const MAX_SWEEP_INTERVAL: Duration = Duration::from_millis(250);
/// ...and at most this often, however short the heartbeat timeout.
const MIN_SWEEP_INTERVAL: Duration = Duration::from_millis(10);

/// The state the hub task owns.
pub(crate) struct Hub {
    config: Config,
    epoch: String,
    /// What must be remembered: the hub's own memory, or the store.
    engine: Box<dyn Engine>,
    /// Publishes and resumes waiting for an engine that answers later.
    durable: durable::Durable,
    /// Watches, waiters and publishes of a cluster engine (Redis).
    cluster: cluster::Cluster,
    /// This hub's node name (PROTOCOL.md section 9).
    node: std::sync::Arc<str>,
    started: Instant,
    /// Boxed: the table stays small as it grows, whatever a `Conn` weighs.
    conns: HashMap<ConnId, Box<Conn>>,
    rooms: Rooms,
    /// Every event the rooms hold, oldest first, under `max_history_bytes`.
    history: HistoryLedger,
    users: HashMap<String, BTreeSet<ConnId>>,
    per_ip: HashMap<IpAddr, usize>,
    health: Health,
    idempotency: IdempotencyKeys,
    metrics: Metrics,
    schemas: Option<crate::schema::Schemas>,
    /// Given to every connection's writer: the drain waits for them all.
    tasks: TaskGuard,
    /// Whether nothing else is waiting for the hub: messages are then
    /// written to idle connections at once rather than queued.
    write_through: bool,
    /// The app's hooks; calls run as tasks of `spawner` and report to `me`.
    hooks: Rc<Hooks>,
    spawner: Spawner,
    /// The hub's own channel, weakly: it must not keep the hub running.
    me: WeakSender<Command>,
}

/// What the hub task needs besides its config.
pub(crate) struct HubParts {
    pub schemas: Option<crate::schema::Schemas>,
    pub tasks: TaskGuard,
    pub hooks: Rc<Hooks>,
    pub spawner: Spawner,
    pub me: WeakSender<Command>,
    pub node: std::sync::Arc<str>,
}

enum Wake {
    Command(Command),
    Timer,
    Closed,
}

impl Hub {
    /// A hub with no connections, starting from what `engine` holds.
    pub fn new(config: Config, mut engine: Box<dyn Engine>, parts: HubParts) -> Self {
        let HubParts {
            schemas,
            tasks,
            hooks,
            spawner,
            me,
            node,
        } = parts;
        let recovered = engine.recovered();
        let mut rooms = Rooms::new();
        for room in recovered.rooms {
            if room.oldest_seq > room.last_seq {
                rooms.forgotten(&room.name, room.last_seq);
            } else {
                rooms.insert(
                    room.name.into(),
                    room::Room::recovered(room.last_seq, room.oldest_seq),
                );
            }
        }
        let mut idempotency = IdempotencyKeys::default();
        for key in recovered.keys {
            idempotency.insert(key.key, key.reply, key.at);
        }
        let mut health = Health::default();
        let mut metrics = Metrics::default();
        if !engine.in_place() {
            health.set("engine", Status::Ok, None);
            metrics.engine = Some(crate::metrics::EngineMetrics::default());
        }
        Self {
            history: HistoryLedger::new(config.max_history_bytes),
            config,
            epoch: engine.epoch().to_string(),
            engine,
            durable: durable::Durable::default(),
            cluster: cluster::Cluster::default(),
            node,
            started: Instant::now(),
            conns: HashMap::new(),
            rooms,
            users: HashMap::new(),
            per_ip: HashMap::new(),
            health,
            idempotency,
            metrics,
            schemas,
            tasks,
            write_through: true,
            hooks,
            spawner,
            me,
        }
    }

    /// Serves commands until [`Command::Shutdown`] (or until every client is
    /// gone), then closes every connection with 1001.
    pub async fn run(mut self, commands: Receiver<Command>) {
        let sweep_every =
            (self.config.heartbeat_timeout / 4).clamp(MIN_SWEEP_INTERVAL, MAX_SWEEP_INTERVAL);
        let now = Instant::now();
        let mut next_heartbeat = now + self.config.heartbeat_interval;
        let mut next_sweep = now + sweep_every;
        let mut timer = smol::Timer::at(next_heartbeat.min(next_sweep));
        loop {
            let wake = async { commands.recv().await.map_or(Wake::Closed, Wake::Command) }
                .or(async {
                    (&mut timer).await;
                    Wake::Timer
                })
                .await;
            match wake {
                Wake::Command(Command::Shutdown) | Wake::Closed => break,
                Wake::Command(command) => {
                    // With more commands waiting, queue for the writers so
                    // that they send several frames per syscall.
                    self.write_through = commands.is_empty();
                    let from_engine = matches!(command, Command::Engine(_));
                    self.handle(command);
                    if from_engine {
                        // An engine on another thread can keep the queue
                        // full: let the writers drain what it brought.
                        futures_lite::future::yield_now().await;
                    }
                }
                Wake::Timer => self.write_through = true,
            }
            // Checked after every command too: a hub that is never idle must
            // still beat and sweep on time.
            let now = Instant::now();
            if now >= next_heartbeat || now >= next_sweep {
                if now >= next_heartbeat {
                    self.heartbeat();
                    next_heartbeat = now + self.config.heartbeat_interval;
                }
                if now >= next_sweep {
                    self.sweep(now);
                    next_sweep = now + sweep_every;
                }
                timer.set_at(next_heartbeat.min(next_sweep));
            }
        }
        // An engine thread blocked on a full queue is let go first.
        drop(commands);
        self.drain();
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::Join(request, reply) if self.clustered() => {
                self.cluster_join(request, reply);
            }
            Command::Join(request, reply) => {
                let outcome = self.join(*request);
                // The upgrading task may have given up (its socket died); the
                // connection it would have been is then removed by its Leave.
                let _ = reply.try_send(outcome);
            }
            Command::Rejected(code) => self.metrics.rejected(code.as_str()),
            Command::RejectedBy(code) => self.metrics.rejected(&code),
            Command::Message {
                conn,
                message,
                bytes,
                dropped,
            } => {
                if dropped > 0 {
                    self.on_dropped(conn, dropped, false);
                }
                self.on_message(conn, *message, bytes);
            }
            Command::Alive(conn) => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.last_seen = Instant::now();
                }
            }
            Command::Dropped {
                conn,
                count,
                notify,
            } => self.on_dropped(conn, count, notify),
            Command::Leave {
                conn,
                reason,
                close_code,
            } => {
                self.remove(conn, reason, close_code);
            }
            Command::Publish(request) if !self.engine.in_place() => {
                let request = *request;
                let origin = durable::Origin::Api(request.reply);
                self.publish_later(
                    request.publish,
                    request.correlation_id,
                    None,
                    request.started,
                    origin,
                );
            }
            Command::Publish(request) => {
                let request = *request;
                let outcome = self.publish(
                    request.publish,
                    request.correlation_id,
                    None,
                    request.started,
                );
                let _ = request.reply.try_send(outcome);
            }
            Command::SetHealth(request) => {
                let request = *request;
                self.cluster_health(&request.component, request.status, request.detail.clone());
                let state = self.set_health(
                    request.component,
                    request.status,
                    request.detail,
                    &request.correlation_id,
                );
                let _ = request.reply.try_send(state);
            }
            Command::Health(reply) => {
                let _ = reply.try_send(self.health_report());
            }
            Command::Connections(user, reply) => {
                let _ = reply.try_send(self.connections(user.as_deref()));
            }
            Command::Connection(id, reply) => {
                let _ = reply.try_send(self.conns.get(&id).map(|c| c.info(&self.node)));
            }
            Command::Disconnect(id, reply) if self.clustered() && !self.conns.contains_key(&id) => {
                self.cluster_disconnect(id, reply);
            }
            Command::Disconnect(id, reply) => {
                let found = self.conns.contains_key(&id);
                if found {
                    self.close(id, CloseCode::Admin);
                }
                let _ = reply.try_send(found);
            }
            Command::Rooms(reply) if self.clustered() => self.cluster_room_list(reply),
            Command::Room(name, reply) if self.clustered() => self.cluster_room(name, reply),
            Command::Rooms(reply) => {
                let _ = reply.try_send(self.room_list());
            }
            Command::Room(name, reply) => {
                let _ = reply.try_send(self.room_info(&name));
            }
            Command::Metrics(reply) => {
                let _ = reply.try_send(self.render_metrics());
            }
            Command::Engine(answers) => self.on_engine(answers),
            Command::HookDone {
                conn,
                seq,
                pending,
                called,
            } => self.on_hook_done(conn, seq, *pending, called),
            Command::HookObserved(called) => self.on_hook_observed(called),
            Command::Shutdown => unreachable!("handled by the run loop"),
        }
    }

    fn join(&mut self, request: JoinRequest) -> Result<Joined, Refusal> {
        let refusal = self.admit(&request);
        if let Err(refusal) = &refusal {
            self.metrics.rejected(refusal.error.code.as_str());
            return Err(refusal.clone());
        }
        let now = Instant::now();
        let id = request.id.unwrap_or_else(ConnId::random);
        let ip = request.peer.ip();
        let user = request.claims.as_ref().map(|c| c.sub.clone());
        let mut conn = Conn {
            id,
            outlet: request.outlet,
            encoding: request.encoding,
            claims: request.claims,
            peer: request.peer,
            origin: request.origin,
            user_agent: request.user_agent,
            connected_at: Timestamp::now(),
            connected: now,
            last_seen: now,
            rooms: RoomSet::default(),
            messages_in: 0,
            bytes_in: 0,
            dropped: 0,
            hooks: hooks::HookQueue::default(),
            expires_at: request.expires_at,
        };
        let welcome = json!({
            "connection_id": id,
            "epoch": self.epoch,
            "node": &*self.node,
            "protocol": conn.encoding.protocol(),
            "user": user,
            "rooms": request.rooms,
            "heartbeat_interval_ms": self.config.heartbeat_interval.as_millis() as u64,
            "heartbeat_timeout_ms": self.config.heartbeat_timeout.as_millis() as u64,
            "max_message_bytes": self.config.max_message_bytes,
        });
        let ts = timestamp_now();
        let env = Envelope::message("welcome", welcome, Some(&request.correlation_id), &ts, None);
        // A stream's resume is judged on the rooms as they were before it
        // joined them.
        let resume = request
            .since
            .as_ref()
            .map(|since| self.stream_resume(&request.rooms, since));
        for room in &request.rooms {
            if !resume.as_ref().is_some_and(|r| r.defers(room)) {
                membership::enter(&mut self.rooms, &mut conn, room);
            }
        }
        let welcome = match conn.outlet.cursor() {
            Some(cursor) => {
                // The server's epoch is the one it started with; a
                // cluster's may have changed since (PROTOCOL.md section 9).
                cursor.set_epoch(&self.epoch);
                self.stream_welcome(cursor, &request.rooms, resume.as_ref(), &env)
            }
            None => encode(&env, conn.encoding),
        };
        conn.outlet.count_sent(welcome.len());
        *self.per_ip.entry(ip).or_default() += 1;
        if let Some(user) = &user {
            self.users.entry(user.clone()).or_default().insert(id);
        }
        self.metrics.connections_accepted += 1;
        tracing::info!(
            connection_id = as_json(id),
            correlation_id = as_json(&request.correlation_id),
            ip = as_json(ip),
            port = as_json(request.peer.port()),
            user = opt_json(user.as_deref()),
            protocol = as_json(conn.encoding.protocol()),
            rooms = as_json(&request.rooms),
            "connection opened"
        );
        self.conns.insert(id, Box::new(conn));
        if let Some(mut resume) = resume {
            let deferred = std::mem::take(&mut resume.deferred);
            self.stream_catch_up(id, resume, &request.correlation_id);
            if !deferred.is_empty() {
                self.defer_stream(id, deferred, &request.correlation_id);
            }
        }
        Ok(Joined {
            id,
            task: self.tasks.clone(),
            welcome,
        })
    }

    /// Forgets a connection (once; later calls do nothing) and counts why it ended.
    fn remove(
        &mut self,
        id: ConnId,
        reason: &'static str,
        close_code: Option<u16>,
    ) -> Option<Box<Conn>> {
        let conn = self.conns.remove(&id)?;
        // A stream has no close code (PROTOCOL.md section 12): the reason
        // says how it ended, the disconnect hook gets a null `close_code`.
        let close_code = close_code.filter(|_| conn.encoding != Encoding::Sse);
        for name in conn.rooms.iter() {
            membership::exit(&mut self.rooms, id, name);
        }
        if self.clustered() {
            let rooms: Vec<String> = conn.rooms.iter().map(|r| r.to_string()).collect();
            self.cluster_left(id, &rooms);
        }
        let ip = conn.peer.ip();
        if let Some(n) = self.per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
        }
        if let Some(user) = conn.user()
            && let Some(ids) = self.users.get_mut(user)
        {
            ids.remove(&id);
            if ids.is_empty() {
                self.users.remove(user);
            }
        }
        let lasted = conn.connected.elapsed().as_secs_f64();
        self.metrics.disconnected(reason, lasted);
        self.metrics.messages_out += conn.outlet.sent().0;
        tracing::info!(
            connection_id = as_json(id),
            reason = as_json(reason),
            close_code = opt_json(close_code),
            user = opt_json(conn.user()),
            duration_s = as_json((lasted * 1000.0).round() / 1000.0),
            messages_in = as_json(conn.messages_in),
            messages_out = as_json(conn.outlet.sent().0),
            "connection closed"
        );
        let user = conn.user().map(str::to_string);
        self.cluster_gone(id, user.clone());
        self.disconnect_hook(
            id,
            user,
            reason,
            close_code,
            (lasted * 1000.0).round() / 1000.0,
        );
        Some(conn)
    }

    /// Forgets a connection and asks its writer to close with `code`.
    fn close(&mut self, id: ConnId, code: CloseCode) {
        if let Some(conn) = self.remove(id, code.disconnect_reason(), Some(code.code())) {
            conn.outlet.close(code);
        }
    }

    /// Encodes a non-event message for one connection and queues it.
    fn send<P: Serialize>(
        &mut self,
        id: ConnId,
        kind: &str,
        payload: P,
        correlation_id: Option<&str>,
        reference: Option<&str>,
    ) {
        let limit = self.config.send_queue;
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let ts = timestamp_now();
        let env = Envelope::message(kind, payload, correlation_id, &ts, reference);
        if !conn.outlet.push(
            Outbound::Message(encode(&env, conn.encoding)),
            limit,
            self.write_through,
        ) {
            self.close(id, CloseCode::SlowConsumer);
        }
    }

    /// Sends an `error` reply carrying `details` beside `code` and `message`.
    fn send_error(
        &mut self,
        id: ConnId,
        error: &ProtocolError,
        details: serde_json::Value,
        correlation_id: &str,
        reference: Option<&str>,
    ) {
        self.send_error_code(
            id,
            error.code.as_str(),
            &error.message,
            details,
            correlation_id,
            reference,
        );
    }

    /// [`Hub::send_error`] with any code, such as an app's own (section 10).
    fn send_error_code(
        &mut self,
        id: ConnId,
        code: &str,
        message: &str,
        details: serde_json::Value,
        correlation_id: &str,
        reference: Option<&str>,
    ) {
        let mut payload = json!({"code": code, "message": message});
        if let (Some(payload), serde_json::Value::Object(extra)) =
            (payload.as_object_mut(), details)
        {
            payload.extend(extra);
        }
        tracing::info!(
            connection_id = as_json(id),
            correlation_id = as_json(correlation_id),
            code = as_json(code),
            message = as_json(message),
            "error reply"
        );
        self.send(id, "error", payload, Some(correlation_id), reference);
    }

    /// Queues a Ping and a `heartbeat` to every WebSocket, and the
    /// `: heartbeat` comment to every SSE stream (which has no Ping).
    fn heartbeat(&mut self) {
        let ts = timestamp_now();
        let env = Envelope::message("heartbeat", json!({}), None, &ts, None);
        let json = Outbound::Message(encode(&env, Encoding::Json));
        let mut msgpack = None;
        let comment = Outbound::Message(sse::heartbeat());
        let limit = self.config.send_queue;
        let write_through = self.write_through;
        let mut slow = Vec::new();
        for conn in self.conns.values_mut() {
            let beat = match conn.encoding {
                Encoding::Json => json.clone(),
                Encoding::MsgPack => msgpack
                    .get_or_insert_with(|| Outbound::Message(encode(&env, Encoding::MsgPack)))
                    .clone(),
                Encoding::Sse => comment.clone(),
            };
            let ping = conn.encoding == Encoding::Sse
                || conn.outlet.push(Outbound::Ping, limit, write_through);
            if !(ping && conn.outlet.push(beat, limit, write_through)) {
                slow.push(conn.id);
            }
        }
        for id in slow {
            self.close(id, CloseCode::SlowConsumer);
        }
    }

    /// Closes silent connections (4000) and expired tokens (4001), and
    /// forgets old idempotency keys and events older than `history_ttl`.
    /// An SSE stream sends nothing, so only its writes tell whether its
    /// peer is there (the writer's stall timeout); its expired token (or
    /// connect hook's `expires_at`) is told with an `error` before it ends.
    fn sweep(&mut self, now: Instant) {
        let timeout = self.config.heartbeat_timeout;
        let wall = unix_now();
        let mut due = Vec::new();
        for conn in self.conns.values() {
            let stream = conn.encoding == Encoding::Sse;
            if !stream && now.duration_since(conn.last_seen) > timeout {
                due.push((conn.id, CloseCode::HeartbeatTimeout, stream));
            } else if conn.claims.as_ref().is_some_and(|c| c.exp <= wall)
                || conn.expires_at.is_some_and(|at| at <= wall)
            {
                due.push((conn.id, CloseCode::TokenExpired, stream));
            }
        }
        for (id, code, stream) in due {
            if stream {
                self.expire_stream(id);
            } else {
                self.close(id, code);
            }
        }
        self.idempotency.prune(now);
        let ttl = self.config.history_ttl;
        if !ttl.is_zero()
            && let Some(cutoff) = now.checked_sub(ttl)
        {
            self.history.expire(&mut self.rooms, cutoff);
        }
    }

    /// Refuses new connections and closes every open one with 1001.
    fn drain(&mut self) {
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        tracing::info!(connections = as_json(ids.len()), "hub draining");
        for id in ids {
            self.close(id, CloseCode::GoingAway);
        }
    }
}
