//! Publishing (PROTOCOL.md section 5): checks, idempotency, seq and history,
//! and delivery that encodes each event once per encoding, whatever the
//! number of recipients. Health changes are published the same way.

use std::time::Instant;

use serde::Serialize;
use serde_json::json;

use super::room::EventRecord;
use super::{ComponentState, ConnId, Hub, Member, Status};
use crate::config::LogLevel;
use crate::connection::Outlet;
use crate::log::Logger;
use crate::protocol::{
    CloseCode, Encoded, Encoding, Envelope, ProtocolError, Publish, Published, Target, encode,
    new_uuid, timestamp_now,
};

impl Hub {
    /// Publishes one event; `except` (a publishing client) does not get it.
    pub(super) fn publish(
        &mut self,
        publish: Publish,
        correlation_id: String,
        except: Option<ConnId>,
        started: Instant,
    ) -> Result<Published, ProtocolError> {
        publish.check()?;
        if let Some(schemas) = &self.schemas {
            schemas.check(&publish.kind, &publish.payload)?;
        }
        if let Some(key) = &publish.idempotency_key
            && let Some((_, first)) = self.idempotency.get(key)
        {
            return Ok(first.clone());
        }
        let id = new_uuid();
        let ts = timestamp_now();
        let limit = (self.config.send_queue, self.write_through);
        let mut slow = Vec::new();
        let mut recipients = 0;
        let trace = Trace {
            log: self.log,
            correlation_id: &correlation_id,
            event_id: &id,
        };
        let seq = match &publish.target {
            Target::Room(name) => {
                let room = self.rooms.entry(name.clone()).or_default();
                let seq = room.next_seq();
                let json = event_json(
                    &publish.kind,
                    &publish.payload,
                    &correlation_id,
                    &ts,
                    &id,
                    Some(name),
                    Some(seq),
                );
                let mut record = EventRecord::new(Some(seq), json);
                for member in room.members() {
                    member.outlet.warm();
                }
                for member in room.members().iter().filter(|m| Some(m.id) != except) {
                    let delivered = deliver(
                        member.id,
                        member.encoding,
                        &member.outlet,
                        &mut record,
                        limit,
                        &mut slow,
                    );
                    recipients += usize::from(delivered);
                    trace.queued(member.id);
                }
                self.metrics.encoded(true, record.has_msgpack());
                room.remember(record, self.config.history_size);
                if room.is_idle() {
                    self.rooms.remove(name);
                }
                Some(seq)
            }
            Target::User(user) => {
                let json = event_json(
                    &publish.kind,
                    &publish.payload,
                    &correlation_id,
                    &ts,
                    &id,
                    None,
                    None,
                );
                let mut record = EventRecord::new(None, json);
                for member in self.users.get(user).into_iter().flatten() {
                    if let Some(conn) = self.conns.get(member) {
                        let delivered = deliver(
                            conn.id,
                            conn.encoding,
                            &conn.outlet,
                            &mut record,
                            limit,
                            &mut slow,
                        );
                        recipients += usize::from(delivered);
                        trace.queued(conn.id);
                    }
                }
                self.metrics.encoded(true, record.has_msgpack());
                None
            }
            Target::Everyone => {
                let json = event_json(
                    &publish.kind,
                    &publish.payload,
                    &correlation_id,
                    &ts,
                    &id,
                    None,
                    None,
                );
                recipients = self.deliver_to_all(EventRecord::new(None, json), &mut slow, trace);
                None
            }
        };
        self.metrics
            .broadcast
            .observe(started.elapsed().as_secs_f64());
        self.metrics.events_published += 1;
        for conn in slow {
            self.close(conn, CloseCode::SlowConsumer);
        }
        self.log
            .info("event published")
            .field("correlation_id", &correlation_id)
            .field("event_id", &id)
            .field("type", &publish.kind)
            .maybe("room", publish.room())
            .maybe("seq", seq)
            .field("recipients", recipients)
            .maybe("publisher", except)
            .emit();
        let published = Published {
            id,
            seq,
            recipients,
            correlation_id,
        };
        if let Some(key) = publish.idempotency_key {
            self.idempotency
                .insert(key, (Instant::now(), published.clone()));
        }
        Ok(published)
    }

    fn deliver_to_all(
        &mut self,
        mut record: EventRecord,
        slow: &mut Vec<ConnId>,
        trace: Trace<'_>,
    ) -> usize {
        let limit = (self.config.send_queue, self.write_through);
        let mut recipients = 0;
        for conn in self.conns.values() {
            let delivered = deliver(
                conn.id,
                conn.encoding,
                &conn.outlet,
                &mut record,
                limit,
                slow,
            );
            recipients += usize::from(delivered);
            trace.queued(conn.id);
        }
        self.metrics.encoded(true, record.has_msgpack());
        recipients
    }

    /// Records a component's health; a change goes to every connection as
    /// `health_status`.
    pub(super) fn set_health(
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
            let ts = timestamp_now();
            let id = new_uuid();
            let json = event_json(
                "health_status",
                &payload,
                correlation_id,
                &ts,
                &id,
                None,
                None,
            );
            let mut slow = Vec::new();
            let trace = Trace {
                log: self.log,
                correlation_id,
                event_id: &id,
            };
            let recipients = self.deliver_to_all(EventRecord::new(None, json), &mut slow, trace);
            for conn in slow {
                self.close(conn, CloseCode::SlowConsumer);
            }
            self.log
                .info("health changed")
                .field("correlation_id", correlation_id)
                .field("component", &component)
                .field("status", state.status)
                .maybe("detail", state.detail.as_deref())
                .field("recipients", recipients)
                .emit();
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
    pub(super) fn members(&self, room: &str) -> Vec<Member> {
        let Some(room) = self.rooms.get(room) else {
            return Vec::new();
        };
        let mut ids: Vec<ConnId> = room.members().iter().map(|m| m.id).collect();
        ids.sort_unstable();
        ids.iter()
            .filter_map(|id| self.conns.get(id))
            .map(|c| Member {
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
    log: Logger,
    correlation_id: &'a str,
    event_id: &'a str,
}

impl Trace<'_> {
    fn queued(&self, conn: ConnId) {
        if self.log.enabled(LogLevel::Debug) {
            self.log
                .debug("event queued")
                .field("correlation_id", self.correlation_id)
                .field("event_id", self.event_id)
                .field("connection_id", conn)
                .emit();
        }
    }
}

/// Hands one event to one connection; `false` (and the connection noted
/// in `slow`) when its queue is full.
fn deliver(
    id: ConnId,
    encoding: Encoding,
    outlet: &Outlet,
    record: &mut EventRecord,
    (limit, write_through): (usize, bool),
    slow: &mut Vec<ConnId>,
) -> bool {
    let delivered = outlet.push_message(record.encoded(encoding), limit, write_through);
    if !delivered {
        slow.push(id);
    }
    delivered
}

/// An event's JSON frame, encoded once for every recipient and the history.
fn event_json<P: Serialize>(
    kind: &str,
    payload: &P,
    correlation_id: &str,
    timestamp: &str,
    id: &str,
    room: Option<&str>,
    seq: Option<u64>,
) -> Encoded {
    let env = Envelope {
        id: Some(id),
        room: Some(room),
        seq,
        ..Envelope::message(kind, payload, Some(correlation_id), timestamp, None)
    };
    encode(&env, Encoding::Json)
}
