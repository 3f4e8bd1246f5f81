//! The names of every Redis key and channel a cluster uses, and the Lua
//! scripts that change several of them at once. ARCHITECTURE.md ("Redis:
//! keys and channels") explains the layout; this file is the one place
//! that spells it.
//!
//! Every name starts with `redis_prefix`. A room's or a user's name sits
//! between braces (room and user names cannot hold braces), so all the keys
//! of one room share a Redis Cluster hash slot.

/// Key and channel names under one prefix.
#[derive(Debug, Clone)]
pub(super) struct Keys {
    prefix: String,
}

impl Keys {
    /// Names under `prefix`.
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
        }
    }

    /// The prefix itself (the scripts build channel names from it).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The cluster's epoch (a string).
    pub fn epoch(&self) -> String {
        format!("{}:epoch", self.prefix)
    }

    /// A counter every publish increments: a hub that saw it higher than
    /// Redis holds after a restart knows Redis came back from an older
    /// snapshot.
    pub fn clock(&self) -> String {
        format!("{}:clock", self.prefix)
    }

    /// A room's seq counter (a hash, field `seq`).
    pub fn meta(&self, room: &str) -> String {
        format!("{}:meta:{{{room}}}", self.prefix)
    }

    /// A room's history: a stream whose entry IDs are `seq-0`, fields `j`
    /// (the event's JSON message) and `t` (when it was published, in ms).
    pub fn history(&self, room: &str) -> String {
        format!("{}:history:{{{room}}}", self.prefix)
    }

    /// A room's presence: a sorted set of connection IDs scored by when
    /// the entry expires (ms), refreshed by the connection's hub.
    pub fn presence(&self, room: &str) -> String {
        format!("{}:presence:{{{room}}}", self.prefix)
    }

    /// A room's members' users: a hash from connection ID to the user as
    /// JSON (`null` or a string).
    pub fn members(&self, room: &str) -> String {
        format!("{}:members:{{{room}}}", self.prefix)
    }

    /// A user's connections, scored like [`Keys::presence`].
    pub fn user_presence(&self, user: &str) -> String {
        format!("{}:user-presence:{{{user}}}", self.prefix)
    }

    /// Every connection of the cluster, scored like [`Keys::presence`].
    pub fn conns(&self) -> String {
        format!("{}:conns", self.prefix)
    }

    /// Which node holds each connection (a hash).
    pub fn conn_nodes(&self) -> String {
        format!("{}:conn-nodes", self.prefix)
    }

    /// The rooms that may have subscribers or history (a set; the
    /// [`ROOMS`] script drops those that have neither).
    pub fn rooms(&self) -> String {
        format!("{}:rooms", self.prefix)
    }

    /// The live nodes, scored by when their announcement expires (ms).
    pub fn nodes(&self) -> String {
        format!("{}:nodes", self.prefix)
    }

    /// The health components set through the API (a hash of JSON).
    pub fn health(&self) -> String {
        format!("{}:health", self.prefix)
    }

    /// An idempotency key's first reply, for five minutes.
    pub fn idempotency(&self, key: &str) -> String {
        format!("{}:idempotency:{key}", self.prefix)
    }

    /// The channel of a room's events: `<seq>\n<except>\n<json>`.
    pub fn room_channel(&self, room: &str) -> String {
        format!("{}:room:{{{room}}}", self.prefix)
    }

    /// The channel of one user's events: `e\n<json>`.
    pub fn user_channel(&self, user: &str) -> String {
        format!("{}:user:{{{user}}}", self.prefix)
    }

    /// The channel every hub listens to: events for everyone (`e\n<json>`)
    /// and health components (`h\n<node>\n<json>`).
    pub fn all_channel(&self) -> String {
        format!("{}:all", self.prefix)
    }

    /// One node's own channel: its delivery self-check (`p<nonce>`) and
    /// admin disconnects (`d<connection id>`).
    pub fn node_channel(&self, node: &str) -> String {
        format!("{}:node:{node}", self.prefix)
    }

    /// What a channel name carries, if it is one of the cluster's.
    pub fn parse_channel<'a>(&self, channel: &'a str) -> Option<Channel<'a>> {
        let rest = channel
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix(':')?;
        if rest == "all" {
            return Some(Channel::All);
        }
        if let Some(node) = rest.strip_prefix("node:") {
            return Some(Channel::Node(node));
        }
        let braced = |s: &'a str| s.strip_prefix('{')?.strip_suffix('}');
        if let Some(room) = rest.strip_prefix("room:").and_then(braced) {
            return Some(Channel::Room(room));
        }
        rest.strip_prefix("user:")
            .and_then(braced)
            .map(Channel::User)
    }
}

/// A channel of the cluster, by what it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Channel<'a> {
    Room(&'a str),
    User(&'a str),
    All,
    Node(&'a str),
}

/// Sequences, keeps and publishes one room event, atomically.
///
/// KEYS: epoch, meta, history, presence, idempotency key (or `""`), rooms,
/// clock.
/// ARGV: epoch, channel, head, tail, except, history_size, now_ms,
/// key ttl ms, event id, correlation id, room.
/// Returns `{"ok", seq, recipients, clock}`, `{"epoch", current}` when the
/// epoch is not the caller's, or `{"repeat", reply}` for a known key.
pub(super) const PUBLISH_ROOM: &str = r"
local current = redis.call('GET', KEYS[1])
if current ~= ARGV[1] then return {'epoch', current or ''} end
if KEYS[5] ~= '' then
  local prior = redis.call('GET', KEYS[5])
  if prior then return {'repeat', prior} end
end
local seq = redis.call('HINCRBY', KEYS[2], 'seq', 1)
redis.call('SADD', KEYS[6], ARGV[11])
local json = ARGV[3] .. seq .. ARGV[4]
local size = tonumber(ARGV[6])
if size > 0 then
  redis.call('XADD', KEYS[3], 'MAXLEN', size, seq .. '-0', 'j', json, 't', ARGV[7], 'x', ARGV[5])
end
local recipients = redis.call('ZCOUNT', KEYS[4], ARGV[7], '+inf')
redis.call('PUBLISH', ARGV[2], seq .. '\n' .. ARGV[5] .. '\n' .. json)
if KEYS[5] ~= '' then
  redis.call('SET', KEYS[5], ARGV[9] .. '\n' .. seq .. '\n' .. recipients .. '\n' .. ARGV[10], 'PX', ARGV[8])
end
return {'ok', seq, recipients, redis.call('INCR', KEYS[7])}
";

/// Publishes one event to a user or to everyone (no seq, no history).
///
/// KEYS: epoch, the target's presence set, idempotency key (or `""`),
/// clock.
/// ARGV: epoch, channel, json, now_ms, key ttl ms, event id,
/// correlation id. Returns as [`PUBLISH_ROOM`] does, with seq 0.
pub(super) const PUBLISH_OTHER: &str = r"
local current = redis.call('GET', KEYS[1])
if current ~= ARGV[1] then return {'epoch', current or ''} end
if KEYS[3] ~= '' then
  local prior = redis.call('GET', KEYS[3])
  if prior then return {'repeat', prior} end
end
local recipients = redis.call('ZCOUNT', KEYS[2], ARGV[4], '+inf')
redis.call('PUBLISH', ARGV[2], 'e\n' .. ARGV[3])
if KEYS[3] ~= '' then
  redis.call('SET', KEYS[3], ARGV[6] .. '\n\n' .. recipients .. '\n' .. ARGV[7], 'PX', ARGV[5])
end
return {'ok', 0, recipients, redis.call('INCR', KEYS[4])}
";

/// Replaces the epoch if it is still the caller's; returns the epoch now.
///
/// KEYS: epoch. ARGV: the caller's epoch, the new one.
pub(super) const REPLACE_EPOCH: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2])
end
return redis.call('GET', KEYS[1])
";

/// Every room with subscribers or history: `{room, subscribers, seq, …}`;
/// rooms with neither leave the index.
///
/// KEYS: rooms. ARGV: now_ms, prefix.
pub(super) const ROOMS: &str = r"
local out = {}
for _, room in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local tag = '{' .. room .. '}'
  local presence = ARGV[2] .. ':presence:' .. tag
  -- Entries of hubs that died go here (and in PRESENCE), not only expire.
  local gone = redis.call('ZRANGEBYSCORE', presence, '-inf', '(' .. ARGV[1], 'LIMIT', 0, 1000)
  for _, conn in ipairs(gone) do
    redis.call('ZREM', presence, conn)
    redis.call('HDEL', ARGV[2] .. ':members:' .. tag, conn)
  end
  local subs = redis.call('ZCOUNT', presence, ARGV[1], '+inf')
  local held = redis.call('XLEN', ARGV[2] .. ':history:' .. tag)
  if subs == 0 and held == 0 then
    redis.call('SREM', KEYS[1], room)
  else
    local seq = redis.call('HGET', ARGV[2] .. ':meta:' .. tag, 'seq') or '0'
    table.insert(out, room)
    table.insert(out, subs)
    table.insert(out, seq)
  end
end
return out
";

/// A room's live members: drops expired entries, then returns the
/// members hash as a flat list (connection, user JSON, …).
///
/// KEYS: presence, members. ARGV: now_ms.
pub(super) const PRESENCE: &str = r"
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])
for _, conn in ipairs(gone) do
  redis.call('ZREM', KEYS[1], conn)
  redis.call('HDEL', KEYS[2], conn)
end
return redis.call('HGETALL', KEYS[2])
";

/// Asks the node that holds a live connection to close it.
///
/// KEYS: conns, conn-nodes. ARGV: connection id, now_ms, prefix.
/// Returns 1 when a live node holds it, 0 otherwise.
pub(super) const DISCONNECT: &str = r"
local expires = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not expires or tonumber(expires) < tonumber(ARGV[2]) then return 0 end
local node = redis.call('HGET', KEYS[2], ARGV[1])
if not node then return 0 end
redis.call('PUBLISH', ARGV[3] .. ':node:' .. node, 'd' .. ARGV[1])
return 1
";

/// Drops the expired entries of the cluster's connection set and their
/// nodes, and of the node set.
///
/// KEYS: conns, conn-nodes, nodes. ARGV: now_ms.
pub(super) const SWEEP: &str = r"
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1], 'LIMIT', 0, 1000)
for _, conn in ipairs(gone) do
  redis.call('ZREM', KEYS[1], conn)
  redis.call('HDEL', KEYS[2], conn)
end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. ARGV[1])
return #gone
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_parse_back() {
        let keys = Keys::new("wshub");
        let room = keys.room_channel("a:b.c");
        assert_eq!(keys.parse_channel(&room), Some(Channel::Room("a:b.c")));
        let user = keys.user_channel("alice");
        assert_eq!(keys.parse_channel(&user), Some(Channel::User("alice")));
        assert_eq!(keys.parse_channel("wshub:all"), Some(Channel::All));
        assert_eq!(
            keys.parse_channel("wshub:node:n1"),
            Some(Channel::Node("n1"))
        );
        assert_eq!(keys.parse_channel("other:all"), None);
        assert_eq!(keys.parse_channel("wshub:room:x"), None);
    }

    #[test]
    fn a_room_keeps_its_keys_in_one_hash_slot() {
        let keys = Keys::new("p");
        assert_eq!(keys.meta("r"), "p:meta:{r}");
        assert_eq!(keys.history("r"), "p:history:{r}");
        assert_eq!(keys.presence("r"), "p:presence:{r}");
    }
}
