//! The floor for `wshub bench`: what broadcasting costs with no framework at
//! all. It accepts WebSocket upgrades (a minimal handshake and a welcome),
//! and for each `POST /api/events` builds one text frame and writes it
//! straight to every connected socket with a blocking `write`, then answers
//! 202 `{"id","seq","recipients"}`. Its CPU per delivery is about the
//! kernel's cost of a loopback send, the yardstick for the hub's.
//!
//! Not a server to use: no client frames are read (no Ping, no Close), and
//! the publish body must have `payload` as its last field (the bench's
//! does). Std only. Run with `wshub-bench-floor --bind 127.0.0.1:0`; the
//! first stdout line is `{"event":"listening","addr":"127.0.0.1:PORT",…}`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

type Subscribers = Arc<Mutex<Vec<TcpStream>>>;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let bind = args
        .iter()
        .position(|a| a == "--bind")
        .and_then(|i| args.get(i + 1))
        .map_or("127.0.0.1:8003", String::as_str);
    let listener = TcpListener::bind(bind).unwrap_or_else(|e| {
        eprintln!("cannot bind {bind}: {e}");
        std::process::exit(2)
    });
    let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    println!("{{\"event\":\"listening\",\"addr\":\"{addr}\",\"epoch\":\"floor\"}}");
    let subscribers: Subscribers = Arc::default();
    let seq = Arc::new(Mutex::new(0u64));
    for stream in listener.incoming().flatten() {
        let _ = stream.set_nodelay(true);
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        let mut stream = stream;
        let mut buf = Vec::new();
        let Some(head) = read_head(&mut stream, &mut buf) else { continue };
        if head.starts_with("GET /ws") {
            let Some(key) = header(&head, "sec-websocket-key") else { continue };
            let accept = base64(&sha1(format!("{key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11").as_bytes()));
            let welcome = text_frame(br#"{"type":"welcome","payload":{"protocol":"wshub.json"},"correlation_id":null,"timestamp":"1970-01-01T00:00:00.000Z"}"#);
            let mut answer = format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n").into_bytes();
            answer.extend_from_slice(&welcome);
            if stream.write_all(&answer).is_ok() {
                subscribers.lock().unwrap_or_else(|e| e.into_inner()).push(stream);
            }
        } else if head.starts_with("POST /api/events") {
            let (subscribers, seq) = (subscribers.clone(), seq.clone());
            std::thread::spawn(move || publisher(stream, head, buf, &subscribers, &seq));
        }
    }
}

/// Serves keep-alive publishes on one connection.
fn publisher(mut stream: TcpStream, mut head: String, mut buf: Vec<u8>, subscribers: &Subscribers, seq: &Mutex<u64>) {
    let _ = stream.set_read_timeout(None);
    loop {
        let length: usize = header(&head, "content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
        while buf.len() < length {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body: Vec<u8> = buf.drain(..length).collect();
        let body = String::from_utf8_lossy(&body);
        let field = |name: &str| body.split(&format!("\"{name}\":\"")).nth(1).and_then(|s| s.split('"').next()).unwrap_or("").to_string();
        let payload = body.split_once("\"payload\":").map_or("{}", |(_, p)| p.trim_end().strip_suffix('}').unwrap_or(p));
        let mut subscribers = subscribers.lock().unwrap_or_else(|e| e.into_inner());
        let mut seq = seq.lock().unwrap_or_else(|e| e.into_inner());
        *seq += 1;
        let event = format!(
            "{{\"type\":\"{}\",\"payload\":{payload},\"correlation_id\":\"00000000-0000-4000-8000-000000000000\",\"timestamp\":\"1970-01-01T00:00:00.000Z\",\"id\":\"00000000-0000-4000-8000-000000000000\",\"room\":\"{}\",\"seq\":{}}}",
            field("type"), field("room"), *seq
        );
        let frame = text_frame(event.as_bytes());
        // The floor itself: one write per socket, nothing else.
        subscribers.retain_mut(|s| s.write_all(&frame).is_ok());
        let reply = format!("{{\"id\":\"00000000-0000-4000-8000-000000000000\",\"seq\":{},\"recipients\":{}}}", *seq, subscribers.len());
        drop((subscribers, seq));
        let answer = format!("HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{reply}", reply.len());
        if stream.write_all(answer.as_bytes()).is_err() {
            return;
        }
        match read_head(&mut stream, &mut buf) {
            Some(next) => head = next,
            None => return,
        }
    }
}

/// Reads until the end of a request head; leaves what follows it in `buf`.
fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.drain(..end + 4);
            return Some(head);
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) if buf.len() + n <= 16 * 1024 => buf.extend_from_slice(&chunk[..n]),
            Ok(_) => return None,
        }
    }
}

fn header(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim().eq_ignore_ascii_case(name).then(|| value.trim().to_string())
    })
}

fn text_frame(payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x81];
    match payload.len() {
        n if n < 126 => frame.push(n as u8),
        n if n < 65536 => frame.extend([126, (n >> 8) as u8, n as u8]),
        n => frame.extend([127].into_iter().chain((n as u64).to_be_bytes())),
    }
    frame.extend_from_slice(payload);
    frame
}

fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0];
    let mut msg = data.to_vec();
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&(data.len() as u64 * 8).to_be_bytes());
    for block in msg.chunks(64) {
        let mut w = [0u32; 80];
        for i in 0..80 {
            w[i] = if i < 16 {
                u32::from_be_bytes([block[4 * i], block[4 * i + 1], block[4 * i + 2], block[4 * i + 3]])
            } else {
                (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1)
            };
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A827999),
                20..=39 => (b ^ c ^ d, 0x6ED9EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1BBCDC),
                _ => (b ^ c ^ d, 0xCA62C1D6),
            };
            let t = a.rotate_left(5).wrapping_add(f).wrapping_add(e).wrapping_add(k).wrapping_add(*wi);
            (e, d, c, b, a) = (d, c, b.rotate_left(30), a, t);
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e]) {
            *x = x.wrapping_add(y);
        }
    }
    let mut out = [0u8; 20];
    for (chunk, word) in out.chunks_mut(4).zip(h) {
        chunk.copy_from_slice(&word.to_be_bytes());
    }
    out
}

fn base64(data: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            out.push(if i <= chunk.len() { ABC[(n >> (18 - 6 * i) & 63) as usize] as char } else { '=' });
        }
    }
    out
}

#[test]
fn accept_key_matches_rfc_6455() {
    let key = "dGhlIHNhbXBsZSBub25jZQ==258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    assert_eq!(base64(&sha1(key.as_bytes())), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}
