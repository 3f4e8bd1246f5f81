//! `wshub-bench --soak`: cycles of a large [`Crowd`] that connects,
//! subscribes, receives and leaves — a third leaving normally (Close
//! 1000), a third as slow consumers the hub must close with 4009, a third
//! going silent with the socket open, as a peer that vanished without a
//! FIN looks to the hub until its heartbeat gives up (4000). After each
//! cycle it prints the hub's RSS, open files and `/health` connections;
//! it passes when the files return exactly to the baseline taken before
//! the first cycle and RSS after every cycle from the third on is within
//! the allowed growth over the second's (docs/limits.md).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;

use super::blocking::{self, Publisher};
use super::crowd::{Crowd, CrowdPlan, Order, Tally};
use super::procfs;
use super::target::{self, SPARE_FILES, Start, TargetInfo};
use super::trim::{self, MallocProbe};
use super::watch;

/// Members per source address (each has ~28,000 ephemeral ports).
const MEMBERS_PER_SOURCE: usize = 2_000;
/// Connects in flight at once.
const CONNECT_CONCURRENCY: usize = 256;
/// Payload of the events everyone reads before the freeze.
const SMALL_EVENT_BYTES: usize = 256;
/// The hub settings a soak needs, unless given: a small queue so slow
/// consumers are closed after little traffic, a short heartbeat so
/// silent ones are closed within seconds.
const HUB_DEFAULTS: [(&str, &str); 3] = [
    ("--send-queue", "4"),
    ("--heartbeat-interval", "1s"),
    ("--heartbeat-timeout", "10s"),
];

/// The flags of `--soak`.
#[derive(Debug, Args)]
pub(crate) struct SoakArgs {
    /// Run the soak instead: cycles of connections that connect, receive and leave (docs/limits.md)
    #[arg(long)]
    pub soak: bool,
    /// soak: cycles
    #[arg(long, value_name = "N", default_value_t = 10)]
    soak_cycles: usize,
    /// soak: connections per cycle (a third each normal, slow, vanishing)
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    soak_connections: usize,
    /// soak: events every connection receives before the freeze
    #[arg(long, value_name = "N", default_value_t = 5)]
    soak_events: u64,
    /// soak: payload bytes of the events then published to the slow consumers' own room
    #[arg(long, value_name = "BYTES", default_value_t = 16000)]
    soak_event_bytes: usize,
    /// soak: most such events per cycle
    #[arg(long, value_name = "N", default_value_t = 200)]
    soak_fill_events: u64,
    /// soak: allowed RSS growth after the second cycle, in percent
    #[arg(long, value_name = "PERCENT", default_value_t = 10.0)]
    soak_growth_percent: f64,
    /// soak: longest wait for each step of a cycle
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    soak_step_timeout: u64,
}

/// One cycle's figures.
#[derive(Debug, Clone, Serialize)]
struct Cycle {
    cycle: usize,
    connected: u64,
    failed: u64,
    connect_s: f64,
    /// Soak events received by normal, slow and vanishing members.
    events: [u64; 3],
    /// Large events published until every slow consumer was closed.
    fill_events: u64,
    /// Seconds that took.
    fill_s: f64,
    /// How the members ended, "role:close code" (the code the member read;
    /// "none" when the close frame did not get through).
    closes: Tally,
    /// The hub's own count of this cycle's disconnects, by reason (`/metrics`).
    hub_disconnects: Tally,
    /// Seconds from the freeze until the hub had closed the silent ones.
    silent_closed_after_s: Option<f64>,
    rss_kib: u64,
    fds: u64,
    connections: Option<u64>,
    seconds: f64,
}

/// The whole soak.
#[derive(Debug, Serialize)]
struct SoakReport {
    target: TargetInfo,
    hub_args: Vec<String>,
    ignored_hub_args: Vec<String>,
    connections_per_cycle: usize,
    baseline_rss_kib: u64,
    baseline_fds: u64,
    cycles: Vec<Cycle>,
    /// Highest RSS after cycles 3.. over RSS after cycle 2, in percent.
    growth_after_cycle_2_percent: Option<f64>,
    malloc: Option<MallocProbe>,
    problems: Vec<String>,
}

/// Runs the soak against the hub `start` describes.
pub(crate) fn run(
    args: &SoakArgs,
    start: &Start,
    malloc_probe: bool,
    admin_key: Option<&str>,
    json: bool,
) -> ExitCode {
    if args.soak_connections < 3 || args.soak_cycles == 0 {
        eprintln!("bench: --soak-connections must be at least 3 and --soak-cycles at least 1");
        return ExitCode::from(super::EXIT_USAGE);
    }
    let report = match execute(args, start, malloc_probe, admin_key, json) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    if json {
        println!("{}", serde_json::to_string(&report).unwrap_or_default());
    }
    let verdict = if report.problems.is_empty() {
        "PASS".to_string()
    } else {
        format!("FAIL: {}", report.problems.join("; "))
    };
    let growth = report.growth_after_cycle_2_percent.map_or(
        "not measured (fewer than 3 cycles)".into(),
        |g| {
            format!(
                "RSS after cycles 3-{} vs cycle 2: {g:+.1} %",
                report.cycles.len()
            )
        },
    );
    eprintln!(
        "soak: baseline {} files, {:.1} MiB; {growth}; {verdict}",
        report.baseline_fds,
        report.baseline_rss_kib as f64 / 1024.0,
    );
    if let Some(m) = &report.malloc {
        eprintln!(
            "soak: malloc {} KiB in use, {} KiB held; malloc_trim(0) gave back {} KiB of RSS{}",
            m.in_use_bytes.map_or("?".into(), |b| (b >> 10).to_string()),
            m.system_bytes.map_or("?".into(), |b| (b >> 10).to_string()),
            m.returned_kib.map_or("?".into(), |k| k.to_string()),
            m.error
                .as_ref()
                .map_or(String::new(), |e| format!(" ({e})"))
        );
    }
    if report.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The hub's flags for a soak: the user's, plus [`HUB_DEFAULTS`] not given.
pub(crate) fn hub_args(given: &[String]) -> Vec<String> {
    let mut args = given.to_vec();
    for (flag, value) in HUB_DEFAULTS {
        if !given.iter().any(|a| a.split('=').next() == Some(flag)) {
            args.push(format!("{flag}={value}"));
        }
    }
    args
}

fn execute(
    args: &SoakArgs,
    start: &Start,
    malloc_probe: bool,
    admin_key: Option<&str>,
    json: bool,
) -> Result<SoakReport, String> {
    let n = args.soak_connections;
    target::ensure_file_limit(n as u64 + SPARE_FILES)?;
    let (target, ignored_hub_args) = target::start_tolerant(start)?;
    let pid = target
        .pid
        .ok_or("a soak needs the hub's pid: give --hub-pid with --url")?;
    if let Some(warning) = target::check_server_limit(pid, n as u64 + SPARE_FILES) {
        return Err(warning);
    }
    let addr = target.addr;
    let step = Duration::from_secs(args.soak_step_timeout.max(1));
    std::thread::sleep(Duration::from_millis(500));
    let _ = blocking::health_connections(addr);
    let baseline_fds = watch::settled_fds(pid, None, Duration::from_secs(2));
    let baseline_rss_kib = procfs::rss_kib(pid).unwrap_or(0);
    eprintln!(
        "soak: {} cycles of {n} connections; hub baseline {baseline_fds} files, {:.1} MiB",
        args.soak_cycles,
        baseline_rss_kib as f64 / 1024.0
    );
    let room = format!("soak-{:08x}", fastrand::u32(..));
    let mut publisher = Publisher::new(addr, admin_key);
    let mut cycles = Vec::new();
    for c in 1..=args.soak_cycles {
        let cycle = one_cycle(
            c,
            args,
            addr,
            pid,
            &room,
            &mut publisher,
            baseline_fds,
            step,
        )?;
        let text = line(&cycle, args.soak_cycles, baseline_fds);
        // With --json, stdout has the report alone.
        if json {
            eprintln!("{text}");
        } else {
            println!("{text}");
        }
        cycles.push(cycle);
    }
    let malloc =
        malloc_probe.then(|| trim::probe(pid, target.description.log.as_deref().map(Path::new)));
    let mut report = SoakReport {
        target: target.description.clone(),
        hub_args: match start {
            Start::Wshub { args } => args.clone(),
            _ => Vec::new(),
        },
        ignored_hub_args,
        connections_per_cycle: n,
        baseline_rss_kib,
        baseline_fds,
        growth_after_cycle_2_percent: growth(&cycles),
        cycles,
        malloc,
        problems: Vec::new(),
    };
    report.problems = problems(&report, args.soak_growth_percent);
    Ok(report)
}

#[allow(clippy::too_many_arguments)]
fn one_cycle(
    c: usize,
    args: &SoakArgs,
    addr: SocketAddr,
    pid: u32,
    room: &str,
    publisher: &mut Publisher,
    baseline_fds: u64,
    step: Duration,
) -> Result<Cycle, String> {
    let n = args.soak_connections;
    let started = Instant::now();
    let disconnects_before = blocking::disconnects(addr, publisher.bearer.as_deref());
    let crowd = Crowd::start(CrowdPlan {
        addr,
        query: format!("?rooms={room}"),
        slow_query: format!("?rooms={room},{room}-slow"),
        members: n,
        sources: sources(c, n),
        concurrency: CONNECT_CONCURRENCY,
    })
    .map_err(|e| format!("cannot start the crowd: {e}"))?;
    let counts = crowd.counts.clone();
    let done = |f: &dyn Fn() -> bool, limit: Duration| {
        let until = Instant::now() + limit;
        while !f() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        f()
    };
    // Connect and subscribe.
    done(
        &|| counts.welcomed.load(Relaxed) + counts.failed.load(Relaxed) >= n as u64,
        step * 2,
    );
    let connected = counts.welcomed.load(Relaxed);
    let connect_s = started.elapsed().as_secs_f64();
    // Everyone receives a few events.
    for _ in 0..args.soak_events {
        publisher.publish(room, SMALL_EVENT_BYTES)?;
    }
    let events_sum = || counts.events.iter().map(|e| e.load(Relaxed)).sum::<u64>();
    done(&|| events_sum() >= connected * args.soak_events, step);
    let events = counts.events.each_ref().map(|e| e.load(Relaxed));
    // A third stop reading, a third go silent; fill the slow ones' queues.
    crowd.order(Order::Freeze);
    let frozen_at = Instant::now();
    let slow = (0..n).filter(|i| i % 3 == 1).count() as u64;
    let slow_room = format!("{room}-slow");
    let mut fill_events = 0;
    while fill_events < args.soak_fill_events && frozen_at.elapsed() < step {
        publisher.publish(&slow_room, args.soak_event_bytes)?;
        fill_events += 1;
        if fill_events % 4 == 0
            && blocking::health_connections(addr).is_some_and(|open| open + slow <= connected)
        {
            break;
        }
    }
    let fill_s = round3(frozen_at.elapsed().as_secs_f64());
    // The silent third: closed by the hub's heartbeat.
    let normal = (0..n).filter(|i| i % 3 == 0).count() as u64;
    let silent_closed = done(
        &|| blocking::health_connections(addr).is_some_and(|open| open <= normal),
        step,
    );
    let silent_closed_after_s = silent_closed.then(|| round3(frozen_at.elapsed().as_secs_f64()));
    // Everyone leaves.
    crowd.order(Order::Leave);
    done(&|| counts.open.load(Relaxed) == 0, step);
    let closes = crowd.stop();
    done(
        &|| {
            procfs::open_fds(pid) == Some(baseline_fds)
                && blocking::health_connections(addr) == Some(0)
        },
        step,
    );
    let connections = blocking::health_connections(addr);
    let fds = watch::settled_fds(pid, Some(baseline_fds), Duration::from_secs(2));
    let disconnects_after = blocking::disconnects(addr, publisher.bearer.as_deref());
    let hub_disconnects = match (disconnects_before, disconnects_after) {
        (Some(before), Some(after)) => after
            .into_iter()
            .map(|(reason, n)| {
                (
                    reason.clone(),
                    n - before.get(&reason).copied().unwrap_or(0).min(n),
                )
            })
            .filter(|(_, n)| *n > 0)
            .collect(),
        _ => Tally::new(),
    };
    Ok(Cycle {
        cycle: c,
        connected,
        failed: counts.failed.load(Relaxed),
        connect_s: round3(connect_s),
        events,
        fill_events,
        fill_s,
        closes,
        hub_disconnects,
        silent_closed_after_s,
        rss_kib: procfs::rss_kib(pid).unwrap_or(0),
        fds,
        connections,
        seconds: round3(started.elapsed().as_secs_f64()),
    })
}

/// Source addresses of cycle `c`: 127.3.c.1 and on, fresh each cycle so no
/// socket of an earlier cycle's in TIME_WAIT is in the way.
fn sources(c: usize, members: usize) -> Vec<IpAddr> {
    let count = members.div_ceil(MEMBERS_PER_SOURCE).clamp(1, 250);
    (0..count)
        .map(|k| IpAddr::V4(Ipv4Addr::new(127, 3, (c % 250) as u8, k as u8 + 1)))
        .collect()
}

/// Highest RSS after cycles 3.. over RSS after cycle 2, in percent.
fn growth(cycles: &[Cycle]) -> Option<f64> {
    let second = cycles.get(1)?.rss_kib as f64;
    let highest = cycles.iter().skip(2).map(|c| c.rss_kib).max()? as f64;
    (second > 0.0).then(|| round3(100.0 * (highest - second) / second))
}

fn problems(r: &SoakReport, allowed_percent: f64) -> Vec<String> {
    let mut problems = Vec::new();
    for c in &r.cycles {
        if c.fds != r.baseline_fds {
            problems.push(format!(
                "cycle {}: {} files open, baseline {}",
                c.cycle, c.fds, r.baseline_fds
            ));
        }
        if c.connected < r.connections_per_cycle as u64 {
            problems.push(format!(
                "cycle {}: {} of {} connected",
                c.cycle, c.connected, r.connections_per_cycle
            ));
        }
    }
    if let Some(g) = r
        .growth_after_cycle_2_percent
        .filter(|g| *g > allowed_percent)
    {
        problems.push(format!("RSS grew {g:.1} % after cycle 2"));
    }
    problems
}

fn line(c: &Cycle, cycles: usize, baseline_fds: u64) -> String {
    let list = |t: &Tally| {
        t.iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "cycle {}/{cycles}: {} connected ({} failed) in {:.2} s; events {:?}; {} fill events in {:.1} s; \
         silent closed after {} s; hub closed {}; clients read {}; hub RSS {:.1} MiB, \
         files {} (baseline {baseline_fds}), connections {}; {:.1} s",
        c.cycle,
        c.connected,
        c.failed,
        c.connect_s,
        c.events,
        c.fill_events,
        c.fill_s,
        c.silent_closed_after_s
            .map_or("?".into(), |s| format!("{s:.1}")),
        list(&c.hub_disconnects),
        list(&c.closes),
        c.rss_kib as f64 / 1024.0,
        c.fds,
        c.connections.map_or("?".into(), |n| n.to_string()),
        c.seconds
    )
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cycle(rss_kib: u64) -> Cycle {
        Cycle {
            cycle: 0,
            connected: 3,
            failed: 0,
            connect_s: 0.0,
            events: [0; 3],
            fill_events: 0,
            fill_s: 0.0,
            closes: Tally::new(),
            hub_disconnects: Tally::new(),
            silent_closed_after_s: None,
            rss_kib,
            fds: 9,
            connections: Some(0),
            seconds: 0.0,
        }
    }

    #[test]
    fn growth_is_measured_from_the_second_cycle() {
        assert_eq!(growth(&[cycle(100)]), None);
        assert_eq!(growth(&[cycle(100), cycle(200)]), None);
        let cycles = [cycle(100), cycle(200), cycle(210), cycle(205), cycle(190)];
        assert_eq!(growth(&cycles), Some(5.0));
    }

    #[test]
    fn soak_hub_flags_fill_in_only_what_is_missing() {
        let given = vec!["--send-queue=16".to_string()];
        let args = hub_args(&given);
        assert_eq!(
            args,
            [
                "--send-queue=16",
                "--heartbeat-interval=1s",
                "--heartbeat-timeout=10s"
            ]
        );
    }

    #[test]
    fn each_cycle_has_its_own_sources() {
        assert_eq!(sources(1, 10_000).len(), 5);
        assert_eq!(sources(2, 10_000)[0].to_string(), "127.3.2.1");
        assert!(sources(3, 10).iter().all(|ip| ip.is_loopback()));
    }
}
