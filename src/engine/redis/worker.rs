//! The Redis task's loop: it owns the command and pub/sub connections
//! and everything the cluster needs this hub to have told Redis (its
//! watched rooms with the last seq forwarded, its memberships for the
//! presence refresh), and answers the hub through its [`Sink`].
//!
//! One step at a time: a batch of the hub's requests (one pipeline), the
//! pub/sub messages that arrived (forwarded in seq order per room, each
//! once; a gap is filled from the shared history), or a tick (the
//! delivery self-check through this node's own channel, the node's
//! announcement, the presence refresh, the epoch). A failure drops both
//! connections; the task reconnects, subscribes again and recovers each
//! watched room from the shared history before it answers anything new.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::time::{Duration, Instant};

use async_channel::Receiver;
use futures_lite::FutureExt;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, Value};

mod commands;
mod io;
mod link;
mod replies;

pub(crate) use link::{connect, ensure_epoch, timeout};

use commands::Slot;
use replies::{parse_entries, parse_room_message};

use super::keys::{self, Channel, Keys};
use super::{RedisSettings, Request};
use crate::engine::{
    Answer, Ask, ClusterRoom, EngineError, Sequence, Sequenced, Sink, StoredEvent, Topic, unix_ms,
};
use crate::log::as_json;
use crate::protocol::{Published, new_uuid};

/// A Redis command that has not answered by then counts as a failure.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the task looks at its connections and its self-check.
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

/// A failure is followed by an immediate reconnect (a killed pub/sub
/// connection, a failover) unless more than [`QUICK_RETRIES`] came
/// within this window: Redis is then declared down at once.
const QUICK_RETRY_WINDOW: Duration = Duration::from_secs(10);
/// See [`QUICK_RETRY_WINDOW`].
const QUICK_RETRIES: usize = 5;
/// Answers one hub command carries at most: a flood of events from Redis
/// reaches the hub as many commands, between which its writers run.
const MAX_ANSWERS: usize = 64;
/// Requests one pipeline takes at most.
const MAX_BATCH: usize = 4096;
/// Time the task gives itself at shutdown to take its connections out
/// of the cluster's presence.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(1);

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

/// The Redis task's state.
pub(super) struct Worker {
    client: Client,
    keys: Keys,
    settings: RedisSettings,
    epoch: String,
    sink: Sink,
    scripts: Scripts,
    conn: Option<MultiplexedConnection>,
    /// The pub/sub connection (RESP3: messages come as pushes).
    pubsub: Option<MultiplexedConnection>,
    /// Where connections' drivers run: the executor the task runs on.
    spawn: crate::engine::Spawn,
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
    /// The highest publish counter this hub has seen in Redis.
    clock: u64,
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
        spawn: crate::engine::Spawn,
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
            spawn,
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
            clock: 0,
        }
    }

    fn live(&self) -> bool {
        self.conn.is_some() && self.pubsub.is_some()
    }

    /// Serves the hub's requests until it drops its end of `requests`.
    pub async fn run(mut self, requests: Receiver<Request>) {
        let incoming = self.incoming_rx.clone();
        // One timer, moved on after each tick: a timer made per wake costs
        // the reactor a timer update each time.
        let mut timer = smol::Timer::at(Instant::now());
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
                    (&mut timer).await;
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
                    timer.set_at(Instant::now() + TICK);
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

    /// Hands the answers gathered so far to the hub, at most
    /// [`MAX_ANSWERS`] per command so that the hub yields to its writers
    /// between them.
    fn flush(&mut self) {
        let mut answers = std::mem::take(&mut self.answers).into_iter().peekable();
        while answers.peek().is_some() {
            let chunk: Vec<Answer> = answers.by_ref().take(MAX_ANSWERS).collect();
            if !(self.sink)(chunk) {
                self.hub_gone = true;
                return;
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
