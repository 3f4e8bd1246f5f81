//! The Redis task's sockets on the hub thread's executor: a connection
//! to `redis_url` (TCP or a Unix socket) made with smol, handed to the
//! `redis` crate through the I/O traits its codec wants, with the crate's
//! connection driver spawned where the engine says (the hub's executor),
//! so that no Redis request or message crosses a thread.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite};
use redis::aio::{AsyncPushSender, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client, ConnectionAddr, ProtocolVersion};

use crate::engine::Spawn;

/// A socket to Redis.
enum Stream {
    Tcp(smol::net::TcpStream),
    Unix(smol::net::unix::UnixStream),
}

/// A smol socket seen through tokio's I/O traits.
struct TokioIo(Stream);

impl tokio::io::AsyncRead for TokioIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let unfilled = buf.initialize_unfilled();
        let read = match &mut self.0 {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, unfilled),
            Stream::Unix(s) => Pin::new(s).poll_read(cx, unfilled),
        };
        match read {
            Poll::Ready(Ok(n)) => {
                buf.advance(n);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl tokio::io::AsyncWrite for TokioIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.0 {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, data),
            Stream::Unix(s) => Pin::new(s).poll_write(cx, data),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.0 {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.0 {
            Stream::Tcp(s) => Pin::new(s).poll_close(cx),
            Stream::Unix(s) => Pin::new(s).poll_close(cx),
        }
    }
}

/// A connection to the Redis of `client` whose driver runs through
/// `spawn`; RESP3 with `push` (the pub/sub connection), RESP2 otherwise.
/// `ended` runs once the connection is gone.
pub(crate) async fn open<P: AsyncPushSender>(
    client: &Client,
    spawn: &Spawn,
    push: Option<P>,
    ended: impl FnOnce() + 'static,
    response_timeout: std::time::Duration,
) -> Result<MultiplexedConnection, String> {
    let info = client.get_connection_info();
    let stream = match info.addr() {
        ConnectionAddr::Tcp(host, port) => {
            let tcp = smol::net::TcpStream::connect((host.as_str(), *port))
                .await
                .map_err(|e| format!("connect to {host}:{port}: {e}"))?;
            // Requests are small and answered at once: no Nagle delay.
            let _ = tcp.set_nodelay(true);
            Stream::Tcp(tcp)
        }
        ConnectionAddr::Unix(path) => Stream::Unix(
            smol::net::unix::UnixStream::connect(path)
                .await
                .map_err(|e| format!("connect to {}: {e}", path.display()))?,
        ),
        _ => return Err("TLS connections to Redis are not supported".into()),
    };
    let mut settings = info.redis_settings().clone();
    let mut config = AsyncConnectionConfig::new().set_response_timeout(Some(response_timeout));
    if let Some(push) = push {
        settings = settings.set_protocol(ProtocolVersion::RESP3);
        config = config.set_push_sender(push);
    }
    let (conn, driver) = MultiplexedConnection::new_with_config(&settings, TokioIo(stream), config)
        .await
        .map_err(|e| e.to_string())?;
    spawn(Box::pin(async move {
        driver.await;
        ended();
    }));
    Ok(conn)
}
