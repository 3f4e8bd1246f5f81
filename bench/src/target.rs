//! The server under test: a hub at a URL (with its pid if given), or one
//! the bench starts as a child process — this binary's `serve`, or any
//! command (a peer, the floor) that takes `--bind 127.0.0.1:0` and prints
//! `{"event":"listening","addr":…}` as its first stdout line. A child runs
//! in its own process so its memory and CPU can be read apart from the
//! bench's and so each side has the whole file limit; it is killed when
//! the target is dropped. Also the file-limit checks, which decide
//! whether the asked-for number of subscribers can fit.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde::Serialize;

use super::procfs;

/// Time a started server has to print its listening line.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Set in the environment of a bench re-run with a raised file limit.
const RAISED_ENV: &str = "WSHUB_BENCH_NOFILE_RAISED";
/// Files a process needs beyond one per connection (listener, stdio, epoll, ...).
pub(crate) const SPARE_FILES: u64 = 64;

/// The `wshub` binary to start: `$WSHUB_BIN`, or the one beside this
/// executable (`cargo build --release --workspace` puts both in
/// `target/release`).
fn hub_binary() -> Result<std::path::PathBuf, String> {
    if let Some(path) = std::env::var_os("WSHUB_BIN") {
        return Ok(path.into());
    }
    let me = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
    let beside = me.with_file_name("wshub");
    if beside.is_file() {
        Ok(beside)
    } else {
        Err(format!(
            "no wshub binary at {}: build it (`cargo build --release --workspace`) or set WSHUB_BIN",
            beside.display()
        ))
    }
}

/// How the bench reaches the server.
#[derive(Debug)]
pub(crate) enum Start {
    /// A running server at a URL.
    Url { url: String, pid: Option<u32> },
    /// `wshub serve` with extra flags.
    Wshub { args: Vec<String> },
    /// A shell command, to which ` --bind 127.0.0.1:0` is appended.
    Command(String),
}

/// A server the bench is measuring.
#[derive(Debug)]
pub(crate) struct Target {
    pub addr: SocketAddr,
    pub pid: Option<u32>,
    /// What was measured, for the report.
    pub description: TargetInfo,
    child: Option<Child>,
}

/// The report's view of the target.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct TargetInfo {
    pub kind: &'static str,
    pub command: Option<String>,
    pub addr: String,
    pub pid: Option<u32>,
    /// Where a started server's stderr went.
    pub log: Option<String>,
}

impl Target {
    /// Finds or starts the server.
    pub fn start(start: &Start) -> Result<Self, String> {
        match start {
            Start::Url { url, pid } => {
                let addr = parse_url(url)?;
                Ok(Self {
                    addr,
                    pid: *pid,
                    description: TargetInfo {
                        kind: "url",
                        command: None,
                        addr: addr.to_string(),
                        pid: *pid,
                        log: None,
                    },
                    child: None,
                })
            }
            Start::Wshub { args } => {
                let exe = hub_binary()?;
                let mut command = Command::new(&exe);
                command
                    .arg("serve")
                    .args(["--bind", "127.0.0.1:0"])
                    .args(args);
                if std::env::var_os("WSHUB_LOG").is_none() {
                    command.env("WSHUB_LOG", "warn");
                }
                let shown = format!(
                    "{} serve --bind 127.0.0.1:0 {}",
                    exe.display(),
                    args.join(" ")
                );
                spawn(command, "wshub", shown.trim_end().to_string())
            }
            Start::Command(line) => {
                let mut command = Command::new("sh");
                // `exec` so the pid measured is the server's, not the shell's.
                command
                    .arg("-c")
                    .arg(format!("exec {line} --bind 127.0.0.1:0"));
                spawn(command, "command", line.clone())
            }
        }
    }

    /// The `Host` header for requests to it.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Whether a child server has exited.
    pub fn exited(&mut self) -> Option<String> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            _ => None,
        }
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // A benchmark target has nothing to save; it may already be gone.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn spawn(mut command: Command, kind: &'static str, shown: String) -> Result<Target, String> {
    let log = log_path();
    let stderr = std::fs::File::create(&log)
        .map(Stdio::from)
        .unwrap_or_else(|_| Stdio::inherit());
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .map_err(|e| format!("cannot start `{shown}`: {e}"))?;
    let pid = child.id();
    let stdout = child.stdout.take();
    let mut target = Target {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        pid: Some(pid),
        description: TargetInfo {
            kind,
            command: Some(shown.clone()),
            addr: String::new(),
            pid: Some(pid),
            log: Some(log.display().to_string()),
        },
        child: Some(child),
    };
    let (line_tx, line_rx) = mpsc::channel();
    if let Some(stdout) = stdout {
        // Reads the first line, then drains stdout so the child never blocks on it.
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = line_tx.send(lines.next());
            for _ in lines {}
        });
    }
    let line = match line_rx.recv_timeout(START_TIMEOUT) {
        Ok(Some(Ok(line))) => line,
        _ => {
            let status = target.exited().unwrap_or_else(|| "still running".into());
            return Err(format!(
                "`{shown}` printed no listening line within {START_TIMEOUT:?} ({status}); see {}",
                log.display()
            ));
        }
    };
    target.addr = listening_addr(&line).ok_or_else(|| {
        format!("`{shown}` printed `{line}`, not {{\"event\":\"listening\",\"addr\":…}}")
    })?;
    target.description.addr = target.addr.to_string();
    Ok(target)
}

fn log_path() -> PathBuf {
    std::env::temp_dir().join(format!("wshub-bench-{}-server.log", std::process::id()))
}

/// The `addr` of a `{"event":"listening","addr":"…"}` line.
pub(crate) fn listening_addr(line: &str) -> Option<SocketAddr> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    if value["event"] != "listening" {
        return None;
    }
    value["addr"].as_str()?.parse().ok()
}

/// The socket address of an `http://host:port` (or `ws://`) URL.
pub(crate) fn parse_url(url: &str) -> Result<SocketAddr, String> {
    let bad = || format!("`{url}` is not a URL like http://127.0.0.1:8000");
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("ws://"))
        .ok_or_else(bad)?;
    let authority = rest.split('/').next().unwrap_or_default();
    let with_port = if authority.contains(':') && !authority.ends_with(']') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    with_port
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(bad)
}

/// Starts the target like [`Target::start`], first leaving out the
/// `--hub-arg` flags the hub binary's `serve` does not know (a limit that a
/// later build adds, say), so one command line works on builds before and
/// after it. Returns the target and the flags left out.
pub(crate) fn start_tolerant(start: &Start) -> Result<(Target, Vec<String>), String> {
    let Start::Wshub { args } = start else {
        return Target::start(start).map(|t| (t, Vec::new()));
    };
    let help = Command::new(hub_binary()?)
        .args(["serve", "--help"])
        .output()
        .map_err(|e| format!("cannot run `serve --help`: {e}"))?;
    let (known, unknown) = split_known(args, &String::from_utf8_lossy(&help.stdout));
    for flag in &unknown {
        eprintln!("bench: this hub has no `{flag}`; starting it without");
    }
    let target = Target::start(&Start::Wshub { args: known })?;
    Ok((target, unknown))
}

/// Splits flags into those whose name `help` lists and those it does not;
/// a value given as its own argument goes with its flag.
fn split_known(args: &[String], help: &str) -> (Vec<String>, Vec<String>) {
    let listed = |name: &str| {
        help.split(|c: char| c.is_whitespace() || c == ',' || c == '=' || c == '[')
            .any(|word| word == name)
    };
    let (mut known, mut unknown) = (Vec::new(), Vec::new());
    let mut last_known = true;
    for arg in args {
        if arg.starts_with("--") {
            let name = arg.split('=').next().unwrap_or(arg);
            last_known = listed(name);
        }
        if last_known {
            known.push(arg.clone());
        } else {
            unknown.push(arg.clone());
        }
    }
    (known, unknown)
}

/// Makes sure this process may open `needed` files: re-runs the bench under
/// `sh -c 'ulimit -n HARD'` when only the soft limit is in the way (the
/// crate forbids the `unsafe` a direct `setrlimit` needs), and explains
/// what to do when the hard limit is too low. Returns the limit in force.
pub(crate) fn ensure_file_limit(needed: u64) -> Result<u64, String> {
    let Some((soft, hard)) = procfs::open_file_limits("self") else {
        return Ok(u64::MAX); // Not Linux: let the connects say it.
    };
    if needed <= soft {
        return Ok(soft);
    }
    if needed > hard {
        return Err(format!(
            "this run needs about {needed} open files in the bench (and as many in a hub it \
             starts), but the hard limit is {hard}: use fewer --subscribers (at most {}), or \
             raise the hard limit (`ulimit -Hn` as root, or LimitNOFILE=)",
            hard.saturating_sub(SPARE_FILES)
        ));
    }
    if std::env::var_os(RAISED_ENV).is_some() {
        return Err(format!(
            "could not raise the open-file limit from {soft} to {hard}; run `ulimit -n {hard}` first"
        ));
    }
    eprintln!("bench: raising the open-file limit from {soft} to {hard} and starting again");
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    use std::os::unix::process::CommandExt;
    let error = Command::new("sh")
        .arg("-c")
        .arg("ulimit -n \"$1\" && shift && exec \"$@\"")
        .arg("sh")
        .arg(hard.to_string())
        .arg(exe)
        .args(std::env::args_os().skip(1))
        .env(RAISED_ENV, "1")
        .exec();
    Err(format!("cannot re-run with a raised file limit: {error}"))
}

/// The open-file limit of another process, to warn when it cannot hold
/// `needed` connections.
pub(crate) fn check_server_limit(pid: u32, needed: u64) -> Option<String> {
    let (soft, _) = procfs::open_file_limits(&pid.to_string())?;
    (needed > soft).then(|| {
        format!(
            "the server (pid {pid}) may open only {soft} files; {needed} connections will not fit"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls_and_listening_lines() {
        assert_eq!(parse_url("http://127.0.0.1:8000").unwrap().port(), 8000);
        assert_eq!(parse_url("ws://127.0.0.1:9/ws").unwrap().port(), 9);
        assert_eq!(parse_url("http://[::1]:7").unwrap().to_string(), "[::1]:7");
        assert!(parse_url("https://x:1").is_err());
        assert!(parse_url("127.0.0.1:80").is_err());
        let line = r#"{"event":"listening","addr":"127.0.0.1:4242","epoch":"e"}"#;
        assert_eq!(listening_addr(line).unwrap().port(), 4242);
        assert_eq!(listening_addr(r#"{"event":"started"}"#), None);
        assert_eq!(listening_addr("hello"), None);
    }

    #[test]
    fn unknown_hub_flags_are_left_out_with_their_values() {
        let help = "Options:\n      --send-queue <N>   Outbound queue\n  -h, --help   Print help\n";
        let args: Vec<String> = [
            "--send-queue=8",
            "--max-rooms-per-connection",
            "200000",
            "--help",
        ]
        .map(String::from)
        .into();
        let (known, unknown) = split_known(&args, help);
        assert_eq!(known, ["--send-queue=8", "--help"]);
        assert_eq!(unknown, ["--max-rooms-per-connection", "200000"]);
    }
}
