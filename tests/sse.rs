//! Server-Sent Events (PROTOCOL.md section 12), read by a real HTTP client:
//! the response head and the lines of a stream, the cursor in every `id:`,
//! resume from `Last-Event-ID` or `?since=` as `subscribe` with `since`
//! does it, a foreign epoch, a history that no longer holds the gap, and
//! unparsable cursors.

use std::time::Duration;

use serde_json::{Value, json};
mod common;

use common::metric;
use wshub::testing::{SseItem, TestHub, TestStream};

/// The seqs of the next `n` messages, which must be events of `room`.
async fn seqs(stream: &mut TestStream, room: &str, n: usize) -> Vec<u64> {
    let mut seqs = Vec::new();
    for _ in 0..n {
        let m = stream.recv().await;
        assert_eq!(m["room"], room, "{m}");
        seqs.push(m["seq"].as_u64().expect("a seq"));
    }
    seqs
}

async fn publish_n(hub: &TestHub, room: &str, n: usize) {
    for i in 0..n {
        hub.publish(room, "tick", json!({"i": i})).await;
    }
}

#[test]
fn a_stream_has_the_headers_retry_first_and_a_welcome_with_its_cursor() {
    let hub = TestHub::start();
    smol::block_on(async {
        let stream = hub.stream("?rooms=scans").await;
        let head = stream.head();
        assert_eq!(head.status, 200);
        assert_eq!(head.header("content-type"), Some("text/event-stream"));
        assert_eq!(head.header("cache-control"), Some("no-cache, no-transform"));
        assert_eq!(head.header("x-accel-buffering"), Some("no"));
        assert!(head.header("x-correlation-id").is_some());
        assert!(
            head.header("content-length").is_none(),
            "the stream ends with the connection"
        );
        let welcome = &stream.welcome["payload"];
        assert_eq!(welcome["protocol"], "sse");
        assert_eq!(welcome["rooms"], json!(["scans"]));
        assert_eq!(
            stream.welcome["correlation_id"],
            head.header("x-correlation-id").unwrap()
        );
        let epoch = hub.handle().epoch();
        assert_eq!(stream.welcome_id, format!("{epoch};scans=0"));
    });
}

#[test]
fn the_cursor_lists_the_rooms_in_query_order_with_the_last_seq_delivered() {
    let hub = TestHub::start();
    let epoch = hub.handle().epoch().to_string();
    smol::block_on(async {
        publish_n(&hub, "zeta", 3).await;
        let mut stream = hub.stream("?rooms=zeta,alpha").await;
        assert_eq!(stream.welcome_id, format!("{epoch};zeta=3;alpha=0"));
        hub.publish("alpha", "a", json!({})).await;
        hub.publish("zeta", "z", json!({})).await;
        hub.post_event(json!({"type": "to_all", "payload": {}}))
            .await;
        let (id, m) = stream.recv_tagged().await;
        assert_eq!(
            (m["type"].as_str(), m["seq"].as_u64()),
            (Some("a"), Some(1))
        );
        assert_eq!(id.unwrap(), format!("{epoch};zeta=3;alpha=1"));
        let (id, m) = stream.recv_tagged().await;
        assert_eq!(
            (m["type"].as_str(), m["seq"].as_u64()),
            (Some("z"), Some(4))
        );
        assert_eq!(id.unwrap(), format!("{epoch};zeta=4;alpha=1"));
        // An event to everyone has no room, so no `id:`.
        let (id, m) = stream.recv_tagged().await;
        assert_eq!(
            (id, m["type"].as_str(), &m["room"]),
            (None, Some("to_all"), &Value::Null)
        );
        assert_eq!(stream.last_event_id(), format!("{epoch};zeta=4;alpha=1"));

        // One room: the room's own line.
        let mut single = hub.stream("?rooms=alpha").await;
        assert_eq!(single.welcome_id, format!("{epoch};alpha=1"));
        hub.publish("alpha", "a", json!({})).await;
        let (id, _) = single.recv_tagged().await;
        assert_eq!(id.unwrap(), format!("{epoch};alpha=2"));
        let (id, _) = stream.recv_tagged().await;
        assert_eq!(id.unwrap(), format!("{epoch};zeta=4;alpha=2"));
    });
}

#[test]
fn data_is_the_wshub_json_message_and_onmessage_sees_every_kind() {
    let hub = TestHub::start();
    smol::block_on(async {
        let mut ws = hub.client("?rooms=r").await;
        let mut stream = hub.stream("?rooms=r").await;
        hub.publish("r", "scan_started", json!({"text": "line\nbreak", "n": 1}))
            .await;
        let on_ws = ws.expect("scan_started").await;
        let on_sse = stream.expect("scan_started").await;
        assert_eq!(on_ws, on_sse, "the same message, as on wshub.json");
        hub.request(
            "PUT",
            "/api/health/scanner",
            Some(&json!({"status": "degraded"})),
        )
        .await;
        let health = stream.expect("health_status").await;
        assert_eq!(health["payload"]["component"], "scanner");
        // Another stream of the room gets the very same event.
        let mut other = hub.stream("?rooms=r").await;
        hub.publish("r", "again", json!({})).await;
        assert_eq!(stream.expect("again").await, other.expect("again").await);
    });
}

#[test]
fn a_fresh_stream_replays_nothing_from_before_it_began() {
    let hub = TestHub::start();
    smol::block_on(async {
        publish_n(&hub, "r", 5).await;
        let mut stream = hub.stream("?rooms=r").await;
        hub.publish("r", "after", json!({})).await;
        let m = stream.expect("after").await;
        assert_eq!(m["seq"], 6);
        stream.expect_silence(Duration::from_millis(200)).await;
    });
}

#[test]
fn a_reconnect_with_last_event_id_misses_nothing_and_repeats_nothing() {
    let hub = TestHub::start();
    smol::block_on(async {
        let mut first = hub.stream("?rooms=r").await;
        publish_n(&hub, "r", 3).await;
        assert_eq!(seqs(&mut first, "r", 3).await, [1, 2, 3]);
        let last = first.last_event_id();
        drop(first);
        // Missed while away.
        publish_n(&hub, "r", 2).await;
        let mut again = hub
            .stream_with("?rooms=r", &[("Last-Event-ID", &last)])
            .await
            .expect("resumed");
        assert_eq!(
            again.welcome_id, last,
            "the stream starts where it left off"
        );
        let (id, m) = again.recv_tagged().await;
        assert_eq!(m["seq"], 4);
        assert_eq!(id.unwrap(), format!("{};r=4", hub.handle().epoch()));
        assert_eq!(seqs(&mut again, "r", 1).await, [5]);
        hub.publish("r", "new", json!({})).await;
        assert_eq!(seqs(&mut again, "r", 1).await, [6]);
        again.expect_silence(Duration::from_millis(200)).await;

        // Resuming from the welcome's own id replays nothing either.
        let welcome_id = again.welcome_id.clone();
        let mut from_welcome = hub
            .stream_with("?rooms=r", &[("Last-Event-ID", &welcome_id)])
            .await
            .expect("resumed");
        assert_eq!(seqs(&mut from_welcome, "r", 3).await, [4, 5, 6]);
    });
}

#[test]
fn since_in_the_query_resumes_when_there_is_no_header() {
    let hub = TestHub::start();
    let epoch = hub.handle().epoch().to_string();
    smol::block_on(async {
        publish_n(&hub, "a", 4).await;
        publish_n(&hub, "b", 2).await;
        let query = format!("?rooms=a,b,c&since={epoch};b=1;a=2;gone=9");
        let mut stream = hub.stream(&query).await;
        // Rooms in `?rooms=` order; `gone` is not in `?rooms=` and is ignored;
        // `c` was not in the cursor and starts where it stands.
        assert_eq!(stream.welcome_id, format!("{epoch};a=2;b=1;c=0"));
        let mut got = Vec::new();
        for _ in 0..3 {
            let (id, m) = stream.recv_tagged().await;
            got.push((
                m["room"].as_str().unwrap().to_string(),
                m["seq"].as_u64().unwrap(),
                id.unwrap(),
            ));
        }
        assert_eq!(
            got,
            [
                ("a".to_string(), 3, format!("{epoch};a=3;b=1;c=0")),
                ("a".to_string(), 4, format!("{epoch};a=4;b=1;c=0")),
                ("b".to_string(), 2, format!("{epoch};a=4;b=2;c=0")),
            ]
        );
        // The header wins over the query.
        let header = format!("{epoch};a=3;b=2");
        let mut both = hub
            .stream_with(
                &format!("?rooms=a,b&since={epoch};a=0;b=0"),
                &[("Last-Event-ID", &header)],
            )
            .await
            .expect("resumed");
        assert_eq!(seqs(&mut both, "a", 1).await, [4]);
        both.expect_silence(Duration::from_millis(200)).await;
    });
}

#[test]
fn a_cursor_of_another_epoch_gets_history_unavailable_and_no_replay() {
    let hub = TestHub::start();
    let epoch = hub.handle().epoch().to_string();
    smol::block_on(async {
        publish_n(&hub, "a", 3).await;
        let mut stream = hub
            .stream_with("?rooms=a,b", &[("Last-Event-ID", "an-old-epoch;a=1;b=0")])
            .await
            .expect("admitted");
        assert_eq!(
            stream.welcome_id,
            format!("{epoch};a=3;b=0"),
            "where the rooms stand"
        );
        for room in ["a", "b"] {
            let (id, e) = stream.recv_tagged().await;
            assert_eq!(id, None);
            assert_eq!(e["type"], "error");
            assert_eq!(e["payload"]["code"], "history_unavailable");
            assert_eq!(e["payload"]["room"], room);
            assert!(e["payload"]["oldest_seq"].is_u64());
            assert_eq!(e["correlation_id"], stream.welcome["correlation_id"]);
        }
        hub.publish("a", "new", json!({})).await;
        assert_eq!(
            seqs(&mut stream, "a", 1).await,
            [4],
            "nothing replayed, nothing lost"
        );
    });
}

#[test]
fn a_gap_the_history_no_longer_holds_is_history_unavailable_with_the_oldest_seq() {
    let hub = TestHub::with_config(|c| c.history_size = 2);
    let epoch = hub.handle().epoch().to_string();
    smol::block_on(async {
        publish_n(&hub, "a", 5).await;
        publish_n(&hub, "b", 3).await;
        let cursor = format!("{epoch};a=1;b=1");
        let mut stream = hub
            .stream_with("?rooms=a,b", &[("Last-Event-ID", &cursor)])
            .await
            .expect("admitted");
        // a holds 4..=5: lost; b holds 2..=3: recovered from 1.
        assert_eq!(stream.welcome_id, format!("{epoch};a=5;b=1"));
        let e = stream.expect("error").await;
        assert_eq!(e["payload"]["code"], "history_unavailable");
        assert_eq!(
            (&e["payload"]["room"], &e["payload"]["oldest_seq"]),
            (&json!("a"), &json!(4))
        );
        assert_eq!(seqs(&mut stream, "b", 2).await, [2, 3]);
        // A seq the room never reached cannot be resumed either.
        let future = format!("{epoch};b=99");
        let mut ahead = hub
            .stream_with("?rooms=b", &[("Last-Event-ID", &future)])
            .await
            .expect("admitted");
        let e = ahead.expect("error").await;
        assert_eq!(e["payload"]["code"], "history_unavailable");
    });
}

#[test]
fn an_unparsable_cursor_is_400_bad_request() {
    let hub = TestHub::start();
    smol::block_on(async {
        for cursor in ["e;a", "e;a=x", "e;a=1;a=2", ";a=1", "e;a b=1", "e;a=1;"] {
            let refused = hub
                .stream_with("?rooms=a", &[("Last-Event-ID", cursor)])
                .await
                .expect_err("refused");
            assert_eq!(refused.status, 400, "{cursor}");
            assert_eq!(refused.error_code(), "bad_request", "{cursor}");
        }
        let refused = hub
            .stream_with("?rooms=a&since=e;a=-1", &[])
            .await
            .expect_err("refused");
        assert_eq!(
            (refused.status, refused.error_code().as_str()),
            (400, "bad_request")
        );
        let m = hub.request("GET", "/metrics", None).await.text();
        assert_eq!(
            metric(&m, "wshub_handshake_rejections_total{code=\"bad_request\"}"),
            7.0
        );
        assert!(hub.handle().connections().await.unwrap().is_empty());
    });
}

#[test]
fn heartbeats_are_comment_lines_and_a_silent_stream_is_not_timed_out() {
    let hub = TestHub::with_config(|c| {
        c.heartbeat_interval = Duration::from_millis(100);
        c.heartbeat_timeout = Duration::from_millis(300);
    });
    smol::block_on(async {
        let mut stream = hub.stream("?rooms=r").await;
        let mut comments = 0;
        // Well past the heartbeat timeout: a stream never sends, and stays.
        while comments < 8 {
            match stream.recv_within(Duration::from_secs(5)).await {
                Some(SseItem::Comment(c)) => {
                    assert_eq!(c, "heartbeat");
                    comments += 1;
                }
                other => panic!("expected only heartbeat comments, got {other:?}"),
            }
        }
        hub.publish("r", "still_here", json!({})).await;
        stream.expect("still_here").await;
        assert_eq!(hub.handle().connections().await.unwrap().len(), 1);
    });
}

#[test]
fn the_sse_form_is_encoded_once_per_event_whatever_the_streams() {
    let hub = TestHub::start();
    smol::block_on(async {
        let mut streams = Vec::new();
        for i in 0..20 {
            // Half alone in the room, half with another room beside it.
            let query = if i % 2 == 0 {
                "?rooms=r"
            } else {
                "?rooms=r,other"
            };
            streams.push(hub.stream(query).await);
        }
        publish_n(&hub, "r", 3).await;
        for stream in &mut streams {
            assert_eq!(seqs(stream, "r", 3).await, [1, 2, 3]);
        }
        let m = hub.request("GET", "/metrics", None).await.text();
        assert_eq!(
            metric(&m, "wshub_event_encodings_total{protocol=\"sse\"}"),
            3.0
        );
        assert_eq!(
            metric(&m, "wshub_event_encodings_total{protocol=\"wshub.json\"}"),
            3.0
        );
    });
}
