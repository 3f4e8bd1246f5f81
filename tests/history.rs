//! History and resume (PROTOCOL.md sections 4 and 5): per-room seq, the ring
//! of the last `history_size` events, and `subscribe` with `since` and
//! `epoch` replaying exactly the missed events, in order, before new ones.

use std::time::Duration;

use serde_json::{Value, json};
use wshub::testing::{TestClient, TestHub};

fn seqs(events: &[Value]) -> Vec<u64> {
    events.iter().map(|e| e["seq"].as_u64().unwrap()).collect()
}

#[test]
fn resume_replays_exactly_the_missed_events_then_new_ones() {
    let hub = TestHub::start();
    smol::block_on(async {
        let mut tab = hub.client("").await;
        let s = tab.subscribe(&["scans"]).await;
        let epoch = s["payload"]["epoch"].clone();
        hub.publish("scans", "e", json!({"n": 1})).await;
        hub.publish("scans", "e", json!({"n": 2})).await;
        let last = tab.expect("e").await;
        assert_eq!(tab.expect("e").await["seq"], 2);
        assert_eq!(last["seq"], 1);
        tab.close().await;

        for n in 3..=7 {
            hub.publish("scans", "e", json!({"n": n})).await;
        }
        let mut tab = hub.client("").await;
        let reply = tab
            .request(json!({"type": "subscribe", "rooms": ["scans"], "since": {"scans": 2}, "epoch": epoch}))
            .await;
        assert_eq!(reply["type"], "subscribed");
        assert_eq!(reply["payload"]["recovered"], json!({"scans": true}));
        assert_eq!(reply["payload"]["positions"], json!({"scans": 7}));
        let mut replayed = Vec::new();
        for _ in 3..=7 {
            replayed.push(tab.expect("e").await);
        }
        assert_eq!(seqs(&replayed), [3, 4, 5, 6, 7]);
        assert_eq!(replayed[0]["payload"]["n"], 3);
        hub.publish("scans", "e", json!({"n": 8})).await;
        assert_eq!(tab.expect("e").await["seq"], 8);
        tab.expect_nothing_before_pong().await;
    });
}

#[test]
fn resume_beyond_the_window_is_history_unavailable_before_subscribed() {
    let hub = TestHub::with_config(|c| c.history_size = 3);
    smol::block_on(async {
        for _ in 0..10 {
            hub.publish("r", "e", json!({})).await;
        }
        let mut tab = hub.client("").await;
        let epoch = hub.handle().epoch().to_string();
        tab.send(json!({"type": "subscribe", "rooms": ["r"], "since": {"r": 5}, "epoch": epoch, "ref": "s"}))
            .await;
        let err = tab.expect("error").await;
        assert_eq!(err["payload"]["code"], "history_unavailable");
        assert_eq!(err["payload"]["room"], "r");
        assert_eq!(err["payload"]["oldest_seq"], 8);
        assert_eq!(err["ref"], "s");
        let sub = tab.expect("subscribed").await;
        assert_eq!(sub["payload"]["recovered"], json!({"r": false}));
        tab.expect_nothing_before_pong().await;

        // The oldest held minus one is still recoverable.
        let mut edge = hub.client("").await;
        edge.send(json!({"type": "subscribe", "rooms": ["r"], "since": {"r": 7}, "epoch": hub.handle().epoch()}))
            .await;
        edge.expect("subscribed").await;
        assert_eq!(
            seqs(&[
                edge.expect("e").await,
                edge.expect("e").await,
                edge.expect("e").await
            ]),
            [8, 9, 10]
        );
    });
}

#[test]
fn another_epoch_is_history_unavailable_and_nothing_is_replayed() {
    let hub = TestHub::start();
    smol::block_on(async {
        hub.publish("r", "e", json!({})).await;
        let mut tab = hub.client("").await;
        tab.send(json!({"type": "subscribe", "rooms": ["r", "q"], "since": {"r": 0, "q": 0}, "epoch": "an-old-epoch"}))
            .await;
        let mut unavailable = vec![];
        for _ in 0..2 {
            let e = tab.expect("error").await;
            assert_eq!(e["payload"]["code"], "history_unavailable");
            unavailable.push(e["payload"]["room"].as_str().unwrap().to_string());
        }
        unavailable.sort();
        assert_eq!(unavailable, ["q", "r"]);
        let sub = tab.expect("subscribed").await;
        assert_eq!(sub["payload"]["recovered"], json!({"r": false, "q": false}));
        tab.expect_nothing_before_pong().await;
    });
}

#[test]
fn resume_from_the_very_first_connection_works_from_seq_zero() {
    let hub = TestHub::start();
    smol::block_on(async {
        let mut tab = hub.client("").await;
        let s = tab.subscribe(&["fresh"]).await;
        assert_eq!(s["payload"]["positions"]["fresh"], 0);
        tab.close().await;
        hub.publish("fresh", "e", json!({})).await;
        let mut tab = hub.client("").await;
        tab.send(json!({"type": "subscribe", "rooms": ["fresh"], "since": {"fresh": 0}, "epoch": hub.handle().epoch()}))
            .await;
        assert_eq!(
            tab.expect("subscribed").await["payload"]["recovered"],
            json!({"fresh": true})
        );
        assert_eq!(tab.expect("e").await["seq"], 1);

        // A room nobody ever published to resumes from 0, and only from 0.
        let mut other = hub.client("").await;
        other
            .send(json!({"type": "subscribe", "rooms": ["never"], "since": {"never": 3}, "epoch": hub.handle().epoch()}))
            .await;
        assert_eq!(
            other.expect("error").await["payload"]["code"],
            "history_unavailable"
        );
    });
}

#[test]
fn resume_while_publishing_has_no_gap_and_no_duplicate() {
    let hub = TestHub::with_config(|c| c.history_size = 1000);
    let addr = hub.handle().addr();
    let epoch = hub.handle().epoch().to_string();
    smol::block_on(async {
        let mut tab = hub.client("?rooms=live").await;
        hub.publish("live", "e", json!({})).await;
        assert_eq!(tab.expect("e").await["seq"], 1);
        tab.close().await;

        // A publisher keeps going on its own thread while the tab comes back.
        let publisher = std::thread::spawn(move || {
            smol::block_on(async {
                for _ in 0..200 {
                    let body = r#"{"room":"live","type":"e","payload":{}}"#;
                    let r =
                        wshub::testing::http(addr, "POST", "/api/events", &[], Some(body)).await;
                    assert_eq!(r.status, 202);
                }
            })
        });
        smol::Timer::after(Duration::from_millis(20)).await;
        let mut tab = TestClient::connect(&hub.ws_url("")).await;
        tab.send(
            json!({"type": "subscribe", "rooms": ["live"], "since": {"live": 1}, "epoch": epoch}),
        )
        .await;
        tab.expect("subscribed").await;
        publisher.join().unwrap();
        let mut next = 2;
        while next <= 201 {
            let e = tab.expect("e").await;
            assert_eq!(e["seq"], next, "consecutive seqs, no gap, no duplicate");
            next += 1;
        }
        tab.expect_nothing_before_pong().await;
    });
}

#[test]
fn seqs_are_per_room() {
    let hub = TestHub::start();
    smol::block_on(async {
        assert_eq!(hub.publish("a", "e", json!({})).await["seq"], 1);
        assert_eq!(hub.publish("b", "e", json!({})).await["seq"], 1);
        assert_eq!(hub.publish("a", "e", json!({})).await["seq"], 2);
    });
}

/// Waits, with a bound, until room `room` is forgotten (404).
async fn until_forgotten(hub: &TestHub, room: &str) {
    let deadline = std::time::Instant::now() + wshub::testing::TIMEOUT;
    while hub
        .request("GET", &format!("/api/rooms/{room}"), None)
        .await
        .status
        != 404
    {
        assert!(
            std::time::Instant::now() < deadline,
            "room `{room}` was never forgotten"
        );
        smol::Timer::after(Duration::from_millis(20)).await;
    }
}

#[test]
fn a_room_whose_history_all_expired_recovers_only_from_its_last_seq() {
    // `history_ttl` empties the room and, with no members, the hub forgets
    // it but keeps its seq: a resume from before that seq lost events, so
    // it is `history_unavailable`, never a silent `recovered: true`.
    let hub = TestHub::with_config(|c| c.history_ttl = Duration::from_millis(100));
    let epoch = hub.handle().epoch().to_string();
    smol::block_on(async {
        hub.publish("gone", "e", json!({})).await;
        hub.publish("gone", "e", json!({})).await;
        until_forgotten(&hub, "gone").await;

        let mut tab = hub.client("").await;
        tab.send(json!({"type": "subscribe", "rooms": ["gone"], "since": {"gone": 0}, "epoch": epoch, "ref": "s"}))
            .await;
        let err = tab.expect("error").await;
        assert_eq!(err["payload"]["code"], "history_unavailable");
        assert_eq!(err["payload"]["room"], "gone");
        assert_eq!(err["payload"]["oldest_seq"], 3, "nothing is held");
        let sub = tab.expect("subscribed").await;
        assert_eq!(sub["payload"]["recovered"], json!({"gone": false}));
        assert_eq!(sub["payload"]["positions"], json!({"gone": 2}));
        tab.close().await;
        until_forgotten(&hub, "gone").await;

        // From its last seq nothing was missed: recovered, nothing replayed.
        let mut tab = hub.client("").await;
        let sub = tab
            .request(json!({"type": "subscribe", "rooms": ["gone"], "since": {"gone": 2}, "epoch": epoch}))
            .await;
        assert_eq!(sub["type"], "subscribed", "{sub}");
        assert_eq!(sub["payload"]["recovered"], json!({"gone": true}));
        tab.expect_nothing_before_pong().await;
        tab.close().await;
        until_forgotten(&hub, "gone").await;

        // A stream's cursor is held to the same rule (section 12).
        let cursor = format!("{epoch};gone=1");
        let mut stream = hub
            .stream_with("?rooms=gone", &[("Last-Event-ID", cursor.as_str())])
            .await
            .expect("admitted");
        assert_eq!(stream.welcome_id, format!("{epoch};gone=2"));
        let err = stream.expect("error").await;
        assert_eq!(err["payload"]["code"], "history_unavailable");
        assert_eq!(err["payload"]["oldest_seq"], 3);
        hub.publish("gone", "e", json!({})).await;
        assert_eq!(stream.expect("e").await["seq"], 3);
    });
}
