//! Plain HTTP/1.1 on the hub's one port (PROTOCOL.md section 1): each
//! accepted socket reads request heads under the size and time bounds,
//! answers routes with keep-alive, and hands `/ws` upgrades to [`upgrade`].

mod access;
mod request;
mod response;
mod routes;
mod upgrade;

pub use request::{HeadError, parse_head, percent_decode};
use response::Response;
pub use upgrade::{Accepted, check as check_upgrade};

use std::net::{SocketAddr, TcpStream};
use std::rc::Rc;
use std::time::Instant;

use futures_lite::AsyncWriteExt;
use smol::Async;

use crate::config::Config;
use crate::executor::Spawner;
use crate::hub::HubClient;
use crate::log::Logger;
use crate::protocol::{ErrorCode, is_valid_correlation_id, new_uuid};

/// What every socket task on the hub thread shares.
#[derive(Debug)]
pub(crate) struct Context {
    pub hub: HubClient,
    pub config: Config,
    pub log: Logger,
    pub spawner: Spawner,
}

/// Serves one accepted socket until it closes, times out or upgrades.
pub(crate) async fn serve(stream: Async<TcpStream>, peer: SocketAddr, ctx: Rc<Context>) {
    let mut buf = Vec::new();
    let mut io = &stream;
    loop {
        let deadline = Instant::now() + ctx.config.handshake_timeout;
        let request = match request::read_head(&mut io, &mut buf, deadline).await {
            Ok(request) => request,
            Err(HeadError::Malformed(message)) => {
                let response = Response::error(400, ErrorCode::BadRequest, message);
                let _ = io.write_all(&response.to_bytes(&new_uuid(), false)).await;
                return;
            }
            Err(error) => {
                // Timed out, too large, closed or broken: the socket is
                // dropped without an answer, as the protocol says.
                if error != HeadError::Closed {
                    ctx.log
                        .debug("request head refused")
                        .field("ip", peer.ip())
                        .field("reason", format!("{error:?}"))
                        .emit();
                }
                return;
            }
        };
        let correlation_id = request
            .header("x-correlation-id")
            .map(str::trim)
            .filter(|id| is_valid_correlation_id(id))
            .map_or_else(new_uuid, str::to_string);

        if ctx.hub.is_closed() {
            let response =
                Response::error(503, ErrorCode::ShuttingDown, "the hub is shutting down")
                    .with_header("Retry-After", "1");
            let _ = io
                .write_all(&response.to_bytes(&correlation_id, false))
                .await;
            return;
        }
        if request.path == "/ws" {
            // Only the bytes: the head's read buffer is not kept for the
            // life of the connection.
            let leftover = buf[..].to_vec();
            drop(buf);
            upgrade::upgrade(stream, peer, request, leftover, correlation_id, &ctx).await;
            return;
        }

        let (mut response, in_sync) =
            routes::respond(&mut io, &mut buf, peer, &request, &correlation_id, &ctx).await;
        response
            .headers
            .extend(access::cors_headers(&request, &ctx.config));
        let keep_alive = in_sync && request.keep_alive();
        ctx.log
            .debug("http request")
            .field("correlation_id", &correlation_id)
            .field("method", &request.method)
            .field("path", &request.path)
            .field("status", response.status)
            .field("ip", peer.ip())
            .emit();
        let bytes = response.to_bytes(&correlation_id, keep_alive);
        if io.write_all(&bytes).await.is_err() || !keep_alive {
            let _ = io.close().await;
            return;
        }
    }
}
