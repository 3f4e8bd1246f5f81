//! The per-connection token bucket of PROTOCOL.md section 6: drops over the
//! rate, one `rate_limited` notice a second at most, and the verdict of
//! abuse after drops in 10 consecutive seconds.

use std::time::{Duration, Instant};

/// Seconds in a row with drops after which a connection is closed (1008).
pub const ABUSE_SECONDS: u64 = 10;

/// What to do with one incoming message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the rate: handle it.
    Allow,
    /// Over the rate: drop it; `notify` when the client should hear of it.
    Drop {
        /// Whether to send a `rate_limited` error (at most once a second).
        notify: bool,
    },
    /// Dropping for [`ABUSE_SECONDS`] seconds in a row: close with 1008.
    Abuse,
}

/// A token bucket with the bookkeeping for notices and abuse.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    per_s: f64,
    burst: f64,
    tokens: f64,
    refilled: Instant,
    start: Instant,
    last_notice: Option<Instant>,
    last_drop_second: Option<u64>,
    seconds_in_a_row: u64,
}

impl RateLimiter {
    /// A full bucket of `burst` tokens refilled at `per_s` a second; `per_s`
    /// 0 turns limiting off.
    pub fn new(per_s: u32, burst: u32, now: Instant) -> Self {
        Self {
            per_s: f64::from(per_s),
            burst: f64::from(burst),
            tokens: f64::from(burst),
            refilled: now,
            start: now,
            last_notice: None,
            last_drop_second: None,
            seconds_in_a_row: 0,
        }
    }

    /// Takes a token for one message at `now`.
    pub fn check(&mut self, now: Instant) -> Verdict {
        if self.per_s == 0.0 {
            return Verdict::Allow;
        }
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_s).min(self.burst);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Verdict::Allow;
        }

        let second = now.saturating_duration_since(self.start).as_secs();
        match self.last_drop_second {
            Some(s) if s == second => {}
            Some(s) if s + 1 == second => self.seconds_in_a_row += 1,
            _ => self.seconds_in_a_row = 1,
        }
        self.last_drop_second = Some(second);
        if self.seconds_in_a_row >= ABUSE_SECONDS {
            return Verdict::Abuse;
        }
        let notify = self
            .last_notice
            .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(1));
        if notify {
            self.last_notice = Some(now);
        }
        Verdict::Drop { notify }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_the_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(10, 5, t0);
        for _ in 0..5 {
            assert_eq!(r.check(t0), Verdict::Allow);
        }
        assert_eq!(r.check(t0), Verdict::Drop { notify: true });
        assert_eq!(r.check(t0), Verdict::Drop { notify: false });
        // 100 ms later one token has come back.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(r.check(t1), Verdict::Allow);
        assert_eq!(r.check(t1), Verdict::Drop { notify: false });
        // A second after the first notice, the next drop is told again.
        let t2 = t0 + Duration::from_millis(1000);
        r.tokens = 0.0;
        r.refilled = t2;
        assert_eq!(r.check(t2), Verdict::Drop { notify: true });
    }

    #[test]
    fn ten_seconds_of_drops_in_a_row_is_abuse() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(1, 1, t0);
        let mut verdict = Verdict::Allow;
        for ms in (0..10_500).step_by(50) {
            verdict = r.check(t0 + Duration::from_millis(ms));
            if verdict == Verdict::Abuse {
                assert!(ms >= 9_000, "abuse only after 10 seconds, at {ms} ms");
                break;
            }
        }
        assert_eq!(verdict, Verdict::Abuse);
    }

    #[test]
    fn a_quiet_second_resets_the_count() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(1, 1, t0);
        for s in 0..9 {
            r.tokens = 0.0;
            r.refilled = t0 + Duration::from_secs(s);
            assert!(matches!(
                r.check(t0 + Duration::from_secs(s)),
                Verdict::Drop { .. }
            ));
        }
        // Second 9 has no drop; second 10 starts a new run.
        r.tokens = 0.0;
        r.refilled = t0 + Duration::from_secs(10);
        assert!(matches!(
            r.check(t0 + Duration::from_secs(10)),
            Verdict::Drop { .. }
        ));
        assert_eq!(r.seconds_in_a_row, 1);
    }

    #[test]
    fn zero_rate_means_no_limit() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(0, 0, t0);
        for _ in 0..10_000 {
            assert_eq!(r.check(t0), Verdict::Allow);
        }
    }
}
