//! Event schemas (PROTOCOL.md section 5): payloads checked against the JSON
//! Schema configured for their type, over HTTP (422) and WebSocket, with the
//! failing path named; other types and valid payloads pass.

use serde_json::json;
use wshub::testing::TestHub;

fn hub_with_schemas(name: &str) -> TestHub {
    let dir = std::env::temp_dir().join(format!("wshub-schemas-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.json"));
    let schemas = json!({
        "scan_completed": {
            "type": "object",
            "required": ["files", "path"],
            "properties": {
                "files": {"type": "integer", "minimum": 0},
                "path": {"type": "string"},
                "stats": {"type": "object", "properties": {"ms": {"type": "number"}}}
            }
        }
    });
    std::fs::write(&path, schemas.to_string()).unwrap();
    TestHub::with_config(|c| c.schemas = Some(path))
}

#[test]
fn http_publishes_that_fail_their_schema_are_422_naming_the_path() {
    let hub = hub_with_schemas("http");
    smol::block_on(async {
        let mut tab = hub.client("?rooms=scans").await;
        let bad = [
            (json!({"files": "many", "path": "/"}), "/files"),
            (
                json!({"files": 1, "path": "/", "stats": {"ms": "slow"}}),
                "/stats/ms",
            ),
            (json!({"path": "/"}), "files"),
        ];
        for (payload, path) in bad {
            let r = hub
                .post_event(json!({"room": "scans", "type": "scan_completed", "payload": payload}))
                .await;
            assert_eq!(
                (r.status, r.error_code().as_str()),
                (422, "schema_violation")
            );
            let message = r.json()["error"]["message"].as_str().unwrap().to_string();
            assert!(message.contains(path), "{message} should name {path}");
        }
        let ok = hub
            .post_event(json!({"room": "scans", "type": "scan_completed", "payload": {"files": 3, "path": "/srv"}}))
            .await;
        assert_eq!(ok.status, 202);
        assert_eq!(ok.json()["seq"], 1, "refused publishes took no seq");
        assert_eq!(tab.expect("scan_completed").await["payload"]["files"], 3);
        let other = hub
            .post_event(json!({"room": "scans", "type": "free_form", "payload": {"x": [1]}}))
            .await;
        assert_eq!(other.status, 202, "types without a schema pass");
    });
}

#[test]
fn websocket_publishes_that_fail_their_schema_get_an_error_and_stay_usable() {
    let hub = hub_with_schemas("websocket");
    smol::block_on(async {
        let mut publisher = hub.client("").await;
        let mut tab = hub.client("?rooms=scans").await;
        let e = publisher
            .publish("scans", "scan_completed", json!({"files": -1, "path": "/"}))
            .await;
        assert_eq!(e["type"], "error");
        assert_eq!(e["payload"]["code"], "schema_violation");
        assert!(e["payload"]["message"].as_str().unwrap().contains("/files"));
        let ok = publisher
            .publish("scans", "scan_completed", json!({"files": 0, "path": "/"}))
            .await;
        assert_eq!(ok["type"], "published");
        assert_eq!(tab.expect("scan_completed").await["seq"], 1);
    });
}
