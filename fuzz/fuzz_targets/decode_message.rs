//! Fuzzes the client-message decoder in both encodings: any bytes give a
//! message or one of the decoder's protocol errors, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wshub::fuzzing::{Encoding, decode};
use wshub::protocol::ErrorCode;

fuzz_target!(|data: &[u8]| {
    for encoding in [Encoding::Json, Encoding::MsgPack] {
        if let Err(e) = decode(data, encoding) {
            assert!(matches!(
                e.error.code,
                ErrorCode::InvalidJson | ErrorCode::InvalidMessage | ErrorCode::UnknownType
            ));
        }
    }
});
