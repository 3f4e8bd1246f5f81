//! Component health (`PUT /api/health/{component}`, `GET /health`): each
//! component's status, and the hub's overall status as the worst of them.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::protocol::Timestamp;

/// A component's status, from best to worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Working.
    Ok,
    /// Working, but not fully.
    Degraded,
    /// Not working.
    Down,
}

impl Status {
    /// The status as sent on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Degraded => "degraded",
            Self::Down => "down",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Status {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "ok" => Ok(Self::Ok),
            "degraded" => Ok(Self::Degraded),
            "down" => Ok(Self::Down),
            _ => Err(()),
        }
    }
}

/// One component's recorded state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Component {
    /// Its status.
    pub status: Status,
    /// Free-form detail.
    pub detail: Option<String>,
    /// When the status last changed.
    pub since: String,
}

/// The body of `GET /health`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthReport {
    /// The worst component status, `ok` without components.
    pub status: Status,
    /// Every component by name.
    pub components: BTreeMap<String, Component>,
    /// Open WebSocket connections.
    pub connections: usize,
    /// Seconds since the hub started.
    pub uptime_s: u64,
    /// The wshub version.
    pub version: &'static str,
}

/// The components and their states.
#[derive(Debug, Default)]
pub(crate) struct Health {
    components: BTreeMap<String, Component>,
}

impl Health {
    /// Records a state; returns the component's state and whether it changed.
    pub fn set(&mut self, name: &str, status: Status, detail: Option<String>) -> (Component, bool) {
        match self.components.get_mut(name) {
            Some(c) if c.status == status && c.detail == detail => (c.clone(), false),
            Some(c) => {
                if c.status != status {
                    c.since = Timestamp::now().to_string();
                }
                c.status = status;
                c.detail = detail;
                (c.clone(), true)
            }
            None => {
                let c = Component {
                    status,
                    detail,
                    since: Timestamp::now().to_string(),
                };
                self.components.insert(name.to_string(), c.clone());
                (c, true)
            }
        }
    }

    /// The worst status, `ok` when there are no components.
    pub fn overall(&self) -> Status {
        self.components
            .values()
            .map(|c| c.status)
            .max()
            .unwrap_or(Status::Ok)
    }

    /// Every component.
    pub fn components(&self) -> &BTreeMap<String, Component> {
        &self.components
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overall_is_the_worst() {
        let mut h = Health::default();
        assert_eq!(h.overall(), Status::Ok);
        assert!(h.set("db", Status::Ok, None).1);
        assert!(h.set("scanner", Status::Degraded, Some("slow".into())).1);
        assert_eq!(h.overall(), Status::Degraded);
        assert!(h.set("db", Status::Down, None).1);
        assert_eq!(h.overall(), Status::Down);
    }

    #[test]
    fn only_changes_count() {
        let mut h = Health::default();
        h.set("db", Status::Ok, None);
        assert!(!h.set("db", Status::Ok, None).1);
        assert!(h.set("db", Status::Ok, Some("x".into())).1);
        assert!(!h.set("db", Status::Ok, Some("x".into())).1);
    }
}
