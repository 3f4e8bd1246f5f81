//! wshub: a small, fast WebSocket event hub.
//!
//! An app (or a companion process beside it) publishes events; every open
//! browser tab receives them within milliseconds over one WebSocket (or a
//! Server-Sent Events stream), by room, and resumes without gaps after a
//! reconnect. The wire contract is
//! PROTOCOL.md; this crate is the hub, as a binary and as a library.
//!
//! # Embedding
//!
//! ```
//! use wshub::{Config, Publish};
//! use serde_json::json;
//!
//! let mut config = Config::default();
//! config.bind = "127.0.0.1:0".parse().unwrap(); // any free port
//! let hub = wshub::serve(config).expect("hub starts");
//! println!("browsers connect to {}", hub.ws_url());
//!
//! smol::block_on(async {
//!     let sent = hub
//!         .publish(Publish::to_room("ticks", "tick", json!({"n": 1})))
//!         .await
//!         .expect("published");
//!     assert_eq!(sent.seq, Some(1));
//!     hub.shutdown().await;
//! });
//! ```
//!
//! # Layout
//!
//! The data flows in one direction, and the modules follow it (imports run
//! only downwards; ARCHITECTURE.md draws the graph):
//!
//! - `server`: binds the socket, runs the hub thread's one executor with the
//!   accept loop and the drain, and hands out the [`Handle`].
//! - `http`: request heads, `Host` and `Origin`, the HTTP routes, the
//!   WebSocket upgrade and the Server-Sent Events stream (`/sse`), both
//!   admitted by the same checks.
//! - `connection`: one connection's reader (or, for a stream, watcher) and
//!   writer tasks, RFC 6455 frame decoding and the bounded input buffer.
//! - [`hub`]: the task that owns connections, rooms, history and counters,
//!   reached only through commands on an async channel.
//! - `outlet`: the hub's end of a connection (written at once to an idle
//!   socket, queued for the writer otherwise).
//! - `engine`: what must be remembered (epoch, seqs, history, idempotency
//!   keys), behind one trait: the hub's memory, the embedded store, or
//!   Redis, which joins several hubs into one cluster.
//! - [`protocol`]: wire types, the client-message decoder, the encoder and
//!   frame builders.
//! - [`config`] (every setting, declared once), [`auth`] (JWT, room
//!   patterns), `schema` (event schemas), [`metrics`] (Prometheus text),
//!   [`log`] (the JSON-lines `tracing` subscriber), `net` (what counts as a
//!   loopback peer), `shutdown` (the drain signal).
//! - [`client`]: a Rust client of a hub (connect, resume, reconnect), and
//!   [`testing`], a hub on an ephemeral port with bounded test helpers.
//!
//! The command line (`serve`, `token`, `listen`, `publish`) is the binary's
//! own; the load generator is the `wshub-bench` workspace member.
//!
//! ARCHITECTURE.md tells where this goes beyond the original design, and why.

#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]

pub mod auth;
pub mod client;
pub mod config;
mod connection;
mod engine;
mod error;
mod executor;
pub mod hook;
mod http;
pub mod hub;
pub mod log;
pub mod metrics;
mod net;
mod outlet;
pub mod protocol;
mod schema;
mod server;
mod shutdown;
pub mod testing;

pub use config::{AllowedHosts, AllowedOrigins, Config, ConfigError, LogLevel};
pub use error::Error;
pub use hub::{ConnectionInfo, Status};
pub use protocol::{Publish, Published, Target};
pub use server::{Handle, serve};

/// Fuzzing entry points: the parsers and checks that take untrusted bytes.
///
/// A whole `/ws` request is [`parse_head`](fuzzing::parse_head) then
/// [`check_upgrade`](fuzzing::check_upgrade), and a whole `/sse` request
/// `parse_head` then [`check_stream`](fuzzing::check_stream); neither needs
/// a running hub.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::auth::{sign as sign_token, verify as verify_token};
    pub use crate::connection::FrameDecoder;
    pub use crate::http::{Accepted, StreamRequest, check_stream, check_upgrade, parse_head};
    pub use crate::protocol::sse::Cursor;
    pub use crate::protocol::{Encoding, decode, is_valid_room};
}
