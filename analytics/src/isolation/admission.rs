//! Who may run a query now: at most `max_concurrent` queries at once over all users and
//! `max_concurrent_per_user` for one user, at most `max_queued` waiting, none waiting past
//! `queue_timeout` or its deadline. Beyond that a query is refused at once as too busy
//! (HTTP 503, SQLSTATE 53300): a flood of queries costs the server a refusal each, never a
//! growing queue.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::AnalyticsError;

/// User entries kept before idle ones are dropped from the map.
const USERS_KEPT: usize = 1024;

pub struct Admission {
    total: Arc<Semaphore>,
    max_total: usize,
    per_user: usize,
    users: Mutex<HashMap<String, Arc<Semaphore>>>,
    waiting: AtomicUsize,
    max_waiting: usize,
    queue_timeout: Duration,
}

/// A query's right to run; dropping it frees the slot.
#[derive(Debug)]
pub struct Permit {
    _user: OwnedSemaphorePermit,
    _total: OwnedSemaphorePermit,
}

impl Admission {
    pub fn new(
        max_total: usize,
        per_user: usize,
        max_waiting: usize,
        queue_timeout: Duration,
    ) -> Admission {
        let max_total = max_total.clamp(1, Semaphore::MAX_PERMITS);
        Admission {
            total: Arc::new(Semaphore::new(max_total)),
            max_total,
            per_user: per_user.clamp(1, max_total),
            users: Mutex::new(HashMap::new()),
            waiting: AtomicUsize::new(0),
            max_waiting,
            queue_timeout,
        }
    }

    /// Queries running now.
    pub fn running(&self) -> usize {
        self.max_total - self.total.available_permits()
    }

    /// Queries waiting for a slot now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    fn user(&self, user: &str) -> Arc<Semaphore> {
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        if users.len() >= USERS_KEPT && !users.contains_key(user) {
            // Only this map holds an idle user's semaphore.
            users.retain(|_, s| Arc::strong_count(s) > 1);
        }
        users
            .entry(user.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_user)))
            .clone()
    }

    /// A slot for `user`, waiting in line until `deadline` at the latest.
    pub async fn acquire(&self, user: &str, deadline: Instant) -> Result<Permit, AnalyticsError> {
        let mine = self.user(user);
        if let Ok(u) = mine.clone().try_acquire_owned() {
            if let Ok(t) = self.total.clone().try_acquire_owned() {
                return Ok(Permit {
                    _user: u,
                    _total: t,
                });
            }
            drop(u);
        }
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(self.busy());
        }
        let until = deadline.min(Instant::now() + self.queue_timeout);
        let total = self.total.clone();
        let got = tokio::time::timeout_at(until, async move {
            let u = mine.acquire_owned().await;
            let t = total.acquire_owned().await;
            (u, t)
        })
        .await;
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        match got {
            Ok((Ok(u), Ok(t))) => Ok(Permit {
                _user: u,
                _total: t,
            }),
            _ => Err(self.busy()),
        }
    }

    fn busy(&self) -> AnalyticsError {
        AnalyticsError::Busy(format!(
            "the analytics server is too busy: {} queries may run at once ({} per user) and \
             {} wait; try again shortly",
            self.max_total, self.per_user, self.max_waiting
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn later(ms: u64) -> Instant {
        Instant::now() + Duration::from_millis(ms)
    }

    #[tokio::test]
    async fn per_user_and_total_limits_hold_and_a_full_queue_refuses_at_once() {
        let a = Admission::new(2, 1, 1, Duration::from_millis(200));
        let first = a.acquire("ann", later(1000)).await.unwrap();
        // Ann's second query waits for her first, then gives up as too busy.
        let started = Instant::now();
        let e = a.acquire("ann", later(1000)).await.unwrap_err();
        assert!(matches!(e, AnalyticsError::Busy(_)), "{e}");
        assert!(started.elapsed() >= Duration::from_millis(150));
        // Bob has his own slot.
        let second = a.acquire("bob", later(1000)).await.unwrap();
        assert_eq!(a.running(), 2);
        // Carol waits in the one queue place; Dave finds the queue full and is refused
        // without waiting.
        let carol = a.acquire("carol", later(2000));
        tokio::pin!(carol);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), &mut carol)
                .await
                .is_err()
        );
        let started = Instant::now();
        let e = a.acquire("dave", later(1000)).await.unwrap_err();
        assert!(matches!(e, AnalyticsError::Busy(_)));
        assert!(started.elapsed() < Duration::from_millis(50));
        drop(first);
        let third = carol.await.unwrap();
        assert_eq!(a.running(), 2);
        drop((second, third));
        assert_eq!(a.running(), 0);
        assert_eq!(a.waiting(), 0);
    }

    #[tokio::test]
    async fn waiting_never_passes_the_deadline() {
        let a = Admission::new(1, 1, 8, Duration::from_secs(60));
        let _held = a.acquire("ann", later(10_000)).await.unwrap();
        let started = Instant::now();
        assert!(a.acquire("bob", later(100)).await.is_err());
        assert!(started.elapsed() < Duration::from_millis(500));
    }
}
