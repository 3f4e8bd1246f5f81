//! Stdio hooks (PROTOCOL.md section 10): with `--stdin-events` a hook URL
//! `stdio` is a JSON line on the binary's stdout, answered by a
//! `hook_reply` line on its stdin.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use wshub::testing::{TIMEOUT, TestClient};

/// Reads stdout lines on a thread, so that every wait is bounded.
fn lines(stdout: std::process::ChildStdout) -> async_channel::Receiver<Value> {
    let (tx, rx) = async_channel::unbounded();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if let Ok(v) = serde_json::from_str(&line) {
                let _ = tx.send_blocking(v);
            }
        }
    });
    rx
}

async fn next_line(rx: &async_channel::Receiver<Value>) -> Value {
    wshub::testing::within(rx.recv())
        .await
        .expect("a stdout line in time")
        .expect("the hub is running")
}

#[test]
fn rpc_over_stdio() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wshub"))
        .args([
            "--stdin-events",
            "--bind",
            "127.0.0.1:0",
            "--rpc-hook",
            "stdio",
            "--hook-timeout",
            "500ms",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary starts");
    let mut stdin = child.stdin.take().unwrap();
    let out = lines(child.stdout.take().unwrap());
    smol::block_on(async {
        let listening = next_line(&out).await;
        assert_eq!(listening["event"], "listening");
        let url = format!("ws://{}/ws", listening["addr"].as_str().unwrap());
        let mut c = TestClient::connect(&url).await;

        c.send(json!({"type": "rpc", "method": "add", "params": [2, 3], "ref": "a", "correlation_id": "corr-1"})).await;
        let asked = next_line(&out).await;
        assert_eq!(asked["event"], "hook");
        assert_eq!(asked["hook"], "rpc");
        assert_eq!(asked["method"], "add");
        assert_eq!(asked["params"], json!([2, 3]));
        assert_eq!(asked["connection_id"], c.id());
        assert_eq!(asked["correlation_id"], "corr-1");
        let id = asked["id"].as_str().unwrap();
        // An event line still publishes meanwhile; a stray reply is skipped.
        writeln!(
            stdin,
            "{}",
            json!({"hook_reply": "nobody", "status": 200, "body": {}})
        )
        .unwrap();
        writeln!(
            stdin,
            "{}",
            json!({"hook_reply": id, "status": 200, "body": {"result": 5}})
        )
        .unwrap();
        stdin.flush().unwrap();
        let r = c.expect("rpc_result").await;
        assert_eq!(
            (r["ref"].clone(), r["payload"]["result"].clone()),
            (json!("a"), json!(5))
        );

        c.send(json!({"type": "rpc", "method": "no"})).await;
        let asked = next_line(&out).await;
        let reply = json!({"hook_reply": asked["id"], "status": 403, "body": {"error": {"code": "nope", "message": "not you"}}});
        writeln!(stdin, "{reply}").unwrap();
        stdin.flush().unwrap();
        let r = c.expect("error").await;
        assert_eq!(r["payload"]["code"], "nope");

        // No reply within hook_timeout.
        c.send(json!({"type": "rpc", "method": "ignored"})).await;
        next_line(&out).await;
        let r = c.expect("error").await;
        assert_eq!(r["payload"]["code"], "hook_unavailable");
    });
    drop(stdin); // the hub stops with its stdin
    let status = wait_exit(&mut child);
    assert_eq!(status, Some(0));
}

#[test]
fn stdio_without_stdin_events_is_refused_at_start() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wshub"))
        .args(["--bind", "127.0.0.1:0", "--connect-hook", "stdio"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert_eq!(wait_exit(&mut child), Some(2));
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(err.contains("connect_hook"), "{err}");
}

fn wait_exit(child: &mut std::process::Child) -> Option<i32> {
    let deadline = std::time::Instant::now() + TIMEOUT;
    while std::time::Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    None
}

#[test]
fn the_companion_example_answers_rpc() {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/companion/companion.py"
    );
    let Ok(mut child) = Command::new("python3")
        .args([
            script,
            "--wshub",
            env!("CARGO_BIN_EXE_wshub"),
            "--count",
            "0",
            "--interval",
            "0.05",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
    else {
        eprintln!("python3 is not installed; the companion example is not run");
        return;
    };
    let out = lines(child.stdout.take().unwrap());
    smol::block_on(async {
        let info = next_line(&out).await;
        let url = format!("ws://{}/ws", info["addr"].as_str().unwrap());
        let mut c = TestClient::connect(&url).await;
        let r = c
            .request(json!({"type": "rpc", "method": "echo", "params": {"x": 1}}))
            .await;
        assert_eq!(r["payload"]["result"], json!({"x": 1}), "{r}");
        let r = c
            .request(json!({"type": "rpc", "method": "jobs.count"}))
            .await;
        assert!(
            r["payload"]["result"]["published"].as_u64().is_some(),
            "{r}"
        );
        let r = c.request(json!({"type": "rpc", "method": "nope"})).await;
        assert_eq!(r["payload"]["code"], "unknown_method");
    });
    let _ = child.kill();
    let _ = child.wait();
}
