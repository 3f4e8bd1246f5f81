//! Reading Redis's replies and the cluster's channel messages: the publish
//! script's answer, room messages, history entries, presence lists.

use super::*;

/// A user as the members hash keeps it.
pub(super) fn user_json(user: Option<&str>) -> String {
    serde_json::to_string(&user).unwrap_or_else(|_| "null".into())
}

/// A publish script's reply; `true` when Redis holds another epoch.
pub(super) fn read_sequenced(
    reply: Result<Value, EngineError>,
    room: bool,
) -> (Result<Sequenced, EngineError>, bool) {
    let value = match reply {
        Ok(value) => value,
        Err(e) => return (Err(e), false),
    };
    let Value::Array(items) = value else {
        return (Err(EngineError::new("unexpected publish reply")), false);
    };
    let kind = items.first().and_then(as_string).unwrap_or_default();
    match kind.as_str() {
        "ok" => {
            let seq = items.get(1).and_then(as_u64).unwrap_or(0);
            let recipients = items.get(2).and_then(as_u64).unwrap_or(0) as usize;
            let seq = room.then_some(seq);
            (Ok(Sequenced::New { seq, recipients }), false)
        }
        "repeat" => {
            let text = items.get(1).and_then(as_string).unwrap_or_default();
            let mut parts = text.splitn(4, '\n');
            let id = parts.next().unwrap_or_default().to_string();
            let seq = parts.next().and_then(|s| s.parse().ok());
            let recipients = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
            let correlation_id = parts.next().unwrap_or_default().to_string();
            let published = Published {
                id,
                seq,
                recipients,
                correlation_id,
            };
            (Ok(Sequenced::Repeat(published)), false)
        }
        _ => (
            Err(EngineError::new(
                "the cluster's epoch changed; the event was not published",
            )),
            true,
        ),
    }
}

/// The highest seq Redis can give (`HINCRBY` stops at `i64::MAX`): a
/// larger one, in a message or an entry, is not the cluster's and is
/// dropped, so that `seq + 1` holds everywhere the hub counts on.
pub(super) const MAX_SEQ: u64 = i64::MAX as u64;

/// A seq as Redis could have given it.
pub(super) fn valid_seq(seq: u64) -> Option<u64> {
    (seq <= MAX_SEQ).then_some(seq)
}

/// A room channel's message: seq, the publisher to skip, the JSON.
pub(super) fn parse_room_message(payload: &[u8]) -> Option<(u64, Option<String>, bytes::Bytes)> {
    let mut parts = payload.splitn(3, |&b| b == b'\n');
    let seq = valid_seq(std::str::from_utf8(parts.next()?).ok()?.parse().ok()?)?;
    let except = std::str::from_utf8(parts.next()?).ok()?;
    let json = parts.next()?;
    let except = (!except.is_empty()).then(|| except.to_string());
    Some((seq, except, bytes::Bytes::copy_from_slice(json)))
}

/// An XRANGE reply's entries as (seq, publisher, JSON), oldest first,
/// without those older than `history_ttl`.
pub(super) fn parse_entries(
    value: &Value,
    settings: &RedisSettings,
) -> Vec<(u64, Option<String>, bytes::Bytes)> {
    let Value::Array(entries) = value else {
        return Vec::new();
    };
    let cutoff = (!settings.history_ttl.is_zero())
        .then(|| unix_ms().saturating_sub(settings.history_ttl.as_millis() as u64));
    let mut out = Vec::with_capacity(entries.len());
    for entry in entries {
        let Value::Array(parts) = entry else { continue };
        let (Some(id), Some(Value::Array(fields))) =
            (parts.first().and_then(as_string), parts.get(1))
        else {
            continue;
        };
        let Some(seq) = id
            .split('-')
            .next()
            .and_then(|s| s.parse::<u64>().ok())
            .and_then(valid_seq)
        else {
            continue;
        };
        let mut json = None;
        let mut except = None;
        let mut at = 0;
        for pair in fields.chunks_exact(2) {
            match as_string(&pair[0]).as_deref() {
                Some("j") => {
                    if let Value::BulkString(bytes) = &pair[1] {
                        json = Some(bytes::Bytes::copy_from_slice(bytes));
                    }
                }
                Some("x") => except = as_string(&pair[1]).filter(|s| !s.is_empty()),
                Some("t") => at = as_u64(&pair[1]).unwrap_or(0),
                _ => {}
            }
        }
        if cutoff.is_some_and(|c| at < c) {
            continue;
        }
        if let Some(json) = json {
            out.push((seq, except, json));
        }
    }
    out
}

/// The presence script's reply as (connection, user), sorted.
pub(super) fn members_of(value: &Value) -> Vec<(String, Option<String>)> {
    let flat = as_strings(value);
    let mut members: Vec<(String, Option<String>)> = flat
        .chunks_exact(2)
        .map(|pair| {
            let user = serde_json::from_str::<Option<String>>(&pair[1])
                .ok()
                .flatten();
            (pair[0].clone(), user)
        })
        .collect();
    members.sort();
    members
}

pub(super) fn as_string(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        Value::Okay => Some("OK".into()),
        _ => None,
    }
}

pub(super) fn as_u64(value: &Value) -> Option<u64> {
    match value {
        Value::Int(i) => u64::try_from(*i).ok(),
        other => as_string(other)?.parse().ok(),
    }
}

pub(super) fn as_strings(value: &Value) -> Vec<String> {
    match value {
        Value::Array(items) => items.iter().filter_map(as_string).collect(),
        Value::Map(pairs) => pairs
            .iter()
            .flat_map(|(k, v)| [as_string(k), as_string(v)])
            .flatten()
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn room_messages_parse() {
        let (seq, except, json) = parse_room_message(b"12\nabc\n{\"a\":\"x\ny\"}").unwrap();
        assert_eq!(seq, 12);
        assert_eq!(except.as_deref(), Some("abc"));
        assert_eq!(&json[..], b"{\"a\":\"x\ny\"}");
        let (_, except, _) = parse_room_message(b"1\n\n{}").unwrap();
        assert_eq!(except, None);
        assert!(parse_room_message(b"x\n\n{}").is_none());
        assert!(parse_room_message(b"1").is_none());
        // Seqs Redis cannot give (beyond HINCRBY's range) are dropped.
        assert!(parse_room_message(b"18446744073709551615\n\n{}").is_none());
        assert!(parse_room_message(b"9223372036854775808\n\n{}").is_none());
        assert!(parse_room_message(b"9223372036854775807\n\n{}").is_some());
    }

    #[test]
    fn history_entries_beyond_redis_seqs_are_dropped() {
        let entry = |id: &str| {
            Value::Array(vec![
                Value::BulkString(id.as_bytes().to_vec()),
                Value::Array(vec![
                    Value::BulkString(b"j".to_vec()),
                    Value::BulkString(b"{}".to_vec()),
                ]),
            ])
        };
        let settings = RedisSettings {
            url: String::new(),
            prefix: "p".into(),
            node: "n".into(),
            history_size: 10,
            history_ttl: Duration::ZERO,
            heartbeat_timeout: Duration::from_secs(1),
            heartbeat_interval: Duration::from_secs(1),
        };
        let reply = Value::Array(vec![entry("3-0"), entry("18446744073709551615-0")]);
        let seqs: Vec<u64> = parse_entries(&reply, &settings)
            .into_iter()
            .map(|e| e.0)
            .collect();
        assert_eq!(seqs, vec![3]);
    }
}
