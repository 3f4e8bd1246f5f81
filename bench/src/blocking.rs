//! Blocking clients for the attack and soak runs, where one connection is
//! driven by one thread: a TCP connect from a chosen source address, a
//! WebSocket whose every read has a deadline (Pings are answered as they
//! come), and keep-alive HTTP. Each call is bounded by the deadline or
//! timeout it is given.

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

use super::client::{FrameReader, Incoming};
use super::wire::{self, opcode};

/// Bytes taken from a socket per read.
const READ_CHUNK: usize = 64 * 1024;

/// Opens a TCP connection to `to` from `from` (any port), within `timeout`.
pub(crate) fn tcp(
    from: Option<IpAddr>,
    to: SocketAddr,
    timeout: Duration,
) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(to), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_tcp_nodelay(true)?;
    if let Some(ip) = from {
        socket.bind(&SocketAddr::new(ip, 0).into())?;
    }
    socket.connect_timeout(&to.into(), timeout)?;
    Ok(socket.into())
}

/// A message the hub sent, as a blocking client keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Message {
    /// A text or binary message.
    Data(Vec<u8>),
    /// A Close with its status code.
    Close(u16),
}

/// A WebSocket connection read with deadlines.
#[derive(Debug)]
pub(crate) struct Ws {
    stream: TcpStream,
    reader: FrameReader,
    inbox: VecDeque<Message>,
    chunk: Vec<u8>,
}

impl Ws {
    /// Connects, upgrades with `query` (say `?rooms=r`), and returns once
    /// the 101 has come; the welcome is the first message [`Ws::recv`] gives.
    pub fn open(
        from: Option<IpAddr>,
        addr: SocketAddr,
        query: &str,
        timeout: Duration,
    ) -> Result<Self, String> {
        let deadline = Instant::now() + timeout;
        let stream = tcp(from, addr, timeout).map_err(|e| format!("connect: {e}"))?;
        stream
            .set_write_timeout(Some(timeout))
            .map_err(|e| e.to_string())?;
        (&stream)
            .write_all(&wire::upgrade_request(&addr.to_string(), query))
            .map_err(|e| format!("upgrade: {e}"))?;
        let accept = wire::expected_accept();
        let mut head = Vec::new();
        let mut chunk = vec![0; READ_CHUNK];
        loop {
            let n = read_by(&stream, &mut chunk, deadline)
                .map_err(|e| format!("upgrade: {e}"))?
                .ok_or("upgrade: no answer in time")?;
            if n == 0 {
                return Err("upgrade: closed".into());
            }
            head.extend_from_slice(&chunk[..n]);
            if let Some(len) = wire::check_upgrade(&head, &accept).map_err(|e| e.to_string())? {
                let mut ws = Self {
                    stream,
                    reader: FrameReader::default(),
                    inbox: VecDeque::new(),
                    chunk,
                };
                let rest = head.split_off(len);
                ws.take(&rest).map_err(|e| e.to_string())?;
                return Ok(ws);
            }
        }
    }

    /// Sends one text message.
    pub fn send_text(&mut self, text: &str) -> io::Result<()> {
        let frame = wire::client_frame(opcode::TEXT, text.as_bytes());
        (&self.stream).write_all(&frame)
    }

    /// The next message, or `Ok(None)` if none came by `deadline`; an
    /// error once the connection is gone.
    pub fn recv(&mut self, deadline: Instant) -> Result<Option<Message>, String> {
        loop {
            if let Some(message) = self.inbox.pop_front() {
                return Ok(Some(message));
            }
            let mut chunk = std::mem::take(&mut self.chunk);
            let read = read_by(&self.stream, &mut chunk, deadline);
            let result = match read {
                Ok(Some(0)) => Err("closed".to_string()),
                Ok(Some(n)) => self.take(&chunk[..n]).map_err(|e| e.to_string()),
                Ok(None) => {
                    self.chunk = chunk;
                    return Ok(None);
                }
                Err(e) => Err(e.to_string()),
            };
            self.chunk = chunk;
            result?;
        }
    }

    /// The socket, for a client that writes raw frames from here on.
    pub fn into_stream(self) -> TcpStream {
        self.stream
    }

    /// Sends Close 1000 and waits up to `timeout` for the hub's answer.
    pub fn close(mut self, timeout: Duration) {
        let frame = wire::client_frame(opcode::CLOSE, &1000u16.to_be_bytes());
        // A hub that is gone needs no goodbye.
        if (&self.stream).write_all(&frame).is_err() {
            return;
        }
        let deadline = Instant::now() + timeout;
        while let Ok(Some(message)) = self.recv(deadline) {
            if matches!(message, Message::Close(_)) {
                return;
            }
        }
    }

    /// Parses bytes just read; answers Pings at once.
    fn take(&mut self, data: &[u8]) -> Result<(), wire::WireError> {
        let mut pongs = Vec::new();
        let inbox = &mut self.inbox;
        self.reader.feed(data, |incoming| match incoming {
            Incoming::Message(m) => inbox.push_back(Message::Data(m.to_vec())),
            Incoming::Ping(p) => pongs.extend(wire::client_frame(opcode::PONG, p)),
            Incoming::Close(code) => inbox.push_back(Message::Close(code)),
        })?;
        if !pongs.is_empty() {
            // A write that fails shows as a failed read next.
            let _ = (&self.stream).write_all(&pongs);
        }
        Ok(())
    }
}

/// One read that waits until `deadline` at the latest: `Ok(None)` if
/// nothing came by then.
fn read_by(stream: &TcpStream, buf: &mut [u8], deadline: Instant) -> io::Result<Option<usize>> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        // A zero timeout would mean "wait for ever".
        stream.set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
        match (&*stream).read(buf) {
            Ok(n) => return Ok(Some(n)),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(None);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// A keep-alive HTTP/1.1 connection with one request in flight.
#[derive(Debug)]
pub(crate) struct Http {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// One answer to a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
    /// The server closes the connection after it.
    pub closes: bool,
}

impl Http {
    /// Connects to `addr` within `timeout`.
    pub fn open(addr: SocketAddr, timeout: Duration) -> io::Result<Self> {
        let stream = tcp(None, addr, timeout)?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(Self {
            stream,
            buf: Vec::with_capacity(4096),
        })
    }

    /// Writes `request` and reads its answer by `deadline`.
    pub fn exchange(&mut self, request: &[u8], deadline: Instant) -> Result<Answer, String> {
        (&self.stream)
            .write_all(request)
            .map_err(|e| format!("write: {:?}", e.kind()))?;
        let mut chunk = [0u8; 8192];
        loop {
            if let Some(reply) = wire::parse_reply(&self.buf).map_err(|e| e.to_string())? {
                let end = reply.body_at + reply.body_len;
                let body = self.buf[reply.body_at..end].to_vec();
                self.buf.drain(..end);
                return Ok(Answer {
                    status: reply.status,
                    body,
                    closes: reply.closes,
                });
            }
            match read_by(&self.stream, &mut chunk, deadline) {
                Ok(Some(0)) => return Err("connection closed".into()),
                Ok(Some(n)) => self.buf.extend_from_slice(&chunk[..n]),
                Ok(None) => return Err("timed out".into()),
                Err(e) => return Err(format!("read: {:?}", e.kind())),
            }
        }
    }
}

/// Publishes events of type `soak` over one keep-alive connection,
/// opened again when the hub closes it.
pub(crate) struct Publisher {
    addr: SocketAddr,
    pub bearer: Option<String>,
    http: Option<Http>,
}

impl Publisher {
    pub fn new(addr: SocketAddr, bearer: Option<&str>) -> Self {
        Self {
            addr,
            bearer: bearer.map(String::from),
            http: None,
        }
    }

    /// One event with a payload of about `bytes`; fails unless answered
    /// 202. A kept-alive connection the hub closed meanwhile is opened
    /// again, once.
    pub fn publish(&mut self, room: &str, bytes: usize) -> Result<(), String> {
        let reused = self.http.is_some();
        match self.try_publish(room, bytes) {
            Err(_) if reused => self.try_publish(room, bytes),
            result => result,
        }
    }

    fn try_publish(&mut self, room: &str, bytes: usize) -> Result<(), String> {
        let timeout = Duration::from_secs(10);
        let http = match &mut self.http {
            Some(http) => http,
            None => self
                .http
                .insert(Http::open(self.addr, timeout).map_err(|e| e.to_string())?),
        };
        let body = format!(
            r#"{{"room":"{room}","type":"soak","payload":{{"pad":"{}"}}}}"#,
            "x".repeat(bytes)
        );
        let request = wire::publish_request(&self.addr.to_string(), &body, self.bearer.as_deref());
        let answer = http.exchange(&request, Instant::now() + timeout);
        match answer {
            Ok(a) if a.status == 202 => {
                if a.closes {
                    self.http = None;
                }
                Ok(())
            }
            Ok(a) => Err(format!("publish answered HTTP {}", a.status)),
            Err(e) => {
                self.http = None;
                Err(format!("publish: {e}"))
            }
        }
    }
}

/// `GET path` on a connection of its own, answered within `timeout`.
pub(crate) fn get(
    addr: SocketAddr,
    path: &str,
    bearer: Option<&str>,
    timeout: Duration,
) -> Result<Answer, String> {
    let mut http = Http::open(addr, timeout).map_err(|e| format!("connect: {e}"))?;
    let auth = bearer
        .map(|key| format!("Authorization: Bearer {key}\r\n"))
        .unwrap_or_default();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n");
    http.exchange(request.as_bytes(), Instant::now() + timeout)
}

/// The hub's `wshub_disconnects_total` counters by reason, from `/metrics`.
pub(crate) fn disconnects(addr: SocketAddr, bearer: Option<&str>) -> Option<BTreeMap<String, u64>> {
    let answer = get(addr, "/metrics", bearer, Duration::from_secs(5)).ok()?;
    (answer.status == 200).then(|| parse_disconnects(&String::from_utf8_lossy(&answer.body)))
}

/// `wshub_disconnects_total{reason="R"} N` lines as R → N.
fn parse_disconnects(metrics: &str) -> BTreeMap<String, u64> {
    let prefix = "wshub_disconnects_total{reason=\"";
    metrics
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(prefix)?;
            let (reason, value) = rest.split_once("\"}")?;
            Some((reason.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

/// Open WebSocket connections by the hub's `GET /health`, if it answers.
pub(crate) fn health_connections(addr: SocketAddr) -> Option<u64> {
    let answer = get(addr, "/health", None, Duration::from_secs(5)).ok()?;
    let body: serde_json::Value = serde_json::from_slice(&answer.body).ok()?;
    body["connections"].as_u64()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn a_websocket_answers_pings_and_reads_by_deadline() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut socket, _) = listener.accept().unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                socket.read_exact(&mut byte).unwrap();
                head.push(byte[0]);
            }
            let accept = wire::expected_accept();
            let answer = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                 Sec-WebSocket-Accept: {accept}\r\n\r\n"
            );
            socket.write_all(answer.as_bytes()).unwrap();
            // A welcome, a Ping, then a Close 4009.
            socket.write_all(b"\x81\x02hi\x89\x01p").unwrap();
            let mut pong = [0u8; 7];
            socket.read_exact(&mut pong).unwrap();
            socket.write_all(b"\x88\x02\x0f\xa9").unwrap();
            pong[0]
        });
        let mut ws = Ws::open(None, addr, "", Duration::from_secs(5)).unwrap();
        let soon = Instant::now() + Duration::from_secs(5);
        assert_eq!(ws.recv(soon).unwrap(), Some(Message::Data(b"hi".to_vec())));
        assert_eq!(ws.recv(soon).unwrap(), Some(Message::Close(4009)));
        assert_eq!(server.join().unwrap(), 0x8A, "the Ping was answered");
        let past = Instant::now();
        assert!(ws.recv(past).unwrap_or(None).is_none());
    }

    #[test]
    fn reads_disconnect_counters() {
        let text = "# HELP wshub_disconnects_total x\nwshub_disconnects_total{reason=\"normal\"} 12\n\
                    wshub_disconnects_total{reason=\"slow_consumer\"} 3\nwshub_rooms 4\n";
        let map = parse_disconnects(text);
        assert_eq!(map.len(), 2);
        assert_eq!((map["normal"], map["slow_consumer"]), (12, 3));
    }

    #[test]
    fn http_reads_one_answer_at_a_time() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut socket, _) = listener.accept().unwrap();
            let two = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 202 Accepted\r\n\
                       Connection: close\r\nContent-Length: 0\r\n\r\n";
            socket.write_all(two.as_bytes()).unwrap();
        });
        let mut http = Http::open(addr, Duration::from_secs(5)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let first = http.exchange(b"", deadline).unwrap();
        assert_eq!((first.status, first.body.as_slice()), (200, &b"ok"[..]));
        let second = http.exchange(b"", deadline).unwrap();
        assert_eq!((second.status, second.closes), (202, true));
    }
}
