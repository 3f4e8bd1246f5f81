//! The command-line clients and the sidecar lifecycle: `wshub listen`
//! (events as JSON lines, resuming across a cut connection), `wshub
//! publish` (HTTP and WebSocket), and a companion whose death stops its hub.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wshub::testing::{TestClient, TestHub};

const WAIT: Duration = Duration::from_secs(20);

fn wshub() -> Command {
    Command::new(env!("CARGO_BIN_EXE_wshub"))
}

/// Reads `child`'s stdout lines on a thread.
fn lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn wait_exit(child: &mut Child) -> i32 {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().unwrap_or(-1);
        }
        assert!(
            Instant::now() < deadline,
            "the process did not exit in time"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A TCP proxy to `target` whose connections the test can cut, and which
/// can refuse new ones for a while.
struct Proxy {
    addr: std::net::SocketAddr,
    open: Arc<Mutex<Vec<TcpStream>>>,
    refusing: Arc<AtomicBool>,
}

impl Proxy {
    fn start(target: std::net::SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let refusing = Arc::new(AtomicBool::new(false));
        let (open2, refusing2) = (open.clone(), refusing.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().map_while(Result::ok) {
                if refusing2.load(Ordering::SeqCst) {
                    continue; // dropped: the connection is refused
                }
                let Ok(upstream) = TcpStream::connect(target) else {
                    continue;
                };
                open2
                    .lock()
                    .unwrap()
                    .extend([client.try_clone().unwrap(), upstream.try_clone().unwrap()]);
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), upstream.try_clone().unwrap()),
                    (upstream, client),
                ] {
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16 * 1024];
                        while let Ok(n @ 1..) = from.read(&mut buf) {
                            if to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        Proxy {
            addr,
            open,
            refusing,
        }
    }

    fn cut(&self) {
        self.refusing.store(true, Ordering::SeqCst);
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    fn resume(&self) {
        self.refusing.store(false, Ordering::SeqCst);
    }
}

#[test]
fn listen_prints_events_as_json_lines_and_resumes_after_a_cut() {
    let hub = TestHub::start();
    let proxy = Proxy::start(hub.handle().addr());
    let mut listen = wshub()
        .args([
            "listen",
            "--url",
            &format!("ws://{}/ws", proxy.addr),
            "--rooms",
            "jobs,other",
            "--max-events",
            "5",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = lines_of(&mut listen);
    smol::block_on(async {
        // Wait until the listener has subscribed (it shows in the registry).
        let deadline = Instant::now() + WAIT;
        loop {
            let rooms = hub.request("GET", "/api/rooms/jobs", None).await;
            if rooms.status == 200 && rooms.json()["subscribers"] == 1 {
                break;
            }
            assert!(Instant::now() < deadline, "listen never subscribed");
            smol::Timer::after(Duration::from_millis(20)).await;
        }
        hub.publish("jobs", "job", json!({"n": 1})).await;
        let first: Value = serde_json::from_str(&lines.recv_timeout(WAIT).unwrap()).unwrap();
        assert_eq!(
            (first["type"].as_str(), first["seq"].as_u64()),
            (Some("job"), Some(1))
        );

        proxy.cut();
        let deadline = Instant::now() + WAIT;
        while hub.handle().connections().await.unwrap().len() == 1 {
            assert!(Instant::now() < deadline);
            smol::Timer::after(Duration::from_millis(20)).await;
        }
        hub.publish("jobs", "job", json!({"n": 2})).await;
        hub.publish("jobs", "job", json!({"n": 3})).await;
        hub.publish("other", "job", json!({"n": 1})).await;
        proxy.resume();
    });
    let rest: Vec<Value> = (0..3)
        .map(|_| serde_json::from_str(&lines.recv_timeout(WAIT).expect("an event line")).unwrap())
        .collect();
    let jobs: Vec<u64> = rest
        .iter()
        .filter(|e| e["room"] == "jobs")
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(jobs, [2, 3], "both missed events, once, in order");
    assert!(rest.iter().any(|e| e["room"] == "other"));
    smol::block_on(hub.publish("jobs", "job", json!({"n": 4})));
    let last: Value = serde_json::from_str(&lines.recv_timeout(WAIT).unwrap()).unwrap();
    assert_eq!(last["seq"], 4);
    assert_eq!(wait_exit(&mut listen), 0, "exits after --max-events");
}

#[test]
fn publish_over_http_and_websocket_prints_the_reply() {
    let hub = TestHub::start();
    let addr = hub.handle().addr();
    smol::block_on(async {
        let mut tab = hub.client("?rooms=cli").await;
        let out = wshub()
            .args([
                "publish",
                "--url",
                &format!("http://{addr}"),
                "--room",
                "cli",
                "--type",
                "made",
                "--payload",
                r#"{"a":1}"#,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let reply: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(reply["seq"], 1);
        assert_eq!(tab.expect("made").await["payload"], json!({"a": 1}));

        let mut child = wshub()
            .args([
                "publish",
                "--url",
                &format!("ws://{addr}/ws"),
                "--room",
                "cli",
                "--type",
                "piped",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(br#"{"from":"stdin"}"#)
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        let reply: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(reply["type"], "published");
        assert_eq!(reply["payload"]["seq"], 2);
        assert_eq!(
            tab.expect("piped").await["payload"],
            json!({"from": "stdin"})
        );

        let out = wshub()
            .args([
                "publish",
                "--url",
                &format!("http://{addr}"),
                "--room",
                "cli",
                "--type",
                "welcome",
                "--payload",
                "{}",
            ])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&out.stderr).contains("reserved_type"));
        let out = wshub()
            .args(["publish", "--type", "t", "--payload", "[1]"])
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "a payload that is not an object"
        );
    });
}

fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the field after the parenthesised name; Z is a zombie.
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

#[test]
fn killing_the_companion_stops_its_hub() {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/companion/companion.py"
    );
    let mut companion = Command::new("python3")
        .args([
            script,
            "--wshub",
            env!("CARGO_BIN_EXE_wshub"),
            "--interval",
            "0.05",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 runs the companion example");
    let lines = lines_of(&mut companion);
    let hello: Value = serde_json::from_str(&lines.recv_timeout(WAIT).unwrap()).unwrap();
    let hub_pid = hello["hub_pid"].as_u64().unwrap() as u32;
    let addr = hello["addr"].as_str().unwrap().to_string();
    smol::block_on(async {
        let mut tab = TestClient::connect(&format!("ws://{addr}/ws?rooms=jobs")).await;
        assert_eq!(tab.expect("job_progress").await["type"], "job_progress");
    });
    assert!(process_alive(hub_pid));
    companion.kill().unwrap(); // SIGKILL: no goodbye from the parent
    companion.wait().unwrap();
    let deadline = Instant::now() + WAIT;
    while process_alive(hub_pid) {
        assert!(Instant::now() < deadline, "the hub outlived its companion");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn publish_names_the_hub_by_its_url_for_a_hub_that_allows_names_only() {
    let hub = TestHub::with_config(|c| {
        c.allowed_hosts = wshub::AllowedHosts::List(vec!["localhost".into()]);
    });
    let port = hub.handle().addr().port();
    smol::block_on(async {
        let out = wshub()
            .args([
                "publish",
                "--url",
                &format!("http://localhost:{port}"),
                "--room",
                "named",
                "--type",
                "t",
                "--payload",
                "{}",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "Host is the URL's name, not the address: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let reply: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(reply["seq"], 1);
    });
}
