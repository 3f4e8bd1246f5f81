//! The bytes a lean benchmark client needs: the upgrade request and the
//! check of its 101 answer (or the `/sse` request and its 200), server frames (unmasked) parsed in place,
//! masked client frames, the HTTP publish request and its reply, and a
//! fast scan of an event for the bench's own fields (`seq`, and `i` and `t`
//! in the payload) that needs no JSON parser.

use async_tungstenite::tungstenite::handshake::derive_accept_key;

/// The type of every event the bench publishes.
pub(crate) const EVENT_TYPE: &str = "bench";
/// The key of every upgrade request; its accept value is checked.
pub(crate) const WEBSOCKET_KEY: &str = "d3NodWItYmVuY2gta2V5IQ==";
/// Largest frame payload a subscriber accepts (the hub's own maximum).
pub(crate) const MAX_FRAME_BYTES: u64 = 16 << 20;
/// Largest HTTP response head accepted.
pub(crate) const MAX_HEAD_BYTES: usize = 16 * 1024;

/// WebSocket opcodes, as the hub defines them.
pub(crate) use wshub::protocol::opcode;

/// Why a peer's bytes were not what a hub must send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WireError {
    /// The upgrade was answered with another status.
    Status(u16),
    /// The answer to the upgrade was not a valid 101.
    Handshake(&'static str),
    /// A frame broke RFC 6455 for a server (masked, reserved bits, size).
    Frame(&'static str),
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Status(code) => write!(f, "upgrade refused with HTTP {code}"),
            Self::Handshake(what) => write!(f, "bad upgrade answer: {what}"),
            Self::Frame(what) => write!(f, "bad frame: {what}"),
        }
    }
}

/// `GET /ws?rooms=<room>` as a browser-free client sends it.
pub(crate) fn upgrade_request(host: &str, query: &str) -> Vec<u8> {
    format!(
        "GET /ws{query} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {WEBSOCKET_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes()
}

/// Checks the answer to [`upgrade_request`]: `Ok(None)` while the head is
/// incomplete, `Ok(Some(len))` with the head's length once it is a valid 101.
pub(crate) fn check_upgrade(buf: &[u8], accept: &str) -> Result<Option<usize>, WireError> {
    check_head(
        buf,
        101,
        "missing or wrong Sec-WebSocket-Accept",
        |name, value| {
            name.eq_ignore_ascii_case("sec-websocket-accept") && value == accept.as_bytes()
        },
    )
}

/// Parses a response head: `Ok(None)` while incomplete, else its length
/// once its status is `status` and some header passes `wanted` (`missing`
/// when none does).
fn check_head(
    buf: &[u8],
    status: u16,
    missing: &'static str,
    wanted: impl Fn(&str, &[u8]) -> bool,
) -> Result<Option<usize>, WireError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD_BYTES => return Ok(None),
        Ok(httparse::Status::Partial) => return Err(WireError::Handshake("head too large")),
        Err(_) => return Err(WireError::Handshake("unparsable head")),
    };
    match response.code {
        Some(code) if code == status => {}
        Some(code) => return Err(WireError::Status(code)),
        None => return Err(WireError::Handshake("no status")),
    }
    if response.headers.iter().any(|h| wanted(h.name, h.value)) {
        Ok(Some(len))
    } else {
        Err(WireError::Handshake(missing))
    }
}

/// How the subscribers receive events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Transport {
    /// `GET /ws`: WebSocket text frames (`wshub.json`).
    #[default]
    Websocket,
    /// `GET /sse`: a Server-Sent Events stream (wshub only).
    Sse,
}

/// `GET /sse?rooms=<room>` as `curl -N` or an EventSource sends it.
pub(crate) fn stream_request(host: &str, query: &str) -> Vec<u8> {
    format!("GET /sse{query} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n")
        .into_bytes()
}

/// Checks the answer to [`stream_request`]: `Ok(None)` while the head is
/// incomplete, `Ok(Some(len))` with the head's length once it is a `200`
/// with `Content-Type: text/event-stream`.
pub(crate) fn check_stream(buf: &[u8]) -> Result<Option<usize>, WireError> {
    check_head(buf, 200, "not text/event-stream", |name, value| {
        name.eq_ignore_ascii_case("content-type") && value.starts_with(b"text/event-stream")
    })
}

/// The `Sec-WebSocket-Accept` value a server must answer [`WEBSOCKET_KEY`] with.
pub(crate) fn expected_accept() -> String {
    derive_accept_key(WEBSOCKET_KEY.as_bytes())
}

/// One complete server frame found at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Frame {
    pub fin: bool,
    pub opcode: u8,
    /// Where the payload starts, from the start of the buffer.
    pub payload_at: usize,
    pub payload_len: usize,
}

impl Frame {
    /// Bytes the whole frame takes.
    pub fn len(&self) -> usize {
        self.payload_at + self.payload_len
    }
}

/// The first frame of `buf`, `Ok(None)` if it is not complete yet.
pub(crate) fn parse_frame(buf: &[u8]) -> Result<Option<Frame>, WireError> {
    let [b0, b1, ..] = *buf else {
        return Ok(None);
    };
    if b0 & 0x70 != 0 {
        return Err(WireError::Frame(
            "reserved bits set (nothing was negotiated)",
        ));
    }
    if b1 & 0x80 != 0 {
        return Err(WireError::Frame("a server frame must not be masked"));
    }
    let (len, at) = match b1 & 0x7F {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => (u64::from_be_bytes(b.try_into().unwrap_or([0xFF; 8])), 10),
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    if len > MAX_FRAME_BYTES {
        return Err(WireError::Frame("frame larger than 16 MiB"));
    }
    let opcode = b0 & 0x0F;
    let fin = b0 & 0x80 != 0;
    if opcode >= opcode::CLOSE && (!fin || len > 125) {
        return Err(WireError::Frame("fragmented or long control frame"));
    }
    let frame = Frame {
        fin,
        opcode,
        payload_at: at,
        payload_len: len as usize,
    };
    Ok((buf.len() >= frame.len()).then_some(frame))
}

/// A masked client frame (FIN set) carrying `payload`.
pub(crate) fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    wshub::protocol::masked_frame(0x80 | opcode, payload, fastrand::u32(..).to_be_bytes())
}

/// The status code of a close frame's payload (1005 when it has none).
pub(crate) fn close_code(payload: &[u8]) -> u16 {
    match payload {
        [a, b, ..] => u16::from_be_bytes([*a, *b]),
        _ => 1005,
    }
}

/// The bench's fields of one received event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BenchEvent {
    /// The room's seq.
    pub seq: u64,
    /// The publish's index in this run (payload `i`).
    pub index: u64,
    /// When the publish was due, in ns since the bench's clock started (payload `t`).
    pub due_ns: u64,
}

/// Finds `seq`, `i` and `t` in an event's JSON text, `None` for any other
/// message (welcome, heartbeat, another publisher's event).
///
/// The keys are unique in the envelope the bench publishes (the payload is
/// `{"i":…,"t":…,"pad":"xxx…"}` and no other field holds a quoted key), so a
/// substring search is exact; `seq` is searched from the end because the
/// hub puts it after the payload.
pub(crate) fn scan_event(text: &[u8]) -> Option<BenchEvent> {
    let payload = find(text, b"\"payload\":{")?;
    let body = &text[payload..];
    Some(BenchEvent {
        index: number_after(body, b"\"i\":")?,
        due_ns: number_after(body, b"\"t\":")?,
        seq: number_after_last(text, b"\"seq\":")?,
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn number_after(text: &[u8], key: &[u8]) -> Option<u64> {
    let at = find(text, key)? + key.len();
    parse_u64(&text[at..])
}

fn number_after_last(text: &[u8], key: &[u8]) -> Option<u64> {
    let at = text.windows(key.len()).rposition(|w| w == key)? + key.len();
    parse_u64(&text[at..])
}

/// The unsigned integer at the start of `text` (after optional spaces).
fn parse_u64(text: &[u8]) -> Option<u64> {
    let text = &text[text.iter().take_while(|b| **b == b' ').count()..];
    let digits = text.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 19 {
        return None;
    }
    text[..digits].iter().try_fold(0u64, |n, d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// The body of one publish: room, the bench's event type and a payload of
/// about `payload_bytes` bytes (`i`, `t` and padding), `payload` last.
pub(crate) fn publish_body(room: &str, index: u64, due_ns: u64, payload_bytes: usize) -> String {
    let head = format!("{{\"i\":{index},\"t\":{due_ns},\"pad\":\"");
    let pad = payload_bytes.saturating_sub(head.len() + 2);
    format!(
        "{{\"room\":\"{room}\",\"type\":\"{EVENT_TYPE}\",\"payload\":{head}{}\"}}}}",
        "x".repeat(pad)
    )
}

/// A keep-alive `POST /api/events` request carrying `body`.
pub(crate) fn publish_request(host: &str, body: &str, bearer: Option<&str>) -> Vec<u8> {
    let auth = bearer
        .map(|key| format!("Authorization: Bearer {key}\r\n"))
        .unwrap_or_default();
    format!(
        "POST /api/events HTTP/1.1\r\nHost: {host}\r\n{auth}Content-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A complete HTTP response at the start of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HttpReply {
    pub status: u16,
    pub body_at: usize,
    pub body_len: usize,
    /// Whether the server will close the connection after it.
    pub closes: bool,
}

/// Parses a response head and checks its body has arrived: `Ok(None)`
/// while incomplete. Only `Content-Length` bodies are accepted.
pub(crate) fn parse_reply(buf: &[u8]) -> Result<Option<HttpReply>, WireError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let head = match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD_BYTES => return Ok(None),
        Ok(httparse::Status::Partial) => return Err(WireError::Handshake("head too large")),
        Err(_) => return Err(WireError::Handshake("unparsable reply")),
    };
    let mut body_len = 0;
    let mut closes = false;
    for h in response.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            body_len = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .filter(|n| *n <= MAX_HEAD_BYTES)
                .ok_or(WireError::Handshake("bad Content-Length"))?;
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(WireError::Handshake("chunked replies are not supported"));
        } else if h.name.eq_ignore_ascii_case("connection") {
            closes = h.value.eq_ignore_ascii_case(b"close");
        }
    }
    let reply = HttpReply {
        status: response.code.unwrap_or(0),
        body_at: head,
        body_len,
        closes,
    };
    Ok((buf.len() >= head + body_len).then_some(reply))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_an_event_stream_and_refuses_others() {
        let mut ok =
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
                .to_vec();
        let head = ok.len();
        ok.extend_from_slice(b"retry: 1000\n\n");
        assert_eq!(check_stream(&ok), Ok(Some(head)));
        assert_eq!(check_stream(&ok[..20]), Ok(None));
        let refused = b"HTTP/1.1 429 Too Many Requests\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(check_stream(refused), Err(WireError::Status(429)));
        let json = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n";
        assert!(matches!(check_stream(json), Err(WireError::Handshake(_))));
        assert!(stream_request("h", "?rooms=r").starts_with(b"GET /sse?rooms=r HTTP/1.1\r\n"));
    }

    #[test]
    fn accepts_a_valid_upgrade_and_refuses_others() {
        let accept = expected_accept();
        let mut ok = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
        )
        .into_bytes();
        let head = ok.len();
        ok.extend_from_slice(b"\x81\x02{}");
        assert_eq!(check_upgrade(&ok, &accept), Ok(Some(head)));
        assert_eq!(check_upgrade(&ok[..20], &accept), Ok(None));
        let refused = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(check_upgrade(refused, &accept), Err(WireError::Status(503)));
        let wrong = b"HTTP/1.1 101 OK\r\nSec-WebSocket-Accept: nope\r\n\r\n";
        assert!(matches!(
            check_upgrade(wrong, &accept),
            Err(WireError::Handshake(_))
        ));
        assert!(check_upgrade(b"garbage\r\n\r\n", &accept).is_err());
    }

    #[test]
    fn parses_frames_of_every_length_form() {
        assert_eq!(parse_frame(b"\x81"), Ok(None));
        let small = b"\x81\x03abc";
        let f = parse_frame(small).unwrap().unwrap();
        assert_eq!((f.fin, f.opcode, f.payload_at, f.len()), (true, 1, 2, 5));
        assert_eq!(parse_frame(&small[..4]), Ok(None));
        let mut medium = vec![0x82, 126, 0x01, 0x00];
        medium.extend(vec![7; 256]);
        assert_eq!(parse_frame(&medium).unwrap().unwrap().payload_len, 256);
        let mut large = vec![0x01, 127, 0, 0, 0, 0, 0, 1, 0, 0];
        assert_eq!(parse_frame(&large), Ok(None));
        large.extend(vec![0; 65536]);
        let f = parse_frame(&large).unwrap().unwrap();
        assert_eq!((f.fin, f.payload_len), (false, 65536));
    }

    #[test]
    fn refuses_frames_a_server_must_not_send() {
        assert!(parse_frame(b"\x81\x83abcd").is_err(), "masked");
        assert!(parse_frame(b"\xC1\x00").is_err(), "rsv1");
        assert!(parse_frame(b"\x09\x00").is_err(), "fragmented ping");
        assert!(parse_frame(b"\x81\x7F\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF").is_err());
    }

    #[test]
    fn client_frames_are_masked_round_trips() {
        let frame = client_frame(opcode::PONG, b"hello");
        assert_eq!(frame[0], 0x8A);
        assert_eq!(frame[1], 0x85);
        let mask = &frame[2..6];
        let plain: Vec<u8> = frame[6..]
            .iter()
            .zip(mask.iter().cycle())
            .map(|(b, m)| b ^ m)
            .collect();
        assert_eq!(plain, b"hello");
        assert_eq!(client_frame(opcode::TEXT, &[0; 300])[1], 0x80 | 126);
        assert_eq!(close_code(&[0x0F, 0xA9, b'x']), 4009);
        assert_eq!(close_code(&[]), 1005);
    }

    #[test]
    fn scans_the_bench_fields_of_an_event() {
        let body = publish_body("r", 17, 123_456_789, 100);
        let payload = &body[body.find("\"payload\":").unwrap() + 10..body.len() - 1];
        assert_eq!(payload.len(), 100);
        let event = format!(
            "{{\"type\":\"bench\",\"payload\":{payload},\"correlation_id\":\"c\",\"timestamp\":\"2026-01-01T00:00:00.000Z\",\"id\":\"x\",\"room\":\"r\",\"seq\":42}}"
        );
        let want = BenchEvent {
            seq: 42,
            index: 17,
            due_ns: 123_456_789,
        };
        assert_eq!(scan_event(event.as_bytes()), Some(want));
        // Field order does not matter, nor spaces after colons.
        let other = r#"{"seq": 42, "room":"r", "type":"bench", "payload": {"i": 17, "t":123456789,"pad":""}}"#;
        assert_eq!(
            scan_event(other.as_bytes()),
            None,
            "the payload key must be exact"
        );
        let other = r#"{"seq": 42,"payload":{"i": 17,"t":123456789,"pad":""}}"#;
        assert_eq!(scan_event(other.as_bytes()), Some(want));
        let welcome = br#"{"type":"welcome","payload":{"rooms":["r"]},"correlation_id":"c"}"#;
        assert_eq!(scan_event(welcome), None);
        assert_eq!(
            scan_event(br#"{"payload":{"i":1,"t":99999999999999999999},"seq":1}"#),
            None
        );
    }

    #[test]
    fn parses_publish_replies() {
        let reply = b"HTTP/1.1 202 Accepted\r\nContent-Length: 12\r\n\r\n{\"seq\":1234}";
        let r = parse_reply(reply).unwrap().unwrap();
        assert_eq!((r.status, r.body_len, r.closes), (202, 12, false));
        assert_eq!(&reply[r.body_at..r.body_at + r.body_len], b"{\"seq\":1234}");
        assert_eq!(parse_reply(&reply[..reply.len() - 1]), Ok(None));
        let closing = b"HTTP/1.1 503 X\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
        assert!(parse_reply(closing).unwrap().unwrap().closes);
        assert!(parse_reply(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").is_err());
        let request = publish_request("h:1", "{}", Some("k"));
        assert!(
            String::from_utf8(request)
                .unwrap()
                .contains("Authorization: Bearer k\r\n")
        );
    }
}
