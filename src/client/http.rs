//! A small HTTP/1.1 client for the hub's routes: one request per
//! connection, every wait bounded.

use std::net::SocketAddr;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use serde_json::Value;
use smol::net::TcpStream;

use super::ClientError;

/// A response read by [`http`].
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Headers, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON.
    pub fn try_json(&self) -> Result<Value, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }

    /// The body as JSON.
    ///
    /// # Panics
    ///
    /// If the body is not JSON (every hub answer but `/metrics`, `/` and
    /// `/client.js` is); use [`HttpResponse::try_json`] to handle that.
    pub fn json(&self) -> Value {
        self.try_json()
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }

    /// `error.code` of a JSON error body, empty if there is none.
    pub fn error_code(&self) -> String {
        self.try_json().unwrap_or_default()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`),
/// answered within [`CONNECT_TIMEOUT`](super::CONNECT_TIMEOUT). The `Host`
/// header is `addr` unless `headers` has one: pass the name the hub is
/// known by (`("Host", "hub.example:8000")`) when its `allowed_hosts`
/// lists names only.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Result<HttpResponse, ClientError> {
    let mut request = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        request.push_str(&format!("Host: {addr}\r\n"));
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(body) = body {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    request.push_str(body.unwrap_or(""));
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        // The hub closes after answering; a reset after the answer is fine.
        let _ = stream.read_to_end(&mut raw).await;
        Ok::<_, std::io::Error>(raw)
    };
    let raw = super::bounded(super::CONNECT_TIMEOUT, exchange)
        .await?
        .map_err(|e| ClientError::WebSocket(e.into()))?;
    parse_response(&raw).ok_or_else(|| {
        ClientError::Protocol(format!(
            "not an HTTP response: {:?}",
            String::from_utf8_lossy(&raw)
        ))
    })
}

/// Parses one complete HTTP response.
pub fn parse_response(raw: &[u8]) -> Option<HttpResponse> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(len) = response.parse(raw).ok()? else {
        return None;
    };
    Some(HttpResponse {
        status: response.code?,
        headers: response
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_ascii_lowercase(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect(),
        body: raw[len..].to_vec(),
    })
}
