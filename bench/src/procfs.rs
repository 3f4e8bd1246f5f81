//! What the bench reads from `/proc`: a process's resident memory, open
//! files and CPU time, its threads' CPU time, the machine's busy time, file
//! limits and the ephemeral port range. Every reader returns `None` rather than fail,
//! so a report can say "unknown" when a process is gone or not Linux.

use std::fs;

/// Clock ticks per second in `/proc/*/stat` (USER_HZ, 100 on Linux).
pub(crate) const TICKS_PER_SECOND: f64 = 100.0;

/// Resident memory of process `pid` in KiB (`VmRSS` of `/proc/PID/status`).
pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status_field(&status, "VmRSS:")
}

fn status_field(status: &str, name: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(name))?;
    line[name.len()..].split_whitespace().next()?.parse().ok()
}

/// Open file descriptors of process `pid` (entries of `/proc/PID/fd`).
pub(crate) fn open_fds(pid: u32) -> Option<u64> {
    Some(fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64)
}

/// User plus system CPU ticks of a process or thread, from a `stat` file.
pub(crate) fn cpu_ticks(stat_path: &str) -> Option<u64> {
    parse_stat_ticks(&fs::read_to_string(stat_path).ok()?)
}

/// utime + stime of a `/proc/*/stat` line. The command name may hold
/// spaces and parentheses, so the fields are counted from its last `)`.
fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After the name: state is field 3, utime field 14, stime field 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// CPU ticks of process `pid`, all threads included.
pub(crate) fn process_ticks(pid: u32) -> Option<u64> {
    cpu_ticks(&format!("/proc/{pid}/stat"))
}

/// CPU ticks of this process's threads whose name starts with `prefix`.
pub(crate) fn own_threads_ticks(prefix: &str) -> Option<u64> {
    let mut total = 0;
    for entry in fs::read_dir("/proc/self/task").ok()?.flatten() {
        let path = entry.path();
        let named = fs::read_to_string(path.join("comm"))
            .is_ok_and(|name| name.trim_end().starts_with(prefix));
        if named {
            total += cpu_ticks(&path.join("stat").to_string_lossy())?;
        }
    }
    Some(total)
}

/// Busy and total ticks of the whole machine (first line of `/proc/stat`).
pub(crate) fn machine_ticks() -> Option<(u64, u64)> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    parse_machine_ticks(stat.lines().next()?)
}

fn parse_machine_ticks(line: &str) -> Option<(u64, u64)> {
    let mut fields = line.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    // user nice system idle iowait irq softirq steal (guest time is in user).
    let v: Vec<u64> = fields
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    let total: u64 = v.iter().sum();
    let idle = v.get(3)? + v.get(4)?;
    Some((total - idle, total))
}

/// The soft and hard open-file limits of process `pid` (`self` for this one).
pub(crate) fn open_file_limits(pid: &str) -> Option<(u64, u64)> {
    let limits = fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    parse_limits(&limits)
}

fn parse_limits(limits: &str) -> Option<(u64, u64)> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let mut fields = line["Max open files".len()..].split_whitespace();
    let value = |f: &str| match f {
        "unlimited" => Some(u64::MAX),
        n => n.parse().ok(),
    };
    Some((value(fields.next()?)?, value(fields.next()?)?))
}

/// How many local ports one source address can use for outgoing connections.
pub(crate) fn ephemeral_ports() -> Option<u64> {
    let range = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut it = range.split_whitespace().map(|n| n.parse::<u64>().ok());
    let (low, high) = (it.next()??, it.next()??);
    Some(high.saturating_sub(low) + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_status_and_stat_fields() {
        let status = "Name:\twshub\nVmPeak:\t  9000 kB\nVmRSS:\t    5120 kB\n";
        assert_eq!(status_field(status, "VmRSS:"), Some(5120));
        assert_eq!(status_field(status, "VmSwap:"), None);
        let stat = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 31 0 0 20 0 2 0";
        assert_eq!(parse_stat_ticks(stat), Some(281));
        assert_eq!(parse_stat_ticks("garbage"), None);
    }

    #[test]
    fn reads_machine_and_limit_lines() {
        let line = "cpu  100 5 50 1000 20 1 9 0 0 0";
        assert_eq!(parse_machine_ticks(line), Some((165, 1185)));
        assert_eq!(parse_machine_ticks("intr 1 2 3"), None);
        let limits = "Limit   Soft Limit   Hard Limit   Units\nMax open files            1024                 20000                files\n";
        assert_eq!(parse_limits(limits), Some((1024, 20000)));
    }

    #[test]
    fn this_process_is_readable() {
        let pid = std::process::id();
        assert!(rss_kib(pid).is_some_and(|kib| kib > 0));
        assert!(open_fds(pid).is_some_and(|n| n >= 3));
        assert!(process_ticks(pid).is_some());
        assert!(open_file_limits("self").is_some());
        assert!(machine_ticks().is_some());
    }
}
