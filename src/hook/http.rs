//! A small HTTP/1.1 client for hook calls, on the hub thread's reactor.
//!
//! One POST per call, keep-alive connections kept in a small pool per hook
//! origin (`host:port`), responses parsed with `httparse` as the server
//! side parses requests. A connection is reused only after a complete,
//! framed response (`Content-Length` or chunked) that did not ask to close;
//! one taken from the pool that fails before any byte of an answer (the
//! app closed it meanwhile) is retried once on a fresh connection.
//!
//! Nothing here blocks the thread: names are resolved by smol's resolver
//! (on its blocking pool), and the caller bounds the whole call with
//! `hook_timeout`; a call that times out drops its connection.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream};

use async_channel::{Receiver, Sender};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use smol::Async;

use crate::config::HttpTarget;

/// Idle keep-alive connections kept per origin; more are closed after use.
const POOL_SIZE: usize = 128;
/// Largest response head accepted from an app.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Largest response body accepted from an app.
pub(crate) const MAX_BODY_BYTES: usize = 1 << 20;
/// Headers read in a response head.
const MAX_HEADERS: usize = 64;

/// A response: its status and its body.
#[derive(Debug)]
pub(crate) struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Why a call got no response.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Connecting failed (refused, unreachable, name not found).
    Connect(io::Error),
    /// The connection broke, or the response was not HTTP we accept.
    Exchange(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Connect(e) => write!(f, "cannot connect: {e}"),
            Self::Exchange(e) => f.write_str(e),
        }
    }
}

type Conn = Async<TcpStream>;

/// One origin's idle connections: a bounded channel used as a stack-free
/// queue, so taking and returning never waits and needs no lock of ours.
#[derive(Debug)]
struct Pool {
    idle_tx: Sender<Conn>,
    idle_rx: Receiver<Conn>,
}

/// The client: a pool per hook origin, made at start from the configured
/// hook URLs.
#[derive(Debug)]
pub(crate) struct Client {
    pools: HashMap<(String, u16), Pool>,
}

impl Client {
    /// A client with an empty pool for each of `targets`' origins.
    pub fn new<'a>(targets: impl IntoIterator<Item = &'a HttpTarget>) -> Self {
        let mut pools = HashMap::new();
        for t in targets {
            pools.entry((t.host.clone(), t.port)).or_insert_with(|| {
                let (idle_tx, idle_rx) = async_channel::bounded(POOL_SIZE);
                Pool { idle_tx, idle_rx }
            });
        }
        Self { pools }
    }

    /// POSTs `body` to `target` with the `extra` headers (each a full
    /// `Name: value` line without CRLF). The caller bounds the time.
    pub async fn post(
        &self,
        target: &HttpTarget,
        extra: &[String],
        body: &[u8],
    ) -> Result<Response, Failure> {
        let mut request = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nAccept: application/json\r\nContent-Length: {}\r\nUser-Agent: wshub/{}\r\n",
            target.path,
            target.authority(),
            body.len(),
            env!("CARGO_PKG_VERSION"),
        )
        .into_bytes();
        for line in extra {
            request.extend_from_slice(line.as_bytes());
            request.extend_from_slice(b"\r\n");
        }
        request.extend_from_slice(b"\r\n");
        request.extend_from_slice(body);

        let pool = self.pools.get(&(target.host.clone(), target.port));
        if let Some(conn) = pool.and_then(|p| p.idle_rx.try_recv().ok()) {
            match exchange(conn, &request).await {
                Ok((response, conn)) => {
                    self.give_back(pool, conn);
                    return Ok(response);
                }
                // Closed by the app while idle: nothing was answered, so the
                // request is sent again on a new connection.
                Err(Exchanged::Nothing(_)) => {}
                Err(Exchanged::Partly(e)) => return Err(Failure::Exchange(e)),
            }
        }
        let conn = connect(target).await.map_err(Failure::Connect)?;
        match exchange(conn, &request).await {
            Ok((response, conn)) => {
                self.give_back(pool, conn);
                Ok(response)
            }
            Err(Exchanged::Nothing(e) | Exchanged::Partly(e)) => Err(Failure::Exchange(e)),
        }
    }

    fn give_back(&self, pool: Option<&Pool>, conn: Option<Conn>) {
        if let (Some(pool), Some(conn)) = (pool, conn) {
            // A full pool closes the extra connection.
            let _ = pool.idle_tx.try_send(conn);
        }
    }
}

async fn connect(target: &HttpTarget) -> io::Result<Conn> {
    let host = target.host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, target.port)],
        Err(_) => smol::net::resolve((host, target.port)).await?,
    };
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the host has no address");
    for addr in addrs {
        match Async::<TcpStream>::connect(addr).await {
            Ok(conn) => {
                // Hook bodies are small and answered at once: no Nagle delay.
                let _ = conn.get_ref().set_nodelay(true);
                return Ok(conn);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

enum Exchanged {
    /// Failed before any byte of a response arrived.
    Nothing(String),
    /// Failed after part of one.
    Partly(String),
}

/// Sends `request` on `conn` and reads one response; gives the connection
/// back when it may carry another request.
async fn exchange(conn: Conn, request: &[u8]) -> Result<(Response, Option<Conn>), Exchanged> {
    let mut io = &conn;
    if let Err(e) = io.write_all(request).await {
        return Err(Exchanged::Nothing(format!("cannot send the request: {e}")));
    }
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 8192];
    let (status, keep_alive, framing, head_len) = loop {
        let n = match io.read(&mut chunk).await {
            Ok(0) if buf.is_empty() => {
                return Err(Exchanged::Nothing("the app closed the connection".into()));
            }
            Ok(0) => return Err(Exchanged::Partly("the response head was cut short".into())),
            Ok(n) => n,
            Err(e) if buf.is_empty() => {
                return Err(Exchanged::Nothing(format!("read failed: {e}")));
            }
            Err(e) => return Err(Exchanged::Partly(format!("read failed: {e}"))),
        };
        buf.extend_from_slice(&chunk[..n]);
        match parse_head(&buf) {
            Ok(Some(head)) => {
                // Informational answers (100 Continue) are skipped.
                if (100..200).contains(&head.0) {
                    buf.drain(..head.3);
                    continue;
                }
                break head;
            }
            Ok(None) if buf.len() > MAX_HEAD_BYTES => {
                return Err(Exchanged::Partly("the response head is too large".into()));
            }
            Ok(None) => {}
            Err(e) => return Err(Exchanged::Partly(e)),
        }
    };
    let mut rest = buf.split_off(head_len);
    let partly = Exchanged::Partly;
    let body = match framing {
        Framing::Length(len) => {
            if len > MAX_BODY_BYTES {
                return Err(partly(format!(
                    "the response body ({len} bytes) is too large"
                )));
            }
            while rest.len() < len {
                let n = io
                    .read(&mut chunk)
                    .await
                    .map_err(|e| partly(e.to_string()))?;
                if n == 0 {
                    return Err(partly("the response body was cut short".into()));
                }
                rest.extend_from_slice(&chunk[..n]);
            }
            if rest.len() > len {
                // Bytes after the response we did not ask for: do not reuse.
                rest.truncate(len);
                return Ok((Response { status, body: rest }, None));
            }
            rest
        }
        Framing::Chunked => {
            let mut decoder = Chunked::default();
            loop {
                match decoder.feed(&mut rest).map_err(partly)? {
                    true => break,
                    false => {
                        let n = io
                            .read(&mut chunk)
                            .await
                            .map_err(|e| partly(e.to_string()))?;
                        if n == 0 {
                            return Err(partly("the chunked body was cut short".into()));
                        }
                        rest.extend_from_slice(&chunk[..n]);
                    }
                }
            }
            let leftover = !rest.is_empty();
            let body = decoder.body;
            let conn = (keep_alive && !leftover).then_some(conn);
            return Ok((Response { status, body }, conn));
        }
        Framing::UntilClose => {
            loop {
                let n = io
                    .read(&mut chunk)
                    .await
                    .map_err(|e| partly(e.to_string()))?;
                if n == 0 {
                    break;
                }
                rest.extend_from_slice(&chunk[..n]);
                if rest.len() > MAX_BODY_BYTES {
                    return Err(partly("the response body is too large".into()));
                }
            }
            return Ok((Response { status, body: rest }, None));
        }
    };
    Ok((Response { status, body }, keep_alive.then_some(conn)))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

/// (status, keep-alive, framing, head length), or `None` if incomplete.
fn parse_head(buf: &[u8]) -> Result<Option<(u16, bool, Framing, usize)>, String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("not an HTTP response: {e}")),
    };
    let status = response.code.unwrap_or(0);
    let mut keep_alive = response.version == Some(1);
    let mut length: Option<usize> = None;
    let mut chunked = false;
    for h in response.headers.iter() {
        let value = std::str::from_utf8(h.value).unwrap_or("").trim();
        if h.name.eq_ignore_ascii_case("connection") {
            if value
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("close"))
            {
                keep_alive = false;
            }
        } else if h.name.eq_ignore_ascii_case("content-length") {
            let n = value
                .parse::<usize>()
                .ok()
                .filter(|_| value.bytes().all(|b| b.is_ascii_digit()))
                .ok_or("a bad Content-Length")?;
            if length.is_some_and(|l| l != n) {
                return Err("conflicting Content-Length headers".into());
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value
                .rsplit(',')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("chunked"));
            if !chunked {
                keep_alive = false;
            }
        }
    }
    let framing = if chunked {
        Framing::Chunked
    } else if status == 204 || status == 304 {
        Framing::Length(0)
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        keep_alive = false;
        Framing::UntilClose
    };
    Ok(Some((status, keep_alive, framing, len)))
}

/// An incremental decoder of a chunked body (trailers are skipped).
#[derive(Debug, Default)]
struct Chunked {
    body: Vec<u8>,
    /// Bytes still to copy from the current chunk, plus its CRLF.
    remaining: usize,
    in_chunk: bool,
    trailers: bool,
}

impl Chunked {
    /// Consumes what it can of `input`; `true` once the body is complete.
    fn feed(&mut self, input: &mut Vec<u8>) -> Result<bool, String> {
        loop {
            if self.trailers {
                // Trailer lines until an empty one.
                let Some(end) = find_crlf(input) else {
                    return Ok(false);
                };
                let empty = end == 0;
                input.drain(..end + 2);
                if empty {
                    return Ok(true);
                }
                continue;
            }
            if self.in_chunk {
                if input.len() < self.remaining + 2 {
                    return Ok(false);
                }
                if &input[self.remaining..self.remaining + 2] != b"\r\n" {
                    return Err("a chunk does not end with CRLF".into());
                }
                self.body.extend_from_slice(&input[..self.remaining]);
                input.drain(..self.remaining + 2);
                self.in_chunk = false;
                continue;
            }
            let Some(end) = find_crlf(input) else {
                if input.len() > 1024 {
                    return Err("a chunk size line is too long".into());
                }
                return Ok(false);
            };
            let line = std::str::from_utf8(&input[..end]).map_err(|_| "a bad chunk size")?;
            let size = line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size, 16).map_err(|_| "a bad chunk size")?;
            input.drain(..end + 2);
            if size == 0 {
                self.trailers = true;
                continue;
            }
            if self.body.len().saturating_add(size) > MAX_BODY_BYTES {
                return Err("the response body is too large".into());
            }
            self.remaining = size;
            self.in_chunk = true;
        }
    }
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_give_status_framing_and_reuse() {
        let h = parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
            .unwrap()
            .unwrap();
        assert_eq!((h.0, h.1, h.2), (200, true, Framing::Length(2)));
        let h = parse_head(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!h.1);
        let h = parse_head(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!h.1);
        let h = parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((h.1, h.2), (true, Framing::Chunked));
        let h = parse_head(b"HTTP/1.1 200 OK\r\n\r\n").unwrap().unwrap();
        assert_eq!((h.1, h.2), (false, Framing::UntilClose));
        assert!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 2")
                .unwrap()
                .is_none()
        );
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n").is_err());
        assert!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
                .is_err()
        );
        assert!(parse_head(b"garbage\r\n\r\n").is_err());
    }

    #[test]
    fn chunked_bodies_decode_in_pieces() {
        let whole = b"4\r\n{\"a\"\r\n3;x=y\r\n:1}\r\n0\r\nX-T: 1\r\n\r\n".to_vec();
        for split in 0..whole.len() {
            let mut d = Chunked::default();
            let mut input = whole[..split].to_vec();
            let done = d.feed(&mut input).unwrap();
            assert!(!done || split == whole.len());
            input.extend_from_slice(&whole[split..]);
            assert!(d.feed(&mut input).unwrap());
            assert_eq!(d.body, b"{\"a\":1}");
        }
        let mut bad = b"zz\r\n".to_vec();
        assert!(Chunked::default().feed(&mut bad).is_err());
        let mut huge = b"ffffffffff\r\n".to_vec();
        assert!(Chunked::default().feed(&mut huge).is_err());
    }
}
