//! Fuzzes JWT verification: any token string gives claims or
//! `invalid_token` / `token_expired`, never a panic. A first byte that is
//! odd signs the rest (header JSON, a newline, claims JSON) with the
//! target's secret first, so the fuzzer reaches the claim checks a forged
//! signature would stop: accepted claims never carry `crit`, an `exp` past
//! the year 9999 or an `nbf` after now.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use wshub::auth::MAX_NUMERIC_DATE;
use wshub::fuzzing::{sign_token, verify_token};
use wshub::protocol::{ErrorCode, Timestamp};

const SECRET: &[u8] = b"fuzz-secret";
/// A fixed clock, so that every run judges a token alike: 2027-01-15.
const NOW: f64 = 1_800_000_000.0;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let signed = mode & 1 == 1;
    let (token, parts) = if signed {
        let (header, claims) = match rest.iter().position(|&b| b == b'\n') {
            Some(at) => (&rest[..at], &rest[at + 1..]),
            None => (rest, &b""[..]),
        };
        (sign_token(header, claims, SECRET), Some((header, claims)))
    } else {
        (String::from_utf8_lossy(rest).into_owned(), None)
    };
    match verify_token(&token, SECRET, NOW) {
        Ok(claims) => {
            assert!(!claims.sub.is_empty());
            assert!(claims.exp > NOW && claims.exp <= MAX_NUMERIC_DATE as f64);
            // `refreshed.expires_at` stays a four-digit-year timestamp.
            let shown = Timestamp::from_unix_secs(claims.exp_secs()).to_string();
            assert_eq!(shown.len(), "9999-12-31T23:59:59.000Z".len(), "{shown}");
            if let Some((header, body)) = parts {
                let header: Value = serde_json::from_slice(header).expect("verified header");
                assert!(header.get("crit").is_none());
                let body: Value = serde_json::from_slice(body).expect("verified claims");
                if let Some(nbf) = body.get("nbf") {
                    let nbf = nbf.as_f64().expect("a verified nbf is a number");
                    assert!((0.0..=NOW).contains(&nbf), "nbf {nbf}");
                }
            }
        }
        Err(e) => {
            assert!(matches!(
                e.code,
                ErrorCode::InvalidToken | ErrorCode::TokenExpired
            ));
            assert!(!e.message.is_empty());
        }
    }
});
