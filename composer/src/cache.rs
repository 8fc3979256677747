//! The short-TTL cache of one section (orders, payments, ...), with load coalescing and
//! stale-if-error.
//!
//! Two moka caches per section: `fresh` holds entries for the section's TTL and is what
//! requests read; concurrent misses for one key run one load and the others wait for it
//! (`entry().or_try_insert_with`; batch look-ups keep their own map of loads in flight).
//! `last_good` holds every successful load for TTL + `stale_for`, and is read only when a
//! load fails or misses the deadline: its entry is then served, marked stale, with its age.
//! Event-driven invalidation removes keys from `fresh` only: what was true a moment ago is
//! still the best answer when the service is down.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use moka::future::Cache;
use tokio::time::Instant;

use crate::downstream::{FetchError, REQUEST_CALLS};
use crate::metrics::{ComposerMetrics, SectionLabels};
use tracing::Instrument;

/// A value and when it was fetched from its service.
#[derive(Clone, Debug)]
pub struct Fetched<V> {
    pub value: Arc<V>,
    pub as_of: DateTime<Utc>,
    pub at: std::time::Instant,
}

impl<V> Fetched<V> {
    pub fn now(value: V) -> Fetched<V> {
        Fetched {
            value: Arc::new(value),
            as_of: Utc::now(),
            at: std::time::Instant::now(),
        }
    }

    pub fn age(&self) -> Duration {
        self.at.elapsed()
    }
}

/// What a look-up found.
#[derive(Clone, Debug)]
pub enum Lookup<V> {
    /// Within its TTL (from the cache or just loaded).
    Fresh(Fetched<V>),
    /// The load failed (the reason); this is the last good value.
    Stale(Fetched<V>, String),
    /// The load failed and there is no recent value.
    Failed(FetchError),
}

impl<V> Lookup<V> {
    pub fn fetched(&self) -> Option<&Fetched<V>> {
        match self {
            Lookup::Fresh(f) | Lookup::Stale(f, _) => Some(f),
            Lookup::Failed(_) => None,
        }
    }
}

/// TTL and size of one section's cache.
#[derive(Clone, Debug)]
pub struct SectionSettings {
    pub enabled: bool,
    pub ttl: Duration,
    pub stale_for: Duration,
    pub max_entries: u64,
}

/// The cache of one section, keyed by a string (an id).
pub struct SectionCache<V> {
    section: &'static str,
    enabled: bool,
    fresh: Cache<String, Fetched<V>>,
    last_good: Cache<String, Fetched<V>>,
    /// The batch loads of [`SectionCache::get_many`] in flight, by key.
    in_flight: Arc<tokio::sync::Mutex<InFlight<V>>>,
    metrics: Arc<ComposerMetrics>,
}

/// A batch load's outcome, shared by every request that waits for it.
type Batch<V> = Shared<BoxFuture<'static, Result<Arc<HashMap<String, Fetched<V>>>, FetchError>>>;

struct InFlight<V> {
    next_id: u64,
    loads: HashMap<String, InFlightLoad<V>>,
}

struct InFlightLoad<V> {
    /// Which batch: a key's entry is removed only by the batch that put it there.
    id: u64,
    /// The deadline of the request that started it, which its calls keep to.
    deadline: Instant,
    batch: Batch<V>,
}

impl<V: Clone + Send + Sync + 'static> SectionCache<V> {
    pub fn new(
        section: &'static str,
        settings: &SectionSettings,
        metrics: Arc<ComposerMetrics>,
    ) -> SectionCache<V> {
        let fresh = Cache::builder()
            .name(section)
            .max_capacity(settings.max_entries.max(1))
            .time_to_live(settings.ttl.max(Duration::from_millis(1)))
            .support_invalidation_closures()
            .build();
        // Larger and longer-lived: it must still hold a key when `fresh` has dropped it.
        let last_good = Cache::builder()
            .max_capacity(settings.max_entries.max(1).saturating_mul(2))
            .time_to_live((settings.ttl + settings.stale_for).max(Duration::from_millis(1)))
            .build();
        SectionCache {
            section,
            enabled: settings.enabled,
            fresh,
            last_good,
            in_flight: Arc::new(tokio::sync::Mutex::new(InFlight {
                next_id: 0,
                loads: HashMap::new(),
            })),
            metrics,
        }
    }

    fn labels(&self) -> SectionLabels {
        SectionLabels {
            section: self.section,
        }
    }

    /// The value of `key`: from the cache, or from `load` (one load for all concurrent
    /// callers), or, when the load fails or the `deadline` passes, the last good value.
    pub async fn get<F>(&self, key: &str, deadline: Instant, load: F) -> Lookup<V>
    where
        F: Future<Output = Result<V, FetchError>> + Send,
    {
        let labels = self.labels();
        if !self.enabled {
            self.metrics.cache_misses.get_or_create(&labels).inc();
            return match tokio::time::timeout_at(deadline, load).await {
                Ok(Ok(v)) => Lookup::Fresh(Fetched::now(v)),
                Ok(Err(e)) => Lookup::Failed(e),
                Err(_) => Lookup::Failed(self.deadline_error()),
            };
        }
        if let Some(hit) = self.fresh.get(key).await {
            self.metrics.cache_hits.get_or_create(&labels).inc();
            return Lookup::Fresh(hit);
        }
        let loaded_here = Arc::new(AtomicBool::new(false));
        let flag = loaded_here.clone();
        let last_good = self.last_good.clone();
        let owned_key = key.to_owned();
        let init = async move {
            flag.store(true, Ordering::Relaxed);
            let value = Fetched::now(load.await?);
            last_good.insert(owned_key, value.clone()).await;
            Ok::<_, FetchError>(value)
        };
        let result = tokio::time::timeout_at(
            deadline,
            self.fresh.entry(key.to_owned()).or_try_insert_with(init),
        )
        .await;
        if loaded_here.load(Ordering::Relaxed) {
            self.metrics.cache_misses.get_or_create(&labels).inc();
        } else {
            self.metrics.cache_coalesced.get_or_create(&labels).inc();
        }
        match result {
            Ok(Ok(entry)) => Lookup::Fresh(entry.into_value()),
            Ok(Err(e)) => self.fallback(key, (*e).clone()).await,
            Err(_) => self.fallback(key, self.deadline_error()).await,
        }
    }

    fn deadline_error(&self) -> FetchError {
        FetchError::Unavailable(format!(
            "{} not loaded before the request deadline",
            self.section
        ))
    }

    async fn fallback(&self, key: &str, error: FetchError) -> Lookup<V> {
        if error == FetchError::NotFound {
            return Lookup::Failed(error);
        }
        match self.last_good.get(key).await {
            Some(old) => {
                self.metrics
                    .cache_stale_served
                    .get_or_create(&self.labels())
                    .inc();
                Lookup::Stale(old, error.to_string())
            }
            None => Lookup::Failed(error),
        }
    }

    /// The values of many keys; the misses are loaded with one call of `load` (which gets
    /// the missing keys and returns what it found; keys it leaves out are not found).
    ///
    /// Keys another request is already loading wait for that load instead. A request
    /// registers all its misses under one lock, so two requests for overlapping keys (two
    /// readers of one cold order, with its two products) make one call per key, never two.
    /// Per-key coalescing (as in [`SectionCache::get`]) cannot promise that: each request
    /// could win the race for a different key and make its own call for it.
    pub async fn get_many<F, Fut>(
        &self,
        keys: &[String],
        deadline: Instant,
        load: F,
    ) -> HashMap<String, Lookup<V>>
    where
        F: FnOnce(Vec<String>) -> Fut,
        Fut: Future<Output = Result<HashMap<String, V>, FetchError>> + Send + 'static,
    {
        let labels = self.labels();
        let keys = dedup(keys);
        if !self.enabled {
            self.metrics
                .cache_misses
                .get_or_create(&labels)
                .inc_by(keys.len() as u64);
            let result = tokio::time::timeout_at(deadline, load(keys.clone())).await;
            return keys
                .into_iter()
                .map(|key| {
                    let lookup = match &result {
                        Ok(Ok(found)) => match found.get(&key) {
                            Some(v) => Lookup::Fresh(Fetched::now(v.clone())),
                            None => Lookup::Failed(FetchError::NotFound),
                        },
                        Ok(Err(e)) => Lookup::Failed(e.clone()),
                        Err(_) => Lookup::Failed(self.deadline_error()),
                    };
                    (key, lookup)
                })
                .collect();
        }
        let mut out = HashMap::new();
        let mut misses = Vec::new();
        for key in keys {
            match self.fresh.get(&key).await {
                Some(hit) => {
                    self.metrics.cache_hits.get_or_create(&labels).inc();
                    out.insert(key, Lookup::Fresh(hit));
                }
                None => misses.push(key),
            }
        }
        if misses.is_empty() {
            return out;
        }
        let mut waits = Vec::with_capacity(misses.len());
        {
            let mut in_flight = self.in_flight.lock().await;
            let mut mine = Vec::new();
            for key in misses {
                // A load whose owner's deadline has passed is given up on, not joined.
                if let Some(load) = in_flight.loads.get(&key)
                    && load.deadline > Instant::now()
                {
                    self.metrics.cache_coalesced.get_or_create(&labels).inc();
                    waits.push((key, load.batch.clone()));
                } else if let Some(hit) = self.fresh.get(&key).await {
                    // Loaded (and no longer in flight) since the look-up above.
                    self.metrics.cache_hits.get_or_create(&labels).inc();
                    out.insert(key, Lookup::Fresh(hit));
                } else {
                    self.metrics.cache_misses.get_or_create(&labels).inc();
                    mine.push(key);
                }
            }
            if !mine.is_empty() {
                let id = in_flight.next_id;
                in_flight.next_id += 1;
                let batch = self.batch(id, mine.clone(), deadline, load(mine.clone()));
                for key in mine {
                    let entry = InFlightLoad {
                        id,
                        deadline,
                        batch: batch.clone(),
                    };
                    in_flight.loads.insert(key.clone(), entry);
                    waits.push((key, batch.clone()));
                }
            }
        }
        let lookups = waits.into_iter().map(|(key, batch)| async move {
            let lookup = match tokio::time::timeout_at(deadline, batch).await {
                Ok(Ok(found)) => match found.get(&key) {
                    Some(v) => Lookup::Fresh(v.clone()),
                    None => Lookup::Failed(FetchError::NotFound),
                },
                Ok(Err(e)) => self.fallback(&key, e).await,
                Err(_) => self.fallback(&key, self.deadline_error()).await,
            };
            (key, lookup)
        });
        out.extend(futures::future::join_all(lookups).await);
        out
    }

    /// The load of `keys` as a future any number of requests can wait for. It runs as a
    /// task of its own, until the `deadline` of the request that started it at the latest,
    /// so it completes (and leaves the in-flight map) even when that request has gone. It
    /// stores what it found in both caches, then leaves the map, in that order: a request
    /// that finds no load in flight for a key finds its result in `fresh`.
    fn batch<Fut>(&self, id: u64, keys: Vec<String>, deadline: Instant, load: Fut) -> Batch<V>
    where
        Fut: Future<Output = Result<HashMap<String, V>, FetchError>> + Send + 'static,
    {
        let (fresh, last_good) = (self.fresh.clone(), self.last_good.clone());
        let in_flight = self.in_flight.clone();
        let late = self.deadline_error();
        let section = self.section;
        // The calls count towards the request that started the load, and its span.
        let load = match REQUEST_CALLS.try_with(Arc::clone) {
            Ok(calls) => REQUEST_CALLS.scope(calls, load).boxed(),
            Err(_) => load.boxed(),
        }
        .instrument(tracing::Span::current());
        let task = tokio::spawn(async move {
            let result = match tokio::time::timeout_at(deadline, load).await {
                Ok(result) => result.map(|mut found| {
                    keys.iter()
                        .filter_map(|k| Some((k.clone(), Fetched::now(found.remove(k)?))))
                        .collect::<HashMap<_, _>>()
                }),
                Err(_) => Err(late),
            };
            if let Ok(found) = &result {
                for (key, value) in found {
                    fresh.insert(key.clone(), value.clone()).await;
                    last_good.insert(key.clone(), value.clone()).await;
                }
            }
            let mut in_flight = in_flight.lock().await;
            for key in &keys {
                if in_flight.loads.get(key).is_some_and(|l| l.id == id) {
                    in_flight.loads.remove(key);
                }
            }
            result.map(Arc::new)
        });
        async move {
            task.await.unwrap_or_else(|e| {
                Err(FetchError::Unavailable(format!(
                    "{section} load failed: {e}"
                )))
            })
        }
        .boxed()
        .shared()
    }

    /// Stores a value loaded some other way (e.g. the orders of a page are fresh orders).
    pub async fn put(&self, key: &str, value: Fetched<V>) {
        if !self.enabled {
            return;
        }
        self.fresh.insert(key.to_owned(), value.clone()).await;
        self.last_good.insert(key.to_owned(), value).await;
    }

    /// Drops `key` from the fresh cache (the last good value stays for stale-if-error).
    pub async fn invalidate(&self, key: &str) {
        if !self.enabled {
            return;
        }
        self.fresh.invalidate(key).await;
        self.metrics
            .invalidations
            .get_or_create(&self.labels())
            .inc();
    }

    /// Drops every key starting with `prefix` from the fresh cache.
    pub fn invalidate_prefix(&self, prefix: &str) {
        if !self.enabled {
            return;
        }
        let prefix = prefix.to_owned();
        if let Err(e) = self
            .fresh
            .invalidate_entries_if(move |k, _| k.starts_with(&prefix))
        {
            tracing::warn!(error = %e, section = self.section, "could not invalidate entries");
        }
        self.metrics
            .invalidations
            .get_or_create(&self.labels())
            .inc();
    }
}

fn dedup<K: Clone + Eq + Hash>(keys: &[K]) -> Vec<K> {
    let mut seen = std::collections::HashSet::new();
    keys.iter().filter(|k| seen.insert(*k)).cloned().collect()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    fn metrics() -> Arc<ComposerMetrics> {
        ComposerMetrics::register(&shoplens_kit::metrics::Metrics::new())
    }

    fn cache(ttl_ms: u64, stale_ms: u64) -> SectionCache<String> {
        SectionCache::new(
            "order",
            &SectionSettings {
                enabled: true,
                ttl: Duration::from_millis(ttl_ms),
                stale_for: Duration::from_millis(stale_ms),
                max_entries: 100,
            },
            metrics(),
        )
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    fn counter(c: &SectionCache<String>, which: &str) -> u64 {
        let l = SectionLabels { section: "order" };
        match which {
            "hits" => c.metrics.cache_hits.get_or_create(&l).get(),
            "misses" => c.metrics.cache_misses.get_or_create(&l).get(),
            "coalesced" => c.metrics.cache_coalesced.get_or_create(&l).get(),
            _ => c.metrics.cache_stale_served.get_or_create(&l).get(),
        }
    }

    async fn slow_load(calls: &AtomicUsize, value: &str) -> Result<String, FetchError> {
        calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(50)).await;
        Ok(value.to_owned())
    }

    #[tokio::test]
    async fn concurrent_misses_make_one_load() {
        let c = cache(10_000, 10_000);
        let calls = AtomicUsize::new(0);
        let results = futures::future::join_all(
            (0..20).map(|_| c.get("o1", soon(), slow_load(&calls, "v1"))),
        )
        .await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        for r in results {
            assert!(matches!(r, Lookup::Fresh(f) if *f.value == "v1"));
        }
        assert_eq!(counter(&c, "misses"), 1);
        assert_eq!(counter(&c, "coalesced"), 19);
        let again = c.get("o1", soon(), slow_load(&calls, "v2")).await;
        assert!(matches!(again, Lookup::Fresh(f) if *f.value == "v1"));
        assert_eq!(counter(&c, "hits"), 1);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn expired_entries_reload_and_serve_stale_on_error() {
        let c = cache(30, 10_000);
        let calls = AtomicUsize::new(0);
        c.get("o1", soon(), slow_load(&calls, "v1")).await;
        tokio::time::sleep(Duration::from_millis(60)).await;
        let r = c
            .get("o1", soon(), async {
                Err(FetchError::Unavailable("order service is down".into()))
            })
            .await;
        match r {
            Lookup::Stale(f, reason) => {
                assert_eq!(*f.value, "v1");
                assert!(f.age() >= Duration::from_millis(60));
                assert_eq!(reason, "order service is down");
            }
            other => panic!("expected stale, got {other:?}"),
        }
        assert_eq!(counter(&c, "stale"), 1);
        // A failure is not cached: the next look-up loads again.
        let r = c.get("o1", soon(), slow_load(&calls, "v2")).await;
        assert!(matches!(r, Lookup::Fresh(f) if *f.value == "v2"));
    }

    #[tokio::test]
    async fn nothing_stale_past_stale_for_and_never_for_not_found() {
        let c = cache(10, 20);
        let calls = AtomicUsize::new(0);
        c.get("o1", soon(), slow_load(&calls, "v1")).await;
        tokio::time::sleep(Duration::from_millis(60)).await;
        let r = c
            .get("o1", soon(), async {
                Err(FetchError::Unavailable("down".into()))
            })
            .await;
        assert!(matches!(r, Lookup::Failed(FetchError::Unavailable(_))));
        c.get("o2", soon(), slow_load(&calls, "v1")).await;
        c.invalidate("o2").await;
        let r = c
            .get("o2", soon(), async { Err(FetchError::NotFound) })
            .await;
        assert!(matches!(r, Lookup::Failed(FetchError::NotFound)));
    }

    #[tokio::test]
    async fn the_deadline_holds_against_a_hanging_load() {
        let c = cache(10_000, 10_000);
        let start = Instant::now();
        let r = c
            .get(
                "o1",
                Instant::now() + Duration::from_millis(50),
                futures::future::pending(),
            )
            .await;
        assert!(start.elapsed() < Duration::from_millis(500));
        assert!(matches!(r, Lookup::Failed(FetchError::Unavailable(m)) if m.contains("deadline")));
    }

    #[tokio::test]
    async fn invalidation_forces_a_reload() {
        let c = cache(10_000, 10_000);
        let calls = AtomicUsize::new(0);
        c.get("o1", soon(), slow_load(&calls, "v1")).await;
        c.invalidate("o1").await;
        let r = c.get("o1", soon(), slow_load(&calls, "v2")).await;
        assert!(matches!(r, Lookup::Fresh(f) if *f.value == "v2"));
        c.put("c1|10|", Fetched::now("x".into())).await;
        c.put("c2|10|", Fetched::now("y".into())).await;
        c.invalidate_prefix("c1|");
        let r = c.get("c1|10|", soon(), async { Ok("x2".into()) }).await;
        assert!(matches!(r, Lookup::Fresh(f) if *f.value == "x2"));
        let r = c.get("c2|10|", soon(), async { Ok("y2".into()) }).await;
        assert!(matches!(r, Lookup::Fresh(f) if *f.value == "y"));
    }

    #[tokio::test]
    async fn batches_load_only_the_misses_in_one_call() {
        let c = cache(10_000, 10_000);
        let calls = Arc::new(AtomicUsize::new(0));
        c.put("a", Fetched::now("A".into())).await;
        let keys: Vec<String> = ["a", "b", "c", "b", "zz"].map(String::from).to_vec();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (calls2, seen2) = (calls.clone(), seen.clone());
        let out = c
            .get_many(&keys, soon(), move |missing| async move {
                calls2.fetch_add(1, Ordering::SeqCst);
                *seen2.lock().unwrap() = missing.clone();
                Ok(missing
                    .into_iter()
                    .filter(|k| k != "zz")
                    .map(|k| (k.clone(), k.to_uppercase()))
                    .collect())
            })
            .await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(*seen.lock().unwrap(), vec!["b", "c", "zz"]);
        assert_eq!(out.len(), 4);
        assert!(matches!(&out["b"], Lookup::Fresh(f) if *f.value == "B"));
        assert!(matches!(&out["a"], Lookup::Fresh(f) if *f.value == "A"));
        assert!(matches!(&out["zz"], Lookup::Failed(FetchError::NotFound)));
        // A batch failure fails every miss (or serves their stale values).
        c.invalidate("b").await;
        let out = c
            .get_many(&keys, soon(), |_| async {
                Err(FetchError::Unavailable("down".into()))
            })
            .await;
        assert!(matches!(&out["b"], Lookup::Stale(f, _) if *f.value == "B"));
        assert!(matches!(
            &out["zz"],
            Lookup::Failed(FetchError::Unavailable(_))
        ));
    }

    /// A batch load that counts the calls for each key and takes a while.
    fn counted_load(
        calls: &Arc<std::sync::Mutex<HashMap<String, usize>>>,
    ) -> impl FnOnce(Vec<String>) -> BoxFuture<'static, Result<HashMap<String, String>, FetchError>>
    + use<> {
        let calls = calls.clone();
        move |keys| {
            for k in &keys {
                *calls.lock().unwrap().entry(k.clone()).or_default() += 1;
            }
            async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok(keys
                    .into_iter()
                    .map(|k| (k.clone(), k.to_uppercase()))
                    .collect())
            }
            .boxed()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_batches_for_overlapping_keys_make_one_call_per_key() {
        let c = Arc::new(cache(10_000, 10_000));
        let calls = Arc::new(std::sync::Mutex::new(HashMap::new()));
        for round in 0..30 {
            let keys: Vec<String> = vec![format!("a{round}"), format!("b{round}")];
            let tasks: Vec<_> = (0..20)
                .map(|_| {
                    let (c, keys, load) = (c.clone(), keys.clone(), counted_load(&calls));
                    tokio::spawn(async move { c.get_many(&keys, soon(), load).await })
                })
                .collect();
            for task in tasks {
                let out = task.await.unwrap();
                for k in &keys {
                    assert!(matches!(&out[k], Lookup::Fresh(f) if *f.value == k.to_uppercase()));
                }
            }
        }
        let calls = calls.lock().unwrap();
        assert_eq!(calls.len(), 60);
        assert!(calls.values().all(|&n| n == 1), "{calls:?}");
        assert_eq!(counter(&c, "misses"), 60);
        assert_eq!(counter(&c, "hits") + counter(&c, "coalesced"), 30 * 19 * 2);
    }

    #[tokio::test]
    async fn a_batch_joins_the_keys_in_flight_and_outlives_the_request_that_started_it() {
        let c = Arc::new(cache(10_000, 10_000));
        let calls = Arc::new(std::sync::Mutex::new(HashMap::new()));
        let first = {
            let (c, load) = (c.clone(), counted_load(&calls));
            tokio::spawn(async move { c.get_many(&["a".into(), "b".into()], soon(), load).await })
        };
        while calls.lock().unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
        first.abort();
        let out = c
            .get_many(&["b".into(), "c".into()], soon(), counted_load(&calls))
            .await;
        assert!(matches!(&out["b"], Lookup::Fresh(f) if *f.value == "B"));
        assert!(matches!(&out["c"], Lookup::Fresh(f) if *f.value == "C"));
        let out = c
            .get_many(&["a".into()], soon(), counted_load(&calls))
            .await;
        assert!(matches!(&out["a"], Lookup::Fresh(f) if *f.value == "A"));
        let calls = calls.lock().unwrap();
        assert_eq!(calls.len(), 3);
        assert!(calls.values().all(|&n| n == 1), "{calls:?}");
        assert_eq!(counter(&c, "coalesced"), 1);
    }

    #[tokio::test]
    async fn a_disabled_cache_always_loads() {
        let c: SectionCache<String> = SectionCache::new(
            "order",
            &SectionSettings {
                enabled: false,
                ttl: Duration::from_secs(10),
                stale_for: Duration::from_secs(10),
                max_entries: 10,
            },
            metrics(),
        );
        let calls = AtomicUsize::new(0);
        c.get("o1", soon(), slow_load(&calls, "v1")).await;
        c.get("o1", soon(), slow_load(&calls, "v1")).await;
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }
}
