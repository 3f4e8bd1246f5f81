//! `wshub listen` and `wshub publish`: a command-line client that prints a
//! hub's events as JSON lines (reconnecting and resuming by itself), and one
//! that publishes an event over HTTP or WebSocket.

use std::io::Read;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use serde_json::{Value, json};

use wshub::client::{Client, Subscriber, Update, http};
use wshub::log::{as_json, opt_json};

/// How long `publish` waits for the hub's reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Args)]
pub(crate) struct ListenArgs {
    /// The hub's WebSocket URL [default: ws://127.0.0.1:8000/ws]
    #[arg(long, default_value = "ws://127.0.0.1:8000/ws")]
    url: String,
    /// Rooms to join, comma-separated
    #[arg(long, value_name = "LIST", default_value = "")]
    rooms: String,
    /// JWT for hubs with a jwt_secret (sent as ?token=)
    #[arg(long)]
    token: Option<String>,
    /// Exit after printing this many events
    #[arg(long, value_name = "N")]
    max_events: Option<u64>,
}

#[derive(Debug, Args)]
pub(crate) struct PublishArgs {
    /// The hub: http://host:port publishes with POST /api/events,
    /// ws://host:port/ws with a `publish` message [default: http://127.0.0.1:8000]
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    url: String,
    /// Target room (required over WebSocket)
    #[arg(long)]
    room: Option<String>,
    /// Target user (HTTP only; instead of a room)
    #[arg(long)]
    user: Option<String>,
    /// The event type
    #[arg(long = "type", value_name = "TYPE")]
    kind: String,
    /// The payload, a JSON object; `-` or absent reads it from stdin
    #[arg(long)]
    payload: Option<String>,
    /// Bearer credential: the admin key or a JWT
    #[arg(long)]
    token: Option<String>,
}

/// Prints events until interrupted, or until `--max-events`.
pub(crate) fn listen(args: ListenArgs) -> ExitCode {
    let rooms: Vec<&str> = args
        .rooms
        .split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .collect();
    let url = match &args.token {
        Some(token) => format!(
            "{}{}token={token}",
            args.url,
            if args.url.contains('?') { '&' } else { '?' }
        ),
        None => args.url.clone(),
    };
    let mut subscriber = Subscriber::new(&url, &rooms);
    let mut printed = 0u64;
    smol::block_on(async {
        while let Some(update) = subscriber.next().await {
            match update {
                Update::Connected { attempt } => tracing::info!(
                    url = as_json(&args.url),
                    attempt = as_json(attempt),
                    "connected"
                ),
                Update::Subscribed(message) => {
                    let payload = &message["payload"];
                    tracing::info!(
                        rooms = as_json(&payload["rooms"]),
                        recovered = as_json(&payload["recovered"]),
                        positions = as_json(&payload["positions"]),
                        "subscribed"
                    );
                }
                Update::HubError(message) => {
                    tracing::warn!(error = as_json(&message["payload"]), "hub error")
                }
                Update::Disconnected {
                    close_code,
                    error: None,
                } => tracing::warn!(close_code = opt_json(close_code), "disconnected"),
                Update::Disconnected {
                    error: Some(error), ..
                } => tracing::warn!(error = as_json(error), "cannot connect"),
                Update::Reconnecting { delay } => {
                    tracing::info!(in_ms = as_json(delay.as_millis() as u64), "reconnecting")
                }
                Update::Closed(code) => {
                    tracing::error!(close_code = as_json(code), "closed for good");
                    return ExitCode::FAILURE;
                }
                Update::Event(event) => {
                    println!("{event}");
                    printed += 1;
                    if args.max_events.is_some_and(|max| printed >= max) {
                        return ExitCode::SUCCESS;
                    }
                }
                // Updates a later version adds are not this command's.
                _ => {}
            }
        }
        ExitCode::SUCCESS
    })
}

/// Publishes one event and prints the hub's reply.
pub(crate) fn publish(args: PublishArgs) -> ExitCode {
    let payload_text = match args.payload.as_deref() {
        Some(text) if text != "-" => text.to_string(),
        _ => {
            let mut text = String::new();
            if std::io::stdin().read_to_string(&mut text).is_err() {
                tracing::error!("cannot read the payload from stdin");
                return ExitCode::from(2);
            }
            text
        }
    };
    let payload: Value = match serde_json::from_str(&payload_text) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            tracing::error!("the payload must be a JSON object");
            return ExitCode::from(2);
        }
    };
    smol::block_on(async {
        if args.url.starts_with("ws://") {
            publish_ws(&args, payload).await
        } else {
            publish_http(&args, payload).await
        }
    })
}

async fn publish_http(args: &PublishArgs, payload: Value) -> ExitCode {
    let Some(rest) = args.url.strip_prefix("http://") else {
        tracing::error!("--url must start with http:// or ws://");
        return ExitCode::from(2);
    };
    let (authority, base) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
    let addrs = smol::net::resolve(authority).await.unwrap_or_default();
    if addrs.is_empty() {
        tracing::error!(url = as_json(&args.url), "cannot resolve the hub's address");
        return ExitCode::from(2);
    }
    let mut body = json!({"type": args.kind, "payload": payload});
    if let Some(room) = &args.room {
        body["room"] = json!(room);
    }
    if let Some(user) = &args.user {
        body["user"] = json!(user);
    }
    let auth = args.token.as_ref().map(|t| format!("Bearer {t}"));
    // The name in the URL, not the address it resolved to: a hub whose
    // allowed_hosts lists names refuses an IP literal.
    let mut headers = vec![("Content-Type", "application/json"), ("Host", authority)];
    if let Some(auth) = &auth {
        headers.push(("Authorization", auth.as_str()));
    }
    let path = format!("/{}/api/events", base.trim_matches('/')).replace("//", "/");
    // `localhost` may resolve to ::1 and 127.0.0.1: the first that answers.
    let mut outcome = None;
    for addr in addrs {
        outcome = Some(http(addr, "POST", &path, &headers, Some(&body.to_string())).await);
        if matches!(outcome, Some(Ok(_))) {
            break;
        }
    }
    let reply = match outcome {
        Some(Ok(reply)) => reply,
        Some(Err(e)) => {
            tracing::error!(error = as_json(e.to_string()), "cannot publish");
            return ExitCode::FAILURE;
        }
        None => return ExitCode::FAILURE,
    };
    if reply.status == 202 {
        println!("{}", reply.text());
        ExitCode::SUCCESS
    } else {
        eprintln!("{}", reply.text());
        ExitCode::FAILURE
    }
}

async fn publish_ws(args: &PublishArgs, payload: Value) -> ExitCode {
    let Some(room) = &args.room else {
        tracing::error!("--room is required to publish over WebSocket");
        return ExitCode::from(2);
    };
    let url = match &args.token {
        Some(token) => format!("{}?token={token}", args.url),
        None => args.url.clone(),
    };
    let mut client = match Client::connect(&url).await {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(error = as_json(e.to_string()), "cannot connect");
            return ExitCode::FAILURE;
        }
    };
    let message = json!({"type": "publish", "room": room, "event": args.kind, "payload": payload});
    match client.request(message, REPLY_TIMEOUT, drop).await {
        Ok(reply) => {
            client.close(REPLY_TIMEOUT).await;
            if reply["type"] == "published" {
                println!("{reply}");
                ExitCode::SUCCESS
            } else {
                eprintln!("{reply}");
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            tracing::error!(error = as_json(e.to_string()), "no reply to the publish");
            ExitCode::FAILURE
        }
    }
}
