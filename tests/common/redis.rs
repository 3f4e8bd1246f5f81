//! A real `redis-server` for the cluster tests: each test starts its own on
//! a free loopback port, in its own directory, and can stop, restart
//! (with or without its data) and command it. When `redis-server` is not
//! installed the tests skip with a message, unless `WSHUB_REQUIRE_REDIS`
//! is set (CI sets it), which turns the skip into a failure.

#![allow(dead_code)] // each test file uses its own share of these

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A hub of the cluster on `redis`, named `node`, with `change` made to
/// its settings.
pub fn hub_with(
    redis: &Redis,
    node: &str,
    change: impl FnOnce(&mut wshub::Config),
) -> wshub::testing::TestHub {
    let url = redis.url();
    let node = node.to_string();
    wshub::testing::TestHub::with_config(move |c| {
        c.redis_url = Some(url);
        c.node_id = Some(node);
        change(c);
    })
}

/// How long Redis gets to start or stop.
const REDIS_WAIT: Duration = Duration::from_secs(10);

/// The `redis-server` binary, or `None` (with a message) to skip the test.
pub fn redis_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .map(|dir| dir.join("redis-server"))
        .find(|p| p.is_file());
    if found.is_none() {
        let required =
            std::env::var("WSHUB_REQUIRE_REDIS").is_ok_and(|v| !v.is_empty() && v != "0");
        assert!(
            !required,
            "redis-server is not installed and WSHUB_REQUIRE_REDIS is set: install it (apt-get install redis-server)"
        );
        eprintln!("SKIPPED: redis-server is not installed; the cluster tests need it");
    }
    found
}

/// A `redis-server` child on a loopback port.
pub struct Redis {
    binary: PathBuf,
    pub port: u16,
    pub dir: PathBuf,
    child: Option<Child>,
}

impl Redis {
    /// Starts a server on a free port in a fresh directory; `None` when
    /// `redis-server` is not installed.
    pub fn start(name: &str) -> Option<Self> {
        let binary = redis_binary()?;
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("wshub-redis-{name}-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("make the Redis directory");
        let mut redis = Self {
            binary,
            port,
            dir,
            child: None,
        };
        redis.spawn();
        Some(redis)
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let child = Command::new(&self.binary)
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--dbfilename", "dump.rdb", "--protected-mode", "no"])
            .args(["--enable-debug-command", "local"])
            .arg("--dir")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + REDIS_WAIT;
        loop {
            if self.try_command(&["PING"]).is_ok_and(|r| r == "+PONG") {
                return;
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server: with its data saved to disk (`save`) or not.
    pub fn stop(&mut self, save: bool) {
        let how = if save { "SAVE" } else { "NOSAVE" };
        let _ = self.try_command(&["SHUTDOWN", how]);
        if let Some(mut child) = self.child.take() {
            let deadline = Instant::now() + REDIS_WAIT;
            while child.try_wait().ok().flatten().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Starts it again on the same port: with what it saved, or empty.
    pub fn restart(&mut self, keep_data: bool) {
        if !keep_data {
            let _ = std::fs::remove_file(self.dir.join("dump.rdb"));
        }
        self.spawn();
    }

    /// Sends one command and returns its reply's first line (`+OK`,
    /// `:1`, `$…` for bulk strings, which this helper does not read).
    pub fn command(&self, args: &[&str]) -> String {
        self.try_command(args)
            .unwrap_or_else(|e| panic!("redis {args:?}: {e}"))
    }

    fn try_command(&self, args: &[&str]) -> std::io::Result<String> {
        command_at(self.port, args)
    }

    /// Reads a bulk string reply (`GET`), `None` for nil.
    pub fn get(&self, key: &str) -> Option<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to redis");
        stream.set_read_timeout(Some(REDIS_WAIT)).unwrap();
        let request = format!("*2\r\n$3\r\nGET\r\n${}\r\n{key}\r\n", key.len());
        stream.write_all(request.as_bytes()).unwrap();
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let len: i64 = line
            .trim_end()
            .trim_start_matches('$')
            .parse()
            .unwrap_or(-1);
        if len < 0 {
            return None;
        }
        let mut body = vec![0; len as usize + 2];
        reader.read_exact(&mut body).unwrap();
        body.truncate(len as usize);
        Some(String::from_utf8_lossy(&body).to_string())
    }

    /// The data directory (for the test's own checks).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Redis known by its port only, to command from another thread.
pub struct RedisAt(pub u16);

impl RedisAt {
    /// As [`Redis::command`].
    pub fn command(&self, args: &[&str]) -> String {
        command_at(self.0, args).unwrap_or_else(|e| panic!("redis {args:?}: {e}"))
    }
}

/// One command to the Redis on `port`; the reply's first line.
fn command_at(port: u16, args: &[&str]) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(REDIS_WAIT))?;
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    stream.write_all(request.as_bytes())?;
    let mut line = String::new();
    BufReader::new(&mut stream).read_line(&mut line)?;
    Ok(line.trim_end().to_string())
}

/// A loopback port nothing listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
