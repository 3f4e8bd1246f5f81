//! RFC 3339 UTC timestamps with milliseconds, as every hub message carries.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A point in wall-clock time, printed as `2026-11-21T22:45:15.123Z`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp {
    /// Milliseconds since the Unix epoch.
    pub unix_ms: u64,
}

impl Timestamp {
    /// Now, by the system clock.
    pub fn now() -> Self {
        Self::from_system(SystemTime::now())
    }

    /// The timestamp of `time`; times before 1970 clamp to the epoch.
    pub fn from_system(time: SystemTime) -> Self {
        let since = time.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
        Self {
            unix_ms: u64::try_from(since.as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// The timestamp `secs` seconds after the Unix epoch.
    pub fn from_unix_secs(secs: u64) -> Self {
        Self {
            unix_ms: secs.saturating_mul(1000),
        }
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.unix_ms % 1000;
        let secs = self.unix_ms / 1000;
        let (days, rem) = (secs / 86_400, secs % 86_400);
        let (y, m, d) = civil_from_days(days as i64);
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60
        )
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The current time as an RFC 3339 string.
pub fn timestamp_now() -> String {
    Timestamp::now().to_string()
}

/// Year, month, day of the `days`th day after 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, exact for the proleptic Gregorian calendar).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(
            Timestamp { unix_ms: 0 }.to_string(),
            "1970-01-01T00:00:00.000Z"
        );
        assert_eq!(
            Timestamp {
                unix_ms: 1_795_301_115_123
            }
            .to_string(),
            "2026-11-21T22:45:15.123Z"
        );
        // A leap day, and the last millisecond of a year.
        assert_eq!(
            Timestamp {
                unix_ms: 951_782_400_000
            }
            .to_string(),
            "2000-02-29T00:00:00.000Z"
        );
        assert_eq!(
            Timestamp {
                unix_ms: 1_704_067_199_999
            }
            .to_string(),
            "2023-12-31T23:59:59.999Z"
        );
    }

    #[test]
    fn now_has_the_rfc3339_shape() {
        let s = timestamp_now();
        assert_eq!(s.len(), 24, "{s}");
        assert!(s.ends_with('Z') && s.as_bytes()[10] == b'T', "{s}");
    }
}
