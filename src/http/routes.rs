//! The HTTP routes of PROTOCOL.md section 1: matching, access, bodies, and
//! turning each into a hub command and its answer into a response.

use std::net::SocketAddr;
use std::time::Instant;

use serde_json::{Value, json};
use smol::Async;

use super::Context;
use super::access::{check_privileged, preflight};
use super::request::{Request, read_exact_into};
use super::response::{Response, write_all_within};
use crate::hub::{ConnId, HubGone, Status};
use crate::protocol::{ErrorCode, ProtocolError, Publish, is_valid_room};

/// The built-in live page.
const PAGE: &str = include_str!("../../web/index.html");
/// The browser client module.
const CLIENT_JS: &str = include_str!("../../web/client.js");

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    Anyone,
    Publisher,
    Admin,
}

#[derive(Debug)]
enum Route {
    Health,
    Page,
    ClientJs,
    Metrics,
    Events,
    SetHealth(String),
    Connections,
    Connection(String),
    Rooms,
    Room(String),
}

impl Route {
    fn find(path: &str) -> Option<Self> {
        Some(match path {
            "/health" => Self::Health,
            "/" => Self::Page,
            "/client.js" => Self::ClientJs,
            "/metrics" => Self::Metrics,
            "/api/events" => Self::Events,
            "/api/connections" => Self::Connections,
            "/api/rooms" => Self::Rooms,
            _ => {
                let (prefix, rest) = path.rsplit_once('/')?;
                if rest.is_empty() {
                    return None;
                }
                let rest = super::percent_decode(rest);
                match prefix {
                    "/api/health" => Self::SetHealth(rest),
                    "/api/connections" => Self::Connection(rest),
                    "/api/rooms" => Self::Room(rest),
                    _ => return None,
                }
            }
        })
    }

    fn methods(&self) -> &'static [&'static str] {
        match self {
            Self::Events => &["POST"],
            Self::SetHealth(_) => &["PUT"],
            Self::Connection(_) => &["GET", "DELETE"],
            _ => &["GET"],
        }
    }

    fn access(&self) -> Access {
        match self {
            Self::Health | Self::Page | Self::ClientJs => Access::Anyone,
            Self::Events | Self::SetHealth(_) => Access::Publisher,
            _ => Access::Admin,
        }
    }
}

/// Answers one request; the flag says whether the connection is still in
/// step (its body was read) and may serve another request.
pub(super) async fn respond(
    stream: &mut &Async<std::net::TcpStream>,
    buf: &mut Vec<u8>,
    peer: SocketAddr,
    request: &Request,
    correlation_id: &str,
    ctx: &Context,
) -> (Response, bool) {
    let body = match read_body(stream, buf, request, ctx).await {
        Ok(body) => body,
        Err(response) => return (response, false),
    };
    if request.method == "OPTIONS" {
        return (preflight(request, &ctx.config), true);
    }
    let Some(route) = Route::find(&request.path) else {
        return (
            Response::error(
                404,
                ErrorCode::NotFound,
                format!("no route {}", request.path),
            ),
            true,
        );
    };
    let methods = route.methods();
    if !methods.contains(&request.method.as_str()) {
        let response = Response::error(
            405,
            ErrorCode::MethodNotAllowed,
            format!("{} is not allowed on {}", request.method, request.path),
        )
        .with_header("Allow", methods.join(", "));
        return (response, true);
    }
    if route.access() != Access::Anyone
        && let Err(response) = check_privileged(request, peer, &ctx.config)
    {
        return (response, true);
    }
    if matches!(route, Route::Events | Route::SetHealth(_))
        && let Some(response) = check_content_type(request)
    {
        return (response, true);
    }
    let response = handle(route, request, &body, correlation_id, ctx)
        .await
        .unwrap_or_else(|HubGone| Response::shutting_down());
    (response, true)
}

async fn handle(
    route: Route,
    request: &Request,
    body: &[u8],
    correlation_id: &str,
    ctx: &Context,
) -> Result<Response, HubGone> {
    let hub = &ctx.hub;
    Ok(match route {
        Route::Health => {
            let report = hub.health().await?;
            let status = if report.status == Status::Down {
                503
            } else {
                200
            };
            Response::json(status, &report)
        }
        // no-cache: a browser revalidates, so an upgraded hub is never
        // hidden behind an old page or client.
        Route::Page => Response::body(200, "text/html; charset=utf-8", PAGE)
            .with_header("Cache-Control", "no-cache"),
        Route::ClientJs => Response::body(200, "text/javascript; charset=utf-8", CLIENT_JS)
            .with_header("Cache-Control", "no-cache"),
        // Exactly PROTOCOL.md section 1's type; the text format is UTF-8
        // by definition, so Prometheus needs no charset parameter.
        Route::Metrics => Response::body(200, "text/plain; version=0.0.4", hub.metrics().await?),
        Route::Events => match Publish::from_json(body) {
            Err(e) => protocol_error(&e),
            Ok(publish) => match hub.publish(publish, correlation_id.to_string()).await? {
                Ok(published) => Response::json(202, &published),
                Err(e) => protocol_error(&e),
            },
        },
        Route::SetHealth(component) => match health_body(&component, body) {
            Err(e) => protocol_error(&e),
            Ok((status, detail)) => {
                let state = hub
                    .set_health(component, status, detail, correlation_id.to_string())
                    .await?;
                Response::json(200, &state)
            }
        },
        Route::Connections => {
            let user = request.query_param("user");
            Response::json(200, &json!({"connections": hub.connections(user).await?}))
        }
        Route::Connection(id) => {
            let found = match ConnId::parse(&id) {
                None => None,
                Some(id) if request.method == "DELETE" => {
                    hub.disconnect(id).await?.then(|| Response::empty(204))
                }
                Some(id) => hub.connection(id).await?.map(|c| Response::json(200, &c)),
            };
            found.unwrap_or_else(|| {
                Response::error(404, ErrorCode::NotFound, format!("no connection `{id}`"))
            })
        }
        Route::Rooms => Response::json(200, &json!({"rooms": hub.rooms().await?})),
        Route::Room(name) => match hub.room(name.clone()).await? {
            Some(room) => Response::json(200, &room),
            None => Response::error(
                404,
                ErrorCode::NotFound,
                format!("room `{name}` has no subscribers and no history"),
            ),
        },
    })
}

/// The length of the request's body (0 without `Content-Length`), refused
/// before a byte of it is read when it is chunked (411) or over
/// `max_message_bytes` (413): no body is buffered past that limit.
fn body_len(request: &Request, ctx: &Context) -> Result<usize, Response> {
    if request.header("transfer-encoding").is_some() {
        return Err(Response::error(
            411,
            ErrorCode::LengthRequired,
            "send the body with Content-Length, not Transfer-Encoding",
        ));
    }
    let max = ctx.config.max_message_bytes;
    match usize::try_from(request.content_length.unwrap_or(0)) {
        Ok(len) if len <= max => Ok(len),
        _ => Err(Response::error(
            413,
            ErrorCode::PayloadTooLarge,
            format!("the body is over max_message_bytes ({max}); send a smaller one"),
        )),
    }
}

/// Reads and drops the body of a request refused before its route, so the
/// connection stays in step; `false` when it cannot (chunked, too large,
/// late, or a client waiting for `100 Continue`, which it is not given).
pub(super) async fn discard_body(
    stream: &mut &Async<std::net::TcpStream>,
    buf: &mut Vec<u8>,
    request: &Request,
    ctx: &Context,
) -> bool {
    let Ok(len) = body_len(request, ctx) else {
        return false;
    };
    if len > buf.len() && request.has_token("expect", "100-continue") {
        return false;
    }
    let deadline = Instant::now() + ctx.config.handshake_timeout;
    if read_exact_into(stream, buf, len, deadline).await.is_err() {
        return false;
    }
    buf.drain(..len);
    true
}

/// Reads the request's body (empty without `Content-Length`). An error
/// response means the connection can no longer be kept in step.
async fn read_body(
    stream: &mut &Async<std::net::TcpStream>,
    buf: &mut Vec<u8>,
    request: &Request,
    ctx: &Context,
) -> Result<Vec<u8>, Response> {
    let len = body_len(request, ctx)?;
    // A client that asked to hear before sending the body (curl does, for
    // large bodies) gets the go-ahead; one it does not need is harmless.
    if len > buf.len() && request.has_token("expect", "100-continue") {
        let go_ahead = b"HTTP/1.1 100 Continue\r\n\r\n";
        // A peer that does not take it will not send the body either; the
        // read below then times out.
        let _ = write_all_within(stream, go_ahead, ctx.config.handshake_timeout).await;
    }
    let deadline = Instant::now() + ctx.config.handshake_timeout;
    read_exact_into(stream, buf, len, deadline)
        .await
        .map_err(|_| {
            Response::error(
                400,
                ErrorCode::BadRequest,
                "the body did not arrive in time",
            )
        })?;
    Ok(buf.drain(..len).collect())
}

/// 415 unless the request has no Content-Type or a JSON one.
fn check_content_type(request: &Request) -> Option<Response> {
    let content_type = request.header("content-type")?;
    let mime = content_type.split(';').next().unwrap_or("").trim();
    if mime.eq_ignore_ascii_case("application/json") {
        None
    } else {
        Some(Response::error(
            415,
            ErrorCode::UnsupportedMediaType,
            format!("the body must be application/json, not `{mime}`"),
        ))
    }
}

/// The status and detail of a `PUT /api/health/{component}` body.
fn health_body(component: &str, body: &[u8]) -> Result<(Status, Option<String>), ProtocolError> {
    if !is_valid_room(component) {
        return Err(ProtocolError::new(
            ErrorCode::BadRequest,
            "a component name is 1 to 128 of A-Z a-z 0-9 _ . : -",
        ));
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ProtocolError::new(ErrorCode::BadRequest, format!("body is not JSON: {e}")))?;
    let status = value
        .get("status")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            ProtocolError::invalid_field("status", "must be \"ok\", \"degraded\" or \"down\"")
        })?;
    let detail = match value.get("detail") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(ProtocolError::invalid_field("detail", "must be a string")),
    };
    Ok((status, detail))
}

/// The HTTP status of a protocol error (400 for unparsable, 422 otherwise).
fn protocol_error(error: &ProtocolError) -> Response {
    let status = match error.code {
        ErrorCode::BadRequest => 400,
        ErrorCode::Forbidden => 403,
        ErrorCode::EngineUnavailable => {
            return Response::error(503, error.code, &error.message)
                .with_header("Retry-After", "1");
        }
        _ => 422,
    };
    Response::error(status, error.code, &error.message)
}
