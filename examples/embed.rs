//! A program that embeds a hub and publishes a tick to room `ticks` every
//! second. Run it, then open the printed page and join `ticks`:
//!
//! ```sh
//! cargo run --example embed            # or: cargo run --example embed -- 127.0.0.1:9000
//! ```

use std::time::Duration;

use serde_json::json;
use wshub::{Config, Publish, Status};

fn main() -> Result<(), wshub::Error> {
    let mut config = Config::default();
    config.bind = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into())
        .parse()
        .expect("an address like 127.0.0.1:9000");
    let hub = wshub::serve(config)?;
    println!("live page: {}/  (join room `ticks`)", hub.http_url());
    println!("websocket: {}?rooms=ticks", hub.ws_url());

    smol::block_on(async {
        hub.set_health("ticker", Status::Ok, Some("ticking"))
            .await?;
        for n in 1.. {
            smol::Timer::after(Duration::from_secs(1)).await;
            let sent = hub
                .publish(Publish::to_room("ticks", "tick", json!({"n": n})))
                .await?;
            println!(
                "tick {n}: seq {:?}, {} recipients",
                sent.seq, sent.recipients
            );
        }
        Ok(())
    })
}
