//! The settings of PROTOCOL.md section 8: names, defaults, parsing, checks,
//! and the precedence flag, then environment, then TOML file, then default.

mod hook;
mod hosts;
mod value;

pub use hook::{HookUrl, HttpTarget};
pub use hosts::{AllowedHosts, normalize_host};

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use value::Raw;
pub use value::{normalize_origin, parse_duration, parse_size};

/// Default time allowed for a request head.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default interval between heartbeats.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(30);
/// Default silence after which a connection is closed with 4000.
pub const DEFAULT_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(60);
/// Default time allowed for closing handshakes at shutdown.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Default number of rooms one connection may hold.
pub const DEFAULT_MAX_ROOMS_PER_CONNECTION: usize = 1000;
/// Default time a hook has to answer.
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(5);
/// Default budget of all rooms' history together, in bytes (64 MiB).
pub const DEFAULT_MAX_HISTORY_BYTES: usize = 64 << 20;

/// Which `Origin` headers may open a WebSocket or get CORS headers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AllowedOrigins {
    /// Loopback origins on any port, and the origin matching the `Host` header.
    #[default]
    Loopback,
    /// Any origin (`*`).
    Any,
    /// Exactly these origins, normalised to lower-case `scheme://host[:port]`.
    List(Vec<String>),
}

/// How much the hub logs on stderr (`WSHUB_LOG`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Errors and warnings.
    Warn,
    /// Lifecycle events too (the default).
    #[default]
    Info,
    /// Every request and reply.
    Debug,
}

impl LogLevel {
    /// The level's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warn => "warn",
            Self::Info => "info",
            Self::Debug => "debug",
        }
    }
}

impl FromStr for LogLevel {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, ConfigError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "error" => Ok(Self::Error),
            "warn" | "warning" => Ok(Self::Warn),
            "info" => Ok(Self::Info),
            "debug" | "trace" => Ok(Self::Debug),
            _ => Err(ConfigError::new(
                "WSHUB_LOG",
                format!("`{s}` is not a log level (error, warn, info, debug)"),
            )),
        }
    }
}

/// One setting as the command line, the environment and the file know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// The name, as in the TOML file; the flag is `--` plus the name with
    /// dashes, the variable `WSHUB_` plus the name in capitals.
    pub name: &'static str,
    /// What the value looks like in `--help` (`DURATION`, `N`, …).
    pub value_name: &'static str,
    /// The default, as `--help` and the README show it.
    pub default: &'static str,
    /// One line for `--help`.
    pub help: &'static str,
}

impl Setting {
    /// The command-line flag, without the leading dashes.
    pub fn flag(&self) -> String {
        self.name.replace('_', "-")
    }

    /// The environment variable.
    pub fn env(&self) -> String {
        format!("WSHUB_{}", self.name.to_ascii_uppercase())
    }
}

/// Declares every setting once: the [`Config`] field with its doc, its
/// default, the parser of its raw value, and its row of [`SETTINGS`], from
/// which the flags, the variables and the file keys are all derived.
macro_rules! settings {
    ($(
        #[doc = $help:literal]
        $name:ident: $ty:ty = $default:expr, $shown:literal, $value_name:literal, $parse:expr;
    )+) => {
        /// A hub's settings. Start from [`Config::default`] and change fields, or
        /// build one from flags, environment and file with [`Config::load`].
        #[derive(Debug, Clone)]
        #[non_exhaustive]
        pub struct Config {
            $(
                #[doc = $help]
                #[doc = ""]
                #[doc = concat!("Setting `", stringify!($name), "`, default ", $shown, ".")]
                pub $name: $ty,
            )+
            /// Whether SIGINT and SIGTERM drain and stop the hub (the binary sets it).
            pub handle_signals: bool,
            /// The host name `bind` was given as, when it was a name: the
            /// default `allowed_hosts` allows it.
            pub(crate) bind_name: Option<String>,
        }

        impl Default for Config {
            fn default() -> Self {
                Self {
                    $($name: $default,)+
                    handle_signals: false,
                    bind_name: None,
                }
            }
        }

        /// Every setting, in the order `--help` lists them. `config` names the
        /// TOML file and is read before the others.
        pub const SETTINGS: &[Setting] = &[
            Setting {
                name: "config",
                value_name: "PATH",
                default: "none",
                help: " TOML file with settings (same names as the flags, with underscores).",
            },
            $(Setting {
                name: stringify!($name),
                value_name: $value_name,
                default: $shown,
                help: $help,
            },)+
        ];

        impl Config {
            /// Parses `raw` into the setting `name`.
            fn set(&mut self, name: &str, raw: &Raw) -> Result<(), String> {
                match name {
                    $(stringify!($name) => self.$name = $parse(raw)?,)+
                    _ => return Err("unknown setting".into()),
                }
                if name == "bind" {
                    self.bind_name = value::bind_name(raw);
                }
                Ok(())
            }
        }
    };
}

settings! {
    /// Listen address; port 0 picks a free one.
    bind: SocketAddr = default_bind(), "127.0.0.1:8000", "ADDR", value::addr;
    /// Bearer key for publisher and admin routes.
    admin_key: Option<String> = None, "none", "KEY", value::secret;
    /// HS256 secret for client JWTs; without it every connection is anonymous.
    jwt_secret: Option<String> = None, "none", "SECRET", value::secret;
    /// Origins allowed to connect, comma-separated (an array in TOML), or `*`.
    allowed_origins: AllowedOrigins = AllowedOrigins::Loopback, "loopback and same host", "LIST", value::origins;
    /// Hosts (the `Host` header, without the port) the hub answers, comma-separated (an array in TOML), or `*`; a list replaces the default.
    allowed_hosts: AllowedHosts = AllowedHosts::Local, "localhost, *.localhost, IP literals, the host of bind", "LIST", value::hosts;
    /// Time allowed for a request head (also the keep-alive idle time).
    handshake_timeout: Duration = DEFAULT_HANDSHAKE_TIMEOUT, "10s", "DURATION", value::duration;
    /// Interval between heartbeats (a Ping frame and a `heartbeat` message).
    heartbeat_interval: Duration = DEFAULT_HEARTBEAT_INTERVAL, "30s", "DURATION", value::duration;
    /// Silence after which a connection is closed with 4000.
    heartbeat_timeout: Duration = DEFAULT_HEARTBEAT_TIMEOUT, "60s", "DURATION", value::duration;
    /// Open WebSocket connections at most (503 beyond).
    max_connections: usize = 100_000, "100000", "N", value::count;
    /// Connections per client IP, 0 for no limit (429 beyond).
    max_connections_per_ip: usize = 0, "0", "N", value::count;
    /// Connections per user (JWT `sub`), 0 for no limit (429 beyond).
    max_connections_per_user: usize = 0, "0", "N", value::count;
    /// Largest client message (1009 beyond) or request body (413 beyond), in bytes.
    max_message_bytes: usize = 65_536, "65536", "BYTES", value::count;
    /// Outbound queue per connection, in messages (4009 when full).
    send_queue: usize = 1024, "1024", "N", value::count;
    /// Client messages per second per connection, 0 for no limit.
    rate_limit_per_s: u32 = 100, "100", "N", value::count;
    /// Burst allowance of the rate limit.
    rate_limit_burst: u32 = 200, "200", "N", value::count;
    /// Events kept per room for resume.
    history_size: usize = 100, "100", "N", value::count;
    /// All rooms' history together, as encoded frames; past it the oldest events of the whole hub leave first.
    max_history_bytes: usize = 64 << 20, "64MiB", "SIZE", value::size;
    /// Rooms one connection may hold; past it a `subscribe` is refused whole with `too_many_rooms`.
    max_rooms_per_connection: usize = 1000, "1000", "N", value::count;
    /// Time allowed for closing handshakes at shutdown.
    shutdown_grace: Duration = DEFAULT_SHUTDOWN_GRACE, "5s", "DURATION", value::duration;
    /// JSON file mapping event types to JSON Schemas (draft 2020-12).
    schemas: Option<PathBuf> = None, "none", "PATH", value::path;
    /// Directory of the embedded store that keeps the epoch, seqs, history and idempotency keys across restarts and crashes.
    store: Option<PathBuf> = None, "none", "DIR", value::path;
    /// Events older than this leave a room's history, in memory and in the store; 0 for no limit.
    history_ttl: Duration = Duration::ZERO, "0", "DURATION", value::duration;
    /// URL the hub POSTs each upgrade to before admitting it (`http://…`, or `stdio` with `--stdin-events`).
    connect_hook: Option<HookUrl> = None, "none", "URL", value::hook;
    /// URL asked before a connection joins each room.
    subscribe_hook: Option<HookUrl> = None, "none", "URL", value::hook;
    /// URL asked before each client `publish`; its answer may replace the payload.
    publish_hook: Option<HookUrl> = None, "none", "URL", value::hook;
    /// URL that answers each client `rpc`.
    rpc_hook: Option<HookUrl> = None, "none", "URL", value::hook;
    /// URL told once a connection is gone.
    disconnect_hook: Option<HookUrl> = None, "none", "URL", value::hook;
    /// Time a hook has to answer before it counts as `hook_unavailable`.
    hook_timeout: Duration = DEFAULT_HOOK_TIMEOUT, "5s", "DURATION", value::duration;
    /// Key of the `X-Wshub-Signature` HMAC-SHA256 of every hook body.
    hook_secret: Option<String> = None, "none", "SECRET", value::secret;
    /// Upgrade request headers copied into the connect hook's `headers`, comma-separated.
    hook_forward_headers: Vec<String> = default_forward_headers(), "cookie,authorization", "LIST", value::header_names;
}

fn default_forward_headers() -> Vec<String> {
    vec!["cookie".into(), "authorization".into()]
}

fn default_bind() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8000))
}
/// A setting that could not be used: which one, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The setting's name (or the variable or key that was wrong).
    pub setting: String,
    /// What is wrong with it.
    pub message: String,
}

impl ConfigError {
    /// An error about `setting`.
    pub fn new(setting: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            setting: setting.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid setting `{}`: {}", self.setting, self.message)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Builds a config from command-line `flags` (setting name to value),
    /// the environment seen through `env` and the TOML file named by the
    /// `config` setting, in that order of precedence.
    pub fn load(
        flags: &BTreeMap<String, String>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        for name in flags.keys() {
            if setting(name).is_none() {
                return Err(ConfigError::new(name, "unknown setting"));
            }
        }
        let file_path = flags
            .get("config")
            .cloned()
            .map(|v| (v, "--config".to_string()))
            .or_else(|| env("WSHUB_CONFIG").map(|v| (v, "WSHUB_CONFIG".to_string())));
        let file = match file_path {
            Some((path, _)) => read_file(&path)?,
            None => BTreeMap::new(),
        };

        let mut config = Config::default();
        for setting in &SETTINGS[1..] {
            let name = setting.name;
            let (raw, source) = if let Some(v) = flags.get(name) {
                (Raw::Text(v.clone()), format!("--{}", setting.flag()))
            } else if let Some(v) = env(&setting.env()) {
                (Raw::Text(v), setting.env())
            } else if let Some(v) = file.get(name) {
                (v.clone(), format!("{name} in the config file"))
            } else {
                continue;
            };
            config
                .set(name, &raw)
                .map_err(|message| ConfigError::new(name, format!("{message} (from {source})")))?;
        }
        config.validate()?;
        Ok(config)
    }

    /// Sets one setting from its text form, as a flag or variable gives it.
    pub fn set_str(&mut self, name: &str, value: &str) -> Result<(), ConfigError> {
        self.set(name, &Raw::Text(value.to_string()))
            .map_err(|message| ConfigError::new(name, message))
    }

    /// Checks the relations and ranges a parsed value alone cannot show.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("handshake_timeout", self.handshake_timeout),
            ("heartbeat_interval", self.heartbeat_interval),
            ("heartbeat_timeout", self.heartbeat_timeout),
            ("hook_timeout", self.hook_timeout),
        ];
        for (name, d) in positive {
            if d.is_zero() {
                return Err(ConfigError::new(name, "must be greater than zero"));
            }
        }
        let at_least_one = [
            ("max_connections", self.max_connections),
            ("send_queue", self.send_queue),
            ("max_rooms_per_connection", self.max_rooms_per_connection),
            ("max_history_bytes", self.max_history_bytes),
        ];
        for (name, n) in at_least_one {
            if n == 0 {
                return Err(ConfigError::new(name, "must be at least 1"));
            }
        }
        if !(MIN_MESSAGE_BYTES..=MAX_MESSAGE_BYTES).contains(&self.max_message_bytes) {
            return Err(ConfigError::new(
                "max_message_bytes",
                format!("must be between {MIN_MESSAGE_BYTES} and {MAX_MESSAGE_BYTES}"),
            ));
        }
        if self.rate_limit_per_s > 0 && self.rate_limit_burst == 0 {
            return Err(ConfigError::new(
                "rate_limit_burst",
                "must be at least 1 while rate_limit_per_s is set",
            ));
        }
        Ok(())
    }
}

/// The setting called `name`, if there is one.
pub fn setting(name: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.name == name)
}

/// Smallest accepted `max_message_bytes`.
pub const MIN_MESSAGE_BYTES: usize = 128;
/// Largest accepted `max_message_bytes` (16 MiB).
pub const MAX_MESSAGE_BYTES: usize = 16 << 20;

fn read_file(path: &str) -> Result<BTreeMap<String, Raw>, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new("config", format!("cannot read `{path}`: {e}")))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e| ConfigError::new("config", format!("`{path}` is not valid TOML: {e}")))?;
    let mut out = BTreeMap::new();
    for (key, value) in table {
        if key == "config" {
            return Err(ConfigError::new(
                "config",
                "cannot be set inside the config file",
            ));
        }
        if setting(&key).is_none() {
            return Err(ConfigError::new(
                key,
                format!("unknown key in the config file `{path}`"),
            ));
        }
        let raw = match value {
            toml::Value::String(s) => Raw::Text(s),
            toml::Value::Integer(i) => Raw::Text(i.to_string()),
            toml::Value::Float(f) => Raw::Text(f.to_string()),
            toml::Value::Array(items) => {
                let mut list = Vec::with_capacity(items.len());
                for item in items {
                    match item {
                        toml::Value::String(s) => list.push(s),
                        _ => {
                            return Err(ConfigError::new(
                                key,
                                "must be a list of strings in the config file",
                            ));
                        }
                    }
                }
                Raw::List(list)
            }
            other => {
                return Err(ConfigError::new(
                    key,
                    format!("has an unsupported {} value", other.type_str()),
                ));
            }
        };
        out.insert(key, raw);
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
