//! Who may do what: HS256 JWT verification and minting, room patterns from
//! the `rooms` and `publish` claims, and the constant-time admin-key check.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::protocol::{ErrorCode, ProtocolError};

type HmacSha256 = Hmac<Sha256>;

/// base64url that accepts tokens with or without `=` padding.
const B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The claims wshub reads from a token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    /// The user ID.
    pub sub: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: f64,
    /// Room patterns the user may subscribe to; `None` means all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rooms: Option<Vec<String>>,
    /// Room patterns the user may publish to; `None` means none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish: Option<Vec<String>>,
    /// May subscribe and publish anywhere and use admin routes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub admin: bool,
}

impl Claims {
    /// Claims for `sub` that expire `ttl_s` seconds from now, or at the end
    /// of the year 9999 ([`MAX_NUMERIC_DATE`]) if that is sooner.
    pub fn new(sub: impl Into<String>, ttl_s: u64) -> Self {
        Self {
            sub: sub.into(),
            exp: (unix_now() as u64)
                .saturating_add(ttl_s)
                .min(MAX_NUMERIC_DATE) as f64,
            rooms: None,
            publish: None,
            admin: false,
        }
    }

    /// Whether these claims let their holder subscribe to (or ask presence of) `room`.
    pub fn may_subscribe(&self, room: &str) -> bool {
        self.admin || self.rooms.as_deref().is_none_or(|p| matches_any(p, room))
    }

    /// Whether these claims let their holder publish to `room`.
    pub fn may_publish(&self, room: &str) -> bool {
        self.admin
            || self
                .publish
                .as_deref()
                .is_some_and(|p| matches_any(p, room))
    }

    /// Expiry as whole Unix seconds, rounded down.
    pub fn exp_secs(&self) -> u64 {
        self.exp.max(0.0) as u64
    }
}

/// Whether `room` matches one of `patterns` (a trailing `*` is a prefix wildcard).
pub fn matches_any(patterns: &[String], room: &str) -> bool {
    patterns.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => room.starts_with(prefix),
        None => p == room,
    })
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The latest `exp` or `nbf` accepted, in Unix seconds: the last second of
/// the year 9999 (`9999-12-31T23:59:59Z`), the last an RFC 3339 timestamp
/// can show (PROTOCOL.md section 11).
pub const MAX_NUMERIC_DATE: u64 = 253_402_300_799;

/// Verifies an HS256 `token` with `secret` at time `now` (Unix seconds).
///
/// Refuses as `invalid_token`: every other `alg`, a `crit` header (wshub
/// understands no critical extension), a bad signature, a malformed token or
/// claims, an `exp` or `nbf` that is not a number of seconds from 0 to
/// [`MAX_NUMERIC_DATE`], and an `nbf` after `now` (not valid yet; there is
/// no clock leeway). An `exp` at or before `now` is `token_expired`.
/// Fractional seconds are allowed in `exp` and `nbf`, as RFC 7519 allows.
pub fn verify(token: &str, secret: &[u8], now: f64) -> Result<Claims, ProtocolError> {
    let invalid = |why: &str| ProtocolError::new(ErrorCode::InvalidToken, why.to_string());
    let mut parts = token.trim().split('.');
    let (Some(header_b64), Some(claims_b64), Some(sig_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid("a JWT has three dot-separated parts"));
    };
    let header: Value = B64
        .decode(header_b64)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| invalid("the JWT header is not base64url JSON"))?;
    if header.get("alg").and_then(Value::as_str) != Some("HS256") {
        return Err(invalid("only HS256 tokens are accepted"));
    }
    if header.get("crit").is_some() {
        return Err(invalid(
            "the JWT header has `crit`, and wshub supports no critical extension: mint the token without it",
        ));
    }
    let signature = B64
        .decode(sig_b64)
        .map_err(|_| invalid("the JWT signature is not base64url"))?;
    let mut mac = HmacSha256::new_from_slice(secret).map_err(|_| invalid("unusable secret"))?;
    mac.update(header_b64.as_bytes());
    mac.update(b".");
    mac.update(claims_b64.as_bytes());
    mac.verify_slice(&signature)
        .map_err(|_| invalid("the JWT signature does not match"))?;

    let claims: Value = B64
        .decode(claims_b64)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| invalid("the JWT claims are not base64url JSON"))?;
    if claims
        .get("sub")
        .and_then(Value::as_str)
        .is_none_or(|s| s.is_empty())
    {
        return Err(invalid("the `sub` claim is missing or not a string"));
    }
    if numeric_date(&claims, "exp")?.is_none() {
        return Err(invalid(
            "the `exp` claim is missing: mint the token with an expiry",
        ));
    }
    if let Some(nbf) = numeric_date(&claims, "nbf")?
        && nbf > now
    {
        return Err(invalid(&format!(
            "the token is not valid yet: its `nbf` is {:.0} s from now (no clock leeway); use it from then on, or mint it without `nbf`",
            (nbf - now).ceil()
        )));
    }
    let claims: Claims = serde_json::from_value(claims)
        .map_err(|_| invalid("the `rooms`, `publish` or `admin` claim has the wrong type"))?;
    if claims.exp <= now {
        return Err(ProtocolError::new(
            ErrorCode::TokenExpired,
            "the token has expired",
        ));
    }
    Ok(claims)
}

/// The NumericDate claim `name` of `claims`, if present: a number of
/// seconds from 0 to [`MAX_NUMERIC_DATE`], or `invalid_token`.
fn numeric_date(claims: &Value, name: &str) -> Result<Option<f64>, ProtocolError> {
    let Some(value) = claims.get(name) else {
        return Ok(None);
    };
    // serde_json numbers are always finite; the range check also turns away
    // negatives and values no whole-second count can represent.
    match value.as_f64() {
        Some(secs) if (0.0..=MAX_NUMERIC_DATE as f64).contains(&secs) => Ok(Some(secs)),
        _ => Err(ProtocolError::new(
            ErrorCode::InvalidToken,
            format!(
                "the `{name}` claim must be a number of Unix seconds from 0 to {MAX_NUMERIC_DATE} (the end of the year 9999)"
            ),
        )),
    }
}

/// Mints an HS256 token for `claims` signed with `secret`.
pub fn mint(claims: &Claims, secret: &[u8]) -> String {
    let body = serde_json::to_vec(claims).expect("claims serialise");
    sign(br#"{"alg":"HS256","typ":"JWT"}"#, &body, secret)
}

/// Signs `header` and `claims` (the JSON bytes, taken as they are) with
/// HS256 and `secret`: for tests and tools that need tokens [`mint`] would
/// not make, such as a `crit` header or an out-of-range `exp`.
pub fn sign(header: &[u8], claims: &[u8], secret: &[u8]) -> String {
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(signing_input.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signing_input}.{signature}")
}

/// Whether `given` equals `key`, in time that does not depend on where they differ.
pub fn key_matches(given: &str, key: &str) -> bool {
    given.as_bytes().ct_eq(key.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"test-secret";

    fn forge(header: &str, claims: &str, secret: &[u8]) -> String {
        sign(header.as_bytes(), claims.as_bytes(), secret)
    }

    #[test]
    fn minted_tokens_verify() {
        let mut claims = Claims::new("alice", 60);
        claims.rooms = Some(vec!["project:*".into()]);
        let token = mint(&claims, SECRET);
        assert_eq!(verify(&token, SECRET, unix_now()).unwrap(), claims);
    }

    #[test]
    fn refusals_have_their_codes() {
        let now = unix_now();
        let good = mint(&Claims::new("bob", 60), SECRET);
        let code = |t: &str| verify(t, SECRET, now).unwrap_err().code;

        assert_eq!(
            code(&mint(&Claims::new("bob", 60), b"other")),
            ErrorCode::InvalidToken
        );
        let expired = Claims {
            exp: now - 1.0,
            ..Claims::new("bob", 0)
        };
        assert_eq!(code(&mint(&expired, SECRET)), ErrorCode::TokenExpired);
        // Expired and badly signed: the signature is checked first.
        assert_eq!(code(&mint(&expired, b"other")), ErrorCode::InvalidToken);

        let exp = now as u64 + 60;
        let none = forge(
            r#"{"alg":"none"}"#,
            &format!(r#"{{"sub":"x","exp":{exp}}}"#),
            SECRET,
        );
        assert_eq!(code(&none), ErrorCode::InvalidToken);
        let unsigned = format!("{}.", none.rsplit_once('.').unwrap().0);
        assert_eq!(code(&unsigned), ErrorCode::InvalidToken);
        let hs512 = forge(
            r#"{"alg":"HS512"}"#,
            &format!(r#"{{"sub":"x","exp":{exp}}}"#),
            SECRET,
        );
        assert_eq!(code(&hs512), ErrorCode::InvalidToken);
        let no_sub = forge(r#"{"alg":"HS256"}"#, &format!(r#"{{"exp":{exp}}}"#), SECRET);
        assert_eq!(code(&no_sub), ErrorCode::InvalidToken);
        let no_exp = forge(r#"{"alg":"HS256"}"#, r#"{"sub":"x"}"#, SECRET);
        assert_eq!(code(&no_exp), ErrorCode::InvalidToken);
        let bad_rooms = forge(
            r#"{"alg":"HS256"}"#,
            &format!(r#"{{"sub":"x","exp":{exp},"rooms":"a"}}"#),
            SECRET,
        );
        assert_eq!(code(&bad_rooms), ErrorCode::InvalidToken);

        // A tampered payload keeps the old signature.
        let (head, rest) = good.split_once('.').unwrap();
        let sig = rest.split_once('.').unwrap().1;
        let admin = URL_SAFE_NO_PAD.encode(format!(r#"{{"sub":"bob","exp":{exp},"admin":true}}"#));
        assert_eq!(
            code(&format!("{head}.{admin}.{sig}")),
            ErrorCode::InvalidToken
        );

        for junk in ["", "a.b", "a.b.c.d", "!!.??.##", "e30.e30.e30"] {
            assert_eq!(code(junk), ErrorCode::InvalidToken, "{junk}");
        }
    }

    #[test]
    fn crit_headers_are_invalid_whatever_their_value() {
        let exp = unix_now() as u64 + 60;
        let claims = format!(r#"{{"sub":"x","exp":{exp}}}"#);
        for crit in [r#"["exp"]"#, "[]", "null", r#""b64""#, "{}"] {
            let token = forge(
                &format!(r#"{{"alg":"HS256","crit":{crit}}}"#),
                &claims,
                SECRET,
            );
            let e = verify(&token, SECRET, unix_now()).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidToken, "crit {crit}");
            assert!(e.message.contains("`crit`"), "{}", e.message);
        }
        let plain = forge(r#"{"alg":"HS256","typ":"JWT"}"#, &claims, SECRET);
        assert!(verify(&plain, SECRET, unix_now()).is_ok());
    }

    #[test]
    fn dates_past_the_year_9999_or_before_1970_are_invalid() {
        let now = unix_now();
        let token = |claims: &str| forge(r#"{"alg":"HS256"}"#, claims, SECRET);
        let max = MAX_NUMERIC_DATE;
        for exp in [
            "1e300",
            &(max + 1).to_string(),
            "253402300799.5",
            "18446744073709551615",
            "-1",
            "-1e300",
            r#""2030-01-01""#,
            "null",
            "true",
            "[1]",
        ] {
            let e = verify(
                &token(&format!(r#"{{"sub":"x","exp":{exp}}}"#)),
                SECRET,
                now,
            )
            .unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidToken, "exp {exp}");
            assert!(e.message.contains("`exp`"), "{}", e.message);
            let e = verify(
                &token(&format!(r#"{{"sub":"x","exp":{max},"nbf":{exp}}}"#)),
                SECRET,
                now,
            )
            .unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidToken, "nbf {exp}");
            assert!(e.message.contains("`nbf`"), "{}", e.message);
        }
        // Beyond f64: serde_json refuses the number, so the claims do not parse.
        let e = verify(&token(r#"{"sub":"x","exp":1e400}"#), SECRET, now).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidToken);

        // The last second of 9999 is fine, and shows as a four-digit year.
        let claims = verify(
            &token(&format!(r#"{{"sub":"x","exp":{max}}}"#)),
            SECRET,
            now,
        )
        .unwrap();
        assert_eq!(
            crate::protocol::Timestamp::from_unix_secs(claims.exp_secs()).to_string(),
            "9999-12-31T23:59:59.000Z"
        );
        // Minting caps the expiry there, so what it mints verifies.
        let forever = Claims::new("x", u64::MAX);
        assert_eq!(forever.exp, max as f64);
        assert!(verify(&mint(&forever, SECRET), SECRET, now).is_ok());
        // Fractional seconds are NumericDates too (RFC 7519, section 2).
        let exp = now + 30.5;
        assert_eq!(
            verify(
                &token(&format!(r#"{{"sub":"x","exp":{exp}}}"#)),
                SECRET,
                now
            )
            .unwrap()
            .exp,
            exp
        );
        // An `exp` of 0 is a date, long past: expired, not malformed.
        let e = verify(&token(r#"{"sub":"x","exp":0}"#), SECRET, now).unwrap_err();
        assert_eq!(e.code, ErrorCode::TokenExpired);
    }

    #[test]
    fn nbf_in_the_future_is_not_valid_yet() {
        let now = unix_now();
        let exp = now as u64 + 600;
        let with_nbf = |nbf: f64| {
            forge(
                r#"{"alg":"HS256"}"#,
                &format!(r#"{{"sub":"x","exp":{exp},"nbf":{nbf}}}"#),
                SECRET,
            )
        };
        let e = verify(&with_nbf(now + 60.0), SECRET, now).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidToken);
        assert!(e.message.contains("not valid yet"), "{}", e.message);
        assert!(e.message.contains("60 s"), "{}", e.message);
        // No leeway either way: valid from the very second of `nbf`.
        assert!(verify(&with_nbf(now), SECRET, now).is_ok());
        assert!(verify(&with_nbf(now - 60.0), SECRET, now).is_ok());
        assert!(verify(&with_nbf(0.0), SECRET, now).is_ok());
        // A not-yet-valid token that has also expired is not valid yet.
        let both = forge(
            r#"{"alg":"HS256"}"#,
            &format!(r#"{{"sub":"x","exp":1,"nbf":{}}}"#, now + 60.0),
            SECRET,
        );
        assert_eq!(
            verify(&both, SECRET, now).unwrap_err().code,
            ErrorCode::InvalidToken
        );
    }

    #[test]
    fn signed_raw_tokens_match_minted_ones() {
        let claims = Claims::new("z", 60);
        let body = serde_json::to_vec(&claims).unwrap();
        assert_eq!(
            sign(br#"{"alg":"HS256","typ":"JWT"}"#, &body, SECRET),
            mint(&claims, SECRET)
        );
    }

    #[test]
    fn patterns_allow_prefixes() {
        let claims = Claims {
            rooms: Some(vec!["project:*".into(), "lobby".into()]),
            publish: Some(vec!["chat:*".into()]),
            ..Claims::new("u", 60)
        };
        assert!(claims.may_subscribe("project:1"));
        assert!(claims.may_subscribe("lobby"));
        assert!(!claims.may_subscribe("lobby2"));
        assert!(!claims.may_subscribe("other"));
        assert!(claims.may_publish("chat:x"));
        assert!(!claims.may_publish("project:1"));
        let open = Claims::new("u", 60);
        assert!(open.may_subscribe("anything"));
        assert!(!open.may_publish("anything"));
        let admin = Claims {
            admin: true,
            ..Claims::new("root", 60)
        };
        assert!(admin.may_publish("anything"));
    }

    #[test]
    fn keys_compare_exactly() {
        assert!(key_matches("k3y", "k3y"));
        assert!(!key_matches("k3y", "k3y "));
        assert!(!key_matches("", "k3y"));
    }
}
