//! The `allowed_hosts` setting (PROTOCOL.md section 11): which hosts named
//! by a request's `Host` header the hub answers, and the one normal form in
//! which the list and every request's host are compared.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

/// Longest host name, in bytes (RFC 1035, without the trailing dot).
const MAX_HOST_NAME_LEN: usize = 253;
/// Longest label of a host name, in bytes.
const MAX_LABEL_LEN: usize = 63;

/// Which hosts, as named in a request's `Host` header, the hub answers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AllowedHosts {
    /// `localhost`, names ending in `.localhost`, IP address literals (IPv6
    /// in brackets), and the host name `bind` was given as.
    #[default]
    Local,
    /// Any host (`*`).
    Any,
    /// Exactly these hosts, each in the form [`normalize_host`] gives.
    List(Vec<String>),
}

impl AllowedHosts {
    /// Whether `host`, already in the form [`normalize_host`] gives (no
    /// port), is allowed; `bind_name` is the name `bind` was given as, if
    /// it was a name rather than an address.
    pub fn allows(&self, host: &str, bind_name: Option<&str>) -> bool {
        match self {
            Self::Any => true,
            Self::List(list) => list.iter().any(|h| h == host),
            Self::Local => {
                host == "localhost"
                    || host.ends_with(".localhost")
                    || is_ip_literal(host)
                    || bind_name == Some(host)
            }
        }
    }
}

/// Whether `host` (normalised) is an IPv4 address or a bracketed IPv6 one.
fn is_ip_literal(host: &str) -> bool {
    host.starts_with('[') || host.parse::<Ipv4Addr>().is_ok()
}

/// A host (no port) in lower case, with IP addresses in their canonical
/// text (IPv6 in brackets; a bare IPv6 address is accepted too) and one
/// trailing dot removed from a name; `None` if `text` is neither an IP
/// address nor a DNS-style name (labels of letters, digits, `-` and `_`).
pub fn normalize_host(text: &str) -> Option<String> {
    let text = text.trim();
    if let Some(inner) = text.strip_prefix('[') {
        let ip: Ipv6Addr = inner.strip_suffix(']')?.parse().ok()?;
        return Some(format!("[{ip}]"));
    }
    if let Ok(ip) = text.parse::<Ipv6Addr>() {
        return Some(format!("[{ip}]"));
    }
    if let Ok(ip) = text.parse::<Ipv4Addr>() {
        return Some(ip.to_string());
    }
    let name = text.strip_suffix('.').unwrap_or(text).to_ascii_lowercase();
    let labels_ok = name.split('.').all(|label| {
        (1..=MAX_LABEL_LEN).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
    });
    (labels_ok && name.len() <= MAX_HOST_NAME_LEN).then_some(name)
}

/// Parses the items of `allowed_hosts`: `*`, or host names and IP
/// addresses without ports.
pub(crate) fn parse_hosts(items: &[String]) -> Result<AllowedHosts, String> {
    let Some(items) = super::value::list_or_star(items, "host")? else {
        return Ok(AllowedHosts::Any);
    };
    let mut list: Vec<String> = Vec::with_capacity(items.len());
    for item in items {
        let host = normalize_host(item).ok_or_else(|| {
            format!(
                "`{item}` is not a host name or IP address (list hosts without a port, like hub.example or 10.0.0.5)"
            )
        })?;
        if !list.contains(&host) {
            list.push(host);
        }
    }
    Ok(AllowedHosts::List(list))
}

/// The host name in a `bind` value such as `hub.lan:8000`, normalised;
/// `None` when the value is an address (its host is an IP literal, which
/// the default allows anyway).
pub(crate) fn bind_name(text: &str) -> Option<String> {
    if text.parse::<SocketAddr>().is_ok() {
        return None;
    }
    let (host, _port) = text.trim().rsplit_once(':')?;
    normalize_host(host).filter(|h| !is_ip_literal(h))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(items: &[&str]) -> Result<AllowedHosts, String> {
        parse_hosts(&items.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn hosts_normalise_case_ip_forms_and_a_trailing_dot() {
        let cases = [
            ("LocalHost", Some("localhost")),
            ("hub.example.", Some("hub.example")),
            ("127.0.0.1", Some("127.0.0.1")),
            ("[::1]", Some("[::1]")),
            ("[0:0:0:0:0:0:0:1]", Some("[::1]")),
            ("::1", Some("[::1]")),
            ("[::FFFF:127.0.0.1]", Some("[::ffff:127.0.0.1]")),
            ("my_box-2.lan", Some("my_box-2.lan")),
            ("", None),
            (".", None),
            ("a..b", None),
            (".localhost", None),
            ("hub.example:8000", None),
            ("[::1", None),
            ("[not-v6]", None),
            ("evil.example/path", None),
            ("user@evil.example", None),
            ("ev il", None),
            ("caf\u{e9}.example", None),
        ];
        for (text, expected) in cases {
            assert_eq!(normalize_host(text).as_deref(), expected, "{text:?}");
        }
        assert_eq!(normalize_host(&"a".repeat(64)), None, "label too long");
        let long = vec!["a".repeat(60); 5].join(".");
        assert_eq!(normalize_host(&long), None, "name too long");
    }

    #[test]
    fn the_default_allows_localhost_ip_literals_and_the_bind_name() {
        let d = AllowedHosts::Local;
        for ok in [
            "localhost",
            "foo.localhost",
            "a.b.localhost",
            "127.0.0.1",
            "10.1.2.3",
            "[::1]",
            "[::ffff:127.0.0.1]",
            "[2001:db8::1]",
        ] {
            assert!(d.allows(ok, None), "{ok}");
        }
        for bad in [
            "evil.example",
            "localhost.evil.example",
            "127.0.0.1.nip.io",
            "notlocalhost",
            "xlocalhost",
            "127.1",
        ] {
            assert!(!d.allows(bad, None), "{bad}");
        }
        assert!(d.allows("hub.lan", Some("hub.lan")));
        assert!(!d.allows("other.lan", Some("hub.lan")));
    }

    #[test]
    fn lists_replace_the_default_and_star_allows_any() {
        let l = list(&["Hub.Example", " 10.0.0.5 ", "::1", "hub.example"]).unwrap();
        assert_eq!(
            l,
            AllowedHosts::List(vec![
                "hub.example".into(),
                "10.0.0.5".into(),
                "[::1]".into()
            ])
        );
        assert!(l.allows("hub.example", None));
        assert!(l.allows("[::1]", None));
        assert!(
            !l.allows("localhost", None),
            "the list replaces the default"
        );
        assert!(!l.allows("127.0.0.1", None));
        assert_eq!(list(&["a.example", "*"]), Ok(AllowedHosts::Any));
        assert!(AllowedHosts::Any.allows("anything.example", None));
        for bad in [&[][..], &[" ", ""], &["hub.example:8000"], &["https://x"]] {
            assert!(list(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bind_names_are_kept_and_addresses_are_not() {
        assert_eq!(bind_name("hub.lan:8000").as_deref(), Some("hub.lan"));
        assert_eq!(bind_name("HUB.lan:0").as_deref(), Some("hub.lan"));
        assert_eq!(bind_name("127.0.0.1:8000"), None);
        assert_eq!(bind_name("[::]:8000"), None);
        assert_eq!(bind_name("nonsense"), None);
    }
}
