//! Pacing of order starts: order `k` is due `k / rate` seconds after the start.

use std::time::Duration;

use tokio::time::Instant;

/// How far behind schedule the simulator may fall (because every lifecycle slot was busy)
/// before it forgets the missed starts instead of bursting to catch up.
pub const MAX_LAG: Duration = Duration::from_secs(1);

/// Schedules order starts at a steady rate from a start instant, without drift: order `k`
/// is due at `start + k / rate`. When it falls more than [`MAX_LAG`] behind, it moves its
/// start so that the current order is due now (so at most a second's worth of orders start
/// in a burst after a stall).
#[derive(Clone, Debug)]
pub struct Pacer {
    interval: Option<Duration>,
    start: Instant,
    /// The order number `start` refers to (moves with a re-base).
    base: u64,
}

impl Pacer {
    /// `rate_per_sec` of 0 (or less, or not finite) means as fast as possible.
    pub fn new(rate_per_sec: f64, start: Instant) -> Pacer {
        let interval = (rate_per_sec.is_finite() && rate_per_sec > 0.0)
            .then(|| Duration::from_secs_f64(1.0 / rate_per_sec));
        Pacer {
            interval,
            start,
            base: 0,
        }
    }

    /// The time between two starts (None = no pacing).
    pub fn interval(&self) -> Option<Duration> {
        self.interval
    }

    /// When order `k` (counted from 0, asked in increasing order) may start, given that it
    /// is `now`.
    pub fn schedule(&mut self, k: u64, now: Instant) -> Instant {
        let Some(interval) = self.interval else {
            return now;
        };
        let due = self.start + interval.mul_f64(k.saturating_sub(self.base) as f64);
        if now > due + MAX_LAG {
            self.start = now;
            self.base = k;
            return now;
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_are_due_at_even_intervals_from_the_start() {
        let t0 = Instant::now();
        let mut pacer = Pacer::new(20.0, t0);
        assert_eq!(pacer.interval(), Some(Duration::from_millis(50)));
        assert_eq!(pacer.schedule(0, t0), t0);
        assert_eq!(pacer.schedule(1, t0), t0 + Duration::from_millis(50));
        assert_eq!(pacer.schedule(10, t0), t0 + Duration::from_millis(500));
        // Asking late (but within the allowed lag) does not move the schedule: no drift.
        let late = t0 + Duration::from_millis(900);
        assert_eq!(pacer.schedule(11, late), t0 + Duration::from_millis(550));
        assert_eq!(pacer.schedule(20, late), t0 + Duration::from_millis(1000));
    }

    #[test]
    fn the_festival_rate_shortens_the_interval() {
        let t0 = Instant::now();
        let mut pacer = Pacer::new(20.0 * 10.0, t0);
        assert_eq!(pacer.schedule(100, t0), t0 + Duration::from_millis(500));
    }

    #[test]
    fn far_behind_it_rebases_instead_of_bursting() {
        let t0 = Instant::now();
        let mut pacer = Pacer::new(10.0, t0);
        let stalled = t0 + Duration::from_secs(5);
        assert_eq!(pacer.schedule(3, stalled), stalled);
        assert_eq!(
            pacer.schedule(4, stalled),
            stalled + Duration::from_millis(100)
        );
        assert_eq!(
            pacer.schedule(13, stalled),
            stalled + Duration::from_secs(1)
        );
    }

    #[test]
    fn rate_zero_means_no_waiting() {
        let t0 = Instant::now();
        for rate in [0.0, -3.0, f64::INFINITY, f64::NAN] {
            let mut pacer = Pacer::new(rate, t0);
            assert_eq!(pacer.interval(), None);
            assert_eq!(pacer.schedule(1_000_000, t0), t0);
        }
    }
}
