//! Decoding what a client sends (section 4) into a typed [`ClientMessage`],
//! or into the exact protocol error its sender should get back.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::{
    ErrorCode, MAX_EVENT_TYPE_LEN, ProtocolError, is_valid_correlation_id, is_valid_room,
    server::Encoding,
};

/// One decoded client message.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientMessage {
    /// The `ref` to echo in the reply.
    pub reference: Option<String>,
    /// The `correlation_id` to propagate, if the client gave a valid one.
    pub correlation_id: Option<String>,
    /// What the client asks for.
    pub request: ClientAction,
}

/// The requests of section 4.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientAction {
    /// `ping`: answered with `pong`.
    Ping,
    /// `subscribe`, with optional resume positions.
    Subscribe(Subscribe),
    /// `unsubscribe` from these rooms.
    Unsubscribe {
        /// Rooms to leave.
        rooms: Vec<String>,
    },
    /// `publish` an event to a room's other subscribers.
    Publish {
        /// Target room.
        room: String,
        /// The event's type.
        event: String,
        /// The event's payload.
        payload: Map<String, Value>,
    },
    /// `presence`: who is in a room.
    Presence {
        /// The room asked about.
        room: String,
    },
    /// `refresh` the connection's token.
    Refresh {
        /// The new JWT.
        token: String,
    },
    /// `rpc`: a request the app answers through `rpc_hook` (section 10).
    Rpc {
        /// The method, 1 to 128 characters.
        method: String,
        /// Its parameters, any JSON value (null when absent).
        params: Value,
    },
}

/// A `subscribe` request.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Subscribe {
    /// Rooms to join, without duplicates, in the order given.
    pub rooms: Vec<String>,
    /// Last seq seen per room, for history resume.
    pub since: Option<BTreeMap<String, u64>>,
    /// The hub epoch those positions belong to.
    pub epoch: Option<String>,
}

/// A message that could not be decoded, with what could be salvaged for the
/// error reply.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeError {
    /// The message's `ref`, if it had a readable one.
    pub reference: Option<String>,
    /// The message's `correlation_id`, if it had a valid one.
    pub correlation_id: Option<String>,
    /// The error to send back.
    pub error: ProtocolError,
}

/// Decodes one frame's payload in `encoding` (an SSE stream sends nothing,
/// so [`Encoding::Sse`] reads as JSON).
pub fn decode(bytes: &[u8], encoding: Encoding) -> Result<ClientMessage, DecodeError> {
    let value: Value = match encoding {
        Encoding::Json | Encoding::Sse => {
            serde_json::from_slice(bytes).map_err(|e| bare(not_json(&e)))?
        }
        Encoding::MsgPack => msgpack_value(bytes).map_err(bare)?,
    };
    let Value::Object(mut obj) = value else {
        let what = match encoding {
            Encoding::Json | Encoding::Sse => "not a JSON object",
            Encoding::MsgPack => "not a MessagePack map",
        };
        return Err(bare(ProtocolError::new(ErrorCode::InvalidJson, what)));
    };

    let reference = match obj.remove("ref") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => {
            return Err(bare(ProtocolError::invalid_field(
                "ref",
                "must be a string",
            )));
        }
    };
    let correlation_id = match obj.remove("correlation_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s).filter(|s| is_valid_correlation_id(s)),
        Some(_) => {
            return Err(DecodeError {
                reference,
                correlation_id: None,
                error: ProtocolError::invalid_field("correlation_id", "must be a string"),
            });
        }
    };
    match request(&mut obj) {
        Ok(request) => Ok(ClientMessage {
            reference,
            correlation_id,
            request,
        }),
        Err(error) => Err(DecodeError {
            reference,
            correlation_id,
            error,
        }),
    }
}

/// Nesting allowed in a MessagePack message, as serde_json allows in JSON.
const MAX_MSGPACK_DEPTH: usize = 128;

/// The one MessagePack value that fills `bytes`: a frame holds one map "with
/// nothing after it" (section 4), so trailing bytes are `invalid_json`.
fn msgpack_value(bytes: &[u8]) -> Result<Value, ProtocolError> {
    use serde::Deserialize;
    let mut rest = bytes;
    let mut de = rmp_serde::Deserializer::new(&mut rest);
    de.set_max_depth(MAX_MSGPACK_DEPTH);
    let value = Value::deserialize(&mut de).map_err(|_| {
        ProtocolError::new(
            ErrorCode::InvalidJson,
            "not a MessagePack map of JSON values (string keys; no bin or ext values: send bytes as a string)",
        )
    })?;
    drop(de);
    if !rest.is_empty() {
        return Err(ProtocolError::new(
            ErrorCode::InvalidJson,
            format!(
                "{} bytes follow the MessagePack value: send one map per binary frame, with nothing after it",
                rest.len()
            ),
        ));
    }
    Ok(value)
}

fn bare(error: ProtocolError) -> DecodeError {
    DecodeError {
        reference: None,
        correlation_id: None,
        error,
    }
}

fn not_json(e: &serde_json::Error) -> ProtocolError {
    ProtocolError::new(ErrorCode::InvalidJson, format!("not a JSON object: {e}"))
}

fn request(obj: &mut Map<String, Value>) -> Result<ClientAction, ProtocolError> {
    let kind = match obj.remove("type") {
        Some(Value::String(s)) => s,
        None | Some(Value::Null) => return Err(ProtocolError::invalid_field("type", "is missing")),
        Some(_) => return Err(ProtocolError::invalid_field("type", "must be a string")),
    };
    Ok(match kind.as_str() {
        "ping" => ClientAction::Ping,
        "subscribe" => ClientAction::Subscribe(subscribe(obj)?),
        "unsubscribe" => ClientAction::Unsubscribe {
            rooms: rooms(obj, "rooms")?,
        },
        "publish" => ClientAction::Publish {
            room: room(obj, "room")?,
            event: event_type(obj, "event")?,
            payload: payload(obj, "payload")?,
        },
        "presence" => ClientAction::Presence {
            room: room(obj, "room")?,
        },
        "refresh" => ClientAction::Refresh {
            token: string(obj, "token")?,
        },
        "rpc" => ClientAction::Rpc {
            method: method(obj)?,
            params: obj.remove("params").unwrap_or(Value::Null),
        },
        _ => {
            let mut shown: String = kind.chars().take(64).collect();
            if shown.len() < kind.len() {
                shown.push('…');
            }
            return Err(ProtocolError::new(
                ErrorCode::UnknownType,
                format!("unknown message type `{shown}`"),
            ));
        }
    })
}

fn subscribe(obj: &mut Map<String, Value>) -> Result<Subscribe, ProtocolError> {
    let rooms = rooms(obj, "rooms")?;
    let since = match obj.remove("since") {
        None | Some(Value::Null) => None,
        Some(Value::Object(map)) => {
            let mut since = BTreeMap::new();
            for (room, seq) in map {
                if !is_valid_room(&room) {
                    return Err(ProtocolError::invalid_field(
                        "since",
                        "has a key that is not a valid room name",
                    ));
                }
                let Some(seq) = seq.as_u64() else {
                    return Err(ProtocolError::invalid_field(
                        &format!("since.{room}"),
                        "must be a non-negative integer",
                    ));
                };
                since.insert(room, seq);
            }
            Some(since)
        }
        Some(_) => {
            return Err(ProtocolError::invalid_field(
                "since",
                "must be an object of room to seq",
            ));
        }
    };
    let epoch = match obj.remove("epoch") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => return Err(ProtocolError::invalid_field("epoch", "must be a string")),
    };
    if since.is_some() && epoch.is_none() {
        return Err(ProtocolError::invalid_field(
            "epoch",
            "is required with `since`",
        ));
    }
    Ok(Subscribe {
        rooms,
        since,
        epoch,
    })
}

fn string(obj: &mut Map<String, Value>, field: &str) -> Result<String, ProtocolError> {
    match obj.remove(field) {
        Some(Value::String(s)) => Ok(s),
        None | Some(Value::Null) => Err(ProtocolError::invalid_field(field, "is missing")),
        Some(_) => Err(ProtocolError::invalid_field(field, "must be a string")),
    }
}

fn room(obj: &mut Map<String, Value>, field: &str) -> Result<String, ProtocolError> {
    let name = string(obj, field)?;
    check_room(field, &name)?;
    Ok(name)
}

/// `invalid_message` for a bad room name in `field`.
pub(crate) fn check_room(field: &str, name: &str) -> Result<(), ProtocolError> {
    if is_valid_room(name) {
        Ok(())
    } else {
        Err(ProtocolError::invalid_field(
            field,
            "must be a room name of 1 to 128 characters from A-Z a-z 0-9 _ . : -",
        ))
    }
}

fn rooms(obj: &mut Map<String, Value>, field: &str) -> Result<Vec<String>, ProtocolError> {
    let items = match obj.remove(field) {
        Some(Value::Array(items)) => items,
        None | Some(Value::Null) => return Err(ProtocolError::invalid_field(field, "is missing")),
        Some(_) => {
            return Err(ProtocolError::invalid_field(
                field,
                "must be an array of room names",
            ));
        }
    };
    let mut rooms: Vec<String> = Vec::with_capacity(items.len());
    // Duplicates are dropped in one pass, whatever the list's length.
    let mut seen = std::collections::HashSet::with_capacity(items.len());
    for item in items {
        let Value::String(name) = item else {
            return Err(ProtocolError::invalid_field(
                field,
                "must be an array of room names",
            ));
        };
        check_room(field, &name)?;
        if seen.insert(name.clone()) {
            rooms.push(name);
        }
    }
    Ok(rooms)
}

/// Longest `rpc` method, in characters.
pub const MAX_RPC_METHOD_LEN: usize = 128;

fn method(obj: &mut Map<String, Value>) -> Result<String, ProtocolError> {
    let method = string(obj, "method")?;
    if (1..=MAX_RPC_METHOD_LEN).contains(&method.chars().count()) {
        Ok(method)
    } else {
        Err(ProtocolError::invalid_field(
            "method",
            "must be 1 to 128 characters",
        ))
    }
}

fn event_type(obj: &mut Map<String, Value>, field: &str) -> Result<String, ProtocolError> {
    let kind = string(obj, field)?;
    check_event_type(field, &kind)?;
    Ok(kind)
}

/// `invalid_message` for an event type that is empty or too long.
pub(crate) fn check_event_type(field: &str, kind: &str) -> Result<(), ProtocolError> {
    if (1..=MAX_EVENT_TYPE_LEN).contains(&kind.chars().count()) {
        Ok(())
    } else {
        Err(ProtocolError::invalid_field(
            field,
            "must be 1 to 128 characters",
        ))
    }
}

fn payload(obj: &mut Map<String, Value>, field: &str) -> Result<Map<String, Value>, ProtocolError> {
    match obj.remove(field) {
        Some(Value::Object(map)) => Ok(map),
        None | Some(Value::Null) => Err(ProtocolError::invalid_field(field, "is missing")),
        Some(_) => Err(ProtocolError::invalid_field(field, "must be an object")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn json(v: Value) -> Result<ClientMessage, DecodeError> {
        decode(v.to_string().as_bytes(), Encoding::Json)
    }

    fn code(r: Result<ClientMessage, DecodeError>) -> (ErrorCode, String) {
        let e = r.unwrap_err();
        (e.error.code, e.error.message)
    }

    #[test]
    fn decodes_every_request() {
        let m = json(json!({"type":"ping","ref":"r1","correlation_id":"c1"})).unwrap();
        assert_eq!(m.request, ClientAction::Ping);
        assert_eq!(m.reference.as_deref(), Some("r1"));
        assert_eq!(m.correlation_id.as_deref(), Some("c1"));

        let m = json(json!({"type":"subscribe","rooms":["a","b","a"],"since":{"a":3},"epoch":"e"}))
            .unwrap();
        let ClientAction::Subscribe(s) = m.request else {
            panic!()
        };
        assert_eq!(s.rooms, ["a", "b"]);
        assert_eq!(s.since.unwrap()["a"], 3);
        assert_eq!(s.epoch.as_deref(), Some("e"));

        let m = json(json!({"type":"publish","room":"r","event":"t","payload":{"x":1}})).unwrap();
        assert!(matches!(m.request, ClientAction::Publish { ref room, .. } if room == "r"));
        assert!(matches!(
            json(json!({"type":"presence","room":"r"})).unwrap().request,
            ClientAction::Presence { .. }
        ));
        assert!(matches!(
            json(json!({"type":"refresh","token":"t"})).unwrap().request,
            ClientAction::Refresh { .. }
        ));
        assert_eq!(
            json(json!({"type":"rpc","method":"cart.add","params":[1,{"a":2}]}))
                .unwrap()
                .request,
            ClientAction::Rpc {
                method: "cart.add".into(),
                params: json!([1, {"a": 2}])
            }
        );
        assert_eq!(
            json(json!({"type":"rpc","method":"m".repeat(128)}))
                .unwrap()
                .request,
            ClientAction::Rpc {
                method: "m".repeat(128),
                params: Value::Null
            }
        );
        assert!(matches!(
            json(json!({"type":"unsubscribe","rooms":[]}))
                .unwrap()
                .request,
            ClientAction::Unsubscribe { .. }
        ));
    }

    #[test]
    fn not_an_object_is_invalid_json() {
        for bytes in [
            &b"nope"[..],
            b"[1,2]",
            b"\"s\"",
            b"",
            b"{",
            b"\xff\xfe",
            b"null",
        ] {
            let e = decode(bytes, Encoding::Json).unwrap_err();
            assert_eq!(e.error.code, ErrorCode::InvalidJson, "{bytes:?}");
        }
    }

    #[test]
    fn bad_fields_are_invalid_message_naming_the_field() {
        let cases = [
            (json!({}), "type"),
            (json!({"type": 5}), "type"),
            (json!({"type":"subscribe"}), "rooms"),
            (json!({"type":"subscribe","rooms":"a"}), "rooms"),
            (json!({"type":"subscribe","rooms":[1]}), "rooms"),
            (json!({"type":"subscribe","rooms":["bad room"]}), "rooms"),
            (
                json!({"type":"subscribe","rooms":["a"],"since":{"a":-1},"epoch":"e"}),
                "since.a",
            ),
            (
                json!({"type":"subscribe","rooms":["a"],"since":{"a":1}}),
                "epoch",
            ),
            (
                json!({"type":"subscribe","rooms":["a"],"since":[1],"epoch":"e"}),
                "since",
            ),
            (json!({"type":"publish","room":"r","event":"t"}), "payload"),
            (
                json!({"type":"publish","room":"r","event":"t","payload":[]}),
                "payload",
            ),
            (json!({"type":"publish","room":"r","payload":{}}), "event"),
            (
                json!({"type":"publish","room":"","event":"t","payload":{}}),
                "room",
            ),
            (
                json!({"type":"publish","room":"r","event":"","payload":{}}),
                "event",
            ),
            (json!({"type":"presence"}), "room"),
            (json!({"type":"refresh","token":1}), "token"),
            (json!({"type":"rpc"}), "method"),
            (json!({"type":"rpc","method":""}), "method"),
            (json!({"type":"rpc","method":"m".repeat(129)}), "method"),
            (json!({"type":"rpc","method":7}), "method"),
            (json!({"type":"ping","ref":1}), "ref"),
            (json!({"type":"ping","correlation_id":{}}), "correlation_id"),
        ];
        for (msg, field) in cases {
            let (code, message) = code(json(msg.clone()));
            assert_eq!(code, ErrorCode::InvalidMessage, "{msg}");
            assert!(message.contains(&format!("`{field}`")), "{msg}: {message}");
        }
    }

    #[test]
    fn unknown_types_are_named() {
        let (c, m) = code(json(json!({"type":"dance","ref":"x"})));
        assert_eq!(c, ErrorCode::UnknownType);
        assert!(m.contains("dance"));
        let e = json(json!({"type":"dance","ref":"x"})).unwrap_err();
        assert_eq!(e.reference.as_deref(), Some("x"));
    }

    #[test]
    fn invalid_correlation_ids_are_dropped() {
        let m = json(json!({"type":"ping","correlation_id":"has space"})).unwrap();
        assert_eq!(m.correlation_id, None);
    }

    #[test]
    fn msgpack_maps_decode_like_json() {
        let bytes = rmp_serde::to_vec_named(&json!({"type":"ping","ref":"m"})).unwrap();
        let m = decode(&bytes, Encoding::MsgPack).unwrap();
        assert_eq!(m.request, ClientAction::Ping);
        assert_eq!(m.reference.as_deref(), Some("m"));
        let bytes = rmp_serde::to_vec(&[1, 2]).unwrap();
        let e = decode(&bytes, Encoding::MsgPack).unwrap_err();
        assert_eq!(e.error.code, ErrorCode::InvalidJson);
        let e = decode(b"\xc1", Encoding::MsgPack).unwrap_err();
        assert_eq!(e.error.code, ErrorCode::InvalidJson);
        // {"p": bin 0x00}, as Python's msgpack packs bytes: a value JSON
        // cannot hold, and the message says so.
        let e = decode(b"\x81\xa1p\xc4\x01\x00", Encoding::MsgPack).unwrap_err();
        assert_eq!(e.error.code, ErrorCode::InvalidJson);
        assert!(e.error.message.contains("bin"), "{}", e.error.message);
    }

    #[test]
    fn msgpack_with_trailing_bytes_is_invalid_json() {
        let ping = rmp_serde::to_vec_named(&json!({"type":"ping"})).unwrap();
        assert!(decode(&ping, Encoding::MsgPack).is_ok());
        let two = [ping.clone(), ping.clone()].concat();
        for bytes in [
            [ping.as_slice(), b"\x00"].concat(),
            [ping.as_slice(), b"\xc0"].concat(), // a trailing nil
            [ping.as_slice(), b"\xc1"].concat(), // a byte that is never valid
            [ping.as_slice(), b" "].concat(),
            two,
        ] {
            let e = decode(&bytes, Encoding::MsgPack).unwrap_err();
            assert_eq!(e.error.code, ErrorCode::InvalidJson, "{bytes:?}");
            assert!(
                e.error.message.contains("nothing after it"),
                "{}",
                e.error.message
            );
        }
        // A truncated map is still an error, and a plain one.
        let e = decode(&ping[..ping.len() - 1], Encoding::MsgPack).unwrap_err();
        assert_eq!(e.error.code, ErrorCode::InvalidJson);
    }

    #[test]
    fn json_with_trailing_text_is_invalid_json_but_whitespace_is_fine() {
        for bytes in [
            &br#"{"type":"ping"}x"#[..],
            br#"{"type":"ping"}{"type":"ping"}"#,
            br#"{"type":"ping"} {"type":"ping"}"#,
            br#"{"type":"ping"},"#,
            b"{\"type\":\"ping\"}\0",
        ] {
            let e = decode(bytes, Encoding::Json).unwrap_err();
            assert_eq!(e.error.code, ErrorCode::InvalidJson, "{bytes:?}");
            assert!(e.error.message.contains("trailing"), "{}", e.error.message);
        }
        // JSON text may end in whitespace (RFC 8259, section 2).
        let m = decode(b"{\"type\":\"ping\"} \r\n\t", Encoding::Json).unwrap();
        assert_eq!(m.request, ClientAction::Ping);
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(decode(deep.as_bytes(), Encoding::Json).is_err());
        let deep = vec![0x91u8; 100_000];
        assert!(decode(&deep, Encoding::MsgPack).is_err());
    }
}
