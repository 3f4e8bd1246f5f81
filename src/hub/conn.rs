//! What the hub keeps per connection: its queues, identity, rooms and
//! counters, and the registry view of it (PROTOCOL.md section 7).

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
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
    /// Hook calls made and not yet answered, in call order.
    pub hooks: super::hooks::HookQueue,
    /// When the connect hook's `expires_at` closes it (Unix seconds).
    pub expires_at: Option<f64>,
}

impl Conn {
    /// The user ID, if the connection has a token.
    pub fn user(&self) -> Option<&str> {
        self.claims.as_ref().map(|c| c.sub.as_str())
    }

    /// What a room needs to broadcast to this connection.
    pub fn member(&self) -> super::room::Recipient {
        super::room::Recipient {
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
            rooms: self.rooms.iter().map(|r| r.to_string()).collect(),
            messages_in: self.messages_in,
            messages_out,
            bytes_in: self.bytes_in,
            bytes_out,
            dropped: self.dropped,
        }
    }
}

/// Up to this many rooms a connection keeps them in a sorted list.
const SMALL_ROOM_SET: usize = 16;

/// A connection's rooms, sorted, sharing their names with the hub's room
/// table. A short sorted list for the one or few rooms a connection usually
/// has (far smaller than a tree), a B-tree past [`SMALL_ROOM_SET`]: adding
/// or removing a room costs O(log n) whatever the order of the names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RoomSet {
    /// At most [`SMALL_ROOM_SET`] rooms, sorted.
    Small(Vec<Arc<str>>),
    /// More; it stays a tree once it has been one.
    Large(BTreeSet<Arc<str>>),
}

impl Default for RoomSet {
    fn default() -> Self {
        Self::Small(Vec::new())
    }
}

impl RoomSet {
    /// Adds `room`; `false` if it was there already.
    pub fn insert(&mut self, room: &Arc<str>) -> bool {
        match self {
            Self::Small(list) => match list.binary_search_by(|r| (**r).cmp(room)) {
                Ok(_) => false,
                Err(at) if list.len() < SMALL_ROOM_SET => {
                    list.insert(at, room.clone());
                    true
                }
                Err(_) => {
                    let mut tree: BTreeSet<Arc<str>> = list.drain(..).collect();
                    tree.insert(room.clone());
                    *self = Self::Large(tree);
                    true
                }
            },
            Self::Large(tree) => tree.insert(room.clone()),
        }
    }

    /// Removes `room`; `false` if it was not there.
    pub fn remove(&mut self, room: &str) -> bool {
        match self {
            Self::Small(list) => match list.binary_search_by(|r| (**r).cmp(room)) {
                Ok(at) => {
                    list.remove(at);
                    true
                }
                Err(_) => false,
            },
            Self::Large(tree) => tree.remove(room),
        }
    }

    /// Whether `room` is in the set.
    pub fn contains(&self, room: &str) -> bool {
        match self {
            Self::Small(list) => list.binary_search_by(|r| (**r).cmp(room)).is_ok(),
            Self::Large(tree) => tree.contains(room),
        }
    }

    /// How many rooms.
    pub fn len(&self) -> usize {
        match self {
            Self::Small(list) => list.len(),
            Self::Large(tree) => tree.len(),
        }
    }

    /// The rooms, sorted.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<str>> {
        let (list, tree) = match self {
            Self::Small(list) => (Some(list.iter()), None),
            Self::Large(tree) => (None, Some(tree.iter())),
        };
        list.into_iter().flatten().chain(tree.into_iter().flatten())
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

    fn names(rooms: &RoomSet) -> Vec<&str> {
        rooms.iter().map(|r| &**r).collect()
    }

    #[test]
    fn room_sets_stay_sorted_without_duplicates() {
        let mut rooms = RoomSet::default();
        assert!(rooms.insert(&"b".into()));
        assert!(rooms.insert(&"a".into()));
        assert!(!rooms.insert(&"b".into()));
        assert_eq!(names(&rooms), ["a", "b"]);
        assert!(rooms.remove("a"));
        assert!(!rooms.remove("a"));
        assert_eq!(names(&rooms), ["b"]);
        assert!(rooms.contains("b") && !rooms.contains("a"));
    }

    #[test]
    fn a_room_set_becomes_a_tree_past_the_small_size() {
        let mut rooms = RoomSet::default();
        for i in (0..=SMALL_ROOM_SET).rev() {
            assert!(rooms.insert(&format!("r{i:03}").into()));
        }
        assert!(matches!(rooms, RoomSet::Large(_)));
        assert_eq!(rooms.len(), SMALL_ROOM_SET + 1);
        assert_eq!(names(&rooms)[0], "r000");
        assert!(!rooms.insert(&"r005".into()));
        assert!(rooms.remove("r005") && !rooms.contains("r005"));
    }

    #[test]
    fn a_large_room_set_fills_in_descending_order() {
        // 100,000 names, each sorting before every other: a sorted vector
        // moved the whole list for each.
        let mut rooms = RoomSet::default();
        for i in (0..100_000).rev() {
            assert!(rooms.insert(&format!("room-{i:06}").into()));
        }
        assert_eq!(rooms.len(), 100_000);
        assert_eq!(names(&rooms)[..2], ["room-000000", "room-000001"]);
        for i in 0..100_000 {
            assert!(rooms.remove(&format!("room-{i:06}")));
        }
        assert_eq!(rooms.len(), 0);
    }

    proptest::proptest! {
        #[test]
        fn room_sets_match_a_btreeset_model(
            ops in proptest::collection::vec((proptest::bool::ANY, 0u8..48), 0..300)
        ) {
            let mut rooms = RoomSet::default();
            let mut model = BTreeSet::new();
            for (add, n) in ops {
                let name = format!("room{n}");
                if add {
                    proptest::prop_assert_eq!(rooms.insert(&name.as_str().into()), model.insert(name));
                } else {
                    proptest::prop_assert_eq!(rooms.remove(&name), model.remove(&name));
                }
                proptest::prop_assert_eq!(rooms.len(), model.len());
                let listed: Vec<&str> = names(&rooms);
                let expected: Vec<&str> = model.iter().map(String::as_str).collect();
                proptest::prop_assert_eq!(listed, expected);
            }
        }
    }

    #[test]
    fn ids_round_trip_through_text() {
        let id = ConnId::random();
        assert_eq!(ConnId::parse(&id.to_string()), Some(id));
        assert_eq!(ConnId::parse("nope"), None);
        assert_ne!(ConnId::random(), id);
    }
}
