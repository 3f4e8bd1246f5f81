//! What the hub tells operators: the connection registry, rooms, health and
//! metrics (PROTOCOL.md sections 1 and 7).

use super::conn::Conn;
use super::{ConnectionInfo, HealthReport, Hub, RoomInfo};
use crate::metrics::Gauges;

impl Hub {
    /// Every connection, or one user's, oldest first.
    pub(super) fn connections(&self, user: Option<&str>) -> Vec<ConnectionInfo> {
        let mut conns: Vec<&Conn> = match user {
            Some(user) => self
                .users
                .get(user)
                .into_iter()
                .flatten()
                .filter_map(|id| self.conns.get(id).map(|c| &**c))
                .collect(),
            None => self.conns.values().map(|c| &**c).collect(),
        };
        conns.sort_by_key(|c| (c.connected, c.id));
        conns.into_iter().map(|c| c.info(&self.node)).collect()
    }

    /// Every room, by name.
    pub(super) fn room_list(&self) -> Vec<RoomInfo> {
        let mut rooms: Vec<RoomInfo> = self
            .rooms
            .iter()
            .map(|(name, room)| RoomInfo {
                room: name.to_string(),
                subscribers: room.len(),
                last_seq: room.last_seq(),
                members: None,
            })
            .collect();
        rooms.sort_by(|a, b| a.room.cmp(&b.room));
        rooms
    }

    /// One room with its members; `None` when it has neither members nor history.
    pub(super) fn room_info(&self, name: &str) -> Option<RoomInfo> {
        let room = self.rooms.get(name).filter(|r| !r.is_idle())?;
        Some(RoomInfo {
            room: name.to_string(),
            subscribers: room.len(),
            last_seq: room.last_seq(),
            members: Some(self.members(name)),
        })
    }

    /// The body of `GET /health`.
    pub(super) fn health_report(&self) -> HealthReport {
        HealthReport {
            status: self.health.overall(),
            components: self.health.components().clone(),
            connections: self.conns.len(),
            uptime_s: self.started.elapsed().as_secs(),
            version: env!("CARGO_PKG_VERSION"),
        }
    }

    /// The body of `GET /metrics`.
    pub(super) fn render_metrics(&self) -> String {
        // Live connections' messages are counted here; closed ones were
        // added to the total when they left.
        let mut metrics = self.metrics.clone();
        metrics.messages_out += self.conns.values().map(|c| c.outlet.sent().0).sum::<u64>();
        metrics.render(Gauges {
            connections_active: self.conns.len(),
            rooms: self.rooms.len(),
            history_events: self.history.len(),
            history_bytes: self.history.bytes(),
            uptime_s: self.started.elapsed().as_secs_f64(),
        })
    }
}
