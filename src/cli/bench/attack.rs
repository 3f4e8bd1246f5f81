//! `wshub bench --attack KIND`: one hostile peer against a hub, measured
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

use super::attackers::{self, Ctx, Work};
use super::blocking;
use super::procfs;
use super::target::{self, SPARE_FILES, Start, TargetInfo};
use super::trim::{self, MallocProbe};
use super::watch::{Peaks, Phase, Probe, ProbeReport, Sampler};
use crate::config::parse_duration;

/// How often the sampler reads the hub.
const SAMPLE_EVERY: Duration = Duration::from_millis(10);
/// How often the honest client pings.
const PROBE_EVERY: Duration = Duration::from_millis(20);
/// The honest client's quiet time before the attack.
const QUIET: Duration = Duration::from_secs(1);
/// The honest client's p99 round trip must stay under this during an attack.
const PROBE_P99_BOUND_MS: f64 = 100.0;
/// No honest round trip, during the attack or after it, may take longer.
const PROBE_MAX_BOUND_MS: f64 = 1000.0;
/// The history bound of a hub not told otherwise (PROTOCOL.md section 5).
const DEFAULT_MAX_HISTORY_BYTES: u64 = 64 << 20;

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
struct Shape {
    kind: Kind,
    time_s: f64,
    rss_cap_mib: u64,
    settle_s: f64,
    connections: usize,
    requests: usize,
    rooms: usize,
    events: usize,
    event_bytes: usize,
    chunk: usize,
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

/// Everything one attack run measured.
#[derive(Debug, Serialize)]
struct AttackReport {
    attack: Kind,
    shape: Shape,
    target: TargetInfo,
    /// `--hub-arg` flags this hub does not have, left out.
    ignored_hub_args: Vec<String>,
    seconds: f64,
    rss_kib: Triple,
    fds: Triple,
    /// Seconds after the attacker left until the hub's files were back at
    /// the baseline (plus the honest client); none within the settle.
    fds_back_after_s: Option<f64>,
    /// Open connections by `/health` at the end.
    connections_after: Option<u64>,
    work: Work,
    honest_ping_ms: ProbeReport,
    malloc: Option<MallocProbe>,
    bound: String,
    problems: Vec<String>,
}

/// A reading before the attack, its peak, and after.
#[derive(Debug, Clone, Copy, Serialize)]
struct Triple {
    before: u64,
    peak: u64,
    after: u64,
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
    let fds_before = settled_fds(pid, None, Duration::from_secs(2));
    let rss_before = procfs::rss_kib(pid).unwrap_or(0);
    let probe = Probe::start(addr, PROBE_EVERY)?;
    std::thread::sleep(QUIET);
    let sampler = Sampler::start(pid, shape.rss_cap_mib << 10, SAMPLE_EVERY)
        .map_err(|e| format!("cannot start the sampler: {e}"))?;
    probe.set_phase(Phase::Attack);
    eprintln!(
        "bench: attack {} for up to {} s",
        name(shape.kind),
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
    let back = wait_fds(pid, fds_before + 1, settle).map(|_| left.elapsed().as_secs_f64());
    if let Some(rest) = settle.checked_sub(left.elapsed()) {
        std::thread::sleep(rest);
    }
    let rss_after = procfs::rss_kib(pid).unwrap_or(0);
    let peaks: Peaks = sampler.stop();
    let honest = probe.stop();
    let fds_after = settled_fds(pid, Some(fds_before), Duration::from_secs(2));
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
    let (bound, problems) = verdict(&report, max_history_bytes(hub_args));
    report.bound = bound;
    report.problems = problems;
    Ok(report)
}

/// The hub's open files once they stop changing (or equal `want`), read
/// for at most `limit`; `/health` and closing sockets take a moment.
fn settled_fds(pid: u32, want: Option<u64>, limit: Duration) -> u64 {
    let until = Instant::now() + limit;
    let mut last = procfs::open_fds(pid).unwrap_or(0);
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let now = procfs::open_fds(pid).unwrap_or(0);
        if want.map_or(now == last, |w| now == w) || Instant::now() >= until {
            return now;
        }
        last = now;
    }
}

/// Waits up to `limit` for the hub's open files to be at most `want`.
fn wait_fds(pid: u32, want: u64, limit: Duration) -> Option<()> {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if procfs::open_fds(pid).is_some_and(|n| n <= want) {
            return Some(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// The `--max-history-bytes` given to the hub, else the default.
fn max_history_bytes(hub_args: &[String]) -> u64 {
    let mut args = hub_args.iter();
    while let Some(arg) = args.next() {
        let value = match arg.strip_prefix("--max-history-bytes") {
            Some(rest) if rest.starts_with('=') => Some(rest[1..].to_string()),
            Some("") => args.next().cloned(),
            _ => None,
        };
        if let Some(n) = value.and_then(|v| v.parse().ok()) {
            return n;
        }
    }
    DEFAULT_MAX_HISTORY_BYTES
}

/// The bound an attack must keep, in words, and how this run broke it.
fn verdict(r: &AttackReport, max_history: u64) -> (String, Vec<String>) {
    let mib = |kib: u64| kib as f64 / 1024.0;
    let growth = mib(r.rss_kib.peak.saturating_sub(r.rss_kib.before));
    let growth_bound = match r.attack {
        Kind::HistoryFlood => max_history as f64 * 1.5 / f64::from(1 << 20) + 16.0,
        _ => 64.0,
    };
    let mut bound = format!(
        "peak RSS within {growth_bound:.0} MiB of the start, files back to {} after, \
         honest ping p99 under {PROBE_P99_BOUND_MS} ms during the attack and none over \
         {PROBE_MAX_BOUND_MS} ms during or after",
        r.fds.before
    );
    let mut problems = Vec::new();
    if growth > growth_bound {
        problems.push(format!("peak RSS grew {growth:.1} MiB"));
    }
    if r.fds.after != r.fds.before {
        problems.push(format!(
            "{} files open after, {} before",
            r.fds.after, r.fds.before
        ));
    }
    if r.honest_ping_ms.attack.p99_ms > PROBE_P99_BOUND_MS {
        problems.push(format!(
            "honest ping p99 {} ms during the attack",
            r.honest_ping_ms.attack.p99_ms
        ));
    }
    let slowest = r.honest_ping_ms.attack.max_ms.max(r.honest_ping_ms.after.max_ms);
    if slowest > PROBE_MAX_BOUND_MS {
        problems.push(format!("an honest ping took {slowest} ms"));
    }
    if let Some(e) = &r.honest_ping_ms.error {
        problems.push(format!("the honest client failed: {e}"));
    }
    if r.attack == Kind::Pipeline {
        bound.push_str(", no pipelining connection still open when the hold ended");
        let held = r
            .work
            .hub_fds_before_leaving
            .map(|n| n.saturating_sub(r.fds.before + 1));
        if let Some(held) = held.filter(|n| *n > 0) {
            problems.push(format!(
                "the hub held {held} of {} connections after {} s",
                r.work.connections, r.shape.time_s
            ));
        }
    }
    if r.attack == Kind::ManyRooms {
        bound.push_str(", the last subscribe answered within 3× the first + 5 ms");
        if let Some((first, last)) = r.work.first_last_reply_ms
            && last > 3.0 * first + 5.0
        {
            problems.push(format!(
                "subscribe replies slowed from {first} ms to {last} ms as rooms were added"
            ));
        }
    }
    (bound, problems)
}

impl AttackReport {
    /// The human-readable form.
    fn table(&self) -> String {
        use std::fmt::Write as _;
        let mib = |kib: u64| kib as f64 / 1024.0;
        let mut out = String::new();
        let w = &self.work;
        let _ = writeln!(
            out,
            "attack {}: {:.1} s, stopped by {}; {} sent ({:.1} MiB), {} answered, {} connection(s)",
            name(self.attack),
            self.seconds,
            name(w.stopped_by),
            w.messages_sent,
            w.bytes_sent as f64 / f64::from(1 << 20),
            w.answered,
            w.connections
        );
        if let Some(action) = &w.hub_action {
            let _ = writeln!(
                out,
                "  the hub acted after {:.2} s: {action}",
                w.hub_acted_after_s.unwrap_or(0.0)
            );
        }
        if let Some(rooms) = w.rooms_subscribed {
            let _ = writeln!(out, "  rooms subscribed: {rooms}");
        }
        if let Some(r) = &w.reply_ms {
            let _ = write!(
                out,
                "  reply p50 / p99 / max: {} / {} / {} ms",
                r.p50_ms, r.p99_ms, r.max_ms
            );
            if let Some((first, last)) = w.first_last_reply_ms {
                let _ = write!(out, " (first {first} ms, last {last} ms)");
            }
            out.push('\n');
        }
        let r = &self.rss_kib;
        let _ = writeln!(
            out,
            "  hub RSS before / peak / after: {:.1} / {:.1} / {:.1} MiB",
            mib(r.before),
            mib(r.peak),
            mib(r.after)
        );
        let f = &self.fds;
        let _ = writeln!(
            out,
            "  hub files before / peak / before leaving / after: {} / {} / {} / {}{}",
            f.before,
            f.peak,
            w.hub_fds_before_leaving
                .map_or("?".into(), |n| n.to_string()),
            f.after,
            self.connections_after
                .map_or(String::new(), |n| format!("; {n} connections by /health"))
        );
        let p = &self.honest_ping_ms;
        let _ = writeln!(
            out,
            "  honest ping p50 / p99 / max ms (pings): quiet {} / {} / {} ({}), attack {} / {} / {} ({}), \
             after {} / {} / {} ({}){}",
            p.quiet.p50_ms,
            p.quiet.p99_ms,
            p.quiet.max_ms,
            p.quiet.count,
            p.attack.p50_ms,
            p.attack.p99_ms,
            p.attack.max_ms,
            p.attack.count,
            p.after.p50_ms,
            p.after.p99_ms,
            p.after.max_ms,
            p.after.count,
            if p.timeouts > 0 {
                format!(" ({} over 5 s)", p.timeouts)
            } else {
                String::new()
            }
        );
        if let Some(m) = &self.malloc {
            let _ = writeln!(
                out,
                "  malloc: {} MiB in use, {} MiB held; malloc_trim(0) gave back {} MiB of RSS{}",
                opt_mib(m.in_use_bytes.map(|b| b >> 10)),
                opt_mib(m.system_bytes.map(|b| b >> 10)),
                opt_mib(m.returned_kib),
                m.error
                    .as_ref()
                    .map_or(String::new(), |e| format!(" ({e})"))
            );
        }
        if !self.ignored_hub_args.is_empty() {
            let _ = writeln!(
                out,
                "  left out (unknown to this hub): {}",
                self.ignored_hub_args.join(" ")
            );
        }
        let verdict = if self.problems.is_empty() {
            "PASS".to_string()
        } else {
            format!("FAIL: {}", self.problems.join("; "))
        };
        let _ = writeln!(out, "  bound: {}: {verdict}", self.bound);
        out
    }
}

/// How a value serialises (the kebab or snake name of an enum).
fn name(value: impl Serialize) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

fn opt_mib(kib: Option<u64>) -> String {
    kib.map_or("?".into(), |k| format!("{:.1}", k as f64 / 1024.0))
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_history_bound_follows_the_hub_flag() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(max_history_bytes(&args(&[])), 64 << 20);
        assert_eq!(
            max_history_bytes(&args(&["--send-queue=4", "--max-history-bytes=8388608"])),
            8 << 20
        );
        assert_eq!(
            max_history_bytes(&args(&["--max-history-bytes", "1048576"])),
            1 << 20
        );
    }
}
