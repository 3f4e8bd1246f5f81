//! `wshub-bench --attack KIND`: one hostile peer against a hub, measured
//! from outside (docs/limits.md). The run finds or starts the hub, reads
//! its RSS and open files at rest, connects an honest client that times
//! `ping` → `pong` throughout ([`Probe`]), lets one attacker from
//! [`attackers`] work while a sampler keeps the peaks (stopping it early
//! if the hub's RSS passes the cap), waits a bounded settle after the
//! attacker left, reads RSS and files again, and prints the figures with
//! a verdict against the bound the hub should keep.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;

use super::attackers::{self, Ctx};
use super::blocking;
use super::bounds::{self, AttackReport, Triple};
use super::procfs;
use super::target::{self, SPARE_FILES, Start};
use super::trim;
use super::watch::{self, Peaks, Phase, Probe, Sampler};
use wshub::config::parse_duration;

/// How often the sampler reads the hub.
const SAMPLE_EVERY: Duration = Duration::from_millis(10);
/// How often the honest client pings.
const PROBE_EVERY: Duration = Duration::from_millis(20);
/// The honest client's quiet time before the attack.
const QUIET: Duration = Duration::from_secs(1);

/// The attacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Kind {
    /// One client writing empty Pings as fast as it can, never reading.
    PingFlood,
    /// Connections writing pipelined `GET /` requests, never reading.
    Pipeline,
    /// Large events published to many rooms: history only.
    HistoryFlood,
    /// One client subscribing to very many rooms, names descending.
    ManyRooms,
}

/// The flags of `--attack`.
#[derive(Debug, Args)]
pub(crate) struct AttackArgs {
    /// Attack the hub instead: ping-flood, pipeline, history-flood or many-rooms (docs/limits.md)
    #[arg(long, value_enum, value_name = "KIND", conflicts_with = "soak")]
    pub attack: Option<Kind>,
    /// How long the attacker works at most [default: 10s; 15s for pipeline; 20s for many-rooms]
    #[arg(long, value_name = "DURATION")]
    attack_time: Option<String>,
    /// Stop the attack once the hub's RSS passes this many MiB
    #[arg(long, value_name = "MIB", default_value_t = 2048)]
    rss_cap_mib: u64,
    /// Time the hub has after the attacker left before its memory is read
    #[arg(long, value_name = "DURATION", default_value = "5s")]
    attack_settle: String,
    /// pipeline: connections [default: 200]
    #[arg(long, value_name = "N")]
    attack_connections: Option<usize>,
    /// pipeline: requests per connection [default: 400]
    #[arg(long, value_name = "N")]
    attack_requests: Option<usize>,
    /// history-flood: rooms [default: 30]; many-rooms: rooms to subscribe [default: 100000]
    #[arg(long, value_name = "N")]
    attack_rooms: Option<usize>,
    /// history-flood: events per room [default: 100]
    #[arg(long, value_name = "N")]
    attack_events: Option<usize>,
    /// history-flood: payload bytes per event [default: 65000]
    #[arg(long, value_name = "BYTES")]
    attack_event_bytes: Option<usize>,
    /// many-rooms: rooms per subscribe message [default: 1000]
    #[arg(long, value_name = "N")]
    attack_chunk: Option<usize>,
    /// Afterwards, attach gdb to the hub and measure what malloc_trim(0) gives back
    #[arg(long)]
    pub malloc_probe: bool,
}

/// An attack's settings with the defaults for its kind applied.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Shape {
    pub kind: Kind,
    pub time_s: f64,
    pub rss_cap_mib: u64,
    pub settle_s: f64,
    pub connections: usize,
    pub requests: usize,
    pub rooms: usize,
    pub events: usize,
    pub event_bytes: usize,
    pub chunk: usize,
}

impl Shape {
    fn of(kind: Kind, args: &AttackArgs) -> Result<Self, String> {
        let default_time = match kind {
            Kind::Pipeline => "15s",
            Kind::ManyRooms => "20s",
            _ => "10s",
        };
        let time = parse_duration(args.attack_time.as_deref().unwrap_or(default_time))
            .map_err(|e| format!("--attack-time: {e}"))?;
        let settle =
            parse_duration(&args.attack_settle).map_err(|e| format!("--attack-settle: {e}"))?;
        let rooms_default = if kind == Kind::ManyRooms { 100_000 } else { 30 };
        Ok(Self {
            kind,
            time_s: time.as_secs_f64(),
            rss_cap_mib: args.rss_cap_mib.max(1),
            settle_s: settle.as_secs_f64(),
            connections: args.attack_connections.unwrap_or(200).max(1),
            requests: args.attack_requests.unwrap_or(400).max(1),
            rooms: args.attack_rooms.unwrap_or(rooms_default).max(1),
            events: args.attack_events.unwrap_or(100).max(1),
            event_bytes: args.attack_event_bytes.unwrap_or(65_000),
            chunk: args.attack_chunk.unwrap_or(1000).max(1),
        })
    }
}

/// Runs the attack `args` names against the hub `start` describes.
pub(crate) fn run(args: &AttackArgs, start: &Start, hub_args: &[String], json: bool) -> ExitCode {
    let Some(kind) = args.attack else {
        return ExitCode::from(super::EXIT_USAGE);
    };
    let shape = match Shape::of(kind, args) {
        Ok(shape) => shape,
        Err(e) => {
            eprintln!("bench: {e}");
            return ExitCode::from(super::EXIT_USAGE);
        }
    };
    let report = match execute(&shape, start, hub_args, args.malloc_probe) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    if json {
        println!("{}", serde_json::to_string(&report).unwrap_or_default());
    } else {
        print!("{}", report.table());
    }
    if report.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!("bench: FAILED: {}", report.problems.join("; "));
        ExitCode::FAILURE
    }
}

fn execute(
    shape: &Shape,
    start: &Start,
    hub_args: &[String],
    malloc_probe: bool,
) -> Result<AttackReport, String> {
    let files = shape.connections as u64 + SPARE_FILES;
    target::ensure_file_limit(files)?;
    let (target, ignored_hub_args) = target::start_tolerant(start)?;
    let pid = target
        .pid
        .ok_or("an attack needs the hub's pid: give --hub-pid with --url")?;
    let addr = target.addr;
    std::thread::sleep(Duration::from_millis(500));
    let fds_before = watch::settled_fds(pid, None, Duration::from_secs(2));
    let rss_before = procfs::rss_kib(pid).unwrap_or(0);
    let probe = Probe::start(addr, PROBE_EVERY)?;
    std::thread::sleep(QUIET);
    let sampler = Sampler::start(pid, shape.rss_cap_mib << 10, SAMPLE_EVERY)
        .map_err(|e| format!("cannot start the sampler: {e}"))?;
    probe.set_phase(Phase::Attack);
    eprintln!(
        "bench: attack {} for up to {} s",
        bounds::name(shape.kind),
        shape.time_s
    );
    let started = Instant::now();
    let ctx = Ctx {
        addr,
        pid,
        deadline: started + Duration::from_secs_f64(shape.time_s),
        over_cap: sampler.cap_flag(),
    };
    let work = match shape.kind {
        Kind::PingFlood => attackers::ping_flood(&ctx),
        Kind::Pipeline => attackers::pipeline(&ctx, shape.connections, shape.requests),
        Kind::HistoryFlood => {
            attackers::history_flood(&ctx, shape.rooms, shape.events, shape.event_bytes)
        }
        Kind::ManyRooms => attackers::many_rooms(&ctx, shape.rooms, shape.chunk),
    };
    let seconds = started.elapsed().as_secs_f64();
    probe.set_phase(Phase::After);
    let left = Instant::now();
    let settle = Duration::from_secs_f64(shape.settle_s);
    // The honest client still holds one file.
    let back = watch::wait_fds(pid, fds_before + 1, settle).map(|_| left.elapsed().as_secs_f64());
    if let Some(rest) = settle.checked_sub(left.elapsed()) {
        std::thread::sleep(rest);
    }
    let rss_after = procfs::rss_kib(pid).unwrap_or(0);
    let peaks: Peaks = sampler.stop();
    let honest = probe.stop();
    let fds_after = watch::settled_fds(pid, Some(fds_before), Duration::from_secs(2));
    let connections_after = blocking::health_connections(addr);
    let work = work?;
    let malloc =
        malloc_probe.then(|| trim::probe(pid, target.description.log.as_deref().map(Path::new)));
    let mut report = AttackReport {
        attack: shape.kind,
        shape: shape.clone(),
        target: target.description.clone(),
        ignored_hub_args,
        seconds: round3(seconds),
        rss_kib: Triple {
            before: rss_before,
            peak: peaks.rss_kib.max(rss_before),
            after: rss_after,
        },
        fds: Triple {
            before: fds_before,
            peak: peaks.fds.max(fds_before),
            after: fds_after,
        },
        fds_back_after_s: back.map(round3),
        connections_after,
        work,
        honest_ping_ms: honest,
        malloc,
        bound: String::new(),
        problems: Vec::new(),
    };
    let (bound, problems) = bounds::verdict(&report, bounds::max_history_bytes(hub_args));
    report.bound = bound;
    report.problems = problems;
    Ok(report)
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
