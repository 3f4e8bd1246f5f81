//! A client of a hub's event stream, `GET /sse` (PROTOCOL.md section 12):
//! one HTTP/1.1 request, then the response read field by field as the
//! HTML standard's EventSource parses it (lines ending in LF, CRLF or CR;
//! `data`, `id`, `retry` and `event` fields; comments), every wait bounded
//! by the caller.
//!
//! ```no_run
//! use std::time::Duration;
//! use wshub::client::{EventStream, SseItem};
//!
//! smol::block_on(async {
//!     let addr = "127.0.0.1:8000".parse().unwrap();
//!     let Ok(mut stream) = EventStream::open(addr, "/sse?rooms=scans", &[]).await.unwrap() else {
//!         panic!("refused");
//!     };
//!     while let Some(item) = stream.next_within(Duration::from_secs(60)).await {
//!         if let SseItem::Event { data, .. } = item {
//!             println!("{data}");
//!         }
//!     }
//! });
//! ```

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt, FutureExt};
use smol::net::TcpStream;

use super::{CONNECT_TIMEOUT, ClientError, HttpResponse, bounded, parse_response};

/// The largest response head read.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// The longest line kept; a longer one ends the stream as broken.
const MAX_LINE_BYTES: usize = 16 << 20;

/// One thing a stream sent, as a block of fields ended by a blank line
/// (an event) or a line of its own (a comment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseItem {
    /// A block with data: its `id:` if it had one (`None` otherwise, the
    /// last one seen still standing, see [`EventStream::last_event_id`]),
    /// and its `data:` lines joined by LF.
    Event {
        /// This block's `id:` field.
        id: Option<String>,
        /// The data.
        data: String,
    },
    /// A `retry:` field (in milliseconds).
    Retry(u64),
    /// A comment line, without its `:` and one leading space.
    Comment(String),
}

/// An open event stream: the `200` response's head, then its items.
#[derive(Debug)]
pub struct EventStream {
    stream: TcpStream,
    /// The response head (its body is the stream).
    pub head: HttpResponse,
    buf: Vec<u8>,
    /// Fields of the block being read.
    data: Option<String>,
    id: Option<String>,
    last_event_id: Option<String>,
    /// Items parsed but not handed out yet.
    ready: std::collections::VecDeque<SseItem>,
    /// The last read ended with CR: an LF that follows is the same line end.
    after_cr: bool,
    ended: bool,
}

impl EventStream {
    /// Sends `GET {path}` (with `headers`; `Host` is `addr` unless they
    /// name one) to `addr` and reads the response
    /// head within [`CONNECT_TIMEOUT`]: `Ok(Ok(stream))` for a `200`,
    /// `Ok(Err(response))` with the whole response for any other status.
    pub async fn open(
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Result<Self, HttpResponse>, ClientError> {
        let mut request = format!("GET {path} HTTP/1.1\r\nAccept: text/event-stream\r\n");
        if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
            request.push_str(&format!("Host: {addr}\r\n"));
        }
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        let opened = async {
            let mut stream = TcpStream::connect(addr).await?;
            stream.write_all(request.as_bytes()).await?;
            let mut raw = Vec::new();
            let mut chunk = [0u8; 4096];
            let head_len = loop {
                if let Some(at) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                    break at + 4;
                }
                if raw.len() > MAX_HEAD_BYTES {
                    return Err(std::io::Error::other("response head too large"));
                }
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                raw.extend_from_slice(&chunk[..n]);
            };
            Ok::<_, std::io::Error>((stream, raw, head_len))
        };
        let (mut stream, mut raw, head_len) = bounded(CONNECT_TIMEOUT, opened)
            .await?
            .map_err(|e| ClientError::WebSocket(e.into()))?;
        let bad_head = || ClientError::Protocol("not an HTTP response head".into());
        let head = parse_response(&raw[..head_len]).ok_or_else(bad_head)?;
        if head.status != 200 {
            // A refusal is a whole response that ends with the connection.
            let rest = async {
                let _ = stream.read_to_end(&mut raw).await;
            };
            let _ = bounded(CONNECT_TIMEOUT, rest).await;
            return Ok(Err(parse_response(&raw).ok_or_else(bad_head)?));
        }
        let body = raw.split_off(head_len);
        let mut opened = Self {
            stream,
            head,
            buf: Vec::new(),
            data: None,
            id: None,
            last_event_id: None,
            ready: Default::default(),
            after_cr: false,
            ended: false,
        };
        opened.feed(&body);
        Ok(Ok(opened))
    }

    /// The last `id:` the stream sent: what `Last-Event-ID` resumes from.
    pub fn last_event_id(&self) -> Option<&str> {
        self.last_event_id.as_deref()
    }

    /// Whether the stream has ended (the hub closed it, or it broke).
    pub fn is_ended(&self) -> bool {
        self.ended && self.ready.is_empty()
    }

    /// The next item, or `None` once the stream has ended or nothing came
    /// within `wait` (tell them apart with [`EventStream::is_ended`]).
    pub async fn next_within(&mut self, wait: Duration) -> Option<SseItem> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(item) = self.ready.pop_front() {
                return Some(item);
            }
            if self.ended {
                return None;
            }
            let mut chunk = [0u8; 16 * 1024];
            let read = async { Some(self.stream.read(&mut chunk).await) }
                .or(async {
                    smol::Timer::at(deadline).await;
                    None
                })
                .await;
            match read {
                None => return None,
                Some(Ok(0)) | Some(Err(_)) => {
                    // The spec drops a block cut off by the end.
                    self.ended = true;
                }
                Some(Ok(n)) => {
                    let bytes = chunk[..n].to_vec();
                    self.feed(&bytes);
                }
            }
        }
    }

    /// Splits `bytes` into lines and the lines into items.
    fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            let after_cr = std::mem::replace(&mut self.after_cr, b == b'\r');
            match b {
                b'\n' if after_cr => {}
                b'\n' | b'\r' => {
                    let line = std::mem::take(&mut self.buf);
                    self.line(&String::from_utf8_lossy(&line));
                }
                _ if self.buf.len() >= MAX_LINE_BYTES => self.ended = true,
                _ => self.buf.push(b),
            }
        }
    }

    /// One line, as the EventSource parser takes it.
    fn line(&mut self, line: &str) {
        if line.is_empty() {
            let id = self.id.take();
            if let Some(data) = self.data.take() {
                self.ready.push_back(SseItem::Event { id, data });
            }
            return;
        }
        if let Some(comment) = line.strip_prefix(':') {
            let comment = comment.strip_prefix(' ').unwrap_or(comment);
            self.ready.push_back(SseItem::Comment(comment.to_string()));
            return;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_string()),
            },
            "id" if !value.contains('\0') => {
                self.id = Some(value.to_string());
                self.last_event_id = Some(value.to_string());
            }
            "retry" => {
                if let Ok(ms) = value.parse() {
                    self.ready.push_back(SseItem::Retry(ms));
                }
            }
            // `event:` and unknown fields: the hub sends neither.
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(chunks: &[&[u8]]) -> Vec<SseItem> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        smol::block_on(async {
            let stream = TcpStream::connect(addr).await.unwrap();
            let mut s = EventStream {
                stream,
                head: HttpResponse {
                    status: 200,
                    headers: Vec::new(),
                    body: Vec::new(),
                },
                buf: Vec::new(),
                data: None,
                id: None,
                last_event_id: None,
                ready: Default::default(),
                after_cr: false,
                ended: false,
            };
            for chunk in chunks {
                s.feed(chunk);
            }
            s.ready.into_iter().collect()
        })
    }

    #[test]
    fn fields_become_items_across_reads_and_line_ends() {
        let stream = b"retry: 1000\n\nid: e;a=1\ndata: {\"x\":1}\n\n: heartbeat\r\ndata:a\r\ndata: b\r\rdata: cut";
        let want = vec![
            SseItem::Retry(1000),
            SseItem::Event {
                id: Some("e;a=1".into()),
                data: "{\"x\":1}".into(),
            },
            SseItem::Comment("heartbeat".into()),
            SseItem::Event {
                id: None,
                data: "a\nb".into(),
            },
        ];
        for split in 0..stream.len() {
            let (a, b) = stream.split_at(split);
            assert_eq!(parsed(&[a, b]), want, "split at {split}");
        }
    }
}
