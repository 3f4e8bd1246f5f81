//! What is particular to an SSE stream joining (PROTOCOL.md section 12):
//! where its cursor starts in each room, its welcome with the cursor as
//! `id:`, and a resume from `Last-Event-ID` exactly as `subscribe` with
//! `since` (section 4) — `history_unavailable` first for each room that
//! cannot be recovered, then the missed events of the others, each once,
//! in seq order, before anything newer.
//!
//! Everything else about a stream is a connection's: the fan-out hands it
//! events ([`super::publish`]), the heartbeat a comment, the sweep ends it
//! at its token's `exp` after an `error`.

use serde::Serialize;
use serde_json::json;

use super::durable::Loaded;
use super::membership;
use super::room::Room;
use super::session::{Source, resume_source};
use super::{ConnId, Hub};
use crate::outlet::StreamCursor;
use crate::protocol::sse::{Cursor, tagged_event};
use crate::protocol::{CloseCode, Encoded, Encoding, Envelope, ErrorCode, ProtocolError, encode};

/// How a stream resumes each room of its cursor that it joins.
#[derive(Debug, Default)]
pub(super) struct Resume {
    /// Rooms to replay after their seq, in the order of `?rooms=`.
    recovered: Vec<(String, u64)>,
    /// Rooms that cannot be, with their oldest seq and why.
    lost: Vec<(String, u64, String)>,
    /// Rooms whose missed events only the store still holds: the stream
    /// joins them once it has read them ([`Hub::stream_loaded`]).
    pub deferred: Vec<(String, u64)>,
}

impl Resume {
    /// Whether the stream joins `room` only after a store read.
    pub fn defers(&self, room: &str) -> bool {
        self.deferred.iter().any(|(name, _)| name == room)
    }
}

impl Hub {
    /// Decides, before the stream joins, which rooms of `since` it
    /// recovers: those also in `rooms`, when the epoch is this hub's and
    /// `oldest - 1 <= since <= last` (the rule of `subscribe`).
    pub(super) fn stream_resume(&self, rooms: &[String], since: &Cursor) -> Resume {
        let epoch_matches = since.epoch == self.epoch;
        let mut resume = Resume::default();
        for room in rooms {
            let Some(pos) = since.seq(room) else {
                continue;
            };
            // A room that never had an event resumes from 0 only, and one
            // that was forgotten (nothing held) from its last seq only.
            let known = self.rooms.get(room.as_str());
            let forgotten = self.rooms.forgotten_seq(room);
            let resumable = known.map_or_else(
                || Room::continuing(forgotten).can_resume(pos),
                |r| r.can_resume(pos),
            );
            match resumable {
                Ok(()) if epoch_matches && known.is_some_and(|r| r.needs_read(pos)) => {
                    resume.deferred.push((room.clone(), pos));
                }
                Ok(()) if epoch_matches => resume.recovered.push((room.clone(), pos)),
                outcome => {
                    let oldest = match outcome {
                        Err(unavailable) => unavailable.oldest_seq,
                        Ok(()) => known.map_or(forgotten + 1, Room::oldest_seq),
                    };
                    let why = if epoch_matches {
                        format!("room `{room}` no longer holds the events after seq {pos}")
                    } else {
                        "the hub restarted (new epoch); its history starts again".into()
                    };
                    resume.lost.push((room.clone(), oldest, why));
                }
            }
        }
        resume
    }

    /// Sets where a stream that joined `rooms` starts in each (the seq it
    /// resumes from, or the room's last seq) and returns its welcome, with
    /// that cursor as `id:`.
    pub(super) fn stream_welcome<P: Serialize>(
        &self,
        cursor: &StreamCursor,
        rooms: &[String],
        resume: Option<&Resume>,
        welcome: &Envelope<'_, P>,
    ) -> Encoded {
        for room in rooms {
            let from = resume
                .and_then(|r| {
                    let mut resumed = r.recovered.iter().chain(&r.deferred);
                    resumed.find(|(name, _)| name == room)
                })
                .map(|(_, seq)| *seq);
            let last = self.rooms.get(room.as_str()).map_or(0, Room::last_seq);
            cursor.set(room, from.unwrap_or(last));
        }
        let json = encode(welcome, Encoding::Json);
        tagged_event(cursor, json.payload()).0
    }

    /// Sends a stream that just joined what its resume calls for: the
    /// `history_unavailable` errors, then the missed events, each with the
    /// stream's cursor as `id:`. Like a long `subscribe` resume, one that
    /// overflows `send_queue` ends the stream (slow consumer).
    pub(super) fn stream_catch_up(&mut self, id: ConnId, resume: Resume, correlation_id: &str) {
        for (room, oldest, why) in &resume.lost {
            let error = ProtocolError::new(ErrorCode::HistoryUnavailable, why.as_str());
            let details = json!({"room": room, "oldest_seq": oldest});
            self.send_error(id, &error, details, correlation_id, None);
        }
        let limit = self.config.send_queue;
        let mut overflow = false;
        for (name, since) in resume.recovered {
            let (Some(room), Some(conn)) = (self.rooms.get_mut(name.as_str()), self.conns.get(&id))
            else {
                continue;
            };
            let outlet = &conn.outlet;
            // The replay is consecutive: the n-th event has seq since + n.
            let mut seq = since;
            let Ok(replay) = room.replay(since, Encoding::Sse, |data| {
                seq += 1;
                outlet.push_tagged(data, &name, seq, limit, false)
            }) else {
                continue;
            };
            for _ in 0..replay.transcoded {
                self.metrics.encoded_sse();
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
    }

    /// Joins a stream to the rooms it waited for, with what the store read
    /// for them (or `failed`): as a deferred `subscribe` does, the events
    /// after each room's seq up to its last go out before anything newer;
    /// a room the store no longer covers gets `history_unavailable`. A
    /// failed read ends the stream after an `error` `engine_unavailable`:
    /// its `EventSource` comes back with the same cursor.
    pub(super) fn stream_loaded(
        &mut self,
        id: ConnId,
        rooms: Vec<(String, u64)>,
        mut loaded: Loaded,
        failed: Option<ProtocolError>,
        correlation_id: &str,
    ) {
        if let Some(error) = failed {
            self.send_error(id, &error, json!({}), correlation_id, None);
            self.close(id, CloseCode::Internal);
            return;
        }
        let limit = self.config.send_queue;
        for (name, since) in rooms {
            let forgotten = self.rooms.forgotten_seq(&name);
            let source = resume_source(
                self.rooms.get(name.as_str()),
                forgotten,
                since,
                loaded.get(&name),
            );
            let Some(conn) = self.conns.get_mut(&id) else {
                return; // ended as a slow consumer
            };
            let Ok(Source::Loaded) = source else {
                // The ring covers it after all, or nothing does.
                let oldest = match source {
                    Err(Some(oldest)) => oldest,
                    _ => since + 1,
                };
                if source.is_err() {
                    let why = format!("room `{name}` no longer holds the events after seq {since}");
                    let error = ProtocolError::new(ErrorCode::HistoryUnavailable, why);
                    let details = json!({"room": name, "oldest_seq": oldest});
                    self.send_error(id, &error, details, correlation_id, None);
                    let Some(conn) = self.conns.get_mut(&id) else {
                        return;
                    };
                    let last = membership::enter(&mut self.rooms, conn, &name);
                    if let Some(cursor) = conn.outlet.cursor() {
                        cursor.set(&name, last);
                    }
                } else {
                    membership::enter(&mut self.rooms, conn, &name);
                    let resume = Resume {
                        recovered: vec![(name, since)],
                        ..Resume::default()
                    };
                    self.stream_catch_up(id, resume, correlation_id);
                }
                continue;
            };
            let last = membership::enter(&mut self.rooms, conn, &name);
            let outlet = &conn.outlet;
            let events = loaded.remove(&name).into_iter().flatten();
            let mut complete = true;
            for mut event in events.filter(|e| e.seq.is_some_and(|s| s > since && s <= last)) {
                if !event.has_sse() {
                    self.metrics.encoded_sse();
                }
                let seq = event.seq.unwrap_or_default();
                if !outlet.push_tagged(event.encoded(Encoding::Sse), &name, seq, limit, false) {
                    complete = false;
                    break;
                }
            }
            if !complete {
                self.close(id, CloseCode::SlowConsumer);
                return;
            }
        }
    }

    /// Ends a stream whose token expired: an `error` `token_expired` first
    /// (a stream has no close code to say it), then the end.
    pub(super) fn expire_stream(&mut self, id: ConnId) {
        let error = ProtocolError::new(
            ErrorCode::TokenExpired,
            "the token's exp has passed; the stream ends (reconnect with a new token)",
        );
        self.send_error(id, &error, json!({}), &crate::protocol::new_uuid(), None);
        self.close(id, CloseCode::TokenExpired);
    }
}
