//! Logs as one JSON object a line. The hub emits `tracing` events, so an
//! embedding program gets them in its own subscriber; [`JsonLines`] is the
//! subscriber the binary installs, which prints each event on stderr with
//! `level`, `msg`, `timestamp` and the event's fields (`correlation_id`,
//! `connection_id`, …) in the order they were given.

use std::fmt::{self, Write as _};
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};

use crate::config::LogLevel;
use crate::protocol::timestamp_now;

/// A `tracing` subscriber that prints events at `level` and above as JSON
/// lines on stderr. Spans are not printed; the hub gives every event its
/// IDs as fields.
#[derive(Debug)]
pub struct JsonLines {
    level: Level,
    next_span: AtomicU64,
}

impl JsonLines {
    /// A subscriber for events at `level` and more severe.
    pub fn new(level: LogLevel) -> Self {
        let level = match level {
            LogLevel::Error => Level::ERROR,
            LogLevel::Warn => Level::WARN,
            LogLevel::Info => Level::INFO,
            LogLevel::Debug => Level::DEBUG,
        };
        Self {
            level,
            next_span: AtomicU64::new(1),
        }
    }

    /// Makes this the process's subscriber; false if one was already set.
    pub fn install(level: LogLevel) -> bool {
        tracing::subscriber::set_global_default(Self::new(level)).is_ok()
    }

    /// The line an event is printed as, without the newline.
    fn line(event: &Event<'_>) -> String {
        let mut visitor = Fields {
            msg: None,
            rest: String::with_capacity(128),
        };
        event.record(&mut visitor);
        let msg = visitor.msg.unwrap_or_default();
        let mut line = String::with_capacity(64 + msg.len() + visitor.rest.len());
        line.push_str("{\"level\":\"");
        line.push_str(&event.metadata().level().as_str().to_ascii_lowercase());
        line.push_str("\",\"msg\":");
        push_json(&mut line, &msg);
        line.push_str(",\"timestamp\":\"");
        line.push_str(&timestamp_now());
        line.push('"');
        line.push_str(&visitor.rest);
        line.push('}');
        line
    }
}

impl Subscriber for JsonLines {
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        // Decided once per call site: a disabled line costs one load and
        // one branch where it stands.
        if self.enabled(metadata) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        *metadata.level() <= self.level
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(self.level.into())
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(self.next_span.fetch_add(1, Ordering::Relaxed))
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut line = Self::line(event);
        line.push('\n');
        // A closed stderr must not take the hub down; the line is lost.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

/// A field value written as JSON (a list of rooms, a payload) rather than
/// as a string. Its `Debug` text is the JSON, so any subscriber can show
/// it; [`JsonLines`] embeds it as a JSON value.
pub struct Json<T>(pub T);

impl<T: Serialize> fmt::Debug for Json<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A value serde cannot write (a map with non-string keys) is null,
        // never a formatting error: tracing would panic on one.
        let text = serde_json::to_string(&self.0).unwrap_or_else(|_| "null".into());
        if f.alternate() {
            // Only JsonLines asks with `{:#?}`: the marker tells it to
            // embed the text as it is.
            f.write_char(JSON_MARKER)?;
        }
        f.write_str(&text)
    }
}

/// `value` as a JSON field of an event: `tracing::info!(rooms = as_json(&rooms), "…")`.
pub fn as_json<T: Serialize>(value: T) -> tracing::field::DebugValue<Json<T>> {
    tracing::field::debug(Json(value))
}

/// [`as_json`] for a field that is left out when there is no value.
pub fn opt_json<T: Serialize>(value: Option<T>) -> Option<tracing::field::DebugValue<Json<T>>> {
    value.map(as_json)
}

/// Starts the alternate `Debug` text of a [`Json`] value; no other value
/// the hub logs starts with it, as it is a control character.
const JSON_MARKER: char = '\u{1}';

/// Collects an event's message and its other fields as JSON members.
struct Fields {
    /// The event's message: the first field called `message` (tracing's
    /// own); a later one is an ordinary field.
    msg: Option<String>,
    rest: String,
}

impl Fields {
    fn key(&mut self, field: &Field) {
        self.rest.push(',');
        push_json(&mut self.rest, field.name());
        self.rest.push(':');
    }
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" && self.msg.is_none() {
            self.msg = Some(format!("{value:?}"));
            return;
        }
        let text = format!("{value:#?}");
        self.key(field);
        match text.strip_prefix(JSON_MARKER) {
            Some(json) => self.rest.push_str(json),
            None => push_json(&mut self.rest, &text),
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" && self.msg.is_none() {
            self.msg = Some(value.to_string());
            return;
        }
        self.key(field);
        push_json(&mut self.rest, value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.key(field);
        let _ = write!(self.rest, "{value}");
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.key(field);
        let _ = write!(self.rest, "{value}");
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.key(field);
        match serde_json::Number::from_f64(value) {
            Some(n) => self.rest.push_str(&n.to_string()),
            None => self.rest.push_str("null"),
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.key(field);
        self.rest.push_str(if value { "true" } else { "false" });
    }
}

fn push_json(buf: &mut String, s: &str) {
    match serde_json::to_string(s) {
        Ok(json) => buf.push_str(&json),
        Err(_) => buf.push_str("\"\""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `emit` under a subscriber that keeps the line instead of
    /// printing it.
    fn captured(emit: impl FnOnce()) -> serde_json::Value {
        struct Keep(std::sync::mpsc::Sender<String>);
        impl Subscriber for Keep {
            fn enabled(&self, _: &Metadata<'_>) -> bool {
                true
            }
            fn new_span(&self, _: &Attributes<'_>) -> Id {
                Id::from_u64(1)
            }
            fn record(&self, _: &Id, _: &Record<'_>) {}
            fn record_follows_from(&self, _: &Id, _: &Id) {}
            fn event(&self, event: &Event<'_>) {
                let _ = self.0.send(JsonLines::line(event));
            }
            fn enter(&self, _: &Id) {}
            fn exit(&self, _: &Id) {}
        }
        let (tx, rx) = std::sync::mpsc::channel();
        tracing::subscriber::with_default(Keep(tx), emit);
        let line = rx.try_recv().expect("one line");
        serde_json::from_str(&line).expect("the line is one JSON object")
    }

    #[test]
    fn lines_are_one_json_object_with_the_fields_in_order() {
        let rooms = vec!["a".to_string(), "b".to_string()];
        let v = captured(|| {
            tracing::info!(
                connection_id = "c1",
                user = None::<&str>,
                n = 3u64,
                ok = true,
                rooms = as_json(&rooms),
                error = %"a [bracketed] reason",
                "said \"hi\"\n"
            )
        });
        assert_eq!(v["level"], "info");
        assert_eq!(v["msg"], "said \"hi\"\n");
        assert_eq!(v["connection_id"], "c1");
        assert_eq!(v["n"], 3);
        assert_eq!(v["ok"], true);
        assert_eq!(v["rooms"], serde_json::json!(["a", "b"]));
        assert_eq!(v["error"], "a [bracketed] reason");
        assert!(v.get("user").is_none(), "an absent option is left out");
        assert_eq!(v["error"], "a [bracketed] reason");
        assert!(v["timestamp"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn a_field_called_message_is_a_field_and_the_message_stays() {
        let v = captured(|| {
            tracing::info!(
                code = as_json("forbidden"),
                message = as_json("room not allowed"),
                "error reply"
            )
        });
        assert_eq!(v["msg"], "error reply");
        assert_eq!(v["message"], "room not allowed");
        assert_eq!(v["code"], "forbidden");
    }

    #[test]
    fn json_values_read_as_json_in_any_subscriber() {
        let rooms = vec!["a", "b"];
        assert_eq!(format!("{:?}", Json(&rooms)), r#"["a","b"]"#);
        // Non-string map keys cannot be JSON: null, not a panic.
        let odd: std::collections::BTreeMap<(u8, u8), u8> = [((1, 2), 3)].into();
        assert_eq!(format!("{:?}", Json(&odd)), "null");
    }

    #[test]
    fn levels_below_the_threshold_are_disabled() {
        let subscriber = JsonLines::new(LogLevel::Warn);
        tracing::subscriber::with_default(subscriber, || {
            assert!(tracing::enabled!(Level::ERROR));
            assert!(!tracing::enabled!(Level::INFO));
        });
    }
}
