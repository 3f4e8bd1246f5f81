//! The handshake's side of app hooks (PROTOCOL.md section 10), for a
//! WebSocket upgrade and an SSE stream alike: `connect_hook` after the
//! Origin and JWT checks and before the 101 (or 200), then
//! `subscribe_hook` for each room of `?rooms=`.

use std::net::SocketAddr;

use serde_json::{Map, Value, json};

use super::Context;
use super::request::Request;
use crate::auth::Claims;
use crate::hook::{Hook, Outcome, connect_answer, unavailable};
use crate::hub::ConnId;
use crate::log::as_json;
use crate::protocol::{Encoding, ErrorCode};

/// Why the app's hooks kept an upgrade out.
#[derive(Debug)]
pub(crate) enum Kept {
    /// The app refused: 403 with its code and message.
    Refused { code: String, message: String },
    /// `hook_unavailable`: 503.
    Unavailable(Hook),
    /// A room the merged claims do not allow: 403 `forbidden`.
    Forbidden(String),
}

/// What the hooks let in.
#[derive(Debug)]
pub(crate) struct Let {
    pub id: ConnId,
    pub claims: Option<Claims>,
    pub rooms: Vec<String>,
    pub expires_at: Option<f64>,
}

/// Asks `connect_hook` (if set) and `subscribe_hook` (if set, for each
/// room of `?rooms=`) about an upgrade that passed every other check.
pub(crate) async fn ask(
    request: &Request,
    peer: SocketAddr,
    mut claims: Option<Claims>,
    mut rooms: Vec<String>,
    encoding: Encoding,
    correlation_id: &str,
    ctx: &Context,
) -> Result<Let, Kept> {
    let id = ConnId::random();
    let mut expires_at = None;
    let hooks = &ctx.hooks;
    if hooks.has(Hook::Connect) {
        let mut query = Map::new();
        for pair in request.query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let key = super::percent_decode(key);
            if !query.contains_key(&key) {
                query.insert(key, Value::String(super::percent_decode(value)));
            }
        }
        let mut headers = Map::new();
        for name in &hooks.forward_headers {
            let values: Vec<&str> = request
                .headers
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
                .collect();
            if !values.is_empty() {
                let joined = if name == "cookie" {
                    values.join("; ")
                } else {
                    values.join(", ")
                };
                headers.insert(name.clone(), Value::String(joined));
            }
        }
        let mut body = Map::new();
        body.insert("connection_id".into(), json!(id));
        body.insert(
            "user".into(),
            json!(claims.as_ref().map(|c| c.sub.as_str())),
        );
        body.insert("ip".into(), json!(peer.ip()));
        body.insert("origin".into(), json!(request.header("origin")));
        body.insert("user_agent".into(), json!(request.header("user-agent")));
        body.insert("protocol".into(), json!(encoding.protocol()));
        body.insert("query".into(), Value::Object(query));
        body.insert("headers".into(), Value::Object(headers));
        let called = hooks.call(Hook::Connect, body, correlation_id).await;
        let outcome = called.outcome.clone();
        ctx.hub.hook_observed(called).await;
        match outcome {
            Outcome::Answered(answer) => match connect_answer(&answer, claims.take()) {
                Ok(answer) => {
                    claims = answer.claims;
                    expires_at = answer.expires_at;
                    if let Some(c) = &claims
                        && let Some(room) = rooms.iter().find(|r| !c.may_subscribe(r))
                    {
                        return Err(Kept::Forbidden(room.clone()));
                    }
                    // The app's own rooms join without asking it again.
                    let asked = rooms.clone();
                    for room in answer.subscribe {
                        if !rooms.contains(&room) {
                            rooms.push(room);
                        }
                    }
                    ask_rooms(id, &claims, &asked, correlation_id, ctx).await?;
                    return Ok(Let {
                        id,
                        claims,
                        rooms,
                        expires_at,
                    });
                }
                Err(cause) => {
                    tracing::warn!(
                        hook = as_json("connect"),
                        correlation_id = as_json(correlation_id),
                        cause = as_json(&cause),
                        "hook unavailable"
                    );
                    return Err(Kept::Unavailable(Hook::Connect));
                }
            },
            Outcome::Refused(r) => {
                return Err(Kept::Refused {
                    code: r.code,
                    message: r.message,
                });
            }
            Outcome::Unavailable => return Err(Kept::Unavailable(Hook::Connect)),
        }
    }
    ask_rooms(id, &claims, &rooms, correlation_id, ctx).await?;
    Ok(Let {
        id,
        claims,
        rooms,
        expires_at,
    })
}

/// `subscribe_hook` for each of `rooms`, all at once; the first refusal
/// (in room order) keeps the upgrade out.
async fn ask_rooms(
    id: ConnId,
    claims: &Option<Claims>,
    rooms: &[String],
    correlation_id: &str,
    ctx: &Context,
) -> Result<(), Kept> {
    if rooms.is_empty() || !ctx.hooks.has(Hook::Subscribe) {
        return Ok(());
    }
    let user = claims.as_ref().map(|c| c.sub.clone());
    let calls = rooms.iter().map(|room| {
        let mut body = Map::new();
        body.insert("connection_id".into(), json!(id));
        body.insert("user".into(), json!(user));
        body.insert("room".into(), json!(room));
        ctx.hooks.call(Hook::Subscribe, body, correlation_id)
    });
    let called = crate::hook::all(calls.map(|f| Box::pin(f) as _).collect()).await;
    let mut kept = None;
    for c in called {
        let outcome = c.outcome.clone();
        ctx.hub.hook_observed(c).await;
        if kept.is_none() {
            kept = match outcome {
                Outcome::Answered(_) => None,
                Outcome::Refused(r) => Some(Kept::Refused {
                    code: r.code,
                    message: r.message,
                }),
                Outcome::Unavailable => Some(Kept::Unavailable(Hook::Subscribe)),
            };
        }
    }
    kept.map_or(Ok(()), Err)
}

impl Kept {
    /// The status, code and message of the refusal.
    pub fn response(&self) -> (u16, String, String) {
        match self {
            Self::Refused { code, message } => (403, code.clone(), message.clone()),
            Self::Unavailable(hook) => {
                let e = unavailable(*hook);
                (503, e.code.as_str().to_string(), e.message)
            }
            Self::Forbidden(room) => (
                403,
                ErrorCode::Forbidden.as_str().to_string(),
                format!("the connect hook's answer does not allow room `{room}`"),
            ),
        }
    }
}
