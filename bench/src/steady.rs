//! A subscriber thread's steady state: every welcomed socket of the thread
//! registered once on the thread's `mio::Poll`, edge-triggered (mio always
//! registers with `EPOLLET`), so a delivery costs its reads and nothing
//! more: no `epoll_ctl` to re-arm a oneshot registration after each read,
//! no task to wake. Each readiness event is drained with non-blocking reads
//! into the thread's one buffer until the socket would block, or until the
//! turn's reads are used up (the socket is then read again on the next
//! turn, so one busy socket cannot starve the rest). Replies (Pongs, the
//! Close reply) are written at once; what a socket does not take waits for
//! it to be writable.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use async_channel::Receiver;
use mio::{Events, Interest, Poll, Registry, Token};

use super::record::Run;
use super::subscribers::{Conn, READ_CHUNK, ThreadReport};

/// The token of a thread's waker (the run stopped).
pub(crate) const WAKE: Token = Token(usize::MAX);
/// Reads one socket gets per turn; past them, the rest waits for the next turn.
const READS_PER_TURN: usize = 16;
/// Readiness events taken per wait.
const EVENTS: usize = 1024;
/// Longest wait before the loop looks at whether the run stopped (the stop
/// also wakes it at once).
const POLL_TIMEOUT: Duration = Duration::from_millis(100);
/// Reply bytes a peer may leave unread before its connection is given up.
const MAX_OUTBOX: usize = 1 << 20;

/// A welcomed connection being read.
struct Open {
    conn: Conn,
    stream: mio::net::TcpStream,
    /// Registered for writability too (replies were left waiting).
    writable: bool,
}

/// Reads `welcomed` until `stopped` closes, recording into `report` and `run`.
pub(crate) fn run(
    mut poll: Poll,
    welcomed: Vec<(Conn, TcpStream)>,
    report: &mut ThreadReport,
    run: &Run,
    stopped: &Receiver<()>,
) {
    let mut slots: Vec<Option<Open>> = (0..report.tracks.len()).map(|_| None).collect();
    // Bytes may have come before the registration: every socket is read
    // once on the first turn.
    let mut ready = Vec::with_capacity(welcomed.len());
    for (mut conn, stream) in welcomed {
        let local = conn.local;
        match register(poll.registry(), stream, local) {
            Ok(stream) => {
                slots[local] = Some(Open {
                    conn,
                    stream,
                    writable: false,
                });
                ready.push(local);
            }
            Err(e) => {
                conn.ended = Some(format!("register error: {:?}", e.kind()));
                conn.finish(report, run);
            }
        }
    }
    let mut events = Events::with_capacity(EVENTS);
    let mut buffer = vec![0; READ_CHUNK];
    let mut turn = Vec::with_capacity(EVENTS);
    while !stopped.is_closed() {
        let timeout = if ready.is_empty() {
            POLL_TIMEOUT
        } else {
            Duration::ZERO
        };
        if let Err(e) = poll.poll(&mut events, Some(timeout)) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            // Nothing can be read any more: every open subscriber ends here.
            for mut open in slots.iter_mut().filter_map(Option::take) {
                open.conn.ended = Some(format!("poll error: {:?}", e.kind()));
                close(open, poll.registry(), report, run);
            }
            return;
        }
        std::mem::swap(&mut turn, &mut ready);
        turn.extend(
            events
                .iter()
                .map(|event| event.token())
                .filter(|token| *token != WAKE)
                .map(|token| token.0),
        );
        for local in turn.drain(..) {
            let Some(Some(open)) = slots.get_mut(local) else {
                continue;
            };
            match service(open, &mut buffer, poll.registry(), report, run) {
                Turn::Idle => {}
                Turn::More => ready.push(local),
                Turn::Ended => {
                    if let Some(open) = slots[local].take() {
                        close(open, poll.registry(), report, run);
                    }
                }
            }
        }
    }
    // Dropping the slots closes every socket still open.
}

/// Hands `stream` to `mio`, for reading.
fn register(
    registry: &Registry,
    stream: TcpStream,
    local: usize,
) -> io::Result<mio::net::TcpStream> {
    stream.set_nonblocking(true)?;
    let mut stream = mio::net::TcpStream::from_std(stream);
    registry.register(&mut stream, Token(local), Interest::READABLE)?;
    Ok(stream)
}

/// What a connection needs after its turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Turn {
    /// Nothing until its next readiness event.
    Idle,
    /// Bytes may be left: read it again on the next turn.
    More,
    Ended,
}

/// Reads what `open` has, handles it, and writes its replies.
fn service(
    open: &mut Open,
    buffer: &mut [u8],
    registry: &Registry,
    report: &mut ThreadReport,
    run: &Run,
) -> Turn {
    let conn = &mut open.conn;
    let drained = drain(&mut open.stream, buffer, READS_PER_TURN, |data| {
        conn.take(data, run.now(), report, run);
        conn.ended.is_none()
    });
    match drained {
        Drained::Eof if conn.ended.is_none() => {
            conn.ended = Some("closed without a close frame".into());
        }
        Drained::Failed(kind) if conn.ended.is_none() => {
            conn.ended = Some(format!("read error: {kind:?}"));
        }
        _ => {}
    }
    if conn.ended.is_some() {
        return Turn::Ended;
    }
    match flush(&mut open.stream, &mut conn.outbox) {
        Ok(true) => {}
        Ok(false) if conn.outbox.len() > MAX_OUTBOX => {
            conn.ended = Some("replies left unread".into());
            return Turn::Ended;
        }
        Ok(false) if !open.writable => {
            let interest = Interest::READABLE | Interest::WRITABLE;
            if let Err(e) = registry.reregister(&mut open.stream, Token(conn.local), interest) {
                conn.ended = Some(format!("register error: {:?}", e.kind()));
                return Turn::Ended;
            }
            open.writable = true;
        }
        Ok(false) => {}
        // A peer that stopped reading is seen on the next read.
        Err(_) => conn.outbox.clear(),
    }
    if drained == Drained::Budget {
        Turn::More
    } else {
        Turn::Idle
    }
}

/// Ends a welcomed connection: its last replies if the socket takes them
/// now, then the socket closes.
fn close(mut open: Open, registry: &Registry, report: &mut ThreadReport, run: &Run) {
    let _ = flush(&mut open.stream, &mut open.conn.outbox);
    let _ = registry.deregister(&mut open.stream);
    open.conn.finish(report, run);
}

/// How reading a socket until it had nothing more ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Drained {
    /// It would block: wait for its next readiness event.
    Empty,
    /// The reads allowed were used up; there may be more.
    Budget,
    /// The handler asked to stop (the connection ended).
    Stopped,
    /// The peer closed its side.
    Eof,
    Failed(io::ErrorKind),
}

/// Reads `source` into `buffer` until it would block, at most `reads`
/// times, handing each read's bytes to `on` (which returns whether to go on).
fn drain(
    source: &mut impl Read,
    buffer: &mut [u8],
    reads: usize,
    mut on: impl FnMut(&[u8]) -> bool,
) -> Drained {
    for _ in 0..reads {
        match source.read(buffer) {
            Ok(0) => return Drained::Eof,
            Ok(n) => {
                if !on(&buffer[..n]) {
                    return Drained::Stopped;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Drained::Empty,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Drained::Failed(e.kind()),
        }
    }
    Drained::Budget
}

/// Writes as much of `outbox` as `sink` takes without blocking, removing it:
/// `Ok(true)` when all went, `Ok(false)` when the rest must wait.
fn flush(sink: &mut impl Write, outbox: &mut Vec<u8>) -> io::Result<bool> {
    let mut written = 0;
    let result = loop {
        if written == outbox.len() {
            break Ok(true);
        }
        match sink.write(&outbox[written..]) {
            Ok(0) => break Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
    };
    outbox.drain(..written);
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::net::TcpListener;
    use std::sync::atomic::Ordering::Relaxed;
    use std::time::Instant;

    use mio::Waker;

    use super::super::subscribers::SeqTrack;

    /// A reader or writer that answers from a script.
    #[derive(Default)]
    struct Script {
        reads: VecDeque<io::Result<Vec<u8>>>,
        /// Bytes each write takes; `None` for WouldBlock.
        writes: VecDeque<Option<usize>>,
        written: Vec<u8>,
    }

    impl Read for Script {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            match self.reads.pop_front() {
                Some(Ok(bytes)) => {
                    buf[..bytes.len()].copy_from_slice(&bytes);
                    Ok(bytes.len())
                }
                Some(Err(e)) => Err(e),
                None => Err(io::ErrorKind::WouldBlock.into()),
            }
        }
    }

    impl Write for Script {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            match self.writes.pop_front() {
                Some(Some(n)) => {
                    let n = n.min(buf.len());
                    self.written.extend_from_slice(&buf[..n]);
                    Ok(n)
                }
                Some(None) => Err(io::ErrorKind::WouldBlock.into()),
                None => {
                    self.written.extend_from_slice(buf);
                    Ok(buf.len())
                }
            }
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn reads(script: Vec<io::Result<&[u8]>>) -> Script {
        Script {
            reads: script.into_iter().map(|r| r.map(<[u8]>::to_vec)).collect(),
            ..Script::default()
        }
    }

    fn drained(source: &mut Script, reads: usize, stop_at: usize) -> (Drained, Vec<Vec<u8>>) {
        let mut buffer = [0; 16];
        let mut seen = Vec::new();
        let result = drain(source, &mut buffer, reads, |data| {
            seen.push(data.to_vec());
            seen.len() < stop_at
        });
        (result, seen)
    }

    #[test]
    fn drains_until_the_socket_would_block() {
        let mut source = reads(vec![
            Ok(b"ab"),
            Err(io::ErrorKind::Interrupted.into()),
            Ok(b"c"),
        ]);
        let (result, seen) = drained(&mut source, 16, usize::MAX);
        assert_eq!(result, Drained::Empty);
        assert_eq!(seen, [b"ab".to_vec(), b"c".to_vec()]);
    }

    #[test]
    fn drain_stops_at_the_end_an_error_the_handler_or_the_budget() {
        let (result, seen) = drained(&mut reads(vec![Ok(b"a"), Ok(b"")]), 16, usize::MAX);
        assert_eq!((result, seen.len()), (Drained::Eof, 1));
        let reset = io::ErrorKind::ConnectionReset;
        let (result, _) = drained(&mut reads(vec![Err(reset.into())]), 16, usize::MAX);
        assert_eq!(result, Drained::Failed(reset));
        let mut source = reads(vec![Ok(b"a"), Ok(b"b"), Ok(b"c")]);
        assert_eq!(drained(&mut source, 16, 2).0, Drained::Stopped);
        assert_eq!(source.reads.len(), 1, "nothing read after the stop");
        let mut source = reads(vec![Ok(b"a"), Ok(b"b"), Ok(b"c")]);
        assert_eq!(drained(&mut source, 2, usize::MAX).0, Drained::Budget);
        assert_eq!(drained(&mut source, 2, usize::MAX).0, Drained::Empty);
    }

    #[test]
    fn flush_keeps_what_the_socket_did_not_take() {
        let mut sink = Script {
            writes: [Some(2), None].into(),
            ..Script::default()
        };
        let mut outbox = b"hello".to_vec();
        assert!(!flush(&mut sink, &mut outbox).unwrap());
        assert_eq!(
            (outbox.as_slice(), sink.written.as_slice()),
            (&b"llo"[..], &b"he"[..])
        );
        assert!(flush(&mut sink, &mut outbox).unwrap());
        assert!(outbox.is_empty());
        assert_eq!(sink.written, b"hello");
        assert!(flush(&mut sink, &mut outbox).unwrap(), "nothing to write");
        let mut sink = Script {
            writes: [Some(0)].into(),
            ..Script::default()
        };
        let mut outbox = b"x".to_vec();
        assert!(flush(&mut sink, &mut outbox).is_err());
    }

    fn server_text(text: &str) -> Vec<u8> {
        assert!(text.len() < 126);
        let mut frame = vec![0x81, text.len() as u8];
        frame.extend_from_slice(text.as_bytes());
        frame
    }

    fn event(index: u64, seq: u64) -> Vec<u8> {
        server_text(&format!(
            "{{\"type\":\"bench\",\"payload\":{{\"i\":{index},\"t\":1,\"pad\":\"x\"}},\"seq\":{seq}}}"
        ))
    }

    /// Reads `want` bytes from `stream` (blocking, under its read timeout).
    fn read_exactly(stream: &mut TcpStream, want: usize) -> Vec<u8> {
        let mut got = vec![0; want];
        stream.read_exact(&mut got).unwrap();
        got
    }

    #[test]
    fn the_steady_loop_reads_answers_and_stops() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let clients: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
        let mut servers: Vec<TcpStream> = (0..3).map(|_| listener.accept().unwrap().0).collect();
        for server in &servers {
            server
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
        }
        let run = std::sync::Arc::new(Run::new(4, 0));
        let poll = Poll::new().unwrap();
        let waker = Waker::new(poll.registry(), WAKE).unwrap();
        let (stop, stopped) = async_channel::bounded::<()>(1);
        // Sent before the loop starts: read on its first turn.
        servers[0].write_all(&event(0, 1)).unwrap();
        let thread = {
            let run = run.clone();
            std::thread::spawn(move || {
                let mut report = ThreadReport {
                    tracks: vec![
                        SeqTrack {
                            welcomed: true,
                            ..SeqTrack::default()
                        };
                        3
                    ],
                    ..ThreadReport::default()
                };
                // The accepted order need not be the connect order; any
                // client works as subscriber `local`.
                let welcomed = clients.into_iter().enumerate().map(|(local, c)| {
                    (
                        Conn::new(local, super::super::wire::Transport::Websocket),
                        c,
                    )
                });
                super::run(poll, welcomed.collect(), &mut report, &run, &stopped);
                report
            })
        };
        // Every server sends two events in one write, one split over two.
        let mut both = event(1, 2);
        both.extend(event(2, 3));
        for server in &mut servers {
            server.write_all(&both).unwrap();
        }
        let split = event(3, 4);
        servers[1].write_all(&split[..5]).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        servers[1].write_all(&split[5..]).unwrap();
        // A Ping is answered with a masked Pong carrying its payload.
        servers[2].write_all(b"\x89\x02hi").unwrap();
        let pong = read_exactly(&mut servers[2], 8);
        assert_eq!(&pong[..2], b"\x8a\x82");
        let unmasked: Vec<u8> = pong[6..]
            .iter()
            .zip(&pong[2..6])
            .map(|(b, m)| b ^ m)
            .collect();
        assert_eq!(unmasked, b"hi");
        // A Close is answered and ends the connection; so does a plain close.
        servers[2].write_all(b"\x88\x02\x03\xe8").unwrap();
        let reply = read_exactly(&mut servers[2], 8);
        assert_eq!(&reply[..2], b"\x88\x82");
        assert_eq!(
            servers[2].read(&mut [0; 16]).unwrap(),
            0,
            "closed after the Close"
        );
        drop(servers.remove(0));
        let deadline = Instant::now() + Duration::from_secs(5);
        while run.closed.load(Relaxed) < 2 || run.deliveries.load(Relaxed) < 8 {
            assert!(Instant::now() < deadline, "the loop did not keep up");
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(stop);
        waker.wake().unwrap();
        let report = thread.join().unwrap();
        let tracks: Vec<_> = report
            .tracks
            .iter()
            .map(|t| (t.unique, t.repeated))
            .collect();
        // Which client was accepted as which server is up to the kernel,
        // so the figures are checked as a set.
        let mut ends: Vec<_> = report.tracks.iter().map(|t| t.ended.clone()).collect();
        ends.sort();
        assert_eq!(
            ends,
            [
                None,
                Some("close 1000".into()),
                Some("closed without a close frame".into())
            ]
        );
        let mut uniques: Vec<u64> = tracks.iter().map(|t| t.0).collect();
        uniques.sort_unstable();
        assert_eq!(uniques, [2, 3, 3]);
        assert!(tracks.iter().all(|t| t.1 == 0));
        assert_eq!(report.latency.count(), 8);
        assert_eq!(run.max_seq.load(Relaxed), 4);
        assert_eq!(run.arrivals(0, 4), 8);
    }

    #[test]
    fn a_stop_before_the_loop_ends_it_at_once() {
        let poll = Poll::new().unwrap();
        let (stop, stopped) = async_channel::bounded::<()>(1);
        drop(stop);
        let run = Run::new(1, 0);
        let started = Instant::now();
        super::run(
            poll,
            Vec::new(),
            &mut ThreadReport::default(),
            &run,
            &stopped,
        );
        assert!(started.elapsed() < POLL_TIMEOUT);
    }
}
