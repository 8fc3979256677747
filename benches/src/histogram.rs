//! A bounded-memory latency histogram (HDR-style log-linear buckets, about 1.6 % relative
//! precision), so a long run keeps a fixed few kilobytes per histogram instead of every
//! sample.

use std::time::Duration;

/// Values below this (in microseconds) have a bucket each.
const LINEAR: u64 = 128;
/// Sub-buckets per power of two above [`LINEAR`].
const SUB_BITS: u32 = 6;
const SUB: u64 = 1 << SUB_BITS;
const BUCKETS: usize = LINEAR as usize + (64 - 7) * SUB as usize;

/// Latencies in microseconds.
#[derive(Clone, Debug)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
    sum: u128,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
            max: 0,
            sum: 0,
        }
    }
}

fn index(us: u64) -> usize {
    if us < LINEAR {
        return us as usize;
    }
    let exp = 63 - us.leading_zeros(); // >= 7
    let mantissa = (us >> (exp - SUB_BITS)) - SUB; // 0..SUB
    LINEAR as usize + (exp as usize - 7) * SUB as usize + mantissa as usize
}

/// The middle of bucket `i`, in microseconds.
fn value_of(i: usize) -> f64 {
    if (i as u64) < LINEAR {
        return i as f64;
    }
    let j = i - LINEAR as usize;
    let exp = (j / SUB as usize) as u32 + 7;
    let mantissa = (j % SUB as usize) as u64 + SUB;
    let low = mantissa << (exp - SUB_BITS);
    let width = 1u64 << (exp - SUB_BITS);
    low as f64 + (width as f64 - 1.0) / 2.0
}

impl Histogram {
    pub fn record(&mut self, latency: Duration) {
        self.record_us(latency.as_micros().min(u128::from(u64::MAX)) as u64);
    }

    pub fn record_us(&mut self, us: u64) {
        self.counts[index(us)] += 1;
        self.total += 1;
        self.max = self.max.max(us);
        self.sum += u128::from(us);
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
        self.sum += other.sum;
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    /// The `q` quantile (0..=1) in milliseconds; 0 when empty.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return (value_of(i).min(self.max as f64)) / 1000.0;
            }
        }
        self.max as f64 / 1000.0
    }

    pub fn mean_ms(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.sum as f64 / self.total as f64 / 1000.0
        }
    }

    pub fn max_ms(&self) -> f64 {
        self.max as f64 / 1000.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_two_percent() {
        let mut h = Histogram::default();
        for us in 1..=100_000u64 {
            h.record_us(us);
        }
        assert_eq!(h.count(), 100_000);
        for (q, want) in [(0.5, 50.0), (0.99, 99.0), (0.999, 99.9)] {
            let got = h.quantile_ms(q);
            assert!((got - want).abs() / want < 0.02, "q{q}: {got} vs {want}");
        }
        assert!((h.quantile_ms(0.0001) - 0.010).abs() < 0.001);
        assert_eq!(h.max_ms(), 100.0);
    }

    #[test]
    fn buckets_cover_every_value_and_merge_adds() {
        for us in [0, 1, 127, 128, 129, 255, 256, 1 << 40, u64::MAX] {
            let i = index(us);
            assert!(i < BUCKETS, "{us}");
            let v = value_of(i);
            assert!(
                us == 0 || (v - us as f64).abs() / us as f64 <= 0.016,
                "{us} -> {v}"
            );
        }
        let mut a = Histogram::default();
        let mut b = Histogram::default();
        a.record_us(10);
        b.record_us(1000);
        a.merge(&b);
        assert_eq!(a.count(), 2);
        assert_eq!(a.quantile_ms(1.0), 1.0);
        assert_eq!(Histogram::default().quantile_ms(0.5), 0.0);
    }
}
