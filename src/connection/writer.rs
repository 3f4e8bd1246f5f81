//! The writer task: drains the outbound queue, feeding every queued frame
//! and flushing once per batch, and performs the close the hub or the reader
//! asks for on the control channel.

use std::net::Shutdown;
use std::time::Duration;

use async_channel::{Receiver, Sender};
use async_tungstenite::WebSocketSender;
use async_tungstenite::tungstenite::error::Error as WsError;
use async_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use async_tungstenite::tungstenite::protocol::frame::{CloseFrame, Frame};
use async_tungstenite::tungstenite::{Bytes, Message};
use futures_lite::FutureExt;
use futures_util::SinkExt;
use smol::net::TcpStream;

use crate::hub::Outbound;
use crate::protocol::{CloseCode, Encoded};

/// Frames fed before a flush at most, so one busy connection cannot keep
/// the executor to itself.
const MAX_BATCH: usize = 256;
/// How long a close frame and the peer's reply may take, except at shutdown
/// (which allows `shutdown_grace`).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

pub(super) struct Writer {
    pub sink: WebSocketSender<TcpStream>,
    pub socket: TcpStream,
    pub outbound: Receiver<Outbound>,
    pub control: Receiver<CloseCode>,
    pub shutdown_grace: Duration,
    pub done: Sender<()>,
}

enum Step {
    Sent(Result<(), WsError>),
    Queued(Option<Outbound>),
    Close(Option<CloseCode>),
}

impl Writer {
    pub async fn run(mut self) {
        let close = loop {
            // The control channel is polled first: a close jumps the queue.
            let step = async { Step::Close(self.control.recv().await.ok()) }
                .or(async { Step::Queued(self.outbound.recv().await.ok()) })
                .await;
            let first = match step {
                Step::Queued(Some(item)) => item,
                Step::Queued(None) => break None,
                Step::Close(code) => break code,
                Step::Sent(_) => unreachable!(),
            };
            let sink = &mut self.sink;
            let outbound = &self.outbound;
            let batch = async {
                Step::Sent(
                    async {
                        sink.feed(frame(first)).await?;
                        for _ in 1..MAX_BATCH {
                            match outbound.try_recv() {
                                Ok(item) => sink.feed(frame(item)).await?,
                                Err(_) => break,
                            }
                        }
                        sink.flush().await
                    }
                    .await,
                )
            };
            // A stuck peer must not keep a close waiting behind its socket.
            let control = &self.control;
            match batch
                .or(async { Step::Close(control.recv().await.ok()) })
                .await
            {
                Step::Sent(Ok(())) => {}
                Step::Sent(Err(_)) => break None,
                Step::Close(code) => break code,
                Step::Queued(_) => unreachable!(),
            }
        };
        match close {
            Some(code) => self.close_with(code).await,
            // The hub and the reader are done: flush whatever is pending
            // (the reply to the peer's close, say) and leave.
            None => {
                let _ = SinkExt::close(&mut self.sink)
                    .or(timeout(CLOSE_TIMEOUT))
                    .await;
            }
        }
        // Whatever state the peer is in, the socket is finished; this also
        // wakes the reader if it is still waiting.
        let _ = self.socket.shutdown(Shutdown::Both);
        drop(self.done);
    }

    /// Sends a close frame with `code`, then waits (bounded) for the reader
    /// to see the peer's reply and end.
    async fn close_with(&mut self, code: CloseCode) {
        let wait = if code == CloseCode::GoingAway {
            self.shutdown_grace
        } else {
            CLOSE_TIMEOUT.min(self.shutdown_grace.max(Duration::from_millis(100)))
        };
        let frame = CloseFrame {
            code: code.code().into(),
            reason: code.reason().into(),
        };
        let sent = async { self.sink.send(Message::Close(Some(frame))).await.is_ok() }
            .or(async {
                smol::Timer::after(wait).await;
                false
            })
            .await;
        if sent {
            // The control channel closes once the reader has ended and the
            // hub has let go of the connection.
            let control = &self.control;
            let _ = async {
                while control.recv().await.is_ok() {}
                Ok(())
            }
            .or(timeout(wait))
            .await;
        }
    }
}

async fn timeout(after: Duration) -> Result<(), WsError> {
    smol::Timer::after(after).await;
    Ok(())
}

/// The frame for one queued item. Text payloads are the hub's own
/// serde_json output, valid UTF-8 by construction, so they are sent as raw
/// frames rather than re-validated per recipient.
fn frame(item: Outbound) -> Message {
    match item {
        Outbound::Message(Encoded::Text(bytes)) => {
            Message::Frame(Frame::message(bytes, OpCode::Data(Data::Text), true))
        }
        Outbound::Message(Encoded::Binary(bytes)) => Message::Binary(bytes),
        Outbound::Ping => Message::Ping(Bytes::new()),
    }
}
