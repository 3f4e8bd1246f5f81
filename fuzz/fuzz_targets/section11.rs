#![allow(dead_code)] // each target uses its share of the rules
//! The head rules of PROTOCOL.md section 11 as an oracle, shared by the
//! targets that parse heads.

/// A head the parser accepts has `Content-Length` values that are digits
/// only and, repeated, equal (the parser refuses any other).
pub fn assert_content_length_rules(headers: &[(String, String)]) {
    let lengths: Vec<&str> = headers
        .iter()
        .filter(|(n, _)| n == "content-length")
        .map(|(_, v)| v.trim())
        .collect();
    for value in &lengths {
        assert!(
            !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()),
            "Content-Length {value:?} was accepted"
        );
    }
    // Equal as numbers: `05` and `5` are the same length.
    let number = |v: &str| v.trim_start_matches('0').to_string();
    assert!(
        lengths.windows(2).all(|w| number(w[0]) == number(w[1])),
        "unequal Content-Length {lengths:?} were accepted"
    );
}

/// A request the hub serves has exactly one `Host` (the route's or the
/// upgrade's check refuses any other).
pub fn assert_one_host(headers: &[(String, String)]) {
    let hosts = headers.iter().filter(|(n, _)| n == "host").count();
    assert_eq!(hosts, 1, "a request with {hosts} Host headers was served");
}
