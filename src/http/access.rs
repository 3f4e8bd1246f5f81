//! Who may use which route: the `Origin` allowlist (PROTOCOL.md section 2)
//! and its reach over every route (section 11), the publisher and admin
//! credentials (section 1), and CORS for allowed origins.

use std::net::SocketAddr;

use super::request::Request;
use super::response::Response;
use crate::auth;
use crate::config::{AllowedOrigins, Config, normalize_origin};
use crate::net::is_loopback;
use crate::protocol::ErrorCode;

/// Whether a request with `Origin: origin` and `Host: host` may proceed.
pub fn origin_allowed(origin: &str, host: Option<&str>, allowed: &AllowedOrigins) -> bool {
    let Some(origin) = normalize_origin(origin.trim()) else {
        return false;
    };
    match allowed {
        AllowedOrigins::Any => true,
        AllowedOrigins::List(list) => list.contains(&origin),
        AllowedOrigins::Loopback => {
            let Some((scheme, authority)) = origin.split_once("://") else {
                return false;
            };
            if host.is_some_and(|h| h.trim().eq_ignore_ascii_case(authority)) {
                return true;
            }
            let hostname = match authority.rsplit_once(':') {
                Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
                _ => authority,
            };
            matches!(scheme, "http" | "https")
                && matches!(hostname, "localhost" | "127.0.0.1" | "[::1]")
        }
    }
}

/// Whether a browser request's `Origin` (if any) is allowed.
pub fn request_origin_allowed(request: &Request, config: &Config) -> bool {
    request
        .header("origin")
        .is_none_or(|o| origin_allowed(o, request.header("host"), &config.allowed_origins))
}

/// Refuses a request whose `Origin` is not allowed (403
/// `origin_not_allowed`) on every route but the three any page may load,
/// `GET /health`, `GET /` and `GET /client.js`, whatever its method, body or
/// Content-Type (PROTOCOL.md section 11). `/ws` makes this check in its
/// handshake, in the order of section 2.
pub fn check_origin(request: &Request, config: &Config) -> Result<(), Response> {
    let open_to_any_page =
        request.method == "GET" && matches!(request.path.as_str(), "/health" | "/" | "/client.js");
    if open_to_any_page || request_origin_allowed(request, config) {
        Ok(())
    } else {
        Err(Response::error(
            403,
            ErrorCode::OriginNotAllowed,
            "this Origin is not in allowed_origins; pages from other origins may only load GET /health, / and /client.js",
        ))
    }
}

/// The bearer credential of a request, if any.
pub fn bearer(request: &Request) -> Option<&str> {
    let value = request.header("authorization")?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Checks access to a publisher or admin route.
pub fn check_privileged(
    request: &Request,
    peer: SocketAddr,
    config: &Config,
) -> Result<(), Response> {
    if config.admin_key.is_none() && config.jwt_secret.is_none() {
        return if is_loopback(peer.ip()) {
            Ok(())
        } else {
            Err(Response::error(
                403,
                ErrorCode::Forbidden,
                "without admin_key or jwt_secret this route is served to loopback peers only",
            ))
        };
    }
    let Some(token) = bearer(request) else {
        return Err(Response::error(
            401,
            ErrorCode::Unauthenticated,
            "this route needs `Authorization: Bearer <admin key or admin JWT>`",
        )
        .with_header("WWW-Authenticate", "Bearer"));
    };
    let key_ok = config
        .admin_key
        .as_deref()
        .is_some_and(|key| auth::key_matches(token, key));
    let jwt_ok = || {
        config.jwt_secret.as_deref().is_some_and(|secret| {
            auth::verify(token, secret.as_bytes(), auth::unix_now()).is_ok_and(|c| c.admin)
        })
    };
    if key_ok || jwt_ok() {
        Ok(())
    } else {
        Err(Response::error(
            403,
            ErrorCode::Forbidden,
            "the credential is not the admin key or a valid admin JWT",
        ))
    }
}

/// CORS headers for a request from an allowed origin, nothing otherwise.
pub fn cors_headers(request: &Request, config: &Config) -> Vec<(&'static str, String)> {
    match request.header("origin") {
        Some(origin) if request_origin_allowed(request, config) => vec![
            ("Access-Control-Allow-Origin", origin.trim().to_string()),
            ("Access-Control-Expose-Headers", "X-Correlation-ID".into()),
            ("Vary", "Origin".into()),
        ],
        _ => Vec::new(),
    }
}

/// The answer to an `OPTIONS` preflight.
pub fn preflight(request: &Request, config: &Config) -> Response {
    if request.header("origin").is_none() || !request_origin_allowed(request, config) {
        return Response::error(
            403,
            ErrorCode::OriginNotAllowed,
            "this origin is not in allowed_origins",
        );
    }
    Response::empty(204)
        .with_header(
            "Access-Control-Allow-Methods",
            "GET, POST, PUT, DELETE, OPTIONS",
        )
        .with_header(
            "Access-Control-Allow-Headers",
            "Authorization, Content-Type, X-Correlation-ID",
        )
        .with_header("Access-Control-Max-Age", "600")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_origins_are_loopback_and_same_host() {
        let d = AllowedOrigins::Loopback;
        for ok in [
            "http://localhost",
            "http://localhost:3000",
            "https://127.0.0.1:8443",
            "http://[::1]:5173",
        ] {
            assert!(origin_allowed(ok, None, &d), "{ok}");
        }
        for bad in [
            "http://evil.example",
            "http://localhost.evil.example",
            "http://127.0.0.1.evil.example",
            "file://localhost",
            "null",
            "garbage",
        ] {
            assert!(!origin_allowed(bad, None, &d), "{bad}");
        }
        assert!(origin_allowed(
            "https://hub.lan:8000",
            Some("hub.lan:8000"),
            &d
        ));
        assert!(!origin_allowed(
            "https://hub.lan:9000",
            Some("hub.lan:8000"),
            &d
        ));
    }

    #[test]
    fn lists_and_star() {
        let list = AllowedOrigins::List(vec!["https://app.example".into()]);
        assert!(origin_allowed("https://APP.example", None, &list));
        assert!(!origin_allowed("http://localhost", None, &list));
        assert!(origin_allowed(
            "https://x.example",
            None,
            &AllowedOrigins::Any
        ));
    }

    #[test]
    fn foreign_origins_reach_only_the_open_routes() {
        let config = Config::default();
        let verdict = |method: &str, path: &str, origin: &str| {
            let raw =
                format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nOrigin: {origin}\r\n\r\n");
            let (req, _) = super::super::request::parse_head(raw.as_bytes())
                .unwrap()
                .unwrap();
            check_origin(&req, &config).map_err(|r| r.status)
        };
        for (method, path) in [("GET", "/health"), ("GET", "/"), ("GET", "/client.js")] {
            assert_eq!(
                verdict(method, path, "http://evil.example"),
                Ok(()),
                "{path}"
            );
        }
        for (method, path) in [
            ("POST", "/api/events"),
            ("PUT", "/api/health/db"),
            ("GET", "/metrics"),
            ("GET", "/api/connections"),
            ("OPTIONS", "/api/events"),
            ("POST", "/health"),
            ("PUT", "/"),
            ("GET", "/nope"),
        ] {
            assert_eq!(
                verdict(method, path, "http://evil.example"),
                Err(403),
                "{method} {path}"
            );
            assert_eq!(
                verdict(method, path, "http://localhost:3000"),
                Ok(()),
                "{method} {path}"
            );
        }
        assert_eq!(verdict("GET", "/metrics", "http://localhost"), Ok(()));
    }

    #[test]
    fn bearer_tokens_parse() {
        let (req, _) = super::super::request::parse_head(
            b"GET / HTTP/1.1\r\nAuthorization: bearer  abc \r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(bearer(&req), Some("abc"));
    }
}
