//! A tiny HTTP/1.1 app on a loopback port for the hook tests: each request
//! is recorded and answered by the test's handler (which may block, to
//! play a slow app), with keep-alive as a real app server does.

#![allow(dead_code)] // each test file uses its own share of these

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;
use wshub::testing::TIMEOUT;

/// One request as the app saw it.
#[derive(Debug, Clone)]
pub struct AppRequest {
    pub path: String,
    /// Lower-case names.
    pub headers: HashMap<String, String>,
    pub raw_body: Vec<u8>,
    pub body: Value,
}

/// What the handler answers: status, extra header lines, body.
#[derive(Debug, Clone)]
pub struct AppResponse {
    pub status: u16,
    pub body: String,
    /// Send the body chunked instead of with a Content-Length.
    pub chunked: bool,
}

impl AppResponse {
    pub fn json(status: u16, body: Value) -> Self {
        Self {
            status,
            body: body.to_string(),
            chunked: false,
        }
    }

    pub fn raw(status: u16, body: &str) -> Self {
        Self {
            status,
            body: body.to_string(),
            chunked: false,
        }
    }
}

type Handler = dyn Fn(&AppRequest) -> AppResponse + Send + Sync;

/// The app: its address, what it was asked, and how many TCP connections
/// it accepted.
pub struct App {
    pub addr: SocketAddr,
    requests: async_channel::Receiver<AppRequest>,
    pub connections: Arc<AtomicUsize>,
}

impl App {
    /// Starts the app on 127.0.0.1:0 with `handler`.
    pub fn start(handler: impl Fn(&AppRequest) -> AppResponse + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the app");
        let addr = listener.local_addr().expect("the app's address");
        let (tx, requests) = async_channel::unbounded();
        let handler: Arc<Handler> = Arc::new(handler);
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = connections.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                counted.fetch_add(1, Ordering::SeqCst);
                let handler = handler.clone();
                let tx = tx.clone();
                std::thread::spawn(move || serve(stream, &*handler, &tx));
            }
        });
        Self {
            addr,
            requests,
            connections,
        }
    }

    /// `http://127.0.0.1:port/path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The next request the app got; panics after the test timeout.
    pub async fn next(&self) -> AppRequest {
        wshub::testing::within(self.requests.recv())
            .await
            .expect("the app is asked in time")
            .expect("the app is running")
    }

    /// The next request to `path`, skipping others.
    pub async fn next_to(&self, path: &str) -> AppRequest {
        loop {
            let r = self.next().await;
            if r.path == path {
                return r;
            }
        }
    }

    /// Requests that arrived so far, without waiting.
    pub fn drain(&self) -> Vec<AppRequest> {
        std::iter::from_fn(|| self.requests.try_recv().ok()).collect()
    }
}

fn serve(mut stream: TcpStream, handler: &Handler, tx: &async_channel::Sender<AppRequest>) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(TIMEOUT * 3));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        // One head.
        let (request, head_len, len) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut req = httparse::Request::new(&mut headers);
            if let Ok(httparse::Status::Complete(n)) = req.parse(&buf) {
                let mut map = HashMap::new();
                for h in req.headers.iter() {
                    map.insert(
                        h.name.to_ascii_lowercase(),
                        String::from_utf8_lossy(h.value).to_string(),
                    );
                }
                let len = map
                    .get("content-length")
                    .and_then(|l| l.parse::<usize>().ok())
                    .unwrap_or(0);
                break ((req.path.unwrap_or("").to_string(), map), n, len);
            }
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        while buf.len() < head_len + len {
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let raw_body = buf[head_len..head_len + len].to_vec();
        buf.drain(..head_len + len);
        let body = serde_json::from_slice(&raw_body).unwrap_or(Value::Null);
        let request = AppRequest {
            path: request.0,
            headers: request.1,
            raw_body,
            body,
        };
        let _ = tx.try_send(request.clone());
        let response = handler(&request);
        let reason = match response.status {
            200 => "OK",
            _ => "Whatever",
        };
        let out = if response.chunked {
            let mut out = format!(
                "HTTP/1.1 {} {reason}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
                response.status
            );
            let bytes = response.body.as_bytes();
            for piece in bytes.chunks(3) {
                out.push_str(&format!(
                    "{:x}\r\n{}\r\n",
                    piece.len(),
                    String::from_utf8_lossy(piece)
                ));
            }
            out.push_str("0\r\n\r\n");
            out
        } else {
            format!(
                "HTTP/1.1 {} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
                response.status,
                response.body.len(),
                response.body
            )
        };
        if stream.write_all(out.as_bytes()).is_err() {
            return;
        }
    }
}

/// A gate a handler can wait on until the test opens it (bounded by the
/// test timeout, so a failing test never hangs the app forever).
#[derive(Clone)]
pub struct Gate {
    tx: async_channel::Sender<()>,
    rx: async_channel::Receiver<()>,
}

impl Gate {
    pub fn new() -> Self {
        let (tx, rx) = async_channel::bounded(1);
        Self { tx, rx }
    }

    /// Blocks until [`Gate::open`] (or the test timeout).
    pub fn wait(&self) {
        let rx = self.rx.clone();
        let _ = smol::block_on(wshub::testing::within(rx.recv()));
    }

    /// Lets every waiter through, now and later.
    pub fn open(&self) {
        self.tx.close();
    }
}

/// A hook URL on a loopback port where nothing listens.
pub fn dead_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    format!("http://{addr}/hook")
}

/// Short enough for tests of the timeout, long enough for a loaded machine.
pub const SHORT_HOOK_TIMEOUT: Duration = Duration::from_millis(300);
