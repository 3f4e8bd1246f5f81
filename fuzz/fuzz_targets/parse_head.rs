//! Fuzzes the request-head parser: any bytes give a request, a request for
//! more bytes, or an error, never a panic; a parsed head never claims more
//! bytes than it was given. With `--features section11`, an accepted head
//! also keeps the section 11 rules on `Host` and `Content-Length`.
#![no_main]

#[cfg(feature = "section11")]
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
        #[cfg(feature = "section11")]
        section11::assert_head_rules(&request.headers);
    }
});
