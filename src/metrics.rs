//! The counters and histograms of PROTOCOL.md section 7, owned by the hub
//! task, and their Prometheus text exposition (format 0.0.4).

use std::collections::BTreeMap;
use std::fmt::Write;

/// Every `reason` label of `wshub_disconnects_total`.
pub const DISCONNECT_REASONS: [&str; 10] = [
    "normal",
    "shutdown",
    "rate_limit",
    "too_big",
    "heartbeat_timeout",
    "token_expired",
    "admin",
    "slow_consumer",
    "epoch_changed",
    "error",
];

/// The handshake refusal codes listed up front so that they read 0, not absent.
pub const HANDSHAKE_CODES: [&str; 10] = [
    "bad_request",
    "unsupported_protocol",
    "unauthenticated",
    "invalid_token",
    "token_expired",
    "origin_not_allowed",
    "host_not_allowed",
    "forbidden",
    "too_many_connections",
    "shutting_down",
];

const BROADCAST_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];
const ENGINE_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];
/// Every `op` label of `wshub_engine_seconds`.
pub const ENGINE_OPS: [&str; 3] = ["append", "read", "expire"];
const HOOK_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Every `hook` label of the hook metrics (PROTOCOL.md section 10).
pub const HOOKS: [&str; 5] = ["connect", "subscribe", "publish", "rpc", "disconnect"];
/// Every `outcome` label of `wshub_hook_requests_total`.
pub const HOOK_OUTCOMES: [&str; 3] = ["answered", "refused", "unavailable"];
const DURATION_BUCKETS: &[f64] = &[
    0.1, 1.0, 10.0, 60.0, 300.0, 1800.0, 3600.0, 21_600.0, 86_400.0,
];

/// A cumulative histogram with fixed upper bounds.
#[derive(Debug, Clone)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    /// Records one observation.
    pub fn observe(&mut self, value: f64) {
        if let Some(i) = self.bounds.iter().position(|b| value <= *b) {
            self.counts[i] += 1;
        }
        self.sum += value;
        self.count += 1;
    }

    /// How many observations were recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        self.render_series(out, name, "");
    }

    /// The samples alone, each with `labels` (`op="append",`) before `le`.
    fn render_series(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (bound, n) in self.bounds.iter().zip(&self.counts) {
            cumulative += n;
            let _ = writeln!(out, "{name}_bucket{{{labels}le=\"{bound}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels}le=\"+Inf\"}} {}", self.count);
        let braced = labels.trim_end_matches(',');
        let braced = if braced.is_empty() {
            String::new()
        } else {
            format!("{{{braced}}}")
        };
        let _ = writeln!(out, "{name}_sum{braced} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braced} {}", self.count);
    }
}

/// Everything the hub counts.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// WebSocket connections accepted.
    pub connections_accepted: u64,
    /// Connections ended, by reason.
    pub disconnects: BTreeMap<&'static str, u64>,
    /// Client messages received.
    pub messages_in: u64,
    /// Messages queued to clients.
    pub messages_out: u64,
    /// Client messages dropped by the rate limit.
    pub messages_dropped: u64,
    /// Events published (HTTP, stdin, API or client).
    pub events_published: u64,
    /// Events serialised, by subprotocol: once per event and encoding,
    /// however many recipients.
    pub event_encodings: BTreeMap<&'static str, u64>,
    /// Upgrade requests refused, by `error.code`.
    pub handshake_rejections: BTreeMap<String, u64>,
    /// How long connections lasted.
    pub connection_duration: Histogram,
    /// From publish until the last recipient's queue held the event.
    pub broadcast: Histogram,
    /// The store's (or Redis's) figures; `None` with the memory engine.
    pub engine: Option<EngineMetrics>,
    /// Hook calls, by hook and outcome.
    pub hook_requests: BTreeMap<(&'static str, &'static str), u64>,
    /// How long hook calls took, by hook.
    pub hook_seconds: BTreeMap<&'static str, Histogram>,
}

/// What `/metrics` says about an engine that is not the hub's memory.
#[derive(Debug, Clone)]
pub struct EngineMetrics {
    /// Whether it takes writes (`wshub_engine_up`).
    pub up: bool,
    /// How long its operations took, by `op` (`wshub_engine_seconds`).
    pub seconds: BTreeMap<&'static str, Histogram>,
}

impl Default for EngineMetrics {
    fn default() -> Self {
        Self {
            up: true,
            seconds: ENGINE_OPS
                .iter()
                .map(|op| (*op, Histogram::new(ENGINE_BUCKETS)))
                .collect(),
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            connections_accepted: 0,
            disconnects: DISCONNECT_REASONS.iter().map(|r| (*r, 0)).collect(),
            messages_in: 0,
            messages_out: 0,
            messages_dropped: 0,
            events_published: 0,
            event_encodings: [("wshub.json", 0), ("wshub.msgpack", 0), ("sse", 0)].into(),
            handshake_rejections: HANDSHAKE_CODES.iter().map(|c| (c.to_string(), 0)).collect(),
            connection_duration: Histogram::new(DURATION_BUCKETS),
            broadcast: Histogram::new(BROADCAST_BUCKETS),
            engine: None,
            hook_requests: HOOKS
                .iter()
                .flat_map(|h| HOOK_OUTCOMES.iter().map(move |o| ((*h, *o), 0)))
                .collect(),
            hook_seconds: HOOKS
                .iter()
                .map(|h| (*h, Histogram::new(HOOK_BUCKETS)))
                .collect(),
        }
    }
}

/// Values read at scrape time rather than counted.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gauges {
    /// Open connections: WebSockets and SSE streams.
    pub connections_active: usize,
    /// Rooms with subscribers or history.
    pub rooms: usize,
    /// Events held in all rooms' history.
    pub history_events: usize,
    /// Bytes of those events' encoded frames (what `max_history_bytes` bounds).
    pub history_bytes: usize,
    /// Seconds since the hub started.
    pub uptime_s: f64,
}

impl Metrics {
    /// Counts a disconnect with `reason` (one of [`DISCONNECT_REASONS`]).
    pub fn disconnected(&mut self, reason: &'static str, lasted_s: f64) {
        *self.disconnects.entry(reason).or_default() += 1;
        self.connection_duration.observe(lasted_s);
    }

    /// Counts the encodings an event needed.
    pub fn encoded(&mut self, json: bool, msgpack: bool) {
        for (protocol, done) in [("wshub.json", json), ("wshub.msgpack", msgpack)] {
            if done {
                *self.event_encodings.entry(protocol).or_default() += 1;
            }
        }
    }

    /// Counts an event given its SSE form (`data:` line, and the `id:` line
    /// of its room).
    pub fn encoded_sse(&mut self) {
        *self.event_encodings.entry("sse").or_default() += 1;
    }

    /// Counts a hook call (labels from [`HOOKS`] and [`HOOK_OUTCOMES`]).
    pub fn hook_called(&mut self, hook: &'static str, outcome: &'static str, seconds: f64) {
        *self.hook_requests.entry((hook, outcome)).or_default() += 1;
        self.hook_seconds
            .entry(hook)
            .or_insert_with(|| Histogram::new(HOOK_BUCKETS))
            .observe(seconds);
    }

    /// Counts a refused upgrade.
    pub fn rejected(&mut self, code: &str) {
        *self
            .handshake_rejections
            .entry(code.to_string())
            .or_default() += 1;
    }

    /// The Prometheus text exposition of every family.
    pub fn render(&self, gauges: Gauges) -> String {
        let mut out = String::with_capacity(4096);
        gauge(
            &mut out,
            "wshub_connections_active",
            "Open connections (WebSockets and SSE streams).",
            gauges.connections_active as f64,
        );
        counter(
            &mut out,
            "wshub_connections_accepted_total",
            "WebSocket connections accepted.",
            self.connections_accepted,
        );
        labelled(
            &mut out,
            "wshub_disconnects_total",
            "WebSocket connections ended, by reason.",
            "reason",
            self.disconnects.iter().map(|(k, v)| (*k, *v)),
        );
        counter(
            &mut out,
            "wshub_messages_in_total",
            "Messages received from clients.",
            self.messages_in,
        );
        counter(
            &mut out,
            "wshub_messages_out_total",
            "Messages queued to clients.",
            self.messages_out,
        );
        counter(
            &mut out,
            "wshub_messages_dropped_total",
            "Client messages dropped by the rate limit.",
            self.messages_dropped,
        );
        counter(
            &mut out,
            "wshub_events_published_total",
            "Events published.",
            self.events_published,
        );
        labelled(
            &mut out,
            "wshub_event_encodings_total",
            "Events serialised, by subprotocol or `sse` (once per event, not per recipient).",
            "protocol",
            self.event_encodings.iter().map(|(k, v)| (*k, *v)),
        );
        labelled(
            &mut out,
            "wshub_handshake_rejections_total",
            "WebSocket upgrades refused, by error code.",
            "code",
            self.handshake_rejections
                .iter()
                .map(|(k, v)| (k.as_str(), *v)),
        );
        gauge(
            &mut out,
            "wshub_rooms",
            "Rooms with subscribers or history.",
            gauges.rooms as f64,
        );
        gauge(
            &mut out,
            "wshub_history_events",
            "Events held in all rooms' history.",
            gauges.history_events as f64,
        );
        gauge(
            &mut out,
            "wshub_history_bytes",
            "Bytes of the encoded frames held in all rooms' history (max_history_bytes).",
            gauges.history_bytes as f64,
        );
        gauge(
            &mut out,
            "wshub_uptime_seconds",
            "Seconds since the hub started.",
            gauges.uptime_s,
        );
        self.connection_duration.render(
            &mut out,
            "wshub_connection_duration_seconds",
            "How long WebSocket connections lasted.",
        );
        self.broadcast.render(
            &mut out,
            "wshub_broadcast_seconds",
            "From publish until the last recipient's queue held the event.",
        );
        if let Some(engine) = &self.engine {
            gauge(
                &mut out,
                "wshub_engine_up",
                "Whether the engine (the store) takes writes: 1, or 0.",
                if engine.up { 1.0 } else { 0.0 },
            );
            let name = "wshub_engine_seconds";
            let _ = writeln!(
                out,
                "# HELP {name} How long the engine's operations took, by op (a group commit, a room's read, an expiry sweep).\n# TYPE {name} histogram"
            );
            for (op, histogram) in &engine.seconds {
                histogram.render_series(&mut out, name, &format!("op=\"{op}\","));
            }
        }
        let name = "wshub_hook_requests_total";
        let _ = writeln!(
            out,
            "# HELP {name} Hook calls to the app, by hook and outcome.\n# TYPE {name} counter"
        );
        for ((hook, outcome), n) in &self.hook_requests {
            let _ = writeln!(out, "{name}{{hook=\"{hook}\",outcome=\"{outcome}\"}} {n}");
        }
        let name = "wshub_hook_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} How long hook calls to the app took, by hook.\n# TYPE {name} histogram"
        );
        for (hook, histogram) in &self.hook_seconds {
            histogram.render_series(&mut out, name, &format!("hook=\"{hook}\","));
        }
        out
    }
}

fn gauge(out: &mut String, name: &str, help: &str, value: f64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
    );
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
    );
}

fn labelled<'a>(
    out: &mut String,
    name: &str,
    help: &str,
    label: &str,
    values: impl Iterator<Item = (&'a str, u64)>,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
    for (key, value) in values {
        let _ = writeln!(out, "{name}{{{label}=\"{}\"}} {value}", escape(key));
    }
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative() {
        let mut h = Histogram::new(&[1.0, 2.0]);
        h.observe(0.5);
        h.observe(1.5);
        h.observe(9.0);
        let mut out = String::new();
        h.render(&mut out, "x", "help");
        assert!(out.contains("x_bucket{le=\"1\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"2\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_count 3\n"), "{out}");
    }

    #[test]
    fn every_reason_is_present_from_the_start() {
        let text = Metrics::default().render(Gauges::default());
        for reason in DISCONNECT_REASONS {
            assert!(
                text.contains(&format!("wshub_disconnects_total{{reason=\"{reason}\"}} 0")),
                "{reason}"
            );
        }
        assert!(text.contains("# TYPE wshub_broadcast_seconds histogram"));
        assert!(!text.contains("wshub_engine_up"), "only with an engine");
    }

    #[test]
    fn engine_series_are_labelled_by_op() {
        let mut metrics = Metrics {
            engine: Some(EngineMetrics::default()),
            ..Metrics::default()
        };
        if let Some(engine) = &mut metrics.engine {
            engine.seconds.get_mut("append").unwrap().observe(0.0003);
        }
        let text = metrics.render(Gauges::default());
        assert!(text.contains("wshub_engine_up 1\n"), "{text}");
        assert!(
            text.contains("wshub_engine_seconds_bucket{op=\"append\",le=\"0.0005\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("wshub_engine_seconds_count{op=\"read\"} 0\n"),
            "{text}"
        );
    }
}
