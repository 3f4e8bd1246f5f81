//! Publishing through a cluster and taking its events: the seq placeholder
//! cut out of the event's JSON for the publish script, the answer once
//! Redis has sequenced it, delivery of every event that comes back (in
//! seq order, each once), missed events, and a new epoch.

use super::*;

impl Hub {
    /// Publishes through Redis: checked now, answered once Redis has
    /// sequenced and kept it; delivered when it comes back, as on every
    /// other hub.
    pub(in crate::hub) fn publish_cluster(
        &mut self,
        publish: Publish,
        correlation_id: String,
        except: Option<ConnId>,
        started: Instant,
        origin: Origin,
    ) {
        if let Err(e) = publish.check() {
            return self.answer(origin, Err(e));
        }
        if let Some(schemas) = &self.schemas
            && let Err(e) = schemas.check(&publish.kind, &publish.payload)
        {
            return self.answer(origin, Err(e));
        }
        if let Some(key) = &publish.idempotency_key {
            if let Some(first) = self.idempotency.get(key, Instant::now()) {
                let first = first.clone();
                return self.answer(origin, Ok(first));
            }
            if let Some(waiting) = self.cluster.keys.get_mut(key) {
                waiting.push(origin);
                return;
            }
        }
        if self.cluster.down {
            return self.answer(origin, Err(unavailable("Redis cannot be reached")));
        }
        let id = new_uuid();
        let (topic, seq) = match &publish.target {
            Target::Room(room) => (Topic::Room(room.clone()), Some(SEQ_PLACEHOLDER)),
            Target::User(user) => (Topic::User(user.clone()), None),
            Target::Everyone => (Topic::Everyone, None),
        };
        let json = crate::hub::publish::event_json(
            &publish.kind,
            &publish.payload,
            &correlation_id,
            &id,
            publish.room(),
            seq,
        );
        let json = json.wire().slice(json.wire().len() - json.len()..);
        let (head, tail) = match seq {
            Some(placeholder) => {
                let digits = placeholder.to_string();
                let marker = format!("\"seq\":{digits}");
                // The envelope's own seq is its last field: after the
                // payload, so the last match is it.
                match find_last(&json, marker.as_bytes()) {
                    Some(at) => {
                        let cut = at + marker.len() - digits.len();
                        (json.slice(..cut), json.slice(cut + digits.len()..))
                    }
                    None => {
                        let error = ProtocolError::new(ErrorCode::Internal, "cannot frame event");
                        return self.answer(origin, Err(error));
                    }
                }
            }
            None => (json, bytes::Bytes::new()),
        };
        let token = self.cluster.token();
        let key = publish.idempotency_key.clone();
        let sequence = Sequence {
            token,
            topic: topic.clone(),
            head,
            tail,
            except: except.map(|c| c.to_string()),
            key: key.clone().map(|k| (k, id.clone(), correlation_id.clone())),
        };
        if let Progress::Refused(e) = self.engine.ask(Ask::Publish(sequence)) {
            return self.answer(origin, Err(unavailable(&e.message)));
        }
        if let Some(key) = &key {
            self.cluster.keys.insert(key.clone(), Vec::new());
        }
        self.cluster.publishes.insert(
            token,
            InFlight {
                origin,
                id,
                correlation_id,
                kind: publish.kind,
                topic,
                except,
                key,
                started,
            },
        );
    }

    pub(super) fn on_sequenced(&mut self, token: u64, result: Result<Sequenced, String>) {
        let Some(in_flight) = self.cluster.publishes.remove(&token) else {
            return;
        };
        let outcome = match result {
            Ok(Sequenced::Repeat(first)) => Ok(first),
            Ok(Sequenced::New { seq, recipients }) => {
                // The publisher is no recipient of its own event.
                let sender_member = match (&in_flight.topic, in_flight.except) {
                    (Topic::Room(room), Some(conn)) => self
                        .conns
                        .get(&conn)
                        .is_some_and(|c| c.rooms.contains(room)),
                    _ => false,
                };
                let recipients = recipients.saturating_sub(usize::from(sender_member));
                self.metrics.events_published += 1;
                let room = match &in_flight.topic {
                    Topic::Room(room) => Some(room.as_str()),
                    _ => None,
                };
                tracing::info!(
                    correlation_id = as_json(&in_flight.correlation_id),
                    event_id = as_json(&in_flight.id),
                    r#type = as_json(&in_flight.kind),
                    room = opt_json(room),
                    seq = opt_json(seq),
                    recipients = as_json(recipients),
                    publisher = opt_json(in_flight.except),
                    sequenced_ms = as_json(in_flight.started.elapsed().as_secs_f64() * 1e3),
                    "event published"
                );
                Ok(Published {
                    id: in_flight.id,
                    seq,
                    recipients,
                    correlation_id: in_flight.correlation_id,
                })
            }
            Err(why) => {
                tracing::warn!(
                    correlation_id = as_json(&in_flight.correlation_id),
                    error = as_json(&why),
                    "publish refused: Redis did not take it"
                );
                Err(unavailable(&why))
            }
        };
        if let Some(key) = in_flight.key {
            if let Ok(published) = &outcome {
                self.idempotency
                    .insert(key.clone(), published.clone(), Instant::now());
            }
            for repeat in self.cluster.keys.remove(&key).unwrap_or_default() {
                self.answer(repeat, outcome.clone());
            }
        }
        self.answer(in_flight.origin, outcome);
    }

    /// Delivers an event of the cluster to this hub's connections.
    pub(super) fn on_event(
        &mut self,
        topic: Topic,
        seq: Option<u64>,
        except: Option<String>,
        json: bytes::Bytes,
    ) {
        let except = except.as_deref().and_then(ConnId::parse);
        let record = EventRecord::new(seq, Encoded::frame(opcode::TEXT, &json));
        let room = match &topic {
            Topic::Room(name) => Some(name.as_str()),
            _ => None,
        };
        // A room event carries its room, for an SSE stream's `id:` line.
        let mut fanout = self.fanout(record, "", "").of_room(room);
        match &topic {
            Topic::Room(name) => {
                let capacity = self.config.history_size;
                let Some(room) = self.rooms.get_mut(name.as_str()) else {
                    return; // not watched here (any more)
                };
                let Some(seq) = seq else { return };
                if seq <= room.last_seq() {
                    return; // had it already
                }
                room.delivered(seq, capacity);
                self.to_members(&mut fanout, name, except);
            }
            Topic::User(user) => self.to_user(&mut fanout, user),
            Topic::Everyone => self.to_everyone(&mut fanout),
        }
        self.finish(fanout.done(), room);
    }

    /// A room's events before `oldest_seq` are gone from the shared
    /// history before this hub delivered them: its members hear so.
    pub(super) fn on_missed(&mut self, name: &str, oldest_seq: u64) {
        let capacity = self.config.history_size;
        self.history.forget_room(&mut self.rooms, name);
        let Some(room) = self.rooms.get_mut(name) else {
            return;
        };
        room.delivered(oldest_seq.saturating_sub(1), capacity);
        room.expired(oldest_seq);
        let members: Vec<ConnId> = room.members().iter().map(|m| m.id).collect();
        let error = ProtocolError::new(
            ErrorCode::HistoryUnavailable,
            format!("events of room `{name}` were missed while Redis was away and are gone"),
        );
        for conn in members {
            self.send_error(
                conn,
                &error,
                json!({"room": name, "oldest_seq": oldest_seq}),
                &new_uuid(),
                None,
            );
        }
    }

    /// The cluster's data was lost: every connection closes with 1012 and
    /// the hub starts again from the new epoch.
    pub(super) fn on_epoch(&mut self, epoch: String) {
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        tracing::warn!(
            old = as_json(&self.epoch),
            new = as_json(&epoch),
            connections = as_json(ids.len()),
            "the cluster's epoch changed; closing every connection with 1012"
        );
        self.epoch = epoch;
        for id in ids {
            self.close(id, CloseCode::EpochChanged);
        }
        // Rooms still watched (for waiters) start again at seq 0.
        let names: Vec<String> = self.rooms.keys().map(|n| n.to_string()).collect();
        for name in names {
            self.history.forget_room(&mut self.rooms, &name);
            self.rooms.insert(name.as_str().into(), Room::watched(0, 1));
        }
    }
}

/// Where `needle` last occurs in `haystack`.
fn find_last(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    (0..=haystack.len() - needle.len())
        .rev()
        .find(|&at| &haystack[at..at + needle.len()] == needle)
}

#[cfg(test)]
mod tests {
    use super::find_last;

    #[test]
    fn finds_the_last_match() {
        assert_eq!(find_last(b"a\"seq\":9,\"seq\":9}", b"\"seq\":9"), Some(9));
        assert_eq!(find_last(b"abc", b"x"), None);
        assert_eq!(find_last(b"", b"x"), None);
    }
}
