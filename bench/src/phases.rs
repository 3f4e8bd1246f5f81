//! One benchmark run, phase by phase: check the limits, find or start the
//! server, read its idle memory, connect the subscribers, read its memory
//! again, run the open-loop latency phase and (optionally) the flood, each
//! followed by a bounded wait for the deliveries, then stop everything and
//! turn what was recorded into a [`Report`].

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use super::Plan;
use super::procfs;
use super::publisher::{self, Outcome, PublishPlan};
use super::record::{NEVER, Run};
use super::report::{Connect, Cpu, FloodReport, Integrity, Latency, Memory, Report, Settings};
use super::stats::Summary;
use super::subscribers::{ConnectPlan, Subscribers, THREAD_PREFIX, ThreadReport};
use super::target::{self, SPARE_FILES, Start, Target};

/// How long the idle server is watched before connecting.
const IDLE_SAMPLE: Duration = Duration::from_millis(500);
/// How often waits look at the counters.
const POLL: Duration = Duration::from_millis(5);
/// A drain that keeps making progress still ends after this many timeouts.
const DRAIN_LIMIT_FACTOR: u32 = 4;
/// Progress lines on stderr during long waits, at most this often.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// Why a run did not produce a report.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The arguments cannot work here (file limits, ports).
    Usage(String),
    /// The server could not be started or reached.
    Run(String),
}

/// `?rooms=<room>`, then the quiet rooms (`<room>-q1`, …) if any.
fn subscriber_query(plan: &Plan) -> String {
    let mut query = format!("?rooms={}", plan.room);
    for i in 1..=plan.quiet_rooms {
        query.push_str(&format!(",{}-q{i}", plan.room));
    }
    query
}

/// Runs the benchmark `plan` describes.
pub(crate) fn execute(plan: &Plan) -> Result<Report, Failure> {
    let files = (plan.subscribers + plan.publishers) as u64 + SPARE_FILES;
    target::ensure_file_limit(files).map_err(Failure::Usage)?;
    check_ports(plan)?;
    let mut warnings = Vec::new();
    let mut targets = Vec::with_capacity(plan.starts.len());
    for start in &plan.starts {
        let target = Target::start(start).map_err(Failure::Run)?;
        if let (Start::Url { .. }, Some(pid)) = (start, target.pid) {
            warnings.extend(target::check_server_limit(pid, files));
        }
        targets.push(target);
    }
    let hubs: Vec<(std::net::SocketAddr, String)> =
        targets.iter().map(|t| (t.addr, t.host())).collect();
    let first = targets[0].addr;
    let run = Arc::new(Run::new(
        plan.publishes,
        plan.flood.map_or(0, |f| f.publishes),
    ));
    // With several hubs, their sum.
    let rss = || {
        targets
            .iter()
            .map(|t| t.pid.and_then(procfs::rss_kib))
            .sum::<Option<u64>>()
    };
    // The server settles; how busy the machine is meanwhile shows other load.
    let quiet = procfs::machine_ticks();
    std::thread::sleep(IDLE_SAMPLE);
    let background_busy_percent = busy_percent(procfs::machine_ticks(), quiet);
    let rss_idle = rss();

    let connect_plan = ConnectPlan {
        hubs: hubs.clone(),
        query: subscriber_query(plan),
        transport: plan.transport,
        subscribers: plan.subscribers,
        threads: plan.threads,
        sources: if first.ip().is_ipv4() && first.ip().is_loopback() {
            plan.sources.clone()
        } else {
            Vec::new()
        },
        concurrency: plan.connect_concurrency,
        timeout: plan.connect_timeout,
    };
    progress(
        plan,
        &format!("connecting {} subscribers", plan.subscribers),
    );
    let connect_started = Instant::now();
    let subscribers = Subscribers::start(&connect_plan, &run)
        .map_err(|e| Failure::Run(format!("cannot start subscriber threads: {e}")))?;
    let connect_seconds = wait_connected(plan, &run, connect_started);
    let connected = run.connected.load(Relaxed);
    let connect_failed = run.failed.load(Relaxed);
    std::thread::sleep(plan.settle);
    let rss_connected = rss();

    let publish_plan = PublishPlan {
        hubs,
        room: plan.room.clone(),
        payload_bytes: plan.payload_bytes,
        connections: plan.publishers,
        via: plan.publish_via,
        bearer: plan.admin_key.clone(),
        timeout: Duration::from_secs(10),
    };
    let mut latency = None;
    let mut flood = None;
    if connected > 0 || plan.subscribers == 0 {
        progress(
            plan,
            &format!(
                "latency phase: {} publishes at {}/s",
                plan.publishes, plan.rate
            ),
        );
        let before = Snapshot::take(&targets, plan, &run);
        let outcome = publisher::open_loop(&publish_plan, &run, 0, plan.publishes, plan.rate);
        drain(plan, &run, 0, plan.publishes, outcome.accepted);
        let cpu = Snapshot::take(&targets, plan, &run).since(&before);
        latency = Some((outcome, cpu));
        if let Some(bounds) = plan.flood {
            progress(plan, &format!("flood phase: up to {:?}", bounds.time));
            let first = plan.publishes;
            let before = Snapshot::take(&targets, plan, &run);
            let started = run.now();
            let outcome =
                publisher::flood(&publish_plan, &run, first, bounds.publishes, bounds.time);
            let published_ns = run.now() - started;
            let end = first + outcome.attempted;
            drain(plan, &run, first, end, outcome.accepted);
            let cpu = Snapshot::take(&targets, plan, &run).since(&before);
            flood = Some((outcome, cpu, started, published_ns, end));
        }
    }
    let rss_end = rss();
    for target in &mut targets {
        if let Some(status) = target.exited() {
            warnings.push(format!("the server exited during the run: {status}"));
        }
    }
    let threads = subscribers.stop();

    let latency_report =
        latency.map(|(outcome, cpu)| latency_report(&run, plan, outcome, cpu, &threads));
    let flood_report = flood.map(|(outcome, cpu, started, published_ns, end)| {
        flood_report(
            &run,
            plan.publishes,
            end,
            outcome,
            cpu,
            started,
            published_ns,
            &threads,
        )
    });
    let integrity = integrity(&run, plan, &threads);
    Ok(Report {
        machine: super::report::Machine::read(background_busy_percent),
        target: describe(&targets),
        settings: Settings::of(plan, connect_plan.sources.len()),
        connect: Connect {
            requested: plan.subscribers as u64,
            connected,
            failed: connect_failed,
            failures: threads.connect_failures.clone(),
            seconds: round3(connect_seconds),
            per_second: (connect_seconds > 0.0)
                .then(|| (connected as f64 / connect_seconds).round()),
        },
        memory: Memory::new(rss_idle, rss_connected, rss_end, connected),
        latency: latency_report,
        flood: flood_report,
        integrity,
        warnings,
    })
}

/// Refuses a run whose subscribers cannot get local ports.
fn check_ports(plan: &Plan) -> Result<(), Failure> {
    let Some(ports) = procfs::ephemeral_ports() else {
        return Ok(());
    };
    let per_source = plan.subscribers.div_ceil(plan.sources.len().max(1)) as u64;
    // Leave room for sockets of earlier runs still in TIME_WAIT.
    if per_source > ports / 2 {
        return Err(Failure::Usage(format!(
            "{per_source} subscribers per source address, but only {ports} ephemeral ports: \
             give --source-ips {} or more",
            (plan.subscribers as u64).div_ceil(ports / 2)
        )));
    }
    Ok(())
}

fn progress(plan: &Plan, what: &str) {
    if !plan.json {
        eprintln!("bench: {what}");
    }
}

/// Waits until every subscriber is welcomed or failed; returns the seconds
/// the connects took. Bounded: each connect has its own timeout, and the
/// whole phase at most that times the number of rounds.
fn wait_connected(plan: &Plan, run: &Run, started: Instant) -> f64 {
    let rounds = plan
        .subscribers
        .div_ceil(plan.connect_concurrency * plan.threads) as u32;
    let limit = started + plan.connect_timeout * (rounds + 1);
    let total = plan.subscribers as u64;
    let mut last_note = Instant::now();
    let mut done_at = None;
    while Instant::now() < limit {
        let (ok, failed) = (run.connected.load(Relaxed), run.failed.load(Relaxed));
        if ok + failed >= total {
            done_at = Some(Instant::now());
            break;
        }
        if last_note.elapsed() >= PROGRESS_EVERY {
            progress(plan, &format!("  {ok} connected, {failed} failed"));
            last_note = Instant::now();
        }
        std::thread::sleep(POLL);
    }
    done_at
        .unwrap_or_else(Instant::now)
        .duration_since(started)
        .as_secs_f64()
}

/// Waits until publishes `from..to` have reached every open subscriber, or
/// no delivery has arrived for `drain_timeout` (and never longer than
/// `DRAIN_LIMIT_FACTOR` times that in all).
fn drain(plan: &Plan, run: &Run, from: u64, to: u64, accepted: u64) {
    let limit = Instant::now() + plan.drain_timeout * DRAIN_LIMIT_FACTOR;
    let mut seen = run.arrivals(from, to);
    let mut last_progress = Instant::now();
    loop {
        let want = accepted * run.open();
        if seen >= want || last_progress.elapsed() >= plan.drain_timeout || Instant::now() >= limit
        {
            return;
        }
        std::thread::sleep(POLL);
        let now = run.arrivals(from, to);
        if now != seen {
            seen = now;
            last_progress = Instant::now();
        }
    }
}

/// The report's view of the hub, or of a cluster's hubs.
fn describe(targets: &[Target]) -> target::TargetInfo {
    let mut info = targets[0].description.clone();
    if targets.len() > 1 {
        info.kind = "cluster";
        info.addr = targets
            .iter()
            .map(|t| t.addr.to_string())
            .collect::<Vec<_>>()
            .join(",");
        info.command = info.command.map(|c| format!("{} hubs: {c}", targets.len()));
        info.pid = None;
    }
    info
}

/// CPU counters at one moment.
struct Snapshot {
    /// Every hub's, summed.
    hub: Option<u64>,
    redis: Option<u64>,
    bench: Option<u64>,
    subscribers: Option<u64>,
    machine: Option<(u64, u64)>,
    deliveries: u64,
}

impl Snapshot {
    fn take(targets: &[Target], plan: &Plan, run: &Run) -> Self {
        Self {
            hub: targets
                .iter()
                .map(|t| t.pid.and_then(procfs::process_ticks))
                .sum(),
            redis: plan.redis_pid.and_then(procfs::process_ticks),
            bench: procfs::process_ticks(std::process::id()),
            subscribers: procfs::own_threads_ticks(THREAD_PREFIX),
            machine: procfs::machine_ticks(),
            deliveries: run.deliveries.load(Relaxed),
        }
    }

    fn since(&self, before: &Snapshot) -> Cpu {
        let diff = |a: Option<u64>, b: Option<u64>| a?.checked_sub(b?);
        let machine = busy_percent(self.machine, before.machine);
        Cpu::new(
            self.deliveries - before.deliveries,
            diff(self.hub, before.hub),
            diff(self.redis, before.redis),
            diff(self.bench, before.bench),
            diff(self.subscribers, before.subscribers),
            machine,
        )
    }
}

fn latency_report(
    run: &Run,
    plan: &Plan,
    publish: Outcome,
    cpu: Cpu,
    threads: &ThreadReport,
) -> Latency {
    let open_at_end = run.open();
    let mut due_to_all = Vec::new();
    let mut reply_to_all = Vec::new();
    let mut sent_to_reply = Vec::new();
    let mut incomplete = 0;
    for slot in run.slots(0, plan.publishes) {
        let replied = slot.replied.load(Relaxed);
        if replied == NEVER {
            continue;
        }
        sent_to_reply.push(replied.saturating_sub(slot.sent.load(Relaxed)));
        if slot.arrivals.load(Relaxed) < open_at_end.max(1) {
            incomplete += 1;
            continue;
        }
        let last = slot.last_arrival.load(Relaxed);
        due_to_all.push(last.saturating_sub(slot.due.load(Relaxed)));
        reply_to_all.push(last.saturating_sub(replied));
    }
    Latency {
        deliveries: threads.latency.count(),
        complete_publishes: due_to_all.len() as u64,
        incomplete_publishes: incomplete,
        publish_to_all: Summary::of(&mut due_to_all),
        reply_to_all: Summary::of(&mut reply_to_all),
        publish_reply: Summary::of(&mut sent_to_reply),
        per_delivery: threads.latency.summary(),
        publish,
        cpu,
    }
}

#[allow(clippy::too_many_arguments)]
fn flood_report(
    run: &Run,
    first: u64,
    end: u64,
    publish: Outcome,
    cpu: Cpu,
    started: u64,
    published_ns: u64,
    threads: &ThreadReport,
) -> FloodReport {
    let slots = run.slots(first, end);
    let deliveries: u64 = slots.iter().map(|s| s.arrivals.load(Relaxed)).sum();
    let last = slots
        .iter()
        .map(|s| s.last_arrival.load(Relaxed))
        .max()
        .unwrap_or(started);
    let seconds = last.saturating_sub(started) as f64 / 1e9;
    let per = |n: u64, secs: f64| (secs > 0.0).then(|| (n as f64 / secs).round());
    FloodReport {
        deliveries,
        seconds: round3(seconds),
        deliveries_per_s: per(deliveries, seconds),
        publishes_per_s: per(publish.accepted, published_ns as f64 / 1e9),
        per_delivery: threads.flood.summary(),
        publish,
        cpu,
    }
}

/// Losses and duplicates, by seq, over every welcomed subscriber.
fn integrity(run: &Run, plan: &Plan, threads: &ThreadReport) -> Integrity {
    let replies = run.slots(0, run.capacity());
    let min_seq = replies
        .iter()
        .map(|s| s.seq.load(Relaxed))
        .filter(|s| *s > 0)
        .min()
        .unwrap_or(1);
    let max_seq = run.max_seq.load(Relaxed);
    let expected = (max_seq + 1).saturating_sub(min_seq);
    let mut report = Integrity {
        expected_per_subscriber: expected,
        missing_subscribers: (plan.subscribers as u64).saturating_sub(threads.tracks.len() as u64),
        not_welcome_first: threads.not_welcome_first,
        other_messages: threads.other_messages,
        ..Integrity::default()
    };
    for track in threads.tracks.iter().filter(|t| t.welcomed) {
        report.lost += expected.saturating_sub(track.unique);
        report.duplicated += track.repeated;
        if let Some(reason) = &track.ended {
            report.disconnected += 1;
            *report.end_reasons.entry(reason.clone()).or_default() += 1;
        }
    }
    report
}

/// The busy share of all CPUs between two `/proc/stat` samples.
fn busy_percent(now: Option<(u64, u64)>, before: Option<(u64, u64)>) -> Option<f64> {
    let ((busy, total), (busy0, total0)) = (now?, before?);
    (total > total0)
        .then(|| round3(100.0 * busy.saturating_sub(busy0) as f64 / (total - total0) as f64))
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
