//! The Redis engine (`redis_url`, PROTOCOL.md section 9): every hub on
//! the same Redis and `redis_prefix` is one cluster. Redis gives each room
//! event its seq, keeps the room's history and carries every event to the
//! hubs whose connections need it; the hub task only delivers what this
//! engine hands it, in seq order, each once.
//!
//! The engine is a task on the hub thread's executor ([`Engine::start`]),
//! doing only asynchronous I/O: the hub queues requests on a channel and
//! goes on, and a slow or absent Redis leaves the task waiting, never the
//! hub. Its sockets are smol's and the `redis` crate's connection drivers
//! run on the same executor ([`worker`]'s `io`), so no request, answer or
//! message crosses a thread (BENCHMARKS.md has what the crossing cost).
//! The task owns two connections, one for commands (requests queued
//! together go out as one pipeline, publishes as one Lua script each, see
//! [`keys`]) and one for pub/sub (RESP3 pushes), and answers through the
//! [`Sink`] it was given.

mod keys;
mod worker;

use std::time::Duration;

use async_channel::Sender;

use super::{Append, Ask, Engine, EngineError, Progress, Recovered, Sink, Spawn};
use keys::Keys;

/// What the Redis engine needs from the config.
#[derive(Debug, Clone)]
pub(crate) struct RedisSettings {
    /// `redis_url`.
    pub url: String,
    /// `redis_prefix`.
    pub prefix: String,
    /// This hub's node name.
    pub node: String,
    /// `history_size`: events kept per room.
    pub history_size: usize,
    /// `history_ttl`: zero for no limit.
    pub history_ttl: Duration,
    /// `heartbeat_timeout`: a dead hub's presence entries expire after it.
    pub heartbeat_timeout: Duration,
    /// `heartbeat_interval`: the delivery path is checked at least this often.
    pub heartbeat_interval: Duration,
}

/// A request for the Redis task.
#[derive(Debug)]
enum Request {
    Read {
        token: u64,
        room: String,
        after: u64,
    },
    Ask(Ask),
}

/// The Redis engine: a handle on its task.
#[derive(Debug)]
pub(crate) struct Redis {
    epoch: String,
    requests: Option<Sender<Request>>,
    /// What the task starts from, until [`Engine::start`] runs it.
    pending: Option<Pending>,
}

/// What the Redis task is made of, kept (and sent to the hub thread) until
/// it starts there.
struct Pending {
    client: redis::Client,
    keys: Keys,
    settings: RedisSettings,
    epoch: String,
    sink: Sink,
    requests: async_channel::Receiver<Request>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("settings", &self.settings)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

/// How long the start waits for Redis before giving up (exit 2).
const OPEN_TIMEOUT: Duration = Duration::from_secs(5);

impl Redis {
    /// Connects to Redis, reads the cluster's epoch (minting it if the
    /// cluster has none), and makes the engine's task, which
    /// [`Engine::start`] runs on the hub thread and which answers through
    /// `sink`.
    ///
    /// Fails when the URL is not one Redis takes or Redis cannot be reached.
    pub fn open(settings: RedisSettings, sink: Sink) -> Result<Self, String> {
        let client = redis::Client::open(settings.url.as_str())
            .map_err(|e| format!("not a Redis URL: {e}"))?;
        let keys = Keys::new(&settings.prefix);
        let epoch = smol::block_on(worker::timeout(OPEN_TIMEOUT, async {
            let mut conn = worker::connect(&client).await?;
            worker::ensure_epoch(&mut conn, &keys).await
        }))
        .map_err(|e| format!("cannot reach Redis: {e}"))?;
        tracing::info!(
            node = crate::log::as_json(&settings.node),
            epoch = crate::log::as_json(&epoch),
            prefix = crate::log::as_json(&settings.prefix),
            "joined the Redis cluster"
        );
        let (requests, incoming) = async_channel::unbounded();
        let pending = Pending {
            client,
            keys,
            settings,
            epoch: epoch.clone(),
            sink,
            requests: incoming,
        };
        Ok(Self {
            epoch,
            requests: Some(requests),
            pending: Some(pending),
        })
    }

    fn queue(&mut self, request: Request) -> Progress {
        let sent = self
            .requests
            .as_ref()
            .is_some_and(|tx| tx.try_send(request).is_ok());
        if sent {
            Progress::Queued
        } else {
            Progress::Refused(EngineError::new("the Redis task has stopped"))
        }
    }
}

impl Engine for Redis {
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn epoch(&self) -> &str {
        &self.epoch
    }

    fn recovered(&mut self) -> Recovered {
        // Rooms are learnt when a connection first needs them (`Watch`).
        Recovered::default()
    }

    fn in_place(&self) -> bool {
        false
    }

    fn append(&mut self, _: Append) -> Progress {
        // In a cluster Redis gives the seq: the hub publishes with `Ask`.
        Progress::Refused(EngineError::new("a cluster publishes with Ask::Publish"))
    }

    fn read(&mut self, token: u64, room: &str, after: u64) -> Progress {
        self.queue(Request::Read {
            token,
            room: room.to_string(),
            after,
        })
    }

    fn start(&mut self, spawn: Spawn) -> Option<async_channel::Receiver<()>> {
        let Pending {
            client,
            keys,
            settings,
            epoch,
            sink,
            requests,
        } = self.pending.take()?;
        let (done_tx, done) = async_channel::bounded::<()>(1);
        let worker = worker::Worker::new(client, keys, settings, epoch, sink, spawn.clone());
        let run = worker.run(requests);
        spawn(Box::pin(async move {
            run.await;
            drop(done_tx);
        }));
        Some(done)
    }

    fn is_cluster(&self) -> bool {
        true
    }

    fn ask(&mut self, ask: Ask) -> Progress {
        self.queue(Request::Ask(ask))
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        // Closing the channel ends the task, once it has taken this hub's
        // connections out of the cluster's presence; the server waits for
        // that a little (`start`'s receiver).
        self.requests = None;
    }
}
