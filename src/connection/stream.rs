//! An SSE stream's tasks (PROTOCOL.md section 12): the [`writer`](super::writer)
//! every connection has, and a watcher in place of the WebSocket reader.
//! The peer of a stream sends nothing after its request, so the watcher
//! only waits for the socket to end (and drops whatever bytes come), then
//! tells the hub `Leave`: a client that goes away is seen at once, not at
//! the next failed write.
//!
//! A stream has no heartbeat timeout: it cannot answer anything. Whether
//! its peer is still there shows only in its writes, which carry a
//! `: heartbeat` comment every `heartbeat_interval`; a peer that takes
//! nothing for the write timeout (`handshake_timeout`) is ended as a slow
//! consumer, and one that vanished is ended when the kernel gives up
//! retransmitting to it.

use std::io::{ErrorKind, Read};
use std::sync::Arc;
use std::time::Duration;

use super::Queues;
use super::writer::Writer;
use crate::executor::Spawner;
use crate::hub::{ConnId, HubClient};
use crate::outlet::{Link, Outlet};
use crate::shutdown::TaskGuard;

/// Bytes a stray read takes at most; they are dropped.
const DISCARD_CHUNK: usize = 4 * 1024;

/// Everything an admitted stream needs to run.
#[derive(Debug)]
pub(crate) struct Stream {
    pub id: ConnId,
    pub hub: HubClient,
    pub pipes: Queues,
    /// How long a write may make no progress before the stream ends
    /// (`handshake_timeout`, PROTOCOL.md section 11).
    pub write_timeout: Duration,
    pub shutdown_grace: Duration,
    /// Dropped when the writer ends; the drain waits for all of them.
    pub task: TaskGuard,
}

/// Starts the writer and the watcher of a stream whose response head (and
/// welcome) has been written.
pub(crate) fn start_stream(link: Arc<Link>, stream: Stream, spawner: &Spawner) {
    let writer = Writer {
        link: link.clone(),
        outbound: stream.pipes.outbound_rx,
        shutdown_grace: stream.shutdown_grace,
        write_timeout: stream.write_timeout,
        task: stream.task,
        // A stream never gets a Ping, so it never has a Pong to send.
        pong: stream.pipes.pong,
    };
    spawner.spawn(writer.run());
    spawner.spawn(watch(
        link,
        stream.id,
        stream.hub,
        stream.pipes.reader_outlet,
    ));
}

/// Waits for the socket to end, then tells the hub why. `_outlet` keeps
/// the queue open until then, so that the writer, closing, waits for the
/// peer to go (as it waits for a WebSocket's closing handshake).
async fn watch(link: Arc<Link>, id: ConnId, hub: HubClient, _outlet: Outlet) {
    let reason = loop {
        match discard(&link) {
            // The client went: the usual end of a stream.
            Discarded::Eof => break "normal",
            // Nothing a stream's peer sends means anything; let others run.
            Discarded::Dropped => futures_lite::future::yield_now().await,
            Discarded::WouldBlock => {
                if link.socket.readable().await.is_err() {
                    break "error";
                }
            }
            Discarded::Failed => break "error",
        }
    };
    // A close the hub or the writer asked for says how it ended (the hub
    // has then forgotten the stream already, and the Leave is a no-op).
    let reason = link
        .close_requested()
        .map_or(reason, |code| code.disconnect_reason());
    hub.leave(id, reason, None).await;
}

/// What one read of a stream's socket found.
enum Discarded {
    Eof,
    Dropped,
    WouldBlock,
    Failed,
}

/// One non-blocking read into the stack, thrown away. Not async: the
/// buffer never becomes part of the task, which stays a few words while it
/// waits.
fn discard(link: &Link) -> Discarded {
    let mut chunk = [0u8; DISCARD_CHUNK];
    loop {
        return match link.socket.get_ref().read(&mut chunk) {
            Ok(0) => Discarded::Eof,
            Ok(_) => Discarded::Dropped,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => Discarded::WouldBlock,
            Err(_) => Discarded::Failed,
        };
    }
}
