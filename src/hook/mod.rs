//! App hooks (PROTOCOL.md section 10): the calls the hub makes to the app
//! behind it, over HTTP or stdio, and what their answers mean.
//!
//! A call is an `async fn` that runs on the hub thread's executor as a task
//! of its own (or inside the upgrade's task, for `connect`): the hub task
//! never waits for one. The hub spawns it, and the task reports back with a
//! command. This module knows bodies, transports, signatures, timeouts and
//! the answer's three shapes; what an answer does is the hub's business.

mod answer;
mod http;
mod stdio;

pub use answer::{ConnectAnswer, connect_answer, parse_timestamp};

pub use stdio::StdioReplies;
pub(crate) use stdio::{Routed as StdioRouted, Stdio, route as route_stdio, stdio};

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use futures_lite::FutureExt;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Map, Value};
use sha2::Sha256;

use crate::config::{Config, HookUrl};
use crate::log::as_json;
use crate::protocol::{ErrorCode, ProtocolError, new_uuid};

/// The five hooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Hook {
    /// During the upgrade, before the 101.
    Connect,
    /// Before a connection joins a room.
    Subscribe,
    /// Before a client `publish`.
    Publish,
    /// A client `rpc`.
    Rpc,
    /// Once a connection is gone.
    Disconnect,
}

impl Hook {
    /// Every hook, in the order of section 10.
    pub const ALL: [Hook; 5] = [
        Hook::Connect,
        Hook::Subscribe,
        Hook::Publish,
        Hook::Rpc,
        Hook::Disconnect,
    ];

    /// The name in bodies and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Subscribe => "subscribe",
            Self::Publish => "publish",
            Self::Rpc => "rpc",
            Self::Disconnect => "disconnect",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// What a hook call came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// A 2xx with a JSON object.
    Answered(Map<String, Value>),
    /// A 4xx with `{"error":{"code","message"}}`.
    Refused(Refusal),
    /// Anything else: `hook_unavailable`.
    Unavailable,
}

impl Outcome {
    /// The `outcome` label of `wshub_hook_requests_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Answered(_) => "answered",
            Self::Refused(_) => "refused",
            Self::Unavailable => "unavailable",
        }
    }
}

/// The app's refusal: its code (checked) and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// 1 to 64 of `a-z 0-9 _`, or `forbidden` when the app gave another.
    pub code: String,
    /// The app's message.
    pub message: String,
}

/// Outcome labels, listed up front so that they read 0, not absent.
pub const OUTCOMES: [&str; 3] = ["answered", "refused", "unavailable"];

/// A finished call: which hook, what it came to, how long it took.
#[derive(Debug, Clone, PartialEq)]
pub struct Called {
    /// The hook.
    pub hook: Hook,
    /// Its outcome.
    pub outcome: Outcome,
    /// Seconds from the call to its outcome.
    pub seconds: f64,
}

/// The error a client gets for `hook_unavailable`.
pub fn unavailable(hook: Hook) -> ProtocolError {
    ProtocolError::new(
        ErrorCode::HookUnavailable,
        format!(
            "the app's {} hook did not answer in time, or failed",
            hook.as_str()
        ),
    )
}

/// Longest refusal message passed on, in characters.
const MAX_MESSAGE_CHARS: usize = 1024;

/// The configured hooks and how to reach them.
#[derive(Debug)]
pub(crate) struct Hooks {
    urls: [Option<HookUrl>; 5],
    http: http::Client,
    stdio: Option<Stdio>,
    secret: Option<String>,
    timeout: Duration,
    /// Upgrade headers the connect hook gets.
    pub forward_headers: Vec<String>,
}

impl Hooks {
    /// The hooks of `config`; `stdio` is the stdio transport when one is set up.
    pub fn new(config: &Config, stdio: Option<Stdio>) -> Self {
        let urls = [
            config.connect_hook.clone(),
            config.subscribe_hook.clone(),
            config.publish_hook.clone(),
            config.rpc_hook.clone(),
            config.disconnect_hook.clone(),
        ];
        let http = http::Client::new(urls.iter().filter_map(|u| match u {
            Some(HookUrl::Http(t)) => Some(t),
            _ => None,
        }));
        Self {
            urls,
            http,
            stdio,
            secret: config.hook_secret.clone(),
            timeout: config.hook_timeout,
            forward_headers: config.hook_forward_headers.clone(),
        }
    }

    /// Whether `hook` is configured.
    pub fn has(&self, hook: Hook) -> bool {
        self.urls[hook.index()].is_some()
    }

    /// Calls `hook` with `body` (the hook's own fields; `hook` is added
    /// here), for the request or message `correlation_id`. Logs the call at
    /// debug and a failure at warn; never fails itself.
    pub async fn call(
        &self,
        hook: Hook,
        mut body: Map<String, Value>,
        correlation_id: &str,
    ) -> Called {
        let started = Instant::now();
        body.insert("hook".into(), Value::from(hook.as_str()));
        let outcome = match &self.urls[hook.index()] {
            None => Outcome::Unavailable,
            Some(url) => {
                let deadline = async {
                    smol::Timer::after(self.timeout).await;
                    Err(format!("no answer within {:?}", self.timeout))
                };
                let answer = self.exchange(url, body, correlation_id).or(deadline).await;
                match answer {
                    Ok((status, parsed)) => classify(status, parsed).unwrap_or_else(|cause| {
                        warn(hook, correlation_id, Some(status), &cause);
                        Outcome::Unavailable
                    }),
                    Err(cause) => {
                        warn(hook, correlation_id, None, &cause);
                        Outcome::Unavailable
                    }
                }
            }
        };
        let seconds = started.elapsed().as_secs_f64();
        tracing::debug!(
            hook = as_json(hook.as_str()),
            correlation_id = as_json(correlation_id),
            outcome = as_json(outcome.label()),
            ms = as_json((seconds * 1e6).round() / 1e3),
            "hook call"
        );
        Called {
            hook,
            outcome,
            seconds,
        }
    }

    /// Sends the body and returns the status with the body parsed as JSON
    /// (or why it did not parse), or why there is no answer.
    async fn exchange(
        &self,
        url: &HookUrl,
        body: Map<String, Value>,
        correlation_id: &str,
    ) -> Result<(u16, Result<Value, String>), String> {
        match url {
            HookUrl::Http(target) => {
                let bytes = serde_json::to_vec(&body).unwrap_or_default();
                let mut extra = vec![format!("X-Correlation-ID: {correlation_id}")];
                if let Some(secret) = &self.secret {
                    extra.push(format!(
                        "X-Wshub-Signature: sha256={}",
                        signature(secret, &bytes)
                    ));
                }
                let response = self
                    .http
                    .post(target, &extra, &bytes)
                    .await
                    .map_err(|e| e.to_string())?;
                let parsed = serde_json::from_slice::<Value>(&response.body)
                    .map_err(|e| format!("the body is not JSON: {e}"));
                Ok((response.status, parsed))
            }
            HookUrl::Stdio => {
                let Some(stdio) = &self.stdio else {
                    return Err("stdio hooks need --stdin-events".into());
                };
                let id = new_uuid();
                let mut line = Map::new();
                line.insert("event".into(), Value::from("hook"));
                line.insert("id".into(), Value::from(id.as_str()));
                line.insert("correlation_id".into(), Value::from(correlation_id));
                line.extend(body);
                let line = Value::Object(line).to_string();
                let mut waiting = Waiting {
                    stdio,
                    id: &id,
                    answered: false,
                };
                let reply = stdio.ask(&id, line).await;
                waiting.answered = true;
                match reply {
                    Some((status, body)) => Ok((status, Ok(body))),
                    None => Err("the stdio hook transport has stopped".into()),
                }
            }
        }
    }
}

/// Tells the stdio router a call is over if it ends unanswered (a timeout
/// drops the future while it waits).
struct Waiting<'a> {
    stdio: &'a Stdio,
    id: &'a str,
    answered: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if !self.answered {
            self.stdio.give_up(self.id);
        }
    }
}

fn warn(hook: Hook, correlation_id: &str, status: Option<u16>, cause: &str) {
    tracing::warn!(
        hook = as_json(hook.as_str()),
        correlation_id = as_json(correlation_id),
        status = crate::log::opt_json(status),
        cause = as_json(cause),
        "hook unavailable"
    );
}

/// A hook call, boxed so that several can run together.
pub(crate) type BoxedCall<'a> = Pin<Box<dyn Future<Output = Called> + 'a>>;

/// Runs every call at once; their outcomes in the order given.
pub(crate) async fn all(mut calls: Vec<BoxedCall<'_>>) -> Vec<Called> {
    let mut done: Vec<Option<Called>> = calls.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (call, slot) in calls.iter_mut().zip(done.iter_mut()) {
            if slot.is_none() {
                match call.as_mut().poll(cx) {
                    Poll::Ready(called) => *slot = Some(called),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    done.into_iter().flatten().collect()
}

/// The hex HMAC-SHA256 of `body` with `secret`, as `X-Wshub-Signature` carries it.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What a status and body mean (section 10), or why they are `hook_unavailable`.
pub fn classify(status: u16, body: Result<Value, String>) -> Result<Outcome, String> {
    match status {
        200..=299 => match body? {
            Value::Object(answer) => Ok(Outcome::Answered(answer)),
            _ => Err("a 2xx answer must be a JSON object".into()),
        },
        400..=499 => {
            let body = body?;
            let Some(Value::Object(error)) = body.get("error") else {
                return Err(format!(
                    "a {status} refusal must be {{\"error\":{{\"code\",\"message\"}}}}"
                ));
            };
            let code = error
                .get("code")
                .and_then(Value::as_str)
                .filter(|c| is_app_code(c))
                .unwrap_or("forbidden")
                .to_string();
            let message = match error.get("message").and_then(Value::as_str) {
                Some(m) => m.chars().take(MAX_MESSAGE_CHARS).collect(),
                None => "refused by the app".to_string(),
            };
            Ok(Outcome::Refused(Refusal { code, message }))
        }
        _ => Err(format!("status {status}")),
    }
}

/// Whether `code` may be passed on as the app gave it: 1 to 64 of `a-z 0-9 _`.
pub fn is_app_code(code: &str) -> bool {
    (1..=64).contains(&code.len())
        && code
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn answers_refusals_and_the_rest() {
        assert_eq!(
            classify(200, Ok(json!({"result": 1}))),
            Ok(Outcome::Answered(
                json!({"result": 1}).as_object().unwrap().clone()
            ))
        );
        assert!(classify(200, Ok(json!([1]))).is_err());
        assert!(classify(204, Err("empty".into())).is_err());
        let refused =
            |code: Value| classify(403, Ok(json!({"error": {"code": code, "message": "no"}})));
        assert_eq!(
            refused(json!("cart_full")),
            Ok(Outcome::Refused(Refusal {
                code: "cart_full".into(),
                message: "no".into()
            }))
        );
        for bad in [
            json!("Bad-Code"),
            json!(""),
            json!("x".repeat(65)),
            json!(3),
        ] {
            let Ok(Outcome::Refused(r)) = refused(bad) else {
                panic!()
            };
            assert_eq!(r.code, "forbidden");
        }
        assert!(classify(404, Ok(json!({"detail": "Not Found"}))).is_err());
        assert!(classify(500, Ok(json!({}))).is_err());
        assert!(classify(302, Ok(json!({}))).is_err());
        assert!(classify(200, Err("not json".into())).is_err());
    }

    #[test]
    fn signatures_are_hex_hmac_sha256() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
