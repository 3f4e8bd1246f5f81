//! What a publisher sends (section 5's `POST /api/events` body, a stdin line,
//! or the embedding API) and what it gets back.

use serde::Serialize;
use serde_json::{Map, Value};

use super::client::{check_event_type, check_room};
use super::{ErrorCode, MAX_CORRELATION_ID_LEN, ProtocolError, is_reserved_type};

/// Who receives a published event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The subscribers of a room; the event gets the room's next seq.
    Room(String),
    /// Every connection of a user (`room` null).
    User(String),
    /// Every connection (`room` null).
    Everyone,
}

/// An event to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct Publish {
    /// The event type; not one of the reserved types.
    pub kind: String,
    /// The event payload.
    pub payload: Map<String, Value>,
    /// Who receives it.
    pub target: Target,
    /// Publishing the same key again within 5 minutes publishes nothing and
    /// returns the first reply.
    pub idempotency_key: Option<String>,
}

impl Publish {
    /// An event of type `kind` for the subscribers of `room`.
    ///
    /// `payload` should be a JSON object; anything else is sent as `{}`.
    pub fn to_room(room: impl Into<String>, kind: impl Into<String>, payload: Value) -> Self {
        Self::new(Target::Room(room.into()), kind, payload)
    }

    /// An event of type `kind` for every connection of `user`.
    pub fn to_user(user: impl Into<String>, kind: impl Into<String>, payload: Value) -> Self {
        Self::new(Target::User(user.into()), kind, payload)
    }

    /// An event of type `kind` for every connection.
    pub fn to_everyone(kind: impl Into<String>, payload: Value) -> Self {
        Self::new(Target::Everyone, kind, payload)
    }

    fn new(target: Target, kind: impl Into<String>, payload: Value) -> Self {
        Self {
            kind: kind.into(),
            payload: match payload {
                Value::Object(map) => map,
                _ => Map::new(),
            },
            target,
            idempotency_key: None,
        }
    }

    /// The room, if the target is one.
    pub fn room(&self) -> Option<&str> {
        match &self.target {
            Target::Room(r) => Some(r),
            _ => None,
        }
    }

    /// Decodes a `POST /api/events` body or stdin line.
    pub fn from_json(body: &[u8]) -> Result<Self, ProtocolError> {
        let value: Value = serde_json::from_slice(body).map_err(|e| {
            ProtocolError::new(ErrorCode::BadRequest, format!("body is not JSON: {e}"))
        })?;
        let Value::Object(mut obj) = value else {
            return Err(ProtocolError::new(
                ErrorCode::InvalidMessage,
                "body must be a JSON object",
            ));
        };
        let kind = match obj.remove("type") {
            Some(Value::String(s)) => s,
            None | Some(Value::Null) => {
                return Err(ProtocolError::invalid_field("type", "is missing"));
            }
            Some(_) => return Err(ProtocolError::invalid_field("type", "must be a string")),
        };
        let payload = match obj.remove("payload") {
            Some(Value::Object(map)) => map,
            None | Some(Value::Null) => {
                return Err(ProtocolError::invalid_field("payload", "is missing"));
            }
            Some(_) => return Err(ProtocolError::invalid_field("payload", "must be an object")),
        };
        let room = optional_string(&mut obj, "room")?;
        let user = optional_string(&mut obj, "user")?;
        let idempotency_key = optional_string(&mut obj, "idempotency_key")?;
        if idempotency_key
            .as_ref()
            .is_some_and(|k| k.is_empty() || k.len() > MAX_CORRELATION_ID_LEN)
        {
            return Err(ProtocolError::invalid_field(
                "idempotency_key",
                "must be 1 to 128 characters",
            ));
        }
        let target = match (room, user) {
            (Some(_), Some(_)) => {
                return Err(ProtocolError::new(
                    ErrorCode::InvalidMessage,
                    "`room` and `user` cannot both be given",
                ));
            }
            (Some(room), None) => Target::Room(room),
            (None, Some(user)) => Target::User(user),
            (None, None) => Target::Everyone,
        };
        let publish = Self {
            kind,
            payload,
            target,
            idempotency_key,
        };
        publish.check()?;
        Ok(publish)
    }

    /// Checks the type, room and user, as the hub does for every publish.
    pub fn check(&self) -> Result<(), ProtocolError> {
        check_event_type("type", &self.kind)?;
        if is_reserved_type(&self.kind) {
            return Err(ProtocolError::new(
                ErrorCode::ReservedType,
                format!("`{}` is reserved for the hub", self.kind),
            ));
        }
        match &self.target {
            Target::Room(room) => check_room("room", room)?,
            Target::User(user) if user.is_empty() => {
                return Err(ProtocolError::invalid_field("user", "must not be empty"));
            }
            _ => {}
        }
        Ok(())
    }
}

fn optional_string(
    obj: &mut Map<String, Value>,
    field: &str,
) -> Result<Option<String>, ProtocolError> {
    match obj.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ProtocolError::invalid_field(field, "must be a string")),
    }
}

/// The hub's answer to a publish.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Published {
    /// The event's ID.
    pub id: String,
    /// The room's seq for the event, `None` without a room.
    pub seq: Option<u64>,
    /// How many connections it was queued to.
    pub recipients: usize,
    /// The correlation ID the event carries.
    pub correlation_id: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<Publish, ProtocolError> {
        Publish::from_json(body.as_bytes())
    }

    #[test]
    fn targets() {
        let p = parse(r#"{"type":"t","payload":{},"room":"r"}"#).unwrap();
        assert_eq!(p.target, Target::Room("r".into()));
        let p = parse(r#"{"type":"t","payload":{},"user":"u"}"#).unwrap();
        assert_eq!(p.target, Target::User("u".into()));
        let p = parse(r#"{"type":"t","payload":{"a":1},"idempotency_key":"k"}"#).unwrap();
        assert_eq!(p.target, Target::Everyone);
        assert_eq!(p.idempotency_key.as_deref(), Some("k"));
    }

    #[test]
    fn refusals() {
        let code = |b: &str| parse(b).unwrap_err().code;
        assert_eq!(code("{"), ErrorCode::BadRequest);
        assert_eq!(code(""), ErrorCode::BadRequest);
        assert_eq!(code("[]"), ErrorCode::InvalidMessage);
        assert_eq!(code(r#"{"payload":{}}"#), ErrorCode::InvalidMessage);
        assert_eq!(code(r#"{"type":"t"}"#), ErrorCode::InvalidMessage);
        assert_eq!(
            code(r#"{"type":"t","payload":1}"#),
            ErrorCode::InvalidMessage
        );
        assert_eq!(
            code(r#"{"type":"t","payload":{},"room":"r","user":"u"}"#),
            ErrorCode::InvalidMessage
        );
        assert_eq!(
            code(r#"{"type":"t","payload":{},"room":"bad room"}"#),
            ErrorCode::InvalidMessage
        );
        assert_eq!(
            code(r#"{"type":"t","payload":{},"room":5}"#),
            ErrorCode::InvalidMessage
        );
        assert_eq!(
            code(r#"{"type":"welcome","payload":{}}"#),
            ErrorCode::ReservedType
        );
        assert_eq!(
            code(r#"{"type":"","payload":{}}"#),
            ErrorCode::InvalidMessage
        );
    }
}
