//! `wshub-bench`: drives a hub with many subscribers and measures it —
//! connect rate, publish-to-last-subscriber time, per-delivery latency,
//! flood throughput, lost or duplicated deliveries, the hub's memory per
//! connection and its CPU per delivery. BENCHMARKS.md shows how to read it.
//!
//! Layout: [`wire`] (the bytes: upgrade, frames, publish requests, the
//! event scan), [`client`] (a lean raw WebSocket client), [`subscribers`]
//! (subscriber threads and their connects), [`steady`] (their reading once
//! connected, on `mio`), [`publisher`] (open-loop and flood publishing),
//! [`record`] (what both sides write down), [`target`] (the server under
//! test and the file limits), [`procfs`] (memory and CPU from `/proc`),
//! [`phases`] (one run, phase by phase), [`report`] (the table and JSON)
//! and [`stats`] (percentiles).
//!
//! Two other runs share the client and `/proc` parts (docs/limits.md):
//! `--attack` ([`attack`], with [`attackers`], [`bounds`] for the verdict
//! and report, [`watch`] for the RSS sampler and the honest client,
//! [`blocking`] for one-thread clients)
//! and `--soak` ([`soak`], driving a [`crowd`]); [`trim`] measures what
//! glibc keeps of the memory the hub freed.

mod attack;
mod attackers;
mod blocking;
mod bounds;
mod client;
mod crowd;
mod phases;
mod procfs;
mod publisher;
mod record;
mod report;
mod soak;
mod stats;
mod steady;
mod subscribers;
mod target;
mod trim;
mod watch;
mod wire;

use std::net::{IpAddr, Ipv4Addr};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser};

use publisher::Via;
use target::Start;
use wire::Transport;
use wshub::config::parse_duration;

/// Exit status for an argument that cannot work (the run did not start).
const EXIT_USAGE: u8 = 2;
/// Subscribers per source address when `--source-ips` is not given.
const SUBSCRIBERS_PER_SOURCE: usize = 2_000;

/// Measure a wshub hub: subscribers, publish latency, flood rate, memory.
///
/// Without `--url` or `--hub-cmd` the bench starts `wshub serve` (the
/// binary in `$WSHUB_BIN`, or the `wshub` beside this one) as a child
/// process on an ephemeral port, so the hub's memory and CPU are its own
/// and each process has the whole file limit.
#[derive(Debug, Parser)]
#[command(name = "wshub-bench", version)]
pub(crate) struct BenchArgs {
    #[command(flatten)]
    options: Box<Options>,
}

/// The flags of `wshub-bench`.
#[derive(Debug, Args)]
struct Options {
    /// A running hub's base URL, e.g. http://127.0.0.1:8000; several,
    /// comma-separated, spread the subscribers and the publishers over a
    /// cluster's hubs (round-robin)
    #[arg(long, conflicts_with = "hub_cmd")]
    url: Option<String>,
    /// The pid of the hub at --url, for its memory and CPU figures; with
    /// several URLs, one per URL, comma-separated (the figures are summed)
    #[arg(long, value_name = "PID", requires = "url", value_delimiter = ',')]
    hub_pid: Vec<u32>,
    /// Start this many wshub hubs (each with the --hub-arg flags and its own
    /// node_id) and spread subscribers and publishers over them; give them
    /// a cluster with --hub-arg=--redis-url=redis://…
    #[arg(long, value_name = "N", default_value_t = 1, conflicts_with_all = ["url", "hub_cmd"])]
    hubs: usize,
    /// The pid of the Redis the hubs share, for its CPU per delivery
    #[arg(long, value_name = "PID")]
    redis_pid: Option<u32>,
    /// Start this command instead (a peer, the floor); ` --bind 127.0.0.1:0` is appended
    #[arg(long, value_name = "COMMAND")]
    hub_cmd: Option<String>,
    /// A flag for the wshub the bench starts, e.g. --hub-arg=--send-queue=4096 (repeatable)
    #[arg(long = "hub-arg", value_name = "FLAG", allow_hyphen_values = true)]
    hub_args: Vec<String>,
    /// Give the wshub the bench starts this `store` directory (a fresh one per run is best)
    #[arg(long, value_name = "DIR", conflicts_with_all = ["url", "hub_cmd"])]
    store: Option<std::path::PathBuf>,
    /// Subscriber connections, all in one room; 0 with --flood measures the
    /// publish path alone [default: 1000; 300 with --smoke]
    #[arg(long, short = 'n', value_name = "N")]
    subscribers: Option<usize>,
    /// Subscriber threads in the bench [default: 1]
    #[arg(long, value_name = "N", default_value_t = 1)]
    threads: usize,
    /// Loopback source addresses (127.1.x.y) to spread subscribers over [default: one per 2000]
    #[arg(long, value_name = "N")]
    source_ips: Option<usize>,
    /// Connections being opened at once, per thread
    #[arg(long, value_name = "N", default_value_t = 256)]
    connect_concurrency: usize,
    /// Time allowed from connect to welcome, per connection
    #[arg(long, value_name = "DURATION", default_value = "10s")]
    connect_timeout: String,
    /// Publishes in the latency phase [default: 100; 50 with --smoke]
    #[arg(long, value_name = "N")]
    publishes: Option<u64>,
    /// Publishes per second in the latency phase, held whatever the replies do [default: 20]
    #[arg(long, value_name = "PER_S")]
    rate: Option<f64>,
    /// Payload size in bytes (about; the envelope adds ~200)
    #[arg(long, value_name = "BYTES", default_value_t = 128)]
    payload_bytes: usize,
    /// Publisher connections, each with one publish in flight
    #[arg(long, value_name = "N", default_value_t = 4)]
    publishers: usize,
    /// How subscribers receive: websocket (GET /ws) or sse (GET /sse, wshub only)
    #[arg(long, value_enum, default_value_t = Transport::Websocket)]
    transport: Transport,
    /// Rooms each subscriber also joins, where nothing is published (an SSE
    /// stream of several rooms writes an `id:` line of its own per event)
    #[arg(long, value_name = "N", default_value_t = 0)]
    quiet_rooms: usize,
    /// How to publish: http (POST /api/events) or ws (`publish` messages, wshub only)
    #[arg(long, value_enum, default_value_t = Via::Http)]
    publish_via: Via,
    /// Bearer key for publishing, when the hub has an admin_key
    #[arg(long, value_name = "KEY")]
    admin_key: Option<String>,
    /// The room (default: a fresh `bench-…` name, so seqs start at 1)
    #[arg(long)]
    room: Option<String>,
    /// Also run the flood phase: publish as fast as possible, count deliveries
    #[arg(long)]
    flood: bool,
    /// Flood phase length at most
    #[arg(long, value_name = "DURATION", default_value = "10s")]
    flood_time: String,
    /// Flood publishes at most [default: 100000]
    #[arg(long, value_name = "N")]
    flood_publishes: Option<u64>,
    /// Time allowed after the last publish for deliveries to arrive
    #[arg(long, value_name = "DURATION", default_value = "15s")]
    drain_timeout: String,
    /// Pause after connecting, before memory is read
    #[arg(long, value_name = "DURATION", default_value = "1s")]
    settle: String,
    /// Quick check for CI: 300 subscribers, 50 publishes, a 2 s flood; fails on any loss
    #[arg(long)]
    smoke: bool,
    /// Print the report as JSON instead of a table
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    attack: attack::AttackArgs,
    #[command(flatten)]
    soak: soak::SoakArgs,
}

/// How to reach the server, from the flags; `hub_args` go to a wshub the
/// bench starts. With several (a cluster) the first.
fn start_of(options: &Options, hub_args: Vec<String>) -> Start {
    starts_of(options, hub_args).swap_remove(0)
}

/// Every hub the run measures: the URLs given, or the wshubs to start.
fn starts_of(options: &Options, hub_args: Vec<String>) -> Vec<Start> {
    match (&options.url, &options.hub_cmd) {
        (Some(urls), _) => urls
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .enumerate()
            .map(|(i, url)| Start::Url {
                url: url.to_string(),
                pid: options.hub_pid.get(i).copied(),
            })
            .collect(),
        (None, Some(command)) => vec![Start::Command(command.clone())],
        (None, None) if options.hubs > 1 => (0..options.hubs)
            .map(|i| {
                let mut args = hub_args.clone();
                args.push(format!("--node-id=bench-hub-{i}"));
                Start::Wshub { args }
            })
            .collect(),
        (None, None) => vec![Start::Wshub { args: hub_args }],
    }
}

/// A run's settings with every default applied and checked.
#[derive(Debug)]
pub(crate) struct Plan {
    /// One hub, or the hubs of a cluster.
    pub starts: Vec<Start>,
    pub redis_pid: Option<u32>,
    pub subscribers: usize,
    pub threads: usize,
    pub sources: Vec<IpAddr>,
    pub connect_concurrency: usize,
    pub connect_timeout: Duration,
    pub publishes: u64,
    pub rate: f64,
    pub payload_bytes: usize,
    pub publishers: usize,
    pub publish_via: Via,
    pub transport: Transport,
    pub quiet_rooms: usize,
    pub admin_key: Option<String>,
    pub room: String,
    pub flood: Option<Flood>,
    pub drain_timeout: Duration,
    pub settle: Duration,
    pub json: bool,
}

/// The flood phase's bounds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Flood {
    pub time: Duration,
    pub publishes: u64,
}

impl Plan {
    fn from_args(args: BenchArgs) -> Result<Self, String> {
        let args = *args.options;
        let duration =
            |name: &str, text: &str| parse_duration(text).map_err(|e| format!("--{name}: {e}"));
        let smoke = args.smoke;
        let subscribers = args.subscribers.unwrap_or(if smoke { 300 } else { 1000 });
        let publishes = args.publishes.unwrap_or(if smoke { 50 } else { 100 });
        let rate = args.rate.unwrap_or(if smoke { 50.0 } else { 20.0 });
        if publishes == 0 {
            return Err("--publishes must be at least 1".into());
        }
        if subscribers == 0 && !(args.flood || smoke) {
            // Nothing would be measured but the publishes' replies.
            return Err("--subscribers 0 needs --flood (publish throughput alone)".into());
        }
        if !(rate.is_finite() && rate > 0.0) {
            return Err("--rate must be a positive number".into());
        }
        if !room_ok(args.room.as_deref().unwrap_or("x")) {
            return Err("--room must be 1 to 128 of A-Z a-z 0-9 _ . : -".into());
        }
        let flood = (args.flood || smoke).then(|| -> Result<Flood, String> {
            Ok(Flood {
                time: if smoke && args.flood_time == "10s" {
                    Duration::from_secs(2)
                } else {
                    duration("flood-time", &args.flood_time)?
                },
                publishes: args.flood_publishes.unwrap_or(100_000).max(1),
            })
        });
        let mut hub_args = args.hub_args.clone();
        if let Some(store) = &args.store {
            hub_args.push(format!("--store={}", store.display()));
        }
        if args.publish_via == Via::Ws && !hub_args.iter().any(|a| a.contains("rate-limit")) {
            // One publisher connection sends far above the default 100/s.
            hub_args.push("--rate-limit-per-s=0".into());
        }
        let starts = starts_of(&args, hub_args);
        if starts.is_empty() {
            return Err("--url names no hub".into());
        }
        let source_count = args
            .source_ips
            .unwrap_or(subscribers.div_ceil(SUBSCRIBERS_PER_SOURCE))
            .clamp(1, 250 * 250);
        Ok(Self {
            starts,
            redis_pid: args.redis_pid,
            subscribers,
            threads: args.threads.max(1),
            sources: (0..source_count).map(source_address).collect(),
            connect_concurrency: args.connect_concurrency.max(1),
            connect_timeout: duration("connect-timeout", &args.connect_timeout)?,
            publishes,
            rate,
            payload_bytes: args.payload_bytes,
            publishers: args.publishers.max(1),
            publish_via: args.publish_via,
            transport: args.transport,
            quiet_rooms: args.quiet_rooms,
            admin_key: args.admin_key,
            room: args
                .room
                .unwrap_or_else(|| format!("bench-{:08x}", fastrand::u32(..))),
            flood: flood.transpose()?,
            drain_timeout: duration("drain-timeout", &args.drain_timeout)?,
            settle: duration("settle", &args.settle)?,
            json: args.json,
        })
    }
}

/// The `i`-th source address: 127.1.0.1, 127.1.0.2, ... (never 127.0.0.1,
/// which the publisher uses).
fn source_address(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 1, (i / 250) as u8, (i % 250 + 1) as u8))
}

fn room_ok(room: &str) -> bool {
    wshub::protocol::is_valid_room(room)
}

fn main() -> ExitCode {
    run(BenchArgs::parse())
}

/// Runs a benchmark and prints its report; fails on any lost or duplicated
/// delivery, failed connect or failed publish.
fn run(args: BenchArgs) -> ExitCode {
    let options = &args.options;
    if options.soak.soak {
        let start = start_of(options, soak::hub_args(&options.hub_args));
        return soak::run(
            &options.soak,
            &start,
            options.attack.malloc_probe,
            options.admin_key.as_deref(),
            options.json,
        );
    }
    if options.attack.attack.is_some() {
        let start = start_of(options, options.hub_args.clone());
        return attack::run(&options.attack, &start, &options.hub_args, options.json);
    }
    let plan = match Plan::from_args(args) {
        Ok(plan) => plan,
        Err(e) => {
            eprintln!("bench: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let report = match phases::execute(&plan) {
        Ok(report) => report,
        Err(phases::Failure::Usage(e)) => {
            eprintln!("bench: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
        Err(phases::Failure::Run(e)) => {
            eprintln!("bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    if plan.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        print!("{}", report.table());
    }
    if report.passed() {
        ExitCode::SUCCESS
    } else {
        eprintln!("bench: FAILED: {}", report.problems().join("; "));
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(args: &[&str]) -> Result<Plan, String> {
        let args = BenchArgs::try_parse_from(std::iter::once("bench").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        Plan::from_args(args)
    }

    #[test]
    fn smoke_is_small_and_floods() {
        let p = plan(&["--smoke"]).unwrap();
        assert_eq!((p.subscribers, p.publishes), (300, 50));
        assert_eq!(p.flood.unwrap().time, Duration::from_secs(2));
        assert!(matches!(p.starts[..], [Start::Wshub { .. }]));
        assert!(p.room.starts_with("bench-"));
        assert_eq!(p.transport, Transport::Websocket);
        assert_eq!(
            plan(&["--transport", "sse"]).unwrap().transport,
            Transport::Sse
        );
    }

    #[test]
    fn sources_spread_over_loopback_without_the_publishers_address() {
        let p = plan(&["-n", "10000"]).unwrap();
        assert_eq!(p.sources.len(), 5);
        assert!(p.sources.iter().all(|ip| ip.is_loopback()));
        assert!(!p.sources.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert_eq!(source_address(250).to_string(), "127.1.1.1");
    }

    #[test]
    fn bad_arguments_are_refused() {
        assert!(plan(&["-n", "0"]).is_err());
        assert!(
            plan(&["-n", "0", "--flood"]).is_ok(),
            "publish throughput alone"
        );
        assert!(plan(&["--rate", "0"]).is_err());
        assert!(plan(&["--room", "a b"]).is_err());
        assert!(plan(&["--drain-timeout", "soon"]).is_err());
        assert!(plan(&["--hub-pid", "1"]).is_err(), "needs --url");
        let p = plan(&["--publish-via", "ws"]).unwrap();
        let [Start::Wshub { args }] = &p.starts[..] else {
            panic!()
        };
        assert_eq!(args, &["--rate-limit-per-s=0"]);
    }

    #[test]
    fn a_cluster_spreads_over_several_hubs() {
        let p = plan(&[
            "--url",
            "http://127.0.0.1:1,http://127.0.0.1:2",
            "--hub-pid",
            "7,8",
        ])
        .unwrap();
        assert_eq!(p.starts.len(), 2);
        assert!(matches!(p.starts[1], Start::Url { pid: Some(8), .. }));
        let p = plan(&["--hubs", "3", "--hub-arg=--redis-url=redis://127.0.0.1:1"]).unwrap();
        assert_eq!(p.starts.len(), 3);
        let Start::Wshub { args } = &p.starts[2] else {
            panic!()
        };
        assert!(args.contains(&"--node-id=bench-hub-2".to_string()));
        assert!(plan(&["--hubs", "2", "--url", "http://127.0.0.1:1"]).is_err());
    }
}
