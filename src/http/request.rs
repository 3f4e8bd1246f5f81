//! Request heads and bodies: parsed with `httparse`, read under the 16 KiB
//! and `handshake_timeout` bounds of PROTOCOL.md section 1, with the strict
//! `Content-Length` of section 11.

use std::time::Instant;

use futures_lite::{AsyncRead, AsyncReadExt, FutureExt};

/// The largest request head accepted, in bytes.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// The most header lines accepted.
const MAX_HEADERS: usize = 100;
/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 4096;

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `POST`, …
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The raw query string after `?`, or empty.
    pub query: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    /// Headers in order, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The declared body length (`Content-Length`), checked by
    /// [`content_length`]; saturates at `u64::MAX`.
    pub content_length: Option<u64>,
}

impl Request {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of header `name`, split at commas and trimmed.
    pub fn header_tokens<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n == name)
            .flat_map(|(_, v)| v.split(','))
            .map(str::trim)
            .filter(|t| !t.is_empty())
    }

    /// Whether header `name` lists `token` (case-insensitive).
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.header_tokens(name)
            .any(|t| t.eq_ignore_ascii_case(token))
    }

    /// The percent-decoded value of query parameter `name`, if present.
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key) == name).then(|| percent_decode(value))
        })
    }

    /// Whether the connection stays open after the response.
    pub fn keep_alive(&self) -> bool {
        if self.minor_version == 0 {
            self.has_token("connection", "keep-alive")
        } else {
            !self.has_token("connection", "close")
        }
    }
}

/// Decodes `%XX` escapes and `+` as space; invalid escapes stay as they are.
pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => match bytes.get(i + 1..i + 3) {
                Some([h, l]) if h.is_ascii_hexdigit() && l.is_ascii_hexdigit() => {
                    out.push(hex_value(*h) << 4 | hex_value(*l));
                    i += 3;
                }
                _ => {
                    out.push(b'%');
                    i += 1;
                }
            },
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_value(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        _ => digit - b'A' + 10,
    }
}

/// Why no request could be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadError {
    /// The peer closed before sending a byte of a new request.
    Closed,
    /// The head did not complete within `handshake_timeout`.
    TimedOut,
    /// The head is larger than [`MAX_HEAD_BYTES`].
    TooLarge,
    /// Not HTTP/1.x; the message says what is wrong.
    Malformed(String),
    /// The socket failed or closed mid-request.
    Io,
}

/// Parses a complete head at the start of `buf`: the request and the
/// head's length, `None` if more bytes are needed.
pub fn parse_head(buf: &[u8]) -> Result<Option<(Request, usize)>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            return if buf.len() >= MAX_HEAD_BYTES {
                Err(HeadError::TooLarge)
            } else {
                Ok(None)
            };
        }
        Err(e) => return Err(HeadError::Malformed(format!("bad request head: {e}"))),
    };
    if len > MAX_HEAD_BYTES {
        return Err(HeadError::TooLarge);
    }
    let content_length = content_length(&buf[..len]).map_err(HeadError::Malformed)?;
    let target = parsed.path.unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let request = Request {
        method: parsed.method.unwrap_or("").to_string(),
        path: path.to_string(),
        query: query.to_string(),
        minor_version: parsed.version.unwrap_or(1),
        headers: parsed
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_ascii_lowercase(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect(),
        content_length,
    };
    Ok(Some((request, len)))
}

/// The body length declared by a complete, already parsed `head`: each
/// `Content-Length` value is ASCII digits only, after at most one space or
/// tab, and repeated values must be equal (PROTOCOL.md section 11). Anything
/// looser is how a request is smuggled past a proxy that reads it another
/// way, so it is an error, and the caller closes the connection after its 400.
pub fn content_length(head: &[u8]) -> Result<Option<u64>, String> {
    // The first value's digits without leading zeros, and its number.
    let mut declared: Option<(&[u8], u64)> = None;
    // The first line is the request line; httparse has already refused
    // folded lines and spaces before a colon.
    for line in head.split(|&b| b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        if !line[..colon].eq_ignore_ascii_case(b"content-length") {
            continue;
        }
        let raw = &line[colon + 1..];
        let digits = raw
            .strip_prefix(b" ")
            .or_else(|| raw.strip_prefix(b"\t"))
            .unwrap_or(raw);
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return Err(
                "Content-Length must be digits only, like `Content-Length: 47`; the connection is closed"
                    .into(),
            );
        }
        let value = digits.iter().fold(0u64, |n, &d| {
            n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
        });
        // Compared as digits, not as the saturated number: two different
        // lengths too large to hold are still two different lengths.
        let significant = match digits.iter().position(|&d| d != b'0') {
            Some(first) => &digits[first..],
            None => &digits[digits.len() - 1..],
        };
        if declared.is_some_and(|(first, _)| first != significant) {
            return Err(
                "Content-Length is repeated with different values; send it once; the connection is closed"
                    .into(),
            );
        }
        declared = Some((significant, value));
    }
    Ok(declared.map(|(_, value)| value))
}

/// Reads one request head from `stream` into `buf` (which may already hold
/// bytes of it) by `deadline`; the head is removed from `buf`, what follows
/// it stays.
pub async fn read_head(
    stream: &mut (impl AsyncRead + Unpin),
    buf: &mut Vec<u8>,
    deadline: Instant,
) -> Result<Request, HeadError> {
    loop {
        if let Some((request, len)) = parse_head(buf)? {
            buf.drain(..len);
            return Ok(request);
        }
        let was_empty = buf.is_empty();
        match read_more(stream, buf, deadline).await? {
            0 if was_empty => return Err(HeadError::Closed),
            0 => return Err(HeadError::Io),
            _ => {}
        }
    }
}

/// Reads until `buf` holds at least `len` bytes, by `deadline`.
pub async fn read_exact_into(
    stream: &mut (impl AsyncRead + Unpin),
    buf: &mut Vec<u8>,
    len: usize,
    deadline: Instant,
) -> Result<(), HeadError> {
    while buf.len() < len {
        if read_more(stream, buf, deadline).await? == 0 {
            return Err(HeadError::Io);
        }
    }
    Ok(())
}

async fn read_more(
    stream: &mut (impl AsyncRead + Unpin),
    buf: &mut Vec<u8>,
    deadline: Instant,
) -> Result<usize, HeadError> {
    let start = buf.len();
    buf.resize(start + READ_CHUNK, 0);
    let read = async {
        stream
            .read(&mut buf[start..])
            .await
            .map_err(|_| HeadError::Io)
    }
    .or(async {
        smol::Timer::at(deadline).await;
        Err(HeadError::TimedOut)
    })
    .await;
    buf.truncate(start + *read.as_ref().unwrap_or(&0));
    read
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_head_and_leaves_the_rest() {
        let raw = b"GET /ws?rooms=a%2Cb&token=x HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Upgrade\r\n\r\nBODY";
        let (req, len) = parse_head(raw).unwrap().unwrap();
        assert_eq!(&raw[len..], b"BODY");
        assert_eq!(req.method, "GET");
        assert_eq!(req.path, "/ws");
        assert_eq!(req.query_param("rooms").as_deref(), Some("a,b"));
        assert_eq!(req.query_param("token").as_deref(), Some("x"));
        assert_eq!(req.query_param("nope"), None);
        assert!(req.has_token("connection", "upgrade"));
        assert_eq!(req.header("host"), Some("h"));
        assert!(req.keep_alive());
    }

    #[test]
    fn partial_heads_ask_for_more_until_the_limit() {
        assert_eq!(parse_head(b"GET / HTTP/1.1\r\nHost:"), Ok(None));
        let mut big = b"GET / HTTP/1.1\r\n".to_vec();
        while big.len() < MAX_HEAD_BYTES {
            big.extend_from_slice(b"X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        assert!(matches!(
            parse_head(&big),
            Err(HeadError::TooLarge | HeadError::Malformed(_))
        ));
    }

    #[test]
    fn garbage_is_malformed() {
        for raw in [
            &b"\x00\x01\x02\r\n\r\n"[..],
            b"GET\r\n\r\n",
            b"GET / FTP/9\r\n\r\n",
        ] {
            assert!(
                matches!(parse_head(raw), Err(HeadError::Malformed(_))),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn http10_closes_by_default() {
        let (req, _) = parse_head(b"GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(!req.keep_alive());
        let (req, _) = parse_head(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!req.keep_alive());
    }

    fn declared(lines: &str) -> Result<Option<u64>, String> {
        content_length(format!("POST / HTTP/1.1\r\nHost: h\r\n{lines}\r\n").as_bytes())
    }

    #[test]
    fn content_length_is_digits_only_and_repeats_must_agree() {
        assert_eq!(declared(""), Ok(None));
        assert_eq!(declared("Content-Length: 47\r\n"), Ok(Some(47)));
        assert_eq!(declared("content-length:47\r\n"), Ok(Some(47)));
        assert_eq!(declared("CONTENT-LENGTH:\t0047\r\n"), Ok(Some(47)));
        assert_eq!(declared("Content-Length: 0\r\n"), Ok(Some(0)));
        assert_eq!(
            declared("Content-Length: 47\r\nX-A: b\r\ncontent-length: 47\r\n"),
            Ok(Some(47))
        );
        assert_eq!(
            declared("Content-Length: 99999999999999999999999999\r\n"),
            Ok(Some(u64::MAX)),
            "too large is a 413 later, not a parse error"
        );
        assert_eq!(declared("X-Content-Length: +1\r\n"), Ok(None));
        // Found by fuzz/parse_head: both too large to hold, yet different.
        assert!(
            declared("Content-Length: 99999999999999999999999\r\nContent-Length: 99999999999999999999998\r\n")
                .is_err()
        );
        assert_eq!(
            declared("Content-Length: 0\r\nContent-Length: 000\r\n"),
            Ok(Some(0))
        );
        for bad in [
            "+47", "-47", " 47", "47 ", "4 7", "", " ", "0x2f", "47,47", "47, 47", "4.7",
            "\u{a0}47", "\u{661}",
        ] {
            assert!(
                declared(&format!("Content-Length: {bad}\r\n")).is_err(),
                "{bad:?}"
            );
        }
        assert!(declared("Content-Length: 47\r\nContent-Length: 48\r\n").is_err());
        assert!(declared("Content-Length: 47\r\nContent-Length: +47\r\n").is_err());
        assert!(declared("Content-Length: 0\r\nContent-Length: 00\r\n").is_ok());
    }

    #[test]
    fn a_bad_content_length_makes_the_head_malformed() {
        let raw = b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +47\r\n\r\n";
        assert!(matches!(parse_head(raw), Err(HeadError::Malformed(_))));
        let raw = b"POST / HTTP/1.1\nHost: h\nContent-Length: 5\nContent-Length: 6\n\n";
        assert!(matches!(parse_head(raw), Err(HeadError::Malformed(_))));
        let raw = b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello";
        let (req, _) = parse_head(raw).unwrap().unwrap();
        assert_eq!(req.content_length, Some(5));
    }

    #[test]
    fn read_ahead_is_bounded_by_the_head_limit() {
        use futures_lite::io::{AsyncReadExt as _, Cursor, repeat};
        smol::block_on(async {
            // A thousand pipelined requests: one head is taken, and no more
            // than one read's worth of what follows is held.
            let pipelined = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n".repeat(1000);
            let mut reader = Cursor::new(pipelined);
            let mut buf = Vec::new();
            let far = Instant::now() + std::time::Duration::from_secs(10);
            read_head(&mut reader, &mut buf, far).await.unwrap();
            assert!(buf.len() < READ_CHUNK, "{} bytes held", buf.len());
            // A head that never ends is refused once it passes the limit.
            let mut endless = Cursor::new(b"GET / HTTP/1.1\r\nX: ".to_vec()).chain(repeat(b'a'));
            let mut buf = Vec::new();
            assert_eq!(
                read_head(&mut endless, &mut buf, far).await,
                Err(HeadError::TooLarge)
            );
            assert!(buf.len() < MAX_HEAD_BYTES + READ_CHUNK);
        });
    }

    #[test]
    fn percent_decoding_tolerates_junk() {
        assert_eq!(percent_decode("a%2Cb+c"), "a,b c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%ff"), "\u{fffd}");
    }
}
