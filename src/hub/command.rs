//! The only way into the hub: [`Command`]s on an async channel, wrapped in a
//! clonable [`HubClient`] whose calls wait for one-shot replies.

use std::net::SocketAddr;
use std::time::Instant;

use async_channel::{Receiver, Sender};
use serde::Serialize;

use super::conn::{ConnId, ConnectionInfo};
use super::health::{HealthReport, Status};
use crate::auth::Claims;
use crate::outlet::Outlet;
use crate::protocol::sse::Cursor;
use crate::protocol::{
    ClientMessage, DecodeError, Encoded, Encoding, ErrorCode, ProtocolError, Publish, Published,
};
use crate::shutdown::TaskGuard;

/// A WebSocket upgrade, or an SSE stream, asking to become a connection.
#[derive(Debug)]
pub struct JoinRequest {
    /// The peer's address.
    pub peer: SocketAddr,
    /// The request's `Origin`.
    pub origin: Option<String>,
    /// The request's `User-Agent`.
    pub user_agent: Option<String>,
    /// The negotiated subprotocol.
    pub encoding: Encoding,
    /// The verified token, if any.
    pub claims: Option<Claims>,
    /// Rooms from `?rooms=`.
    pub rooms: Vec<String>,
    /// The connection's ID, when the upgrade chose it already (the connect
    /// hook names it); a fresh one otherwise.
    pub id: Option<ConnId>,
    /// When the connect hook's `expires_at` closes it (Unix seconds).
    pub expires_at: Option<f64>,
    /// The upgrade request's correlation ID, carried by the welcome.
    pub correlation_id: String,
    /// An SSE stream's resume cursor (`Last-Event-ID` or `?since=`).
    pub since: Option<Cursor>,
    /// Where the hub sends the connection's messages.
    pub outlet: Outlet,
}

/// An admitted connection.
#[derive(Debug)]
pub(crate) struct Joined {
    /// Its ID.
    pub id: ConnId,
    /// Held by the writer until the socket is finished; the server waits
    /// for every one of these at shutdown.
    pub task: TaskGuard,
    /// The `welcome` frame (or SSE event), written with the response head.
    pub welcome: Encoded,
}

/// Why an upgrade was refused: the HTTP status and the error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// HTTP status (403, 429, 503, …).
    pub status: u16,
    /// The `error` body.
    pub error: ProtocolError,
    /// Seconds for `Retry-After`.
    pub retry_after: Option<u32>,
}

impl Refusal {
    /// A refusal with `status`, `code` and `message`.
    pub fn new(status: u16, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            error: ProtocolError::new(code, message),
            retry_after: None,
        }
    }

    /// The 503 `shutting_down` of a draining hub, with `Retry-After`.
    pub fn shutting_down() -> Self {
        Self {
            retry_after: Some(1),
            ..Self::new(503, ErrorCode::ShuttingDown, "the hub is shutting down")
        }
    }
}

/// A room in the registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoomInfo {
    /// The room's name.
    pub room: String,
    /// How many connections are subscribed.
    pub subscribers: usize,
    /// The seq of its newest event.
    pub last_seq: u64,
    /// Its members, when asked for one room.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub members: Option<Vec<PresenceMember>>,
}

/// A room member, as `presence` and the registry show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PresenceMember {
    /// The connection.
    pub connection_id: String,
    /// Its user, or `None`.
    pub user: Option<String>,
}

/// A component's health as `PUT /api/health/{component}` answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ComponentState {
    /// The component's name.
    pub component: String,
    /// Its status.
    pub status: Status,
    /// Its detail, if any.
    pub detail: Option<String>,
    /// When its status last changed.
    pub since: String,
}

/// A publish from HTTP, stdin or the embedding API.
#[derive(Debug)]
pub(crate) struct PublishRequest {
    pub publish: Publish,
    pub correlation_id: String,
    pub started: Instant,
    pub reply: Sender<Result<Published, ProtocolError>>,
}

/// A `PUT /api/health/{component}`.
#[derive(Debug)]
pub(crate) struct SetHealthRequest {
    pub component: String,
    pub status: Status,
    pub detail: Option<String>,
    pub correlation_id: String,
    pub reply: Sender<ComponentState>,
}

/// Everything the hub task can be asked.
#[derive(Debug)]
pub(crate) enum Command {
    Join(Box<JoinRequest>, Sender<Result<Joined, Refusal>>),
    Rejected(ErrorCode),
    /// An upgrade refused by an app's hook, with its code.
    RejectedBy(String),
    /// A client message (boxed: the reader's pending send stays small),
    /// with the messages the rate limit dropped before it.
    Message {
        conn: ConnId,
        message: Box<Result<ClientMessage, DecodeError>>,
        bytes: usize,
        dropped: u64,
    },
    Alive(ConnId),
    Dropped {
        conn: ConnId,
        count: u64,
        notify: bool,
    },
    Leave {
        conn: ConnId,
        reason: &'static str,
        close_code: Option<u16>,
    },
    Publish(Box<PublishRequest>),
    SetHealth(Box<SetHealthRequest>),
    Health(Sender<HealthReport>),
    Connections(Option<String>, Sender<Vec<ConnectionInfo>>),
    Connection(ConnId, Sender<Option<ConnectionInfo>>),
    Disconnect(ConnId, Sender<bool>),
    Rooms(Sender<Vec<RoomInfo>>),
    Room(String, Sender<Option<RoomInfo>>),
    Metrics(Sender<String>),
    /// Answers from an engine that answers later (the store's thread).
    Engine(Vec<crate::engine::Answer>),
    /// A hook call for a connection finished (section 10).
    HookDone {
        conn: ConnId,
        seq: u64,
        pending: Box<super::hooks::Pending>,
        called: Vec<crate::hook::Called>,
    },
    /// A hook call whose outcome only counts (connect, disconnect).
    HookObserved(crate::hook::Called),
    Shutdown,
}

/// The hub has stopped (it is shutting down or has shut down).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HubGone;

impl std::fmt::Display for HubGone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the hub has stopped")
    }
}

impl std::error::Error for HubGone {}

/// A clonable way to ask the hub task things.
#[derive(Debug, Clone)]
pub(crate) struct HubClient {
    tx: Sender<Command>,
}

impl HubClient {
    /// A client and the receiving end the hub task reads.
    pub fn channel() -> (Self, Receiver<Command>) {
        // Bounded so that a flood of client messages pushes back on the
        // readers that produce it instead of growing without limit.
        let (tx, rx) = async_channel::bounded(4096);
        (Self { tx }, rx)
    }

    /// Where an engine sends its answers: into this hub's commands, from
    /// any thread, waiting while the hub's queue is full.
    pub fn engine_sink(&self) -> crate::engine::Sink {
        // Weak: the engine's thread must not keep the hub's queue open.
        let tx = self.tx.downgrade();
        Box::new(move |answers| {
            tx.upgrade()
                .is_some_and(|tx| tx.send_blocking(Command::Engine(answers)).is_ok())
        })
    }

    /// A sender that does not keep the hub's channel open: hook tasks
    /// report with it, and the hub holds one itself.
    pub fn downgrade(&self) -> async_channel::WeakSender<Command> {
        self.tx.downgrade()
    }

    /// Counts a hook call the hub does not answer.
    pub async fn hook_observed(&self, called: crate::hook::Called) {
        // Only a counter; a stopped hub has nothing left to count.
        let _ = self.send(Command::HookObserved(called)).await;
    }

    /// Whether the hub task has stopped.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    async fn send(&self, command: Command) -> Result<(), HubGone> {
        self.tx.send(command).await.map_err(|_| HubGone)
    }

    async fn call<T>(&self, make: impl FnOnce(Sender<T>) -> Command) -> Result<T, HubGone> {
        let (tx, rx) = async_channel::bounded(1);
        self.send(make(tx)).await?;
        rx.recv().await.map_err(|_| HubGone)
    }

    pub async fn join(&self, request: JoinRequest) -> Result<Result<Joined, Refusal>, HubGone> {
        self.call(|tx| Command::Join(Box::new(request), tx)).await
    }

    pub async fn rejected(&self, code: ErrorCode) {
        // Only a counter; a stopped hub has nothing left to count.
        let _ = self.send(Command::Rejected(code)).await;
    }

    /// Counts an upgrade refused with `code` (an app's, or `hook_unavailable`).
    pub async fn rejected_by(&self, code: String) {
        // Only a counter; a stopped hub has nothing left to count.
        let _ = self.send(Command::RejectedBy(code)).await;
    }

    /// Sends a command that needs no answer; the future is the channel's
    /// own, so a task awaiting it holds little more than the command.
    pub fn command(&self, command: Command) -> async_channel::Send<'_, Command> {
        self.tx.send(command)
    }

    pub async fn leave(&self, conn: ConnId, reason: &'static str, close_code: Option<u16>) {
        // A stopped hub has already forgotten every connection.
        let _ = self
            .command(Command::Leave {
                conn,
                reason,
                close_code,
            })
            .await;
    }

    pub async fn publish(
        &self,
        publish: Publish,
        correlation_id: String,
    ) -> Result<Result<Published, ProtocolError>, HubGone> {
        let started = Instant::now();
        self.call(|reply| {
            Command::Publish(Box::new(PublishRequest {
                publish,
                correlation_id,
                started,
                reply,
            }))
        })
        .await
    }

    pub async fn set_health(
        &self,
        component: String,
        status: Status,
        detail: Option<String>,
        correlation_id: String,
    ) -> Result<ComponentState, HubGone> {
        self.call(|reply| {
            Command::SetHealth(Box::new(SetHealthRequest {
                component,
                status,
                detail,
                correlation_id,
                reply,
            }))
        })
        .await
    }

    pub async fn health(&self) -> Result<HealthReport, HubGone> {
        self.call(Command::Health).await
    }

    pub async fn connections(&self, user: Option<String>) -> Result<Vec<ConnectionInfo>, HubGone> {
        self.call(|tx| Command::Connections(user, tx)).await
    }

    pub async fn connection(&self, id: ConnId) -> Result<Option<ConnectionInfo>, HubGone> {
        self.call(|tx| Command::Connection(id, tx)).await
    }

    pub async fn disconnect(&self, id: ConnId) -> Result<bool, HubGone> {
        self.call(|tx| Command::Disconnect(id, tx)).await
    }

    pub async fn rooms(&self) -> Result<Vec<RoomInfo>, HubGone> {
        self.call(Command::Rooms).await
    }

    pub async fn room(&self, name: String) -> Result<Option<RoomInfo>, HubGone> {
        self.call(|tx| Command::Room(name, tx)).await
    }

    pub async fn metrics(&self) -> Result<String, HubGone> {
        self.call(Command::Metrics).await
    }

    pub async fn shutdown(&self) {
        // Already stopping or stopped is what the caller wants.
        let _ = self.send(Command::Shutdown).await;
    }
}
