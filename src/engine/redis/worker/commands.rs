//! How the Redis task turns the hub's requests into one pipeline's
//! commands (publishes as Lua scripts, presence writes, watches, reads)
//! and reads each request's replies back into answers.

use super::replies::{
    as_strings, as_u64, members_of, parse_entries, read_sequenced, user_json, valid_seq,
};
use super::*;

/// How one request's commands sit in a pipeline, to read its answer.
pub(super) enum Slot {
    Publish {
        token: u64,
        room: bool,
    },
    Read {
        token: u64,
        room: String,
        after: u64,
    },
    WatchRoom {
        room: String,
    },
    /// A user's or everyone's channel: subscribed, nothing to read.
    WatchOther {
        topic: Topic,
    },
    Presence {
        token: u64,
    },
    Disconnect {
        token: u64,
    },
    Rooms {
        token: u64,
    },
    Room {
        token: u64,
        room: String,
    },
    /// Commands whose replies nobody waits for.
    Ignored {
        count: usize,
    },
}

impl Worker {
    /// Adds the commands of `ask` to `pipe`; returns how to read them.
    pub(super) fn command(
        &self,
        pipe: &mut redis::Pipeline,
        ask: &Ask,
        now: u64,
        expires: u64,
    ) -> Slot {
        let keys = &self.keys;
        match ask {
            Ask::Publish(publish) => self.publish_command(pipe, publish, now),
            Ask::Watch(Topic::Room(room)) => {
                pipe.cmd("HGET").arg(keys.meta(room)).arg("seq");
                pipe.cmd("XRANGE")
                    .arg(keys.history(room))
                    .arg("-")
                    .arg("+")
                    .arg("COUNT")
                    .arg(1);
                Slot::WatchRoom { room: room.clone() }
            }
            Ask::Watch(topic) => Slot::WatchOther {
                topic: topic.clone(),
            },
            Ask::Unwatch(_) => Slot::Ignored { count: 0 },
            Ask::Joined { room, conn, user } => {
                pipe.cmd("ZADD")
                    .arg(keys.presence(room))
                    .arg(expires)
                    .arg(conn);
                pipe.cmd("HSET")
                    .arg(keys.members(room))
                    .arg(conn)
                    .arg(user_json(user.as_deref()));
                pipe.cmd("SADD").arg(keys.rooms()).arg(room);
                Slot::Ignored { count: 3 }
            }
            Ask::Rooms { token } => {
                pipe.cmd("EVALSHA")
                    .arg(&self.scripts.rooms)
                    .arg(1)
                    .arg(keys.rooms())
                    .arg(now)
                    .arg(keys.prefix());
                Slot::Rooms { token: *token }
            }
            Ask::Room { token, room } => {
                pipe.cmd("EVALSHA")
                    .arg(&self.scripts.presence)
                    .arg(2)
                    .arg(keys.presence(room))
                    .arg(keys.members(room))
                    .arg(now);
                pipe.cmd("HGET").arg(keys.meta(room)).arg("seq");
                pipe.cmd("XLEN").arg(keys.history(room));
                Slot::Room {
                    token: *token,
                    room: room.clone(),
                }
            }
            Ask::Left { room, conn } => {
                pipe.cmd("ZREM").arg(keys.presence(room)).arg(conn);
                pipe.cmd("HDEL").arg(keys.members(room)).arg(conn);
                Slot::Ignored { count: 2 }
            }
            Ask::Connected { conn, user } => {
                pipe.cmd("ZADD").arg(keys.conns()).arg(expires).arg(conn);
                pipe.cmd("HSET")
                    .arg(keys.conn_nodes())
                    .arg(conn)
                    .arg(&self.settings.node);
                if let Some(user) = user {
                    pipe.cmd("ZADD")
                        .arg(keys.user_presence(user))
                        .arg(expires)
                        .arg(conn);
                    return Slot::Ignored { count: 3 };
                }
                Slot::Ignored { count: 2 }
            }
            Ask::Disconnected { conn, user } => {
                pipe.cmd("ZREM").arg(keys.conns()).arg(conn);
                pipe.cmd("HDEL").arg(keys.conn_nodes()).arg(conn);
                if let Some(user) = user {
                    pipe.cmd("ZREM").arg(keys.user_presence(user)).arg(conn);
                    return Slot::Ignored { count: 3 };
                }
                Slot::Ignored { count: 2 }
            }
            Ask::Presence { token, room } => {
                pipe.cmd("EVALSHA")
                    .arg(&self.scripts.presence)
                    .arg(2)
                    .arg(keys.presence(room))
                    .arg(keys.members(room))
                    .arg(now);
                Slot::Presence { token: *token }
            }
            Ask::Disconnect { token, conn } => {
                pipe.cmd("EVALSHA")
                    .arg(&self.scripts.disconnect)
                    .arg(2)
                    .arg(keys.conns())
                    .arg(keys.conn_nodes())
                    .arg(conn)
                    .arg(now)
                    .arg(keys.prefix());
                Slot::Disconnect { token: *token }
            }
            Ask::Health {
                component,
                status,
                detail,
            } => {
                let state = serde_json::json!({"status": status, "detail": detail}).to_string();
                pipe.cmd("HSET")
                    .arg(keys.health())
                    .arg(component)
                    .arg(&state);
                let message = format!("h\n{}\n{component}\n{state}", self.settings.node);
                pipe.cmd("PUBLISH").arg(keys.all_channel()).arg(message);
                Slot::Ignored { count: 2 }
            }
        }
    }

    pub(super) fn publish_command(
        &self,
        pipe: &mut redis::Pipeline,
        publish: &Sequence,
        now: u64,
    ) -> Slot {
        let keys = &self.keys;
        let (key, id, correlation_id) = match &publish.key {
            Some((key, id, corr)) => (keys.idempotency(key), id.as_str(), corr.as_str()),
            None => (String::new(), "", ""),
        };
        match &publish.topic {
            Topic::Room(room) => {
                pipe.cmd("EVALSHA")
                    .arg(&self.scripts.publish_room)
                    .arg(7)
                    .arg(keys.epoch())
                    .arg(keys.meta(room))
                    .arg(keys.history(room))
                    .arg(keys.presence(room))
                    .arg(key)
                    .arg(keys.rooms())
                    .arg(keys.clock())
                    .arg(&self.epoch)
                    .arg(keys.room_channel(room))
                    .arg(publish.head.as_ref())
                    .arg(publish.tail.as_ref())
                    .arg(publish.except.as_deref().unwrap_or(""))
                    .arg(self.settings.history_size)
                    .arg(now)
                    .arg(KEY_WINDOW_MS)
                    .arg(id)
                    .arg(correlation_id)
                    .arg(room);
                Slot::Publish {
                    token: publish.token,
                    room: true,
                }
            }
            topic => {
                let (set, channel) = match topic {
                    Topic::User(user) => (keys.user_presence(user), keys.user_channel(user)),
                    _ => (keys.conns(), keys.all_channel()),
                };
                pipe.cmd("EVALSHA")
                    .arg(&self.scripts.publish_other)
                    .arg(4)
                    .arg(keys.epoch())
                    .arg(set)
                    .arg(key)
                    .arg(keys.clock())
                    .arg(&self.epoch)
                    .arg(channel)
                    .arg(publish.head.as_ref())
                    .arg(now)
                    .arg(KEY_WINDOW_MS)
                    .arg(id)
                    .arg(correlation_id);
                Slot::Publish {
                    token: publish.token,
                    room: false,
                }
            }
        }
    }

    /// Reads one request's replies and answers it; `true` when a publish
    /// found another epoch in Redis.
    pub(super) fn answer(
        &mut self,
        slot: Slot,
        replies: &mut impl Iterator<Item = redis::RedisResult<Value>>,
    ) -> bool {
        let mut next = || {
            replies
                .next()
                .unwrap_or_else(|| Err(redis::RedisError::from(std::io::Error::other("no reply"))))
                .map_err(|e| EngineError::new(e.to_string()))
        };
        match slot {
            Slot::Ignored { count } => {
                for _ in 0..count {
                    let _ = next();
                }
            }
            Slot::WatchOther { topic } => self.answers.push(Answer::Watching {
                topic,
                result: Ok((0, 1)),
            }),
            Slot::Publish { token, room } => {
                let reply = next();
                if let Ok(Value::Array(items)) = &reply
                    && let Some(clock) = items.get(3).and_then(as_u64)
                {
                    self.clock = self.clock.max(clock);
                }
                let (result, lost) = read_sequenced(reply, room);
                self.answers.push(Answer::Sequenced { token, result });
                return lost;
            }
            Slot::Read { token, room, after } => {
                let result = next().map(|v| {
                    let mut events = parse_entries(&v, &self.settings);
                    events.retain(|e| e.0 > after);
                    events
                        .into_iter()
                        .map(|(seq, _, json)| StoredEvent { seq, json })
                        .collect()
                });
                self.answers.push(Answer::Read {
                    token,
                    room,
                    result,
                });
            }
            Slot::WatchRoom { room } => {
                let last = next();
                let first = next();
                let result = match (last, first) {
                    (Ok(last), Ok(first)) => match valid_seq(as_u64(&last).unwrap_or(0)) {
                        Some(last) => {
                            let oldest = parse_entries(&first, &self.settings)
                                .first()
                                .map_or(last + 1, |e| e.0);
                            if let Some(known) = self.rooms.get_mut(&room) {
                                *known = last;
                            }
                            Ok((last, oldest))
                        }
                        None => Err(EngineError::new("the room's seq in Redis is out of range")),
                    },
                    (Err(e), _) | (_, Err(e)) => Err(e),
                };
                self.answers.push(Answer::Watching {
                    topic: Topic::Room(room),
                    result,
                });
            }
            Slot::Presence { token } => {
                let result = next().map(|v| members_of(&v));
                self.answers.push(Answer::Presence { token, result });
            }
            Slot::Disconnect { token } => {
                let result = next().map(|v| as_u64(&v) == Some(1));
                self.answers.push(Answer::Disconnected { token, result });
            }
            Slot::Rooms { token } => {
                let result = next().map(|v| {
                    let flat = as_strings(&v);
                    let mut rooms: Vec<ClusterRoom> = flat
                        .chunks_exact(3)
                        .map(|r| ClusterRoom {
                            room: r[0].clone(),
                            subscribers: r[1].parse().unwrap_or(0),
                            last_seq: r[2].parse().unwrap_or(0),
                            members: None,
                        })
                        .collect();
                    rooms.sort_by(|a, b| a.room.cmp(&b.room));
                    rooms
                });
                self.answers.push(Answer::Rooms { token, result });
            }
            Slot::Room { token, room } => {
                let members = next().map(|v| members_of(&v));
                let seq = next();
                let held = next();
                let result = match (members, seq, held) {
                    (Ok(members), Ok(seq), Ok(held)) => {
                        let held = as_u64(&held).unwrap_or(0);
                        if members.is_empty() && held == 0 {
                            Ok(Vec::new())
                        } else {
                            Ok(vec![ClusterRoom {
                                room,
                                subscribers: members.len(),
                                last_seq: as_u64(&seq).unwrap_or(0),
                                members: Some(members),
                            }])
                        }
                    }
                    (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => Err(e),
                };
                self.answers.push(Answer::Rooms { token, result });
            }
        }
        false
    }
}
