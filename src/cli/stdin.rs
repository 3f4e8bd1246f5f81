//! Sidecar mode (`--stdin-events`): each stdin line is an event as for
//! `POST /api/events`; when stdin closes the hub drains and stops, so a
//! companion that dies takes its hub with it.

use std::io::BufRead;

use crate::error::Error;
use crate::log::Logger;
use crate::protocol::Publish;
use crate::server::Handle;

/// Publishes every line of `input`, then shuts the hub down.
pub(crate) fn publish_lines(handle: &Handle, input: impl BufRead, log: Logger) {
    for (index, line) in input.lines().enumerate() {
        let Ok(line) = line else {
            break;
        };
        if line.trim().is_empty() {
            continue;
        }
        let line_no = index + 1;
        let publish = match Publish::from_json(line.as_bytes()) {
            Ok(publish) => publish,
            Err(e) => {
                log.warn("stdin line skipped")
                    .field("line", line_no)
                    .field("code", e.code)
                    .field("error", &e.message)
                    .emit();
                continue;
            }
        };
        match smol::block_on(handle.publish(publish)) {
            Ok(_) => {}
            Err(Error::Stopped) => return,
            Err(e) => log
                .warn("stdin line refused")
                .field("line", line_no)
                .field("error", e.to_string())
                .emit(),
        }
    }
    log.info("stdin closed; shutting down").emit();
    smol::block_on(handle.request_shutdown());
}
