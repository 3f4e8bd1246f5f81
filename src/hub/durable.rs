//! Publishing and resuming through an engine that answers later (the
//! store): a publish is two steps, append asked and append done, and the
//! event is answered and fanned out only at the second (PROTOCOL.md
//! section 9: in the store before the `202`, `published`, the API's return
//! and any delivery). A resume that needs events only the store still
//! holds waits for them the same way.
//!
//! With the memory engine none of this runs: [`Hub::publish`] delivers in
//! place, as it always did.

use std::collections::HashMap;
use std::time::Instant;

use async_channel::Sender;
use serde_json::json;

use super::publish::{Fresh, Prepared};
use super::room::EventRecord;
use super::{ConnId, Hub, Status};
use crate::engine::{Answer, Append, EngineError, Progress, StoredEvent, unix_ms};
use crate::log::{as_json, opt_json};
use crate::protocol::{
    Encoded, ErrorCode, ProtocolError, Publish, Published, Subscribe, new_uuid, opcode,
};

/// Who waits for a publish's answer.
#[derive(Debug)]
pub(super) enum Origin {
    /// HTTP, stdin or the embedding API: the reply channel.
    Api(Sender<Result<Published, ProtocolError>>),
    /// A client's `publish`: `published` or `error` goes back to it.
    Client {
        conn: ConnId,
        correlation_id: String,
        reference: Option<String>,
    },
}

/// A publish whose append the engine has not answered yet.
#[derive(Debug)]
struct InFlight {
    fresh: Fresh,
    origin: Origin,
}

/// A resume waiting for rooms' events from the store.
#[derive(Debug)]
struct Deferred {
    conn: ConnId,
    waiter: Waiter,
    correlation_id: String,
    waiting: usize,
    loaded: HashMap<String, Vec<EventRecord>>,
    failed: Option<EngineError>,
}

/// What waits for the read.
#[derive(Debug)]
enum Waiter {
    /// A `subscribe` with `since`, run again once the reads are in.
    Subscribe {
        sub: Subscribe,
        reference: Option<String>,
    },
    /// An SSE stream that joins these rooms, each after its seq.
    Stream { rooms: Vec<(String, u64)> },
}

impl Waiter {
    /// The rooms it waits for.
    fn rooms(&self) -> Vec<String> {
        match self {
            Self::Subscribe { sub, .. } => sub.rooms.clone(),
            Self::Stream { rooms } => rooms.iter().map(|(room, _)| room.clone()).collect(),
        }
    }
}

/// The hub's side of an engine that answers later.
#[derive(Debug, Default)]
pub(super) struct Durable {
    in_flight: HashMap<u64, InFlight>,
    /// Idempotency keys whose first publish is in flight, with the
    /// repeats that wait for its reply.
    keys: HashMap<String, Vec<Origin>>,
    deferred: HashMap<u64, Deferred>,
    /// A read's token to its subscribe's.
    reads: HashMap<u64, u64>,
    next_token: u64,
}

impl Durable {
    fn token(&mut self) -> u64 {
        self.next_token += 1;
        self.next_token
    }

    /// Whether a subscribe put aside for reads names `room` (a cluster
    /// keeps watching it meanwhile).
    pub(super) fn waits_for(&self, room: &str) -> bool {
        self.deferred
            .values()
            .any(|d| d.waiter.rooms().iter().any(|r| r == room))
    }
}

/// Rooms' events read from the store for a resume, by room.
pub(super) type Loaded = HashMap<String, Vec<EventRecord>>;

fn unavailable(error: &EngineError) -> ProtocolError {
    ProtocolError::new(
        ErrorCode::EngineUnavailable,
        format!("the store cannot take this now; try again ({error})"),
    )
}

impl Hub {
    /// Publishes through the engine: checked and numbered now, answered
    /// and delivered once the engine has stored it.
    pub(super) fn publish_later(
        &mut self,
        publish: Publish,
        correlation_id: String,
        except: Option<ConnId>,
        started: Instant,
        origin: Origin,
    ) {
        if self.clustered() {
            return self.publish_cluster(publish, correlation_id, except, started, origin);
        }
        if let Some(key) = &publish.idempotency_key
            && let Some(waiting) = self.durable.keys.get_mut(key)
        {
            waiting.push(origin);
            return;
        }
        let fresh = match self.prepare(publish, correlation_id, except, started, true) {
            Err(e) => return self.answer(origin, Err(e)),
            Ok(Prepared::Repeat(first)) => return self.answer(origin, Ok(first)),
            Ok(Prepared::Fresh(fresh)) => fresh,
        };
        let key = fresh.publish.idempotency_key.clone();
        if fresh.seq.is_none() && key.is_none() {
            // Nothing of it is kept: no seq to protect, no key to remember.
            let published = self.deliver(fresh);
            return self.answer(origin, Ok(published));
        }
        let token = self.durable.token();
        let room = fresh
            .publish
            .room()
            .zip(fresh.seq)
            .map(|(name, seq)| (std::sync::Arc::from(name), seq));
        let reply = key.as_ref().map(|k| {
            // Kept with the key for repeats after a restart; the recipients
            // are the room's members now, as the event is sequenced.
            let recipients = fresh
                .publish
                .room()
                .and_then(|r| self.rooms.get(r))
                .map_or(0, |r| {
                    r.members()
                        .iter()
                        .filter(|m| Some(m.id) != fresh.except)
                        .count()
                });
            (
                k.clone(),
                Published {
                    id: fresh.id.clone(),
                    seq: fresh.seq,
                    recipients,
                    correlation_id: fresh.correlation_id.clone(),
                },
            )
        });
        let append = Append {
            token,
            room,
            json: fresh
                .json
                .wire()
                .slice(fresh.json.wire().len() - fresh.json.len()..),
            at_ms: unix_ms(),
            key: reply,
        };
        match self.engine.append(append) {
            Progress::Refused(error) => self.appended(InFlight { fresh, origin }, Err(error)),
            Progress::Done => self.appended(InFlight { fresh, origin }, Ok(())),
            Progress::Queued => {
                if let Some(key) = key {
                    self.durable.keys.insert(key, Vec::new());
                }
                self.durable
                    .in_flight
                    .insert(token, InFlight { fresh, origin });
            }
        }
    }

    /// Takes a batch of the engine's answers, in the order it gave them.
    pub(super) fn on_engine(&mut self, answers: Vec<Answer>) {
        for answer in answers {
            match answer {
                Answer::Appended { token, result } => {
                    if let Some(in_flight) = self.durable.in_flight.remove(&token) {
                        self.appended(in_flight, result);
                    }
                }
                Answer::Read {
                    token,
                    room,
                    result,
                } => self.on_read(token, room, result),
                Answer::Expired { rooms } => {
                    for (name, oldest) in rooms {
                        if let Some(room) = self.rooms.get_mut(name.as_str()) {
                            room.expired(oldest);
                            self.rooms.forget_if_idle(&name);
                        }
                    }
                }
                Answer::Health { up, detail } => {
                    self.cluster.set_up(up);
                    if let Some(engine) = &mut self.metrics.engine {
                        engine.up = up;
                    }
                    let status = if up { Status::Ok } else { Status::Down };
                    self.set_health("engine".into(), status, detail, &new_uuid());
                }
                Answer::Sequenced { .. }
                | Answer::Watching { .. }
                | Answer::Event { .. }
                | Answer::Missed { .. }
                | Answer::Epoch { .. }
                | Answer::Presence { .. }
                | Answer::Disconnected { .. }
                | Answer::Kick { .. }
                | Answer::Rooms { .. }
                | Answer::RemoteHealth { .. } => self.on_cluster(answer),
                Answer::Timing { op, seconds } => {
                    if let Some(histogram) = self
                        .metrics
                        .engine
                        .as_mut()
                        .and_then(|e| e.seconds.get_mut(op))
                    {
                        histogram.observe(seconds);
                    }
                }
            }
        }
    }

    /// The engine has stored (or refused) a publish: deliver and answer it.
    fn appended(&mut self, in_flight: InFlight, result: Result<(), EngineError>) {
        let InFlight { fresh, origin } = in_flight;
        let key = fresh.publish.idempotency_key.clone();
        let room = fresh.publish.room().map(str::to_string);
        let outcome = match result {
            Ok(()) => {
                if let (Some(name), Some(seq)) = (&room, fresh.seq)
                    && let Some(r) = self.rooms.get_mut(name.as_str())
                {
                    r.stored(seq, self.config.history_size);
                }
                Ok(self.deliver(fresh))
            }
            Err(error) => {
                if let (Some(name), Some(seq)) = (&room, fresh.seq)
                    && let Some(r) = self.rooms.get_mut(name.as_str())
                {
                    r.refused(seq, fresh.generation);
                    self.rooms.forget_if_idle(name);
                }
                tracing::warn!(
                    correlation_id = as_json(&fresh.correlation_id),
                    room = opt_json(room.as_deref()),
                    seq = opt_json(fresh.seq),
                    error = as_json(&error.message),
                    "publish refused: the store did not take it"
                );
                Err(unavailable(&error))
            }
        };
        if let Some(waiting) = key.and_then(|k| self.durable.keys.remove(&k)) {
            for repeat in waiting {
                self.answer(repeat, outcome.clone());
            }
        }
        self.answer(origin, outcome);
    }

    /// Gives a publish's outcome to whoever waits for it.
    pub(super) fn answer(&mut self, origin: Origin, outcome: Result<Published, ProtocolError>) {
        match origin {
            // A publisher that gave up (its socket died) needs no answer.
            Origin::Api(reply) => drop(reply.try_send(outcome)),
            Origin::Client {
                conn,
                correlation_id,
                reference,
            } => match outcome {
                Ok(published) => {
                    let payload = json!({
                        "id": published.id,
                        "seq": published.seq,
                        "recipients": published.recipients,
                    });
                    self.send(
                        conn,
                        "published",
                        payload,
                        Some(&correlation_id),
                        reference.as_deref(),
                    );
                }
                Err(error) => self.send_error(
                    conn,
                    &error,
                    json!({}),
                    &correlation_id,
                    reference.as_deref(),
                ),
            },
        }
    }

    /// Puts a `subscribe` aside until the store has answered a read of
    /// each of `rooms`; `loaded` holds what earlier reads brought.
    pub(super) fn defer_subscribe(
        &mut self,
        conn: ConnId,
        sub: Subscribe,
        correlation_id: &str,
        reference: Option<&str>,
        rooms: Vec<String>,
        loaded: Loaded,
    ) {
        let since = sub.since.clone().unwrap_or_default();
        let rooms = rooms
            .into_iter()
            .map(|room| {
                let after = since.get(&room).copied().unwrap_or(0);
                (room, after)
            })
            .collect();
        let waiter = Waiter::Subscribe {
            sub,
            reference: reference.map(str::to_string),
        };
        self.defer(conn, waiter, correlation_id, rooms, loaded);
    }

    /// Joins SSE stream `conn` to `rooms` (each with the seq it resumes
    /// after) once the store has answered a read of each.
    pub(super) fn defer_stream(
        &mut self,
        conn: ConnId,
        rooms: Vec<(String, u64)>,
        correlation_id: &str,
    ) {
        let waiter = Waiter::Stream {
            rooms: rooms.clone(),
        };
        self.defer(conn, waiter, correlation_id, rooms, Loaded::new());
    }

    /// Asks the engine for each room's events after its seq, and runs
    /// `waiter` once every read is answered.
    fn defer(
        &mut self,
        conn: ConnId,
        waiter: Waiter,
        correlation_id: &str,
        rooms: Vec<(String, u64)>,
        loaded: Loaded,
    ) {
        let token = self.durable.token();
        let mut deferred = Deferred {
            conn,
            waiter,
            correlation_id: correlation_id.to_string(),
            waiting: 0,
            loaded,
            failed: None,
        };
        for (room, after) in rooms {
            let read = self.durable.token();
            match self.engine.read(read, &room, after) {
                Progress::Queued => {
                    self.durable.reads.insert(read, token);
                    deferred.waiting += 1;
                }
                Progress::Done => {}
                Progress::Refused(error) => deferred.failed = Some(error),
            }
        }
        if deferred.waiting == 0 {
            self.resume_deferred(deferred);
        } else {
            self.durable.deferred.insert(token, deferred);
        }
    }

    fn on_read(&mut self, token: u64, room: String, result: Result<Vec<StoredEvent>, EngineError>) {
        let Some(owner) = self.durable.reads.remove(&token) else {
            return;
        };
        let Some(deferred) = self.durable.deferred.get_mut(&owner) else {
            return;
        };
        match result {
            Ok(events) => {
                let records = events
                    .into_iter()
                    .map(|e| EventRecord::new(Some(e.seq), Encoded::frame(opcode::TEXT, &e.json)))
                    .collect();
                deferred.loaded.insert(room, records);
            }
            Err(error) => deferred.failed = Some(error),
        }
        deferred.waiting -= 1;
        if deferred.waiting == 0
            && let Some(deferred) = self.durable.deferred.remove(&owner)
        {
            self.resume_deferred(deferred);
        }
    }

    /// Runs what waited for the reads, with the events read for it.
    fn resume_deferred(&mut self, deferred: Deferred) {
        let Deferred {
            conn,
            waiter,
            correlation_id,
            loaded,
            failed,
            ..
        } = deferred;
        let rooms = waiter.rooms();
        if self.conns.contains_key(&conn) {
            self.resume_read(conn, waiter, correlation_id, loaded, failed);
        }
        // In a cluster the rooms were kept watched for this resume.
        for room in rooms {
            self.release(&crate::engine::Topic::Room(room));
        }
    }

    fn resume_read(
        &mut self,
        conn: ConnId,
        waiter: Waiter,
        correlation_id: String,
        loaded: Loaded,
        failed: Option<EngineError>,
    ) {
        let failed = failed.as_ref().map(unavailable);
        match waiter {
            Waiter::Stream { rooms } => {
                self.stream_loaded(conn, rooms, loaded, failed, &correlation_id);
            }
            Waiter::Subscribe { sub, reference } => {
                let outcome = match failed {
                    Some(error) => Err((error, json!({}))),
                    None => self.subscribe_with(
                        conn,
                        sub,
                        &correlation_id,
                        reference.as_deref(),
                        false,
                        loaded,
                    ),
                };
                if let Err((error, details)) = outcome {
                    self.send_error(conn, &error, details, &correlation_id, reference.as_deref());
                }
            }
        }
    }
}
