//! The report of an attack run ([`super::attack`]): its figures, the bound
//! the hub must keep for that attack (docs/limits.md) with the problems a
//! run found against it, and the human-readable table.

use std::fmt::Write as _;

use serde::Serialize;

use super::attack::{Kind, Shape};
use super::attackers::Work;
use super::target::TargetInfo;
use super::trim::MallocProbe;
use super::watch::ProbeReport;

/// The honest client's p99 round trip must stay under this during an attack.
const PROBE_P99_BOUND_MS: f64 = 100.0;
/// No honest round trip, during the attack or after it, may take longer.
const PROBE_MAX_BOUND_MS: f64 = 1000.0;
/// The history bound of a hub not told otherwise (PROTOCOL.md section 5).
const DEFAULT_MAX_HISTORY_BYTES: u64 = 64 << 20;

/// Everything one attack run measured.
#[derive(Debug, Serialize)]
pub(crate) struct AttackReport {
    pub attack: Kind,
    pub shape: Shape,
    pub target: TargetInfo,
    /// `--hub-arg` flags this hub does not have, left out.
    pub ignored_hub_args: Vec<String>,
    pub seconds: f64,
    pub rss_kib: Triple,
    pub fds: Triple,
    /// Seconds after the attacker left until the hub's files were back at
    /// the baseline (plus the honest client); none within the settle.
    pub fds_back_after_s: Option<f64>,
    /// Open connections by `/health` at the end.
    pub connections_after: Option<u64>,
    pub work: Work,
    pub honest_ping_ms: ProbeReport,
    pub malloc: Option<MallocProbe>,
    pub bound: String,
    pub problems: Vec<String>,
}

/// A reading before the attack, its peak, and after.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Triple {
    pub before: u64,
    pub peak: u64,
    pub after: u64,
}

/// The `--max-history-bytes` given to the hub, else the default.
pub(crate) fn max_history_bytes(hub_args: &[String]) -> u64 {
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
pub(crate) fn verdict(r: &AttackReport, max_history: u64) -> (String, Vec<String>) {
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
    let slowest = r
        .honest_ping_ms
        .attack
        .max_ms
        .max(r.honest_ping_ms.after.max_ms);
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
    pub fn table(&self) -> String {
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
pub(crate) fn name(value: impl Serialize) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

fn opt_mib(kib: Option<u64>) -> String {
    kib.map_or("?".into(), |k| format!("{:.1}", k as f64 / 1024.0))
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
