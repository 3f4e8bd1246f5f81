//! The `wshub` command line: `serve` (the default), `token`, and the
//! client tools. Flags mirror the settings of PROTOCOL.md section 8.

mod client;
mod stdin;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;

use clap::{Arg, ArgAction, ArgMatches, Args, FromArgMatches, Parser, Subcommand};
use serde_json::json;

use wshub::Error;
use wshub::auth::{Claims, mint, unix_now};
use wshub::config::{Config, ConfigError, LogLevel, SETTINGS, parse_duration};
use wshub::log::{JsonLines, as_json};

/// Exit status for a bad setting or argument.
const EXIT_USAGE: u8 = 2;

/// A small, fast WebSocket event hub.
///
/// Without a subcommand, `wshub` is `wshub serve`.
#[derive(Debug, Parser)]
#[command(name = "wshub", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<CliCommand>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
enum CliCommand {
    /// Run the hub (the default).
    Serve(Box<ServeArgs>),
    /// Mint a development JWT signed with the hub's secret.
    Token(TokenArgs),
    /// Print a hub's events as JSON lines; reconnects and resumes by itself.
    Listen(client::ListenArgs),
    /// Publish one event over HTTP or WebSocket and print the reply.
    Publish(client::PublishArgs),
}

/// The hub's settings as flags, one per row of [`SETTINGS`]; each also reads
/// `WSHUB_<NAME>` and the TOML file, in that order after the flag.
#[derive(Debug, Default)]
struct ServeArgs {
    /// The flags that were given, by setting name.
    settings: BTreeMap<String, String>,
    /// Publish each stdin line; stop when stdin closes.
    stdin_events: bool,
}

const STDIN_EVENTS: &str = "stdin_events";

impl Args for ServeArgs {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        let cmd = SETTINGS.iter().fold(cmd, |cmd, setting| {
            let help = format!(
                "{} [default: {}]",
                setting.help.trim().trim_end_matches('.'),
                setting.default
            );
            cmd.arg(
                Arg::new(setting.name)
                    .long(setting.flag())
                    .value_name(setting.value_name)
                    .help(help),
            )
        });
        cmd.arg(
            Arg::new(STDIN_EVENTS)
                .long("stdin-events")
                .action(ArgAction::SetTrue)
                .help("Publish each stdin line (a JSON event); stop when stdin closes"),
        )
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

impl FromArgMatches for ServeArgs {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let mut args = Self::default();
        args.update_from_arg_matches(matches)?;
        Ok(args)
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        for setting in SETTINGS {
            if let Some(value) = matches.get_one::<String>(setting.name) {
                self.settings
                    .insert(setting.name.to_string(), value.clone());
            }
        }
        self.stdin_events |= matches.get_flag(STDIN_EVENTS);
        Ok(())
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
        Some(CliCommand::Serve(args)) => serve(*args),
        Some(CliCommand::Token(args)) => token(args),
        Some(CliCommand::Listen(args)) => {
            JsonLines::install(LogLevel::Info);
            client::listen(args)
        }
        Some(CliCommand::Publish(args)) => {
            JsonLines::install(LogLevel::Info);
            client::publish(args)
        }
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
    // Before a subscriber may exist: printed through one of its own.
    let lines = wshub::log::JsonLines::new(LogLevel::Error);
    tracing::subscriber::with_default(lines, || {
        tracing::error!(setting = e.setting.as_str(), "{e}");
    });
    ExitCode::from(EXIT_USAGE)
}

/// Raises the soft open-file limit to the hard one: every connection is a
/// file, and a default soft limit of 1024 would refuse connections long
/// before `max_connections` (as Go's runtime and nginx's
/// `worker_rlimit_nofile` do; the hard limit is the operator's).
fn raise_file_limit() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current >= limit.maximum && limit.maximum.is_some() {
        return;
    }
    let raised = Rlimit {
        current: limit.maximum,
        maximum: limit.maximum,
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => tracing::debug!(
            from = limit.current,
            to = limit.maximum,
            "open-file limit raised"
        ),
        Err(e) => tracing::warn!(
            limit = limit.current,
            error = %e,
            "cannot raise the open-file limit; connections past it are refused"
        ),
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    let level = match log_level() {
        Ok(level) => level,
        Err(e) => return bad_setting(&e),
    };
    let mut config = match Config::load(&args.settings, |name| std::env::var(name).ok()) {
        Ok(config) => config,
        Err(e) => return bad_setting(&e),
    };
    config.handle_signals = true;
    if !args.stdin_events {
        let stdio = [
            ("connect_hook", &config.connect_hook),
            ("subscribe_hook", &config.subscribe_hook),
            ("publish_hook", &config.publish_hook),
            ("rpc_hook", &config.rpc_hook),
            ("disconnect_hook", &config.disconnect_hook),
        ]
        .into_iter()
        .find(|(_, url)| matches!(url, Some(wshub::config::HookUrl::Stdio)));
        if let Some((name, _)) = stdio {
            return bad_setting(&ConfigError::new(
                name,
                "`stdio` needs --stdin-events (the answers come in on stdin)",
            ));
        }
    }
    JsonLines::install(level);
    raise_file_limit();
    let handle = match wshub::serve(config) {
        Ok(handle) => handle,
        Err(Error::Config(e)) => return bad_setting(&e),
        Err(e) => {
            tracing::error!(error = as_json(e.to_string()), "cannot start the hub");
            return ExitCode::FAILURE;
        }
    };
    // `event` first, as the protocol shows it: a parent may match the prefix.
    let line = format!(
        "{{\"event\":\"listening\",\"addr\":{},\"epoch\":{}}}",
        json!(handle.addr()),
        json!(handle.epoch())
    );
    let mut stdout = std::io::stdout().lock();
    // A parent that reads the port from this line must see it now.
    let _ = writeln!(stdout, "{line}").and_then(|()| stdout.flush());
    drop(stdout);
    if args.stdin_events {
        let lines = handle.clone();
        std::thread::spawn(move || stdin::publish_lines(&lines, std::io::stdin().lock()));
        let orphan = handle.clone();
        std::thread::spawn(move || stdin::stop_when_orphaned(&orphan));
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
    let exp = (unix_now() + ttl.as_secs_f64()).floor();
    if exp > wshub::auth::MAX_NUMERIC_DATE as f64 {
        return bad_setting(&ConfigError::new(
            "ttl",
            "ends after the year 9999, which the hub refuses; give a shorter --ttl",
        ));
    }
    let claims = Claims {
        sub: args.sub,
        exp,
        rooms: list(args.rooms),
        publish: list(args.publish),
        admin: args.admin,
    };
    println!("{}", mint(&claims, secret.as_bytes()));
    ExitCode::SUCCESS
}
