//! A connection's rooms from both sides, kept in step: the connection's
//! [`RoomSet`](super::conn::RoomSet) and the room's members. Entering,
//! leaving (a room left with neither members nor history is forgotten), and
//! `max_rooms_per_connection` (PROTOCOL.md section 11).
//!
//! Both sides cost O(log n) or O(1) per room, whatever the order of the
//! names, so a connection with thousands of rooms joins, leaves and
//! disconnects in time linear in the rooms it names.

use super::ConnId;
use super::conn::Conn;
use super::rooms::Rooms;
use crate::protocol::{ErrorCode, ProtocolError};

/// Puts `conn` in room `name` (made if need be); returns the room's last seq.
pub(super) fn enter(rooms: &mut Rooms, conn: &mut Conn, name: &str) -> u64 {
    let (name, room) = rooms.open(name);
    if conn.rooms.insert(&name) {
        room.join(conn.member());
    }
    room.last_seq()
}

/// Takes connection `id` out of room `name`, and forgets the room if that
/// leaves it with neither members nor history.
pub(super) fn exit(rooms: &mut Rooms, id: ConnId, name: &str) {
    if let Some(room) = rooms.get_mut(name) {
        room.leave(id);
        rooms.forget_if_idle(name);
    }
}

/// Takes `conn` out of each of `names` it is in.
pub(super) fn leave(rooms: &mut Rooms, conn: &mut Conn, names: &[String]) {
    for name in names {
        if conn.rooms.remove(name) {
            exit(rooms, conn.id, name);
        }
    }
}

/// The rooms of `names` that `conn` is not in yet.
pub(super) fn new_rooms(conn: &Conn, names: &[String]) -> usize {
    names.iter().filter(|n| !conn.rooms.contains(n)).count()
}

/// The `too_many_rooms` refusal of a connection holding `held` rooms that
/// asked for `more` new ones, past `limit`.
pub(super) fn too_many_rooms(limit: usize, held: usize, more: usize) -> ProtocolError {
    let message = if held == 0 {
        format!("a connection may hold at most {limit} rooms; {more} were asked for")
    } else {
        format!(
            "a connection may hold at most {limit} rooms; it holds {held} and this subscribe \
             adds {more}; nothing was subscribed"
        )
    };
    ProtocolError::new(ErrorCode::TooManyRooms, message)
}
