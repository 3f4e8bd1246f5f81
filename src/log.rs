//! Structured logs: one JSON object a line on stderr, with `level`, `msg`,
//! `timestamp` and whatever fields the caller adds (`correlation_id`,
//! `connection_id`, …).

use std::io::Write;

use serde::Serialize;

use crate::config::LogLevel;
use crate::protocol::timestamp_now;

/// Where a hub's log lines go, and from which level on.
#[derive(Debug, Clone, Copy)]
pub struct Logger {
    level: LogLevel,
}

impl Logger {
    /// A logger that prints lines at `level` and more severe.
    pub fn new(level: LogLevel) -> Self {
        Self { level }
    }

    /// Whether lines at `level` are printed.
    pub fn enabled(&self, level: LogLevel) -> bool {
        level <= self.level
    }

    /// Starts a line at `level`; it is printed by [`Line::emit`].
    pub fn line(&self, level: LogLevel, msg: &str) -> Line {
        if !self.enabled(level) {
            return Line { buf: None };
        }
        let mut buf = String::with_capacity(160);
        buf.push_str("{\"level\":\"");
        buf.push_str(level.as_str());
        buf.push_str("\",\"msg\":");
        push_json(&mut buf, msg);
        buf.push_str(",\"timestamp\":\"");
        buf.push_str(&timestamp_now());
        buf.push('"');
        Line { buf: Some(buf) }
    }

    /// An `error` line.
    pub fn error(&self, msg: &str) -> Line {
        self.line(LogLevel::Error, msg)
    }

    /// A `warn` line.
    pub fn warn(&self, msg: &str) -> Line {
        self.line(LogLevel::Warn, msg)
    }

    /// An `info` line.
    pub fn info(&self, msg: &str) -> Line {
        self.line(LogLevel::Info, msg)
    }

    /// A `debug` line.
    pub fn debug(&self, msg: &str) -> Line {
        self.line(LogLevel::Debug, msg)
    }
}

/// A log line being built; nothing is formatted when its level is off.
#[derive(Debug)]
#[must_use = "a log line is printed only by `emit`"]
pub struct Line {
    buf: Option<String>,
}

impl Line {
    /// Adds `key: value`.
    pub fn field(mut self, key: &str, value: impl Serialize) -> Self {
        if let Some(buf) = &mut self.buf {
            buf.push(',');
            push_json(buf, key);
            buf.push(':');
            match serde_json::to_string(&value) {
                Ok(json) => buf.push_str(&json),
                Err(_) => buf.push_str("null"),
            }
        }
        self
    }

    /// Adds `key: value` when there is a value.
    pub fn maybe(self, key: &str, value: Option<impl Serialize>) -> Self {
        match value {
            Some(v) => self.field(key, v),
            None => self,
        }
    }

    /// Prints the line to stderr.
    pub fn emit(self) {
        if let Some(mut buf) = self.buf {
            buf.push_str("}\n");
            // A closed stderr must not take the hub down; the line is lost.
            let _ = std::io::stderr().lock().write_all(buf.as_bytes());
        }
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

    #[test]
    fn lines_below_the_level_are_not_built() {
        let log = Logger::new(LogLevel::Warn);
        assert!(log.info("x").buf.is_none());
        assert!(log.error("x").buf.is_some());
    }

    #[test]
    fn lines_are_one_json_object() {
        let log = Logger::new(LogLevel::Debug);
        let line = log
            .info("said \"hi\"\n")
            .field("connection_id", "c1")
            .maybe("user", None::<&str>)
            .field("n", 3);
        let text = line.buf.clone().unwrap() + "}";
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["level"], "info");
        assert_eq!(v["msg"], "said \"hi\"\n");
        assert_eq!(v["connection_id"], "c1");
        assert_eq!(v["n"], 3);
        assert!(v.get("user").is_none());
        assert!(v["timestamp"].as_str().unwrap().ends_with('Z'));
    }
}
