//! Setting values: the raw forms a flag, variable or TOML key gives, and
//! the parsers the settings table names for each setting.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use super::{AllowedHosts, AllowedOrigins, HookUrl, hosts};

/// A setting's raw value: text from a flag, a variable or a TOML scalar, or
/// a TOML array of strings.
#[derive(Debug, Clone)]
pub(crate) enum Raw {
    Text(String),
    List(Vec<String>),
}

impl Raw {
    /// The single value, trimmed; a list is refused.
    fn text(&self) -> Result<&str, String> {
        match self {
            Raw::Text(text) => Ok(text.trim()),
            Raw::List(_) => Err("must be a single value, not a list".into()),
        }
    }

    /// The items of a list, or of comma-separated text.
    fn items(&self) -> Vec<String> {
        match self {
            Raw::Text(text) => text.split(',').map(|s| s.trim().to_string()).collect(),
            Raw::List(items) => items.clone(),
        }
    }
}

/// A listen address.
pub(crate) fn addr(raw: &Raw) -> Result<SocketAddr, String> {
    parse_addr(raw.text()?)
}

/// A secret or key that must not be empty.
pub(crate) fn secret(raw: &Raw) -> Result<Option<String>, String> {
    non_empty(raw.text()?).map(Some)
}

/// A file path that must not be empty.
pub(crate) fn path(raw: &Raw) -> Result<Option<PathBuf>, String> {
    non_empty(raw.text()?).map(|p| Some(PathBuf::from(p)))
}

/// A hook URL: `http://…` or `stdio`.
pub(crate) fn hook(raw: &Raw) -> Result<Option<HookUrl>, String> {
    HookUrl::parse(non_empty(raw.text()?)?.as_str()).map(Some)
}

/// Header names, lower-cased; an empty value forwards none.
pub(crate) fn header_names(raw: &Raw) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    for item in raw
        .items()
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
    {
        if !item
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        {
            return Err(format!("`{item}` is not a header name"));
        }
        let name = item.to_ascii_lowercase();
        if !names.contains(&name) {
            names.push(name);
        }
    }
    Ok(names)
}

/// A duration.
pub(crate) fn duration(raw: &Raw) -> Result<Duration, String> {
    parse_duration(raw.text()?)
}

/// A non-negative whole number that fits the setting's type.
pub(crate) fn count<T: FromStr>(raw: &Raw) -> Result<T, String> {
    let text = raw.text()?;
    text.parse()
        .map_err(|_| format!("`{text}` is not a non-negative whole number in range"))
}

/// A host allowlist.
pub(crate) fn hosts(raw: &Raw) -> Result<AllowedHosts, String> {
    hosts::parse_hosts(&raw.items())
}

/// The host name a `bind` value names, if it is a name.
pub(crate) fn bind_name(raw: &Raw) -> Option<String> {
    hosts::bind_name(raw.text().ok()?)
}

/// A size in bytes.
pub(crate) fn size(raw: &Raw) -> Result<usize, String> {
    parse_size(raw.text()?)
}

/// An origin allowlist.
pub(crate) fn origins(raw: &Raw) -> Result<AllowedOrigins, String> {
    parse_origins(&raw.items())
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

/// The trimmed, non-empty items of an allowlist, or `None` for `*` (any);
/// an empty list is refused, naming what it should list.
pub(crate) fn list_or_star<'a>(
    items: &'a [String],
    what: &str,
) -> Result<Option<Vec<&'a str>>, String> {
    let items: Vec<&str> = items
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .collect();
    if items.is_empty() {
        return Err(format!("must list at least one {what}, or `*`"));
    }
    Ok((!items.contains(&"*")).then_some(items))
}

fn parse_origins(items: &[String]) -> Result<AllowedOrigins, String> {
    let Some(items) = list_or_star(items, "origin")? else {
        return Ok(AllowedOrigins::Any);
    };
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
