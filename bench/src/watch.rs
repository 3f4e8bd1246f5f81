//! Watching a hub while something is done to it: a [`Sampler`] thread that
//! reads the hub's resident memory and open files every few milliseconds
//! (their peaks, and a flag once memory passes a cap), and a [`Probe`]: an
//! honest client on its own connection that sends `ping` and times the
//! `pong`, by phase. The hub is one thread, so a slow `pong` means the hub
//! thread was busy with the attacker instead. Also the bounded waits for
//! the hub's open files to settle.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering::Relaxed};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::blocking::{Message, Ws};
use super::procfs;
use super::stats::{Histogram, Summary};

/// The longest a sampler runs, whatever it is told.
const SAMPLER_LIFETIME: Duration = Duration::from_secs(30 * 60);
/// A `pong` later than this counts as a timeout (and as this long).
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// The highest readings of a [`Sampler`].
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct Peaks {
    pub rss_kib: u64,
    pub fds: u64,
    /// Readings taken.
    pub samples: u64,
}

/// A thread reading one process's memory and open files.
#[derive(Debug)]
pub(crate) struct Sampler {
    stop: Arc<AtomicBool>,
    over: Arc<AtomicBool>,
    handle: JoinHandle<Peaks>,
}

impl Sampler {
    /// Reads process `pid` every `every` until stopped; its
    /// [`Sampler::cap_flag`] turns true once its RSS passed `cap_kib`.
    pub fn start(pid: u32, cap_kib: u64, every: Duration) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let over = Arc::new(AtomicBool::new(false));
        let (stopped, flag) = (stop.clone(), over.clone());
        let handle = std::thread::Builder::new()
            .name("bench-sampler".into())
            .spawn(move || {
                let started = Instant::now();
                let mut peaks = Peaks::default();
                while !stopped.load(Relaxed) && started.elapsed() < SAMPLER_LIFETIME {
                    let rss = procfs::rss_kib(pid).unwrap_or(0);
                    peaks.rss_kib = peaks.rss_kib.max(rss);
                    peaks.fds = peaks.fds.max(procfs::open_fds(pid).unwrap_or(0));
                    peaks.samples += 1;
                    if rss > cap_kib {
                        flag.store(true, Relaxed);
                    }
                    std::thread::sleep(every);
                }
                peaks
            })?;
        Ok(Self { stop, over, handle })
    }

    /// The flag that turns true once the process's RSS passed the cap.
    pub fn cap_flag(&self) -> Arc<AtomicBool> {
        self.over.clone()
    }

    /// Stops the thread; the peaks it saw.
    pub fn stop(self) -> Peaks {
        self.stop.store(true, Relaxed);
        self.handle.join().unwrap_or_default()
    }
}

/// When a probe's round trip was measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Before the attack.
    Quiet = 0,
    /// While the attacker is at work.
    Attack = 1,
    /// After the attacker left.
    After = 2,
}

/// The honest client's round trips, by phase.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ProbeReport {
    pub quiet: Summary,
    pub attack: Summary,
    pub after: Summary,
    /// Pongs that took longer than 5 s (counted as 5 s above).
    pub timeouts: u64,
    /// Why the probe stopped early, if it did.
    pub error: Option<String>,
}

/// An honest client timing `ping` → `pong`.
#[derive(Debug)]
pub(crate) struct Probe {
    stop: Arc<AtomicBool>,
    phase: Arc<AtomicU8>,
    handle: JoinHandle<ProbeReport>,
}

impl Probe {
    /// Connects (failing here if it cannot) and pings every `every`.
    pub fn start(addr: std::net::SocketAddr, every: Duration) -> Result<Self, String> {
        let mut ws = Ws::open(None, addr, "", Duration::from_secs(10))?;
        // The welcome.
        ws.recv(Instant::now() + Duration::from_secs(10))?
            .ok_or("no welcome")?;
        let stop = Arc::new(AtomicBool::new(false));
        let phase = Arc::new(AtomicU8::new(Phase::Quiet as u8));
        let (stopped, phase_now) = (stop.clone(), phase.clone());
        let handle = std::thread::Builder::new()
            .name("bench-probe".into())
            .spawn(move || probe_loop(ws, every, &stopped, &phase_now))
            .map_err(|e| e.to_string())?;
        Ok(Self {
            stop,
            phase,
            handle,
        })
    }

    /// Files later round trips under `phase`.
    pub fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u8, Relaxed);
    }

    /// Stops pinging, closes, and reports.
    pub fn stop(self) -> ProbeReport {
        self.stop.store(true, Relaxed);
        self.handle.join().unwrap_or_else(|_| ProbeReport {
            quiet: Histogram::default().summary(),
            attack: Histogram::default().summary(),
            after: Histogram::default().summary(),
            timeouts: 0,
            error: Some("the probe thread panicked".into()),
        })
    }
}

fn probe_loop(mut ws: Ws, every: Duration, stop: &AtomicBool, phase: &AtomicU8) -> ProbeReport {
    let mut phases = [
        Histogram::default(),
        Histogram::default(),
        Histogram::default(),
    ];
    let mut timeouts = 0;
    let mut error = None;
    let mut n = 0u64;
    while !stop.load(Relaxed) {
        n += 1;
        let reference = format!("probe-{n}");
        let sent = Instant::now();
        let message = format!(r#"{{"type":"ping","ref":"{reference}"}}"#);
        if let Err(e) = ws.send_text(&message) {
            error = Some(format!("send: {e}"));
            break;
        }
        let deadline = sent + PROBE_TIMEOUT;
        let answered = loop {
            match ws.recv(deadline) {
                Ok(Some(Message::Data(text))) if is_reply(&text, &reference) => break Ok(true),
                Ok(Some(Message::Data(_))) => {}
                Ok(Some(Message::Close(code))) => break Err(format!("closed with {code}")),
                Ok(None) => break Ok(false),
                Err(e) => break Err(e),
            }
        };
        let at = usize::from(phase.load(Relaxed)).min(2);
        match answered {
            Ok(true) => phases[at].record(sent.elapsed().as_nanos() as u64),
            Ok(false) => {
                timeouts += 1;
                phases[at].record(PROBE_TIMEOUT.as_nanos() as u64);
            }
            Err(e) => {
                error = Some(e);
                break;
            }
        }
        if let Some(rest) = every.checked_sub(sent.elapsed()) {
            std::thread::sleep(rest);
        }
    }
    if error.is_none() {
        ws.close(Duration::from_secs(1));
    }
    let [quiet, attack, after] = phases.map(|h| h.summary());
    ProbeReport {
        quiet,
        attack,
        after,
        timeouts,
        error,
    }
}

/// Whether `text` is the hub's answer to the message with `ref` = `reference`.
fn is_reply(text: &[u8], reference: &str) -> bool {
    let needle = format!("\"ref\":\"{reference}\"");
    text.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// The hub's open files once they stop changing (or equal `want`), read
/// for at most `limit`; `/health` and closing sockets take a moment.
pub(crate) fn settled_fds(pid: u32, want: Option<u64>, limit: Duration) -> u64 {
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
pub(crate) fn wait_fds(pid: u32, want: u64, limit: Duration) -> Option<()> {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if procfs::open_fds(pid).is_some_and(|n| n <= want) {
            return Some(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_matched_by_the_whole_ref() {
        let pong = br#"{"type":"pong","payload":{},"ref":"probe-12","correlation_id":"c"}"#;
        assert!(is_reply(pong, "probe-12"));
        assert!(!is_reply(pong, "probe-1"));
        assert!(!is_reply(br#"{"type":"heartbeat"}"#, "probe-12"));
    }

    #[test]
    fn the_sampler_reads_this_process() {
        let sampler = Sampler::start(std::process::id(), 1, Duration::from_millis(1)).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        assert!(sampler.cap_flag().load(Relaxed), "any RSS is over 1 KiB");
        let peaks = sampler.stop();
        assert!(peaks.rss_kib > 0 && peaks.fds >= 3 && peaks.samples > 0);
    }
}
