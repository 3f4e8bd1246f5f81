//! The `wshub` command line: `serve` (the default), `token`, and the
//! client tools. Flags mirror the settings of PROTOCOL.md section 8.

mod bench;
mod client;
mod stdin;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use serde_json::json;

use crate::auth::{Claims, mint, unix_now};
use crate::config::{Config, ConfigError, LogLevel, parse_duration};
use crate::error::Error;
use crate::log::Logger;

/// Exit status for a bad setting or argument.
const EXIT_USAGE: u8 = 2;

/// A small, fast WebSocket event hub.
///
/// Without a subcommand, `wshub` is `wshub serve`.
#[derive(Debug, Parser)]
#[command(name = "wshub", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the hub (the default).
    Serve(Box<ServeArgs>),
    /// Mint a development JWT signed with the hub's secret.
    Token(TokenArgs),
    /// Print a hub's events as JSON lines; reconnects and resumes by itself.
    Listen(client::ListenArgs),
    /// Publish one event over HTTP or WebSocket and print the reply.
    Publish(client::PublishArgs),
    /// Measure a hub: subscribers, publish latency, flood rate, memory.
    Bench(bench::BenchArgs),
}

/// The hub's settings as flags; each also reads `WSHUB_<NAME>` and the TOML
/// file, in that order after the flag.
#[derive(Debug, Default, Args)]
struct ServeArgs {
    /// Listen address [default: 127.0.0.1:8000; port 0 picks a free one]
    #[arg(long, value_name = "ADDR")]
    bind: Option<String>,
    /// TOML file with settings (same names as the flags, with underscores)
    #[arg(long, value_name = "PATH")]
    config: Option<String>,
    /// Bearer key for publisher and admin routes [default: none]
    #[arg(long, value_name = "KEY")]
    admin_key: Option<String>,
    /// HS256 secret for client JWTs; without it connections are anonymous
    #[arg(long, value_name = "SECRET")]
    jwt_secret: Option<String>,
    /// Origins allowed to connect, comma-separated, or `*` [default: loopback and same host]
    #[arg(long, value_name = "LIST")]
    allowed_origins: Option<String>,
    /// Time allowed for a request head [default: 10s]
    #[arg(long, value_name = "DURATION")]
    handshake_timeout: Option<String>,
    /// Interval between heartbeats [default: 30s]
    #[arg(long, value_name = "DURATION")]
    heartbeat_interval: Option<String>,
    /// Silence after which a connection is closed with 4000 [default: 60s]
    #[arg(long, value_name = "DURATION")]
    heartbeat_timeout: Option<String>,
    /// Open WebSocket connections at most [default: 100000]
    #[arg(long, value_name = "N")]
    max_connections: Option<String>,
    /// Connections per client IP, 0 for no limit [default: 0]
    #[arg(long, value_name = "N")]
    max_connections_per_ip: Option<String>,
    /// Connections per user (JWT sub), 0 for no limit [default: 0]
    #[arg(long, value_name = "N")]
    max_connections_per_user: Option<String>,
    /// Largest client message or request body, in bytes [default: 65536]
    #[arg(long, value_name = "BYTES")]
    max_message_bytes: Option<String>,
    /// Outbound queue per connection, in messages [default: 1024]
    #[arg(long, value_name = "N")]
    send_queue: Option<String>,
    /// Client messages per second per connection, 0 for no limit [default: 100]
    #[arg(long, value_name = "N")]
    rate_limit_per_s: Option<String>,
    /// Burst allowance of the rate limit [default: 200]
    #[arg(long, value_name = "N")]
    rate_limit_burst: Option<String>,
    /// Events kept per room for resume [default: 100]
    #[arg(long, value_name = "N")]
    history_size: Option<String>,
    /// Time allowed for closing handshakes at shutdown [default: 5s]
    #[arg(long, value_name = "DURATION")]
    shutdown_grace: Option<String>,
    /// JSON file mapping event types to JSON Schemas [default: none]
    #[arg(long, value_name = "PATH")]
    schemas: Option<String>,
    /// Rooms one connection may hold, at least 1 [default: 1000]
    #[arg(long, value_name = "N")]
    max_rooms_per_connection: Option<String>,
    /// All rooms' history together: 64MiB, 512KiB or bytes; oldest events leave first [default: 64MiB]
    #[arg(long, value_name = "SIZE")]
    max_history_bytes: Option<String>,
    /// Publish each stdin line (a JSON event); stop when stdin closes
    #[arg(long)]
    stdin_events: bool,
}

impl ServeArgs {
    /// The flags that were given, by setting name.
    fn settings(&self) -> BTreeMap<String, String> {
        let pairs = [
            ("bind", &self.bind),
            ("config", &self.config),
            ("admin_key", &self.admin_key),
            ("jwt_secret", &self.jwt_secret),
            ("allowed_origins", &self.allowed_origins),
            ("handshake_timeout", &self.handshake_timeout),
            ("heartbeat_interval", &self.heartbeat_interval),
            ("heartbeat_timeout", &self.heartbeat_timeout),
            ("max_connections", &self.max_connections),
            ("max_connections_per_ip", &self.max_connections_per_ip),
            ("max_connections_per_user", &self.max_connections_per_user),
            ("max_message_bytes", &self.max_message_bytes),
            ("send_queue", &self.send_queue),
            ("rate_limit_per_s", &self.rate_limit_per_s),
            ("rate_limit_burst", &self.rate_limit_burst),
            ("history_size", &self.history_size),
            ("shutdown_grace", &self.shutdown_grace),
            ("schemas", &self.schemas),
            ("max_rooms_per_connection", &self.max_rooms_per_connection),
            ("max_history_bytes", &self.max_history_bytes),
        ];
        pairs
            .into_iter()
            .filter_map(|(name, value)| value.clone().map(|v| (name.to_string(), v)))
            .collect()
    }
}

#[derive(Debug, Args)]
struct TokenArgs {
    /// The user ID (`sub` claim)
    #[arg(long)]
    sub: String,
    /// Room patterns the user may subscribe to, comma-separated (`project:*`); default all
    #[arg(long, value_name = "LIST")]
    rooms: Option<String>,
    /// Room patterns the user may publish to, comma-separated; default none
    #[arg(long, value_name = "LIST")]
    publish: Option<String>,
    /// Make an admin token (any room, publisher and admin routes)
    #[arg(long)]
    admin: bool,
    /// Lifetime [default: 1h]
    #[arg(long, value_name = "DURATION", default_value = "1h")]
    ttl: String,
    /// The hub's jwt_secret [default: $WSHUB_JWT_SECRET]
    #[arg(long, value_name = "SECRET")]
    secret: Option<String>,
}

/// Runs the command line of this process.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        None => serve(cli.serve),
        Some(Command::Serve(args)) => serve(*args),
        Some(Command::Token(args)) => token(args),
        Some(Command::Listen(args)) => client::listen(args),
        Some(Command::Publish(args)) => client::publish(args),
        Some(Command::Bench(args)) => bench::run(args),
    }
}

fn log_level() -> Result<LogLevel, ConfigError> {
    match std::env::var("WSHUB_LOG") {
        Ok(value) if !value.trim().is_empty() => value.parse(),
        _ => Ok(LogLevel::Info),
    }
}

/// Prints a setting error as a JSON log line and returns exit status 2.
fn bad_setting(e: &ConfigError) -> ExitCode {
    Logger::new(LogLevel::Error)
        .error(&e.to_string())
        .field("setting", &e.setting)
        .emit();
    ExitCode::from(EXIT_USAGE)
}

fn serve(args: ServeArgs) -> ExitCode {
    let level = match log_level() {
        Ok(level) => level,
        Err(e) => return bad_setting(&e),
    };
    let mut config = match Config::load(&args.settings(), |name| std::env::var(name).ok()) {
        Ok(config) => config,
        Err(e) => return bad_setting(&e),
    };
    config.log_level = level;
    config.handle_signals = true;
    let log = Logger::new(level);
    let handle = match crate::serve(config) {
        Ok(handle) => handle,
        Err(Error::Config(e)) => return bad_setting(&e),
        Err(e) => {
            log.error("cannot start the hub")
                .field("error", e.to_string())
                .emit();
            return ExitCode::FAILURE;
        }
    };
    let line = json!({"event": "listening", "addr": handle.addr(), "epoch": handle.epoch()});
    let mut stdout = std::io::stdout().lock();
    // A parent that reads the port from this line must see it now.
    let _ = writeln!(stdout, "{line}").and_then(|()| stdout.flush());
    drop(stdout);
    if args.stdin_events {
        let lines = handle.clone();
        std::thread::spawn(move || stdin::publish_lines(&lines, std::io::stdin().lock(), log));
        let orphan = handle.clone();
        std::thread::spawn(move || stdin::stop_when_orphaned(&orphan, log));
    }
    smol::block_on(handle.stopped());
    ExitCode::SUCCESS
}

fn token(args: TokenArgs) -> ExitCode {
    let Some(secret) = args
        .secret
        .or_else(|| std::env::var("WSHUB_JWT_SECRET").ok())
        .filter(|s| !s.is_empty())
    else {
        return bad_setting(&ConfigError::new(
            "secret",
            "give --secret or set WSHUB_JWT_SECRET",
        ));
    };
    let ttl = match parse_duration(&args.ttl) {
        Ok(ttl) => ttl,
        Err(e) => return bad_setting(&ConfigError::new("ttl", e)),
    };
    let list = |text: Option<String>| {
        text.map(|t| {
            t.split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .collect()
        })
    };
    let claims = Claims {
        sub: args.sub,
        exp: (unix_now() + ttl.as_secs_f64()).floor(),
        rooms: list(args.rooms),
        publish: list(args.publish),
        admin: args.admin,
    };
    println!("{}", mint(&claims, secret.as_bytes()));
    ExitCode::SUCCESS
}
