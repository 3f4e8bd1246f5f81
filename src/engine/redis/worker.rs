//! The Redis thread's loop: it owns the command and pub/sub connections
//! and everything the cluster needs this hub to have told Redis (its
//! watched rooms with the last seq forwarded, its memberships for the
//! presence refresh), and answers the hub through its [`Sink`].
//!
//! One step at a time: a batch of the hub's requests (one pipeline), the
//! pub/sub messages that arrived (forwarded in seq order per room, each
//! once; a gap is filled from the shared history), or a tick (the
//! delivery self-check through this node's own channel, the node's
//! announcement, the presence refresh, the epoch). A failure drops both
//! connections; the thread reconnects, subscribes again and recovers each
//! watched room from the shared history before it answers anything new.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::time::{Duration, Instant};

use async_channel::Receiver;
use futures_lite::{FutureExt, StreamExt};
use redis::aio::{MultiplexedConnection, PubSubSink};
use redis::{AsyncConnectionConfig, Client, Value};

use super::keys::{self, Channel, Keys};
use super::{RedisSettings, Request};
use crate::engine::{
    Answer, Ask, ClusterRoom, EngineError, Sequence, Sequenced, Sink, StoredEvent, Topic, unix_ms,
};
use crate::log::as_json;
use crate::protocol::{Published, new_uuid};

/// A Redis command that has not answered by then counts as a failure.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the thread looks at its connections and its self-check.
const TICK: Duration = Duration::from_millis(250);
/// A self-check that has not come back by then marks the path broken.
const ECHO_DEADLINE: Duration = Duration::from_secs(3);
/// The delivery path is checked at least this often, and at least every
/// `heartbeat_interval`.
const MAX_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// Pause between reconnect attempts while Redis is gone.
const RETRY_INTERVAL: Duration = Duration::from_millis(500);
/// Idempotency keys last this long (PROTOCOL.md section 5).
const KEY_WINDOW_MS: u64 = 300_000;
/// Debug builds only: the first pub/sub connection silently stops handing
/// over messages after this many (the self-check test's fault hook: a
/// subscription that is broken while commands still work).
const MUTE_PUBSUB_AFTER_ENV: &str = "WSHUB_TEST_MUTE_PUBSUB_AFTER";

/// The fault hook's count, in debug builds when it is set.
fn mute_after() -> Option<u64> {
    if !cfg!(debug_assertions) {
        return None;
    }
    std::env::var(MUTE_PUBSUB_AFTER_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
}

/// A failure is followed by an immediate reconnect (a killed pub/sub
/// connection, a failover) unless more than [`QUICK_RETRIES`] came
/// within this window: Redis is then declared down at once.
const QUICK_RETRY_WINDOW: Duration = Duration::from_secs(10);
/// See [`QUICK_RETRY_WINDOW`].
const QUICK_RETRIES: usize = 5;
/// Requests one pipeline takes at most.
const MAX_BATCH: usize = 4096;
/// Time the thread gives itself at shutdown to take its connections out
/// of the cluster's presence.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(1);

/// Runs `future`, failing after `limit`.
pub(super) async fn timeout<T>(
    limit: Duration,
    future: impl Future<Output = Result<T, String>>,
) -> Result<T, String> {
    future
        .or(async {
            smol::Timer::after(limit).await;
            Err(format!("no answer within {} ms", limit.as_millis()))
        })
        .await
}

/// A command connection whose requests time out.
pub(super) async fn connect(client: &Client) -> Result<MultiplexedConnection, String> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(RESPONSE_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|e| e.to_string())
}

/// The cluster's epoch, minted if Redis has none (its data was lost, or
/// this is the first hub).
pub(super) async fn ensure_epoch(
    conn: &mut MultiplexedConnection,
    keys: &Keys,
) -> Result<String, String> {
    let mut pipe = redis::pipe();
    pipe.cmd("SET")
        .arg(keys.epoch())
        .arg(new_uuid())
        .arg("NX")
        .ignore()
        .cmd("GET")
        .arg(keys.epoch());
    let (epoch,): (Option<String>,) = pipe.query_async(conn).await.map_err(|e| e.to_string())?;
    epoch.ok_or_else(|| "the epoch key vanished as it was set".to_string())
}

/// What the pub/sub reader hands the loop.
enum Incoming {
    Message {
        generation: u64,
        channel: String,
        payload: Vec<u8>,
    },
    Closed {
        generation: u64,
    },
}

/// What woke the loop.
enum Wake {
    Request(Request),
    Incoming(Incoming),
    Tick,
    Closed,
}

/// The Lua scripts' SHA1s, loaded on every connect.
struct Scripts {
    publish_room: String,
    publish_other: String,
    presence: String,
    disconnect: String,
    sweep: String,
    rooms: String,
}

impl Scripts {
    fn new() -> Self {
        let sha = |src: &str| redis::Script::new(src).get_hash().to_string();
        Self {
            publish_room: sha(keys::PUBLISH_ROOM),
            publish_other: sha(keys::PUBLISH_OTHER),
            presence: sha(keys::PRESENCE),
            disconnect: sha(keys::DISCONNECT),
            sweep: sha(keys::SWEEP),
            rooms: sha(keys::ROOMS),
        }
    }
}

/// A connection of this hub, as the presence refresh needs it.
#[derive(Debug, Clone)]
struct Local {
    user: Option<String>,
    rooms: HashSet<String>,
}

/// How one request's commands sit in a pipeline, to read its answer.
enum Slot {
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

/// The Redis thread's state.
pub(super) struct Worker {
    client: Client,
    keys: Keys,
    settings: RedisSettings,
    epoch: String,
    sink: Sink,
    scripts: Scripts,
    conn: Option<MultiplexedConnection>,
    pubsub: Option<PubSubSink>,
    /// Reads the pub/sub connection; dropping it stops the reading.
    reader: Option<smol::Task<()>>,
    generation: u64,
    incoming_tx: async_channel::Sender<Incoming>,
    incoming_rx: Receiver<Incoming>,
    /// Whether the hub was last told `up`.
    reported_up: bool,
    /// Requests held while a reconnect is tried, before Redis is declared down.
    held: Vec<Request>,
    next_retry: Instant,
    /// Watched rooms with the last seq handed to the hub.
    rooms: HashMap<String, u64>,
    users: HashSet<String>,
    /// The channels the pub/sub connection is subscribed to.
    subscribed: HashSet<String>,
    locals: HashMap<String, Local>,
    /// Presence entries to take out once Redis is back.
    stale: Vec<Ask>,
    /// The self-check in flight: its nonce and when it was sent.
    check: Option<(String, Instant)>,
    last_check: Instant,
    next_refresh: Instant,
    answers: Vec<Answer>,
    hub_gone: bool,
    /// Failures within the last [`QUICK_RETRY_WINDOW`].
    recent_fails: Vec<Instant>,
}

impl Worker {
    pub fn new(
        client: Client,
        keys: Keys,
        settings: RedisSettings,
        epoch: String,
        sink: Sink,
    ) -> Self {
        let (incoming_tx, incoming_rx) = async_channel::unbounded();
        let now = Instant::now();
        Self {
            client,
            keys,
            settings,
            epoch,
            sink,
            scripts: Scripts::new(),
            conn: None,
            pubsub: None,
            reader: None,
            generation: 0,
            incoming_tx,
            incoming_rx,
            reported_up: true,
            held: Vec::new(),
            next_retry: now,
            rooms: HashMap::new(),
            users: HashSet::new(),
            subscribed: HashSet::new(),
            locals: HashMap::new(),
            stale: Vec::new(),
            check: None,
            last_check: now,
            next_refresh: now,
            answers: Vec::new(),
            hub_gone: false,
            recent_fails: Vec::new(),
        }
    }

    fn live(&self) -> bool {
        self.conn.is_some() && self.pubsub.is_some()
    }

    /// Serves the hub's requests until it drops its end of `requests`.
    pub async fn run(mut self, requests: Receiver<Request>) {
        let incoming = self.incoming_rx.clone();
        let mut next_tick = Instant::now();
        loop {
            let wake = async { requests.recv().await.map_or(Wake::Closed, Wake::Request) }
                .or(async {
                    match incoming.recv().await {
                        Ok(message) => Wake::Incoming(message),
                        // The worker holds a sender: never closed.
                        Err(_) => std::future::pending().await,
                    }
                })
                .or(async {
                    smol::Timer::at(next_tick).await;
                    Wake::Tick
                })
                .await;
            match wake {
                Wake::Closed => break,
                Wake::Request(first) => {
                    let mut batch = vec![first];
                    while batch.len() < MAX_BATCH {
                        match requests.try_recv() {
                            Ok(request) => batch.push(request),
                            Err(_) => break,
                        }
                    }
                    self.take(batch).await;
                }
                Wake::Incoming(first) => {
                    self.incoming(first).await;
                    while let Ok(more) = incoming.try_recv() {
                        self.incoming(more).await;
                    }
                }
                Wake::Tick => {
                    self.tick().await;
                    next_tick = Instant::now() + TICK;
                }
            }
            if !self.live() && Instant::now() >= self.next_retry {
                self.reconnect().await;
            }
            self.flush();
            if self.hub_gone {
                return;
            }
        }
        self.goodbye().await;
    }

    /// Hands the answers gathered so far to the hub.
    fn flush(&mut self) {
        if !self.answers.is_empty() {
            let answers = std::mem::take(&mut self.answers);
            if !(self.sink)(answers) {
                self.hub_gone = true;
            }
        }
    }

    /// Takes a batch of requests: now when connected, held while a first
    /// reconnect is tried, refused once Redis is declared down.
    async fn take(&mut self, batch: Vec<Request>) {
        for request in &batch {
            if let Request::Ask(ask) = request {
                self.track(ask);
            }
        }
        if self.live() {
            self.run_batch(batch).await;
        } else if self.reported_up {
            self.held.extend(batch);
        } else {
            for request in batch {
                self.refuse(request, "Redis cannot be reached");
            }
        }
    }

    /// Keeps this hub's own record of what Redis must know, so that a
    /// refresh or a reconnect can tell it again.
    fn track(&mut self, ask: &Ask) {
        match ask {
            Ask::Connected { conn, user } => {
                self.locals.insert(
                    conn.clone(),
                    Local {
                        user: user.clone(),
                        rooms: HashSet::new(),
                    },
                );
            }
            Ask::Disconnected { conn, .. } => {
                self.locals.remove(conn);
            }
            Ask::Joined { room, conn, .. } => {
                if let Some(local) = self.locals.get_mut(conn) {
                    local.rooms.insert(room.clone());
                }
            }
            Ask::Left { room, conn } => {
                if let Some(local) = self.locals.get_mut(conn) {
                    local.rooms.remove(room);
                }
            }
            _ => {}
        }
    }

    /// Answers `request` with a failure saying `why` (presence changes are
    /// kept to be told once Redis is back).
    fn refuse(&mut self, request: Request, why: &str) {
        let error = EngineError::new(why);
        match request {
            Request::Read { token, room, .. } => self.answers.push(Answer::Read {
                token,
                room,
                result: Err(error),
            }),
            Request::Ask(ask) => match ask {
                Ask::Publish(publish) => self.answers.push(Answer::Sequenced {
                    token: publish.token,
                    result: Err(error),
                }),
                Ask::Watch(topic) => {
                    self.watch_topic(&topic, true);
                    self.answers.push(Answer::Watching {
                        topic,
                        result: Err(error),
                    });
                }
                Ask::Unwatch(topic) => self.watch_topic(&topic, true),
                Ask::Presence { token, .. } => self.answers.push(Answer::Presence {
                    token,
                    result: Err(error),
                }),
                Ask::Disconnect { token, .. } => self.answers.push(Answer::Disconnected {
                    token,
                    result: Err(error),
                }),
                Ask::Rooms { token } | Ask::Room { token, .. } => {
                    self.answers.push(Answer::Rooms {
                        token,
                        result: Err(error),
                    });
                }
                ask @ (Ask::Left { .. } | Ask::Disconnected { .. }) => self.stale.push(ask),
                Ask::Joined { .. } | Ask::Connected { .. } | Ask::Health { .. } => {}
            },
        }
    }

    /// Records a watch (`remove` false) or an unwatch of `topic`.
    fn watch_topic(&mut self, topic: &Topic, remove: bool) {
        match (topic, remove) {
            (Topic::Room(room), false) => {
                self.rooms.entry(room.clone()).or_insert(0);
            }
            (Topic::Room(room), true) => {
                self.rooms.remove(room);
            }
            (Topic::User(user), false) => {
                self.users.insert(user.clone());
            }
            (Topic::User(user), true) => {
                self.users.remove(user);
            }
            (Topic::Everyone, _) => {}
        }
    }

    /// The channels this hub must be subscribed to now.
    fn wanted(&self) -> HashSet<String> {
        let mut wanted: HashSet<String> = self
            .rooms
            .keys()
            .map(|r| self.keys.room_channel(r))
            .chain(self.users.iter().map(|u| self.keys.user_channel(u)))
            .collect();
        wanted.insert(self.keys.all_channel());
        wanted.insert(self.keys.node_channel(&self.settings.node));
        wanted
    }

    /// Subscribes to what is wanted and not subscribed, and unsubscribes
    /// from the rest, confirmed by Redis.
    async fn resubscribe(&mut self) -> Result<(), String> {
        let wanted = self.wanted();
        let add: Vec<String> = wanted.difference(&self.subscribed).cloned().collect();
        let drop: Vec<String> = self.subscribed.difference(&wanted).cloned().collect();
        let Some(sink) = self.pubsub.as_mut() else {
            return Err("no pub/sub connection".into());
        };
        if !add.is_empty() {
            timeout(RESPONSE_TIMEOUT, async {
                sink.subscribe(add.clone()).await.map_err(|e| e.to_string())
            })
            .await?;
            self.subscribed.extend(add);
        }
        if !drop.is_empty() {
            timeout(RESPONSE_TIMEOUT, async {
                sink.unsubscribe(drop.clone())
                    .await
                    .map_err(|e| e.to_string())
            })
            .await?;
            for channel in drop {
                self.subscribed.remove(&channel);
            }
        }
        Ok(())
    }

    /// Runs a batch of requests while connected: subscriptions first, then
    /// one pipeline, then the answers in the order of the requests.
    async fn run_batch(&mut self, batch: Vec<Request>) {
        for request in &batch {
            match request {
                Request::Ask(Ask::Watch(topic)) => self.watch_topic(topic, false),
                Request::Ask(Ask::Unwatch(topic)) => self.watch_topic(topic, true),
                _ => {}
            }
        }
        let started = Instant::now();
        if let Err(e) = self.resubscribe().await {
            self.fail(&format!("pub/sub: {e}"), batch);
            return;
        }
        let now = unix_ms();
        let expires = now + self.presence_ttl_ms();
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        let mut slots = Vec::with_capacity(batch.len());
        for request in &batch {
            let slot = match request {
                Request::Read { token, room, after } => {
                    pipe.cmd("XRANGE")
                        .arg(self.keys.history(room))
                        .arg(after.saturating_add(1))
                        .arg("+");
                    Slot::Read {
                        token: *token,
                        room: room.clone(),
                        after: *after,
                    }
                }
                Request::Ask(ask) => self.command(&mut pipe, ask, now, expires),
            };
            slots.push(slot);
        }
        let replies: Vec<redis::RedisResult<Value>> = match self.conn.as_mut() {
            None => Vec::new(),
            Some(conn) if !pipe.is_empty() => match pipe.query_async(conn).await {
                Ok(replies) => replies,
                Err(e) => {
                    self.fail(&format!("commands: {e}"), batch);
                    return;
                }
            },
            Some(_) => Vec::new(),
        };
        self.answers.push(Answer::Timing {
            op: "append",
            seconds: started.elapsed().as_secs_f64(),
        });
        let mut replies = replies.into_iter();
        let mut epoch_lost = false;
        for slot in slots {
            epoch_lost |= self.answer(slot, &mut replies);
        }
        if epoch_lost {
            self.check_epoch().await;
        }
    }

    /// Adds the commands of `ask` to `pipe`; returns how to read them.
    fn command(&self, pipe: &mut redis::Pipeline, ask: &Ask, now: u64, expires: u64) -> Slot {
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

    fn publish_command(&self, pipe: &mut redis::Pipeline, publish: &Sequence, now: u64) -> Slot {
        let keys = &self.keys;
        let (key, id, correlation_id) = match &publish.key {
            Some((key, id, corr)) => (keys.idempotency(key), id.as_str(), corr.as_str()),
            None => (String::new(), "", ""),
        };
        match &publish.topic {
            Topic::Room(room) => {
                pipe.cmd("EVALSHA")
                    .arg(&self.scripts.publish_room)
                    .arg(6)
                    .arg(keys.epoch())
                    .arg(keys.meta(room))
                    .arg(keys.history(room))
                    .arg(keys.presence(room))
                    .arg(key)
                    .arg(keys.rooms())
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
                    .arg(3)
                    .arg(keys.epoch())
                    .arg(set)
                    .arg(key)
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
    fn answer(
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
                    (Ok(last), Ok(first)) => {
                        let last = as_u64(&last).unwrap_or(0);
                        let oldest = parse_entries(&first, &self.settings)
                            .first()
                            .map_or(last + 1, |e| e.0);
                        if let Some(known) = self.rooms.get_mut(&room) {
                            *known = last;
                        }
                        Ok((last, oldest))
                    }
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

    /// Handles what the pub/sub reader saw.
    async fn incoming(&mut self, incoming: Incoming) {
        match incoming {
            Incoming::Closed { generation } if generation == self.generation => {
                self.fail("the pub/sub connection closed", Vec::new());
            }
            Incoming::Message {
                generation,
                channel,
                payload,
            } if generation == self.generation => self.message(&channel, payload).await,
            // From a connection already replaced.
            Incoming::Closed { .. } | Incoming::Message { .. } => {}
        }
    }

    async fn message(&mut self, channel: &str, payload: Vec<u8>) {
        let Some(channel) = self.keys.parse_channel(channel) else {
            return;
        };
        match channel {
            Channel::Room(room) => {
                let Some((seq, except, json)) = parse_room_message(&payload) else {
                    return;
                };
                let Some(&last) = self.rooms.get(room) else {
                    return; // unwatched meanwhile
                };
                if seq <= last {
                    return; // already handed over (a recovery read had it)
                }
                let room = room.to_string();
                if seq > last + 1 {
                    if let Err(e) = self.fill(&room, last, Some(seq - 1)).await {
                        // The reconnect recovers this one from the history.
                        self.fail(&format!("reading a gap: {e}"), Vec::new());
                        return;
                    }
                    if self.rooms.get(&room).is_some_and(|&l| seq <= l) {
                        return;
                    }
                }
                self.forward_room(&room, seq, except, json);
            }
            Channel::User(user) => {
                if let Some(json) = payload.strip_prefix(b"e\n") {
                    self.answers.push(Answer::Event {
                        topic: Topic::User(user.to_string()),
                        seq: None,
                        except: None,
                        json: bytes::Bytes::copy_from_slice(json),
                    });
                }
            }
            Channel::All => {
                if let Some(json) = payload.strip_prefix(b"e\n") {
                    self.answers.push(Answer::Event {
                        topic: Topic::Everyone,
                        seq: None,
                        except: None,
                        json: bytes::Bytes::copy_from_slice(json),
                    });
                } else if let Some(health) = payload.strip_prefix(b"h\n") {
                    self.remote_health(health);
                }
            }
            Channel::Node(node) if node == self.settings.node => {
                let text = String::from_utf8_lossy(&payload);
                if let Some(nonce) = text.strip_prefix('p') {
                    if self.check.as_ref().is_some_and(|(n, _)| n == nonce) {
                        self.check = None;
                    }
                } else if let Some(conn) = text.strip_prefix('d') {
                    self.answers.push(Answer::Kick {
                        conn: conn.to_string(),
                    });
                }
            }
            Channel::Node(_) => {}
        }
    }

    fn remote_health(&mut self, message: &[u8]) {
        let text = String::from_utf8_lossy(message);
        let mut parts = text.splitn(3, '\n');
        let (Some(node), Some(component), Some(state)) = (parts.next(), parts.next(), parts.next())
        else {
            return;
        };
        if node == self.settings.node {
            return; // set here already
        }
        self.push_health(component, state);
    }

    fn push_health(&mut self, component: &str, state: &str) {
        let Ok(state) = serde_json::from_str::<serde_json::Value>(state) else {
            return;
        };
        let Some(status) = state["status"].as_str() else {
            return;
        };
        self.answers.push(Answer::RemoteHealth {
            component: component.to_string(),
            status: status.to_string(),
            detail: state["detail"].as_str().map(str::to_string),
        });
    }

    fn forward_room(&mut self, room: &str, seq: u64, except: Option<String>, json: bytes::Bytes) {
        if let Some(last) = self.rooms.get_mut(room) {
            *last = seq;
        }
        self.answers.push(Answer::Event {
            topic: Topic::Room(room.to_string()),
            seq: Some(seq),
            except,
            json,
        });
    }

    /// Hands over room `room`'s events after `last` up to `until` (or all
    /// the history holds, with `until` None) from the shared history; when
    /// the first of them is gone, the hub is told they were missed.
    async fn fill(&mut self, room: &str, last: u64, until: Option<u64>) -> Result<(), String> {
        let Some(conn) = self.conn.as_mut() else {
            return Err("no command connection".into());
        };
        let end = until.map_or_else(|| "+".to_string(), |u| u.to_string());
        let started = Instant::now();
        let reply: Value = redis::cmd("XRANGE")
            .arg(self.keys.history(room))
            .arg(last + 1)
            .arg(end)
            .query_async(conn)
            .await
            .map_err(|e| e.to_string())?;
        self.answers.push(Answer::Timing {
            op: "read",
            seconds: started.elapsed().as_secs_f64(),
        });
        let events = parse_entries(&reply, &self.settings);
        let first = events.first().map(|e| e.0);
        let expected = last + 1;
        let gone_until = match (first, until) {
            (Some(first), _) if first > expected => Some(first),
            (None, Some(until)) => Some(until + 1),
            _ => None,
        };
        if let Some(oldest_seq) = gone_until {
            tracing::warn!(
                room = as_json(room),
                after = as_json(last),
                oldest_seq = as_json(oldest_seq),
                "events missed while away from Redis are gone from the shared history"
            );
            self.answers.push(Answer::Missed {
                room: room.to_string(),
                oldest_seq,
            });
            if let Some(last) = self.rooms.get_mut(room) {
                *last = oldest_seq - 1;
            }
        }
        for (seq, except, json) in events {
            if self.rooms.get(room).is_some_and(|&l| seq > l) {
                self.forward_room(room, seq, except, json);
            }
        }
        Ok(())
    }
}

impl Worker {
    /// The periodic work: reconnecting, the self-check, the node's
    /// announcement, the presence refresh and the epoch.
    async fn tick(&mut self) {
        let now = Instant::now();
        if !self.live() {
            return;
        }
        if let Some((_, sent)) = &self.check
            && sent.elapsed() > ECHO_DEADLINE
        {
            // Commands work but delivery does not: say so, then reconnect.
            let why = "the delivery path is broken: this hub's own check did not come back";
            self.fail(why, Vec::new());
            self.declare_down(why);
            return;
        }
        let interval = self.settings.heartbeat_interval.min(MAX_CHECK_INTERVAL);
        if self.check.is_none() && self.last_check.elapsed() >= interval {
            self.self_check().await;
        }
        if self.live() && now >= self.next_refresh {
            self.refresh().await;
        }
    }

    /// Publishes a nonce on this node's own channel (it must come back
    /// through the pub/sub connection), announces the node and reads the
    /// epoch.
    async fn self_check(&mut self) {
        let nonce = new_uuid();
        let now = unix_ms();
        let mut pipe = redis::pipe();
        pipe.cmd("PUBLISH")
            .arg(self.keys.node_channel(&self.settings.node))
            .arg(format!("p{nonce}"))
            .ignore()
            .cmd("ZADD")
            .arg(self.keys.nodes())
            .arg(now + self.presence_ttl_ms())
            .arg(&self.settings.node)
            .ignore()
            .cmd("GET")
            .arg(self.keys.epoch());
        let started = Instant::now();
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let reply: Result<(Option<String>,), _> = pipe.query_async(conn).await;
        self.last_check = Instant::now();
        match reply {
            Ok((epoch,)) => {
                self.answers.push(Answer::Timing {
                    op: "read",
                    seconds: started.elapsed().as_secs_f64(),
                });
                self.check = Some((nonce, Instant::now()));
                if epoch.as_deref() != Some(self.epoch.as_str()) {
                    self.check_epoch().await;
                }
            }
            Err(e) => self.fail(&format!("commands: {e}"), Vec::new()),
        }
    }

    /// Tells Redis again about every connection and membership of this hub
    /// (their entries expire otherwise), and sweeps expired ones.
    async fn refresh(&mut self) {
        let now = unix_ms();
        let expires = now + self.presence_ttl_ms();
        let mut pipe = redis::pipe();
        for (conn, local) in &self.locals {
            pipe.cmd("ZADD")
                .arg(self.keys.conns())
                .arg(expires)
                .arg(conn)
                .ignore();
            pipe.cmd("HSET")
                .arg(self.keys.conn_nodes())
                .arg(conn)
                .arg(&self.settings.node)
                .ignore();
            if let Some(user) = &local.user {
                pipe.cmd("ZADD")
                    .arg(self.keys.user_presence(user))
                    .arg(expires)
                    .arg(conn)
                    .ignore();
            }
            for room in &local.rooms {
                pipe.cmd("ZADD")
                    .arg(self.keys.presence(room))
                    .arg(expires)
                    .arg(conn)
                    .ignore();
                pipe.cmd("HSET")
                    .arg(self.keys.members(room))
                    .arg(conn)
                    .arg(user_json(local.user.as_deref()))
                    .ignore();
            }
        }
        for ask in std::mem::take(&mut self.stale) {
            let _ = self.command(&mut pipe, &ask, now, expires);
        }
        pipe.cmd("EVALSHA")
            .arg(&self.scripts.sweep)
            .arg(3)
            .arg(self.keys.conns())
            .arg(self.keys.conn_nodes())
            .arg(self.keys.nodes())
            .arg(now)
            .ignore();
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let result: Result<(), _> = pipe.query_async(conn).await;
        match result {
            Ok(()) => self.next_refresh = Instant::now() + self.refresh_interval(),
            Err(e) => self.fail(&format!("presence refresh: {e}"), Vec::new()),
        }
    }

    /// Presence entries live this long unless refreshed: a hub that dies
    /// leaves the cluster's presence within it.
    fn presence_ttl_ms(&self) -> u64 {
        self.settings.heartbeat_timeout.as_millis() as u64
    }

    fn refresh_interval(&self) -> Duration {
        (self.settings.heartbeat_timeout / 3).max(Duration::from_millis(200))
    }

    /// Reads the epoch (minting one if Redis lost it); a new one is told
    /// to the hub, which closes its connections with 1012.
    async fn check_epoch(&mut self) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        match ensure_epoch(conn, &self.keys).await {
            Ok(epoch) if epoch != self.epoch => self.new_epoch(epoch),
            Ok(_) => {}
            Err(e) => self.fail(&format!("epoch: {e}"), Vec::new()),
        }
    }

    fn new_epoch(&mut self, epoch: String) {
        tracing::warn!(
            old = as_json(&self.epoch),
            new = as_json(&epoch),
            "the cluster's epoch changed: its data in Redis was lost; closing every connection with 1012"
        );
        self.epoch = epoch.clone();
        for last in self.rooms.values_mut() {
            *last = 0;
        }
        self.answers.push(Answer::Epoch { epoch });
    }

    /// Drops both connections after a failure; requests of `batch` are
    /// held for the reconnect, which is tried at once.
    fn fail(&mut self, why: &str, batch: Vec<Request>) {
        tracing::warn!(error = as_json(why), "lost Redis; reconnecting");
        self.conn = None;
        self.pubsub = None;
        self.reader = None;
        self.subscribed.clear();
        self.check = None;
        // The batch's publishes may have run (a timeout says nothing of
        // it): they are answered as refused, never sent twice. The rest
        // is safe to repeat and waits for the reconnect, with what was
        // queued behind it.
        let mut held = Vec::new();
        for request in batch {
            if matches!(request, Request::Ask(Ask::Publish(_))) {
                self.refuse(request, &format!("Redis did not answer ({why})"));
            } else {
                held.push(request);
            }
        }
        held.append(&mut self.held);
        self.held = held;
        let now = Instant::now();
        self.recent_fails
            .retain(|at| now.duration_since(*at) < QUICK_RETRY_WINDOW);
        self.recent_fails.push(now);
        if self.recent_fails.len() > QUICK_RETRIES {
            self.declare_down(why);
            self.next_retry = Instant::now() + RETRY_INTERVAL;
        } else {
            self.next_retry = Instant::now();
        }
    }

    /// Tells the hub that Redis is gone (once) and refuses what was held.
    fn declare_down(&mut self, why: &str) {
        if self.reported_up {
            tracing::warn!(error = as_json(why), "Redis cannot be reached");
            self.reported_up = false;
            self.answers.push(Answer::Health {
                up: false,
                detail: Some(format!("Redis cannot be reached: {why}")),
            });
        }
        for request in std::mem::take(&mut self.held) {
            self.refuse(request, "Redis cannot be reached");
        }
    }

    /// Connects both connections, loads the scripts, subscribes to every
    /// channel this hub needs, recovers each watched room from the shared
    /// history, and then runs what was held.
    async fn reconnect(&mut self) {
        match self.try_connect().await {
            Ok(()) => {
                if !self.reported_up {
                    tracing::info!("Redis is back");
                    self.reported_up = true;
                    self.answers.push(Answer::Health {
                        up: true,
                        detail: None,
                    });
                }
                let held = std::mem::take(&mut self.held);
                if !held.is_empty() {
                    self.run_batch(held).await;
                }
            }
            Err(e) => {
                self.conn = None;
                self.pubsub = None;
                self.reader = None;
                self.subscribed.clear();
                self.next_retry = Instant::now() + RETRY_INTERVAL;
                self.declare_down(&e);
            }
        }
    }

    async fn try_connect(&mut self) -> Result<(), String> {
        let mut conn = timeout(RESPONSE_TIMEOUT, connect(&self.client)).await?;
        let mut load = redis::pipe();
        for src in [
            keys::PUBLISH_ROOM,
            keys::PUBLISH_OTHER,
            keys::PRESENCE,
            keys::DISCONNECT,
            keys::SWEEP,
            keys::ROOMS,
        ] {
            load.cmd("SCRIPT").arg("LOAD").arg(src).ignore();
        }
        load.cmd("HGETALL").arg(self.keys.health());
        let (health,): (Vec<(String, String)>,) = load
            .query_async(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        let epoch = ensure_epoch(&mut conn, &self.keys).await?;
        let client = self.client.clone();
        let pubsub = timeout(RESPONSE_TIMEOUT, async move {
            client.get_async_pubsub().await.map_err(|e| e.to_string())
        })
        .await?;
        let (sink, mut stream) = pubsub.split();
        self.generation += 1;
        let generation = self.generation;
        let tx = self.incoming_tx.clone();
        let mute = mute_after().filter(|_| generation == 1);
        self.reader = Some(smol::spawn(async move {
            let mut handed = 0u64;
            while let Some(message) = stream.next().await {
                if mute.is_some_and(|after| handed >= after) {
                    continue; // the fault hook: read, hand nothing over
                }
                handed += 1;
                let incoming = Incoming::Message {
                    generation,
                    channel: message.get_channel_name().to_string(),
                    payload: message.get_payload_bytes().to_vec(),
                };
                if tx.send(incoming).await.is_err() {
                    return;
                }
            }
            let _ = tx.send(Incoming::Closed { generation }).await;
        }));
        self.conn = Some(conn);
        self.pubsub = Some(sink);
        self.subscribed.clear();
        self.resubscribe().await?;
        for (component, state) in health {
            self.push_health(&component, &state);
        }
        if epoch != self.epoch {
            self.new_epoch(epoch);
        } else {
            // Subscribed again first: what is published from now on comes
            // through pub/sub; what came meanwhile is in the history.
            let rooms: Vec<(String, u64)> =
                self.rooms.iter().map(|(r, l)| (r.clone(), *l)).collect();
            for (room, last) in rooms {
                self.fill(&room, last, None).await?;
            }
        }
        self.check = None;
        self.last_check = Instant::now() - MAX_CHECK_INTERVAL;
        self.next_refresh = Instant::now();
        Ok(())
    }

    /// At shutdown: takes this hub's connections out of the presence.
    async fn goodbye(&mut self) {
        if !self.live() {
            return;
        }
        let mut pipe = redis::pipe();
        for (conn, local) in &self.locals {
            pipe.cmd("ZREM").arg(self.keys.conns()).arg(conn).ignore();
            pipe.cmd("HDEL")
                .arg(self.keys.conn_nodes())
                .arg(conn)
                .ignore();
            if let Some(user) = &local.user {
                pipe.cmd("ZREM")
                    .arg(self.keys.user_presence(user))
                    .arg(conn)
                    .ignore();
            }
            for room in &local.rooms {
                pipe.cmd("ZREM")
                    .arg(self.keys.presence(room))
                    .arg(conn)
                    .ignore();
                pipe.cmd("HDEL")
                    .arg(self.keys.members(room))
                    .arg(conn)
                    .ignore();
            }
        }
        pipe.cmd("ZREM")
            .arg(self.keys.nodes())
            .arg(&self.settings.node)
            .ignore();
        if let Some(conn) = self.conn.as_mut() {
            let _ = timeout(GOODBYE_TIMEOUT, async {
                pipe.query_async::<()>(conn)
                    .await
                    .map_err(|e| e.to_string())
            })
            .await;
        }
    }
}

/// A user as the members hash keeps it.
fn user_json(user: Option<&str>) -> String {
    serde_json::to_string(&user).unwrap_or_else(|_| "null".into())
}

/// A publish script's reply; `true` when Redis holds another epoch.
fn read_sequenced(
    reply: Result<Value, EngineError>,
    room: bool,
) -> (Result<Sequenced, EngineError>, bool) {
    let value = match reply {
        Ok(value) => value,
        Err(e) => return (Err(e), false),
    };
    let Value::Array(items) = value else {
        return (Err(EngineError::new("unexpected publish reply")), false);
    };
    let kind = items.first().and_then(as_string).unwrap_or_default();
    match kind.as_str() {
        "ok" => {
            let seq = items.get(1).and_then(as_u64).unwrap_or(0);
            let recipients = items.get(2).and_then(as_u64).unwrap_or(0) as usize;
            let seq = room.then_some(seq);
            (Ok(Sequenced::New { seq, recipients }), false)
        }
        "repeat" => {
            let text = items.get(1).and_then(as_string).unwrap_or_default();
            let mut parts = text.splitn(4, '\n');
            let id = parts.next().unwrap_or_default().to_string();
            let seq = parts.next().and_then(|s| s.parse().ok());
            let recipients = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
            let correlation_id = parts.next().unwrap_or_default().to_string();
            let published = Published {
                id,
                seq,
                recipients,
                correlation_id,
            };
            (Ok(Sequenced::Repeat(published)), false)
        }
        _ => (
            Err(EngineError::new(
                "the cluster's epoch changed; the event was not published",
            )),
            true,
        ),
    }
}

/// A room channel's message: seq, the publisher to skip, the JSON.
fn parse_room_message(payload: &[u8]) -> Option<(u64, Option<String>, bytes::Bytes)> {
    let mut parts = payload.splitn(3, |&b| b == b'\n');
    let seq = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    let except = std::str::from_utf8(parts.next()?).ok()?;
    let json = parts.next()?;
    let except = (!except.is_empty()).then(|| except.to_string());
    Some((seq, except, bytes::Bytes::copy_from_slice(json)))
}

/// An XRANGE reply's entries as (seq, publisher, JSON), oldest first,
/// without those older than `history_ttl`.
fn parse_entries(
    value: &Value,
    settings: &RedisSettings,
) -> Vec<(u64, Option<String>, bytes::Bytes)> {
    let Value::Array(entries) = value else {
        return Vec::new();
    };
    let cutoff = (!settings.history_ttl.is_zero())
        .then(|| unix_ms().saturating_sub(settings.history_ttl.as_millis() as u64));
    let mut out = Vec::with_capacity(entries.len());
    for entry in entries {
        let Value::Array(parts) = entry else { continue };
        let (Some(id), Some(Value::Array(fields))) =
            (parts.first().and_then(as_string), parts.get(1))
        else {
            continue;
        };
        let Some(seq) = id.split('-').next().and_then(|s| s.parse::<u64>().ok()) else {
            continue;
        };
        let mut json = None;
        let mut except = None;
        let mut at = 0;
        for pair in fields.chunks_exact(2) {
            match as_string(&pair[0]).as_deref() {
                Some("j") => {
                    if let Value::BulkString(bytes) = &pair[1] {
                        json = Some(bytes::Bytes::copy_from_slice(bytes));
                    }
                }
                Some("x") => except = as_string(&pair[1]).filter(|s| !s.is_empty()),
                Some("t") => at = as_u64(&pair[1]).unwrap_or(0),
                _ => {}
            }
        }
        if cutoff.is_some_and(|c| at < c) {
            continue;
        }
        if let Some(json) = json {
            out.push((seq, except, json));
        }
    }
    out
}

/// The presence script's reply as (connection, user), sorted.
fn members_of(value: &Value) -> Vec<(String, Option<String>)> {
    let flat = as_strings(value);
    let mut members: Vec<(String, Option<String>)> = flat
        .chunks_exact(2)
        .map(|pair| {
            let user = serde_json::from_str::<Option<String>>(&pair[1])
                .ok()
                .flatten();
            (pair[0].clone(), user)
        })
        .collect();
    members.sort();
    members
}

fn as_string(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        Value::Okay => Some("OK".into()),
        _ => None,
    }
}

fn as_u64(value: &Value) -> Option<u64> {
    match value {
        Value::Int(i) => u64::try_from(*i).ok(),
        other => as_string(other)?.parse().ok(),
    }
}

fn as_strings(value: &Value) -> Vec<String> {
    match value {
        Value::Array(items) => items.iter().filter_map(as_string).collect(),
        Value::Map(pairs) => pairs
            .iter()
            .flat_map(|(k, v)| [as_string(k), as_string(v)])
            .flatten()
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_messages_parse() {
        let (seq, except, json) = parse_room_message(b"12\nabc\n{\"a\":\"x\ny\"}").unwrap();
        assert_eq!(seq, 12);
        assert_eq!(except.as_deref(), Some("abc"));
        assert_eq!(&json[..], b"{\"a\":\"x\ny\"}");
        let (_, except, _) = parse_room_message(b"1\n\n{}").unwrap();
        assert_eq!(except, None);
        assert!(parse_room_message(b"x\n\n{}").is_none());
        assert!(parse_room_message(b"1").is_none());
    }
}
