//! HTTP responses: JSON bodies, the JSON error shape of PROTOCOL.md section
//! 1, serialisation with `X-Correlation-ID` and keep-alive headers, and the
//! write that gives up on a peer that stops reading (section 11).

use std::io;
use std::time::Duration;

use futures_lite::{AsyncWrite, AsyncWriteExt, FutureExt};
use serde::Serialize;
use serde_json::json;

use crate::hub::Refusal;
use crate::protocol::ErrorCode;

/// A response about to be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// `Content-Type`, if there is a body.
    pub content_type: &'static str,
    /// Extra headers.
    pub headers: Vec<(&'static str, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// A JSON body.
    pub fn json(status: u16, body: &impl Serialize) -> Self {
        Self {
            status,
            content_type: "application/json",
            headers: Vec::new(),
            body: serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec()),
        }
    }

    /// `{"error":{"code","message"}}`.
    pub fn error(status: u16, code: ErrorCode, message: impl Into<String>) -> Self {
        Self::json(
            status,
            &json!({"error": {"code": code, "message": message.into()}}),
        )
    }

    /// The 503 `shutting_down` of a draining hub.
    pub fn shutting_down() -> Self {
        Self::refusal(&Refusal::shutting_down())
    }

    /// The JSON error of a refusal, with `Retry-After` when it has one and
    /// `Sec-WebSocket-Version` on a 426.
    pub fn refusal(refusal: &Refusal) -> Self {
        let mut response = Self::error(refusal.status, refusal.error.code, &refusal.error.message);
        if let Some(secs) = refusal.retry_after {
            response = response.with_header("Retry-After", secs.to_string());
        }
        if refusal.status == 426 {
            response = response.with_header("Sec-WebSocket-Version", "13");
        }
        response
    }

    /// A body of `content_type`.
    pub fn body(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            content_type,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// No body.
    pub fn empty(status: u16) -> Self {
        Self::body(status, "", Vec::new())
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// The bytes on the wire.
    pub fn to_bytes(&self, correlation_id: &str, keep_alive: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(200 + self.body.len());
        let head = format!(
            "HTTP/1.1 {} {}\r\nX-Correlation-ID: {correlation_id}\r\nContent-Length: {}\r\nConnection: {}\r\n",
            self.status,
            reason(self.status),
            self.body.len(),
            if keep_alive { "keep-alive" } else { "close" },
        );
        out.extend_from_slice(head.as_bytes());
        if !self.content_type.is_empty() {
            out.extend_from_slice(format!("Content-Type: {}\r\n", self.content_type).as_bytes());
        }
        for (name, value) in &self.headers {
            out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out
    }
}

/// Writes all of `bytes`, failing with `TimedOut` when one write makes no
/// progress for `stall` (the hub's `handshake_timeout`): a peer that stops
/// reading is closed rather than holding the response and its socket.
pub async fn write_all_within(
    stream: &mut (impl AsyncWrite + Unpin),
    bytes: &[u8],
    stall: Duration,
) -> io::Result<()> {
    let mut rest = bytes;
    while !rest.is_empty() {
        let written = async { stream.write(rest).await }
            .or(async {
                smol::Timer::after(stall).await;
                Err(io::ErrorKind::TimedOut.into())
            })
            .await?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        rest = &rest[written..];
    }
    Ok(())
}

/// The reason phrase for `status`.
pub fn reason(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        202 => "Accepted",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        411 => "Length Required",
        413 => "Payload Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Entity",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_json_with_the_correlation_id() {
        let r = Response::error(404, ErrorCode::NotFound, "no such route");
        let bytes = r.to_bytes("c-1", true);
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.starts_with("HTTP/1.1 404 Not Found\r\n"), "{text}");
        assert!(text.contains("X-Correlation-ID: c-1\r\n"));
        assert!(text.contains("Content-Type: application/json\r\n"));
        let body = text.split("\r\n\r\n").nth(1).unwrap();
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["code"], "not_found");
        assert_eq!(v["error"]["message"], "no such route");
    }

    /// A peer that takes `room` bytes, then nothing more.
    struct Stalled {
        room: usize,
        taken: usize,
    }

    impl AsyncWrite for Stalled {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<io::Result<usize>> {
            let n = buf.len().min(self.room - self.taken);
            if n == 0 {
                return std::task::Poll::Pending;
            }
            self.taken += n;
            std::task::Poll::Ready(Ok(n))
        }

        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn poll_close(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn a_write_that_stalls_gives_up_and_one_that_progresses_completes() {
        smol::block_on(async {
            let stall = Duration::from_millis(50);
            let mut open = Stalled {
                room: 100,
                taken: 0,
            };
            assert!(write_all_within(&mut open, &[7; 100], stall).await.is_ok());
            let mut stalled = Stalled { room: 10, taken: 0 };
            let e = write_all_within(&mut stalled, &[7; 100], stall)
                .await
                .unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::TimedOut);
            assert_eq!(stalled.taken, 10);
        });
    }
}
