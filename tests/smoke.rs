use serde_json::json;
use wshub::testing::TestHub;

#[test]
fn smoke() {
    smol::block_on(async {
        let hub = TestHub::start();
        let mut a = hub.client("?rooms=scans").await;
        let mut b = hub.client("").await;
        println!("welcome {}", a.welcome);
        let pong = a.request(json!({"type":"ping"})).await;
        println!("pong {pong}");
        let sub = b.subscribe(&["scans"]).await;
        println!("sub {sub}");
        let r = hub.publish("scans", "scan_started", json!({"x":1})).await;
        println!("published {r}");
        println!("a got {}", a.expect("scan_started").await);
        println!("b got {}", b.expect("scan_started").await);
        let p = a.publish("scans", "note", json!({})).await;
        println!("client publish {p}");
        println!("b got {}", b.expect("note").await);
        let h = hub.request("GET", "/health", None).await;
        println!("health {} {}", h.status, h.text());
        let m = hub.request("GET", "/metrics", None).await;
        println!("metrics {}", m.status);
        a.close().await;
    });
}
