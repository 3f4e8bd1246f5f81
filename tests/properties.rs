//! Property tests for the parsers that take untrusted bytes: the
//! client-message decoder, the frame decoder, the request-head parser, the
//! room-name check and the JWT verifier. Arbitrary input never panics and
//! always gives a value or a protocol error; well-formed input always
//! decodes to what was meant, and nothing may follow it.

use proptest::prelude::*;
use serde_json::{Value, json};
use wshub::auth::{MAX_NUMERIC_DATE, sign, unix_now, verify};
use wshub::fuzzing::{Encoding, FrameDecoder, decode, is_valid_room, parse_head};
use wshub::protocol::{ClientAction, ErrorCode};
use wshub::testing::client_frame_masked as client_frame;

const DECODE_CODES: [ErrorCode; 3] = [
    ErrorCode::InvalidJson,
    ErrorCode::InvalidMessage,
    ErrorCode::UnknownType,
];

fn room() -> impl Strategy<Value = String> + Clone {
    "[A-Za-z0-9_.:-]{1,128}"
}

const SECRET: &[u8] = b"property-secret";

/// A JSON value for `exp` or `nbf`: in range, out of it either way,
/// fractional, enormous, or not a number at all.
fn numeric_date() -> impl Strategy<Value = Value> {
    let now = unix_now();
    prop_oneof![
        (-600.0..600.0f64).prop_map(move |d| json!(now + d)),
        (0..=MAX_NUMERIC_DATE).prop_map(|s| json!(s)),
        (MAX_NUMERIC_DATE..=u64::MAX).prop_map(|s| json!(s)),
        any::<i64>().prop_map(|s| json!(s)),
        any::<f64>().prop_map(|s| json!(s)),
        Just(json!(1e300)),
        Just(json!(MAX_NUMERIC_DATE as f64 + 0.5)),
        "[ -~]{0,12}".prop_map(|s| json!(s)),
        Just(Value::Null),
        Just(json!([1])),
    ]
}

fn message() -> impl Strategy<Value = Value> {
    let rooms = prop::collection::vec(room(), 0..5);
    prop_oneof![
        Just(json!({"type": "ping"})),
        rooms
            .clone()
            .prop_map(|r| json!({"type": "subscribe", "rooms": r})),
        (rooms.clone(), room(), 0u64..1_000_000).prop_map(|(mut r, s, seq)| {
            r.push(s.clone());
            json!({"type": "subscribe", "rooms": r, "since": {s: seq}, "epoch": "e"})
        }),
        rooms.prop_map(|r| json!({"type": "unsubscribe", "rooms": r})),
        (room(), "[a-z_]{1,20}", any::<i64>()).prop_map(|(r, e, n)| {
            json!({"type": "publish", "room": r, "event": e, "payload": {"n": n}})
        }),
        room().prop_map(|r| json!({"type": "presence", "room": r})),
        "[A-Za-z0-9._-]{0,64}".prop_map(|t| json!({"type": "refresh", "token": t})),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic_the_frame_decoder(bytes in prop::collection::vec(any::<u8>(), 0..1024), cut in any::<usize>()) {
        let mut decoder = FrameDecoder::new(512);
        let cut = cut % (bytes.len() + 1);
        let mut pending = bytes[..cut].to_vec();
        for step in 0..2 {
            match decoder.decode(&pending) {
                Ok((used, _)) => {
                    prop_assert!(used <= pending.len());
                    pending.drain(..used);
                }
                Err(code) => {
                    prop_assert!([1002, 1007, 1009].contains(&code));
                    break;
                }
            }
            if step == 0 {
                pending.extend_from_slice(&bytes[cut..]);
            }
        }
    }

    #[test]
    fn fragmented_masked_messages_decode_whatever_the_reads(
        messages in prop::collection::vec(("[ -~]{0,300}", 1usize..4, any::<[u8; 4]>()), 1..6),
        reads in prop::collection::vec(1usize..64, 1..50),
    ) {
        let mut wire = Vec::new();
        for (text, pieces, mask) in &messages {
            let bytes = text.as_bytes();
            let size = bytes.len().div_ceil(*pieces).max(1);
            let chunks: Vec<&[u8]> = if bytes.is_empty() { vec![&[][..]] } else { bytes.chunks(size).collect() };
            for (i, chunk) in chunks.iter().enumerate() {
                let opcode = if i == 0 { 0x1 } else { 0x0 };
                let fin = if i + 1 == chunks.len() { 0x80 } else { 0 };
                wire.extend(client_frame(fin | opcode, chunk, *mask));
                if i == 0 {
                    wire.extend(client_frame(0x89, b"ping", *mask)); // a control frame in between
                }
            }
        }
        let mut decoder = FrameDecoder::new(1 << 16);
        let mut pending = Vec::new();
        let mut got = Vec::new();
        let mut at = 0;
        for read in reads.iter().cycle() {
            if at >= wire.len() {
                break;
            }
            let end = (at + read).min(wire.len());
            pending.extend_from_slice(&wire[at..end]);
            at = end;
            let (used, data) = decoder.decode(&pending).map_err(|c| TestCaseError::fail(format!("close {c}")))?;
            pending.drain(..used);
            got.extend(data);
        }
        prop_assert!(pending.is_empty());
        let want: Vec<Vec<u8>> = messages.iter().map(|(t, _, _)| t.as_bytes().to_vec()).collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoder(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        for encoding in [Encoding::Json, Encoding::MsgPack] {
            if let Err(e) = decode(&bytes, encoding) {
                prop_assert!(DECODE_CODES.contains(&e.error.code), "{:?}", e.error);
                prop_assert!(!e.error.message.is_empty());
            }
        }
    }

    #[test]
    fn arbitrary_json_values_never_panic_the_decoder(text in "\\{(\"[a-z_]{1,8}\":(\"[a-z ]{0,8}\"|[0-9]{1,4}|null|\\[\\]|\\{\\}|true),?){0,6}\\}") {
        if let Err(e) = decode(text.as_bytes(), Encoding::Json) {
            prop_assert!(DECODE_CODES.contains(&e.error.code), "{:?}", e.error);
        }
    }

    #[test]
    fn well_formed_messages_decode_in_both_encodings(mut msg in message(), reference in "[a-z0-9]{1,12}") {
        msg["ref"] = json!(reference);
        let json_bytes = msg.to_string().into_bytes();
        let msgpack_bytes = rmp_serde::to_vec_named(&msg).unwrap();
        for (bytes, encoding) in [(json_bytes, Encoding::Json), (msgpack_bytes, Encoding::MsgPack)] {
            let decoded = decode(&bytes, encoding).map_err(|e| TestCaseError::fail(format!("{:?}", e.error)))?;
            prop_assert_eq!(decoded.reference.as_deref(), Some(reference.as_str()));
            let kind = msg["type"].as_str().unwrap();
            let matches = match (&decoded.request, kind) {
                (ClientAction::Ping, "ping") | (ClientAction::Unsubscribe { .. }, "unsubscribe") => true,
                (ClientAction::Subscribe(s), "subscribe") => s.rooms.len() <= msg["rooms"].as_array().unwrap().len(),
                (ClientAction::Publish { room, .. }, "publish") => room == msg["room"].as_str().unwrap(),
                (ClientAction::Presence { room }, "presence") => room == msg["room"].as_str().unwrap(),
                (ClientAction::Refresh { token }, "refresh") => token == msg["token"].as_str().unwrap(),
                _ => false,
            };
            prop_assert!(matches, "{:?} from {}", decoded.request, msg);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_head_parser(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let _ = parse_head(&bytes);
    }

    #[test]
    fn well_formed_heads_parse_and_their_prefixes_ask_for_more(
        method in "GET|POST|PUT|DELETE|OPTIONS",
        path in "/[a-z0-9/_.-]{0,40}",
        query in "[a-z0-9=&%,]{0,40}",
        headers in prop::collection::vec(("[A-Za-z][A-Za-z0-9-]{0,20}", "[ -~]{0,40}"), 0..10),
        body in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut raw = format!("{method} {path}?{query} HTTP/1.1\r\n");
        for (name, value) in &headers {
            raw.push_str(&format!("{name}: {}\r\n", value.trim()));
        }
        raw.push_str("\r\n");
        let head_len = raw.len();
        let mut bytes = raw.into_bytes();
        bytes.extend_from_slice(&body);
        let (request, len) = parse_head(&bytes).unwrap().unwrap();
        prop_assert_eq!(len, head_len);
        prop_assert_eq!(&request.method, &method);
        prop_assert_eq!(&request.path, &path);
        prop_assert_eq!(&request.query, &query);
        prop_assert_eq!(request.headers.len(), headers.len());
        for cut in 0..head_len {
            prop_assert_eq!(parse_head(&bytes[..cut]), Ok(None), "prefix of {} bytes", cut);
        }
    }

    #[test]
    fn room_names_match_the_reference_rule(name in "\\PC{0,140}") {
        let expected = (1..=128).contains(&name.len())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || "_.:-".contains(c));
        prop_assert_eq!(is_valid_room(&name), expected);
    }

    #[test]
    fn valid_room_names_are_accepted(name in room()) {
        prop_assert!(is_valid_room(&name));
    }

    #[test]
    fn arbitrary_tokens_never_panic_the_verifier(
        token in prop_oneof![
            "\\PC{0,200}",
            "[A-Za-z0-9_=-]{0,60}\\.[A-Za-z0-9_=-]{0,60}\\.[A-Za-z0-9_=-]{0,60}",
        ],
        now in any::<f64>(),
    ) {
        if let Err(e) = verify(&token, SECRET, now) {
            prop_assert!(["invalid_token", "token_expired"].contains(&e.code.as_str()), "{:?}", e);
            prop_assert!(!e.message.is_empty());
        }
    }

    #[test]
    fn signed_tokens_pass_only_with_dates_up_to_9999_and_no_crit(
        exp in numeric_date(),
        nbf in prop::option::of(numeric_date()),
        crit in prop::option::of(prop_oneof![Just(json!(["exp"])), Just(json!([])), Just(Value::Null)]),
        sub in "[a-z]{0,8}",
    ) {
        let mut header = json!({"alg": "HS256", "typ": "JWT"});
        if let Some(crit) = &crit {
            header["crit"] = crit.clone();
        }
        let mut claims = json!({"sub": sub, "exp": exp});
        if let Some(nbf) = &nbf {
            claims["nbf"] = nbf.clone();
        }
        let token = sign(header.to_string().as_bytes(), claims.to_string().as_bytes(), SECRET);
        let now = unix_now();
        match verify(&token, SECRET, now) {
            Ok(verified) => {
                prop_assert!(crit.is_none());
                prop_assert!(!sub.is_empty());
                prop_assert!(verified.exp > now && verified.exp <= MAX_NUMERIC_DATE as f64, "{}", exp);
                prop_assert!(nbf.as_ref().is_none_or(|n| n.as_f64().is_some_and(|n| (0.0..=now).contains(&n))), "{:?}", nbf);
            }
            Err(e) => {
                let in_range = |v: &Value| v.as_f64().is_some_and(|s| (0.0..=MAX_NUMERIC_DATE as f64).contains(&s));
                let expired_only = crit.is_none()
                    && !sub.is_empty()
                    && in_range(&exp)
                    && nbf.as_ref().is_none_or(|n| in_range(n) && n.as_f64() <= Some(now));
                let want = if expired_only { "token_expired" } else { "invalid_token" };
                prop_assert_eq!(e.code.as_str(), want, "{}", e.message);
            }
        }
    }

    #[test]
    fn msgpack_messages_with_trailing_bytes_are_invalid_json(
        msg in message(),
        tail in prop::collection::vec(any::<u8>(), 1..32),
    ) {
        let mut bytes = rmp_serde::to_vec_named(&msg).unwrap();
        prop_assert!(decode(&bytes, Encoding::MsgPack).is_ok());
        bytes.extend_from_slice(&tail);
        let e = decode(&bytes, Encoding::MsgPack).unwrap_err();
        prop_assert_eq!(e.error.code, ErrorCode::InvalidJson, "{}", e.error.message);
    }

    #[test]
    fn json_messages_with_trailing_text_are_invalid_json(
        msg in message(),
        space in "[ \t\r\n]{0,3}",
        tail in "[!-~][ -~]{0,15}",
    ) {
        let text = format!("{msg}{space}");
        prop_assert!(decode(text.as_bytes(), Encoding::Json).is_ok());
        let e = decode(format!("{text}{tail}").as_bytes(), Encoding::Json).unwrap_err();
        prop_assert_eq!(e.error.code, ErrorCode::InvalidJson, "{}", e.error.message);
    }
}
