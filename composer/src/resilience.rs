//! Protecting the services from the composer: a circuit breaker and a retry budget per
//! service.
//!
//! The breaker counts consecutive failures (refused, timed out, 5xx); at the threshold it
//! opens and calls fail at once without touching the network. After `open_ms` one probe call
//! is let through (half-open): success closes the circuit, failure opens it again. A probe
//! that is abandoned (its request hit the deadline) frees the slot for the next one.
//!
//! The retry budget lets retries add at most `budget_ratio` of the first attempts' load (plus
//! a small floor per second), so a failing service sees at most that many extra calls.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::metrics::gauge::Gauge;

use crate::config::{BreakerConfig, RetryConfig};

/// The state of a circuit, as the `composer_circuit_state` gauge shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CircuitState {
    Closed = 0,
    Open = 1,
    HalfOpen = 2,
}

struct BreakerInner {
    state: CircuitState,
    consecutive_failures: u32,
    opened_at: Instant,
    probe_in_flight: bool,
}

/// A circuit breaker for one service. Cheap to share (`Arc`).
pub struct CircuitBreaker {
    config: BreakerConfig,
    inner: Mutex<BreakerInner>,
    gauge: Gauge,
}

/// Permission to make one call; report its outcome with [`Permit::success`] or
/// [`Permit::failure`]. Dropping it unreported (a cancelled call) reports nothing.
pub struct Permit {
    breaker: Arc<CircuitBreaker>,
    probe: bool,
    reported: bool,
}

impl CircuitBreaker {
    pub fn new(config: BreakerConfig, gauge: Gauge) -> Arc<CircuitBreaker> {
        gauge.set(CircuitState::Closed as i64);
        Arc::new(CircuitBreaker {
            config,
            inner: Mutex::new(BreakerInner {
                state: CircuitState::Closed,
                consecutive_failures: 0,
                opened_at: Instant::now(),
                probe_in_flight: false,
            }),
            gauge,
        })
    }

    pub fn state(&self) -> CircuitState {
        self.inner.lock().expect("breaker lock").state
    }

    fn set(&self, inner: &mut BreakerInner, state: CircuitState) {
        if inner.state != state {
            tracing::info!(from = ?inner.state, to = ?state, "circuit breaker changed state");
        }
        inner.state = state;
        self.gauge.set(state as i64);
    }

    /// A permit to call, or `None` when the circuit is open (or half-open with its probe
    /// already out).
    pub fn try_acquire(self: &Arc<Self>) -> Option<Permit> {
        if !self.config.enabled {
            return Some(self.permit(false));
        }
        let mut inner = self.inner.lock().expect("breaker lock");
        match inner.state {
            CircuitState::Closed => Some(self.permit(false)),
            CircuitState::Open => {
                if inner.opened_at.elapsed() >= Duration::from_millis(self.config.open_ms) {
                    self.set(&mut inner, CircuitState::HalfOpen);
                    inner.probe_in_flight = true;
                    Some(self.permit(true))
                } else {
                    None
                }
            }
            CircuitState::HalfOpen => {
                if inner.probe_in_flight {
                    None
                } else {
                    inner.probe_in_flight = true;
                    Some(self.permit(true))
                }
            }
        }
    }

    fn permit(self: &Arc<Self>, probe: bool) -> Permit {
        Permit {
            breaker: self.clone(),
            probe,
            reported: false,
        }
    }

    fn record(&self, ok: bool, probe: bool) {
        if !self.config.enabled {
            return;
        }
        let mut inner = self.inner.lock().expect("breaker lock");
        if probe {
            inner.probe_in_flight = false;
        }
        if ok {
            inner.consecutive_failures = 0;
            self.set(&mut inner, CircuitState::Closed);
            return;
        }
        inner.consecutive_failures = inner.consecutive_failures.saturating_add(1);
        let trip = match inner.state {
            CircuitState::Closed => inner.consecutive_failures >= self.config.failure_threshold,
            CircuitState::HalfOpen => true,
            CircuitState::Open => false,
        };
        if trip {
            inner.opened_at = Instant::now();
            self.set(&mut inner, CircuitState::Open);
        }
    }
}

impl Permit {
    pub fn success(mut self) {
        self.reported = true;
        self.breaker.record(true, self.probe);
    }

    pub fn failure(mut self) {
        self.reported = true;
        self.breaker.record(false, self.probe);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.reported && self.probe {
            self.breaker
                .inner
                .lock()
                .expect("breaker lock")
                .probe_in_flight = false;
        }
    }
}

struct BudgetInner {
    tokens: f64,
    window_start: Instant,
    floor_used: u32,
}

/// How many retries a service may still get.
pub struct RetryBudget {
    ratio: f64,
    floor_per_sec: u32,
    inner: Mutex<BudgetInner>,
}

/// Most retry tokens that can pile up in a quiet period.
const MAX_TOKENS: f64 = 100.0;

impl RetryBudget {
    pub fn new(config: &RetryConfig) -> RetryBudget {
        RetryBudget {
            ratio: config.budget_ratio.max(0.0),
            floor_per_sec: config.budget_min_per_sec,
            inner: Mutex::new(BudgetInner {
                tokens: 0.0,
                window_start: Instant::now(),
                floor_used: 0,
            }),
        }
    }

    /// Called for every first attempt: earns a fraction of a retry.
    pub fn deposit(&self) {
        let mut inner = self.inner.lock().expect("budget lock");
        inner.tokens = (inner.tokens + self.ratio).min(MAX_TOKENS);
    }

    /// Spends one retry, if the budget allows it.
    pub fn try_withdraw(&self) -> bool {
        let mut inner = self.inner.lock().expect("budget lock");
        if inner.window_start.elapsed() >= Duration::from_secs(1) {
            inner.window_start = Instant::now();
            inner.floor_used = 0;
        }
        if inner.floor_used < self.floor_per_sec {
            inner.floor_used += 1;
            true
        } else if inner.tokens >= 1.0 {
            inner.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(threshold: u32, open_ms: u64) -> Arc<CircuitBreaker> {
        CircuitBreaker::new(
            BreakerConfig {
                enabled: true,
                failure_threshold: threshold,
                open_ms,
            },
            Gauge::default(),
        )
    }

    #[test]
    fn opens_after_consecutive_failures_and_rejects_calls() {
        let b = breaker(3, 60_000);
        b.try_acquire().unwrap().failure();
        b.try_acquire().unwrap().failure();
        b.try_acquire().unwrap().success(); // resets the count
        b.try_acquire().unwrap().failure();
        b.try_acquire().unwrap().failure();
        assert_eq!(b.state(), CircuitState::Closed);
        b.try_acquire().unwrap().failure();
        assert_eq!(b.state(), CircuitState::Open);
        assert!(b.try_acquire().is_none());
        assert_eq!(b.gauge.get(), 1);
    }

    #[test]
    fn half_open_lets_one_probe_through_then_closes_or_reopens() {
        let b = breaker(1, 20);
        b.try_acquire().unwrap().failure();
        assert!(b.try_acquire().is_none());
        std::thread::sleep(Duration::from_millis(30));
        let probe = b.try_acquire().expect("probe after open_ms");
        assert_eq!(b.state(), CircuitState::HalfOpen);
        assert_eq!(b.gauge.get(), 2);
        assert!(b.try_acquire().is_none(), "only one probe at a time");
        probe.failure();
        assert_eq!(b.state(), CircuitState::Open);
        assert!(b.try_acquire().is_none());
        std::thread::sleep(Duration::from_millis(30));
        b.try_acquire().unwrap().success();
        assert_eq!(b.state(), CircuitState::Closed);
        assert_eq!(b.gauge.get(), 0);
        assert!(b.try_acquire().is_some());
    }

    #[test]
    fn an_abandoned_probe_frees_the_slot() {
        let b = breaker(1, 0);
        b.try_acquire().unwrap().failure();
        let probe = b.try_acquire().unwrap();
        assert!(b.try_acquire().is_none());
        drop(probe);
        assert!(b.try_acquire().is_some());
    }

    #[test]
    fn a_disabled_breaker_never_opens() {
        let b = CircuitBreaker::new(
            BreakerConfig {
                enabled: false,
                failure_threshold: 1,
                open_ms: 60_000,
            },
            Gauge::default(),
        );
        for _ in 0..5 {
            b.try_acquire().unwrap().failure();
        }
        assert!(b.try_acquire().is_some());
    }

    #[test]
    fn retry_budget_has_a_floor_and_a_ratio() {
        let budget = RetryBudget::new(&RetryConfig {
            budget_ratio: 0.5,
            budget_min_per_sec: 2,
            ..Default::default()
        });
        assert!(budget.try_withdraw());
        assert!(budget.try_withdraw());
        assert!(!budget.try_withdraw(), "floor spent, no tokens earned");
        for _ in 0..4 {
            budget.deposit();
        }
        assert!(budget.try_withdraw());
        assert!(budget.try_withdraw());
        assert!(!budget.try_withdraw(), "four calls at 0.5 earn two retries");
    }
}
