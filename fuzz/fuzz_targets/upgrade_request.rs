//! Fuzzes a whole `/ws` request as the hub reads it, without a hub: the
//! head parser, then the upgrade check (Host, method, headers, key,
//! version, subprotocol, `?rooms=`, Origin, token). Any bytes give "more, please",
//! a head error, an accepted upgrade whose every part is well-formed, or a
//! refusal with one of section 2's statuses and codes; never a panic.
//!
//! The first byte picks the hub: odd is anonymous, even has `jwt_secret`
//! `fuzz-secret` (the seeds carry tokens signed with it, valid to 9999).
//!
//! The section 11 rules hold too: `Content-Length` digits only and equal
//! when repeated in any parsed head, one allowed `Host` in any accepted one.
#![no_main]

mod section11;

use libfuzzer_sys::fuzz_target;
use wshub::Config;
use wshub::fuzzing::{check_upgrade, is_valid_room, parse_head};
use wshub::protocol::ErrorCode;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, bytes)) = data.split_first() else {
        return;
    };
    let mut config = Config::default();
    if mode & 1 == 0 {
        config.jwt_secret = Some("fuzz-secret".into());
    }
    let Ok(Some((request, len))) = parse_head(bytes) else {
        return;
    };
    assert!(len <= bytes.len());
    section11::assert_content_length_rules(&request.headers);
    match check_upgrade(&request, &config) {
        Ok(accepted) => {
            section11::assert_one_host(&request.headers);
            assert_eq!(request.method, "GET");
            assert_eq!(request.minor_version, 1);
            assert_eq!(accepted.accept_key.len(), 28, "base64 of a SHA-1");
            for (i, room) in accepted.rooms.iter().enumerate() {
                assert!(is_valid_room(room), "{room}");
                assert!(!accepted.rooms[..i].contains(room), "duplicate {room}");
            }
            assert_eq!(accepted.claims.is_some(), config.jwt_secret.is_some());
            if let Some(claims) = &accepted.claims {
                assert!(accepted.rooms.iter().all(|r| claims.may_subscribe(r)));
            }
        }
        Err(refusal) => {
            use ErrorCode::*;
            let allowed: &[ErrorCode] = match refusal.status {
                400 => &[BadRequest, UnsupportedProtocol],
                426 => &[BadRequest],
                403 => &[
                    Unauthenticated,
                    InvalidToken,
                    TokenExpired,
                    OriginNotAllowed,
                    HostNotAllowed,
                    Forbidden,
                ],
                status => panic!("status {status} from the upgrade check"),
            };
            assert!(allowed.contains(&refusal.error.code), "{refusal:?}");
            assert!(!refusal.error.message.is_empty());
        }
    }
});
