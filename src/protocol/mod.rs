//! The wire contract of PROTOCOL.md as plain values: error codes, room names,
//! reserved types, the client-message decoder, the hub-message encoder, and
//! the lines and cursor of a Server-Sent Events stream ([`sse`]).
//!
//! Nothing here knows about sockets, frames or the hub; every function is
//! pure and unit-tested against bytes.

mod client;
mod publish;
mod server;
pub mod sse;
mod time;

pub use client::{ClientAction, ClientMessage, DecodeError, Subscribe, decode};
pub use publish::{Publish, Published, Target};
pub use server::{
    Encoded, Encoding, Envelope, MAX_CONTROL_PAYLOAD, PING_FRAME, close_frame, encode,
    frame_header, masked_frame, opcode, pong_frame,
};
pub use time::{Timestamp, timestamp_now};

use std::fmt;

/// Longest room name, in characters.
pub const MAX_ROOM_NAME_LEN: usize = 128;

/// Longest accepted correlation ID, in characters.
pub const MAX_CORRELATION_ID_LEN: usize = 128;

/// Message types only the hub may send; publishers get `reserved_type`.
pub const RESERVED_TYPES: [&str; 11] = [
    "welcome",
    "heartbeat",
    "pong",
    "subscribed",
    "unsubscribed",
    "published",
    "presence",
    "refreshed",
    "error",
    "health_status",
    "rpc_result",
];

/// Longest accepted event type, in characters.
pub const MAX_EVENT_TYPE_LEN: usize = 128;

/// Whether `name` is a valid room name: 1 to 128 of `A-Z a-z 0-9 _ . : -`.
pub fn is_valid_room(name: &str) -> bool {
    (1..=MAX_ROOM_NAME_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

/// Whether `kind` is a type only the hub may send.
pub fn is_reserved_type(kind: &str) -> bool {
    RESERVED_TYPES.contains(&kind)
}

/// Whether `id` may be used as a correlation ID as given: 1 to 128 visible
/// ASCII characters. Anything else is replaced by a fresh UUIDv4.
pub fn is_valid_correlation_id(id: &str) -> bool {
    (1..=MAX_CORRELATION_ID_LEN).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic())
}

/// A fresh random UUIDv4, hyphenated.
///
/// Drawn from `fastrand` rather than the OS: these IDs name things, they do
/// not guard anything, and a syscall per connection or event is not free.
pub fn new_uuid() -> String {
    uuid::Builder::from_random_bytes(fastrand::u128(..).to_le_bytes())
        .into_uuid()
        .hyphenated()
        .to_string()
}

/// Every `error.code` of the protocol, WebSocket and HTTP alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[allow(missing_docs)]
pub enum ErrorCode {
    // Client-message errors (section 4).
    InvalidJson,
    InvalidMessage,
    UnknownType,
    UnsupportedFrame,
    Forbidden,
    InvalidToken,
    TokenExpired,
    ReservedType,
    SchemaViolation,
    HistoryUnavailable,
    RateLimited,
    TooManyRooms,
    // Section 9.
    EngineUnavailable,
    // Section 10.
    HookUnavailable,
    // HTTP and handshake errors (sections 1 and 2).
    BadRequest,
    Unauthenticated,
    NotFound,
    MethodNotAllowed,
    LengthRequired,
    PayloadTooLarge,
    UnsupportedMediaType,
    UnsupportedProtocol,
    OriginNotAllowed,
    // Section 11.
    HostNotAllowed,
    TooManyConnections,
    ShuttingDown,
    Internal,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidJson => "invalid_json",
            Self::InvalidMessage => "invalid_message",
            Self::UnknownType => "unknown_type",
            Self::UnsupportedFrame => "unsupported_frame",
            Self::Forbidden => "forbidden",
            Self::InvalidToken => "invalid_token",
            Self::TokenExpired => "token_expired",
            Self::ReservedType => "reserved_type",
            Self::SchemaViolation => "schema_violation",
            Self::HistoryUnavailable => "history_unavailable",
            Self::RateLimited => "rate_limited",
            Self::TooManyRooms => "too_many_rooms",
            Self::EngineUnavailable => "engine_unavailable",
            Self::HookUnavailable => "hook_unavailable",
            Self::BadRequest => "bad_request",
            Self::Unauthenticated => "unauthenticated",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::LengthRequired => "length_required",
            Self::PayloadTooLarge => "payload_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::UnsupportedProtocol => "unsupported_protocol",
            Self::OriginNotAllowed => "origin_not_allowed",
            Self::HostNotAllowed => "host_not_allowed",
            Self::TooManyConnections => "too_many_connections",
            Self::ShuttingDown => "shutting_down",
            Self::Internal => "internal_error",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// An expected refusal: a code from the protocol and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError {
    /// The `error.code`.
    pub code: ErrorCode,
    /// What went wrong, naming the field where there is one.
    pub message: String,
}

impl ProtocolError {
    /// An error with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// `invalid_message` naming `field`.
    pub fn invalid_field(field: &str, problem: &str) -> Self {
        Self::new(ErrorCode::InvalidMessage, format!("`{field}` {problem}"))
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ProtocolError {}

/// The close codes of section 6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseCode {
    /// 1000: normal closure.
    Normal,
    /// 1001: the hub is shutting down.
    GoingAway,
    /// 1002: the peer broke the WebSocket protocol.
    ProtocolError,
    /// 1007: a text frame that is not UTF-8.
    InvalidPayload,
    /// 1008: rate-limit abuse.
    Policy,
    /// 1009: a message over `max_message_bytes`.
    TooBig,
    /// 1011: an internal error.
    Internal,
    /// 1012: the cluster's epoch changed (its data in Redis was lost).
    EpochChanged,
    /// 4000: no frame within `heartbeat_timeout`.
    HeartbeatTimeout,
    /// 4001: the token's `exp` passed.
    TokenExpired,
    /// 4003: disconnected by an admin.
    Admin,
    /// 4009: the outbound queue overflowed.
    SlowConsumer,
}

impl CloseCode {
    /// The numeric code sent in the close frame.
    pub fn code(self) -> u16 {
        match self {
            Self::Normal => 1000,
            Self::GoingAway => 1001,
            Self::ProtocolError => 1002,
            Self::InvalidPayload => 1007,
            Self::Policy => 1008,
            Self::TooBig => 1009,
            Self::Internal => 1011,
            Self::EpochChanged => 1012,
            Self::HeartbeatTimeout => 4000,
            Self::TokenExpired => 4001,
            Self::Admin => 4003,
            Self::SlowConsumer => 4009,
        }
    }

    /// The close code for `code`, if it is one of the hub's.
    pub fn from_code(code: u16) -> Option<Self> {
        [
            Self::Normal,
            Self::GoingAway,
            Self::ProtocolError,
            Self::InvalidPayload,
            Self::Policy,
            Self::TooBig,
            Self::Internal,
            Self::EpochChanged,
            Self::HeartbeatTimeout,
            Self::TokenExpired,
            Self::Admin,
            Self::SlowConsumer,
        ]
        .into_iter()
        .find(|c| c.code() == code)
    }

    /// The reason text sent in the close frame.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Normal => "normal",
            Self::GoingAway => "hub shutting down",
            Self::ProtocolError => "protocol error",
            Self::InvalidPayload => "invalid utf-8",
            Self::Policy => "rate limit exceeded",
            Self::TooBig => "message too big",
            Self::Internal => "internal error",
            Self::EpochChanged => "cluster epoch changed",
            Self::HeartbeatTimeout => "heartbeat timeout",
            Self::TokenExpired => "token expired",
            Self::Admin => "disconnected by admin",
            Self::SlowConsumer => "slow consumer",
        }
    }

    /// The `reason` label of `wshub_disconnects_total` for a close with this code.
    pub fn disconnect_reason(self) -> &'static str {
        match self {
            Self::Normal => "normal",
            Self::GoingAway => "shutdown",
            Self::Policy => "rate_limit",
            Self::TooBig => "too_big",
            Self::HeartbeatTimeout => "heartbeat_timeout",
            Self::TokenExpired => "token_expired",
            Self::Admin => "admin",
            Self::SlowConsumer => "slow_consumer",
            Self::EpochChanged => "epoch_changed",
            Self::ProtocolError | Self::InvalidPayload | Self::Internal => "error",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names_follow_the_charset_and_length() {
        assert!(is_valid_room("scans"));
        assert!(is_valid_room("project:42.logs-v1_x"));
        assert!(is_valid_room(&"a".repeat(128)));
        assert!(!is_valid_room(""));
        assert!(!is_valid_room(&"a".repeat(129)));
        assert!(!is_valid_room("a b"));
        assert!(!is_valid_room("a/b"));
        assert!(!is_valid_room("a*"));
        assert!(!is_valid_room("é"));
    }

    #[test]
    fn correlation_ids_are_visible_ascii() {
        assert!(is_valid_correlation_id("req-1"));
        assert!(!is_valid_correlation_id(""));
        assert!(!is_valid_correlation_id("has space"));
        assert!(!is_valid_correlation_id(&"x".repeat(129)));
        assert!(is_valid_correlation_id(&"x".repeat(128)));
    }

    #[test]
    fn uuids_are_version_4() {
        let id = new_uuid();
        let parsed = uuid::Uuid::parse_str(&id).unwrap();
        assert_eq!(parsed.get_version_num(), 4);
        assert_ne!(id, new_uuid());
    }

    #[test]
    fn reserved_types_are_refused() {
        for t in RESERVED_TYPES {
            assert!(is_reserved_type(t));
        }
        assert!(!is_reserved_type("scan_started"));
    }
}
