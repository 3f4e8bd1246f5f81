//! A cluster under faults (PROTOCOL.md section 9, issue 12 point 4), each
//! against its own real `redis-server`: a hub killed with SIGKILL leaves
//! the presence and its clients resume elsewhere with no gap; Redis
//! stopped and restarted with its data (`engine` down, `engine_unavailable`,
//! connections and heartbeats kept, then ok again with the seq going on);
//! Redis restarted empty (a new epoch, every connection closed with 1012);
//! pub/sub connections killed while commands work (no event lost or
//! doubled); a Redis asleep (`DEBUG SLEEP`) does not stall the hub.

#[path = "common/redis.rs"]
mod redis_server;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use redis_server::{Redis, hub_with};
use serde_json::{Value, json};
use wshub::client::Closed;
use wshub::testing::{TIMEOUT, TestClient, TestHub};

/// The next `n` room events (heartbeats skipped, anything else fails).
async fn events(client: &mut TestClient, n: usize) -> Vec<u64> {
    let mut out = Vec::new();
    while out.len() < n {
        let message = client.recv().await;
        let seq = message["seq"]
            .as_u64()
            .unwrap_or_else(|| panic!("expected an event, got {message}"));
        out.push(seq);
    }
    out
}

async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + TIMEOUT;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {TIMEOUT:?}");
        smol::Timer::after(Duration::from_millis(25)).await;
    }
}

async fn engine_status(hub: &TestHub) -> String {
    let health = hub.request("GET", "/health", None).await.json();
    health["components"]["engine"]["status"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

async fn publish(hub: &TestHub, room: &str, i: u64) -> u16 {
    hub.post_event(json!({"room": room, "type": "e", "payload": {"i": i}}))
        .await
        .status
}

#[test]
fn redis_stopped_and_restarted_with_its_data() {
    let Some(mut redis) = Redis::start("restart") else {
        return;
    };
    smol::block_on(async {
        let fast = |c: &mut wshub::Config| c.heartbeat_interval = Duration::from_millis(200);
        let a = hub_with(&redis, "a", fast);
        let b = hub_with(&redis, "b", fast);
        let mut x = a.client("?rooms=r").await;
        let mut y = b.client("?rooms=r").await;
        for i in 1..=3 {
            assert_eq!(publish(&b, "r", i).await, 202);
        }
        assert_eq!(events(&mut x, 3).await, [1, 2, 3]);
        assert_eq!(events(&mut y, 3).await, [1, 2, 3]);

        redis.stop(true);
        // Noticed within 10 s (the protocol's bound), by both hubs.
        for hub in [&a, &b] {
            eventually("engine down", || async {
                engine_status(hub).await == "down"
            })
            .await;
            let health = hub.request("GET", "/health", None).await;
            assert_eq!(health.status, 503);
        }
        // What needs Redis is refused...
        let reply = a
            .post_event(json!({"room": "r", "type": "e", "payload": {}}))
            .await;
        assert_eq!(reply.status, 503);
        assert_eq!(reply.json()["error"]["code"], "engine_unavailable");
        let reply = x.publish("r", "e", json!({})).await;
        assert_eq!(reply["payload"]["code"], "engine_unavailable", "{reply}");
        let reply = x
            .request(json!({"type": "subscribe", "rooms": ["other"]}))
            .await;
        assert_eq!(reply["payload"]["code"], "engine_unavailable", "{reply}");
        let reply = x.request(json!({"type": "presence", "room": "r"})).await;
        assert_eq!(reply["payload"]["code"], "engine_unavailable", "{reply}");
        let refused = TestClient::connect_with(&a.ws_url("?rooms=r"), &[]).await;
        assert!(refused.is_err(), "an upgrade with rooms is refused");
        // ...while connections and heartbeats go on.
        let pong = x.request(json!({"type": "ping"})).await;
        assert_eq!(pong["type"], "pong");
        let mut beat = false;
        for _ in 0..50 {
            match x.recv_within(TIMEOUT).await {
                Some(m) if m["type"] == "heartbeat" => {
                    beat = true;
                    break;
                }
                Some(m) if m["type"] == "health_status" => continue,
                other => panic!("expected a heartbeat, got {other:?}"),
            }
        }
        assert!(beat);

        redis.restart(true);
        for hub in [&a, &b] {
            eventually("engine ok again", || async {
                engine_status(hub).await == "ok"
            })
            .await;
        }
        // The seq goes on from Redis's saved data; every subscriber gets
        // each event once, in order.
        for i in 4..=8 {
            let hub = if i % 2 == 0 { &a } else { &b };
            assert_eq!(publish(hub, "r", i).await, 202);
        }
        let mut got_x = Vec::new();
        while got_x.len() < 5 {
            let m = x.recv().await;
            if m["type"] == "health_status" {
                continue;
            }
            got_x.push(m["seq"].as_u64().unwrap_or_else(|| panic!("{m}")));
        }
        assert_eq!(got_x, [4, 5, 6, 7, 8]);
        let mut got_y = Vec::new();
        while got_y.len() < 5 {
            let m = y.recv().await;
            if m["type"] == "health_status" {
                continue;
            }
            got_y.push(m["seq"].as_u64().unwrap_or_else(|| panic!("{m}")));
        }
        assert_eq!(got_y, [4, 5, 6, 7, 8]);
        x.expect_nothing_before_pong().await;
    });
}

#[test]
fn redis_restarted_empty_closes_every_connection_with_1012() {
    let Some(mut redis) = Redis::start("empty") else {
        return;
    };
    smol::block_on(async {
        let a = hub_with(&redis, "a", |_| {});
        let b = hub_with(&redis, "b", |_| {});
        let mut x = a.client("?rooms=r").await;
        let mut y = b.client("").await;
        let old = x.welcome["payload"]["epoch"].clone();
        assert_eq!(publish(&a, "r", 1).await, 202);
        assert_eq!(events(&mut x, 1).await, [1]);

        redis.stop(false);
        redis.restart(false);
        assert_eq!(x.expect_close().await, Closed::Code(1012));
        assert_eq!(y.expect_close().await, Closed::Code(1012));
        for hub in [&a, &b] {
            eventually("engine ok again", || async {
                engine_status(hub).await == "ok"
            })
            .await;
        }

        // Clients come back and learn the new epoch; seqs start again.
        let mut x = a.client("?rooms=r").await;
        let mut y = b.client("?rooms=r").await;
        let new = x.welcome["payload"]["epoch"].clone();
        assert_ne!(new, old);
        assert_eq!(
            y.welcome["payload"]["epoch"], new,
            "one epoch for the cluster"
        );
        assert_eq!(publish(&b, "r", 1).await, 202);
        assert_eq!(events(&mut x, 1).await, [1]);
        assert_eq!(events(&mut y, 1).await, [1]);

        // A stream opened now carries the new epoch in its cursor, so that
        // it can resume on any hub of the cluster.
        let new = new.as_str().unwrap_or_default().to_string();
        for hub in [&a, &b] {
            let stream = hub.stream("?rooms=r,s").await;
            assert_eq!(stream.welcome_id, format!("{new};r=1;s=0"));
            let stream = hub.stream("?rooms=r").await;
            assert_eq!(stream.welcome_id, format!("{new};r=1"));
        }
    });
}

#[test]
fn redis_back_from_an_older_snapshot_ends_the_epoch() {
    let Some(mut redis) = Redis::start("snapshot") else {
        return;
    };
    smol::block_on(async {
        let a = hub_with(&redis, "a", |_| {});
        let b = hub_with(&redis, "b", |_| {});
        let mut x = a.client("?rooms=r").await;
        let old = x.welcome["payload"]["epoch"].clone();
        for i in 1..=3 {
            assert_eq!(publish(&b, "r", i).await, 202);
        }
        assert_eq!(redis.command(&["SAVE"]), "+OK");
        for i in 4..=6 {
            assert_eq!(publish(&b, "r", i).await, 202);
        }
        assert_eq!(events(&mut x, 6).await, [1, 2, 3, 4, 5, 6]);
        // Lost since the snapshot: seqs 4 to 6 would be given again.
        redis.stop(false);
        redis.restart(true);
        assert_eq!(x.expect_close().await, Closed::Code(1012));
        for hub in [&a, &b] {
            eventually("engine ok again", || async {
                engine_status(hub).await == "ok"
            })
            .await;
        }
        let y = b.client("?rooms=r").await;
        assert_ne!(y.welcome["payload"]["epoch"], old, "a new epoch");
        let x = a.client("").await;
        assert_eq!(x.welcome["payload"]["epoch"], y.welcome["payload"]["epoch"]);
    });
}

#[test]
fn killed_pubsub_connections_lose_and_double_no_event() {
    let Some(redis) = Redis::start("pubsub") else {
        return;
    };
    smol::block_on(async {
        let a = hub_with(&redis, "a", |_| {});
        let b = hub_with(&redis, "b", |_| {});
        let mut x = a.client("?rooms=r").await;
        let mut y = b.client("?rooms=r").await;
        let mut sent = 0;
        for round in 0..3 {
            for _ in 0..40 {
                sent += 1;
                let hub = if sent % 2 == 0 { &a } else { &b };
                assert_eq!(publish(hub, "r", sent).await, 202);
            }
            // Commands still work; only the subscriptions go.
            let killed = redis.command(&["CLIENT", "KILL", "TYPE", "pubsub"]);
            assert!(killed.starts_with(':'), "{killed}");
            assert_ne!(killed, ":0", "round {round}: the hubs' pub/sub connections");
        }
        for _ in 0..40 {
            sent += 1;
            let hub = if sent % 2 == 0 { &a } else { &b };
            assert_eq!(publish(hub, "r", sent).await, 202);
        }
        let expected: Vec<u64> = (1..=sent).collect();
        assert_eq!(events(&mut x, sent as usize).await, expected);
        assert_eq!(events(&mut y, sent as usize).await, expected);
        x.expect_nothing_before_pong().await;
        y.expect_nothing_before_pong().await;
    });
}

#[test]
fn a_sleeping_redis_does_not_stall_the_hub() {
    let Some(redis) = Redis::start("sleep") else {
        return;
    };
    smol::block_on(async {
        let a = hub_with(&redis, "a", |c| {
            c.heartbeat_interval = Duration::from_millis(200);
        });
        let mut x = a.client("?rooms=r").await;
        assert_eq!(publish(&a, "r", 1).await, 202);
        assert_eq!(events(&mut x, 1).await, [1]);

        let port = redis.port;
        let sleeper = std::thread::spawn(move || {
            let redis = redis_server::RedisAt(port);
            redis.command(&["DEBUG", "SLEEP", "3"])
        });
        // Give the sleep a moment to start (it is checked below that it
        // was still going on when the hub answered).
        smol::Timer::after(Duration::from_millis(100)).await;
        let asleep = Instant::now();
        // The hub thread goes on: pings, heartbeats, /health.
        let pong = x.request(json!({"type": "ping"})).await;
        assert_eq!(pong["type"], "pong");
        let mut beats = 0;
        while beats < 2 {
            let m = x.recv_within(TIMEOUT).await.expect("a message");
            if m["type"] == "heartbeat" {
                beats += 1;
            }
        }
        let health = a.request("GET", "/health", None).await;
        assert!(health.status == 200 || health.status == 503);
        eprintln!("answered {:?} into the sleep", asleep.elapsed());
        assert!(
            !sleeper.is_finished(),
            "the hub answered while Redis slept (the sleep outlasts the checks)"
        );
        assert_eq!(sleeper.join().unwrap(), "+OK");
        // And it recovers by itself.
        eventually("engine ok", || async { engine_status(&a).await == "ok" }).await;
        assert_eq!(publish(&a, "r", 2).await, 202);
        let mut seqs = Vec::new();
        while seqs.is_empty() {
            let m = x.recv().await;
            if let Some(seq) = m["seq"].as_u64() {
                seqs.push(seq);
            }
        }
        assert_eq!(seqs, [2]);
    });
}

/// Asks `presence` of room `r` until it lists `n` members.
async fn wait_members(client: &mut TestClient, n: usize) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let reply = client
            .request(json!({"type": "presence", "room": "r"}))
            .await;
        let members = reply["payload"]["members"].as_array().map_or(0, Vec::len);
        if members == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "presence never listed {n}: {reply}"
        );
        smol::Timer::after(Duration::from_millis(50)).await;
    }
}

/// A `wshub` process of the cluster, for SIGKILL.
struct Process {
    child: Child,
    addr: std::net::SocketAddr,
}

impl Process {
    fn start(redis: &Redis, node: &str) -> Self {
        Self::start_with(redis, node, &[])
    }

    fn start_with(redis: &Redis, node: &str, env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_wshub"))
            .args(["--bind", "127.0.0.1:0", "--redis-url", &redis.url()])
            .args(["--node-id", node, "--heartbeat-timeout", "2s"])
            .args(["--heartbeat-interval", "500ms"])
            .envs(env.iter().copied())
            .env("WSHUB_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start wshub");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(TIMEOUT).expect("a listening line");
        let listening: Value = serde_json::from_str(&line).expect("JSON");
        assert_eq!(listening["node"], node, "{listening}");
        Self {
            child,
            addr: listening["addr"].as_str().unwrap().parse().unwrap(),
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_killed_hub_leaves_the_presence_and_its_clients_resume_elsewhere() {
    let Some(redis) = Redis::start("sigkill") else {
        return;
    };
    smol::block_on(async {
        let mut doomed = Process::start(&redis, "doomed");
        let b = hub_with(&redis, "b", |c| {
            c.heartbeat_timeout = Duration::from_secs(2)
        });
        let mut tab = TestClient::connect(&format!("ws://{}/ws?rooms=r", doomed.addr)).await;
        let epoch = tab.welcome["payload"]["epoch"].clone();
        let mut watcher = b.client("?rooms=r").await;
        wait_members(&mut watcher, 2).await;
        for i in 1..=3 {
            assert_eq!(publish(&b, "r", i).await, 202);
        }
        assert_eq!(events(&mut tab, 3).await, [1, 2, 3]);
        assert_eq!(events(&mut watcher, 3).await, [1, 2, 3]);

        doomed.child.kill().expect("SIGKILL the hub");
        let _ = doomed.child.wait();
        drop(tab);
        for i in 4..=6 {
            assert_eq!(publish(&b, "r", i).await, 202);
        }
        // Its entries expire (2 × heartbeat_timeout at most).
        let mut seen = events(&mut watcher, 3).await;
        assert_eq!(seen, [4, 5, 6]);
        seen.clear();
        wait_members(&mut watcher, 1).await;
        // Its client resumes on hub b with no gap.
        let mut tab = b.client("").await;
        let reply = tab
            .request(json!({
                "type": "subscribe", "rooms": ["r"], "since": {"r": 3}, "epoch": epoch,
            }))
            .await;
        assert_eq!(reply["payload"]["recovered"]["r"], true, "{reply}");
        assert_eq!(events(&mut tab, 3).await, [4, 5, 6]);
        tab.expect_nothing_before_pong().await;
    });
}

#[test]
fn a_silently_broken_subscription_is_found_by_the_self_check() {
    let Some(redis) = Redis::start("selfcheck") else {
        return;
    };
    smol::block_on(async {
        // Its first pub/sub connection goes quiet after three messages
        // while every command still works (a debug-build fault hook).
        let muted = Process::start_with(&redis, "muted", &[("WSHUB_TEST_MUTE_PUBSUB_AFTER", "3")]);
        let b = hub_with(&redis, "b", |_| {});
        let mut tab = TestClient::connect(&format!("ws://{}/ws?rooms=r", muted.addr)).await;
        let mut sent = 0;
        let mut seqs = Vec::new();
        let mut health = Vec::new();
        let deadline = Instant::now() + TIMEOUT * 2;
        // Publish on the other hub until the muted hub has noticed, gone
        // down, reconnected and come back up.
        while !(health.contains(&"down".to_string()) && health.last().is_some_and(|s| s == "ok")) {
            assert!(Instant::now() < deadline, "no down-then-ok: {health:?}");
            sent += 1;
            assert_eq!(publish(&b, "r", sent).await, 202);
            while let Some(m) = tab.recv_within(Duration::from_millis(100)).await {
                // (None is silence here: a closed connection fails below.)
                match m["type"].as_str() {
                    Some("health_status") => {
                        assert_eq!(m["payload"]["component"], "engine");
                        health.push(m["payload"]["status"].as_str().unwrap().to_string());
                    }
                    Some("heartbeat") => {}
                    _ => seqs.push(m["seq"].as_u64().unwrap_or_else(|| panic!("{m}"))),
                }
            }
        }
        // Every event once, in order: those published while it was deaf
        // came from the shared history.
        while seqs.len() < sent as usize {
            let m = tab.recv().await;
            if let Some(seq) = m["seq"].as_u64() {
                seqs.push(seq);
            }
        }
        assert_eq!(seqs, (1..=sent).collect::<Vec<_>>());
        tab.expect_nothing_before_pong().await;
    });
}

#[test]
fn a_room_message_with_a_seq_redis_cannot_give_is_dropped() {
    let Some(redis) = Redis::start("hostile-seq") else {
        return;
    };
    smol::block_on(async {
        let a = hub_with(&redis, "a", |_| {});
        let mut x = a.client("?rooms=r").await;
        // Another Redis user's message on the room's channel, with a seq
        // beyond what HINCRBY can reach: the hub must not count on it.
        let published = redis.command(&["PUBLISH", "wshub:room:{r}", "18446744073709551615\n\n{}"]);
        assert_eq!(published, ":1", "the hub listens to the room");
        assert_eq!(publish(&a, "r", 1).await, 202);
        assert_eq!(events(&mut x, 1).await, vec![1]);
        x.expect_nothing_before_pong().await;
        let health = a.request("GET", "/health", None).await;
        assert_eq!(health.status, 200);
    });
}
