//! The report of a run: its parts as serialisable structs (the `--json`
//! output), the human table, and the verdict — a run passes only with every
//! subscriber connected and no delivery lost, duplicated or cut off.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::Plan;
use super::procfs::TICKS_PER_SECOND;
use super::publisher::{Outcome, Via};
use super::stats::Summary;
use super::target::TargetInfo;
use super::wire::Transport;

/// Everything one run measured.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub machine: Machine,
    pub target: TargetInfo,
    pub settings: Settings,
    pub connect: Connect,
    pub memory: Memory,
    pub latency: Option<Latency>,
    pub flood: Option<FloodReport>,
    pub integrity: Integrity,
    pub warnings: Vec<String>,
}

/// Where the run ran.
#[derive(Debug, Serialize)]
pub(crate) struct Machine {
    pub cpus: usize,
    pub cpu_model: Option<String>,
    pub kernel: Option<String>,
    /// How busy all CPUs were before the run started (other load).
    pub background_busy_percent: Option<f64>,
}

impl Machine {
    /// This machine, from `/proc`, with the load measured before the run.
    pub fn read(background_busy_percent: Option<f64>) -> Self {
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| {
                let line = info.lines().find(|l| l.starts_with("model name"))?;
                Some(line.split_once(':')?.1.trim().to_string())
            });
        Self {
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu_model,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .ok()
                .map(|k| k.trim().to_string()),
            background_busy_percent,
        }
    }
}

/// The settings the run used.
#[derive(Debug, Serialize)]
pub(crate) struct Settings {
    pub subscribers: usize,
    pub transport: Transport,
    pub quiet_rooms: usize,
    pub subscriber_threads: usize,
    pub source_ips: usize,
    pub room: String,
    pub publishes: u64,
    pub rate_per_s: f64,
    pub payload_bytes: usize,
    pub publishers: usize,
    pub publish_via: Via,
    pub flood_time_s: Option<f64>,
    pub flood_publishes: Option<u64>,
}

impl Settings {
    /// The settings of `plan`, with the source addresses actually used.
    pub fn of(plan: &Plan, source_ips: usize) -> Self {
        Self {
            subscribers: plan.subscribers,
            transport: plan.transport,
            quiet_rooms: plan.quiet_rooms,
            subscriber_threads: plan.threads,
            source_ips,
            room: plan.room.clone(),
            publishes: plan.publishes,
            rate_per_s: plan.rate,
            payload_bytes: plan.payload_bytes,
            publishers: plan.publishers,
            publish_via: plan.publish_via,
            flood_time_s: plan.flood.map(|f| f.time.as_secs_f64()),
            flood_publishes: plan.flood.map(|f| f.publishes),
        }
    }
}

/// The connect phase.
#[derive(Debug, Serialize)]
pub(crate) struct Connect {
    pub requested: u64,
    /// Welcomed.
    pub connected: u64,
    pub failed: u64,
    pub failures: BTreeMap<String, u64>,
    pub seconds: f64,
    pub per_second: Option<f64>,
}

/// The server's resident memory (only with its pid).
#[derive(Debug, Serialize)]
pub(crate) struct Memory {
    pub rss_idle_kib: Option<u64>,
    pub rss_connected_kib: Option<u64>,
    pub rss_end_kib: Option<u64>,
    /// (connected - idle) / connections.
    pub kib_per_connection: Option<f64>,
}

impl Memory {
    /// The figures, with the per-connection cost of `connections`.
    pub fn new(
        idle: Option<u64>,
        connected: Option<u64>,
        end: Option<u64>,
        connections: u64,
    ) -> Self {
        let per = match (idle, connected) {
            (Some(idle), Some(connected)) if connections > 0 => Some(
                ((connected as f64 - idle as f64) / connections as f64 * 100.0).round() / 100.0,
            ),
            _ => None,
        };
        Self {
            rss_idle_kib: idle,
            rss_connected_kib: connected,
            rss_end_kib: end,
            kib_per_connection: per,
        }
    }
}

/// CPU time spent during a phase, and per delivery received.
#[derive(Debug, Serialize)]
pub(crate) struct Cpu {
    pub deliveries: u64,
    /// The server process (all its threads), from /proc/PID/stat.
    pub server_ms: Option<f64>,
    pub server_us_per_delivery: Option<f64>,
    /// The Redis the hubs share (with --redis-pid).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_us_per_delivery: Option<f64>,
    /// The whole bench process (subscribers and publisher).
    pub bench_ms: Option<f64>,
    pub bench_us_per_delivery: Option<f64>,
    /// The bench's subscriber threads alone.
    pub subscribers_ms: Option<f64>,
    pub subscribers_us_per_delivery: Option<f64>,
    /// Busy share of all CPUs over the phase.
    pub machine_busy_percent: Option<f64>,
}

impl Cpu {
    /// CPU figures from tick deltas.
    pub fn new(
        deliveries: u64,
        server: Option<u64>,
        redis: Option<u64>,
        bench: Option<u64>,
        subscribers: Option<u64>,
        machine_busy_percent: Option<f64>,
    ) -> Self {
        let ms = |ticks: Option<u64>| ticks.map(|t| t as f64 * 1000.0 / TICKS_PER_SECOND);
        let per = |ticks: Option<u64>| {
            let us = ticks? as f64 * 1e6 / TICKS_PER_SECOND;
            (deliveries > 0).then(|| (us / deliveries as f64 * 1000.0).round() / 1000.0)
        };
        Self {
            deliveries,
            server_ms: ms(server),
            server_us_per_delivery: per(server),
            redis_ms: ms(redis),
            redis_us_per_delivery: per(redis),
            bench_ms: ms(bench),
            bench_us_per_delivery: per(bench),
            subscribers_ms: ms(subscribers),
            subscribers_us_per_delivery: per(subscribers),
            machine_busy_percent,
        }
    }
}

/// The open-loop latency phase.
#[derive(Debug, Serialize)]
pub(crate) struct Latency {
    pub publish: Outcome,
    /// Publishes every open subscriber received.
    pub complete_publishes: u64,
    pub incomplete_publishes: u64,
    /// From when a publish was due until its last subscriber had it.
    pub publish_to_all: Summary,
    /// From the publish's reply until its last subscriber had it (0 when all
    /// had it before the reply).
    pub reply_to_all: Summary,
    /// From sending a publish to its reply.
    pub publish_reply: Summary,
    /// From due to arrival, per delivery.
    pub per_delivery: Summary,
    pub deliveries: u64,
    pub cpu: Cpu,
}

/// The flood phase.
#[derive(Debug, Serialize)]
pub(crate) struct FloodReport {
    pub publish: Outcome,
    pub deliveries: u64,
    /// From the first publish to the last delivery.
    pub seconds: f64,
    pub deliveries_per_s: Option<f64>,
    pub publishes_per_s: Option<f64>,
    /// From send to arrival, per delivery (queueing included).
    pub per_delivery: Summary,
    pub cpu: Cpu,
}

/// Whether every subscriber got every event once, judged by seq.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Integrity {
    /// Seqs from the first publish's to the highest seen.
    pub expected_per_subscriber: u64,
    pub lost: u64,
    /// Duplicated or out of order.
    pub duplicated: u64,
    /// Welcomed subscribers whose connection ended during the run.
    pub disconnected: u64,
    pub end_reasons: BTreeMap<String, u64>,
    pub missing_subscribers: u64,
    pub not_welcome_first: u64,
    pub other_messages: u64,
}

impl Report {
    /// What went wrong, empty for a clean run.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let c = &self.connect;
        if c.connected < c.requested {
            problems.push(format!(
                "{} of {} subscribers not connected",
                c.requested - c.connected,
                c.requested
            ));
        }
        let i = &self.integrity;
        for (n, what) in [
            (i.lost, "deliveries lost"),
            (i.duplicated, "deliveries duplicated or out of order"),
            (i.disconnected, "subscribers disconnected"),
            (
                i.not_welcome_first,
                "subscribers whose first message was not a welcome",
            ),
            (i.missing_subscribers, "subscribers unaccounted for"),
        ] {
            if n > 0 {
                problems.push(format!("{n} {what}"));
            }
        }
        let phases = [
            self.latency.as_ref().map(|l| ("latency", &l.publish)),
            self.flood.as_ref().map(|f| ("flood", &f.publish)),
        ];
        for (phase, o) in phases.into_iter().flatten() {
            let failed: u64 = o.failures.values().sum();
            if failed > 0 {
                problems.push(format!("{failed} {phase} publishes failed"));
            }
        }
        if self.latency.is_none() {
            problems.push("nothing was published (no subscriber connected)".into());
        }
        problems
    }

    /// Whether the run was clean.
    pub fn passed(&self) -> bool {
        self.problems().is_empty()
    }

    /// The report as a table for people.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let s = &self.settings;
        let t = &self.target;
        let _ = writeln!(
            out,
            "wshub-bench: {} subscribers in room {} at {} ({}{})",
            s.subscribers,
            s.room,
            t.addr,
            t.command.as_deref().unwrap_or(t.kind),
            t.pid.map(|p| format!(", pid {p}")).unwrap_or_default()
        );
        let m = &self.machine;
        let _ = writeln!(
            out,
            "machine      {} CPUs, {}, Linux {}; {}% busy before the run",
            m.cpus,
            m.cpu_model.as_deref().unwrap_or("?"),
            m.kernel.as_deref().unwrap_or("?"),
            opt(m.background_busy_percent, 0)
        );
        let c = &self.connect;
        let _ = writeln!(
            out,
            "connect      {} ok over {:?}, {} failed in {:.2} s ({} per s) from {} source addresses{}",
            c.connected,
            s.transport,
            c.failed,
            c.seconds,
            opt(c.per_second, 0),
            s.source_ips,
            failures(&c.failures)
        );
        let mem = &self.memory;
        let _ = writeln!(
            out,
            "memory       server RSS {} KiB idle, {} KiB connected, {} KiB at the end: {} KiB per connection",
            opt_u(mem.rss_idle_kib),
            opt_u(mem.rss_connected_kib),
            opt_u(mem.rss_end_kib),
            opt(mem.kib_per_connection, 2)
        );
        if let Some(l) = &self.latency {
            let _ = writeln!(
                out,
                "latency      {} publishes at {}/s, {} B payload, {} publisher connections over {:?}: {} accepted, {} late{}",
                s.publishes,
                s.rate_per_s,
                s.payload_bytes,
                s.publishers,
                s.publish_via,
                l.publish.accepted,
                l.publish.late,
                failures(&l.publish.failures)
            );
            let _ = writeln!(
                out,
                "             {} of them reached every subscriber",
                l.complete_publishes
            );
            summary(&mut out, "publish due → last subscriber", &l.publish_to_all);
            summary(&mut out, "publish reply → last subscriber", &l.reply_to_all);
            summary(&mut out, "publish sent → reply", &l.publish_reply);
            summary(&mut out, "per delivery (due → arrival)", &l.per_delivery);
            cpu(&mut out, &l.cpu);
        }
        if let Some(f) = &self.flood {
            let _ = writeln!(
                out,
                "flood        {} publishes ({} per s), {} deliveries in {:.2} s: {} deliveries per s{}",
                f.publish.accepted,
                opt(f.publishes_per_s, 0),
                f.deliveries,
                f.seconds,
                opt(f.deliveries_per_s, 0),
                failures(&f.publish.failures)
            );
            summary(&mut out, "per delivery (sent → arrival)", &f.per_delivery);
            cpu(&mut out, &f.cpu);
        }
        let i = &self.integrity;
        let _ = writeln!(
            out,
            "integrity    {} seqs per subscriber: {} lost, {} duplicated, {} disconnected{}",
            i.expected_per_subscriber,
            i.lost,
            i.duplicated,
            i.disconnected,
            failures(&i.end_reasons)
        );
        for w in &self.warnings {
            let _ = writeln!(out, "warning      {w}");
        }
        let problems = self.problems();
        let verdict = if problems.is_empty() {
            "PASS".to_string()
        } else {
            format!("FAIL: {}", problems.join("; "))
        };
        let _ = writeln!(out, "result       {verdict}");
        out
    }
}

fn summary(out: &mut String, name: &str, s: &Summary) {
    let _ = writeln!(
        out,
        "             {name:<34} p50 {:>9.3} ms  p99 {:>9.3} ms  max {:>9.3} ms  (n={})",
        s.p50_ms, s.p99_ms, s.max_ms, s.count
    );
}

fn cpu(out: &mut String, c: &Cpu) {
    let _ = writeln!(
        out,
        "             CPU per delivery: server {} µs{}, bench {} µs (subscriber threads {} µs); machine {}% busy",
        opt(c.server_us_per_delivery, 2),
        c.redis_us_per_delivery
            .map(|r| format!(" (+ Redis {r:.2} µs)"))
            .unwrap_or_default(),
        opt(c.bench_us_per_delivery, 2),
        opt(c.subscribers_us_per_delivery, 2),
        opt(c.machine_busy_percent, 0)
    );
}

fn failures(map: &BTreeMap<String, u64>) -> String {
    if map.is_empty() {
        return String::new();
    }
    let items: Vec<String> = map.iter().map(|(k, n)| format!("{k}: {n}")).collect();
    format!(" [{}]", items.join(", "))
}

fn opt(x: Option<f64>, decimals: usize) -> String {
    x.map_or_else(|| "?".into(), |x| format!("{x:.decimals$}"))
}

fn opt_u(x: Option<u64>) -> String {
    x.map_or_else(|| "?".into(), |x| x.to_string())
}
