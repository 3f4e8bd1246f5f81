//! Starting and stopping a hub: binding the socket, the hub thread with its
//! single-threaded executor, the accept loop, signals, the drain at
//! shutdown, and the [`Handle`] an embedding program (or the binary) holds.

use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use async_channel::{Receiver, Sender};
use futures_lite::FutureExt;
use smol::{Async, LocalExecutor};

use crate::config::{Config, ConfigError, HookUrl};
use crate::engine::redis::{Redis, RedisSettings};
use crate::engine::store::{Store, StoreLimits};
use crate::engine::{Engine, Memory};
use crate::error::Error;
use crate::executor::Spawner;
use crate::hook::{self, Hooks, StdioReplies, StdioRouted};
use crate::http::{self, Context};
use crate::hub::{ComponentState, ConnectionInfo, HealthReport, Hub, HubClient, HubParts, Status};
use crate::log::as_json;
use crate::net::is_loopback;
use crate::protocol::{Publish, Published, new_uuid};
use crate::schema::Schemas;
use crate::shutdown;

/// Pending connections the kernel may hold for the accept loop.
const LISTEN_BACKLOG: i32 = 4096;
/// How long a stopping hub waits for its engine to leave the cluster.
const ENGINE_GOODBYE: Duration = Duration::from_secs(2);
/// Pause after an accept error such as running out of file descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Starts a hub on its own thread and returns once its socket is bound.
///
/// Fails with [`Error::Config`] for an invalid setting (including a
/// `schemas` file that does not compile) and [`Error::Io`] when the address
/// cannot be bound.
pub fn serve(config: Config) -> Result<Handle, Error> {
    config.validate()?;
    let schemas = config.schemas.as_deref().map(Schemas::load).transpose()?;
    let (hub, commands) = HubClient::channel();
    let node: Arc<str> = config
        .node_id
        .clone()
        .unwrap_or_else(|| new_uuid()[..8].to_string())
        .into();
    let (engine, engine_answers) = open_engine(&config, &hub, &node)?;
    let listener = bind(config.bind)?;
    let addr = listener.local_addr()?;
    let epoch: Arc<str> = engine.epoch().into();
    if !is_loopback(addr.ip()) && config.admin_key.is_none() && config.jwt_secret.is_none() {
        tracing::warn!(
            addr = as_json(addr),
            "listening beyond loopback with neither admin_key nor jwt_secret: anyone who can reach this port may connect, and publisher and admin routes answer loopback peers only"
        );
    }
    if config.history_size > config.send_queue {
        tracing::warn!(
            history_size = as_json(config.history_size),
            send_queue = as_json(config.send_queue),
            "history_size is above send_queue: a long resume can fill a client's queue and close it with 4009"
        );
    }
    let signals = signals(&config);
    let uses_stdio = [
        &config.connect_hook,
        &config.subscribe_hook,
        &config.publish_hook,
        &config.rpc_hook,
        &config.disconnect_hook,
    ]
    .iter()
    .any(|u| matches!(u, Some(HookUrl::Stdio)));
    let (stdio, replies, router) = if uses_stdio {
        let (stdio, replies, router) = hook::stdio();
        (Some(stdio), Some(replies), Some(router))
    } else {
        (None, None, None)
    };
    let (stopped_tx, stopped) = async_channel::bounded::<()>(1);
    let thread_hub = hub.clone();
    let thread_node = node.clone();
    std::thread::Builder::new()
        .name("wshub".into())
        .spawn(move || {
            run(
                listener,
                config,
                engine,
                thread_hub,
                commands,
                Extras {
                    schemas,
                    signals,
                    stdio,
                    router,
                    node: thread_node,
                    engine_answers,
                },
            );
            drop(stopped_tx);
        })?;
    Ok(Handle {
        addr,
        epoch,
        node,
        hub,
        stopped,
        stdio_replies: replies,
    })
}

/// The engine `config` asks for: Redis at `redis_url`, the store in
/// `store`, or memory. A store that cannot be opened, or a Redis that
/// cannot be reached, is a bad setting (exit 2 in the binary).
/// An engine on the hub thread also gives the channel of its answers.
type Opened = (
    Box<dyn Engine>,
    Option<Receiver<Vec<crate::engine::Answer>>>,
);

fn open_engine(config: &Config, hub: &HubClient, node: &str) -> Result<Opened, Error> {
    if let Some(url) = &config.redis_url {
        let settings = RedisSettings {
            url: url.clone(),
            prefix: config.redis_prefix.clone(),
            node: node.to_string(),
            history_size: config.history_size,
            history_ttl: config.history_ttl,
            heartbeat_timeout: config.heartbeat_timeout,
            heartbeat_interval: config.heartbeat_interval,
        };
        // The Redis task runs on the hub thread, so it must never wait on
        // the hub's queue: its answers go through an unbounded channel
        // that a task of the hub thread forwards (`forward_engine`).
        let (answers_tx, answers) = async_channel::unbounded();
        let sink: crate::engine::Sink = Box::new(move |batch| answers_tx.try_send(batch).is_ok());
        let redis = Redis::open(settings, sink)
            .map_err(|message| ConfigError::new("redis_url", message))?;
        return Ok((Box::new(redis), Some(answers)));
    }
    let Some(dir) = &config.store else {
        return Ok((Box::new(Memory::new()), None));
    };
    let limits = StoreLimits {
        history_size: config.history_size,
        history_ttl: config.history_ttl,
    };
    let store = Store::open(dir, limits, hub.engine_sink())
        .map_err(|message| ConfigError::new("store", message))?;
    Ok((Box::new(store), None))
}

fn bind(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // A restarted hub can take its port back while old sockets linger.
    socket.set_reuse_address(true)?;
    // `[::]` serves IPv4 peers too (as `::ffff:a.b.c.d`) where the system
    // allows; where it does not, the socket stays IPv6-only.
    if addr.is_ipv6() {
        let _ = socket.set_only_v6(false);
    }
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// What the hub thread takes besides its socket, config and channel.
struct Extras {
    schemas: Option<Schemas>,
    signals: Option<async_signal::Signals>,
    /// The stdio hook transport, when a hook is `stdio`, and its router's end.
    stdio: Option<hook::Stdio>,
    router: Option<Receiver<StdioRouted>>,
    /// This hub's node name (`node_id`, or random per start).
    node: Arc<str>,
    /// The answers of an engine that runs on the hub thread.
    engine_answers: Option<Receiver<Vec<crate::engine::Answer>>>,
}

/// The hub thread: one executor running the hub task, the accept loop and
/// every connection, until the hub has drained.
fn run(
    listener: std::net::TcpListener,
    config: Config,
    mut engine: Box<dyn Engine>,
    hub: HubClient,
    commands: Receiver<crate::hub::Command>,
    extras: Extras,
) {
    let Extras {
        schemas,
        signals,
        stdio,
        router,
        node,
        engine_answers,
    } = extras;
    let executor = Rc::new(LocalExecutor::new());
    let spawner = Spawner::new(&executor);
    let hooks = Rc::new(Hooks::new(&config, stdio));
    if let Some(router) = router {
        spawner.spawn(hook::route_stdio(router));
    }
    let grace = config.shutdown_grace;
    smol::block_on(executor.run(async {
        let listener = match Async::new(listener) {
            Ok(listener) => listener,
            Err(e) => {
                tracing::error!(
                    error = as_json(e.to_string()),
                    "cannot watch the listening socket"
                );
                return;
            }
        };
        let (trigger, shutdown) = shutdown::signal();
        let (task, tasks) = shutdown::tasks();
        let ctx = Rc::new(Context {
            hub: hub.clone(),
            config: config.clone(),
            spawner: spawner.clone(),
            shutdown,
            epoch: engine.epoch().into(),
            hooks: hooks.clone(),
        });
        let addr = listener.get_ref().local_addr().unwrap_or(config.bind);
        spawner.spawn(accept_loop(listener, ctx));
        let (force_tx, force) = async_channel::bounded::<()>(1);
        if let Some(signals) = signals {
            spawner.spawn(signal_loop(signals, hub.clone(), force_tx));
        }
        tracing::info!(
            epoch = as_json(engine.epoch()),
            node = as_json(&*node),
            addr = as_json(addr),
            engine = as_json(engine.kind()),
            "hub started"
        );
        let parts = HubParts {
            schemas,
            tasks: task,
            hooks,
            spawner: spawner.clone(),
            me: hub.downgrade(),
            node,
        };
        if let Some(answers) = engine_answers {
            spawner.spawn(forward_engine(answers, hub.downgrade()));
        }
        let engine_done = {
            let spawner = spawner.clone();
            let spawn: crate::engine::Spawn = Rc::new(move |task| spawner.spawn(task));
            engine.start(spawn)
        };
        Hub::new(config, engine, parts).run(commands).await;
        if let Some(done) = engine_done {
            // The engine takes this hub's connections out of the cluster.
            let _ = async { done.recv().await.is_err() }
                .or(async {
                    smol::Timer::after(ENGINE_GOODBYE).await;
                    false
                })
                .await;
        }
        trigger.fire();
        // Every connection has been sent a close frame; give their closing
        // handshakes until the grace period ends, or a second signal. The
        // accept loop answers 503 meanwhile.
        let in_time = async {
            tasks.all_done().await;
            true
        }
        .or(async {
            smol::Timer::after(grace).await;
            false
        })
        .or(async {
            let _ = force.recv().await;
            false
        })
        .await;
        tracing::info!(closed_in_grace = as_json(in_time), "hub stopped");
    }));
    // Dropping the executor cancels what is left: the accept loop and any
    // connection that outlived the grace period.
    drop(executor);
}

/// Hands an engine's answers to the hub, waiting while its queue is full
/// (on the hub thread, so the hub drains it meanwhile); ends with either.
async fn forward_engine(
    answers: Receiver<Vec<crate::engine::Answer>>,
    hub: async_channel::WeakSender<crate::hub::Command>,
) {
    while let Ok(batch) = answers.recv().await {
        let Some(tx) = hub.upgrade() else { return };
        if tx.send(crate::hub::Command::Engine(batch)).await.is_err() {
            return;
        }
    }
}

async fn accept_loop(listener: Async<std::net::TcpListener>, ctx: Rc<Context>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                // Events are small and latency matters more than packing.
                let _ = stream.get_ref().set_nodelay(true);
                ctx.spawner.spawn(http::serve(stream, peer, ctx.clone()));
            }
            Err(e) => {
                tracing::warn!(error = as_json(e.to_string()), "accept failed");
                smol::Timer::after(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// SIGTERM and SIGINT, caught from the moment `serve` returns: a parent
/// that signals right after the listening line must not kill the hub.
fn signals(config: &Config) -> Option<async_signal::Signals> {
    use async_signal::{Signal, Signals};
    if !config.handle_signals {
        return None;
    }
    let signals = Signals::new([Signal::Term, Signal::Int]);
    if signals.is_err() {
        tracing::warn!("cannot install signal handlers");
    }
    signals.ok()
}

/// The first signal drains the hub; a second ends the drain at once (the
/// binary then exits, as it does after any drain).
async fn signal_loop(mut signals: async_signal::Signals, hub: HubClient, force: Sender<()>) {
    use futures_lite::StreamExt;
    if let Some(Ok(signal)) = signals.next().await {
        tracing::info!(
            signal = as_json(format!("{signal:?}")),
            "signal received; draining"
        );
        hub.shutdown().await;
    }
    if let Some(Ok(_)) = signals.next().await {
        tracing::warn!("second signal; stopping at once");
        // The drain may have ended already; nobody is left to tell.
        let _ = force.try_send(());
    }
}

/// A running hub: its address and epoch, and the calls an embedding program
/// makes. Cheap to clone; every clone talks to the same hub.
///
/// The calls are `async` and runtime-agnostic; from synchronous code wrap
/// them in `smol::block_on` (or any executor's `block_on`).
#[derive(Debug, Clone)]
pub struct Handle {
    addr: SocketAddr,
    epoch: Arc<str>,
    node: Arc<str>,
    hub: HubClient,
    stopped: Receiver<()>,
    stdio_replies: Option<StdioReplies>,
}

impl Handle {
    /// Hands in a stdin line that carries `hook_reply` (section 10): the
    /// answer to a `stdio` hook request. `Err` says why it was not taken
    /// (no hook is `stdio`, or the line is malformed).
    pub fn hook_reply(
        &self,
        line: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), String> {
        match &self.stdio_replies {
            Some(replies) => replies.reply(line),
            None => Err("no hook is configured as `stdio`".into()),
        }
    }

    /// The bound address (with the real port when `bind` asked for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The epoch this hub started with, as every `welcome` carries it. In
    /// a cluster whose Redis lost its data the hub moves to a new epoch
    /// (closing every connection with 1012); from then on the welcome's
    /// `epoch` is the one to trust, not this.
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// This hub's node name (`node_id`, or random per start), as every
    /// `welcome` carries it.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The `ws://` URL of the WebSocket endpoint.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// The `http://` base URL.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Publishes an event, as `POST /api/events` does.
    pub async fn publish(&self, publish: Publish) -> Result<Published, Error> {
        self.publish_with_correlation(publish, new_uuid()).await
    }

    /// Publishes an event carrying `correlation_id`.
    pub async fn publish_with_correlation(
        &self,
        publish: Publish,
        correlation_id: String,
    ) -> Result<Published, Error> {
        Ok(self.hub.publish(publish, correlation_id).await??)
    }

    /// Records a component's health; a change is broadcast as `health_status`.
    pub async fn set_health(
        &self,
        component: &str,
        status: Status,
        detail: Option<&str>,
    ) -> Result<ComponentState, Error> {
        if !crate::protocol::is_valid_room(component) {
            return Err(Error::Protocol(
                crate::protocol::ProtocolError::invalid_field(
                    "component",
                    "must be 1 to 128 of A-Z a-z 0-9 _ . : -",
                ),
            ));
        }
        Ok(self
            .hub
            .set_health(
                component.to_string(),
                status,
                detail.map(str::to_string),
                new_uuid(),
            )
            .await?)
    }

    /// The `GET /health` report.
    pub async fn health(&self) -> Result<HealthReport, Error> {
        Ok(self.hub.health().await?)
    }

    /// Every open connection's metadata.
    pub async fn connections(&self) -> Result<Vec<ConnectionInfo>, Error> {
        Ok(self.hub.connections(None).await?)
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> Result<String, Error> {
        Ok(self.hub.metrics().await?)
    }

    /// Drains the hub as SIGTERM does (close 1001 to everyone, wait up to
    /// `shutdown_grace`) and returns once its thread has ended.
    pub async fn shutdown(self) {
        self.hub.shutdown().await;
        self.stopped().await;
    }

    /// Asks the hub to drain without waiting for it.
    pub async fn request_shutdown(&self) {
        self.hub.shutdown().await;
    }

    /// Waits until the hub has stopped (after a shutdown or a signal).
    pub async fn stopped(&self) {
        // The thread drops the only sender when it ends.
        let _ = self.stopped.recv().await;
    }
}
