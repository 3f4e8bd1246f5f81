//! The hub's side of a cluster engine (Redis, PROTOCOL.md section 9).
//!
//! In a cluster the engine, not the hub, gives room events their seq, and
//! every event reaches this hub's connections as an engine answer
//! ([`Answer::Event`]), whichever hub published it: the publishing hub
//! answers the publisher when Redis has sequenced the event and delivers
//! it like any other hub, when it comes back. A room exists in the hub's
//! table only while it is *watched*: the engine is subscribed to its
//! channel and has told the hub the room's last seq, so that a `welcome`
//! or a `subscribed` is sent only once every later event will arrive. A
//! connection waiting for that is a [`Waiter`]; it pins the topics it
//! waits for, as members do.

mod admin;
mod publish;

use std::collections::HashMap;
use std::time::Instant;

use async_channel::Sender;
use serde_json::json;

use super::durable::Origin;
use super::room::{EventRecord, Room};
use super::{ConnId, Hub, JoinRequest, Joined, PresenceMember, Refusal, RoomInfo, Status};
use crate::engine::{Answer, Ask, ClusterRoom, Progress, Sequence, Sequenced, Topic};
use crate::log::{as_json, opt_json};
use crate::protocol::{
    CloseCode, Encoded, ErrorCode, ProtocolError, Publish, Published, Subscribe, Target, new_uuid,
    opcode,
};

/// The seq written into a room event before Redis gives it its own: the
/// digits are cut out and the script puts the real seq in their place.
const SEQ_PLACEHOLDER: u64 = u64::MAX;

/// A topic's watch on this hub.
#[derive(Debug, Default)]
struct Watch {
    /// Whether the engine confirmed it (a room is then in the hub's table).
    ready: bool,
    /// Whether the engine was asked (an `Unwatch` is owed).
    asked: bool,
    /// Whether an answer to the engine's last `Watch` is awaited: a watch
    /// that failed is asked again by the next waiter.
    answering: bool,
    /// Waiters that need it, besides the members.
    waiting: usize,
}

/// A connection (or an upgrade) waiting for topics to be watched.
#[derive(Debug)]
enum Waiter {
    Join {
        request: Box<JoinRequest>,
        reply: Sender<Result<Joined, Refusal>>,
    },
    Subscribe {
        conn: ConnId,
        sub: Subscribe,
        correlation_id: String,
        reference: Option<String>,
    },
}

#[derive(Debug)]
struct Waiting {
    waiter: Waiter,
    topics: Vec<Topic>,
    /// The topics whose watch it still waits for.
    pending: Vec<Topic>,
    failed: bool,
}

/// A publish Redis has not answered yet.
#[derive(Debug)]
struct InFlight {
    origin: Origin,
    id: String,
    correlation_id: String,
    kind: String,
    topic: Topic,
    except: Option<ConnId>,
    key: Option<String>,
    started: Instant,
}

/// A `presence` waiting for the cluster's answer.
#[derive(Debug)]
struct PresenceAsk {
    conn: ConnId,
    room: String,
    correlation_id: String,
    reference: Option<String>,
}

/// `GET /api/rooms[/{room}]` waiting for the cluster's answer.
#[derive(Debug)]
enum RoomsAsk {
    All(Sender<Vec<RoomInfo>>),
    One(Sender<Option<RoomInfo>>),
}

/// The hub's cluster state; inert without a cluster engine.
#[derive(Debug, Default)]
pub(super) struct Cluster {
    /// Whether the engine last said it can reach Redis.
    down: bool,
    watches: HashMap<Topic, Watch>,
    waiting: HashMap<u64, Waiting>,
    publishes: HashMap<u64, InFlight>,
    /// Idempotency keys whose first publish is in flight, with the
    /// repeats that wait for its reply.
    keys: HashMap<String, Vec<Origin>>,
    presence: HashMap<u64, PresenceAsk>,
    disconnects: HashMap<u64, Sender<bool>>,
    rooms: HashMap<u64, RoomsAsk>,
    next_token: u64,
}

impl Cluster {
    fn token(&mut self) -> u64 {
        self.next_token += 1;
        self.next_token
    }

    /// Records what the engine says of Redis.
    pub fn set_up(&mut self, up: bool) {
        self.down = !up;
    }
}

fn unavailable(why: &str) -> ProtocolError {
    ProtocolError::new(
        ErrorCode::EngineUnavailable,
        format!("Redis cannot take this now; try again ({why})"),
    )
}

impl Hub {
    /// Whether the hub is one of a cluster's.
    pub(super) fn clustered(&self) -> bool {
        self.engine.is_cluster()
    }

    /// An upgrade in a cluster: admitted once its rooms and its user are
    /// watched (503 `engine_unavailable` with rooms while Redis is gone).
    pub(super) fn cluster_join(
        &mut self,
        request: Box<JoinRequest>,
        reply: Sender<Result<Joined, Refusal>>,
    ) {
        if self.cluster.down && !request.rooms.is_empty() {
            let refusal = Refusal::new(
                503,
                ErrorCode::EngineUnavailable,
                "Redis cannot be reached; try again",
            );
            self.metrics.rejected(refusal.error.code.as_str());
            let _ = reply.try_send(Err(refusal));
            return;
        }
        let mut topics: Vec<Topic> = request
            .rooms
            .iter()
            .map(|r| Topic::Room(r.clone()))
            .collect();
        if let Some(claims) = &request.claims {
            topics.push(Topic::User(claims.sub.clone()));
        }
        self.wait_for(topics, Waiter::Join { request, reply });
    }

    /// A `subscribe` in a cluster: `Some` to go on now, `None` when it was
    /// put aside until its rooms are watched.
    pub(super) fn cluster_gate(
        &mut self,
        conn: ConnId,
        sub: Subscribe,
        correlation_id: &str,
        reference: Option<&str>,
    ) -> Result<Option<Subscribe>, ProtocolError> {
        if self.cluster.down {
            return Err(unavailable("Redis cannot be reached"));
        }
        if sub
            .rooms
            .iter()
            .all(|r| self.rooms.contains_key(r.as_str()))
        {
            return Ok(Some(sub));
        }
        // A watch is ready exactly while its room is in the table; should
        // the two ever disagree, the room is watched again rather than
        // waited for forever.
        for room in &sub.rooms {
            if !self.rooms.contains_key(room.as_str())
                && let Some(watch) = self.cluster.watches.get_mut(&Topic::Room(room.clone()))
                && watch.ready
            {
                watch.ready = false;
                watch.answering = false;
            }
        }
        let topics = sub.rooms.iter().map(|r| Topic::Room(r.clone())).collect();
        let waiter = Waiter::Subscribe {
            conn,
            sub,
            correlation_id: correlation_id.to_string(),
            reference: reference.map(str::to_string),
        };
        self.wait_for(topics, waiter);
        Ok(None)
    }

    /// Puts `waiter` aside until every one of `topics` is watched, asking
    /// the engine for those not watched yet; runs it at once if none is
    /// missing.
    fn wait_for(&mut self, mut topics: Vec<Topic>, waiter: Waiter) {
        // A room named twice is waited for once.
        let mut seen = std::collections::HashSet::new();
        topics.retain(|t| seen.insert(t.clone()));
        let token = self.cluster.token();
        let mut pending = Vec::new();
        for topic in &topics {
            let watch = self.cluster.watches.entry(topic.clone()).or_default();
            watch.waiting += 1;
            if watch.ready {
                continue;
            }
            pending.push(topic.clone());
            if !watch.answering {
                // A pending watch is asked once, by the first to need it.
                watch.asked = true;
                watch.answering = true;
                if let Progress::Refused(_) = self.engine.ask(Ask::Watch(topic.clone())) {
                    self.cluster.down = true;
                }
            }
        }
        let waiting = Waiting {
            waiter,
            topics,
            pending,
            failed: false,
        };
        if waiting.pending.is_empty() {
            self.run_waiter(waiting);
        } else {
            self.cluster.waiting.insert(token, waiting);
        }
    }

    /// Whether this hub's connections already need `topic` (so it is
    /// watched or being watched).
    fn topic_has_locals(&self, topic: &Topic) -> bool {
        match topic {
            Topic::Room(room) => self.rooms.get(room.as_str()).is_some_and(|r| r.len() > 0),
            Topic::User(user) => self.users.contains_key(user),
            Topic::Everyone => true,
        }
    }

    /// The engine has watched (or could not watch) `topic`.
    fn on_watching(&mut self, topic: Topic, result: Result<(u64, u64), String>) {
        let Some(watch) = self.cluster.watches.get_mut(&topic) else {
            // Unwatched meanwhile: the engine is told already.
            return;
        };
        let ok = result.is_ok();
        watch.answering = false;
        if !watch.ready {
            watch.ready = ok;
            if let (Topic::Room(name), Ok((last, oldest))) = (&topic, &result)
                && !self.rooms.contains_key(name.as_str())
            {
                self.rooms
                    .insert(name.as_str().into(), Room::watched(*last, *oldest));
            }
        }
        let done: Vec<u64> = self
            .cluster
            .waiting
            .iter_mut()
            .filter_map(|(token, w)| {
                // Only the waiters that wait for this answer count it.
                let at = w.pending.iter().position(|t| *t == topic)?;
                w.pending.swap_remove(at);
                w.failed |= !ok;
                w.pending.is_empty().then_some(*token)
            })
            .collect();
        for token in done {
            if let Some(waiting) = self.cluster.waiting.remove(&token) {
                self.run_waiter(waiting);
            }
        }
        if !ok {
            self.release(&topic);
        }
    }

    /// Runs a waiter whose topics are watched (or refuses it), then lets
    /// go of its pins.
    fn run_waiter(&mut self, waiting: Waiting) {
        let Waiting {
            waiter,
            topics,
            failed,
            ..
        } = waiting;
        match waiter {
            Waiter::Join { request, reply } => {
                let outcome = if failed {
                    let refusal = Refusal::new(
                        503,
                        ErrorCode::EngineUnavailable,
                        "Redis cannot be reached; try again",
                    );
                    self.metrics.rejected(refusal.error.code.as_str());
                    Err(refusal)
                } else {
                    let user = request.claims.as_ref().map(|c| c.sub.clone());
                    let rooms = request.rooms.clone();
                    let outcome = self.join(*request);
                    if let Ok(joined) = &outcome {
                        let conn = joined.id.to_string();
                        let _ = self.engine.ask(Ask::Connected {
                            conn: conn.clone(),
                            user: user.clone(),
                        });
                        for room in rooms {
                            let _ = self.engine.ask(Ask::Joined {
                                room,
                                conn: conn.clone(),
                                user: user.clone(),
                            });
                        }
                    }
                    outcome
                };
                // The upgrading task may have given up; its Leave cleans up.
                let _ = reply.try_send(outcome);
            }
            Waiter::Subscribe {
                conn,
                sub,
                correlation_id,
                reference,
            } => {
                if failed {
                    let error = unavailable("Redis cannot be reached");
                    self.send_error(
                        conn,
                        &error,
                        json!({}),
                        &correlation_id,
                        reference.as_deref(),
                    );
                } else if self.conns.contains_key(&conn) {
                    let loaded = super::durable::Loaded::new();
                    let outcome = self.subscribe_with(
                        conn,
                        sub,
                        &correlation_id,
                        reference.as_deref(),
                        false,
                        loaded,
                    );
                    if let Err((error, details)) = outcome {
                        self.send_error(
                            conn,
                            &error,
                            details,
                            &correlation_id,
                            reference.as_deref(),
                        );
                    }
                }
            }
        }
        for topic in topics {
            if let Some(watch) = self.cluster.watches.get_mut(&topic) {
                watch.waiting = watch.waiting.saturating_sub(1);
            }
            self.release(&topic);
        }
    }

    /// Stops watching `topic` when neither a member nor a waiter needs it:
    /// a room leaves the table (its seq is Redis's to remember).
    pub(super) fn release(&mut self, topic: &Topic) {
        if !self.clustered() || matches!(topic, Topic::Everyone) {
            return;
        }
        let waiting = self.cluster.watches.get(topic).map_or(0, |w| w.waiting);
        if waiting > 0 || self.topic_has_locals(topic) {
            return;
        }
        if let Topic::Room(room) = topic
            && self.durable.waits_for(room)
        {
            return;
        }
        let Some(watch) = self.cluster.watches.remove(topic) else {
            return;
        };
        if let Topic::Room(name) = topic {
            self.history.forget_room(&mut self.rooms, name);
            self.rooms.remove(name.as_str());
        }
        if watch.asked {
            let _ = self.engine.ask(Ask::Unwatch(topic.clone()));
        }
    }

    /// Tells the engine a connection joined `rooms`.
    pub(super) fn cluster_joined(&mut self, conn: ConnId, rooms: &[String]) {
        if !self.clustered() || rooms.is_empty() {
            return;
        }
        let user = self
            .conns
            .get(&conn)
            .and_then(|c| c.user().map(str::to_string));
        for room in rooms {
            let _ = self.engine.ask(Ask::Joined {
                room: room.clone(),
                conn: conn.to_string(),
                user: user.clone(),
            });
        }
    }

    /// Tells the engine a connection left `rooms`, and lets go of rooms
    /// no one here needs any more.
    pub(super) fn cluster_left(&mut self, conn: ConnId, rooms: &[String]) {
        if !self.clustered() {
            return;
        }
        for room in rooms {
            let _ = self.engine.ask(Ask::Left {
                room: room.clone(),
                conn: conn.to_string(),
            });
            self.release(&Topic::Room(room.clone()));
        }
    }

    /// Tells the engine a connection is gone (after [`Hub::cluster_left`]).
    pub(super) fn cluster_gone(&mut self, conn: ConnId, user: Option<String>) {
        if !self.clustered() {
            return;
        }
        let _ = self.engine.ask(Ask::Disconnected {
            conn: conn.to_string(),
            user: user.clone(),
        });
        if let Some(user) = user {
            self.release(&Topic::User(user));
        }
    }

    /// Takes a cluster engine's answer (the others are the store's).
    pub(super) fn on_cluster(&mut self, answer: Answer) {
        match answer {
            Answer::Sequenced { token, result } => {
                self.on_sequenced(token, result.map_err(|e| e.message));
            }
            Answer::Watching { topic, result } => {
                self.on_watching(topic, result.map_err(|e| e.message));
            }
            Answer::Event {
                topic,
                seq,
                except,
                json,
            } => self.on_event(topic, seq, except, json),
            Answer::Missed { room, oldest_seq } => self.on_missed(&room, oldest_seq),
            Answer::Epoch { epoch } => self.on_epoch(epoch),
            Answer::Presence { token, result } => {
                let Some(ask) = self.cluster.presence.remove(&token) else {
                    return;
                };
                match result {
                    Ok(members) => {
                        let members: Vec<PresenceMember> = members
                            .into_iter()
                            .map(|(connection_id, user)| PresenceMember {
                                connection_id,
                                user,
                            })
                            .collect();
                        self.send(
                            ask.conn,
                            "presence",
                            json!({"room": ask.room, "members": members}),
                            Some(&ask.correlation_id),
                            ask.reference.as_deref(),
                        );
                    }
                    Err(e) => self.send_error(
                        ask.conn,
                        &unavailable(&e.message),
                        json!({}),
                        &ask.correlation_id,
                        ask.reference.as_deref(),
                    ),
                }
            }
            Answer::Disconnected { token, result } => {
                if let Some(reply) = self.cluster.disconnects.remove(&token) {
                    let _ = reply.try_send(result.unwrap_or(false));
                }
            }
            Answer::Rooms { token, result } => self.on_rooms(token, result.map_err(|e| e.message)),
            Answer::Kick { conn } => {
                if let Some(id) = ConnId::parse(&conn)
                    && self.conns.contains_key(&id)
                {
                    self.close(id, CloseCode::Admin);
                }
            }
            Answer::RemoteHealth {
                component,
                status,
                detail,
            } => {
                let status = match status.as_str() {
                    "ok" => Status::Ok,
                    "degraded" => Status::Degraded,
                    _ => Status::Down,
                };
                // Only what `PUT /api/health/{component}` could have set: a
                // name from another writer of Redis is not a component.
                if component != "engine" && crate::protocol::is_valid_room(&component) {
                    self.set_health(component, status, detail, &new_uuid());
                }
            }
            // The store's answers are taken in `durable`.
            _ => {}
        }
    }
}
