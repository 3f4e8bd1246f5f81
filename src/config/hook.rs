//! Where a hook is sent (PROTOCOL.md section 10): an `http://` URL, or the
//! word `stdio` for a companion that answers on stdin.

use std::fmt;

/// A hook's destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookUrl {
    /// `http://host[:port]/path`: the hub POSTs the body there.
    Http(HttpTarget),
    /// `stdio`: a JSON line on stdout, answered by a `hook_reply` line on
    /// stdin (only with `--stdin-events`).
    Stdio,
}

/// An `http://` hook URL, split for the client.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HttpTarget {
    /// The host, as written (a name, an IPv4 address, or `[v6]`).
    pub host: String,
    /// The port (80 when the URL gives none).
    pub port: u16,
    /// The path and query, starting with `/`.
    pub path: String,
}

impl HttpTarget {
    /// `host[:port]` as the `Host` header and the pool's key show it.
    pub fn authority(&self) -> String {
        if self.port == 80 {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for HookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Stdio => f.write_str("stdio"),
            Self::Http(t) => write!(f, "http://{}{}", t.authority(), t.path),
        }
    }
}

impl HookUrl {
    /// Parses `stdio` or `http://host[:port][/path]`; `https://` and
    /// anything with user info or a fragment is refused.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text == "stdio" {
            return Ok(Self::Stdio);
        }
        let Some(rest) = text.strip_prefix("http://") else {
            return Err(format!(
                "`{text}` is not an http:// URL or `stdio` (https is not supported: put the app beside the hub)"
            ));
        };
        if rest.contains('#') || rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("`{text}` is not a plain http:// URL"));
        }
        let (authority, path) = match rest.find(['/', '?']) {
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, "/"),
        };
        let path = if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_string()
        };
        if authority.contains('@') {
            return Err(format!(
                "`{text}`: user info is not supported in a hook URL"
            ));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let Some(end) = v6.find(']') else {
                return Err(format!("`{text}` has an unclosed `[`"));
            };
            let host = format!("[{}]", &v6[..end]);
            match &v6[end + 1..] {
                "" => (host, None),
                p => match p.strip_prefix(':') {
                    Some(p) => (host, Some(p)),
                    None => return Err(format!("`{text}` has junk after `]`")),
                },
            }
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (authority.to_string(), None),
            }
        };
        if host.is_empty() || host == "[]" {
            return Err(format!("`{text}` has no host"));
        }
        let port = match port {
            None => 80,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("`{text}` has a bad port"))?,
        };
        Ok(Self::Http(HttpTarget {
            host: host.to_ascii_lowercase(),
            port,
            path,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_http_urls_and_stdio() {
        assert_eq!(HookUrl::parse("stdio"), Ok(HookUrl::Stdio));
        let HookUrl::Http(t) = HookUrl::parse("http://127.0.0.1:9000/hooks/rpc?x=1").unwrap()
        else {
            panic!("http")
        };
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("127.0.0.1", 9000, "/hooks/rpc?x=1")
        );
        let HookUrl::Http(t) = HookUrl::parse("http://App.local").unwrap() else {
            panic!("http")
        };
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("app.local", 80, "/")
        );
        let HookUrl::Http(t) = HookUrl::parse("http://[::1]:8080/h").unwrap() else {
            panic!("http")
        };
        assert_eq!((t.host.as_str(), t.port), ("[::1]", 8080));
        for bad in [
            "https://x/",
            "ftp://x",
            "http://",
            "http://:80/",
            "http://x:0/",
            "http://u@x/",
            "http://x:99999/",
        ] {
            assert!(HookUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
