//! The `Host` check of PROTOCOL.md section 11, made on every request before
//! its route or upgrade: exactly one `Host` header, naming an allowed host.

use super::request::Request;
use crate::config::{Config, normalize_host};
use crate::hub::Refusal;
use crate::protocol::ErrorCode;

/// Longest port accepted after the host, in digits.
const MAX_PORT_DIGITS: usize = 5;

/// Refuses a request without exactly one `Host` header (400 `bad_request`)
/// or whose host is not in `allowed_hosts` (403 `host_not_allowed`).
pub fn check(request: &Request, config: &Config) -> Result<(), Refusal> {
    let mut values = request
        .headers
        .iter()
        .filter(|(name, _)| name == "host")
        .map(|(_, value)| value.as_str());
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(Refusal::new(
            400,
            ErrorCode::BadRequest,
            "send exactly one Host header, like `Host: localhost:8000`",
        ));
    };
    let Some(host) = host_of(value) else {
        return Err(Refusal::new(
            400,
            ErrorCode::BadRequest,
            "the Host header is not a host[:port]; send one like `Host: localhost:8000`",
        ));
    };
    if config
        .allowed_hosts
        .allows(&host, config.bind_name.as_deref())
    {
        Ok(())
    } else {
        Err(Refusal::new(
            403,
            ErrorCode::HostNotAllowed,
            format!("this hub does not answer for host `{host}`; add it to allowed_hosts"),
        ))
    }
}

/// The host of a `Host` header value, without its port and in the form
/// [`normalize_host`] gives; `None` if the value is not `host[:port]`
/// (an IPv6 address must be in brackets).
pub fn host_of(value: &str) -> Option<String> {
    let value = value.trim();
    let (host, port) = if value.starts_with('[') {
        let end = value.find(']')? + 1;
        let rest = &value[end..];
        let port = if rest.is_empty() {
            ""
        } else {
            rest.strip_prefix(':')?
        };
        (&value[..end], port)
    } else {
        match value.split_once(':') {
            Some((host, port)) => (host, port),
            None => (value, ""),
        }
    };
    let port_ok = port.len() <= MAX_PORT_DIGITS && port.bytes().all(|b| b.is_ascii_digit());
    if !port_ok || host.is_empty() {
        return None;
    }
    normalize_host(host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AllowedHosts;

    fn request(hosts: &[&str]) -> Request {
        let mut raw = String::from("GET / HTTP/1.1\r\n");
        for host in hosts {
            raw.push_str(&format!("Host: {host}\r\n"));
        }
        raw.push_str("\r\n");
        super::super::request::parse_head(raw.as_bytes())
            .unwrap()
            .unwrap()
            .0
    }

    fn verdict(hosts: &[&str], config: &Config) -> Result<(), (u16, ErrorCode)> {
        check(&request(hosts), config).map_err(|r| (r.status, r.error.code))
    }

    #[test]
    fn host_values_lose_their_port() {
        let cases = [
            ("localhost", Some("localhost")),
            ("LOCALHOST:8000", Some("localhost")),
            ("127.0.0.1:80", Some("127.0.0.1")),
            ("[::1]", Some("[::1]")),
            ("[::1]:8000", Some("[::1]")),
            ("[::ffff:127.0.0.1]:1", Some("[::ffff:127.0.0.1]")),
            ("hub.example:", Some("hub.example")),
            ("::1", None),
            ("[::1]8000", None),
            ("[::1", None),
            ("hub.example:80:80", None),
            ("hub.example:http", None),
            ("hub.example:123456", None),
            (":8000", None),
            ("", None),
        ];
        for (value, expected) in cases {
            assert_eq!(host_of(value).as_deref(), expected, "{value:?}");
        }
    }

    #[test]
    fn exactly_one_allowed_host_passes() {
        let config = Config::default();
        assert_eq!(verdict(&["localhost:8000"], &config), Ok(()));
        assert_eq!(verdict(&["foo.localhost"], &config), Ok(()));
        assert_eq!(verdict(&["127.0.0.1:9"], &config), Ok(()));
        assert_eq!(verdict(&["[::1]"], &config), Ok(()));
        assert_eq!(verdict(&[], &config), Err((400, ErrorCode::BadRequest)));
        assert_eq!(
            verdict(&["localhost", "localhost"], &config),
            Err((400, ErrorCode::BadRequest))
        );
        assert_eq!(
            verdict(&["::1"], &config),
            Err((400, ErrorCode::BadRequest))
        );
        assert_eq!(
            verdict(&["evil.example:8000"], &config),
            Err((403, ErrorCode::HostNotAllowed))
        );
    }

    #[test]
    fn the_bind_name_and_the_list_count() {
        let mut config = Config {
            bind_name: Some("hub.lan".into()),
            ..Config::default()
        };
        assert_eq!(verdict(&["hub.lan:8000"], &config), Ok(()));
        config.allowed_hosts = AllowedHosts::List(vec!["hub.example".into()]);
        assert_eq!(verdict(&["HUB.example:443"], &config), Ok(()));
        assert_eq!(
            verdict(&["localhost"], &config),
            Err((403, ErrorCode::HostNotAllowed))
        );
        config.allowed_hosts = AllowedHosts::Any;
        assert_eq!(verdict(&["evil.example"], &config), Ok(()));
        assert_eq!(
            verdict(&["a", "b"], &config),
            Err((400, ErrorCode::BadRequest)),
            "`*` still needs exactly one Host"
        );
    }
}
