//! Fuzzes the client-message decoder in both encodings: any bytes give a
//! message or one of the decoder's protocol errors, never a panic; and a
//! message that decodes stops decoding once anything follows it (a stray
//! byte after a MessagePack map, text after a JSON object).
#![no_main]

use libfuzzer_sys::fuzz_target;
use wshub::fuzzing::{Encoding, decode};
use wshub::protocol::ErrorCode;

fuzz_target!(|data: &[u8]| {
    for (encoding, trailer) in [(Encoding::Json, &b"x"[..]), (Encoding::MsgPack, b"\xc0")] {
        match decode(data, encoding) {
            Ok(_) => {
                let longer = [data, trailer].concat();
                let e = decode(&longer, encoding).expect_err("trailing bytes decode");
                assert_eq!(e.error.code, ErrorCode::InvalidJson);
            }
            Err(e) => assert!(matches!(
                e.error.code,
                ErrorCode::InvalidJson | ErrorCode::InvalidMessage | ErrorCode::UnknownType
            )),
        }
    }
});
