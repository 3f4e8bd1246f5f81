//! The embedding API: `wshub::serve` and every `Handle` call, as a Rust
//! program that hosts a hub uses them.

use serde_json::json;
use wshub::testing::{Closed, TestClient};
use wshub::{Config, Error, Publish, Status};

fn config() -> Config {
    let mut config = Config::default();
    config.bind = "127.0.0.1:0".parse().unwrap();
    config
}

#[test]
fn a_program_hosts_a_hub_and_publishes_through_the_handle() {
    let hub = wshub::serve(config()).unwrap();
    assert_ne!(hub.addr().port(), 0);
    assert_eq!(hub.ws_url(), format!("ws://{}/ws", hub.addr()));
    smol::block_on(async {
        let mut tab = TestClient::connect(&format!("{}?rooms=ticks", hub.ws_url())).await;
        assert_eq!(tab.welcome["payload"]["epoch"], hub.epoch());

        let sent = hub
            .publish(Publish::to_room("ticks", "tick", json!({"n": 1})))
            .await
            .unwrap();
        assert_eq!((sent.seq, sent.recipients), (Some(1), 1));
        let event = tab.expect("tick").await;
        assert_eq!(event["id"], sent.id.as_str());
        assert_eq!(event["correlation_id"], sent.correlation_id.as_str());

        let sent = hub
            .publish_with_correlation(Publish::to_everyone("alert", json!({})), "mine-1".into())
            .await
            .unwrap();
        assert_eq!(sent.correlation_id, "mine-1");
        assert_eq!(tab.expect("alert").await["correlation_id"], "mine-1");

        let state = hub
            .set_health("scanner", Status::Degraded, Some("slow disk"))
            .await
            .unwrap();
        assert_eq!(state.status, Status::Degraded);
        assert_eq!(
            tab.expect("health_status").await["payload"]["overall"],
            "degraded"
        );
        assert_eq!(hub.health().await.unwrap().status, Status::Degraded);

        let connections = hub.connections().await.unwrap();
        assert_eq!(connections.len(), 1);
        assert_eq!(connections[0].connection_id, tab.id());
        assert_eq!(connections[0].rooms, ["ticks"]);
        assert!(
            hub.metrics()
                .await
                .unwrap()
                .contains("wshub_events_published_total 2")
        );

        // Refusals come back as values.
        let refused = hub
            .publish(Publish::to_room("ticks", "welcome", json!({})))
            .await;
        assert!(matches!(refused, Err(Error::Protocol(e)) if e.code.as_str() == "reserved_type"));
        let refused = hub
            .publish(Publish::to_room("bad room", "t", json!({})))
            .await;
        assert!(matches!(refused, Err(Error::Protocol(_))));
        assert!(matches!(
            hub.set_health("bad name", Status::Ok, None).await,
            Err(Error::Protocol(_))
        ));

        let clone = hub.clone();
        hub.request_shutdown().await;
        assert_eq!(tab.expect_close().await, Closed::Code(1001));
        drop(tab);
        hub.shutdown().await;
        let after = clone.publish(Publish::to_everyone("late", json!({}))).await;
        assert!(matches!(after, Err(Error::Stopped)));
        clone.stopped().await;
    });
}

#[test]
fn serve_refuses_bad_settings_and_taken_ports() {
    let mut bad = config();
    bad.send_queue = 0;
    assert!(matches!(wshub::serve(bad), Err(Error::Config(e)) if e.setting == "send_queue"));

    let mut schemas = config();
    schemas.schemas = Some("/nonexistent/schemas.json".into());
    assert!(matches!(wshub::serve(schemas), Err(Error::Config(e)) if e.setting == "schemas"));

    let first = wshub::serve(config()).unwrap();
    let mut same = config();
    same.bind = first.addr();
    assert!(matches!(wshub::serve(same), Err(Error::Io(_))));
    smol::block_on(first.shutdown());
}

#[test]
fn many_hubs_live_in_one_process() {
    let hubs: Vec<_> = (0..5).map(|_| wshub::serve(config()).unwrap()).collect();
    smol::block_on(async {
        for hub in &hubs {
            let mut tab = TestClient::connect(&format!("{}?rooms=r", hub.ws_url())).await;
            hub.publish(Publish::to_room("r", "t", json!({})))
                .await
                .unwrap();
            assert_eq!(tab.expect("t").await["seq"], 1);
        }
        let epochs: std::collections::HashSet<_> =
            hubs.iter().map(|h| h.epoch().to_string()).collect();
        assert_eq!(epochs.len(), 5, "each hub has its own epoch");
        for hub in hubs {
            hub.shutdown().await;
        }
    });
}

/// The hub's log lines are `tracing` events: an embedding program sees
/// them in its own subscriber, with the same messages and IDs as fields.
#[test]
fn the_hub_logs_through_the_programs_own_tracing_subscriber() {
    use std::sync::{Arc, Mutex};
    use tracing::field::{Field, Visit};

    #[derive(Default)]
    struct Seen(Mutex<Vec<(String, String)>>);
    struct Fields<'a>(&'a mut Vec<(String, String)>);
    impl Visit for Fields<'_> {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            self.0
                .push((field.name().to_string(), format!("{value:?}")));
        }
    }
    struct Program(Arc<Seen>);
    impl tracing::Subscriber for Program {
        fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
            *metadata.level() <= tracing::Level::INFO
        }
        fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            tracing::span::Id::from_u64(1)
        }
        fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
        fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
        fn event(&self, event: &tracing::Event<'_>) {
            let mut fields = Vec::new();
            event.record(&mut Fields(&mut fields));
            self.0.0.lock().unwrap().extend(fields);
        }
        fn enter(&self, _: &tracing::span::Id) {}
        fn exit(&self, _: &tracing::span::Id) {}
    }

    let seen = Arc::new(Seen::default());
    // The hub runs on its own thread, so the program's subscriber is global.
    tracing::subscriber::set_global_default(Program(seen.clone()))
        .expect("no other test in this file sets a subscriber");
    let hub = wshub::serve(config()).unwrap();
    smol::block_on(async {
        let tab = TestClient::connect(&hub.ws_url()).await;
        let id = tab.id();
        tab.close().await;
        hub.shutdown().await;
        let fields = seen.0.lock().unwrap();
        let opened = fields
            .iter()
            .any(|(name, value)| name == "message" && value == "connection opened");
        assert!(opened, "{fields:?}");
        let with_id = fields
            .iter()
            .any(|(name, value)| name == "connection_id" && value.contains(&id));
        assert!(with_id, "the connection ID is a field: {fields:?}");
    });
}
