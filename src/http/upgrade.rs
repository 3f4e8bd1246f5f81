//! The WebSocket handshake of PROTOCOL.md section 2: validating the upgrade
//! request (Host and Origin as section 11 asks, then method, headers, key,
//! version, subprotocol, rooms, token), asking the hub to admit it, and
//! answering 101 or a JSON refusal.

use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;

use async_tungstenite::tungstenite::handshake::derive_accept_key;
use base64::Engine as _;
use smol::Async;

use super::admission::{self, Admitted, refuse};
use super::request::Request;
use super::{Context, connect_hook, host};
use crate::auth::Claims;
use crate::config::Config;
use crate::connection::{self, Upgraded};
use crate::hub::{JoinRequest, Refusal};
use crate::outlet::Link;
use crate::protocol::{Encoding, ErrorCode};

/// What a valid upgrade request asks for.
#[derive(Debug)]
pub struct Accepted {
    /// `Sec-WebSocket-Accept` for the request's key.
    pub accept_key: String,
    /// The negotiated subprotocol's encoding.
    pub encoding: Encoding,
    /// Whether the client offered subprotocols (and so gets one back).
    pub offered: bool,
    /// The verified token's claims, when the hub has a `jwt_secret`.
    pub claims: Option<Claims>,
    /// The `?rooms=` to join, valid, permitted and without duplicates.
    pub rooms: Vec<String>,
}

/// Answers an upgrade request on `stream`; on success runs the connection
/// until its reader ends.
pub(crate) async fn upgrade(
    stream: Async<TcpStream>,
    peer: SocketAddr,
    request: Request,
    leftover: Vec<u8>,
    correlation_id: String,
    ctx: &Context,
) {
    let mut accepted = match check(&request, &ctx.config) {
        Ok(accepted) => accepted,
        Err(refusal) => {
            ctx.hub.rejected(refusal.error.code).await;
            refuse(&stream, peer, &refusal, Vec::new(), &correlation_id, ctx).await;
            return;
        }
    };
    let claims = accepted.claims.take();
    let rooms = std::mem::take(&mut accepted.rooms);
    let asked = connect_hook::ask(
        &request,
        peer,
        claims,
        rooms,
        accepted.encoding,
        &correlation_id,
        ctx,
    );
    let let_in = match asked.await {
        Ok(let_in) => let_in,
        Err(kept) => {
            admission::refuse_kept(&stream, peer, &kept, Vec::new(), &correlation_id, ctx).await;
            return;
        }
    };
    let link = Arc::new(Link::new(stream));
    let (outlet, pipes) = connection::pipes(&link);
    let join = JoinRequest {
        peer,
        origin: request.header("origin").map(str::to_string),
        user_agent: request.header("user-agent").map(str::to_string),
        encoding: accepted.encoding,
        claims: let_in.claims,
        rooms: let_in.rooms,
        id: Some(let_in.id),
        expires_at: let_in.expires_at,
        correlation_id: correlation_id.clone(),
        since: None,
        outlet,
    };
    // A hub that is gone is shutting down.
    let joined = ctx.hub.join(join).await;
    let joined = match joined.unwrap_or_else(|_| Err(Refusal::shutting_down())) {
        Ok(joined) => joined,
        Err(refusal) => {
            let headers = Vec::new();
            refuse(&link.socket, peer, &refusal, headers, &correlation_id, ctx).await;
            return;
        }
    };

    let mut head = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\nX-Correlation-ID: {correlation_id}\r\n",
        accepted.accept_key
    );
    if accepted.offered {
        head.push_str(&format!(
            "Sec-WebSocket-Protocol: {}\r\n",
            accepted.encoding.protocol()
        ));
    }
    head.push_str("\r\n");
    // The 101 and the welcome go out together: one write, and the welcome
    // is first whatever the writer finds queued later.
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(joined.welcome.wire());
    if !admission::open(&link.socket, &bytes, joined.id, ctx).await {
        return;
    }
    let upgraded = Upgraded {
        id: joined.id,
        encoding: accepted.encoding,
        hub: ctx.hub.clone(),
        pipes,
        max_message_bytes: ctx.config.max_message_bytes,
        rate_limit_per_s: ctx.config.rate_limit_per_s,
        rate_limit_burst: ctx.config.rate_limit_burst,
        send_queue: ctx.config.send_queue,
        write_timeout: ctx.config.handshake_timeout,
        shutdown_grace: ctx.config.shutdown_grace,
        task: joined.task,
    };
    connection::start(link, leftover, upgraded, &ctx.spawner);
}

/// Validates an upgrade request against `config` alone: Host, Origin
/// (section 11: before anything else about the request), method,
/// headers, key, version, subprotocol, then the shared admission
/// (`http::admission`: `?rooms=` and token), in that order.
/// Pure, so the fuzzer can call it; the hub's own limits come after.
pub fn check(request: &Request, config: &Config) -> Result<Accepted, Refusal> {
    host::check(request, config)?;
    admission::check_origin(request, config)?;
    let bad = |message: &str| Refusal::new(400, ErrorCode::BadRequest, message);
    if request.method != "GET" || request.minor_version != 1 {
        return Err(bad("a WebSocket upgrade is a GET over HTTP/1.1"));
    }
    if !request.has_token("upgrade", "websocket") || !request.has_token("connection", "upgrade") {
        return Err(bad(
            "not a WebSocket upgrade: send `Upgrade: websocket` and `Connection: Upgrade`",
        ));
    }
    if request.header("sec-websocket-version").map(str::trim) != Some("13") {
        return Err(Refusal::new(
            426,
            ErrorCode::BadRequest,
            "only Sec-WebSocket-Version 13 is supported",
        ));
    }
    let key = request
        .header("sec-websocket-key")
        .map(str::trim)
        .unwrap_or("");
    let key_ok = base64::engine::general_purpose::STANDARD
        .decode(key)
        .is_ok_and(|k| k.len() == 16);
    if !key_ok {
        return Err(bad("Sec-WebSocket-Key must be 16 bytes in base64"));
    }

    let offers: Vec<&str> = request.header_tokens("sec-websocket-protocol").collect();
    let encoding = if offers.is_empty() {
        Encoding::Json
    } else {
        offers
            .iter()
            .find_map(|o| Encoding::from_protocol(o))
            .ok_or_else(|| {
                Refusal::new(
                    400,
                    ErrorCode::UnsupportedProtocol,
                    "offer wshub.json or wshub.msgpack in Sec-WebSocket-Protocol",
                )
            })?
    };

    let Admitted { claims, rooms } = admission::check(request, config)?;

    Ok(Accepted {
        accept_key: derive_accept_key(key.as_bytes()),
        encoding,
        offered: !offers.is_empty(),
        claims,
        rooms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::parse_head;

    fn checked(head: &str, config: &Config) -> Result<Accepted, Refusal> {
        let raw = format!(
            "GET /ws{head}\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        let (request, _) = parse_head(raw.as_bytes()).unwrap().unwrap();
        check(&request, config)
    }

    #[test]
    fn checks_need_only_the_config() {
        let config = Config::default();
        let ok = checked("?rooms=a,b,a HTTP/1.1", &config).unwrap();
        // The sample handshake of RFC 6455, section 1.3.
        assert_eq!(ok.accept_key, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!((ok.encoding, ok.offered), (Encoding::Json, false));
        assert_eq!(ok.rooms, ["a", "b"]);
        let mp = checked(
            " HTTP/1.1\r\nSec-WebSocket-Protocol: chat, wshub.msgpack",
            &config,
        )
        .unwrap();
        assert_eq!((mp.encoding, mp.offered), (Encoding::MsgPack, true));

        let code = |r: Result<Accepted, Refusal>| {
            let r = r.unwrap_err();
            (r.status, r.error.code)
        };
        assert_eq!(
            code(checked(" HTTP/1.0", &config)),
            (400, ErrorCode::BadRequest)
        );
        assert_eq!(
            code(checked("?rooms=no%20spaces HTTP/1.1", &config)),
            (400, ErrorCode::BadRequest)
        );
        let jwt = Config {
            jwt_secret: Some("k".into()),
            ..Config::default()
        };
        assert_eq!(
            code(checked(" HTTP/1.1", &jwt)),
            (403, ErrorCode::Unauthenticated)
        );
        let token = crate::auth::mint(&Claims::new("u", 60), b"k");
        let ok = checked(&format!("?token={token} HTTP/1.1"), &jwt).unwrap();
        assert_eq!(ok.claims.map(|c| c.sub).as_deref(), Some("u"));
    }
}
