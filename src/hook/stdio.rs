//! Stdio hooks (`--stdin-events` with a hook URL `stdio`): a request is one
//! JSON line on stdout, `{"event":"hook","id":…,…the body}`, and the answer
//! a stdin line `{"hook_reply":"<id>","status":200,"body":{…}}`.
//!
//! Lines go to stdout from a thread of their own (a parent that stops
//! reading must not stall the hub thread), and replies come in from the
//! binary's stdin thread; a router task on the hub thread owns the table
//! of waiting calls, so neither side shares state with the other.

use std::collections::HashMap;
use std::io::Write;

use async_channel::{Receiver, Sender};
use serde_json::{Map, Value};

use crate::log::as_json;

/// An answer from the parent: its status and body.
pub type Reply = (u16, Value);

/// What the router hears (internal to the stdio transport): a call waiting, a call given up, or a reply.
#[derive(Debug)]
pub enum Routed {
    /// A call waits for the reply with this id.
    Wait(String, Sender<Reply>),
    /// The call with this id gave up.
    GiveUp(String),
    /// The parent answered the request with this id.
    Reply(String, Reply),
}

/// The hub thread's end of stdio hooks.
#[derive(Debug, Clone)]
pub(crate) struct Stdio {
    lines: Sender<String>,
    routed: Sender<Routed>,
}

/// The other threads' end: where a `hook_reply` line is handed in.
#[derive(Debug, Clone)]
pub struct StdioReplies(Sender<Routed>);

impl StdioReplies {
    /// Hands in one `hook_reply` line, already parsed; `Err` names what is
    /// wrong with it.
    pub fn reply(&self, line: &Map<String, Value>) -> Result<(), String> {
        let Some(Value::String(id)) = line.get("hook_reply") else {
            return Err("`hook_reply` must be the id of a hook request".into());
        };
        let Some(status) = line
            .get("status")
            .and_then(Value::as_u64)
            .filter(|s| (100..=599).contains(s))
        else {
            return Err("`status` must be an HTTP status (100 to 599)".into());
        };
        let body = line.get("body").cloned().unwrap_or(Value::Null);
        // The hub may have stopped; the reply then has no one to go to.
        let _ = self
            .0
            .send_blocking(Routed::Reply(id.clone(), (status as u16, body)));
        Ok(())
    }
}

/// Makes both ends and starts the stdout thread; the router is `route`,
/// to be spawned on the hub thread.
pub(crate) fn stdio() -> (Stdio, StdioReplies, Receiver<Routed>) {
    let (lines, out) = async_channel::unbounded::<String>();
    let (routed, router) = async_channel::unbounded();
    let spawned = std::thread::Builder::new()
        .name("wshub-hook-stdout".into())
        .spawn(move || {
            let stdout = std::io::stdout();
            while let Ok(line) = out.recv_blocking() {
                let mut lock = stdout.lock();
                if writeln!(lock, "{line}")
                    .and_then(|()| lock.flush())
                    .is_err()
                {
                    tracing::warn!("stdout is closed: stdio hooks cannot be asked");
                    return;
                }
            }
        });
    if let Err(e) = spawned {
        tracing::error!(
            error = as_json(e.to_string()),
            "cannot start the stdio hook writer"
        );
    }
    (
        Stdio {
            lines,
            routed: routed.clone(),
        },
        StdioReplies(routed),
        router,
    )
}

impl Stdio {
    /// Writes the request line and waits for its reply (unbounded here:
    /// the caller holds the timeout, and tells the router on giving up).
    pub async fn ask(&self, id: &str, line: String) -> Option<Reply> {
        let (tx, rx) = async_channel::bounded(1);
        // Registered before the line is written, so the reply finds it.
        self.routed
            .send(Routed::Wait(id.to_string(), tx))
            .await
            .ok()?;
        self.lines.send(line).await.ok()?;
        rx.recv().await.ok()
    }

    /// Forgets a call that timed out.
    pub fn give_up(&self, id: &str) {
        let _ = self.routed.try_send(Routed::GiveUp(id.to_string()));
    }
}

/// The router: matches replies to waiting calls. Ends when every sender is gone.
pub(crate) async fn route(router: Receiver<Routed>) {
    let mut waiting: HashMap<String, Sender<Reply>> = HashMap::new();
    while let Ok(routed) = router.recv().await {
        match routed {
            Routed::Wait(id, tx) => {
                waiting.insert(id, tx);
            }
            Routed::GiveUp(id) => {
                waiting.remove(&id);
            }
            Routed::Reply(id, reply) => match waiting.remove(&id) {
                // The caller may have just given up.
                Some(tx) => {
                    let _ = tx.try_send(reply);
                }
                None => tracing::warn!(
                    id = as_json(&id),
                    "a hook_reply for no waiting hook request (late, or unknown id)"
                ),
            },
        }
    }
}
