//! What the hub keeps per connection: its queues, identity, rooms and
//! counters, and the registry view of it (PROTOCOL.md section 7).

use std::fmt;
use std::net::SocketAddr;
use std::time::Instant;

use serde::Serialize;

use crate::auth::Claims;
use crate::outlet::Outlet;
use crate::protocol::{Encoding, Timestamp};

/// A connection's ID, shown as a UUID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(u128);

impl ConnId {
    /// A fresh random ID.
    pub fn random() -> Self {
        let uuid = uuid::Builder::from_random_bytes(fastrand::u128(..).to_le_bytes()).into_uuid();
        Self(uuid.as_u128())
    }

    /// Parses an ID as shown in `connection_id`.
    pub fn parse(text: &str) -> Option<Self> {
        uuid::Uuid::parse_str(text).ok().map(|u| Self(u.as_u128()))
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        uuid::Uuid::from_u128(self.0).hyphenated().fmt(f)
    }
}

impl Serialize for ConnId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The hub's record of one open connection.
#[derive(Debug)]
pub(crate) struct Conn {
    pub id: ConnId,
    pub outlet: Outlet,
    pub encoding: Encoding,
    pub claims: Option<Claims>,
    pub peer: SocketAddr,
    pub origin: Option<String>,
    pub user_agent: Option<String>,
    pub connected_at: Timestamp,
    pub connected: Instant,
    pub last_seen: Instant,
    pub rooms: RoomSet,
    pub messages_in: u64,
    pub bytes_in: u64,
    pub dropped: u64,
}

impl Conn {
    /// The user ID, if the connection has a token.
    pub fn user(&self) -> Option<&str> {
        self.claims.as_ref().map(|c| c.sub.as_str())
    }

    /// What a room needs to broadcast to this connection.
    pub fn member(&self) -> super::room::Member {
        super::room::Member {
            id: self.id,
            encoding: self.encoding,
            outlet: self.outlet.clone(),
        }
    }

    /// The registry view of this connection.
    pub fn info(&self) -> ConnectionInfo {
        let (messages_out, bytes_out) = self.outlet.sent();
        ConnectionInfo {
            connection_id: self.id.to_string(),
            user: self.user().map(str::to_string),
            ip: self.peer.ip().to_string(),
            port: self.peer.port(),
            connected_at: self.connected_at.to_string(),
            protocol: self.encoding.protocol(),
            origin: self.origin.clone(),
            user_agent: self.user_agent.clone(),
            rooms: self.rooms.iter().cloned().collect(),
            messages_in: self.messages_in,
            messages_out,
            bytes_in: self.bytes_in,
            bytes_out,
            dropped: self.dropped,
        }
    }
}

/// A connection's rooms: a sorted list, far smaller than a tree for the one
/// or few rooms a connection usually has.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct RoomSet(Vec<String>);

impl RoomSet {
    /// Adds `room`; `false` if it was there already.
    pub fn insert(&mut self, room: &str) -> bool {
        match self.0.binary_search_by(|r| r.as_str().cmp(room)) {
            Ok(_) => false,
            Err(at) => {
                self.0.insert(at, room.to_string());
                true
            }
        }
    }

    /// Removes `room`; `false` if it was not there.
    pub fn remove(&mut self, room: &str) -> bool {
        match self.0.binary_search_by(|r| r.as_str().cmp(room)) {
            Ok(at) => {
                self.0.remove(at);
                true
            }
            Err(_) => false,
        }
    }

    /// The rooms, sorted.
    pub fn iter(&self) -> impl Iterator<Item = &String> {
        self.0.iter()
    }
}

impl<'a> IntoIterator for &'a RoomSet {
    type Item = &'a String;
    type IntoIter = std::slice::Iter<'a, String>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// A connection's metadata, as the registry API and [`crate::Handle::connections`] show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConnectionInfo {
    /// The connection's ID.
    pub connection_id: String,
    /// The token's `sub`, or `None` for anonymous connections.
    pub user: Option<String>,
    /// Peer IP address.
    pub ip: String,
    /// Peer port.
    pub port: u16,
    /// When the connection opened.
    pub connected_at: String,
    /// `wshub.json` or `wshub.msgpack`.
    pub protocol: &'static str,
    /// The upgrade request's `Origin`.
    pub origin: Option<String>,
    /// The upgrade request's `User-Agent`.
    pub user_agent: Option<String>,
    /// Subscribed rooms, sorted.
    pub rooms: Vec<String>,
    /// Messages received.
    pub messages_in: u64,
    /// Messages queued to it.
    pub messages_out: u64,
    /// Bytes received in messages.
    pub bytes_in: u64,
    /// Bytes queued to it in messages.
    pub bytes_out: u64,
    /// Messages dropped by the rate limit.
    pub dropped: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_sets_stay_sorted_without_duplicates() {
        let mut rooms = RoomSet::default();
        assert!(rooms.insert("b"));
        assert!(rooms.insert("a"));
        assert!(!rooms.insert("b"));
        assert_eq!(rooms.iter().collect::<Vec<_>>(), ["a", "b"]);
        assert!(rooms.remove("a"));
        assert!(!rooms.remove("a"));
        assert_eq!(rooms.iter().collect::<Vec<_>>(), ["b"]);
    }

    #[test]
    fn ids_round_trip_through_text() {
        let id = ConnId::random();
        assert_eq!(ConnId::parse(&id.to_string()), Some(id));
        assert_eq!(ConnId::parse("nope"), None);
        assert_ne!(ConnId::random(), id);
    }
}
