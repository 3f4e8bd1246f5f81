//! Publishing (PROTOCOL.md section 5): checks, idempotency, seq and history,
//! and delivery that encodes each event once per encoding, whatever the
//! number of recipients. Health changes are published the same way.

use std::time::Instant;

use serde::Serialize;
use serde_json::json;

use super::room::EventRecord;
use super::{ComponentState, ConnId, Hub, PresenceMember, Status};
use crate::log::{as_json, opt_json};
use crate::outlet::Outlet;
use crate::protocol::{
    CloseCode, Encoded, Encoding, Envelope, ProtocolError, Publish, Published, Target, encode,
    new_uuid, timestamp_now,
};

/// An event checked, numbered and encoded, not yet delivered.
#[derive(Debug)]
pub(super) struct Fresh {
    pub publish: Publish,
    pub correlation_id: String,
    pub id: String,
    pub seq: Option<u64>,
    /// The generation of the room the seq was reserved in (with a store).
    pub generation: u32,
    pub json: Encoded,
    /// The publishing client, which does not get the event.
    pub except: Option<ConnId>,
    pub started: Instant,
}

/// What [`Hub::prepare`] made of a publish.
#[derive(Debug)]
pub(super) enum Prepared {
    /// A repeated idempotency key: the first publish's reply.
    Repeat(Published),
    /// A new event.
    Fresh(Fresh),
}

impl Hub {
    /// Publishes one event at once (the memory engine); `except` (a
    /// publishing client) does not get it.
    pub(super) fn publish(
        &mut self,
        publish: Publish,
        correlation_id: String,
        except: Option<ConnId>,
        started: Instant,
    ) -> Result<Published, ProtocolError> {
        match self.prepare(publish, correlation_id, except, started, false)? {
            Prepared::Repeat(first) => Ok(first),
            Prepared::Fresh(fresh) => Ok(self.deliver(fresh)),
        }
    }

    /// Checks a publish, answers a repeated idempotency key, and gives a
    /// room event its seq: taken at once, or only `reserved` while the
    /// store writes it.
    pub(super) fn prepare(
        &mut self,
        publish: Publish,
        correlation_id: String,
        except: Option<ConnId>,
        started: Instant,
        reserve: bool,
    ) -> Result<Prepared, ProtocolError> {
        publish.check()?;
        if let Some(schemas) = &self.schemas {
            schemas.check(&publish.kind, &publish.payload)?;
        }
        if let Some(key) = &publish.idempotency_key
            && let Some(first) = self.idempotency.get(key, Instant::now())
        {
            return Ok(Prepared::Repeat(first.clone()));
        }
        let id = new_uuid();
        let (seq, generation) = match &publish.target {
            Target::Room(name) => {
                let room = self.rooms.open(name).1;
                if reserve {
                    let (seq, generation) = room.reserve_seq();
                    (Some(seq), generation)
                } else {
                    (Some(room.next_seq()), 0)
                }
            }
            _ => (None, 0),
        };
        let json = event_json(
            &publish.kind,
            &publish.payload,
            &correlation_id,
            &id,
            publish.room(),
            seq,
        );
        Ok(Prepared::Fresh(Fresh {
            publish,
            correlation_id,
            id,
            seq,
            generation,
            json,
            except,
            started,
        }))
    }

    /// Fans a prepared event out, keeps it in its room's history, and
    /// returns the publish's reply.
    pub(super) fn deliver(&mut self, fresh: Fresh) -> Published {
        let Fresh {
            publish,
            correlation_id,
            id,
            seq,
            json,
            except,
            started,
            ..
        } = fresh;
        let mut fanout = self
            .fanout(EventRecord::new(seq, json), &correlation_id, &id)
            .of_room(publish.room());
        match &publish.target {
            Target::Room(name) => self.to_members(&mut fanout, name, except),
            Target::User(user) => self.to_user(&mut fanout, user),
            Target::Everyone => self.to_everyone(&mut fanout),
        }
        let recipients = self.finish(fanout.done(), publish.room());
        if let Target::Room(name) = &publish.target {
            self.rooms.forget_if_idle(name);
        }
        self.metrics
            .broadcast
            .observe(started.elapsed().as_secs_f64());
        self.metrics.events_published += 1;
        tracing::info!(
            correlation_id = as_json(&correlation_id),
            event_id = as_json(&id),
            r#type = as_json(&publish.kind),
            room = opt_json(publish.room()),
            seq = opt_json(seq),
            recipients = as_json(recipients),
            publisher = opt_json(except),
            "event published"
        );
        let published = Published {
            id,
            seq,
            recipients,
            correlation_id,
        };
        if let Some(key) = publish.idempotency_key {
            self.idempotency
                .insert(key, published.clone(), Instant::now());
        }
        published
    }

    /// Hands `fanout` to every member of room `name` but `except`.
    pub(super) fn to_members(&self, fanout: &mut Fanout<'_>, name: &str, except: Option<ConnId>) {
        let Some(room) = self.rooms.get(name) else {
            return;
        };
        // Read every member's state first: the cache misses then overlap
        // instead of stalling one send each.
        for member in room.members() {
            member.outlet.warm();
        }
        for member in room.members().iter().filter(|m| Some(m.id) != except) {
            fanout.to(member.id, member.encoding, &member.outlet);
        }
    }

    /// Hands `fanout` to every connection of `user`.
    pub(super) fn to_user(&self, fanout: &mut Fanout<'_>, user: &str) {
        for conn in self.users.get(user).into_iter().flatten() {
            if let Some(conn) = self.conns.get(conn) {
                fanout.to(conn.id, conn.encoding, &conn.outlet);
            }
        }
    }

    /// Hands `fanout` to every connection.
    pub(super) fn to_everyone(&self, fanout: &mut Fanout<'_>) {
        for conn in self.conns.values() {
            fanout.to(conn.id, conn.encoding, &conn.outlet);
        }
    }

    /// A fan-out of `record` with this hub's queue limit and write mode.
    pub(super) fn fanout<'a>(
        &self,
        record: EventRecord,
        correlation_id: &'a str,
        event_id: &'a str,
    ) -> Fanout<'a> {
        Fanout {
            record,
            room: None,
            limit: self.config.send_queue,
            write_through: self.write_through,
            recipients: 0,
            slow: Vec::new(),
            trace: Trace {
                correlation_id,
                event_id,
            },
        }
    }

    /// Counts a finished fan-out, keeps an event of `room` in its history,
    /// and closes the slow consumers it found; returns the recipients.
    pub(super) fn finish(&mut self, done: FanoutTally, room: Option<&str>) -> usize {
        self.metrics.encoded(true, done.record.has_msgpack());
        if done.record.has_sse() {
            self.metrics.encoded_sse();
        }
        // History first: closing the last member must not drop the room
        // before its newest event is kept.
        if let Some(name) = room {
            let capacity = self.config.history_size;
            self.history
                .keep(&mut self.rooms, name, done.record, capacity);
        }
        for conn in done.slow {
            self.close(conn, CloseCode::SlowConsumer);
        }
        done.recipients
    }

    /// Records a component's health; a change goes to every connection as
    /// `health_status`.
    pub(crate) fn set_health(
        &mut self,
        component: String,
        status: Status,
        detail: Option<String>,
        correlation_id: &str,
    ) -> ComponentState {
        let (state, changed) = self.health.set(&component, status, detail);
        if changed {
            let payload = json!({
                "component": component,
                "status": state.status,
                "detail": state.detail,
                "overall": self.health.overall(),
            });
            let id = new_uuid();
            let json = event_json("health_status", &payload, correlation_id, &id, None, None);
            let mut fanout = self.fanout(EventRecord::new(None, json), correlation_id, &id);
            self.to_everyone(&mut fanout);
            let recipients = self.finish(fanout.done(), None);
            tracing::info!(
                correlation_id = as_json(correlation_id),
                component = as_json(&component),
                status = as_json(state.status),
                detail = opt_json(state.detail.as_deref()),
                recipients = as_json(recipients),
                "health changed"
            );
        }
        ComponentState {
            component,
            status: state.status,
            detail: state.detail,
            since: state.since,
        }
    }

    /// A room's members as `presence` and the registry show them, by
    /// connection ID.
    pub(super) fn members(&self, room: &str) -> Vec<PresenceMember> {
        let Some(room) = self.rooms.get(room) else {
            return Vec::new();
        };
        let mut ids: Vec<ConnId> = room.members().iter().map(|m| m.id).collect();
        ids.sort_unstable();
        ids.iter()
            .filter_map(|id| self.conns.get(id))
            .map(|c| PresenceMember {
                connection_id: c.id.to_string(),
                user: c.user().map(str::to_string),
            })
            .collect()
    }
}

/// Per-recipient `debug` lines that follow an event to every queue it
/// reached; free when debug logging is off.
#[derive(Clone, Copy)]
struct Trace<'a> {
    correlation_id: &'a str,
    event_id: &'a str,
}

impl Trace<'_> {
    fn queued(&self, conn: ConnId) {
        tracing::debug!(
            correlation_id = self.correlation_id,
            event_id = self.event_id,
            connection_id = %conn,
            "event queued"
        );
    }
}

/// One event on its way to its recipients.
pub(super) struct Fanout<'a> {
    record: EventRecord,
    /// The event's room, for the `id:` lines of SSE streams.
    room: Option<&'a str>,
    limit: usize,
    write_through: bool,
    recipients: usize,
    slow: Vec<ConnId>,
    trace: Trace<'a>,
}

/// What a fan-out leaves for [`Hub::finish`].
pub(super) struct FanoutTally {
    record: EventRecord,
    recipients: usize,
    slow: Vec<ConnId>,
}

impl<'a> Fanout<'a> {
    /// The same fan-out, of an event of `room`.
    pub(super) fn of_room(self, room: Option<&'a str>) -> Self {
        Self { room, ..self }
    }

    /// Hands the event to one connection; a full queue marks it slow.
    pub(super) fn to(&mut self, id: ConnId, encoding: Encoding, outlet: &Outlet) {
        let pushed = match (encoding, self.room, self.record.seq) {
            (Encoding::Sse, Some(room), Some(seq)) => self.deliver_to_stream(outlet, room, seq),
            _ => {
                let message = self.record.encoded(encoding);
                outlet.push_message(message, self.limit, self.write_through)
            }
        };
        if pushed {
            self.recipients += 1;
        } else {
            self.slow.push(id);
        }
        self.trace.queued(id);
    }

    /// A room event to an SSE stream (PROTOCOL.md section 12). A stream
    /// of this room alone gets the event with the room's `id:` line, built
    /// once and shared like any frame (every stream's cursor carries the
    /// hub's epoch); a stream of several rooms gets the shared `data:`
    /// bytes after an `id:` line of its own.
    fn deliver_to_stream(&mut self, outlet: &Outlet, room: &str, seq: u64) -> bool {
        let (limit, write_through) = (self.limit, self.write_through);
        let Some(cursor) = outlet.cursor() else {
            let data = self.record.encoded(Encoding::Sse);
            return outlet.push_message(data, limit, write_through);
        };
        // Made at the first stream, whichever kind: the `data:` form every
        // stream of several rooms gets is a slice of the same buffer.
        let tagged = self.record.sse_tagged(&cursor.epoch(), room);
        if cursor.is_single_room() {
            outlet.push_message(tagged, limit, write_through)
        } else {
            let data = self.record.encoded(Encoding::Sse);
            outlet.push_tagged(data, room, seq, limit, write_through)
        }
    }

    pub(super) fn done(self) -> FanoutTally {
        FanoutTally {
            record: self.record,
            recipients: self.recipients,
            slow: self.slow,
        }
    }
}

/// An event's JSON frame, encoded once for every recipient and the history.
pub(super) fn event_json<P: Serialize>(
    kind: &str,
    payload: &P,
    correlation_id: &str,
    id: &str,
    room: Option<&str>,
    seq: Option<u64>,
) -> Encoded {
    let timestamp = timestamp_now();
    let env = Envelope {
        id: Some(id),
        room: Some(room),
        seq,
        ..Envelope::message(kind, payload, Some(correlation_id), &timestamp, None)
    };
    encode(&env, Encoding::Json)
}
