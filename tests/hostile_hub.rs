//! What a hostile peer cannot do to the hub (PROTOCOL.md sections 5 and 11):
//! grow history past `max_history_bytes` (the oldest events of the whole hub
//! leave first, and resume stays exact), hold more than
//! `max_rooms_per_connection` rooms, or stall the hub by joining and leaving
//! thousands of rooms in an awkward order. Each is shown beside an honest
//! client that keeps working.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wshub::testing::{TestHub, http, within};

mod common;

use common::metric;

/// `GET /api/rooms` as room name to (subscribers, last_seq).
async fn rooms(hub: &TestHub) -> BTreeMap<String, (u64, u64)> {
    let body = hub.request("GET", "/api/rooms", None).await.json();
    body["rooms"]
        .as_array()
        .expect("a room list")
        .iter()
        .map(|r| {
            let n = |f: &str| r[f].as_u64().unwrap();
            (
                r["room"].as_str().unwrap().to_string(),
                (n("subscribers"), n("last_seq")),
            )
        })
        .collect()
}

/// The refusal of an upgrade to `/ws{query}`: status and `error.code`.
async fn refusal(hub: &TestHub, query: &str) -> (u16, String) {
    let headers = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Sec-WebSocket-Version", "13"),
    ];
    let r = http(
        hub.handle().addr(),
        "GET",
        &format!("/ws{query}"),
        &headers,
        None,
    )
    .await;
    assert_ne!(r.status, 101, "expected a refusal of {query}");
    (r.status, r.error_code())
}

/// Resumes every room of `names` from seq 0 on a fresh connection: each
/// room's `oldest_seq` if it is `history_unavailable`, and the seqs replayed
/// for each recovered room.
async fn resume_from_zero(
    hub: &TestHub,
    names: &[String],
) -> (BTreeMap<String, u64>, BTreeMap<String, Vec<u64>>) {
    let mut tab = hub.client("").await;
    let since: serde_json::Map<String, Value> =
        names.iter().map(|n| (n.clone(), json!(0))).collect();
    tab.send(
        json!({"type": "subscribe", "rooms": names, "since": since, "epoch": hub.handle().epoch()}),
    )
    .await;
    let mut unavailable = BTreeMap::new();
    let subscribed = loop {
        let m = tab.recv().await;
        if m["type"] == "subscribed" {
            break m;
        }
        assert_eq!(m["payload"]["code"], "history_unavailable", "{m}");
        let room = m["payload"]["room"].as_str().unwrap().to_string();
        unavailable.insert(room, m["payload"]["oldest_seq"].as_u64().unwrap());
    };
    let mut replayed: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut expected = 0;
    for (room, ok) in subscribed["payload"]["recovered"].as_object().unwrap() {
        assert_eq!(
            ok.as_bool().unwrap(),
            !unavailable.contains_key(room),
            "{room}"
        );
        if ok.as_bool().unwrap() {
            expected += subscribed["payload"]["positions"][room].as_u64().unwrap();
            replayed.insert(room.clone(), Vec::new());
        }
    }
    for _ in 0..expected {
        let e = tab.expect("blob").await;
        let room = e["room"].as_str().unwrap().to_string();
        replayed
            .get_mut(&room)
            .unwrap()
            .push(e["seq"].as_u64().unwrap());
    }
    tab.expect_silence(Duration::from_millis(50)).await;
    (unavailable, replayed)
}

#[test]
fn a_history_flood_pushes_out_the_oldest_events_of_the_whole_hub() {
    const BUDGET: usize = 64 * 1024;
    const ROOMS: usize = 10;
    const PER_ROOM: u64 = 20;
    let hub = TestHub::with_config(|c| c.max_history_bytes = BUDGET);
    smol::block_on(async {
        let names: Vec<String> = (0..ROOMS).map(|i| format!("flood-{i}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut honest = hub.client("").await;
        honest.subscribe(&refs).await;

        // Room by room, ~1.1 KB events: 200 of them, about three times the budget.
        let blob = "x".repeat(1000);
        for name in &names {
            for n in 1..=PER_ROOM {
                hub.publish(name, "blob", json!({"n": n, "blob": blob}))
                    .await;
            }
        }
        for name in &names {
            for n in 1..=PER_ROOM {
                let e = honest.expect("blob").await;
                assert_eq!(
                    (e["room"].as_str(), e["seq"].as_u64()),
                    (Some(name.as_str()), Some(n))
                );
            }
        }

        let m = hub.request("GET", "/metrics", None).await.text();
        let held_bytes = metric(&m, "wshub_history_bytes") as usize;
        let held = metric(&m, "wshub_history_events") as u64;
        assert!(held_bytes <= BUDGET, "{held_bytes}");
        assert!(
            held_bytes > BUDGET - 1500,
            "the budget is used: {held_bytes}"
        );
        assert!(
            (40..60).contains(&held),
            "{held} events of ~1.1 KB in 64 KiB"
        );

        // Resuming every room from 0: the newest `held` events of the hub
        // are there, exactly, and nothing older, whatever their room.
        let (unavailable, replayed) = resume_from_zero(&hub, &names).await;
        let mut left = held;
        for name in names.iter().rev() {
            let keeps = left.min(PER_ROOM);
            left -= keeps;
            let oldest = PER_ROOM + 1 - keeps;
            if keeps == PER_ROOM {
                assert_eq!(replayed[name], (1..=PER_ROOM).collect::<Vec<_>>(), "{name}");
            } else {
                assert_eq!(unavailable[name], oldest, "{name}: oldest_seq");
            }
        }
        assert_eq!(
            unavailable["flood-0"],
            PER_ROOM + 1,
            "the first room holds nothing"
        );
        assert!(replayed.contains_key("flood-9") && replayed.contains_key("flood-8"));

        // The room the budget cut into resumes exactly from its oldest - 1.
        let (cut, oldest) = unavailable
            .iter()
            .find(|(_, o)| **o <= PER_ROOM)
            .map(|(r, o)| (r.clone(), *o))
            .expect("one room partly kept");
        let mut tab = hub.client("").await;
        tab.send(json!({"type": "subscribe", "rooms": [cut], "since": {&cut: oldest - 1}, "epoch": hub.handle().epoch()}))
            .await;
        assert_eq!(
            tab.expect("subscribed").await["payload"]["recovered"][&cut],
            true
        );
        for seq in oldest..=PER_ROOM {
            assert_eq!(tab.expect("blob").await["seq"], seq);
        }
        tab.close().await;

        // Rooms without members and without history are forgotten; the
        // first room stays while the honest client is in it.
        let rest: Vec<&str> = refs[1..].to_vec();
        let r = honest
            .request(json!({"type": "unsubscribe", "rooms": rest}))
            .await;
        assert_eq!(r["type"], "unsubscribed");
        let listed = rooms(&hub).await;
        assert_eq!(listed["flood-0"], (1, PER_ROOM));
        for (name, room) in names.iter().zip(0..) {
            let kept = replayed.contains_key(name) || unavailable[name] <= PER_ROOM;
            assert_eq!(
                listed.contains_key(name),
                room == 0 || kept,
                "{name}: {listed:?}"
            );
        }

        // Twice as many events again in the newest room push every older
        // event out, and the rooms they were in with them.
        for _ in 0..2 * held {
            hub.publish("flood-9", "blob", json!({"blob": blob})).await;
        }
        let listed = rooms(&hub).await;
        assert_eq!(listed.keys().collect::<Vec<_>>(), ["flood-0", "flood-9"]);
        let m = hub.request("GET", "/metrics", None).await.text();
        let now_held = metric(&m, "wshub_history_events") as u64;
        let (unavailable, replayed) = resume_from_zero(&hub, &names[9..]).await;
        let last = PER_ROOM + 2 * held;
        assert_eq!(
            unavailable["flood-9"],
            last + 1 - now_held,
            "oldest_seq moved up"
        );
        assert!(replayed.is_empty());

        // A forgotten room made again continues its seq: a client that saw
        // flood-1's seq 20 never sees another event numbered 20.
        let again = hub.publish("flood-1", "blob", json!({})).await;
        assert_eq!(again["seq"], PER_ROOM + 1, "the seq goes on, not back to 1");
        let mut late = hub.client("").await;
        late.send(json!({"type": "subscribe", "rooms": ["flood-1"], "since": {"flood-1": 5}, "epoch": hub.handle().epoch()}))
            .await;
        let err = late.expect("error").await;
        assert_eq!(err["payload"]["code"], "history_unavailable");

        // The honest client was never disturbed.
        hub.publish("flood-0", "blob", json!({"n": 21})).await;
        assert_eq!(honest.expect("blob").await["seq"], PER_ROOM + 1);
        assert_eq!(
            honest.request(json!({"type": "ping"})).await["type"],
            "pong"
        );
    });
}

#[test]
fn a_subscribe_past_max_rooms_per_connection_is_refused_whole() {
    let hub = TestHub::with_config(|c| c.max_rooms_per_connection = 3);
    smol::block_on(async {
        let mut tab = hub.client("").await;
        let ok = tab.subscribe(&["a", "b", "c"]).await;
        assert_eq!(
            ok["payload"]["rooms"],
            json!(["a", "b", "c"]),
            "the exact limit is allowed"
        );

        let refused = tab
            .request(json!({"type": "subscribe", "rooms": ["c", "d"]}))
            .await;
        assert_eq!(refused["type"], "error");
        assert_eq!(refused["payload"]["code"], "too_many_rooms");
        assert_eq!(refused["payload"]["limit"], 3);
        let message = refused["payload"]["message"].as_str().unwrap();
        assert!(message.contains("at most 3 rooms"), "{message}");
        assert!(refused["payload"].get("room").is_none());
        tab.expect_silence(Duration::from_millis(100)).await;
        assert!(
            !rooms(&hub).await.contains_key("d"),
            "nothing joined by the refusal"
        );

        // Still usable: rooms it holds already cost nothing, and a room
        // left makes room for another.
        assert_eq!(tab.request(json!({"type": "ping"})).await["type"], "pong");
        tab.subscribe(&["a", "c"]).await;
        tab.request(json!({"type": "unsubscribe", "rooms": ["a"]}))
            .await;
        tab.subscribe(&["d"]).await;
        let info = hub
            .request("GET", &format!("/api/connections/{}", tab.id()), None)
            .await
            .json();
        assert_eq!(info["rooms"], json!(["b", "c", "d"]));
        hub.publish("d", "tick", json!({})).await;
        assert_eq!(tab.expect("tick").await["room"], "d");
        assert!(!rooms(&hub).await.contains_key("a"), "left and forgotten");

        // At the upgrade: the limit is allowed, duplicates count once, one
        // more is 400 too_many_rooms and no connection.
        let at_limit = hub.client("?rooms=x,y,z").await;
        assert_eq!(at_limit.welcome["payload"]["rooms"], json!(["x", "y", "z"]));
        let dupes = hub.client("?rooms=x,x,y,z,z").await;
        assert_eq!(dupes.welcome["payload"]["rooms"], json!(["x", "y", "z"]));
        assert_eq!(
            refusal(&hub, "?rooms=w,x,y,z").await,
            (400, "too_many_rooms".to_string())
        );
        let health = hub.request("GET", "/health", None).await.json();
        assert_eq!(health["connections"], 3);
        let m = hub.request("GET", "/metrics", None).await.text();
        assert_eq!(
            metric(
                &m,
                "wshub_handshake_rejections_total{code=\"too_many_rooms\"}"
            ),
            1.0
        );
        assert!(!rooms(&hub).await.contains_key("w"));
    });
}

#[test]
fn thousands_of_rooms_in_descending_order_do_not_stall_the_hub() {
    const ROOMS: usize = 20_000;
    const CHUNK: usize = 1_000;
    let hub = TestHub::with_config(|c| c.max_rooms_per_connection = ROOMS);
    smol::block_on(async {
        let names: Vec<String> = (0..ROOMS).rev().map(|i| format!("room-{i:06}")).collect();
        let mut heavy = hub.client("").await;
        let mut honest = hub.client("").await;
        let done = Cell::new(false);

        // The honest client pings every 20 ms (under the rate limit) and
        // records how long each pong took.
        let pinger = async {
            let mut rtts = Vec::new();
            while !done.get() {
                let sent = Instant::now();
                assert_eq!(
                    honest.request(json!({"type": "ping"})).await["type"],
                    "pong"
                );
                rtts.push(sent.elapsed());
                smol::Timer::after(Duration::from_millis(20)).await;
            }
            rtts
        };
        let work = async {
            let mut timings = Vec::new();
            for chunk in names.chunks(CHUNK) {
                let started = Instant::now();
                let r = heavy
                    .request(json!({"type": "subscribe", "rooms": chunk}))
                    .await;
                timings.push(started.elapsed());
                assert_eq!(r["type"], "subscribed", "{r}");
                assert_eq!(r["payload"]["rooms"].as_array().unwrap().len(), CHUNK);
                assert!(
                    r["payload"]["positions"]
                        .as_object()
                        .unwrap()
                        .values()
                        .all(|p| p == 0)
                );
            }
            let mut leaving = Vec::new();
            for chunk in names.chunks(CHUNK) {
                let started = Instant::now();
                let r = heavy
                    .request(json!({"type": "unsubscribe", "rooms": chunk}))
                    .await;
                leaving.push(started.elapsed());
                assert_eq!(r["type"], "unsubscribed");
                if leaving.len() == 1 {
                    let info = hub
                        .request("GET", &format!("/api/connections/{}", heavy.id()), None)
                        .await
                        .json();
                    assert_eq!(info["rooms"].as_array().unwrap().len(), ROOMS - CHUNK);
                }
            }
            done.set(true);
            (timings, leaving)
        };
        let (rtts, (joining, leaving)) = futures_lite::future::zip(pinger, work).await;

        let ms = |d: &Duration| d.as_secs_f64() * 1000.0;
        let report = |what: &str, t: &[Duration]| {
            let mut sorted: Vec<f64> = t.iter().map(ms).collect();
            sorted.sort_by(f64::total_cmp);
            println!(
                "{what}: n={} first={:.1} ms last={:.1} ms median={:.1} ms max={:.1} ms",
                t.len(),
                ms(&t[0]),
                ms(&t[t.len() - 1]),
                sorted[sorted.len() / 2],
                sorted[sorted.len() - 1]
            );
        };
        report("subscribe 1,000 rooms (descending names)", &joining);
        report("unsubscribe 1,000 rooms", &leaving);
        report("honest ping round trip meanwhile", &rtts);
        assert!(!rtts.is_empty());
        assert!(rooms(&hub).await.is_empty(), "every room left is forgotten");

        // Join them all again, check both sides, then disconnect.
        for chunk in names.chunks(CHUNK) {
            heavy
                .request(json!({"type": "subscribe", "rooms": chunk}))
                .await;
        }
        let info = hub
            .request("GET", &format!("/api/connections/{}", heavy.id()), None)
            .await
            .json();
        let held: Vec<&str> = info["rooms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap())
            .collect();
        let mut sorted: Vec<&str> = names.iter().map(String::as_str).collect();
        sorted.sort_unstable();
        assert_eq!(held, sorted, "the registry lists them all, sorted");
        let listed = rooms(&hub).await;
        assert_eq!(listed.len(), ROOMS);
        assert!(listed.values().all(|&(subscribers, _)| subscribers == 1));
        let m = hub.request("GET", "/metrics", None).await.text();
        assert_eq!(metric(&m, "wshub_rooms") as usize, ROOMS);

        let started = Instant::now();
        heavy.close().await;
        wait_for_no_rooms(&hub).await;
        println!(
            "disconnect leaving {ROOMS} rooms: {:.1} ms",
            ms(&started.elapsed())
        );
        assert_eq!(
            honest.request(json!({"type": "ping"})).await["type"],
            "pong"
        );
    });
}

/// Polls `GET /api/rooms` until it is empty (a Leave is asynchronous).
async fn wait_for_no_rooms(hub: &TestHub) {
    within(async {
        while !rooms(hub).await.is_empty() {
            smol::Timer::after(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("every room forgotten in time");
}

#[test]
fn unsubscribe_and_disconnect_remove_every_membership() {
    let hub = TestHub::start();
    smol::block_on(async {
        let mut a = hub.client("?rooms=shared,a1,a2").await;
        let b = hub.client("?rooms=shared,b1").await;
        a.subscribe(&["a3", "a4"]).await;
        assert_eq!(rooms(&hub).await.len(), 6);
        assert_eq!(rooms(&hub).await["shared"].0, 2);

        a.request(json!({"type": "unsubscribe", "rooms": ["a1", "a2", "a3", "a4", "never"]}))
            .await;
        let listed = rooms(&hub).await;
        assert_eq!(listed.keys().collect::<Vec<_>>(), ["b1", "shared"]);
        let presence = a
            .request(json!({"type": "presence", "room": "shared"}))
            .await;
        assert_eq!(presence["payload"]["members"].as_array().unwrap().len(), 2);

        a.close().await;
        b.close().await;
        wait_for_no_rooms(&hub).await;
        let m = hub.request("GET", "/metrics", None).await.text();
        assert_eq!(metric(&m, "wshub_rooms"), 0.0);

        // A member leaving a room with history leaves the room, not the history.
        let mut c = hub.client("?rooms=kept").await;
        hub.publish("kept", "e", json!({})).await;
        c.expect("e").await;
        c.close().await;
        within(async {
            while rooms(&hub).await.get("kept") != Some(&(0, 1)) {
                smol::Timer::after(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("kept with no subscriber and last_seq 1");
    });
}

#[test]
fn bad_room_and_history_limits_stop_the_binary_with_exit_2() {
    let cases = [
        ("--max-history-bytes", "64MB"),
        ("--max-history-bytes", "0"),
        ("--max-rooms-per-connection", "lots"),
        ("WSHUB_MAX_ROOMS_PER_CONNECTION", "0"),
    ];
    for (source, value) in cases {
        // Each case fails before binding, so no address is taken.
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_wshub"));
        cmd.env_remove("WSHUB_LOG");
        match source.starts_with("--") {
            true => cmd.args([source, value]),
            false => cmd.env(source, value),
        };
        let out = cmd.output().expect("run wshub");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let setting = source.trim_start_matches("--").trim_start_matches("WSHUB_");
        let setting = setting.replace('-', "_").to_lowercase();
        assert_eq!(out.status.code(), Some(2), "{source}={value}: {stderr}");
        assert!(stderr.contains(&setting), "{source}={value}: {stderr}");
    }
}
