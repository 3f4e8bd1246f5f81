//! The embedded store (PROTOCOL.md section 9), against the real binary: a
//! hub restarted on the same `store` after SIGTERM, SIGKILL or a crash
//! between the commit and the reply keeps its epoch, continues every
//! room's seq and resumes clients exactly; every answered publish is in
//! the store; a store held by another hub or belonging to something else
//! stops the start with exit 2 naming `store`; a failing disk answers
//! `engine_unavailable`, reports `engine` down and recovers by itself.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wshub::testing::{TestClient, http};

const WAIT: Duration = Duration::from_secs(20);

/// A `wshub` process on a store directory.
struct Hub {
    child: Child,
    addr: SocketAddr,
    epoch: String,
}

impl Hub {
    fn start(store: &Path, args: &[&str], env: &[(&str, &str)]) -> Hub {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wshub"));
        cmd.args(["--bind", "127.0.0.1:0", "--store"])
            .arg(store)
            .args(args)
            .env("WSHUB_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start wshub");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(WAIT).expect("a listening line");
        let listening: Value = serde_json::from_str(&line).expect("a JSON listening line");
        Hub {
            child,
            addr: listening["addr"].as_str().unwrap().parse().unwrap(),
            epoch: listening["epoch"].as_str().unwrap().to_string(),
        }
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits (bounded) for the process to end; its exit code, or `None`
    /// when a signal ended it.
    fn wait_end(&mut self) -> Option<i32> {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(Instant::now() < deadline, "the hub did not end in time");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn kill(mut self) {
        self.signal("KILL");
        self.wait_end();
    }

    fn ws(&self, query: &str) -> String {
        format!("ws://{}/ws{query}", self.addr)
    }

    async fn post(&self, body: &Value) -> wshub::testing::HttpResponse {
        http(
            self.addr,
            "POST",
            "/api/events",
            &[("Content-Type", "application/json")],
            Some(&body.to_string()),
        )
        .await
    }

    async fn publish(&self, room: &str, n: u64) -> Value {
        let reply = self
            .post(&json!({"room": room, "type": "t", "payload": {"n": n}}))
            .await;
        assert_eq!(reply.status, 202, "{}", reply.text());
        reply.json()
    }

    async fn get(&self, path: &str) -> wshub::testing::HttpResponse {
        http(self.addr, "GET", path, &[], None).await
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh directory for one test's store (the store itself is created
/// inside it, so the directory starts empty).
fn store_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir()
        .join(format!("wshub-store-{}", std::process::id()))
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.parent().unwrap()).unwrap();
    dir
}

/// Resumes `room` from `since` on hub `hub` and returns the `subscribed`
/// reply, the error before it if any, and the replayed events' seqs, read
/// up to the `pong` that follows them.
async fn resume(
    hub: &Hub,
    room: &str,
    since: u64,
    epoch: &str,
) -> (Value, Option<Value>, Vec<u64>) {
    let mut c = TestClient::connect(&hub.ws("")).await;
    c.send(json!({"type": "subscribe", "rooms": [room], "since": {room: since}, "epoch": epoch}))
        .await;
    let mut error = None;
    let subscribed = loop {
        let m = c.recv().await;
        match m["type"].as_str() {
            Some("error") => error = Some(m),
            Some("subscribed") => break m,
            _ => panic!("unexpected {m}"),
        }
    };
    c.send(json!({"type": "ping"})).await;
    let mut seqs = Vec::new();
    loop {
        let m = c.recv().await;
        if m["type"] == "pong" {
            break;
        }
        assert_eq!(m["room"], room, "{m}");
        seqs.push(m["seq"].as_u64().unwrap());
    }
    (subscribed, error, seqs)
}

#[test]
fn a_restarted_hub_keeps_its_epoch_seqs_and_history() {
    let dir = store_dir("restart");
    smol::block_on(async {
        let hub = Hub::start(&dir, &[], &[]);
        let epoch = hub.epoch.clone();
        let mut tab = TestClient::connect(&hub.ws("?rooms=a")).await;
        for n in 1..=5 {
            assert_eq!(hub.publish("a", n).await["seq"], n);
            let event = tab.expect("t").await;
            assert_eq!(event["seq"], n);
        }
        hub.publish("b", 1).await;
        // SIGTERM: a drain, then a restart on the same directory.
        let mut hub = hub;
        hub.signal("TERM");
        assert_eq!(hub.wait_end(), Some(0));
        drop(hub);
        let hub = Hub::start(&dir, &[], &[]);
        assert_eq!(hub.epoch, epoch, "the epoch is kept with the store");
        let mut again = TestClient::connect(&hub.ws("")).await;
        assert_eq!(again.welcome["payload"]["epoch"], epoch.as_str());
        let reply = again.subscribe(&["a", "b"]).await;
        assert_eq!(reply["payload"]["positions"], json!({"a": 5, "b": 1}));
        let (subscribed, error, seqs) = resume(&hub, "a", 2, &epoch).await;
        assert!(error.is_none(), "{error:?}");
        assert_eq!(subscribed["payload"]["recovered"], json!({"a": true}));
        assert_eq!(seqs, [3, 4, 5], "each missed event once, in order");
        assert_eq!(hub.publish("a", 6).await["seq"], 6, "the seq continues");
        // SIGKILL: nothing is drained, nothing answered is lost.
        hub.kill();
        let hub = Hub::start(&dir, &[], &[]);
        assert_eq!(hub.epoch, epoch);
        let (_, error, seqs) = resume(&hub, "a", 0, &epoch).await;
        assert!(error.is_none(), "{error:?}");
        assert_eq!(seqs, [1, 2, 3, 4, 5, 6]);
        let rooms = hub.get("/api/rooms").await.json();
        assert_eq!(
            rooms["rooms"],
            json!([{"room": "a", "subscribers": 0, "last_seq": 6}, {"room": "b", "subscribers": 0, "last_seq": 1}])
        );
    });
}

#[test]
fn history_size_bounds_the_store_and_a_resume_before_it_is_refused() {
    let dir = store_dir("bounded");
    smol::block_on(async {
        let hub = Hub::start(&dir, &["--history-size", "3"], &[]);
        let epoch = hub.epoch.clone();
        for n in 1..=10 {
            hub.publish("r", n).await;
        }
        hub.kill();
        let hub = Hub::start(&dir, &["--history-size", "3"], &[]);
        let (subscribed, error, seqs) = resume(&hub, "r", 2, &epoch).await;
        let error = error.expect("history_unavailable");
        assert_eq!(error["payload"]["code"], "history_unavailable");
        assert_eq!(error["payload"]["oldest_seq"], 8);
        assert_eq!(subscribed["payload"]["recovered"], json!({"r": false}));
        assert!(seqs.is_empty());
        let (_, error, seqs) = resume(&hub, "r", 7, &epoch).await;
        assert!(error.is_none());
        assert_eq!(seqs, [8, 9, 10]);
    });
}

/// Publishes from `publishers` threads, each to its own room, over fresh
/// HTTP connections, until the hub stops answering or `per_publisher` is
/// reached; returns every answered (room, seq).
fn flood(addr: SocketAddr, publishers: usize, per_publisher: u64) -> Vec<(String, u64)> {
    let threads: Vec<_> = (0..publishers)
        .map(|p| {
            std::thread::spawn(move || {
                let room = format!("flood-{}", p % 4);
                let mut answered = Vec::new();
                for n in 0..per_publisher {
                    let body =
                        json!({"room": room, "type": "t", "payload": {"p": p, "n": n}}).to_string();
                    let reply = smol::block_on(wshub::client::http(
                        addr,
                        "POST",
                        "/api/events",
                        &[("Content-Type", "application/json")],
                        Some(&body),
                    ));
                    match reply {
                        Ok(r) if r.status == 202 => {
                            answered.push((room.clone(), r.json()["seq"].as_u64().unwrap()));
                        }
                        _ => break,
                    }
                }
                answered
            })
        })
        .collect();
    threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect()
}

/// After a restart: every answered publish is in its room's history, each
/// room's history is 1..=last with no gap, and the next publish follows.
async fn assert_survived(hub: &Hub, epoch: &str, answered: &[(String, u64)]) {
    let mut by_room: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for (room, seq) in answered {
        by_room.entry(room).or_default().push(*seq);
    }
    for (room, seqs) in by_room {
        let (_, error, held) = resume(hub, room, 0, epoch).await;
        assert!(error.is_none(), "{room}: {error:?}");
        let last = held.len() as u64;
        assert_eq!(
            held,
            (1..=last).collect::<Vec<_>>(),
            "{room}: contiguous from 1"
        );
        for seq in &seqs {
            assert!(
                *seq <= last,
                "{room}: answered seq {seq} is missing (last {last})"
            );
        }
        assert_eq!(
            hub.publish(room, 0).await["seq"],
            last + 1,
            "{room}: the next seq follows"
        );
    }
}

/// The sum of every room's `last_seq`.
async fn seqs_total(hub: &Hub) -> u64 {
    hub.get("/api/rooms").await.json()["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["last_seq"].as_u64().unwrap())
        .sum()
}

#[test]
fn sigkill_mid_flood_keeps_every_answered_publish() {
    let dir = store_dir("flood");
    let history = ["--history-size", "100000"];
    let mut epoch = None;
    for round in 0..3 {
        let hub = Hub::start(&dir, &history, &[]);
        assert_eq!(*epoch.get_or_insert(hub.epoch.clone()), hub.epoch);
        let before = smol::block_on(seqs_total(&hub));
        let addr = hub.addr;
        let flood = std::thread::spawn(move || flood(addr, 8, 100_000));
        // Killed once some publishes were answered, at a point that
        // differs from round to round.
        let deadline = Instant::now() + WAIT;
        while smol::block_on(seqs_total(&hub)) < before + 200 + 150 * round {
            assert!(Instant::now() < deadline, "publishes were not answered");
            std::thread::sleep(Duration::from_millis(5));
        }
        hub.kill();
        let answered = flood.join().unwrap();
        assert!(!answered.is_empty());
        let hub = Hub::start(&dir, &history, &[]);
        smol::block_on(assert_survived(&hub, epoch.as_ref().unwrap(), &answered));
        hub.kill();
    }
}

#[test]
fn a_crash_between_the_commit_and_the_reply_loses_nothing_answered() {
    // The fault hook aborts the process right after a commit, before its
    // publishes are answered; repeated at different commits.
    let dir = store_dir("crash");
    let history = ["--history-size", "100000"];
    let first = Hub::start(&dir, &history, &[]);
    let epoch = first.epoch.clone();
    first.kill();
    for after in [1, 7, 30] {
        let env = [("WSHUB_TEST_CRASH_AFTER_COMMITS", after.to_string())];
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut hub = Hub::start(&dir, &history, &env);
        let answered = flood(hub.addr, 6, 10_000);
        assert_eq!(hub.wait_end(), None, "ended by the abort, not an exit");
        let hub = Hub::start(&dir, &history, &[]);
        assert_eq!(hub.epoch, epoch);
        smol::block_on(assert_survived(&hub, &epoch, &answered));
        hub.kill();
    }
}

/// Runs the binary expecting a refusal; returns (status, last stderr line).
fn refuse(store: &Path) -> (i32, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_wshub"))
        .args(["--bind", "127.0.0.1:0", "--store"])
        .arg(store)
        .env_remove("WSHUB_LOG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr.lines().last().unwrap_or("{}");
    (
        out.status.code().unwrap(),
        serde_json::from_str(line).unwrap_or_else(|_| panic!("JSON lines: {stderr}")),
    )
}

#[test]
fn a_held_foreign_or_unreadable_store_stops_the_start_naming_store() {
    let held = store_dir("held");
    let hub = Hub::start(&held, &[], &[]);
    let foreign = store_dir("foreign");
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::write(foreign.join("notes.txt"), "not a store").unwrap();
    let garbage = store_dir("garbage");
    std::fs::create_dir_all(&garbage).unwrap();
    std::fs::write(garbage.join("wshub.db"), vec![0x42; 8192]).unwrap();
    let file = store_dir("a-file");
    std::fs::write(&file, "a file, not a directory").unwrap();
    for (dir, says) in [
        (&held, "held by another running hub"),
        (&foreign, "not a wshub store"),
        (&garbage, "not a readable wshub store"),
        (&file, "not a directory"),
    ] {
        let (status, line) = refuse(dir);
        assert_eq!(status, 2, "{dir:?}: {line}");
        assert_eq!(line["setting"], "store", "{line}");
        assert!(line["msg"].as_str().unwrap().contains(says), "{line}");
    }
    drop(hub);
}

#[test]
fn a_failing_disk_refuses_publishes_and_the_hub_recovers_by_itself() {
    let dir = store_dir("failing");
    let fault = dir.with_extension("fail");
    let _ = std::fs::remove_file(&fault);
    let hub = Hub::start(
        &dir,
        &[],
        &[("WSHUB_TEST_FAIL_WRITES_WHILE", fault.to_str().unwrap())],
    );
    smol::block_on(async {
        let mut tab = TestClient::connect(&hub.ws("?rooms=r")).await;
        let mut publisher = TestClient::connect(&hub.ws("?rooms=r")).await;
        assert_eq!(hub.publish("r", 1).await["seq"], 1);
        tab.expect("t").await;
        std::fs::write(&fault, "").unwrap();
        let refused = hub
            .post(&json!({"room": "r", "type": "t", "payload": {}}))
            .await;
        assert_eq!(refused.status, 503, "{}", refused.text());
        assert_eq!(refused.json()["error"]["code"], "engine_unavailable");
        let reply = publisher.publish("r", "t", json!({})).await;
        assert_eq!(reply["type"], "error", "{reply}");
        assert_eq!(reply["payload"]["code"], "engine_unavailable");
        let health = hub.get("/health").await;
        assert_eq!(health.status, 503);
        assert_eq!(health.json()["components"]["engine"]["status"], "down");
        let metrics = hub.get("/metrics").await.text();
        assert!(metrics.contains("wshub_engine_up 0\n"), "{metrics}");
        // The tab got the health change, and no refused event.
        let change = tab.expect("health_status").await;
        assert_eq!(change["payload"]["status"], "down");
        // Writes succeed again: the hub notices by itself (no publish
        // needed), and the next seq follows the last stored one.
        std::fs::remove_file(&fault).unwrap();
        let deadline = Instant::now() + WAIT;
        loop {
            let health = hub.get("/health").await;
            if health.status == 200 {
                assert_eq!(health.json()["components"]["engine"]["status"], "ok");
                break;
            }
            assert!(Instant::now() < deadline, "the engine never came back");
            smol::Timer::after(Duration::from_millis(50)).await;
        }
        let change = tab.expect("health_status").await;
        assert_eq!(change["payload"]["status"], "ok");
        assert_eq!(
            hub.publish("r", 2).await["seq"],
            2,
            "no seq was lost to the failure"
        );
        let event = tab.expect("t").await;
        assert_eq!(event["seq"], 2);
    });
}

#[test]
fn history_ttl_empties_rooms_in_memory_and_in_the_store() {
    let dir = store_dir("ttl");
    smol::block_on(async {
        let hub = Hub::start(&dir, &["--history-ttl", "300ms"], &[]);
        hub.publish("old", 1).await;
        let deadline = Instant::now() + WAIT;
        while hub.get("/api/rooms/old").await.status != 404 {
            assert!(Instant::now() < deadline, "the room never expired");
            smol::Timer::after(Duration::from_millis(50)).await;
        }
        hub.kill();
        let hub = Hub::start(&dir, &["--history-ttl", "300ms"], &[]);
        assert_eq!(
            hub.get("/api/rooms/old").await.status,
            404,
            "gone from the store too"
        );
        assert_eq!(
            hub.publish("old", 1).await["seq"],
            2,
            "a forgotten room continues its seq, across the restart too"
        );
    });
    // Memory history expires the same way.
    smol::block_on(async {
        let hub = wshub::testing::TestHub::with_config(|c| {
            c.history_ttl = Duration::from_millis(200);
        });
        hub.publish("m", "t", json!({})).await;
        let deadline = Instant::now() + WAIT;
        while hub.request("GET", "/api/rooms/m", None).await.status != 404 {
            assert!(Instant::now() < deadline, "memory history never expired");
            smol::Timer::after(Duration::from_millis(50)).await;
        }
    });
}

#[test]
fn idempotency_keys_survive_a_restart() {
    let dir = store_dir("keys");
    smol::block_on(async {
        let hub = Hub::start(&dir, &[], &[]);
        let body = json!({"room": "k", "type": "t", "payload": {}, "idempotency_key": "once"});
        let first = hub.post(&body).await.json();
        hub.kill();
        let hub = Hub::start(&dir, &[], &[]);
        let again = hub.post(&body).await;
        assert_eq!(again.status, 202);
        assert_eq!(
            again.json()["id"],
            first["id"],
            "the first reply, not a new event"
        );
        assert_eq!(hub.publish("k", 2).await["seq"], 2);
    });
}

/// A small tmpfs, unmounted when dropped; `None` where this process may
/// not mount one (not root, or no such permission).
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(name: &str, size: &str) -> Option<Self> {
        let dir = store_dir(name);
        std::fs::create_dir_all(&dir).ok()?;
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        mounted.then_some(Self(dir))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_refuses_publishes_until_there_is_room_again() {
    let Some(disk) = SmallDisk::mount("tmpfs", "4m") else {
        eprintln!("skipped: cannot mount a tmpfs here (the injected failure test covers the hub)");
        return;
    };
    let filler = disk.0.join("filler");
    std::fs::write(&filler, vec![0u8; 3 << 20]).unwrap();
    let store = disk.0.join("store");
    let hub = Hub::start(&store, &[], &[]);
    smol::block_on(async {
        let pad = "x".repeat(300);
        let mut answered: BTreeMap<String, u64> = BTreeMap::new();
        let mut refused = None;
        for i in 0..20_000u64 {
            let room = format!("r{}", i % 50);
            let reply = hub
                .post(&json!({"room": room, "type": "t", "payload": {"pad": pad}}))
                .await;
            if reply.status != 202 {
                refused = Some(reply);
                break;
            }
            answered.insert(room, reply.json()["seq"].as_u64().unwrap());
        }
        let refused = refused.expect("the disk filled up");
        assert_eq!(refused.status, 503, "{}", refused.text());
        assert_eq!(refused.json()["error"]["code"], "engine_unavailable");
        assert_eq!(hub.get("/health").await.status, 503);
        std::fs::remove_file(&filler).unwrap();
        let deadline = Instant::now() + WAIT;
        while hub.get("/health").await.status != 200 {
            assert!(Instant::now() < deadline, "the engine never came back");
            smol::Timer::after(Duration::from_millis(50)).await;
        }
        let (room, last) = answered.iter().next().unwrap();
        assert_eq!(
            hub.publish(room, 0).await["seq"],
            last + 1,
            "no seq lost to the full disk"
        );
    });
    drop(hub);
}

#[test]
fn a_resume_past_what_memory_holds_is_read_from_the_store() {
    // max_history_bytes keeps only a few events in memory; the store keeps
    // history_size of them, and a resume from before memory's oldest gets
    // them all, in order, then the newer ones as a member.
    let dir = store_dir("beyond-memory");
    smol::block_on(async {
        let hub = Hub::start(&dir, &["--max-history-bytes", "2000"], &[]);
        for n in 1..=20 {
            hub.publish("deep", n).await;
        }
        let metrics = hub.get("/metrics").await.text();
        let held: f64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix("wshub_history_events "))
            .unwrap()
            .parse()
            .unwrap();
        assert!(held < 20.0, "memory holds only some: {held}");
        let (subscribed, error, seqs) = resume(&hub, "deep", 3, &hub.epoch).await;
        assert!(error.is_none(), "{error:?}");
        assert_eq!(subscribed["payload"]["recovered"], json!({"deep": true}));
        assert_eq!(seqs, (4..=20).collect::<Vec<u64>>());
        let reads = store_reads(&hub).await;
        assert!(reads >= 1.0, "read from the store: {reads}");
    });
}

/// How many reads the store has answered, from `wshub_engine_seconds`.
async fn store_reads(hub: &Hub) -> f64 {
    let text = hub.get("/metrics").await.text();
    text.lines()
        .find_map(|l| l.strip_prefix("wshub_engine_seconds_count{op=\"read\"} "))
        .expect("the read series")
        .parse()
        .unwrap()
}

#[test]
fn an_sse_stream_resumes_across_a_restart_from_the_store() {
    // After a restart the hub holds no events in memory: a stream's
    // `Last-Event-ID` from before it is answered from the store, in order,
    // each once, then the newer events as they come.
    use wshub::client::{EventStream, SseItem};
    let dir = store_dir("sse-restart");
    smol::block_on(async {
        let mut hub = Hub::start(&dir, &[], &[]);
        for n in 1..=5 {
            hub.publish("feed", n).await;
        }
        let epoch = hub.epoch.clone();
        hub.signal("TERM");
        assert_eq!(hub.wait_end(), Some(0));
        let hub = Hub::start(&dir, &[], &[]);
        assert_eq!(hub.epoch, epoch);
        hub.publish("feed", 6).await;
        let cursor = format!("{epoch};feed=2");
        let mut stream =
            EventStream::open(hub.addr, "/sse?rooms=feed", &[("Last-Event-ID", &cursor)])
                .await
                .expect("GET /sse")
                .expect("a 200 stream");
        let mut seen = Vec::new();
        let deadline = Instant::now() + WAIT;
        while seen.len() < 5 {
            let left = deadline.saturating_duration_since(Instant::now());
            match stream.next_within(left).await {
                Some(SseItem::Event { id, data }) => {
                    let message: Value = serde_json::from_str(&data).unwrap();
                    match message["type"].as_str() {
                        Some("welcome") => assert_eq!(id.as_deref(), Some(cursor.as_str())),
                        Some("t") => {
                            let seq = message["seq"].as_u64().unwrap();
                            assert_eq!(id, Some(format!("{epoch};feed={seq}")));
                            seen.push(seq);
                            if seq == 6 {
                                hub.publish("feed", 7).await;
                            }
                        }
                        _ => panic!("unexpected {message}"),
                    }
                }
                Some(_) => continue,
                None => panic!("the stream gave {seen:?} only"),
            }
        }
        assert_eq!(seen, [3, 4, 5, 6, 7]);
        assert!(store_reads(&hub).await >= 1.0, "read from the store");
    });
}
