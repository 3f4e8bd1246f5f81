//! Fuzzes the request-head parser: any bytes give a request, a request for
//! more bytes, or an error, never a panic; a parsed head never claims more
//! bytes than it was given.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wshub::fuzzing::parse_head;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((request, len))) = parse_head(data) {
        assert!(len <= data.len());
        assert!(!request.method.is_empty());
        let _ = request.query_param("rooms");
        let _ = request.keep_alive();
    }
});
