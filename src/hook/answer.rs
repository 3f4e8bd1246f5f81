//! Reading a connect hook's answer (PROTOCOL.md section 10): the claims it
//! sets, the rooms it joins, when it expires. Pure, so it is unit-tested
//! and never panics on what an app sends.

use serde_json::{Map, Value};

use crate::auth::{Claims, MAX_NUMERIC_DATE};
use crate::protocol::is_valid_room;

/// What a connect answer decided.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectAnswer {
    /// The claims the connection gets (`None`: anonymous).
    pub claims: Option<Claims>,
    /// Rooms to join at once, valid names.
    pub subscribe: Vec<String>,
    /// When the connection is closed with 4001 (Unix seconds).
    pub expires_at: Option<f64>,
}

/// Merges `answer` with the JWT's `claims`: `user`, `rooms`, `publish` and
/// `admin` replace the JWT's where given and keep them (or section 2's
/// defaults) where absent. `Err` says what is wrong with the answer.
pub fn connect_answer(
    answer: &Map<String, Value>,
    claims: Option<Claims>,
) -> Result<ConnectAnswer, String> {
    let user = match answer.get("user") {
        None | Some(Value::Null) => None,
        Some(Value::String(u)) if !u.is_empty() => Some(u.clone()),
        Some(_) => return Err("`user` must be a non-empty string".into()),
    };
    let patterns = |field: &str| -> Result<Option<Option<Vec<String>>>, String> {
        match answer.get(field) {
            None => Ok(None),
            // An explicit null is the claim's absence: all rooms, or none.
            Some(Value::Null) => Ok(Some(None)),
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| i.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .map(|v| Some(Some(v)))
                .ok_or_else(|| format!("`{field}` must be an array of room patterns")),
            Some(_) => Err(format!("`{field}` must be an array of room patterns")),
        }
    };
    let rooms = patterns("rooms")?;
    let publish = patterns("publish")?;
    let admin = match answer.get("admin") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => return Err("`admin` must be a boolean".into()),
    };
    let subscribe = match answer.get("subscribe") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => {
            let mut rooms: Vec<String> = Vec::new();
            for item in items {
                match item.as_str() {
                    Some(r) if is_valid_room(r) => {
                        if !rooms.iter().any(|x| x == r) {
                            rooms.push(r.to_string());
                        }
                    }
                    _ => return Err("`subscribe` must be an array of room names".into()),
                }
            }
            rooms
        }
        Some(_) => return Err("`subscribe` must be an array of room names".into()),
    };
    let expires_at =
        match answer.get("expires_at") {
            None | Some(Value::Null) => None,
            Some(Value::String(t)) => Some(parse_timestamp(t).ok_or(
                "`expires_at` must be an RFC 3339 timestamp like 2026-11-21T22:45:15.123Z",
            )?),
            Some(_) => return Err("`expires_at` must be an RFC 3339 timestamp".into()),
        };

    let claims = if user.is_some() || rooms.is_some() || publish.is_some() || admin.is_some() {
        let mut merged = match (claims, user.clone()) {
            (Some(mut c), user) => {
                if let Some(user) = user {
                    c.sub = user;
                }
                c
            }
            (None, Some(user)) => Claims {
                sub: user,
                exp: MAX_NUMERIC_DATE as f64,
                rooms: None,
                publish: None,
                admin: false,
            },
            (None, None) => {
                return Err(
                    "`rooms`, `publish` or `admin` without a `user` (and no JWT) has no one to apply to"
                        .into(),
                );
            }
        };
        if let Some(rooms) = rooms {
            merged.rooms = rooms;
        }
        if let Some(publish) = publish {
            merged.publish = publish;
        }
        if let Some(admin) = admin {
            merged.admin = admin;
        }
        Some(merged)
    } else {
        claims
    };
    Ok(ConnectAnswer {
        claims,
        subscribe,
        expires_at,
    })
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)` into Unix seconds.
pub fn parse_timestamp(text: &str) -> Option<f64> {
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = text.get(r)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = &text[19..];
    let mut frac = 0.0;
    if let Some(after) = rest.strip_prefix('.') {
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        frac = format!("0.{}", &after[..digits]).parse().ok()?;
        rest = &after[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            if rest.len() != 6 || rest.as_bytes()[3] != b':' {
                return None;
            }
            let h: i64 = rest.get(1..3)?.parse().ok()?;
            let m: i64 = rest.get(4..6)?.parse().ok()?;
            sign * (h * 3600 + m * 60)
        }
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset;
    Some(secs as f64 + frac)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn answer(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn timestamps_parse() {
        assert_eq!(parse_timestamp("1970-01-01T00:00:00Z"), Some(0.0));
        assert_eq!(
            parse_timestamp("2026-11-21T22:45:15.5Z"),
            Some(1_795_301_115.5)
        );
        assert_eq!(
            parse_timestamp("2026-11-21T23:45:15+01:00"),
            Some(1_795_301_115.0)
        );
        for bad in [
            "",
            "2026-11-21",
            "2026-13-01T00:00:00Z",
            "2026-11-21T22:45:15",
            "x026-11-21T22:45:15Z",
            "2026-11-21T22:45:15.Z",
            "2026-11-21T22:45:15+0100",
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad}");
        }
    }

    #[test]
    fn answers_merge_with_the_jwt() {
        let jwt = Claims {
            rooms: Some(vec!["a*".into()]),
            publish: Some(vec!["p".into()]),
            ..Claims::new("jwt-user", 60)
        };
        let a = connect_answer(&answer(json!({"user": "app-user"})), Some(jwt.clone())).unwrap();
        let c = a.claims.unwrap();
        assert_eq!(c.sub, "app-user");
        assert_eq!(c.rooms, jwt.rooms);
        assert_eq!(c.exp, jwt.exp);
        let a = connect_answer(
            &answer(json!({"rooms": ["b"], "admin": true})),
            Some(jwt.clone()),
        )
        .unwrap();
        let c = a.claims.unwrap();
        assert_eq!(
            (c.sub.as_str(), c.rooms, c.admin),
            ("jwt-user", Some(vec!["b".into()]), true)
        );
        assert_eq!(c.publish, jwt.publish);

        // No JWT: a user gets section 2's defaults.
        let a = connect_answer(
            &answer(json!({"user": "u", "subscribe": ["x", "x", "y"]})),
            None,
        )
        .unwrap();
        let c = a.claims.unwrap();
        assert_eq!((c.rooms, c.publish, c.admin), (None, None, false));
        assert_eq!(a.subscribe, ["x", "y"]);
        // Nothing said: anonymous stays anonymous.
        assert_eq!(
            connect_answer(&answer(json!({})), None).unwrap().claims,
            None
        );
    }

    #[test]
    fn bad_answers_are_refused() {
        for bad in [
            json!({"user": 3}),
            json!({"user": ""}),
            json!({"rooms": "a"}),
            json!({"publish": [1]}),
            json!({"admin": "yes"}),
            json!({"subscribe": ["bad room"]}),
            json!({"expires_at": 12}),
            json!({"expires_at": "tomorrow"}),
            json!({"rooms": ["a"]}),
        ] {
            assert!(connect_answer(&answer(bad.clone()), None).is_err(), "{bad}");
        }
    }
}
