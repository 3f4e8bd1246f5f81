//! Latency statistics: a fixed-size log-linear histogram for per-delivery
//! latencies (millions of samples, merged across threads) and exact
//! nearest-rank percentiles for the per-publish figures (a few thousand).

use serde::Serialize;

/// Values below this are counted exactly.
const LINEAR: u64 = 128;
/// Sub-buckets per power of two above `LINEAR`: about 1.5 % resolution.
const SUB_BUCKETS: u64 = 64;
/// log2(SUB_BUCKETS).
const SUB_BITS: u32 = 6;
/// Buckets for every u64: the linear part, then 64 per power of two from 2^7.
const BUCKETS: usize = (LINEAR + (64 - 7) * SUB_BUCKETS) as usize;

/// Counts of nanosecond values in buckets no wider than 1/64 of their value.
#[derive(Debug, Clone)]
pub(crate) struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: vec![0; BUCKETS],
            total: 0,
            max: 0,
        }
    }
}

impl Histogram {
    /// Counts one value.
    pub fn record(&mut self, value: u64) {
        self.counts[bucket(value)] += 1;
        self.total += 1;
        self.max = self.max.max(value);
    }

    /// Adds every value counted in `other`.
    pub fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    /// How many values were counted.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The value at quantile `q` (0 to 1), to bucket resolution; 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = rank(q, self.total);
        let mut seen = 0;
        for (index, &n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return bucket_value(index).min(self.max);
            }
        }
        self.max
    }

    /// p50, p99 and max.
    pub fn summary(&self) -> Summary {
        Summary::new(
            self.total,
            self.quantile(0.5),
            self.quantile(0.99),
            self.max,
        )
    }
}

/// The 1-based nearest rank of quantile `q` among `n` values.
fn rank(q: f64, n: u64) -> u64 {
    ((q.clamp(0.0, 1.0) * n as f64).ceil() as u64).clamp(1, n)
}

fn bucket(value: u64) -> usize {
    if value < LINEAR {
        return value as usize;
    }
    let exponent = 63 - value.leading_zeros(); // 7..=63
    let shift = exponent - SUB_BITS;
    let mantissa = (value >> shift) - SUB_BUCKETS; // 0..64
    (LINEAR + u64::from(exponent - 7) * SUB_BUCKETS + mantissa) as usize
}

/// The middle of bucket `index`.
fn bucket_value(index: usize) -> u64 {
    let index = index as u64;
    if index < LINEAR {
        return index;
    }
    let exponent = (index - LINEAR) / SUB_BUCKETS + 7;
    let mantissa = (index - LINEAR) % SUB_BUCKETS + SUB_BUCKETS;
    let shift = exponent as u32 - SUB_BITS;
    (mantissa << shift) + ((1u64 << shift) >> 1)
}

/// Count, median, 99th percentile and maximum of nanosecond values, shown
/// in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub(crate) struct Summary {
    pub count: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Summary {
    fn new(count: u64, p50: u64, p99: u64, max: u64) -> Self {
        Self {
            count,
            p50_ms: ms(p50),
            p99_ms: ms(p99),
            max_ms: ms(max),
        }
    }

    /// Exact nearest-rank figures of `values` (nanoseconds); sorts them.
    pub fn of(values: &mut [u64]) -> Self {
        values.sort_unstable();
        let n = values.len() as u64;
        if n == 0 {
            return Self::new(0, 0, 0, 0);
        }
        let at = |q| values[(rank(q, n) - 1) as usize];
        Self::new(n, at(0.5), at(0.99), values[values.len() - 1])
    }
}

/// Nanoseconds as milliseconds with microsecond precision.
pub(crate) fn ms(ns: u64) -> f64 {
    (ns as f64 / 1_000.0).round() / 1_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_tight() {
        let mut last = 0;
        for v in (0..5_000u64).chain([1 << 20, (1 << 20) + 1, u64::MAX / 3, u64::MAX]) {
            let b = bucket(v);
            assert!(b >= last, "{v}");
            assert!(b < BUCKETS, "{v}");
            last = b;
            let mid = bucket_value(b) as f64;
            assert!(
                (mid - v as f64).abs() <= v as f64 / 64.0 + 1.0,
                "{v} -> {mid}"
            );
        }
    }

    #[test]
    fn quantiles_of_a_uniform_range() {
        let mut h = Histogram::default();
        for v in 1..=10_000u64 {
            h.record(v * 1_000);
        }
        let p50 = h.quantile(0.5) as f64;
        let p99 = h.quantile(0.99) as f64;
        assert!((p50 / 5_000_000.0 - 1.0).abs() < 0.02, "{p50}");
        assert!((p99 / 9_900_000.0 - 1.0).abs() < 0.02, "{p99}");
        assert_eq!(h.summary().max_ms, 10.0);
        let mut other = Histogram::default();
        other.record(50_000_000);
        h.merge(&other);
        assert_eq!(h.count(), 10_001);
        assert_eq!(h.summary().max_ms, 50.0);
    }

    #[test]
    fn empty_summaries_are_zero() {
        assert_eq!(Histogram::default().summary().count, 0);
        assert_eq!(Summary::of(&mut []).p99_ms, 0.0);
    }

    #[test]
    fn exact_percentiles_use_nearest_rank() {
        let mut values: Vec<u64> = (1..=100).rev().map(|v| v * 1_000_000).collect();
        let s = Summary::of(&mut values);
        assert_eq!((s.p50_ms, s.p99_ms, s.max_ms), (50.0, 99.0, 100.0));
        assert_eq!(Summary::of(&mut [7_000]).p50_ms, 0.007);
    }
}
