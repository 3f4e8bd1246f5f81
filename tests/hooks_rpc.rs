//! `rpc` and `rpc_hook` (PROTOCOL.md section 10) against a real HTTP app
//! on a loopback port: answers, refusals, every way a hook can fail, the
//! signature, order, and the 16 calls that may wait per connection.

mod hook_app;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hook_app::{App, AppResponse, Gate, SHORT_HOOK_TIMEOUT, dead_url};
use serde_json::{Value, json};
use wshub::testing::TestHub;

fn hub_with_rpc(url: &str) -> TestHub {
    let url = url.to_string();
    TestHub::with_config(move |c| {
        c.set_str("rpc_hook", &url).expect("a hook URL");
        c.hook_timeout = SHORT_HOOK_TIMEOUT;
    })
}

#[test]
fn rpc_gets_the_apps_result() {
    let app = App::start(|r| {
        let params = r.body["params"].clone();
        AppResponse::json(
            200,
            json!({"result": {"echo": params, "method": r.body["method"]}}),
        )
    });
    let hub = hub_with_rpc(&app.url("/hooks/rpc"));
    smol::block_on(async {
        let mut c = hub.client("").await;
        let reply = c
            .request(json!({"type": "rpc", "method": "cart.add", "params": {"sku": 7}, "correlation_id": "rpc-1"}))
            .await;
        assert_eq!(reply["type"], "rpc_result", "{reply}");
        assert_eq!(
            reply["payload"]["result"],
            json!({"echo": {"sku": 7}, "method": "cart.add"})
        );
        assert_eq!(reply["correlation_id"], "rpc-1");
        let asked = app.next().await;
        assert_eq!(asked.path, "/hooks/rpc");
        assert_eq!(asked.body["hook"], "rpc");
        assert_eq!(asked.body["connection_id"], c.id());
        assert_eq!(asked.body["user"], Value::Null);
        assert_eq!(asked.headers["content-type"], "application/json");
        assert_eq!(asked.headers["x-correlation-id"], "rpc-1");
        assert_eq!(
            asked.headers["content-length"],
            asked.raw_body.len().to_string()
        );
        assert!(!asked.headers.contains_key("x-wshub-signature"));

        // Params default to null; a result absent from the answer is null.
        let reply = c.request(json!({"type": "rpc", "method": "m"})).await;
        assert_eq!(reply["payload"]["result"]["echo"], Value::Null);
    });
}

#[test]
fn rpc_without_result_is_null_and_chunked_answers_are_read() {
    let app = App::start(|r| {
        let mut response = AppResponse::json(200, json!({"other": r.body["method"]}));
        response.chunked = true;
        response
    });
    let hub = hub_with_rpc(&app.url("/rpc"));
    smol::block_on(async {
        let mut c = hub.client("").await;
        for _ in 0..3 {
            let reply = c.request(json!({"type": "rpc", "method": "m"})).await;
            assert_eq!(reply["type"], "rpc_result", "{reply}");
            assert_eq!(reply["payload"]["result"], Value::Null);
        }
    });
}

#[test]
fn app_refusals_pass_their_code_and_message() {
    let app = App::start(|r| match r.body["method"].as_str() {
        Some("full") => AppResponse::json(
            409,
            json!({"error": {"code": "cart_full", "message": "no room left"}}),
        ),
        _ => AppResponse::json(
            403,
            json!({"error": {"code": "Not-A-Code!", "message": "nope"}}),
        ),
    });
    let hub = hub_with_rpc(&app.url("/rpc"));
    smol::block_on(async {
        let mut c = hub.client("").await;
        let reply = c.request(json!({"type": "rpc", "method": "full"})).await;
        assert_eq!(reply["type"], "error");
        assert_eq!(reply["payload"]["code"], "cart_full");
        assert_eq!(reply["payload"]["message"], "no room left");
        let reply = c.request(json!({"type": "rpc", "method": "other"})).await;
        assert_eq!(reply["payload"]["code"], "forbidden");
        assert_eq!(reply["payload"]["message"], "nope");
    });
}

#[test]
fn rpc_without_a_hook_is_hook_unavailable() {
    let hub = TestHub::start();
    smol::block_on(async {
        let mut c = hub.client("").await;
        let reply = c.request(json!({"type": "rpc", "method": "m"})).await;
        assert_eq!(reply["payload"]["code"], "hook_unavailable");
        let reply = c.request(json!({"type": "rpc", "method": ""})).await;
        assert_eq!(reply["payload"]["code"], "invalid_message");
    });
}

#[test]
fn failures_are_hook_unavailable_and_the_connection_stays() {
    let gate = Gate::new();
    let hang = gate.clone();
    let app = App::start(move |r| match r.body["method"].as_str() {
        Some("500") => AppResponse::json(500, json!({"error": {"code": "boom", "message": "x"}})),
        Some("html") => AppResponse::raw(200, "<html>not json</html>"),
        Some("array") => AppResponse::json(200, json!([1, 2])),
        Some("404") => AppResponse::json(404, json!({"detail": "Not Found"})),
        Some("sleep") => {
            hang.wait();
            AppResponse::json(200, json!({"result": "too late"}))
        }
        _ => AppResponse::json(200, json!({"result": "ok"})),
    });
    let hub = hub_with_rpc(&app.url("/rpc"));
    smol::block_on(async {
        let mut c = hub.client("").await;
        for method in ["500", "html", "array", "404", "sleep"] {
            let reply = c.request(json!({"type": "rpc", "method": method})).await;
            assert_eq!(reply["type"], "error", "{method}: {reply}");
            assert_eq!(reply["payload"]["code"], "hook_unavailable", "{method}");
        }
        gate.open();
        // Still open, and the app is still used.
        let reply = c.request(json!({"type": "rpc", "method": "fine"})).await;
        assert_eq!(reply["payload"]["result"], "ok");
        let metrics = common::scrape(&hub.handle().metrics().await.unwrap());
        assert_eq!(
            metrics[r#"wshub_hook_requests_total{hook="rpc",outcome="unavailable"}"#],
            5.0
        );
        assert_eq!(
            metrics[r#"wshub_hook_requests_total{hook="rpc",outcome="answered"}"#],
            1.0
        );
        assert_eq!(metrics[r#"wshub_hook_seconds_count{hook="rpc"}"#], 6.0);
    });
}

#[test]
fn a_refused_connection_is_hook_unavailable() {
    let hub = hub_with_rpc(&dead_url());
    smol::block_on(async {
        let mut c = hub.client("").await;
        let reply = c.request(json!({"type": "rpc", "method": "m"})).await;
        assert_eq!(reply["payload"]["code"], "hook_unavailable");
    });
}

#[test]
fn the_signature_is_an_hmac_of_the_body() {
    let app = App::start(|r| {
        let expected = format!("sha256={}", wshub::hook::signature("s3cret", &r.raw_body));
        let ok = r.headers.get("x-wshub-signature") == Some(&expected);
        AppResponse::json(200, json!({"result": ok}))
    });
    let url = app.url("/rpc");
    let hub = TestHub::with_config(move |c| {
        c.set_str("rpc_hook", &url).unwrap();
        c.set_str("hook_secret", "s3cret").unwrap();
    });
    smol::block_on(async {
        let mut c = hub.client("").await;
        let reply = c
            .request(json!({"type": "rpc", "method": "m", "params": "é"}))
            .await;
        assert_eq!(reply["payload"]["result"], true, "{reply}");
    });
}

#[test]
fn answers_come_in_call_order() {
    // The first call is held until the second has been answered by the app.
    let second_answered = Gate::new();
    let gate = second_answered.clone();
    let app = App::start(move |r| {
        if r.body["method"] == "first" {
            gate.wait();
        }
        AppResponse::json(200, json!({"result": r.body["method"]}))
    });
    // The default hook_timeout: the held call must not time out.
    let url = app.url("/rpc");
    let hub = TestHub::with_config(move |c| c.set_str("rpc_hook", &url).unwrap());
    smol::block_on(async {
        let mut c = hub.client("").await;
        c.send(json!({"type": "rpc", "method": "first", "ref": "1"}))
            .await;
        c.send(json!({"type": "rpc", "method": "second", "ref": "2"}))
            .await;
        // Both have reached the app; the second is answered at once.
        let seen: Vec<String> = vec![app.next().await, app.next().await]
            .into_iter()
            .map(|r| r.body["method"].as_str().unwrap().to_string())
            .collect();
        assert!(seen.contains(&"second".to_string()));
        // A ping is not a hook call: answered at once, ahead of both.
        let pong = c.request(json!({"type": "ping"})).await;
        assert_eq!(pong["type"], "pong");
        second_answered.open();
        let a = c.expect("rpc_result").await;
        let b = c.expect("rpc_result").await;
        assert_eq!(
            (a["ref"].clone(), b["ref"].clone()),
            (json!("1"), json!("2"))
        );
        assert_eq!(a["payload"]["result"], "first");
    });
}

#[test]
fn at_most_sixteen_calls_wait_per_connection() {
    let release = Gate::new();
    let gate = release.clone();
    let asked = Arc::new(AtomicUsize::new(0));
    let counted = asked.clone();
    let app = App::start(move |r| {
        counted.fetch_add(1, Ordering::SeqCst);
        gate.wait();
        AppResponse::json(200, json!({"result": r.body["params"]}))
    });
    let url = app.url("/rpc");
    let hub = TestHub::with_config(move |c| c.set_str("rpc_hook", &url).unwrap());
    smol::block_on(async {
        let mut c = hub.client("").await;
        let mut other = hub.client("").await;
        for n in 0..16 {
            c.send(json!({"type": "rpc", "method": "m", "params": n, "ref": n.to_string()}))
                .await;
        }
        let refused = c
            .request(json!({"type": "rpc", "method": "m", "params": 16}))
            .await;
        assert_eq!(refused["type"], "error");
        assert_eq!(refused["payload"]["code"], "rate_limited");
        // Another connection is not held back by this one's calls.
        other
            .send(json!({"type": "rpc", "method": "m", "params": "other", "ref": "o"}))
            .await;
        for _ in 0..17 {
            app.next().await;
        }
        release.open();
        for n in 0..16 {
            let r = c.expect("rpc_result").await;
            assert_eq!(r["ref"], n.to_string());
            assert_eq!(r["payload"]["result"], n);
        }
        let r = other.expect("rpc_result").await;
        assert_eq!(r["payload"]["result"], "other");
        // Room again once they are answered.
        let r = c
            .request(json!({"type": "rpc", "method": "m", "params": "again"}))
            .await;
        assert_eq!(r["payload"]["result"], "again");
        assert_eq!(asked.load(Ordering::SeqCst), 18);
    });
}

#[test]
fn keep_alive_connections_are_reused() {
    let app = App::start(|_| AppResponse::json(200, json!({"result": 1})));
    let hub = hub_with_rpc(&app.url("/rpc"));
    smol::block_on(async {
        let mut c = hub.client("").await;
        for _ in 0..20 {
            let r = c.request(json!({"type": "rpc", "method": "m"})).await;
            assert_eq!(r["payload"]["result"], 1);
        }
    });
    assert_eq!(app.connections.load(Ordering::SeqCst), 1);
}

mod common;
