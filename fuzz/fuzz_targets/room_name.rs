//! Fuzzes the room-name check against its reference rule.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wshub::fuzzing::is_valid_room;

fuzz_target!(|data: &[u8]| {
    if let Ok(name) = std::str::from_utf8(data) {
        let expected = (1..=128).contains(&name.len())
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b));
        assert_eq!(is_valid_room(name), expected);
    }
});
