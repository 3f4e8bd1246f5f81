//! What counts as a loopback peer (PROTOCOL.md section 11): the one answer
//! every access rule and warning asks for.

use std::net::IpAddr;

/// Whether `ip` is loopback: 127.0.0.0/8, `::1`, or an IPv4-mapped
/// 127.0.0.0/8 address (`::ffff:127.0.0.1`), which is how an IPv4 peer of
/// a dual-stack `[::]` listener appears.
pub fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_covers_v4_v6_and_mapped_forms() {
        for ip in [
            "127.0.0.1",
            "127.255.0.9",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:127.1.2.3",
        ] {
            assert!(is_loopback(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "10.0.0.1",
            "0.0.0.0",
            "::",
            "::ffff:10.0.0.1",
            "::ffff:0.0.0.0",
            // IPv4-compatible (deprecated), not mapped: not loopback.
            "::127.0.0.1",
            "fe80::1",
            "2001:db8::1",
        ] {
            assert!(!is_loopback(ip.parse().unwrap()), "{ip}");
        }
    }
}
