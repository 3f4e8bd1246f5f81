//! The lean client under every benchmark connection: a socket bound to a
//! chosen loopback source address, the upgrade (or the `/sse` request),
//! and a reader that reassembles messages — WebSocket frames or SSE events
//! — from whatever the socket gives, keeping only the unfinished tail of a
//! read per connection.

use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr, TcpStream};

use futures_lite::AsyncWriteExt;
use smol::Async;
use socket2::{Domain, Protocol, Socket, Type};

use super::wire::{self, Frame, Transport, WireError, opcode};

/// `EINPROGRESS` on Linux: a non-blocking connect has started.
const EINPROGRESS: i32 = 115;

/// Opens a TCP connection to `to` from `from` (any port), without blocking.
pub(crate) async fn connect(from: Option<IpAddr>, to: SocketAddr) -> io::Result<Async<TcpStream>> {
    let socket = Socket::new(Domain::for_address(to), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    // Frames are small; a Pong or a publish must not wait for more.
    socket.set_tcp_nodelay(true)?;
    if let Some(ip) = from {
        socket.bind(&SocketAddr::new(ip, 0).into())?;
    }
    match socket.connect(&to.into()) {
        Ok(()) => {}
        Err(e)
            if e.raw_os_error() == Some(EINPROGRESS) || e.kind() == io::ErrorKind::WouldBlock => {}
        Err(e) => return Err(e),
    }
    let stream = Async::new(TcpStream::from(socket))?;
    stream.writable().await?;
    if let Some(e) = stream.get_ref().take_error()? {
        return Err(e);
    }
    Ok(stream)
}

/// Sends the upgrade request for `query` (say `?rooms=r`) and reads the 101
/// answer; returns bytes that came after it (the first frames).
pub(crate) async fn upgrade(
    stream: &Async<TcpStream>,
    host: &str,
    query: &str,
    accept: &str,
) -> Result<Vec<u8>, ConnectError> {
    let request = wire::upgrade_request(host, query);
    exchange_head(stream, &request, |head| wire::check_upgrade(head, accept)).await
}

/// Sends the `/sse` request for `query` and reads the `200` head; returns
/// the bytes that came after it (`retry:` and the welcome, perhaps).
pub(crate) async fn open_stream(
    stream: &Async<TcpStream>,
    host: &str,
    query: &str,
) -> Result<Vec<u8>, ConnectError> {
    let request = wire::stream_request(host, query);
    exchange_head(stream, &request, wire::check_stream).await
}

/// Writes `request`, then reads until `check` finds the answer's head
/// complete; returns the bytes after the head.
async fn exchange_head(
    stream: &Async<TcpStream>,
    request: &[u8],
    check: impl Fn(&[u8]) -> Result<Option<usize>, WireError>,
) -> Result<Vec<u8>, ConnectError> {
    send(stream, request).await?;
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 2048];
    loop {
        let n = stream.read_with(|io| (&*io).read(&mut chunk)).await?;
        if n == 0 {
            return Err(ConnectError::Closed);
        }
        head.extend_from_slice(&chunk[..n]);
        if let Some(len) = check(&head)? {
            return Ok(head.split_off(len));
        }
    }
}

/// Writes `bytes` in full.
pub(crate) async fn send(stream: &Async<TcpStream>, bytes: &[u8]) -> io::Result<()> {
    (&*stream).write_all(bytes).await
}

/// Why a connection could not be opened.
#[derive(Debug)]
pub(crate) enum ConnectError {
    Io(io::Error),
    Wire(WireError),
    Closed,
    TimedOut,
}

impl ConnectError {
    /// A short label to count failures by.
    pub fn kind(&self) -> String {
        match self {
            Self::Io(e) => match e.raw_os_error() {
                Some(99) => "address not available (ephemeral ports exhausted)".into(),
                Some(24) => "too many open files".into(),
                _ => format!("{:?}", e.kind()),
            },
            Self::Wire(WireError::Status(code)) => format!("HTTP {code}"),
            Self::Wire(e) => e.to_string(),
            Self::Closed => "closed before the welcome".into(),
            Self::TimedOut => "timed out".into(),
        }
    }
}

impl From<io::Error> for ConnectError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

impl From<WireError> for ConnectError {
    fn from(e: WireError) -> Self {
        Self::Wire(e)
    }
}

/// What a read brought, as the reader hands it on.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Incoming<'a> {
    /// A whole text or binary message.
    Message(&'a [u8]),
    /// A Ping with its payload, to be answered with a Pong.
    Ping(&'a [u8]),
    /// A Close with its status code.
    Close(u16),
}

/// Reassembles the messages of either transport across reads.
#[derive(Debug)]
pub(crate) enum Reader {
    Frames(FrameReader),
    Events(EventReader),
}

impl Reader {
    /// A reader for `transport`.
    pub fn new(transport: Transport) -> Self {
        match transport {
            Transport::Websocket => Self::Frames(FrameReader::default()),
            Transport::Sse => Self::Events(EventReader::default()),
        }
    }

    /// Parses `data` and hands each complete message (and, on a WebSocket,
    /// Ping and Close) to `on`, in order.
    pub fn feed(&mut self, data: &[u8], on: impl FnMut(Incoming<'_>)) -> Result<(), WireError> {
        match self {
            Self::Frames(frames) => frames.feed(data, on),
            Self::Events(events) => events.feed(data, on),
        }
    }
}

/// Reassembles SSE events across reads: each block ending in a blank line
/// with a `data:` line is one message (the hub sends one `data:` line per
/// message, and ends its lines with LF); `retry:`, `id:` and comments are
/// passed over.
#[derive(Debug, Default)]
pub(crate) struct EventReader {
    /// The unfinished block at the end of the last read.
    pending: Vec<u8>,
}

impl EventReader {
    /// Parses `data` (after what is pending), handing each message to `on`.
    pub fn feed(&mut self, data: &[u8], mut on: impl FnMut(Incoming<'_>)) -> Result<(), WireError> {
        if self.pending.is_empty() {
            let used = Self::parse(data, &mut on);
            self.pending.extend_from_slice(&data[used..]);
        } else {
            let mut pending = std::mem::take(&mut self.pending);
            pending.extend_from_slice(data);
            let used = Self::parse(&pending, &mut on);
            pending.drain(..used);
            self.pending = pending;
        }
        if self.pending.len() as u64 > wire::MAX_FRAME_BYTES {
            return Err(WireError::Frame("event larger than 16 MiB"));
        }
        Ok(())
    }

    /// Parses whole blocks from `buf`; returns the bytes used.
    fn parse(buf: &[u8], on: &mut impl FnMut(Incoming<'_>)) -> usize {
        let mut at = 0;
        while let Some(end) = find_blank_line(&buf[at..]) {
            let block = &buf[at..at + end];
            for line in block.split(|b| *b == b'\n') {
                if let Some(data) = line.strip_prefix(b"data: ") {
                    on(Incoming::Message(data));
                }
            }
            at += end + 2;
        }
        at
    }
}

/// Where `\n\n` starts in `buf`, if it holds one.
fn find_blank_line(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\n\n")
}

/// Reassembles frames and messages across reads.
#[derive(Debug, Default)]
pub(crate) struct FrameReader {
    /// The unfinished frame at the end of the last read.
    pending: Vec<u8>,
    /// A fragmented message being gathered (the hub never fragments).
    message: Vec<u8>,
    in_message: bool,
}

impl FrameReader {
    /// Parses `data` (after what is pending) and hands each complete
    /// message, Ping and Close to `on`, in order.
    pub fn feed(&mut self, data: &[u8], mut on: impl FnMut(Incoming<'_>)) -> Result<(), WireError> {
        if self.pending.is_empty() {
            let used = self.parse(data, &mut on)?;
            self.pending.extend_from_slice(&data[used..]);
        } else {
            let mut pending = std::mem::take(&mut self.pending);
            pending.extend_from_slice(data);
            let used = self.parse(&pending, &mut on)?;
            pending.drain(..used);
            self.pending = pending;
        }
        Ok(())
    }

    /// Parses whole frames from `buf`; returns the bytes used.
    fn parse(&mut self, buf: &[u8], on: &mut impl FnMut(Incoming<'_>)) -> Result<usize, WireError> {
        let mut at = 0;
        while let Some(frame) = wire::parse_frame(&buf[at..])? {
            let payload = &buf[at + frame.payload_at..at + frame.len()];
            self.frame(frame, payload, on)?;
            at += frame.len();
        }
        Ok(at)
    }

    fn frame(
        &mut self,
        frame: Frame,
        payload: &[u8],
        on: &mut impl FnMut(Incoming<'_>),
    ) -> Result<(), WireError> {
        match frame.opcode {
            opcode::TEXT | opcode::BINARY if self.in_message => {
                Err(WireError::Frame("new message inside a fragmented one"))
            }
            opcode::TEXT | opcode::BINARY if frame.fin => {
                on(Incoming::Message(payload));
                Ok(())
            }
            opcode::TEXT | opcode::BINARY => {
                self.in_message = true;
                self.message.clear();
                self.message.extend_from_slice(payload);
                Ok(())
            }
            opcode::CONTINUATION if self.in_message => {
                self.message.extend_from_slice(payload);
                if self.message.len() as u64 > wire::MAX_FRAME_BYTES {
                    return Err(WireError::Frame("message larger than 16 MiB"));
                }
                if frame.fin {
                    self.in_message = false;
                    on(Incoming::Message(&self.message));
                    self.message = Vec::new();
                }
                Ok(())
            }
            opcode::CONTINUATION => Err(WireError::Frame("continuation without a message")),
            opcode::PING => {
                on(Incoming::Ping(payload));
                Ok(())
            }
            opcode::PONG => Ok(()),
            opcode::CLOSE => {
                on(Incoming::Close(wire::close_code(payload)));
                Ok(())
            }
            _ => Err(WireError::Frame("unknown opcode")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    trait Feed {
        fn feed_all(
            &mut self,
            data: &[u8],
            on: &mut dyn FnMut(Incoming<'_>),
        ) -> Result<(), WireError>;
    }

    impl Feed for FrameReader {
        fn feed_all(
            &mut self,
            data: &[u8],
            on: &mut dyn FnMut(Incoming<'_>),
        ) -> Result<(), WireError> {
            self.feed(data, on)
        }
    }

    impl Feed for Reader {
        fn feed_all(
            &mut self,
            data: &[u8],
            on: &mut dyn FnMut(Incoming<'_>),
        ) -> Result<(), WireError> {
            self.feed(data, on)
        }
    }

    fn collect(reader: &mut impl Feed, data: &[u8]) -> Vec<String> {
        let mut seen = Vec::new();
        reader
            .feed_all(data, &mut |m| {
                seen.push(match m {
                    Incoming::Message(b) => String::from_utf8_lossy(b).into_owned(),
                    Incoming::Ping(b) => format!("ping:{}", b.len()),
                    Incoming::Close(code) => format!("close:{code}"),
                })
            })
            .unwrap();
        seen
    }

    #[test]
    fn reassembles_events_split_anywhere() {
        let stream = b"retry: 1000\n\nid: e;r=0\ndata: {\"type\":\"welcome\"}\n\n: heartbeat\n\nid: e;r=1\ndata: {\"seq\":1}\n\ndata: {}\n\n";
        let want = ["{\"type\":\"welcome\"}", "{\"seq\":1}", "{}"];
        for split in 0..stream.len() {
            let mut reader = Reader::new(Transport::Sse);
            let mut seen = collect(&mut reader, &stream[..split]);
            seen.extend(collect(&mut reader, &stream[split..]));
            assert_eq!(seen, want, "split at {split}");
        }
    }

    #[test]
    fn reassembles_frames_split_anywhere() {
        let stream = b"\x81\x05hello\x89\x00\x01\x02ab\x80\x01c\x81\x03xyz\x88\x02\x03\xe8";
        let want = ["hello", "ping:0", "abc", "xyz", "close:1000"];
        for split in 0..stream.len() {
            let mut reader = FrameReader::default();
            let mut seen = collect(&mut reader, &stream[..split]);
            seen.extend(collect(&mut reader, &stream[split..]));
            assert_eq!(seen, want, "split at {split}");
            assert!(reader.pending.is_empty());
        }
        let mut reader = FrameReader::default();
        let seen: Vec<String> = stream
            .iter()
            .flat_map(|b| collect(&mut reader, &[*b]))
            .collect();
        assert_eq!(seen, want, "one byte at a time");
    }

    #[test]
    fn refuses_broken_fragmentation() {
        let mut reader = FrameReader::default();
        assert!(reader.feed(b"\x80\x01a", |_| {}).is_err());
        let mut reader = FrameReader::default();
        assert!(reader.feed(b"\x01\x01a\x81\x01b", |_| {}).is_err());
        let mut reader = FrameReader::default();
        assert!(reader.feed(b"\x83\x00", |_| {}).is_err());
    }
}
