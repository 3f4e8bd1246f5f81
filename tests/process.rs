//! The `wshub` process (PROTOCOL.md section 8): the listening line, JSON
//! logs on stderr, settings from flag, environment and file with exit 2 for
//! bad values, `--stdin-events`, and the SIGTERM/SIGINT drain.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wshub::testing::{Closed, TestClient, http};

const WAIT: Duration = Duration::from_secs(20);

struct Hub {
    child: Child,
    addr: std::net::SocketAddr,
    epoch: String,
    stderr: mpsc::Receiver<String>,
    stdin: Option<ChildStdin>,
}

impl Hub {
    fn start(args: &[&str], env: &[(&str, &str)]) -> Hub {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wshub"));
        if !args.contains(&"--bind") {
            cmd.args(["--bind", "127.0.0.1:0"]);
        }
        cmd.args(args)
            .env_remove("WSHUB_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start wshub");
        let stdout = child.stdout.take().unwrap();
        let (line_tx, line_rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = line_tx.send(line);
        });
        let stderr = child.stderr.take().unwrap();
        let (err_tx, err_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = err_tx.send(line);
            }
        });
        let line = line_rx.recv_timeout(WAIT).expect("a listening line");
        let listening: Value = serde_json::from_str(&line).expect("the first stdout line is JSON");
        assert_eq!(listening["event"], "listening");
        let stdin = child.stdin.take();
        Hub {
            child,
            addr: listening["addr"].as_str().unwrap().parse().unwrap(),
            epoch: listening["epoch"].as_str().unwrap().to_string(),
            stderr: err_rx,
            stdin,
        }
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn wait_exit(&mut self) -> i32 {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().expect("exited, not killed by a signal");
            }
            assert!(Instant::now() < deadline, "the hub did not exit in time");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stderr_lines(&self) -> Vec<String> {
        self.stderr.try_iter().collect()
    }

    fn ws(&self, query: &str) -> String {
        format!("ws://{}/ws{query}", self.addr)
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the binary expecting it to refuse to start; returns (status, stderr).
fn refuse(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wshub"));
    // Every case fails before binding, so the default address is never taken.
    cmd.args(args).env_remove("WSHUB_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("wshub-process-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn the_listening_line_comes_first_and_names_the_welcome_epoch() {
    let hub = Hub::start(&[], &[]);
    assert_ne!(hub.addr.port(), 0);
    smol::block_on(async {
        let c = TestClient::connect(&hub.ws("")).await;
        assert_eq!(c.welcome["payload"]["epoch"], hub.epoch.as_str());
    });
}

#[test]
fn bad_settings_stop_the_start_with_exit_2_naming_the_setting() {
    let unknown = temp_file("unknown.toml", "heartbeat_intervall = \"1s\"\n");
    let bad_value = temp_file("bad.toml", "send_queue = -4\n");
    let schemas = temp_file("schemas.json", "{\"t\": {\"type\": 17}}");
    let not_json = temp_file("not.json", "{nope");
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (
            vec!["--heartbeat-interval", "soon"],
            vec![],
            "heartbeat_interval",
        ),
        (vec!["--max-connections", "0"], vec![], "max_connections"),
        (vec![], vec![("WSHUB_SEND_QUEUE", "lots")], "send_queue"),
        (
            vec![],
            vec![("WSHUB_ALLOWED_ORIGINS", "not an origin")],
            "allowed_origins",
        ),
        (
            vec![],
            vec![("WSHUB_ALLOWED_HOSTS", "hub.example:8000")],
            "allowed_hosts",
        ),
        (vec!["--allowed-hosts", ","], vec![], "allowed_hosts"),
        (
            vec!["--config", unknown.to_str().unwrap()],
            vec![],
            "heartbeat_intervall",
        ),
        (
            vec!["--config", bad_value.to_str().unwrap()],
            vec![],
            "send_queue",
        ),
        (
            vec!["--config", "/nonexistent/wshub.toml"],
            vec![],
            "config",
        ),
        (
            vec!["--schemas", schemas.to_str().unwrap()],
            vec![],
            "schemas",
        ),
        (
            vec!["--schemas", not_json.to_str().unwrap()],
            vec![],
            "schemas",
        ),
        (vec![], vec![("WSHUB_LOG", "loud")], "WSHUB_LOG"),
    ];
    for (args, env, setting) in cases {
        let (status, stderr) = refuse(&args, &env);
        assert_eq!(status, 2, "{args:?} {env:?}: {stderr}");
        let line: Value = serde_json::from_str(stderr.lines().last().unwrap())
            .unwrap_or_else(|_| panic!("stderr is JSON lines: {stderr}"));
        assert_eq!(line["level"], "error");
        assert_eq!(line["setting"], setting, "{stderr}");
        assert!(line["msg"].as_str().unwrap().contains(setting));
    }
}

#[test]
fn flags_beat_environment_beat_file_beat_defaults() {
    let file = temp_file(
        "precedence.toml",
        "heartbeat_interval = \"3s\"\nheartbeat_timeout = 9\nhistory_size = 5\n",
    );
    let file = file.to_str().unwrap();
    let interval = |args: &[&str], env: &[(&str, &str)]| {
        let hub = Hub::start(args, env);
        smol::block_on(async {
            let c = TestClient::connect(&hub.ws("")).await;
            (
                c.welcome["payload"]["heartbeat_interval_ms"]
                    .as_u64()
                    .unwrap(),
                c.welcome["payload"]["heartbeat_timeout_ms"]
                    .as_u64()
                    .unwrap(),
            )
        })
    };
    let env = [("WSHUB_HEARTBEAT_INTERVAL", "4s"), ("WSHUB_CONFIG", file)];
    assert_eq!(
        interval(&["--heartbeat-interval", "5s"], &env),
        (5000, 9000)
    );
    assert_eq!(interval(&[], &env), (4000, 9000));
    assert_eq!(interval(&["--config", file], &[]), (3000, 9000));
    assert_eq!(interval(&[], &[]), (30_000, 60_000));
}

#[test]
fn logs_are_json_lines_with_correlation_and_connection_ids() {
    let mut hub = Hub::start(&[], &[("WSHUB_LOG", "debug")]);
    let connection_id = smol::block_on(async {
        let mut c = TestClient::connect_with(&hub.ws("?rooms=r"), &[("X-Correlation-ID", "up-7")])
            .await
            .unwrap();
        let body = r#"{"room":"r","type":"t","payload":{}}"#;
        let r = http(
            hub.addr,
            "POST",
            "/api/events",
            &[("X-Correlation-ID", "pub-7")],
            Some(body),
        )
        .await;
        assert_eq!(r.status, 202);
        c.expect("t").await;
        let id = c.id();
        c.close().await;
        id
    });
    hub.signal("TERM");
    assert_eq!(hub.wait_exit(), 0);
    let lines = hub.stderr_lines();
    assert!(!lines.is_empty());
    let logs: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect();
    for log in &logs {
        assert!(log["level"].is_string() && log["msg"].is_string(), "{log}");
        assert!(
            log["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{log}"
        );
    }
    let find = |msg: &str| {
        logs.iter()
            .find(|l| l["msg"] == msg)
            .unwrap_or_else(|| panic!("no `{msg}` line in {lines:#?}"))
    };
    let opened = find("connection opened");
    assert_eq!(opened["correlation_id"], "up-7");
    assert_eq!(opened["connection_id"], connection_id.as_str());
    assert_eq!(find("event published")["correlation_id"], "pub-7");
    let closed = find("connection closed");
    assert_eq!(closed["connection_id"], connection_id.as_str());
    assert_eq!(closed["reason"], "normal");
    assert_eq!(closed["close_code"], 1000);

    // One correlation ID, followed from the HTTP request to the queue of
    // the connection it reached.
    let trail: Vec<&Value> = logs
        .iter()
        .filter(|l| l["correlation_id"] == "pub-7")
        .collect();
    let msgs: Vec<&str> = trail.iter().map(|l| l["msg"].as_str().unwrap()).collect();
    assert_eq!(
        msgs,
        ["event queued", "event published", "http request"],
        "{trail:#?}"
    );
    assert_eq!(trail[0]["connection_id"], connection_id.as_str());
    assert_eq!(trail[0]["event_id"], trail[1]["event_id"]);
    assert_eq!(trail[1]["recipients"], 1);
    assert_eq!(trail[2]["status"], 202);
}

#[test]
fn the_log_level_comes_from_wshub_log() {
    let mut quiet = Hub::start(&[], &[("WSHUB_LOG", "warn")]);
    smol::block_on(async {
        TestClient::connect(&quiet.ws("")).await.close().await;
    });
    quiet.signal("TERM");
    assert_eq!(quiet.wait_exit(), 0);
    let lines = quiet.stderr_lines();
    assert!(lines.iter().all(|l| !l.contains("\"info\"")), "{lines:#?}");

    let mut chatty = Hub::start(&[], &[]);
    smol::block_on(async {
        TestClient::connect(&chatty.ws("")).await.close().await;
    });
    chatty.signal("TERM");
    assert_eq!(chatty.wait_exit(), 0);
    let lines = chatty.stderr_lines();
    assert!(
        lines.iter().any(|l| l.contains("connection opened")),
        "info by default: {lines:#?}"
    );
    assert!(lines.iter().all(|l| !l.contains("\"debug\"")));
}

#[test]
fn sigterm_drains_with_1001_answers_503_and_exits_0() {
    let mut hub = Hub::start(&["--shutdown-grace", "3s"], &[]);
    let polite_id = smol::block_on(async {
        let mut polite = TestClient::connect(&hub.ws("")).await;
        // A peer that never answers the close keeps the drain open until the grace ends.
        let _stubborn = wshub::testing::connect_raw(&hub.ws(""), &[]).await.unwrap();
        hub.signal("TERM");
        assert_eq!(polite.expect_close().await, Closed::Code(1001));
        let deadline = Instant::now() + WAIT;
        loop {
            let r = http(hub.addr, "GET", "/health", &[], None).await;
            if r.status == 503 {
                assert_eq!(r.error_code(), "shutting_down");
                assert!(r.header("retry-after").is_some());
                break;
            }
            assert!(
                Instant::now() < deadline,
                "never answered 503 while draining"
            );
            smol::Timer::after(Duration::from_millis(20)).await;
        }
        polite.id()
    });
    assert_eq!(hub.wait_exit(), 0);
    let closed: Value = hub
        .stderr_lines()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["msg"] == "connection closed" && l["connection_id"] == polite_id.as_str())
        .expect("a close line for the polite client");
    assert_eq!(closed["reason"], "shutdown");
    assert_eq!(closed["close_code"], 1001);
}

#[test]
fn sigint_drains_too() {
    let mut hub = Hub::start(&[], &[]);
    smol::block_on(async {
        let mut c = TestClient::connect(&hub.ws("")).await;
        hub.signal("INT");
        assert_eq!(c.expect_close().await, Closed::Code(1001));
    });
    assert_eq!(hub.wait_exit(), 0);
}

#[test]
fn stdin_events_are_published_bad_lines_skipped_and_eof_stops_the_hub() {
    let mut hub = Hub::start(&["--stdin-events"], &[]);
    smol::block_on(async {
        let mut tab = TestClient::connect(&hub.ws("?rooms=jobs")).await;
        let stdin = hub.stdin.as_mut().unwrap();
        writeln!(
            stdin,
            r#"{{"room":"jobs","type":"job_started","payload":{{"id":1}}}}"#
        )
        .unwrap();
        writeln!(stdin, "this is not json").unwrap();
        // Not UTF-8: skipped like any bad line, not taken for the end of stdin.
        stdin.write_all(b"\xff\xfe{\"type\":\"x\"}\n").unwrap();
        writeln!(
            stdin,
            r#"{{"room":"jobs","type":"welcome","payload":{{}}}}"#
        )
        .unwrap();
        writeln!(stdin).unwrap();
        writeln!(
            stdin,
            r#"{{"room":"jobs","type":"job_done","payload":{{"id":1}}}}"#
        )
        .unwrap();
        stdin.flush().unwrap();
        assert_eq!(tab.expect("job_started").await["payload"], json!({"id": 1}));
        assert_eq!(tab.expect("job_done").await["seq"], 2);
        drop(hub.stdin.take());
        assert_eq!(tab.expect_close().await, Closed::Code(1001));
    });
    assert_eq!(hub.wait_exit(), 0);
    let skipped: Vec<String> = hub
        .stderr_lines()
        .into_iter()
        .filter(|l| l.contains("stdin line"))
        .collect();
    assert_eq!(skipped.len(), 3, "{skipped:#?}");
}

#[test]
fn minted_tokens_are_accepted_by_a_hub_with_the_same_secret() {
    let out = Command::new(env!("CARGO_BIN_EXE_wshub"))
        .args([
            "token",
            "--sub",
            "ana",
            "--rooms",
            "project:*,lobby",
            "--publish",
            "project:*",
            "--ttl",
            "10m",
        ])
        .env("WSHUB_JWT_SECRET", "dev-secret")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let claims = wshub::auth::verify(&token, b"dev-secret", wshub::auth::unix_now()).unwrap();
    assert_eq!(claims.sub, "ana");
    assert_eq!(claims.rooms.unwrap(), ["project:*", "lobby"]);
    assert_eq!(claims.publish.unwrap(), ["project:*"]);
    let left = claims.exp - wshub::auth::unix_now();
    assert!((500.0..=600.0).contains(&left), "{left}");

    let hub = Hub::start(&["--jwt-secret", "dev-secret"], &[]);
    smol::block_on(async {
        let mut c = TestClient::connect(&hub.ws(&format!("?token={token}&rooms=lobby"))).await;
        assert_eq!(c.welcome["payload"]["user"], "ana");
        assert_eq!(
            c.publish("project:1", "t", json!({})).await["type"],
            "published"
        );
    });

    let (status, stderr) = refuse(&["token", "--sub", "x"], &[("WSHUB_JWT_SECRET", "")]);
    assert_eq!(status, 2, "{stderr}");
    assert!(stderr.contains("secret"), "{stderr}");
    // A lifetime past the year 9999 would mint a token the hub refuses.
    let (status, stderr) = refuse(
        &[
            "token",
            "--sub",
            "x",
            "--secret",
            "s",
            "--ttl",
            "999999999999",
        ],
        &[],
    );
    assert_eq!(status, 2, "{stderr}");
    assert!(stderr.contains("\"setting\":\"ttl\""), "{stderr}");
}

#[test]
fn binding_beyond_loopback_without_credentials_warns_loudly() {
    let mut hub = Hub::start(&["--bind", "0.0.0.0:0"], &[]);
    let deadline = Instant::now() + WAIT;
    let warning = loop {
        if let Ok(line) = hub.stderr.recv_timeout(Duration::from_millis(100)) {
            let log: Value = serde_json::from_str(&line).unwrap();
            if log["level"] == "warn" {
                break log;
            }
        }
        assert!(Instant::now() < deadline, "no warning");
    };
    assert!(
        warning["msg"].as_str().unwrap().contains("admin_key"),
        "{warning}"
    );
    hub.signal("TERM");
    assert_eq!(hub.wait_exit(), 0);
    let quiet = Hub::start(&["--bind", "0.0.0.0:0", "--admin-key", "k"], &[]);
    // The warning would come before the hub thread says it started.
    let mut before_start = Vec::new();
    loop {
        let line = quiet
            .stderr
            .recv_timeout(WAIT)
            .expect("a `hub started` line");
        if line.contains("\"hub started\"") {
            break;
        }
        before_start.push(line);
    }
    assert!(
        before_start.iter().all(|l| !l.contains("\"warn\"")),
        "{before_start:?}"
    );
}

#[test]
fn the_hub_raises_its_open_file_limit_to_the_hard_limit() {
    // Started under a low soft limit, as a default shell gives.
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("ulimit -S -n 256 && exec \"$0\" --bind 127.0.0.1:0 --stdin-events")
        .arg(env!("CARGO_BIN_EXE_wshub"))
        .env_remove("WSHUB_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start wshub under sh");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .expect("a listening line");
    assert!(line.contains("\"listening\""), "{line}");
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap();
    let files: Vec<&str> = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("an open-files line")
        .split_whitespace()
        .skip(3)
        .take(2)
        .collect();
    assert_eq!(files[0], files[1], "soft raised to hard: {limits}");
    drop(child.stdin.take()); // stdin closes: the hub drains and exits
    assert!(child.wait().unwrap().success());
}
