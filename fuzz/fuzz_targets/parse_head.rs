//! Fuzzes the request-head parser: any bytes give a request, a request for
//! more bytes, or an error, never a panic; a parsed head never claims more
//! bytes than it was given, and an accepted head keeps the section 11 rules
//! on `Content-Length` (`Host` is checked after the head, by the route or
//! the upgrade: see `upgrade_request`).
#![no_main]

mod section11;

use libfuzzer_sys::fuzz_target;
use wshub::fuzzing::parse_head;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((request, len))) = parse_head(data) {
        assert!(len <= data.len());
        assert!(!request.method.is_empty());
        let _ = request.query_param("rooms");
        let _ = request.keep_alive();
        let _ = request.header("host");
        let _ = request.header_tokens("content-length").count();
        section11::assert_content_length_rules(&request.headers);
    }
});
