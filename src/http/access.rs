//! Who may use which route: the `Origin` allowlist (PROTOCOL.md section 2),
//! the publisher and admin credentials (section 1), and CORS for allowed
//! origins.

use std::net::SocketAddr;

use super::request::Request;
use super::response::Response;
use crate::auth;
use crate::config::{AllowedOrigins, Config, normalize_origin};
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
        return if peer.ip().is_loopback() {
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
    fn bearer_tokens_parse() {
        let (req, _) = super::super::request::parse_head(
            b"GET / HTTP/1.1\r\nAuthorization: bearer  abc \r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(bearer(&req), Some("abc"));
    }
}
