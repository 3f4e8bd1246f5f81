//! Fuzzes a whole `/sse` request as the hub reads it, without a hub: the
//! head parser, then the stream check (Host, method, `?rooms=`, Origin,
//! token, then the resume cursor from `Last-Event-ID` or `?since=`). Any
//! bytes give "more, please", a head error, an accepted stream whose every
//! part is well-formed, or a refusal with one of section 12's statuses and
//! codes; never a panic.
//!
//! The first byte picks the hub: odd is anonymous, even has `jwt_secret`
//! `fuzz-secret`.
#![no_main]

mod section11;

use libfuzzer_sys::fuzz_target;
use wshub::Config;
use wshub::fuzzing::{Cursor, check_stream, is_valid_room, parse_head};
use wshub::protocol::ErrorCode;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, bytes)) = data.split_first() else {
        return;
    };
    let mut config = Config::default();
    if mode & 1 == 0 {
        config.jwt_secret = Some("fuzz-secret".into());
    }
    let Ok(Some((request, _))) = parse_head(bytes) else {
        return;
    };
    section11::assert_content_length_rules(&request.headers);
    match check_stream(&request, &config) {
        Ok(accepted) => {
            section11::assert_one_host(&request.headers);
            assert_eq!(request.method, "GET");
            for (i, room) in accepted.rooms.iter().enumerate() {
                assert!(is_valid_room(room), "{room}");
                assert!(!accepted.rooms[..i].contains(room), "duplicate {room}");
            }
            assert_eq!(accepted.claims.is_some(), config.jwt_secret.is_some());
            if let Some(cursor) = &accepted.since {
                // What an `id:` line would carry parses back to itself.
                let text = cursor.to_string();
                assert_eq!(Cursor::parse(&text).as_ref(), Ok(cursor), "{text}");
                assert!(!text.contains(['\n', '\r', '\0']));
            }
        }
        Err(refusal) => {
            use ErrorCode::*;
            let allowed: &[ErrorCode] = match refusal.status {
                400 => &[BadRequest],
                405 => &[MethodNotAllowed],
                403 => &[
                    Unauthenticated,
                    InvalidToken,
                    TokenExpired,
                    OriginNotAllowed,
                    HostNotAllowed,
                    Forbidden,
                ],
                status => panic!("status {status} from the stream check"),
            };
            assert!(allowed.contains(&refusal.error.code), "{refusal:?}");
            assert!(!refusal.error.message.is_empty());
        }
    }
});
