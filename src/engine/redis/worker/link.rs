//! The Redis task's connections: connecting and reconnecting (scripts,
//! epoch, subscriptions, recovery of the watched rooms), the periodic
//! self-check, announcement and presence refresh, failure and the
//! declaration that Redis is down, and the goodbye at shutdown.

use redis::PushInfo;

use super::replies::user_json;
use super::*;

/// Debug builds only: the first pub/sub connection silently stops handing
/// over messages after this many (the self-check test's fault hook: a
/// subscription that is broken while commands still work).
pub(super) const MUTE_PUBSUB_AFTER_ENV: &str = "WSHUB_TEST_MUTE_PUBSUB_AFTER";

/// The fault hook's count, in debug builds when it is set.
pub(super) fn mute_after() -> Option<u64> {
    if !cfg!(debug_assertions) {
        return None;
    }
    std::env::var(MUTE_PUBSUB_AFTER_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
}

/// Runs `future`, failing after `limit`.
pub(crate) async fn timeout<T>(
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
pub(crate) async fn connect(client: &Client) -> Result<MultiplexedConnection, String> {
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
pub(crate) async fn ensure_epoch(
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

impl Worker {
    /// The periodic work: reconnecting, the self-check, the node's
    /// announcement, the presence refresh and the epoch.
    pub(super) async fn tick(&mut self) {
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
    pub(super) async fn self_check(&mut self) {
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
            .arg(self.keys.epoch())
            .cmd("GET")
            .arg(self.keys.clock());
        let started = Instant::now();
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let reply: Result<(Option<String>, Option<u64>), _> = pipe.query_async(conn).await;
        self.last_check = Instant::now();
        match reply {
            Ok((epoch, clock)) => {
                self.clock = self.clock.max(clock.unwrap_or(0));
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
    pub(super) async fn refresh(&mut self) {
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
    pub(super) fn presence_ttl_ms(&self) -> u64 {
        self.settings.heartbeat_timeout.as_millis() as u64
    }

    pub(super) fn refresh_interval(&self) -> Duration {
        (self.settings.heartbeat_timeout / 3).max(Duration::from_millis(200))
    }

    /// Reads the epoch (minting one if Redis lost it); a new one is told
    /// to the hub, which closes its connections with 1012.
    pub(super) async fn check_epoch(&mut self) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        match ensure_epoch(conn, &self.keys).await {
            Ok(epoch) if epoch != self.epoch => self.new_epoch(epoch),
            Ok(_) => {}
            Err(e) => self.fail(&format!("epoch: {e}"), Vec::new()),
        }
    }

    /// Whether a watched room's seq in Redis is behind what this hub has
    /// delivered of it (Redis restarted from an older snapshot).
    /// Or the cluster's publish counter is behind what this hub saw.
    async fn rolled_back(&mut self, rooms: &[(String, u64)]) -> Result<bool, String> {
        let mut pipe = redis::pipe();
        pipe.cmd("GET").arg(self.keys.clock());
        for (room, _) in rooms {
            pipe.cmd("HGET").arg(self.keys.meta(room)).arg("seq");
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err("no command connection".into());
        };
        let mut seqs: Vec<Option<u64>> = pipe.query_async(conn).await.map_err(|e| e.to_string())?;
        let clock = if seqs.is_empty() {
            None
        } else {
            seqs.remove(0)
        };
        if clock.unwrap_or(0) < self.clock {
            tracing::warn!(
                seen = as_json(self.clock),
                in_redis = as_json(clock.unwrap_or(0)),
                "Redis's publish counter is behind what this hub saw: it restarted from an older snapshot"
            );
            return Ok(true);
        }
        let behind = rooms
            .iter()
            .zip(seqs)
            .find(|((_, last), seq)| seq.unwrap_or(0) < *last);
        if let Some(((room, last), seq)) = behind {
            tracing::warn!(
                room = as_json(room),
                delivered = as_json(last),
                in_redis = as_json(seq.unwrap_or(0)),
                "Redis holds an older seq than this hub delivered: it restarted from an older snapshot"
            );
            return Ok(true);
        }
        Ok(false)
    }

    /// Mints a new epoch in place of this hub's (unless another hub did
    /// already) and returns the cluster's epoch now.
    async fn replace_epoch(&mut self) -> Result<String, String> {
        let script = redis::Script::new(keys::REPLACE_EPOCH);
        let Some(conn) = self.conn.as_mut() else {
            return Err("no command connection".into());
        };
        script
            .key(self.keys.epoch())
            .arg(&self.epoch)
            .arg(new_uuid())
            .invoke_async(conn)
            .await
            .map_err(|e| e.to_string())
    }

    pub(super) fn new_epoch(&mut self, epoch: String) {
        tracing::warn!(
            old = as_json(&self.epoch),
            new = as_json(&epoch),
            "the cluster's epoch changed: its data in Redis was lost; closing every connection with 1012"
        );
        self.epoch = epoch.clone();
        self.clock = 0;
        for last in self.rooms.values_mut() {
            *last = 0;
        }
        self.answers.push(Answer::Epoch { epoch });
    }

    /// Drops both connections after a failure; requests of `batch` are
    /// held for the reconnect, which is tried at once.
    pub(super) fn fail(&mut self, why: &str, batch: Vec<Request>) {
        let already = !self.live();
        if !already {
            tracing::warn!(error = as_json(why), "lost Redis; reconnecting");
        }
        self.conn = None;
        self.pubsub = None;
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
        if already {
            // The same loss seen twice (the push and the driver's end).
            return;
        }
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
    pub(super) fn declare_down(&mut self, why: &str) {
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
    pub(super) async fn reconnect(&mut self) {
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
                self.subscribed.clear();
                self.next_retry = Instant::now() + RETRY_INTERVAL;
                self.declare_down(&e);
            }
        }
    }

    pub(super) async fn try_connect(&mut self) -> Result<(), String> {
        let spawn = self.spawn.clone();
        let no_push = None::<fn(PushInfo) -> Result<(), ()>>;
        let mut conn = timeout(
            RESPONSE_TIMEOUT,
            io::open(&self.client, &spawn, no_push, || {}, RESPONSE_TIMEOUT),
        )
        .await?;
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
        self.generation += 1;
        let generation = self.generation;
        let tx = self.incoming_tx.clone();
        let ended = self.incoming_tx.clone();
        let mute = mute_after().filter(|_| generation == 1);
        let handed = std::sync::atomic::AtomicU64::new(0);
        // Called by the connection's driver for every push, on this thread.
        let push = move |info: PushInfo| -> Result<(), ()> {
            let incoming = match info.kind {
                redis::PushKind::Message => {
                    let seen = handed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if mute.is_some_and(|after| seen >= after) {
                        return Ok(()); // the fault hook: read, hand nothing over
                    }
                    let mut data = info.data.into_iter();
                    let (Some(Value::BulkString(channel)), Some(Value::BulkString(payload))) =
                        (data.next(), data.next())
                    else {
                        return Ok(());
                    };
                    Incoming::Message {
                        generation,
                        channel: String::from_utf8_lossy(&channel).into_owned(),
                        payload,
                    }
                }
                redis::PushKind::Disconnection => Incoming::Closed { generation },
                _ => return Ok(()),
            };
            tx.try_send(incoming).map_err(|_| ())
        };
        let sink = timeout(
            RESPONSE_TIMEOUT,
            io::open(
                &self.client,
                &spawn,
                Some(push),
                move || drop(ended.try_send(Incoming::Closed { generation })),
                RESPONSE_TIMEOUT,
            ),
        )
        .await?;
        self.conn = Some(conn);
        self.pubsub = Some(sink);
        self.subscribed.clear();
        self.resubscribe().await?;
        for (component, state) in health {
            self.push_health(&component, &state);
        }
        let rooms: Vec<(String, u64)> = self.rooms.iter().map(|(r, l)| (r.clone(), *l)).collect();
        let epoch = if epoch == self.epoch && self.rolled_back(&rooms).await? {
            // Redis came back from an older snapshot: seqs this hub has
            // delivered would be given to other events. The epoch ends.
            self.replace_epoch().await?
        } else {
            epoch
        };
        if epoch != self.epoch {
            self.new_epoch(epoch);
        } else {
            // Subscribed again first: what is published from now on comes
            // through pub/sub; what came meanwhile is in the history.
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
    pub(super) async fn goodbye(&mut self) {
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
