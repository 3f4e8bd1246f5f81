//! Sidecar mode (`--stdin-events`): each stdin line is an event as for
//! `POST /api/events`; when stdin closes, or the parent process is gone,
//! the hub drains and stops, and a line with `hook_reply` answers a
//! `stdio` hook request; so a companion that dies takes its hub with it.

use std::io::BufRead;
use std::time::Duration;

use wshub::Error;
use wshub::Handle;
use wshub::log::as_json;
use wshub::protocol::Publish;

/// Publishes every line of `input`, then shuts the hub down.
pub(crate) fn publish_lines(handle: &Handle, mut input: impl BufRead) {
    let mut bytes = Vec::new();
    for line_no in 1usize.. {
        bytes.clear();
        // Only end of input (or a broken stdin) stops the loop: a line that
        // is not UTF-8 is a bad line like any other, skipped (section 8).
        match input.read_until(b'\n', &mut bytes) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let Ok(line) = std::str::from_utf8(&bytes) else {
            tracing::warn!(
                line = as_json(line_no),
                error = as_json("the line is not UTF-8"),
                "stdin line skipped"
            );
            continue;
        };
        let line = line.trim_end_matches(['\n', '\r']);
        if line.trim().is_empty() {
            continue;
        }
        // A `hook_reply` answers a stdio hook request (section 10).
        if let Ok(serde_json::Value::Object(obj)) = serde_json::from_str(line)
            && obj.contains_key("hook_reply")
        {
            if let Err(e) = handle.hook_reply(&obj) {
                tracing::warn!(
                    line = as_json(line_no),
                    error = as_json(&e),
                    "stdin hook_reply skipped"
                );
            }
            continue;
        }
        let publish = match Publish::from_json(line.as_bytes()) {
            Ok(publish) => publish,
            Err(e) => {
                tracing::warn!(
                    line = as_json(line_no),
                    code = as_json(e.code),
                    error = as_json(&e.message),
                    "stdin line skipped"
                );
                continue;
            }
        };
        match smol::block_on(handle.publish(publish)) {
            Ok(_) => {}
            Err(Error::Stopped) => return,
            Err(e) => tracing::warn!(
                line = as_json(line_no),
                error = as_json(e.to_string()),
                "stdin line refused"
            ),
        }
    }
    tracing::info!("stdin closed; shutting down");
    smol::block_on(handle.request_shutdown());
}

/// How often the parent is looked for.
const PARENT_CHECK: Duration = Duration::from_millis(250);

/// Shuts the hub down once its parent process has died (it is then
/// re-parented). Stdin closing usually says so first; this also covers a
/// parent whose stdin pipe is still held open by another process.
pub(crate) fn stop_when_orphaned(handle: &Handle) {
    let parent = std::os::unix::process::parent_id();
    loop {
        std::thread::sleep(PARENT_CHECK);
        if std::os::unix::process::parent_id() != parent {
            tracing::info!(
                parent_pid = as_json(parent),
                "parent process gone; shutting down"
            );
            smol::block_on(handle.request_shutdown());
            return;
        }
    }
}
