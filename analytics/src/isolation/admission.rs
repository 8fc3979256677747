//! Who may run a query now: at most `max_concurrent` queries at once over all users and
//! `max_concurrent_per_user` for one user, at most `max_queued` waiting, none waiting past
//! `queue_timeout` or its deadline. Beyond that a query is refused at once as too busy
//! (HTTP 503, SQLSTATE 53300): a flood of queries costs the server a refusal each, never a
//! growing queue.
//!
//! **Cool-down.** A query that ends its worker (killed at its deadline, past its memory or
//! CPU cap, or abandoned by its client) is a strike against its user: that user's queries
//! then start at most one per cool-down (`cool_down`, doubled with each strike in a row, up
//! to `max_cool_down`), until one of them ends normally. Every such query costs the machine a
//! worker process torn down and another started, and the memory a dying worker gives back
//! and a new one takes stalls the whole machine now and then (measured on the benchmark
//! machine: benches/RESULTS.md, "Query isolation"); a user whose queries keep hitting their
//! limits is slowed down rather than allowed to keep the machine churning.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::AnalyticsError;
use crate::engine::WorkersConfig;

/// User entries kept before idle ones are dropped from the map.
const USERS_KEPT: usize = 1024;

pub struct Admission {
    total: Arc<Semaphore>,
    max_total: usize,
    per_user: usize,
    users: Mutex<HashMap<String, Arc<User>>>,
    waiting: Arc<AtomicUsize>,
    max_waiting: usize,
    queue_timeout: Duration,
    cool_down: CoolDown,
}

/// How long a user whose queries ended their workers waits between starts.
#[derive(Debug, Clone, Copy, Default)]
pub struct CoolDown {
    /// After one strike; zero: no cool-down.
    pub first: Duration,
    /// The longest, however many strikes in a row.
    pub max: Duration,
}

impl CoolDown {
    /// The cool-down `config` asks for.
    pub fn of(config: &WorkersConfig) -> CoolDown {
        CoolDown {
            first: Duration::from_millis(config.cool_down_ms),
            max: Duration::from_millis(config.max_cool_down_ms),
        }
    }

    /// The wait between starts after `strikes` strikes in a row.
    fn after(&self, strikes: u32) -> Duration {
        let doubled = 1u32 << strikes.saturating_sub(1).min(20);
        self.first
            .saturating_mul(doubled)
            .min(self.max.max(self.first))
    }
}

/// One user's slots and cool-down.
struct User {
    slots: Arc<Semaphore>,
    cooling: Mutex<Cooling>,
}

#[derive(Default)]
struct Cooling {
    /// Strikes in a row (queries that ended their workers, with none ending normally since).
    strikes: u32,
    /// This user's next query starts no earlier.
    next_start: Option<Instant>,
}

impl User {
    fn cooling(&self) -> std::sync::MutexGuard<'_, Cooling> {
        self.cooling.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_cooling(&self) -> bool {
        self.cooling().strikes > 0
    }
}

/// A query's right to run; dropping it frees the slot.
pub struct Permit {
    user: Arc<User>,
    cool_down: CoolDown,
    _user: OwnedSemaphorePermit,
    _total: OwnedSemaphorePermit,
}

impl std::fmt::Debug for Permit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Permit").finish_non_exhaustive()
    }
}

impl Permit {
    /// The query ended its worker: a strike against its user.
    pub fn strike(&self) {
        if self.cool_down.first.is_zero() {
            return;
        }
        let mut c = self.user.cooling();
        c.strikes = c.strikes.saturating_add(1);
        let until = Instant::now() + self.cool_down.after(c.strikes);
        c.next_start = Some(c.next_start.map_or(until, |at| at.max(until)));
    }

    /// The query ended normally: its user's strikes are cleared.
    pub fn clear(&self) {
        let mut c = self.user.cooling();
        if c.strikes > 0 {
            *c = Cooling::default();
        }
    }
}

/// Counts one waiting query for as long as it lives, so a query whose client goes away
/// while it waits (its future dropped) leaves the count right.
struct Waiting(Arc<AtomicUsize>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Admission {
    pub fn new(
        max_total: usize,
        per_user: usize,
        max_waiting: usize,
        queue_timeout: Duration,
        cool_down: CoolDown,
    ) -> Admission {
        let max_total = max_total.clamp(1, Semaphore::MAX_PERMITS);
        Admission {
            total: Arc::new(Semaphore::new(max_total)),
            max_total,
            per_user: per_user.clamp(1, max_total),
            users: Mutex::new(HashMap::new()),
            waiting: Arc::new(AtomicUsize::new(0)),
            max_waiting,
            queue_timeout,
            cool_down,
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

    fn user(&self, user: &str) -> Arc<User> {
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        if users.len() >= USERS_KEPT && !users.contains_key(user) {
            // Only this map holds an idle user's entry; a cooling user's is kept, or its
            // cool-down would end with it.
            users.retain(|_, u| Arc::strong_count(u) > 1 || u.is_cooling());
        }
        users
            .entry(user.to_owned())
            .or_insert_with(|| {
                Arc::new(User {
                    slots: Arc::new(Semaphore::new(self.per_user)),
                    cooling: Mutex::new(Cooling::default()),
                })
            })
            .clone()
    }

    /// One more query waiting, or none if the queue is full.
    fn wait_in_line(&self) -> Option<Waiting> {
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        Some(Waiting(self.waiting.clone()))
    }

    /// A slot for `user`, waiting in line until `deadline` at the latest.
    pub async fn acquire(&self, user: &str, deadline: Instant) -> Result<Permit, AnalyticsError> {
        let mine = self.user(user);
        let now = Instant::now();
        let until = deadline.min(now + self.queue_timeout);
        // A cooling user's queries start one cool-down apart: each takes the next start time
        // (if it can wait that long) and moves it on.
        let start_at = {
            let mut c = mine.cooling();
            (c.strikes > 0).then(|| {
                let every = self.cool_down.after(c.strikes);
                let at = c.next_start.unwrap_or(now).max(now);
                if at <= until {
                    c.next_start = Some(at + every);
                }
                (at, every)
            })
        };
        if let Some((at, every)) = start_at.filter(|(at, _)| *at > now) {
            let Some(_waiting) = self.wait_in_line() else {
                return Err(self.busy());
            };
            if at > until {
                tokio::time::sleep_until(until).await;
                return Err(AnalyticsError::Busy(format!(
                    "this user's recent queries ended their workers (deadline, memory or CPU \
                     limit), so its queries start at most one per {:.1} s; the next may start \
                     in {:.1} s",
                    every.as_secs_f64(),
                    at.saturating_duration_since(Instant::now()).as_secs_f64()
                )));
            }
            tokio::time::sleep_until(at).await;
        }
        let Some((u, t)) = self.slots(&mine, until).await else {
            return Err(self.busy());
        };
        Ok(Permit {
            user: mine,
            cool_down: self.cool_down,
            _user: u,
            _total: t,
        })
    }

    /// The user's slot and one of the total, waiting in line until `until` if need be.
    async fn slots(
        &self,
        mine: &User,
        until: Instant,
    ) -> Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)> {
        if let Ok(u) = mine.slots.clone().try_acquire_owned() {
            if let Ok(t) = self.total.clone().try_acquire_owned() {
                return Some((u, t));
            }
            drop(u);
        }
        let _waiting = self.wait_in_line()?;
        let (slots, total) = (mine.slots.clone(), self.total.clone());
        let got = tokio::time::timeout_at(until, async move {
            let u = slots.acquire_owned().await;
            let t = total.acquire_owned().await;
            (u, t)
        })
        .await;
        match got {
            Ok((Ok(u), Ok(t))) => Some((u, t)),
            _ => None,
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
        let a = Admission::new(2, 1, 1, Duration::from_millis(200), CoolDown::default());
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
        let a = Admission::new(1, 1, 8, Duration::from_secs(60), CoolDown::default());
        let _held = a.acquire("ann", later(10_000)).await.unwrap();
        let started = Instant::now();
        assert!(a.acquire("bob", later(100)).await.is_err());
        assert!(started.elapsed() < Duration::from_millis(500));
    }

    fn cooling(first_ms: u64, max_ms: u64) -> Admission {
        let cool_down = CoolDown {
            first: Duration::from_millis(first_ms),
            max: Duration::from_millis(max_ms),
        };
        Admission::new(4, 4, 8, Duration::from_secs(10), cool_down)
    }

    /// How long `user` waits for a slot.
    async fn wait_of(a: &Admission, user: &str) -> (Duration, Permit) {
        let started = Instant::now();
        let permit = a.acquire(user, later(10_000)).await.unwrap();
        (started.elapsed(), permit)
    }

    #[tokio::test]
    async fn a_user_whose_queries_end_their_workers_waits_longer_each_time_until_one_ends_well() {
        let a = cooling(100, 250);
        let ms = Duration::from_millis;
        let (waited, first) = wait_of(&a, "ann").await;
        assert!(waited < ms(50));
        first.strike();
        drop(first);
        // Bob is not Ann.
        let (waited, _bob) = wait_of(&a, "bob").await;
        assert!(waited < ms(50), "{waited:?}");
        let (waited, second) = wait_of(&a, "ann").await;
        assert!(waited >= ms(90), "one strike: {waited:?}");
        second.strike();
        drop(second);
        let (waited, third) = wait_of(&a, "ann").await;
        assert!(waited >= ms(190), "two strikes: {waited:?}");
        third.strike();
        drop(third);
        let (waited, fourth) = wait_of(&a, "ann").await;
        assert!(
            waited >= ms(240) && waited < ms(390),
            "three strikes, capped: {waited:?}"
        );
        fourth.clear();
        drop(fourth);
        let (waited, _fifth) = wait_of(&a, "ann").await;
        assert!(waited < ms(50), "cleared: {waited:?}");
    }

    #[tokio::test]
    async fn a_cooling_user_s_queries_start_one_cool_down_apart() {
        let a = Arc::new(cooling(100, 1_000));
        let first = a.acquire("ann", later(1_000)).await.unwrap();
        first.strike();
        drop(first);
        let started = Instant::now();
        let mut waits = Vec::new();
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..3 {
            let a = a.clone();
            set.spawn(async move {
                let permit = a.acquire("ann", later(10_000)).await.unwrap();
                (Instant::now(), permit)
            });
        }
        let mut permits = Vec::new();
        while let Some(done) = set.join_next().await {
            let (at, permit) = done.unwrap();
            waits.push(at - started);
            permits.push(permit);
        }
        waits.sort();
        for pair in waits.windows(2) {
            assert!(
                pair[1] - pair[0] >= Duration::from_millis(90),
                "starts {waits:?}"
            );
        }
        assert_eq!(a.waiting(), 0);
    }

    #[tokio::test]
    async fn a_cool_down_past_the_deadline_is_too_busy_and_says_so() {
        let a = cooling(5_000, 5_000);
        let first = a.acquire("ann", later(1_000)).await.unwrap();
        first.strike();
        drop(first);
        let started = Instant::now();
        let e = a.acquire("ann", later(100)).await.unwrap_err();
        assert!(started.elapsed() < Duration::from_millis(1_000));
        let AnalyticsError::Busy(message) = e else {
            panic!("{e}");
        };
        assert!(message.contains("one per 5.0 s"), "{message}");
        assert_eq!(a.waiting(), 0);
    }

    #[tokio::test]
    async fn a_query_whose_client_goes_away_while_it_waits_leaves_the_queue() {
        let a = Admission::new(1, 1, 1, Duration::from_secs(60), CoolDown::default());
        let _held = a.acquire("ann", later(10_000)).await.unwrap();
        for _ in 0..3 {
            let gone =
                tokio::time::timeout(Duration::from_millis(30), a.acquire("bob", later(10_000)));
            assert!(gone.await.is_err());
            assert_eq!(a.waiting(), 0);
        }
    }
}
