//! Protecting the services from the composer: a circuit breaker per replica of each service
//! (the kit's [`shoplens_kit::balance`], re-exported here) and a retry budget per service.
//!
//! A replica's breaker counts consecutive failures (refused, timed out, 5xx); at the
//! threshold it opens and the replica is skipped; when every replica's circuit is open, calls
//! fail at once without touching the network. After `open_ms` one probe call is let through
//! (half-open): success closes the circuit, failure opens it again. A probe that is abandoned
//! (its request hit the deadline) frees the slot for the next one.
//!
//! The retry budget lets retries add at most `budget_ratio` of the first attempts' load (plus
//! a small floor per second), so a failing service sees at most that many extra calls.

use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use shoplens_kit::balance::{Balancer, CircuitBreaker, CircuitState, Permit, Pick};

use crate::config::RetryConfig;

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
