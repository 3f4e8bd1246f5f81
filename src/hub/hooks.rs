//! The hub's side of app hooks (PROTOCOL.md section 10): starting a call
//! as a task of its own, and applying its outcome when the task reports
//! back with [`Command::HookDone`].
//!
//! Each connection numbers its calls; outcomes that come back out of order
//! wait in a small buffer (at most [`MAX_WAITING`] calls per connection)
//! until the ones before them are applied, so a connection sees its
//! answers in the order it asked. The hub task itself never waits.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::command::Command;
use super::{ConnId, Hub};
use crate::hook::{BoxedCall, Called, Hook, Outcome, all, unavailable};
use crate::log::as_json;
use crate::protocol::{ErrorCode, ProtocolError, Publish, Subscribe, Target, new_uuid};
use std::time::Instant;

/// Hook calls that may wait at once per connection (more are `rate_limited`).
pub const MAX_WAITING: u64 = 16;

/// A connection's hook calls: the next number to give, the next to apply,
/// and the outcomes that arrived before their turn.
#[derive(Debug, Default)]
pub(crate) struct HookQueue {
    next: u64,
    applied: u64,
    arrived: BTreeMap<u64, (Pending, Vec<Called>)>,
}

impl HookQueue {
    /// Calls started and not yet applied.
    pub fn waiting(&self) -> u64 {
        self.next - self.applied
    }
}

/// What a call was for, and what to answer once it is done.
#[derive(Debug)]
pub(crate) struct Pending {
    pub correlation_id: String,
    pub reference: Option<String>,
    pub action: Action,
}

/// The client message a call stands for.
#[derive(Debug)]
pub(crate) enum Action {
    Rpc,
    Publish {
        room: String,
        event: String,
        payload: Map<String, Value>,
    },
    /// `rooms[i]` was asked about in call `i`.
    Subscribe {
        sub: Subscribe,
        rooms: Vec<String>,
    },
}

impl Hub {
    /// Whether `hook` is configured.
    pub(super) fn has_hook(&self, hook: Hook) -> bool {
        self.hooks.has(hook)
    }

    /// The body fields every hook has.
    fn hook_body(&self, id: ConnId) -> Map<String, Value> {
        let mut body = Map::new();
        body.insert("connection_id".into(), json!(id));
        let user = self
            .conns
            .get(&id)
            .and_then(|c| c.user())
            .map(str::to_string);
        body.insert("user".into(), json!(user));
        body
    }

    /// Starts `hook` once per body in `extras` for connection `id`, as one
    /// numbered call; `rate_limited` when [`MAX_WAITING`] already wait.
    pub(super) fn start_hook(
        &mut self,
        id: ConnId,
        hook: Hook,
        extras: Vec<Map<String, Value>>,
        pending: Pending,
    ) -> Result<(), (ProtocolError, Value)> {
        let base = self.hook_body(id);
        let Some(conn) = self.conns.get_mut(&id) else {
            return Ok(());
        };
        if conn.hooks.waiting() >= MAX_WAITING {
            return Err((
                ProtocolError::new(
                    ErrorCode::RateLimited,
                    format!("at most {MAX_WAITING} hook calls may wait per connection"),
                ),
                json!({}),
            ));
        }
        let seq = conn.hooks.next;
        conn.hooks.next += 1;
        let calls: Vec<BoxedCall<'static>> = extras
            .into_iter()
            .map(|extra| {
                let hooks = self.hooks.clone();
                let correlation_id = pending.correlation_id.clone();
                let mut body = base.clone();
                body.extend(extra);
                Box::pin(async move { hooks.call(hook, body, &correlation_id).await })
                    as BoxedCall<'static>
            })
            .collect();
        let hub = self.me.clone();
        self.spawner.spawn(async move {
            let called = all(calls).await;
            // A hub that has stopped has no one left to answer.
            if let Some(hub) = hub.upgrade() {
                let _ = hub
                    .send(Command::HookDone {
                        conn: id,
                        seq,
                        pending: Box::new(pending),
                        called,
                    })
                    .await;
            }
        });
        Ok(())
    }

    /// A call finished: counted, then applied with every call before it.
    pub(super) fn on_hook_done(
        &mut self,
        id: ConnId,
        seq: u64,
        pending: Pending,
        called: Vec<Called>,
    ) {
        for c in &called {
            self.metrics
                .hook_called(c.hook.as_str(), c.outcome.label(), c.seconds);
        }
        let Some(conn) = self.conns.get_mut(&id) else {
            return; // gone meanwhile: nothing to answer
        };
        conn.hooks.arrived.insert(seq, (pending, called));
        loop {
            let Some(conn) = self.conns.get_mut(&id) else {
                return;
            };
            let turn = conn.hooks.applied;
            let Some((pending, called)) = conn.hooks.arrived.remove(&turn) else {
                return;
            };
            conn.hooks.applied += 1;
            self.apply_hook(id, pending, called);
        }
    }

    /// Counts a call whose outcome needs no answer (connect, disconnect).
    pub(super) fn on_hook_observed(&mut self, called: Called) {
        self.metrics
            .hook_called(called.hook.as_str(), called.outcome.label(), called.seconds);
    }

    fn apply_hook(&mut self, id: ConnId, pending: Pending, called: Vec<Called>) {
        let corr = pending.correlation_id.as_str();
        let reference = pending.reference.as_deref();
        let outcome = match pending.action {
            Action::Rpc => match called.into_iter().next().map(|c| c.outcome) {
                Some(Outcome::Answered(mut answer)) => {
                    let result = answer.remove("result").unwrap_or(Value::Null);
                    self.send(
                        id,
                        "rpc_result",
                        json!({"result": result}),
                        Some(corr),
                        reference,
                    );
                    Ok(())
                }
                Some(Outcome::Refused(r)) => {
                    self.send_error_code(id, &r.code, &r.message, json!({}), corr, reference);
                    Ok(())
                }
                _ => Err((unavailable(Hook::Rpc), json!({}))),
            },
            Action::Publish {
                room,
                event,
                mut payload,
            } => match called.into_iter().next().map(|c| c.outcome) {
                Some(Outcome::Answered(mut answer)) => match answer.remove("payload") {
                    None => self.publish_now(id, room, event, payload, corr, reference),
                    Some(Value::Object(replaced)) => {
                        payload = replaced;
                        self.publish_now(id, room, event, payload, corr, reference)
                    }
                    Some(_) => {
                        tracing::warn!(
                            hook = as_json("publish"),
                            correlation_id = as_json(corr),
                            cause = as_json("`payload` in the answer is not an object"),
                            "hook unavailable"
                        );
                        Err((unavailable(Hook::Publish), json!({"room": room})))
                    }
                },
                Some(Outcome::Refused(r)) => {
                    self.send_error_code(
                        id,
                        &r.code,
                        &r.message,
                        json!({"room": room}),
                        corr,
                        reference,
                    );
                    Ok(())
                }
                _ => Err((unavailable(Hook::Publish), json!({"room": room}))),
            },
            Action::Subscribe { sub, rooms } => {
                let mut refused = None;
                for (room, c) in rooms.iter().zip(&called) {
                    match &c.outcome {
                        Outcome::Answered(_) => {}
                        Outcome::Refused(r) => {
                            refused = Some(Err((r.clone(), room.clone())));
                            break;
                        }
                        Outcome::Unavailable => {
                            refused = Some(Ok(room.clone()));
                            break;
                        }
                    }
                }
                match refused {
                    None => self.subscribe_checked(id, sub, corr, reference, false),
                    Some(Err((r, room))) => {
                        self.send_error_code(
                            id,
                            &r.code,
                            &r.message,
                            json!({"room": room}),
                            corr,
                            reference,
                        );
                        Ok(())
                    }
                    Some(Ok(room)) => Err((unavailable(Hook::Subscribe), json!({"room": room}))),
                }
            }
        };
        if let Err((error, details)) = outcome {
            self.send_error(id, &error, details, corr, reference);
        }
    }

    /// A client `rpc`: to the app, or `hook_unavailable` without `rpc_hook`.
    pub(super) fn rpc(
        &mut self,
        id: ConnId,
        method: String,
        params: Value,
        corr: &str,
        reference: Option<&str>,
    ) -> Result<(), (ProtocolError, Value)> {
        if !self.has_hook(Hook::Rpc) {
            return Err((
                ProtocolError::new(
                    ErrorCode::HookUnavailable,
                    "this hub has no rpc_hook: nothing answers `rpc`",
                ),
                json!({}),
            ));
        }
        let mut extra = Map::new();
        extra.insert("method".into(), Value::String(method));
        extra.insert("params".into(), params);
        self.start_hook(
            id,
            Hook::Rpc,
            vec![extra],
            Pending {
                correlation_id: corr.to_string(),
                reference: reference.map(str::to_string),
                action: Action::Rpc,
            },
        )
    }

    /// Publishes a client's event once any hook agreed, and answers `published`.
    pub(super) fn publish_now(
        &mut self,
        id: ConnId,
        room: String,
        event: String,
        payload: Map<String, Value>,
        corr: &str,
        reference: Option<&str>,
    ) -> Result<(), (ProtocolError, Value)> {
        if !self.conns.contains_key(&id) {
            return Ok(());
        }
        let publish = Publish {
            kind: event,
            payload,
            target: Target::Room(room),
            idempotency_key: None,
        };
        if !self.engine.in_place() {
            // Durable first: `published` and the fan-out follow the commit.
            let origin = super::durable::Origin::Client {
                conn: id,
                correlation_id: corr.to_string(),
                reference: reference.map(str::to_string),
            };
            self.publish_later(publish, corr.to_string(), Some(id), Instant::now(), origin);
            return Ok(());
        }
        let published = self
            .publish(publish, corr.to_string(), Some(id), Instant::now())
            .map_err(|e| (e, json!({})))?;
        let payload = json!({
            "id": published.id,
            "seq": published.seq,
            "recipients": published.recipients,
        });
        self.send(id, "published", payload, Some(corr), reference);
        Ok(())
    }

    /// Tells `disconnect_hook` that a connection is gone; failures are
    /// logged by the call, never retried.
    pub(super) fn disconnect_hook(
        &mut self,
        id: ConnId,
        user: Option<String>,
        reason: &'static str,
        close_code: Option<u16>,
        duration_s: f64,
    ) {
        if !self.has_hook(Hook::Disconnect) {
            return;
        }
        let mut body = Map::new();
        body.insert("connection_id".into(), json!(id));
        body.insert("user".into(), json!(user));
        body.insert("reason".into(), json!(reason));
        body.insert("close_code".into(), json!(close_code));
        body.insert("duration_s".into(), json!(duration_s));
        let hooks = self.hooks.clone();
        let hub = self.me.clone();
        // Held until the call ends: the drain waits for it (within the grace).
        let task = self.tasks.clone();
        self.spawner.spawn(async move {
            let called = hooks.call(Hook::Disconnect, body, &new_uuid()).await;
            if let Some(hub) = hub.upgrade() {
                let _ = hub.send(Command::HookObserved(called)).await;
            }
            drop(task);
        });
    }
}
