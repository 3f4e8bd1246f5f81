//! The cluster-wide answers: `presence`, admin `DELETE` of another hub's
//! connection, `GET /api/rooms[/{room}]`, and health components shared by
//! every hub.

use super::*;

impl Hub {
    /// A client's `presence` in a cluster: asked of Redis.
    pub(in crate::hub) fn cluster_presence(
        &mut self,
        conn: ConnId,
        room: String,
        correlation_id: &str,
        reference: Option<&str>,
    ) -> Result<(), ProtocolError> {
        if self.cluster.down {
            return Err(unavailable("Redis cannot be reached"));
        }
        let token = self.cluster.token();
        if let Progress::Refused(e) = self.engine.ask(Ask::Presence {
            token,
            room: room.clone(),
        }) {
            return Err(unavailable(&e.message));
        }
        self.cluster.presence.insert(
            token,
            PresenceAsk {
                conn,
                room,
                correlation_id: correlation_id.to_string(),
                reference: reference.map(str::to_string),
            },
        );
        Ok(())
    }

    /// `DELETE /api/connections/{id}` for a connection of another hub.
    pub(in crate::hub) fn cluster_disconnect(&mut self, id: ConnId, reply: Sender<bool>) {
        let token = self.cluster.token();
        match self.engine.ask(Ask::Disconnect {
            token,
            conn: id.to_string(),
        }) {
            Progress::Refused(_) => drop(reply.try_send(false)),
            _ => {
                self.cluster.disconnects.insert(token, reply);
            }
        }
    }

    /// `GET /api/rooms`, counted on every live hub; while Redis is gone,
    /// this hub's own view.
    pub(in crate::hub) fn cluster_room_list(&mut self, reply: Sender<Vec<RoomInfo>>) {
        let token = self.cluster.token();
        match self.engine.ask(Ask::Rooms { token }) {
            Progress::Refused(_) => drop(reply.try_send(self.room_list())),
            _ => {
                self.cluster.rooms.insert(token, RoomsAsk::All(reply));
            }
        }
    }

    /// `GET /api/rooms/{room}`, with its members on every live hub.
    pub(in crate::hub) fn cluster_room(&mut self, room: String, reply: Sender<Option<RoomInfo>>) {
        let token = self.cluster.token();
        match self.engine.ask(Ask::Room {
            token,
            room: room.clone(),
        }) {
            Progress::Refused(_) => drop(reply.try_send(self.room_info(&room))),
            _ => {
                self.cluster.rooms.insert(token, RoomsAsk::One(reply));
            }
        }
    }

    pub(super) fn on_rooms(&mut self, token: u64, result: Result<Vec<ClusterRoom>, String>) {
        let Some(ask) = self.cluster.rooms.remove(&token) else {
            return;
        };
        let info = |r: ClusterRoom| RoomInfo {
            room: r.room,
            subscribers: r.subscribers,
            last_seq: r.last_seq,
            members: r.members.map(|m| {
                m.into_iter()
                    .map(|(connection_id, user)| PresenceMember {
                        connection_id,
                        user,
                    })
                    .collect()
            }),
        };
        match (ask, result) {
            (RoomsAsk::All(reply), Ok(rooms)) => {
                drop(reply.try_send(rooms.into_iter().map(info).collect()));
            }
            (RoomsAsk::One(reply), Ok(rooms)) => {
                drop(reply.try_send(rooms.into_iter().next().map(info)));
            }
            // Redis failed meanwhile: this hub's own view.
            (RoomsAsk::All(reply), Err(_)) => drop(reply.try_send(self.room_list())),
            (RoomsAsk::One(reply), Err(_)) => {
                // The name is not kept; say it is not known rather than guess.
                drop(reply.try_send(None));
            }
        }
    }

    /// A health component set through this hub's API, for every hub.
    pub(in crate::hub) fn cluster_health(
        &mut self,
        component: &str,
        status: Status,
        detail: Option<String>,
    ) {
        if self.clustered() && component != "engine" {
            let _ = self.engine.ask(Ask::Health {
                component: component.to_string(),
                status: status.as_str().to_string(),
                detail,
            });
        }
    }
}
