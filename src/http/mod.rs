//! Plain HTTP/1.1 on the hub's one port (PROTOCOL.md section 1): each
//! accepted socket reads request heads under the size and time bounds,
//! checks `Host` and `Origin` (section 11), answers routes with keep-alive,
//! hands `/ws` upgrades to [`upgrade`] and `/sse` streams to [`sse`], both
//! admitted by [`admission`].
//!
//! One request is answered, and its response written, before the next is
//! read: a peer that pipelines and never reads holds at most one response
//! and one head plus body of read-ahead, and a write that makes no
//! progress for `handshake_timeout` closes it.

mod access;
mod admission;
mod connect_hook;
mod host;
mod request;
mod response;
mod routes;
mod sse;
mod upgrade;

pub use request::{HeadError, parse_head, percent_decode};
use response::{Response, write_all_within};
pub use sse::{StreamRequest, check as check_stream};
pub use upgrade::{Accepted, check as check_upgrade};

use std::net::{SocketAddr, TcpStream};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use futures_lite::{AsyncWriteExt, FutureExt};
use smol::Async;

use crate::config::Config;
use crate::executor::Spawner;
use crate::hub::HubClient;
use crate::log::as_json;
use crate::protocol::{ErrorCode, is_valid_correlation_id, new_uuid};
use crate::shutdown::Shutdown;

/// What every socket task on the hub thread shares.
#[derive(Debug)]
pub(crate) struct Context {
    pub hub: HubClient,
    pub config: Config,
    pub spawner: Spawner,
    /// Set once the hub drains: requests are then answered 503.
    pub shutdown: Shutdown,
    /// The hub's epoch, which every SSE stream's cursor carries.
    pub epoch: Arc<str>,
    /// The app's hooks (the upgrade and the stream ask `connect_hook`).
    pub hooks: Rc<crate::hook::Hooks>,
}

/// Serves one accepted socket until it closes, times out or upgrades.
pub(crate) async fn serve(stream: Async<TcpStream>, peer: SocketAddr, ctx: Rc<Context>) {
    let mut buf = Vec::new();
    let mut io = &stream;
    let stall = ctx.config.handshake_timeout;
    for served in 0u64.. {
        let deadline = Instant::now() + ctx.config.handshake_timeout;
        // An idle keep-alive connection ends with the drain; a first
        // request, or one already arriving, is still answered (503).
        let idle = served > 0 && buf.is_empty();
        let head = request::read_head(&mut io, &mut buf, deadline);
        let drained = async {
            if idle {
                ctx.shutdown.started().await;
            } else {
                std::future::pending::<()>().await;
            }
            Err(HeadError::Closed)
        };
        let request = match head.or(drained).await {
            Ok(request) => request,
            Err(HeadError::Malformed(message)) => {
                // Closed after the answer: what follows a head that cannot
                // be trusted is never read as a next request.
                let response = Response::error(400, ErrorCode::BadRequest, message);
                let bytes = response.to_bytes(&new_uuid(), false);
                if write_all_within(&mut io, &bytes, stall).await.is_ok() {
                    let _ = io.close().await;
                }
                return;
            }
            Err(error) => {
                // Timed out, too large, closed or broken: the socket is
                // dropped without an answer, as the protocol says.
                if error != HeadError::Closed {
                    tracing::debug!(
                        ip = as_json(peer.ip()),
                        reason = as_json(format!("{error:?}")),
                        "request head refused"
                    );
                }
                return;
            }
        };
        let correlation_id = request
            .header("x-correlation-id")
            .map(str::trim)
            .filter(|id| is_valid_correlation_id(id))
            .map_or_else(new_uuid, str::to_string);

        // A foreign Host is refused first, draining or not: a rebinding
        // page learns nothing, not even that the hub is stopping.
        let host = host::check(&request, &ctx.config);
        if host.is_ok() && (ctx.shutdown.is_draining() || ctx.hub.is_closed()) {
            let response = Response::shutting_down();
            let bytes = response.to_bytes(&correlation_id, false);
            let _ = write_all_within(&mut io, &bytes, stall).await;
            return;
        }
        // A preflight on /ws is answered like any route's (section 1: every
        // path of an allowed origin gets one), not taken for an upgrade.
        if request.path == "/ws" && request.method != "OPTIONS" {
            // Only the bytes: the head's read buffer is not kept for the
            // life of the connection.
            let leftover = buf[..].to_vec();
            drop(buf);
            upgrade::upgrade(stream, peer, request, leftover, correlation_id, &ctx).await;
            return;
        }
        // A preflight is answered like any route's; everything else asked
        // of /sse is the stream's to answer (405 for other methods). Bytes
        // that came after the head are not read as a request.
        if request.path == "/sse" && request.method != "OPTIONS" {
            drop(buf);
            sse::open(stream, peer, request, correlation_id, &ctx).await;
            return;
        }

        let front_door = host
            .map_err(|refusal| Response::refusal(&refusal))
            .and_then(|()| access::check_origin(&request, &ctx.config));
        let (mut response, in_sync) = match front_door {
            Ok(()) => {
                routes::respond(&mut io, &mut buf, peer, &request, &correlation_id, &ctx).await
            }
            Err(refused) => {
                let in_sync = routes::discard_body(&mut io, &mut buf, &request, &ctx).await;
                (refused, in_sync)
            }
        };
        response
            .headers
            .extend(access::cors_headers(&request, &ctx.config));
        let keep_alive = in_sync && request.keep_alive();
        tracing::debug!(
            correlation_id = as_json(&correlation_id),
            method = as_json(&request.method),
            path = as_json(&request.path),
            status = as_json(response.status),
            ip = as_json(peer.ip()),
            "http request"
        );
        let mut bytes = response.to_bytes(&correlation_id, keep_alive);
        if request.method == "HEAD" {
            // RFC 9110 9.3.2: the answer to a HEAD has the head alone (its
            // Content-Length still that of the body), or a keep-alive
            // client would read the body as the start of its next answer.
            bytes.truncate(bytes.len() - response.body.len());
        }
        match write_all_within(&mut io, &bytes, stall).await {
            // Let everyone else run between two pipelined requests: a
            // peer that sends hundreds in one write would otherwise keep
            // the executor while the socket takes its answers.
            Ok(()) if keep_alive => futures_lite::future::yield_now().await,
            Ok(()) => {
                let _ = io.close().await;
                return;
            }
            Err(error) => {
                // A peer that stopped reading (or went away): the socket is
                // dropped with whatever it did not take.
                tracing::debug!(
                    correlation_id = correlation_id.as_str(),
                    ip = %peer.ip(),
                    error = %error,
                    "http response not written"
                );
                return;
            }
        }
    }
}
