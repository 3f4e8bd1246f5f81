//! What glibc's allocator keeps of memory the hub freed: `gdb` attaches to
//! the hub for a moment and calls `malloc_stats()` (it writes to the hub's
//! stderr, which a hub the bench started has in a file), `malloc_trim(0)`
//! and `malloc_stats()` again; the hub's RSS is read on either side. The
//! difference is what a `malloc_trim(0)` in the hub would give back at
//! that moment. A measurement, not a fix: it calls into the hub's libc, so
//! it is opt-in (`--malloc-probe`), runs when the hub is idle, and is
//! bounded by a timeout.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::procfs;

/// Time gdb has to attach, call and detach.
const GDB_TIMEOUT: Duration = Duration::from_secs(60);

/// The allocator's figures around one `malloc_trim(0)`.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct MallocProbe {
    pub rss_before_kib: Option<u64>,
    pub rss_after_trim_kib: Option<u64>,
    /// RSS the trim gave back to the system.
    pub returned_kib: Option<u64>,
    /// Bytes in live allocations (malloc_stats "in use bytes", all arenas).
    pub in_use_bytes: Option<u64>,
    /// Bytes malloc held from the system before the trim ("system bytes").
    pub system_bytes: Option<u64>,
    /// The same after it.
    pub system_bytes_after_trim: Option<u64>,
    pub error: Option<String>,
}

/// Probes process `pid`, whose stderr is the file `log` (if known).
pub(crate) fn probe(pid: u32, log: Option<&Path>) -> MallocProbe {
    let mut probe = MallocProbe {
        rss_before_kib: procfs::rss_kib(pid),
        ..MallocProbe::default()
    };
    let log_len = log
        .and_then(|p| std::fs::metadata(p).ok())
        .map_or(0, |m| m.len());
    if let Err(e) = run_gdb(pid) {
        probe.error = Some(e);
        return probe;
    }
    probe.rss_after_trim_kib = procfs::rss_kib(pid);
    probe.returned_kib = probe
        .rss_before_kib
        .zip(probe.rss_after_trim_kib)
        .map(|(before, after)| before.saturating_sub(after));
    let written = log.and_then(|p| std::fs::read(p).ok()).map(|bytes| {
        String::from_utf8_lossy(&bytes[(log_len as usize).min(bytes.len())..]).into_owned()
    });
    match written.as_deref().map(totals).as_deref() {
        Some([.., before, after]) => {
            probe.in_use_bytes = Some(before.in_use);
            probe.system_bytes = Some(before.system);
            probe.system_bytes_after_trim = Some(after.system);
        }
        _ => {
            probe.error = Some("no malloc_stats output in the hub's stderr".into());
        }
    }
    probe
}

fn run_gdb(pid: u32) -> Result<(), String> {
    let mut child = Command::new("gdb")
        .args(["-p", &pid.to_string(), "-batch", "-nx"])
        .args(["-ex", "call (void) malloc_stats()"])
        .args(["-ex", "call (int) malloc_trim(0)"])
        .args(["-ex", "call (void) malloc_stats()"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run gdb: {e}"))?;
    let deadline = Instant::now() + GDB_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => return Err(format!("gdb failed: {status}")),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            _ => {
                // gdb detaches from the hub when it is killed.
                let _ = child.kill();
                let _ = child.wait();
                return Err("gdb did not finish in time".into());
            }
        }
    }
}

/// One "Total (incl. mmap)" block of `malloc_stats()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Total {
    system: u64,
    in_use: u64,
}

/// Every "Total (incl. mmap)" block in `text`, in order.
fn totals(text: &str) -> Vec<Total> {
    let mut found = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if !line.starts_with("Total (incl. mmap):") {
            continue;
        }
        let mut value = |name: &str| {
            let line = lines.next()?;
            let rest = line.strip_prefix(name)?;
            rest.trim_start().strip_prefix('=')?.trim().parse().ok()
        };
        if let (Some(system), Some(in_use)) = (value("system bytes"), value("in use bytes")) {
            found.push(Total { system, in_use });
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_malloc_stats_totals() {
        let text = "Arena 0:\nsystem bytes     =     135168\nin use bytes     =      74352\n\
                    Total (incl. mmap):\nsystem bytes     =    2232320\nin use bytes     =    2171504\n\
                    max mmap regions =          1\nmax mmap bytes   =    2097152\n\
                    {\"level\":\"warn\"}\nTotal (incl. mmap):\nsystem bytes     =     200000\n\
                    in use bytes     =     190000\n";
        assert_eq!(
            totals(text),
            [
                Total {
                    system: 2_232_320,
                    in_use: 2_171_504
                },
                Total {
                    system: 200_000,
                    in_use: 190_000
                }
            ]
        );
        assert!(totals("Total (incl. mmap):\nsystem bytes = x\n").is_empty());
    }
}
