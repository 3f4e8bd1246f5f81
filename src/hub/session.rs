//! Answering client messages (PROTOCOL.md section 4): subscribe with resume,
//! unsubscribe, publish, presence, refresh, ping, and the error replies.

use std::collections::BTreeMap;
use std::time::Instant;

use serde_json::{Value, json};

use super::durable::Loaded;
use super::hooks::{Action, Pending};
use super::membership::{self, enter};
use super::room::{EventRecord, Room};
use super::{ConnId, Hub, Outbound};
use crate::auth;
use crate::hook::Hook;
use crate::protocol::{
    ClientAction, ClientMessage, CloseCode, DecodeError, ErrorCode, ProtocolError, Subscribe,
    Timestamp, is_reserved_type, new_uuid,
};

impl Hub {
    pub(super) fn on_message(
        &mut self,
        id: ConnId,
        message: Result<ClientMessage, DecodeError>,
        bytes: usize,
    ) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        conn.last_seen = Instant::now();
        conn.messages_in += 1;
        conn.bytes_in += bytes as u64;
        self.metrics.messages_in += 1;
        let message = match message {
            Ok(message) => message,
            Err(e) => {
                let correlation_id = e.correlation_id.unwrap_or_else(new_uuid);
                self.send_error(
                    id,
                    &e.error,
                    json!({}),
                    &correlation_id,
                    e.reference.as_deref(),
                );
                return;
            }
        };
        let correlation_id = message.correlation_id.unwrap_or_else(new_uuid);
        let corr = correlation_id.as_str();
        let reference = message.reference.as_deref();
        let outcome = match message.request {
            ClientAction::Ping => {
                self.send(id, "pong", json!({}), Some(corr), reference);
                Ok(())
            }
            ClientAction::Subscribe(sub) => self.subscribe_checked(id, sub, corr, reference, true),
            ClientAction::Unsubscribe { rooms } => {
                self.unsubscribe(id, &rooms);
                self.send(
                    id,
                    "unsubscribed",
                    json!({"rooms": rooms}),
                    Some(corr),
                    reference,
                );
                Ok(())
            }
            ClientAction::Publish {
                room,
                event,
                payload,
            } => self.client_publish(id, room, event, payload, corr, reference),
            ClientAction::Presence { room } => self.presence(id, room, corr, reference),
            ClientAction::Refresh { token } => self.refresh(id, &token, corr, reference),
            ClientAction::Rpc { method, params } => self.rpc(id, method, params, corr, reference),
        };
        if let Err((error, details)) = outcome {
            self.send_error(id, &error, details, corr, reference);
        }
    }

    pub(super) fn on_dropped(&mut self, id: ConnId, count: u64, notify: bool) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        conn.last_seen = Instant::now();
        conn.dropped += count;
        conn.messages_in += count;
        self.metrics.messages_in += count;
        self.metrics.messages_dropped += count;
        if notify {
            let error = ProtocolError::new(
                ErrorCode::RateLimited,
                format!(
                    "over {} messages per second; messages are dropped",
                    self.config.rate_limit_per_s
                ),
            );
            self.send_error(id, &error, json!({}), &new_uuid(), None);
        }
    }

    /// A `subscribe`: checked, then (with `ask_hook` and a `subscribe_hook`)
    /// sent to the app for its new rooms, or joined at once.
    pub(super) fn subscribe_checked(
        &mut self,
        id: ConnId,
        sub: Subscribe,
        corr: &str,
        reference: Option<&str>,
        ask_hook: bool,
    ) -> Result<(), (ProtocolError, Value)> {
        self.subscribe_with(id, sub, corr, reference, ask_hook, Loaded::new())
    }

    /// `subscribe`, with rooms' events already read from the store in
    /// `loaded` (and the subscribe hook asked only with `ask_hook`). A resume that needs events only the store holds is put
    /// aside until they are read, before anything is sent.
    pub(super) fn subscribe_with(
        &mut self,
        id: ConnId,
        sub: Subscribe,
        corr: &str,
        reference: Option<&str>,
        ask_hook: bool,
        mut loaded: Loaded,
    ) -> Result<(), (ProtocolError, Value)> {
        let Some(conn) = self.conns.get(&id) else {
            return Ok(());
        };
        if let Some(claims) = &conn.claims
            && let Some(room) = sub.rooms.iter().find(|r| !claims.may_subscribe(r))
        {
            return Err(forbidden(room, "subscribe to"));
        }
        // Refused whole, before any history_unavailable is sent.
        let limit = self.config.max_rooms_per_connection;
        let more = membership::new_rooms(conn, &sub.rooms);
        if conn.rooms.len() + more > limit {
            let error = membership::too_many_rooms(limit, conn.rooms.len(), more);
            return Err((error, json!({"limit": limit})));
        }
        if ask_hook && self.has_hook(Hook::Subscribe) {
            let rooms: Vec<String> = sub
                .rooms
                .iter()
                .filter(|r| !conn.rooms.contains(r))
                .cloned()
                .collect();
            if !rooms.is_empty() {
                let extras = rooms
                    .iter()
                    .map(|r| {
                        let mut m = serde_json::Map::new();
                        m.insert("room".into(), json!(r));
                        m
                    })
                    .collect();
                let pending = Pending {
                    correlation_id: corr.to_string(),
                    reference: reference.map(str::to_string),
                    action: Action::Subscribe { sub, rooms },
                };
                return self.start_hook(id, Hook::Subscribe, extras, pending);
            }
        }
        // In a cluster, only once every later event of its rooms will come.
        let sub = if self.clustered() {
            match self.cluster_gate(id, sub, corr, reference) {
                Ok(Some(sub)) => sub,
                Ok(None) => return Ok(()),
                Err(error) => return Err((error, json!({}))),
            }
        } else {
            sub
        };
        let epoch_matches = sub.epoch.as_deref() == Some(self.epoch.as_str());
        let since = sub.since.clone().unwrap_or_default();
        let resumed: Vec<&String> = sub
            .rooms
            .iter()
            .filter(|r| since.contains_key(*r))
            .collect();
        let mut sources = BTreeMap::new();
        let mut to_read = Vec::new();
        for room in &resumed {
            let pos = since[*room];
            let known = self.rooms.get(room.as_str());
            let forgotten = self.rooms.forgotten_seq(room);
            let source = resume_source(known, forgotten, pos, loaded.get(room.as_str()));
            if epoch_matches && source == Err(None) {
                to_read.push((*room).clone());
            }
            sources.insert((*room).clone(), source);
        }
        if !to_read.is_empty() {
            self.defer_subscribe(id, sub, corr, reference, to_read, loaded);
            return Ok(());
        }
        let mut recovered = BTreeMap::new();
        for (room, source) in &sources {
            let pos = since[room];
            let ok = epoch_matches && source.is_ok();
            if !ok {
                let oldest = match source {
                    Err(Some(oldest)) => *oldest,
                    _ => self
                        .rooms
                        .get(room.as_str())
                        .map_or_else(|| self.rooms.forgotten_seq(room) + 1, Room::oldest_seq),
                };
                let message = if epoch_matches {
                    format!("room `{room}` no longer holds the events after seq {pos}")
                } else {
                    "the hub restarted (new epoch); its history starts again".into()
                };
                let error = ProtocolError::new(ErrorCode::HistoryUnavailable, message);
                self.send_error(
                    id,
                    &error,
                    json!({"room": room, "oldest_seq": oldest}),
                    corr,
                    reference,
                );
            }
            recovered.insert(room.clone(), ok);
        }

        let Some(conn) = self.conns.get_mut(&id) else {
            return Ok(()); // closed as a slow consumer while sending errors
        };
        let mut positions = BTreeMap::new();
        let joined: Vec<String> = sub
            .rooms
            .iter()
            .filter(|r| !conn.rooms.contains(r))
            .cloned()
            .collect();
        for name in &sub.rooms {
            positions.insert(name.clone(), enter(&mut self.rooms, conn, name));
        }
        self.cluster_joined(id, &joined);
        let mut payload = json!({"rooms": sub.rooms, "epoch": self.epoch, "positions": positions});
        if sub.since.is_some() {
            payload["recovered"] = json!(recovered);
        }
        self.send(id, "subscribed", payload, Some(corr), reference);

        // The missed events go out now, inside the same command, so nothing
        // newer can be queued between them and the `subscribed` reply. The
        // budget is enforced after the last room: trimming between rooms
        // could take events already promised as recovered.
        let limit = self.config.send_queue;
        let mut overflow = false;
        for (name, _) in recovered.into_iter().filter(|(_, ok)| *ok) {
            let (Some(room), Some(conn)) =
                (self.rooms.get_mut(name.as_str()), self.conns.get_mut(&id))
            else {
                continue;
            };
            let outlet = &conn.outlet;
            let after = since[&name];
            if sources.get(&name) == Some(&Ok(Source::Loaded)) {
                // Read from the store: what it held up to the room's last
                // delivered seq (newer ones are on their way as members').
                let last = room.last_seq();
                let events = loaded.get_mut(&name).into_iter().flatten();
                for event in events.filter(|e| e.seq.is_some_and(|s| s > after && s <= last)) {
                    let fresh =
                        conn.encoding == crate::protocol::Encoding::MsgPack && !event.has_msgpack();
                    if fresh {
                        self.metrics.encoded(false, true);
                    }
                    if !outlet.push(
                        Outbound::Message(event.encoded(conn.encoding).clone()),
                        limit,
                        false,
                    ) {
                        overflow = true;
                        break;
                    }
                }
                if overflow {
                    break;
                }
                continue;
            }
            let Ok(replay) = room.replay(after, conn.encoding, |event| {
                outlet.push(Outbound::Message(event.clone()), limit, false)
            }) else {
                continue;
            };
            for _ in 0..replay.transcoded {
                self.metrics.encoded(false, true);
            }
            self.history.grew(replay.grew);
            if !replay.complete {
                overflow = true;
                break;
            }
        }
        self.history.trim(&mut self.rooms);
        if overflow {
            self.close(id, CloseCode::SlowConsumer);
        }
        Ok(())
    }

    pub(super) fn unsubscribe(&mut self, id: ConnId, rooms: &[String]) {
        if let Some(conn) = self.conns.get_mut(&id) {
            let left: Vec<String> = rooms
                .iter()
                .filter(|r| conn.rooms.contains(r))
                .cloned()
                .collect();
            membership::leave(&mut self.rooms, conn, rooms);
            self.cluster_left(id, &left);
        }
    }

    fn client_publish(
        &mut self,
        id: ConnId,
        room: String,
        event: String,
        payload: serde_json::Map<String, Value>,
        corr: &str,
        reference: Option<&str>,
    ) -> Result<(), (ProtocolError, Value)> {
        if let Some(claims) = &self.conns[&id].claims
            && !claims.may_publish(&room)
        {
            return Err(forbidden(&room, "publish to"));
        }
        if !self.has_hook(Hook::Publish) {
            return self.publish_now(id, room, event, payload, corr, reference);
        }
        if is_reserved_type(&event) {
            return Err((
                ProtocolError::new(
                    ErrorCode::ReservedType,
                    format!("`{event}` is reserved for the hub"),
                ),
                json!({}),
            ));
        }
        let mut extra = serde_json::Map::new();
        extra.insert("room".into(), json!(room));
        extra.insert("event".into(), json!(event));
        extra.insert("payload".into(), Value::Object(payload.clone()));
        let pending = Pending {
            correlation_id: corr.to_string(),
            reference: reference.map(str::to_string),
            action: Action::Publish {
                room,
                event,
                payload,
            },
        };
        self.start_hook(id, Hook::Publish, vec![extra], pending)
    }

    fn presence(
        &mut self,
        id: ConnId,
        room: String,
        corr: &str,
        reference: Option<&str>,
    ) -> Result<(), (ProtocolError, Value)> {
        if let Some(claims) = &self.conns[&id].claims
            && !claims.may_subscribe(&room)
        {
            return Err(forbidden(&room, "see presence of"));
        }
        if self.clustered() {
            return self
                .cluster_presence(id, room, corr, reference)
                .map_err(|e| (e, json!({})));
        }
        let members = self.members(&room);
        self.send(
            id,
            "presence",
            json!({"room": room, "members": members}),
            Some(corr),
            reference,
        );
        Ok(())
    }

    fn refresh(
        &mut self,
        id: ConnId,
        token: &str,
        corr: &str,
        reference: Option<&str>,
    ) -> Result<(), (ProtocolError, Value)> {
        let Some(secret) = &self.config.jwt_secret else {
            return Err((
                ProtocolError::invalid_field(
                    "token",
                    "cannot be refreshed: the hub has no jwt_secret",
                ),
                json!({}),
            ));
        };
        let claims =
            auth::verify(token, secret.as_bytes(), auth::unix_now()).map_err(|e| (e, json!({})))?;
        let conn = self.conns.get_mut(&id).expect("checked by on_message");
        if conn.user() != Some(claims.sub.as_str()) {
            return Err((
                ProtocolError::new(
                    ErrorCode::Forbidden,
                    "the new token is for a different `sub`",
                ),
                json!({}),
            ));
        }
        let expires_at = Timestamp::from_unix_secs(claims.exp_secs()).to_string();
        conn.claims = Some(claims);
        self.send(
            id,
            "refreshed",
            json!({"expires_at": expires_at}),
            Some(corr),
            reference,
        );
        Ok(())
    }
}

/// Where a resume's missed events come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Source {
    /// The room's ring (or nothing was missed).
    Ring,
    /// Events read from the store for this subscribe.
    Loaded,
}

/// Where room `room`'s events after `since` come from, given what was read
/// from the store for it; `Err(Some(oldest))` when they cannot be resumed,
/// `Err(None)` when the store must be read first. A room not in the table
/// stands at `forgotten` ([`super::rooms::Rooms::forgotten_seq`]) with no
/// history.
pub(super) fn resume_source(
    room: Option<&Room>,
    forgotten: u64,
    since: u64,
    loaded: Option<&Vec<EventRecord>>,
) -> Result<Source, Option<u64>> {
    let Some(room) = room else {
        // A room that never had an event resumes from 0 only, and one
        // that was forgotten (nothing held) from its last seq only.
        return match Room::continuing(forgotten).can_resume(since) {
            Ok(()) => Ok(Source::Ring),
            Err(unavailable) => Err(Some(unavailable.oldest_seq)),
        };
    };
    room.can_resume(since)
        .map_err(|unavailable| Some(unavailable.oldest_seq))?;
    if !room.needs_read(since) {
        return Ok(Source::Ring);
    }
    match loaded {
        None => Err(None),
        // What the store still held decides: it may have let events go
        // since the hub last heard.
        Some(events) => match events.first().and_then(|e| e.seq) {
            Some(first) if first <= since + 1 => Ok(Source::Loaded),
            Some(first) => Err(Some(first)),
            None => Err(Some(room.last_seq() + 1)),
        },
    }
}

fn forbidden(room: &str, action: &str) -> (ProtocolError, Value) {
    (
        ProtocolError::new(
            ErrorCode::Forbidden,
            format!("the token does not allow you to {action} room `{room}`"),
        ),
        json!({"room": room}),
    )
}
