//! The head rules of PROTOCOL.md section 11 as an oracle, shared by the
//! targets that parse heads; compiled with `--features section11`.

/// A head the parser accepts has exactly one `Host`, and its
/// `Content-Length` values are digits only and, repeated, equal.
pub fn assert_head_rules(headers: &[(String, String)]) {
    let hosts = headers.iter().filter(|(n, _)| n == "host").count();
    assert_eq!(hosts, 1, "a head with {hosts} Host headers was accepted");
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
