//! Helpers the integration tests share: reading the hub's metrics and
//! waiting, with a bound, for its registry to reach a count.

#![allow(dead_code)] // each test file uses its own share of these

use std::collections::HashMap;
use std::time::{Duration, Instant};

use wshub::testing::{TIMEOUT, TestClient, TestHub};

/// A `/metrics` scrape as `name{labels}` → value (labels sorted by name),
/// histograms as their count.
pub fn scrape(text: &str) -> HashMap<String, f64> {
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text");
    let mut out = HashMap::new();
    for sample in scrape.samples {
        let mut labels: Vec<String> = sample
            .labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{v}\""))
            .collect();
        labels.sort();
        let key = if labels.is_empty() {
            sample.metric.clone()
        } else {
            format!("{}{{{}}}", sample.metric, labels.join(","))
        };
        let value = match sample.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(buckets) => {
                buckets.iter().map(|b| b.count).fold(0.0, f64::max)
            }
            prometheus_parse::Value::Summary(_) => continue,
        };
        out.insert(key, value);
    }
    out
}

/// One series of a scrape; panics if the hub does not expose it.
pub fn metric(text: &str, series: &str) -> f64 {
    *scrape(text)
        .get(series)
        .unwrap_or_else(|| panic!("no series {series} in\n{text}"))
}

/// `wshub_disconnects_total{reason="…"}` in a fresh scrape of the hub.
pub async fn disconnects(hub: &TestHub, reason: &str) -> f64 {
    let text = hub.request("GET", "/metrics", None).await.text();
    metric(
        &text,
        &format!("wshub_disconnects_total{{reason=\"{reason}\"}}"),
    )
}

/// The hub's open connections, as its registry lists them.
pub async fn connection_count(hub: &TestHub) -> usize {
    hub.handle()
        .connections()
        .await
        .expect("the hub answers")
        .len()
}

/// Polls the registry until it holds `n` connections, reading `keep` (so
/// they keep answering pings) while it waits; panics after [`TIMEOUT`].
pub async fn wait_for_connections(hub: &TestHub, n: usize, keep: &mut [&mut TestClient]) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let open = connection_count(hub).await;
        if open == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the registry never reached {n} connections (it holds {open})"
        );
        for c in keep.iter_mut() {
            let _ = c.recv_within(Duration::from_millis(20)).await;
        }
        smol::Timer::after(Duration::from_millis(10)).await;
    }
}
