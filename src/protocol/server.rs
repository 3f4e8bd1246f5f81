//! Encoding hub messages (section 3): one [`Envelope`] shape for every
//! message, serialised once per encoding into a cheaply clonable buffer.

use bytes::Bytes;
use serde::Serialize;

/// The two subprotocols of section 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Encoding {
    /// `wshub.json`: JSON in text frames.
    #[default]
    Json,
    /// `wshub.msgpack`: MessagePack maps in binary frames.
    MsgPack,
}

impl Encoding {
    /// The `Sec-WebSocket-Protocol` token.
    pub fn protocol(self) -> &'static str {
        match self {
            Self::Json => "wshub.json",
            Self::MsgPack => "wshub.msgpack",
        }
    }

    /// The encoding named by a `Sec-WebSocket-Protocol` token.
    pub fn from_protocol(token: &str) -> Option<Self> {
        match token {
            "wshub.json" => Some(Self::Json),
            "wshub.msgpack" => Some(Self::MsgPack),
            _ => None,
        }
    }
}

/// Every hub message: the four common fields, the event fields and `ref`.
#[derive(Debug, Serialize)]
pub struct Envelope<'a, P: Serialize> {
    /// The message or event type.
    #[serde(rename = "type")]
    pub kind: &'a str,
    /// The type's payload.
    pub payload: P,
    /// Correlation ID, `null` for heartbeats.
    pub correlation_id: Option<&'a str>,
    /// When the hub made the message.
    pub timestamp: &'a str,
    /// Event ID (events only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a str>,
    /// Event room, `Some(None)` for an event to everyone or a user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub room: Option<Option<&'a str>>,
    /// The room's seq (room events only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// The `ref` of the client message this replies to.
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<&'a str>,
}

impl<'a, P: Serialize> Envelope<'a, P> {
    /// A non-event message: a reply, a heartbeat or an error.
    pub fn message(
        kind: &'a str,
        payload: P,
        correlation_id: Option<&'a str>,
        timestamp: &'a str,
        reference: Option<&'a str>,
    ) -> Self {
        Self {
            kind,
            payload,
            correlation_id,
            timestamp,
            id: None,
            room: None,
            seq: None,
            reference,
        }
    }
}

/// A message ready for the wire: one buffer shared by every recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Encoded {
    /// A text frame's payload (`wshub.json`), valid UTF-8.
    Text(Bytes),
    /// A binary frame's payload (`wshub.msgpack`).
    Binary(Bytes),
}

impl Encoded {
    /// Payload length in bytes.
    pub fn len(&self) -> usize {
        match self {
            Self::Text(b) | Self::Binary(b) => b.len(),
        }
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Serialises `message` once in `encoding`.
pub fn encode<T: Serialize + ?Sized>(message: &T, encoding: Encoding) -> Encoded {
    // Our envelopes hold only string-keyed maps and JSON values, which both
    // serialisers accept; failing here would be a bug in this module.
    match encoding {
        Encoding::Json => Encoded::Text(
            serde_json::to_vec(message)
                .expect("hub messages serialise to JSON")
                .into(),
        ),
        Encoding::MsgPack => Encoded::Binary(
            rmp_serde::to_vec_named(message)
                .expect("hub messages serialise to MessagePack")
                .into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn messages_have_the_four_common_fields_and_ref() {
        let env = Envelope::message("pong", json!({}), Some("c"), "t", Some("r"));
        let Encoded::Text(bytes) = encode(&env, Encoding::Json) else {
            panic!()
        };
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            v,
            json!({"type":"pong","payload":{},"correlation_id":"c","timestamp":"t","ref":"r"})
        );
    }

    #[test]
    fn events_carry_room_null_and_omit_seq_without_a_room() {
        let env = Envelope {
            id: Some("i"),
            room: Some(None),
            ..Envelope::message("alert", json!({"x":1}), Some("c"), "t", None)
        };
        let Encoded::Text(bytes) = encode(&env, Encoding::Json) else {
            panic!()
        };
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["room"], Value::Null);
        assert!(v.get("seq").is_none());
        assert!(v.get("ref").is_none());
    }

    #[test]
    fn msgpack_uses_the_same_field_names() {
        let env = Envelope::message("heartbeat", json!({}), None, "t", None);
        let Encoded::Binary(bytes) = encode(&env, Encoding::MsgPack) else {
            panic!()
        };
        let v: Value = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(
            v,
            json!({"type":"heartbeat","payload":{},"correlation_id":null,"timestamp":"t"})
        );
    }

    #[test]
    fn protocol_tokens_round_trip() {
        for e in [Encoding::Json, Encoding::MsgPack] {
            assert_eq!(Encoding::from_protocol(e.protocol()), Some(e));
        }
        assert_eq!(Encoding::from_protocol("chat"), None);
    }
}
