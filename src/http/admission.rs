//! What admits a connection, WebSocket or SSE stream alike (PROTOCOL.md
//! sections 2, 11 and 12): the `?rooms=` list, the `Origin`, the token (by
//! header or `?token=`) and its room permissions; the JSON refusal when
//! they, the app's hooks or the hub's limits say no; and the opening write
//! of one that is let in. Each route checks `Host`, then
//! the `Origin`, before anything, then its own request shape (the upgrade
//! headers, the method).

use std::collections::HashSet;
use std::net::{SocketAddr, TcpStream};

use futures_lite::AsyncWriteExt;
use smol::Async;

use super::Context;
use super::access::{bearer, request_origin_allowed};
use super::connect_hook::Kept;
use super::request::Request;
use super::response::{Response, write_all_within};
use crate::auth::{self, Claims};
use crate::config::Config;
use crate::hub::{ConnId, Refusal};
use crate::log::as_json;
use crate::protocol::{ErrorCode, is_valid_room};

/// Who is asking, and for which rooms.
#[derive(Debug)]
pub struct Admitted {
    /// The verified token's claims, when the hub has a `jwt_secret`.
    pub claims: Option<Claims>,
    /// The `?rooms=` to join, valid, permitted and without duplicates, in
    /// the order given.
    pub rooms: Vec<String>,
}

/// Refuses a request whose `Origin` is not allowed. Each route calls it
/// right after `Host`, before its own checks: section 11 refuses such a
/// request with 403 `origin_not_allowed` whatever its method or headers,
/// so a foreign page learns nothing else about `/ws` or `/sse`.
pub fn check_origin(request: &Request, config: &Config) -> Result<(), Refusal> {
    if request_origin_allowed(request, config) {
        Ok(())
    } else {
        Err(Refusal::new(
            403,
            ErrorCode::OriginNotAllowed,
            "this Origin is not allowed to connect (see allowed_origins)",
        ))
    }
}

/// Checks `?rooms=`, then the token and that it allows every room, in that
/// order (the order of section 2's refusals). The caller has checked the
/// `Origin` first ([`check_origin`]).
pub fn check(request: &Request, config: &Config) -> Result<Admitted, Refusal> {
    let rooms = rooms(request)?;
    let claims = match &config.jwt_secret {
        None => None,
        Some(secret) => {
            let token = bearer(request)
                .map(str::to_string)
                .or_else(|| request.query_param("token"))
                .filter(|t| !t.is_empty());
            let Some(token) = token else {
                return Err(Refusal::new(
                    403,
                    ErrorCode::Unauthenticated,
                    "a token is required: `Authorization: Bearer <jwt>` or `?token=<jwt>`",
                ));
            };
            let claims = auth::verify(&token, secret.as_bytes(), auth::unix_now())
                .map_err(|e| Refusal::new(403, e.code, e.message))?;
            if let Some(room) = rooms.iter().find(|r| !claims.may_subscribe(r)) {
                return Err(Refusal::new(
                    403,
                    ErrorCode::Forbidden,
                    format!("the token does not allow room `{room}`"),
                ));
            }
            Some(claims)
        }
    };
    Ok(Admitted { claims, rooms })
}

/// The rooms of `?rooms=a,b`, each once, in order; 400 for a bad name.
fn rooms(request: &Request) -> Result<Vec<String>, Refusal> {
    let Some(list) = request.query_param("rooms") else {
        return Ok(Vec::new());
    };
    let mut rooms: Vec<String> = Vec::new();
    let mut seen = HashSet::new();
    for room in list.split(',').map(str::trim).filter(|r| !r.is_empty()) {
        if !is_valid_room(room) {
            return Err(Refusal::new(
                400,
                ErrorCode::BadRequest,
                format!("`{room}` in ?rooms= is not a room name (1 to 128 of A-Z a-z 0-9 _ . : -)"),
            ));
        }
        if seen.insert(room) {
            rooms.push(room.to_string());
        }
    }
    Ok(rooms)
}

/// Writes an admitted connection's opening bytes (its response head and
/// welcome); a peer that does not take them within `handshake_timeout`
/// leaves the hub again. Whether they were written.
pub(super) async fn open(
    stream: &Async<TcpStream>,
    bytes: &[u8],
    id: ConnId,
    ctx: &Context,
) -> bool {
    let mut io = stream;
    let written = write_all_within(&mut io, bytes, ctx.config.handshake_timeout).await;
    if written.is_err() {
        ctx.hub.leave(id, "error", None).await;
    }
    written.is_ok()
}

/// Answers a refused request with its JSON error (and `headers`), then
/// closes the socket.
pub(super) async fn refuse(
    stream: &Async<TcpStream>,
    peer: SocketAddr,
    refusal: &Refusal,
    headers: Vec<(&'static str, String)>,
    correlation_id: &str,
    ctx: &Context,
) {
    log_refusal(
        peer,
        refusal.status,
        refusal.error.code.as_str(),
        &refusal.error.message,
        correlation_id,
    );
    let mut response = Response::refusal(refusal);
    response.headers.extend(headers);
    send_and_close(stream, &response, correlation_id, ctx).await;
}

/// Answers a request the app's hooks kept out (their own code, or
/// `hook_unavailable` with `Retry-After`), then closes the socket.
pub(super) async fn refuse_kept(
    stream: &Async<TcpStream>,
    peer: SocketAddr,
    kept: &Kept,
    headers: Vec<(&'static str, String)>,
    correlation_id: &str,
    ctx: &Context,
) {
    let (status, code, message) = kept.response();
    ctx.hub.rejected_by(code.clone()).await;
    log_refusal(peer, status, &code, &message, correlation_id);
    let mut response = Response::json(
        status,
        &serde_json::json!({"error": {"code": code, "message": message}}),
    );
    if status == 503 {
        response = response.with_header("Retry-After", "1");
    }
    response.headers.extend(headers);
    send_and_close(stream, &response, correlation_id, ctx).await;
}

fn log_refusal(peer: SocketAddr, status: u16, code: &str, message: &str, correlation_id: &str) {
    tracing::info!(
        correlation_id = as_json(correlation_id),
        ip = as_json(peer.ip()),
        status = as_json(status),
        code = as_json(code),
        message = as_json(message),
        "handshake rejected"
    );
}

async fn send_and_close(
    stream: &Async<TcpStream>,
    response: &Response,
    correlation_id: &str,
    ctx: &Context,
) {
    let bytes = response.to_bytes(correlation_id, false);
    // The peer may already be gone, or not reading; there is nothing more
    // to tell it.
    let mut io = stream;
    if write_all_within(&mut io, &bytes, ctx.config.handshake_timeout)
        .await
        .is_ok()
    {
        let _ = io.close().await;
    }
}
