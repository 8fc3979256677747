//! The time a service stamps its records and events with.
//!
//! A service takes its [`Clock`] as a dependency instead of reading the system time, so
//! that the demo can create a shop's past (a year of orders in a minute, through the same
//! services, outbox and bus as live traffic) and tests can say when things happened.
//!
//! Invariants: a clock never goes backwards, and never runs ahead of the system time; so
//! when a pinned clock is released to the system time, the time it reads only moves on.
//! Operational times (token expiry, idempotency and outbox retention) keep the system time.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::{DateTime, Utc};

/// The time source of a service: the system time (the default), or a pinned clock that
/// someone in the same process moves forward.
#[derive(Clone, Default)]
pub struct Clock(Option<Arc<Mutex<Pinned>>>);

/// A pinned clock's state: it reads `at` plus the real time since `since`, and the system
/// time once `released`.
#[derive(Debug)]
struct Pinned {
    at: DateTime<Utc>,
    since: Instant,
    released: bool,
}

impl Pinned {
    fn now(&self) -> DateTime<Utc> {
        let system = Utc::now();
        if self.released {
            return system;
        }
        let elapsed = chrono::Duration::from_std(self.since.elapsed()).unwrap_or_default();
        (self.at + elapsed).min(system)
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            None => f.write_str("Clock::System"),
            Some(pinned) => write!(f, "Clock::Pinned({})", self.now_of(pinned)),
        }
    }
}

impl Clock {
    /// The system time.
    pub fn system() -> Clock {
        Clock(None)
    }

    /// A clock that reads `start` now and runs at real speed from there until it is moved
    /// ([`Clock::advance_to`]) or released ([`Clock::release`]). A `start` in the future is
    /// the system time.
    pub fn pinned(start: DateTime<Utc>) -> Clock {
        Clock(Some(Arc::new(Mutex::new(Pinned {
            at: start.min(Utc::now()),
            since: Instant::now(),
            released: false,
        }))))
    }

    /// The current time of this clock.
    pub fn now(&self) -> DateTime<Utc> {
        match &self.0 {
            None => Utc::now(),
            Some(pinned) => self.now_of(pinned),
        }
    }

    fn now_of(&self, pinned: &Mutex<Pinned>) -> DateTime<Utc> {
        // A poisoned lock only means a panic elsewhere while holding it; the state is a
        // plain value that is always whole.
        pinned.lock().unwrap_or_else(|e| e.into_inner()).now()
    }

    /// Moves a pinned clock forward to `to`: never backwards (an earlier `to` leaves it
    /// where it is) and never past the system time. No effect on the system clock.
    pub fn advance_to(&self, to: DateTime<Utc>) {
        if let Some(pinned) = &self.0 {
            let mut state = pinned.lock().unwrap_or_else(|e| e.into_inner());
            let current = state.now();
            if to > current && !state.released {
                state.at = to.min(Utc::now());
                state.since = Instant::now();
            }
        }
    }

    /// Lets a pinned clock run on the system time from now on.
    pub fn release(&self) {
        if let Some(pinned) = &self.0 {
            pinned.lock().unwrap_or_else(|e| e.into_inner()).released = true;
        }
    }

    /// Whether this clock reads the system time (it was never pinned, or was released).
    pub fn is_system(&self) -> bool {
        self.0
            .as_ref()
            .is_none_or(|p| p.lock().unwrap_or_else(|e| e.into_inner()).released)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn days(n: i64) -> chrono::Duration {
        chrono::Duration::days(n)
    }

    #[test]
    fn the_system_clock_reads_the_system_time() {
        let clock = Clock::system();
        let before = Utc::now();
        let now = clock.now();
        assert!(now >= before && now <= Utc::now());
        clock.advance_to(before - days(3));
        assert!(clock.now() >= now);
        assert!(clock.is_system());
    }

    #[test]
    fn a_pinned_clock_starts_in_the_past_and_only_moves_forward() {
        let start = Utc::now() - days(365);
        let clock = Clock::pinned(start);
        assert!(!clock.is_system());
        let t0 = clock.now();
        assert!(t0 >= start && t0 < start + days(1), "{t0} vs {start}");
        clock.advance_to(start + days(10));
        let t1 = clock.now();
        assert!(t1 >= start + days(10) && t1 < start + days(11), "{t1}");
        // Backwards is refused: the clock stays where it was.
        clock.advance_to(start + days(2));
        assert!(clock.now() >= t1);
        // A copy is the same clock.
        let copy = clock.clone();
        copy.advance_to(start + days(20));
        assert!(clock.now() >= start + days(20));
    }

    #[test]
    fn a_pinned_clock_never_runs_ahead_of_the_system_time_and_releases_to_it() {
        let clock = Clock::pinned(Utc::now() + days(5));
        assert!(clock.now() <= Utc::now());
        let clock = Clock::pinned(Utc::now() - days(1));
        clock.advance_to(Utc::now() + days(30));
        let now = clock.now();
        assert!(now <= Utc::now());
        clock.release();
        assert!(clock.is_system());
        assert!(clock.now() >= now);
        // Released, it is not pinned again.
        clock.advance_to(Utc::now() + days(1));
        assert!(clock.now() <= Utc::now());
    }
}
