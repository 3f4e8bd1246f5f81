//! Whether an upgrade may become a connection (PROTOCOL.md sections 2 and
//! 11): not past `max_connections`, the per-IP and per-user limits, or
//! `max_rooms_per_connection` for `?rooms=`. (A draining hub takes no
//! commands: the HTTP side answers 503 itself.)

use std::collections::BTreeSet;

use super::{Hub, JoinRequest, Refusal, membership};
use crate::protocol::ErrorCode;

impl Hub {
    /// The refusal for `request`, if it is refused.
    pub(super) fn admit(&self, request: &JoinRequest) -> Result<(), Refusal> {
        let busy = |status, message: &str| Refusal {
            retry_after: Some(1),
            ..Refusal::new(status, ErrorCode::TooManyConnections, message)
        };
        let limit = self.config.max_rooms_per_connection;
        // Distinct already: the upgrade check drops repeated names.
        let asked = request.rooms.len();
        if asked > limit {
            let error = membership::too_many_rooms(limit, 0, asked);
            return Err(Refusal::new(400, error.code, error.message));
        }
        if self.conns.len() >= self.config.max_connections {
            return Err(busy(503, "the hub is at max_connections"));
        }
        let per_ip = self.config.max_connections_per_ip;
        if per_ip > 0 && self.per_ip.get(&request.peer.ip()).copied().unwrap_or(0) >= per_ip {
            return Err(busy(429, "too many connections from this address"));
        }
        let per_user = self.config.max_connections_per_user;
        if let Some(claims) = &request.claims {
            let open = self.users.get(&claims.sub).map_or(0, BTreeSet::len);
            if per_user > 0 && open >= per_user {
                return Err(busy(429, "too many connections for this user"));
            }
        }
        Ok(())
    }
}
