//! `GET /sse` (PROTOCOL.md section 12): a request admitted as a WebSocket
//! handshake is (Host, Origin, token, `?rooms=`, the app's hooks, the
//! hub's limits), with
//! an optional resume cursor, answered `200 text/event-stream` and kept
//! open as a connection of the hub.
//!
//! The response has neither `Content-Length` nor chunked framing: it ends
//! when the connection does (`Connection: close`), so every stream writes
//! the very bytes the hub encoded once for all of them.

use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;

use smol::Async;

use super::access::cors_headers;
use super::admission::{self, Admitted, refuse, refuse_kept};
use super::request::Request;
use super::{Context, connect_hook, host};
use crate::auth::Claims;
use crate::config::Config;
use crate::connection::{self, Stream};
use crate::hub::{JoinRequest, Refusal};
use crate::outlet::{Link, StreamCursor};
use crate::protocol::sse::{Cursor, RETRY};
use crate::protocol::{Encoding, ErrorCode};

/// What a valid `GET /sse` asks for.
#[derive(Debug)]
pub struct StreamRequest {
    /// The verified token's claims, when the hub has a `jwt_secret`.
    pub claims: Option<Claims>,
    /// The `?rooms=` to join, valid, permitted and without duplicates.
    pub rooms: Vec<String>,
    /// Where to resume from: `Last-Event-ID`, or else `?since=`.
    pub since: Option<Cursor>,
}

/// Validates a `GET /sse` against `config` alone: Host, Origin (section
/// 11: whatever the method), method, then the shared admission
/// (`http::admission`: `?rooms=`, token), then the cursor.
/// Pure, like the upgrade's check; the hub's own limits come after.
pub fn check(request: &Request, config: &Config) -> Result<StreamRequest, Refusal> {
    host::check(request, config)?;
    admission::check_origin(request, config)?;
    if request.method != "GET" {
        return Err(Refusal::new(
            405,
            ErrorCode::MethodNotAllowed,
            format!(
                "{} is not allowed on /sse; an event stream is a GET",
                request.method
            ),
        ));
    }
    let Admitted { claims, rooms } = admission::check(request, config)?;
    // An EventSource sends the header only once it has seen an `id:`; an
    // empty one (or `?since=`) asks for nothing.
    let cursor = request
        .header("last-event-id")
        .map(str::to_string)
        .or_else(|| request.query_param("since"))
        .filter(|c| !c.trim().is_empty());
    let since = cursor
        .map(|c| Cursor::parse(&c))
        .transpose()
        .map_err(|e| Refusal::new(400, e.code, e.message))?;
    Ok(StreamRequest {
        claims,
        rooms,
        since,
    })
}

/// Answers a `/sse` request on `stream`; once admitted, the stream runs as
/// a connection until it ends.
pub(crate) async fn open(
    stream: Async<TcpStream>,
    peer: SocketAddr,
    request: Request,
    correlation_id: String,
    ctx: &Context,
) {
    let cors = cors_headers(&request, &ctx.config);
    let refused = |refusal: &Refusal| {
        let mut headers = cors.clone();
        if refusal.status == 405 {
            headers.push(("Allow", "GET".to_string()));
        }
        headers
    };
    let checked = match check(&request, &ctx.config) {
        Ok(checked) => checked,
        Err(refusal) => {
            ctx.hub.rejected(refusal.error.code).await;
            let headers = refused(&refusal);
            refuse(&stream, peer, &refusal, headers, &correlation_id, ctx).await;
            return;
        }
    };
    let asked = connect_hook::ask(
        &request,
        peer,
        checked.claims,
        checked.rooms,
        Encoding::Sse,
        &correlation_id,
        ctx,
    );
    let let_in = match asked.await {
        Ok(let_in) => let_in,
        Err(kept) => {
            refuse_kept(&stream, peer, &kept, cors.clone(), &correlation_id, ctx).await;
            return;
        }
    };
    // The rooms a connect hook's `subscribe` added are in the cursor too.
    let cursor = StreamCursor::new(ctx.epoch.clone(), &let_in.rooms);
    let link = Arc::new(Link::stream(stream, cursor));
    let (outlet, pipes) = connection::pipes(&link);
    let join = JoinRequest {
        peer,
        origin: request.header("origin").map(str::to_string),
        user_agent: request.header("user-agent").map(str::to_string),
        encoding: Encoding::Sse,
        claims: let_in.claims,
        rooms: let_in.rooms,
        id: Some(let_in.id),
        expires_at: let_in.expires_at,
        correlation_id: correlation_id.clone(),
        since: checked.since,
        outlet,
    };
    // A hub that is gone is shutting down.
    let joined = ctx.hub.join(join).await;
    let joined = match joined.unwrap_or_else(|_| Err(Refusal::shutting_down())) {
        Ok(joined) => joined,
        Err(refusal) => {
            let headers = refused(&refusal);
            refuse(&link.socket, peer, &refusal, headers, &correlation_id, ctx).await;
            return;
        }
    };

    let mut head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache, no-transform\r\nX-Accel-Buffering: no\r\nConnection: close\r\nX-Correlation-ID: {correlation_id}\r\n"
    );
    for (name, value) in &cors {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    // The head, `retry:` and the welcome go out together; the writer, which
    // sends everything queued since, starts after.
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(RETRY);
    bytes.extend_from_slice(joined.welcome.wire());
    if !admission::open(&link.socket, &bytes, joined.id, ctx).await {
        return;
    }
    let opened = Stream {
        id: joined.id,
        hub: ctx.hub.clone(),
        pipes,
        write_timeout: ctx.config.handshake_timeout,
        shutdown_grace: ctx.config.shutdown_grace,
        task: joined.task,
    };
    connection::start_stream(link, opened, &ctx.spawner);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::parse_head;

    fn checked(line: &str, headers: &str, config: &Config) -> Result<StreamRequest, Refusal> {
        let raw = format!("{line} HTTP/1.1\r\nHost: localhost\r\n{headers}\r\n");
        let (request, _) = parse_head(raw.as_bytes()).unwrap().unwrap();
        check(&request, config)
    }

    fn code(r: Result<StreamRequest, Refusal>) -> (u16, ErrorCode) {
        let r = r.unwrap_err();
        (r.status, r.error.code)
    }

    #[test]
    fn a_stream_is_admitted_like_a_handshake() {
        let config = Config::default();
        let ok = checked("GET /sse?rooms=a,b,a", "", &config).unwrap();
        assert_eq!(ok.rooms, ["a", "b"]);
        assert!(ok.since.is_none() && ok.claims.is_none());
        assert_eq!(
            code(checked("POST /sse", "", &config)),
            (405, ErrorCode::MethodNotAllowed)
        );
        assert_eq!(
            code(checked("GET /sse?rooms=a%20b", "", &config)),
            (400, ErrorCode::BadRequest)
        );
        assert_eq!(
            code(checked(
                "GET /sse",
                "Origin: http://evil.example\r\n",
                &config
            )),
            (403, ErrorCode::OriginNotAllowed)
        );
        let jwt = Config {
            jwt_secret: Some("k".into()),
            ..Config::default()
        };
        assert_eq!(
            code(checked("GET /sse", "", &jwt)),
            (403, ErrorCode::Unauthenticated)
        );
        let mut claims = Claims::new("u", 60);
        claims.rooms = Some(vec!["a".into()]);
        let token = crate::auth::mint(&claims, b"k");
        let ok = checked(&format!("GET /sse?rooms=a&token={token}"), "", &jwt).unwrap();
        assert_eq!(ok.claims.map(|c| c.sub).as_deref(), Some("u"));
        assert_eq!(
            code(checked(
                &format!("GET /sse?rooms=b&token={token}"),
                "",
                &jwt
            )),
            (403, ErrorCode::Forbidden)
        );
        let bearer = format!("Authorization: Bearer {token}\r\n");
        assert!(checked("GET /sse?rooms=a", &bearer, &jwt).is_ok());
    }

    #[test]
    fn the_cursor_comes_from_last_event_id_before_since() {
        let config = Config::default();
        let header = checked(
            "GET /sse?rooms=a&since=q;a=1",
            "Last-Event-ID: e;a=7\r\n",
            &config,
        )
        .unwrap();
        assert_eq!(header.since.unwrap().to_string(), "e;a=7");
        let query = checked("GET /sse?rooms=a&since=q%3Ba%3D1", "", &config).unwrap();
        assert_eq!(query.since.unwrap().to_string(), "q;a=1");
        let empty = checked("GET /sse?rooms=a", "Last-Event-ID: \r\n", &config).unwrap();
        assert!(empty.since.is_none());
        assert_eq!(
            code(checked(
                "GET /sse?rooms=a",
                "Last-Event-ID: e;a=x\r\n",
                &config
            )),
            (400, ErrorCode::BadRequest)
        );
    }
}
