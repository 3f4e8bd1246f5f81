//! The settings of PROTOCOL.md section 8: names, defaults, parsing, checks,
//! and the precedence flag, then environment, then TOML file, then default.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// Every setting name, as used in the TOML file; flags use dashes and the
/// environment `WSHUB_` plus the name in capitals.
pub const SETTINGS: [&str; 20] = [
    "bind",
    "config",
    "admin_key",
    "jwt_secret",
    "allowed_origins",
    "handshake_timeout",
    "heartbeat_interval",
    "heartbeat_timeout",
    "max_connections",
    "max_connections_per_ip",
    "max_connections_per_user",
    "max_message_bytes",
    "send_queue",
    "rate_limit_per_s",
    "rate_limit_burst",
    "history_size",
    "shutdown_grace",
    "schemas",
    "max_rooms_per_connection",
    "max_history_bytes",
];

/// Default listen address.
pub const DEFAULT_BIND: &str = "127.0.0.1:8000";
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

/// A hub's settings. Start from [`Config::default`] and change fields, or
/// build one from flags, environment and file with [`Config::load`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Listen address (`bind`, default `127.0.0.1:8000`; port 0 picks one).
    pub bind: SocketAddr,
    /// Bearer key for publisher and admin routes (`admin_key`, default none).
    pub admin_key: Option<String>,
    /// HS256 secret for client JWTs (`jwt_secret`, default none: anonymous).
    pub jwt_secret: Option<String>,
    /// Origin allowlist (`allowed_origins`, default loopback and same host).
    pub allowed_origins: AllowedOrigins,
    /// Time allowed for a request head (`handshake_timeout`, default 10 s).
    pub handshake_timeout: Duration,
    /// Heartbeat interval (`heartbeat_interval`, default 30 s).
    pub heartbeat_interval: Duration,
    /// Silence before close 4000 (`heartbeat_timeout`, default 60 s).
    pub heartbeat_timeout: Duration,
    /// Open WebSocket connections at most (`max_connections`, default 100000).
    pub max_connections: usize,
    /// Connections per client IP, 0 for no limit (`max_connections_per_ip`).
    pub max_connections_per_ip: usize,
    /// Connections per JWT `sub`, 0 for no limit (`max_connections_per_user`).
    pub max_connections_per_user: usize,
    /// Largest message or request body (`max_message_bytes`, default 65536).
    pub max_message_bytes: usize,
    /// Outbound queue per connection, in messages (`send_queue`, default 1024).
    pub send_queue: usize,
    /// Client messages per second, 0 for no limit (`rate_limit_per_s`, default 100).
    pub rate_limit_per_s: u32,
    /// Token-bucket burst (`rate_limit_burst`, default 200).
    pub rate_limit_burst: u32,
    /// Events kept per room for resume (`history_size`, default 100).
    pub history_size: usize,
    /// Time allowed for closing handshakes at shutdown (`shutdown_grace`, default 5 s).
    pub shutdown_grace: Duration,
    /// JSON file of JSON Schemas by event type (`schemas`, default none).
    pub schemas: Option<PathBuf>,
    /// Rooms one connection may hold, at least 1 (`max_rooms_per_connection`,
    /// default 1000).
    pub max_rooms_per_connection: usize,
    /// All rooms' history together, in bytes of encoded frames, at least 1
    /// (`max_history_bytes`, default 64 MiB); the hub's oldest events leave
    /// first.
    pub max_history_bytes: usize,
    /// Log level (from `WSHUB_LOG` in the binary; not a file setting).
    pub log_level: LogLevel,
    /// Whether SIGINT and SIGTERM drain and stop the hub (the binary sets it).
    pub handle_signals: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            bind: DEFAULT_BIND.parse().expect("default bind address parses"),
            admin_key: None,
            jwt_secret: None,
            allowed_origins: AllowedOrigins::Loopback,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            heartbeat_timeout: DEFAULT_HEARTBEAT_TIMEOUT,
            max_connections: 100_000,
            max_connections_per_ip: 0,
            max_connections_per_user: 0,
            max_message_bytes: 65_536,
            send_queue: 1024,
            rate_limit_per_s: 100,
            rate_limit_burst: 200,
            history_size: 100,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            schemas: None,
            max_rooms_per_connection: DEFAULT_MAX_ROOMS_PER_CONNECTION,
            max_history_bytes: DEFAULT_MAX_HISTORY_BYTES,
            log_level: LogLevel::Info,
            handle_signals: false,
        }
    }
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

/// A setting's raw value and where it came from.
#[derive(Debug, Clone)]
enum Raw {
    Text(String),
    List(Vec<String>),
}

impl Config {
    /// Builds a config from command-line `flags` (setting name to value),
    /// the environment seen through `env` and the TOML file named by the
    /// `config` setting, in that order of precedence.
    pub fn load(
        flags: &BTreeMap<String, String>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        for name in flags.keys() {
            if !SETTINGS.contains(&name.as_str()) {
                return Err(ConfigError::new(name, "unknown setting"));
            }
        }
        let env_name = |name: &str| format!("WSHUB_{}", name.to_ascii_uppercase());
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
        for name in SETTINGS {
            if name == "config" {
                continue;
            }
            let (raw, source) = if let Some(v) = flags.get(name) {
                (
                    Raw::Text(v.clone()),
                    format!("--{}", name.replace('_', "-")),
                )
            } else if let Some(v) = env(&env_name(name)) {
                (Raw::Text(v), env_name(name))
            } else if let Some(v) = file.get(name) {
                (v.clone(), format!("{name} in the config file"))
            } else {
                continue;
            };
            config
                .set(name, raw)
                .map_err(|message| ConfigError::new(name, format!("{message} (from {source})")))?;
        }
        config.validate()?;
        Ok(config)
    }

    /// Sets one setting from its text form, as a flag or variable gives it.
    pub fn set_str(&mut self, name: &str, value: &str) -> Result<(), ConfigError> {
        self.set(name, Raw::Text(value.to_string()))
            .map_err(|message| ConfigError::new(name, message))
    }

    fn set(&mut self, name: &str, raw: Raw) -> Result<(), String> {
        if name == "allowed_origins" {
            let items = match raw {
                Raw::Text(s) => s.split(',').map(|s| s.trim().to_string()).collect(),
                Raw::List(items) => items,
            };
            self.allowed_origins = parse_origins(&items)?;
            return Ok(());
        }
        let Raw::Text(text) = raw else {
            return Err("must be a single value, not a list".into());
        };
        let text = text.trim();
        match name {
            "bind" => self.bind = parse_addr(text)?,
            "admin_key" => self.admin_key = Some(non_empty(text)?),
            "jwt_secret" => self.jwt_secret = Some(non_empty(text)?),
            "handshake_timeout" => self.handshake_timeout = parse_duration(text)?,
            "heartbeat_interval" => self.heartbeat_interval = parse_duration(text)?,
            "heartbeat_timeout" => self.heartbeat_timeout = parse_duration(text)?,
            "max_connections" => self.max_connections = parse_count(text)?,
            "max_connections_per_ip" => self.max_connections_per_ip = parse_count(text)?,
            "max_connections_per_user" => self.max_connections_per_user = parse_count(text)?,
            "max_message_bytes" => self.max_message_bytes = parse_count(text)?,
            "send_queue" => self.send_queue = parse_count(text)?,
            "rate_limit_per_s" => self.rate_limit_per_s = parse_count(text)?,
            "rate_limit_burst" => self.rate_limit_burst = parse_count(text)?,
            "history_size" => self.history_size = parse_count(text)?,
            "shutdown_grace" => self.shutdown_grace = parse_duration(text)?,
            "schemas" => self.schemas = Some(PathBuf::from(non_empty(text)?)),
            "max_rooms_per_connection" => self.max_rooms_per_connection = parse_count(text)?,
            "max_history_bytes" => self.max_history_bytes = parse_size(text)?,
            _ => return Err("unknown setting".into()),
        }
        Ok(())
    }

    /// Checks the relations and ranges a parsed value alone cannot show.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("handshake_timeout", self.handshake_timeout),
            ("heartbeat_interval", self.heartbeat_interval),
            ("heartbeat_timeout", self.heartbeat_timeout),
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
        if !SETTINGS.contains(&key.as_str()) {
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

/// Parses `250ms`, `30s`, `2m`, `1h` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("`{text}` is not a duration (use 250ms, 30s, 2m or a number of seconds)");
    let text = text.trim();
    let (number, unit_secs) = if let Some(n) = text.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = text.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (text, 1.0)
    };
    let number = number.trim();
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(bad());
    }
    let value: f64 = number.parse().map_err(|_| bad())?;
    Duration::try_from_secs_f64(value * unit_secs).map_err(|_| bad())
}

/// Parses `64MiB`, `512KiB`, `1GiB`, `100B` or a bare number of bytes.
pub fn parse_size(text: &str) -> Result<usize, String> {
    let bad = || format!("`{text}` is not a size (use 64MiB, 512KiB or a number of bytes)");
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "kib" => 10,
        "mib" => 20,
        "gib" => 30,
        _ => return Err(bad()),
    };
    let number: usize = number.parse().map_err(|_| bad())?;
    number
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("`{text}` is too large"))
}

fn parse_count<T: FromStr>(text: &str) -> Result<T, String> {
    text.parse()
        .map_err(|_| format!("`{text}` is not a non-negative whole number in range"))
}

fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    text.to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| format!("`{text}` is not an address like 127.0.0.1:8000"))
}

fn non_empty(text: &str) -> Result<String, String> {
    if text.is_empty() {
        Err("must not be empty".into())
    } else {
        Ok(text.to_string())
    }
}

fn parse_origins(items: &[String]) -> Result<AllowedOrigins, String> {
    let items: Vec<&str> = items
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .collect();
    if items.is_empty() {
        return Err("must list at least one origin, or `*`".into());
    }
    if items.contains(&"*") {
        return Ok(AllowedOrigins::Any);
    }
    items
        .iter()
        .map(|o| {
            normalize_origin(o)
                .ok_or_else(|| format!("`{o}` is not an origin like https://app.example:8443"))
        })
        .collect::<Result<_, _>>()
        .map(AllowedOrigins::List)
}

/// An origin in lower-case `scheme://host[:port]` form, or `None` if `text`
/// is not one (a path, query or user part is not allowed). `null` passes.
pub fn normalize_origin(text: &str) -> Option<String> {
    if text == "null" {
        return Some(text.into());
    }
    let (scheme, rest) = text.split_once("://")?;
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    let host_ok = !rest.is_empty()
        && rest
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ':' | '[' | ']' | '_'));
    (scheme_ok && host_ok).then(|| text.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_match_the_protocol() {
        let c = Config::load(&BTreeMap::new(), |_| None).unwrap();
        assert_eq!(c.bind.to_string(), "127.0.0.1:8000");
        assert_eq!(c.heartbeat_interval, Duration::from_secs(30));
        assert_eq!(c.heartbeat_timeout, Duration::from_secs(60));
        assert_eq!(c.max_connections, 100_000);
        assert_eq!(c.max_message_bytes, 65_536);
        assert_eq!(c.send_queue, 1024);
        assert_eq!((c.rate_limit_per_s, c.rate_limit_burst), (100, 200));
        assert_eq!(c.history_size, 100);
        assert_eq!(c.shutdown_grace, Duration::from_secs(5));
        assert_eq!(c.allowed_origins, AllowedOrigins::Loopback);
        assert_eq!(c.max_rooms_per_connection, 1000);
        assert_eq!(c.max_history_bytes, 64 * 1024 * 1024);
    }

    #[test]
    fn sizes_take_every_documented_form() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("100B"), Ok(100));
        assert_eq!(parse_size(" 2 mib "), Ok(2 << 20));
        assert_eq!(parse_size("0"), Ok(0));
        for bad in [
            "",
            "MiB",
            "-1",
            "1.5MiB",
            "64MB",
            "64M",
            "1e6",
            "1 2",
            "99999999999999999999",
        ] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert!(parse_size(&format!("{}GiB", usize::MAX >> 20)).is_err());
    }

    #[test]
    fn room_and_history_limits_load_from_every_source() {
        let c = Config::load(&flags(&[("max_history_bytes", "512KiB")]), |n| {
            (n == "WSHUB_MAX_ROOMS_PER_CONNECTION").then(|| "5".to_string())
        })
        .unwrap();
        assert_eq!(c.max_history_bytes, 512 * 1024);
        assert_eq!(c.max_rooms_per_connection, 5);
        let c = Config::load(&BTreeMap::new(), |n| {
            (n == "WSHUB_MAX_HISTORY_BYTES").then(|| "1000".to_string())
        })
        .unwrap();
        assert_eq!(c.max_history_bytes, 1000);
    }

    #[test]
    fn durations_take_every_documented_form() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        for bad in ["", "s", "-1s", "abc", "1x", "1e9999", "NaN", "inf"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn flag_beats_env_beats_file_beats_default() {
        let dir = std::env::temp_dir().join(format!("wshub-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("hub.toml");
        std::fs::write(
            &path,
            "send_queue = 7\nhistory_size = 8\nheartbeat_interval = \"3s\"\nallowed_origins = [\"https://a.example\", \"http://b.example:81\"]\n",
        )
        .unwrap();
        let env = |name: &str| match name {
            "WSHUB_HISTORY_SIZE" => Some("9".to_string()),
            "WSHUB_HEARTBEAT_INTERVAL" => Some("4s".to_string()),
            _ => None,
        };
        let c = Config::load(
            &flags(&[
                ("config", path.to_str().unwrap()),
                ("heartbeat_interval", "5s"),
            ]),
            env,
        )
        .unwrap();
        assert_eq!(c.send_queue, 7, "file");
        assert_eq!(c.history_size, 9, "env beats file");
        assert_eq!(
            c.heartbeat_interval,
            Duration::from_secs(5),
            "flag beats env"
        );
        assert_eq!(
            c.allowed_origins,
            AllowedOrigins::List(vec![
                "https://a.example".into(),
                "http://b.example:81".into()
            ])
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn bad_values_name_the_setting() {
        let cases = [
            ("heartbeat_interval", "soon"),
            ("heartbeat_interval", "0"),
            ("send_queue", "0"),
            ("send_queue", "-3"),
            ("max_message_bytes", "10"),
            ("bind", "not an address"),
            ("allowed_origins", "ftp//x"),
            ("jwt_secret", ""),
            ("max_connections", "0"),
            ("max_history_bytes", "lots"),
            ("max_history_bytes", "64MB"),
            ("max_history_bytes", "0"),
            ("max_rooms_per_connection", "0"),
            ("max_rooms_per_connection", "many"),
        ];
        for (name, value) in cases {
            let e = Config::load(&flags(&[(name, value)]), |_| None).unwrap_err();
            assert_eq!(e.setting, name, "{name}={value}: {e}");
        }
        let e = Config::load(&BTreeMap::new(), |n| {
            (n == "WSHUB_SEND_QUEUE").then(|| "lots".to_string())
        })
        .unwrap_err();
        assert_eq!(e.setting, "send_queue");
        assert!(e.message.contains("WSHUB_SEND_QUEUE"), "{e}");
    }

    #[test]
    fn unknown_file_keys_and_bad_files_are_refused() {
        let dir = std::env::temp_dir().join(format!("wshub-config-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let unknown = dir.join("unknown.toml");
        std::fs::write(&unknown, "sned_queue = 5\n").unwrap();
        let e =
            Config::load(&flags(&[("config", unknown.to_str().unwrap())]), |_| None).unwrap_err();
        assert_eq!(e.setting, "sned_queue");
        let broken = dir.join("broken.toml");
        std::fs::write(&broken, "send_queue = \n").unwrap();
        let e =
            Config::load(&flags(&[("config", broken.to_str().unwrap())]), |_| None).unwrap_err();
        assert_eq!(e.setting, "config");
        let missing = dir.join("missing.toml");
        let e =
            Config::load(&flags(&[("config", missing.to_str().unwrap())]), |_| None).unwrap_err();
        assert_eq!(e.setting, "config");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn origins_accept_star_and_normalise_case() {
        let mut c = Config::default();
        c.set_str("allowed_origins", "*").unwrap();
        assert_eq!(c.allowed_origins, AllowedOrigins::Any);
        c.set_str(
            "allowed_origins",
            "HTTPS://App.Example:8443, http://[::1]:3000",
        )
        .unwrap();
        assert_eq!(
            c.allowed_origins,
            AllowedOrigins::List(vec![
                "https://app.example:8443".into(),
                "http://[::1]:3000".into()
            ])
        );
        assert!(
            c.set_str("allowed_origins", "https://a.example/path")
                .is_err()
        );
    }

    #[test]
    fn log_levels_parse() {
        assert_eq!("warn".parse::<LogLevel>(), Ok(LogLevel::Warn));
        assert_eq!("DEBUG".parse::<LogLevel>(), Ok(LogLevel::Debug));
        assert!("loud".parse::<LogLevel>().is_err());
    }
}
