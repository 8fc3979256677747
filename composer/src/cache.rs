//! The short-TTL cache of one section (orders, payments, ...), with load coalescing and
//! stale-if-error.
//!
//! Two moka caches per section: `fresh` holds entries for the section's TTL and is what
//! requests read; concurrent misses for one key run one load and the others wait for it
//! (`entry().or_try_insert_with`). `last_good` holds every successful load for TTL +
//! `stale_for`, and is read only when a load fails or misses the deadline: its entry is then
//! served, marked stale, with its age. Event-driven invalidation removes keys from `fresh`
//! only: what was true a moment ago is still the best answer when the service is down.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::FutureExt;
use moka::future::Cache;
use tokio::time::Instant;

use crate::downstream::FetchError;
use crate::metrics::{ComposerMetrics, SectionLabels};

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
    metrics: Arc<ComposerMetrics>,
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
        let mut out = HashMap::new();
        let mut misses = Vec::new();
        for key in dedup(keys) {
            match self.enabled {
                true => match self.fresh.get(&key).await {
                    Some(hit) => {
                        self.metrics.cache_hits.get_or_create(&self.labels()).inc();
                        out.insert(key, Lookup::Fresh(hit));
                    }
                    None => misses.push(key),
                },
                false => misses.push(key),
            }
        }
        if misses.is_empty() {
            return out;
        }
        // One batch call, started by whichever key's load runs first; keys another request
        // is already loading wait for that load instead.
        let batch = load(misses.clone())
            .map(|r| r.map(Arc::new))
            .boxed()
            .shared();
        let lookups = misses.into_iter().map(|key| {
            let batch = batch.clone();
            async move {
                let k = key.clone();
                let one = async move {
                    let found = batch.await?;
                    found.get(&k).cloned().ok_or(FetchError::NotFound)
                };
                let lookup = self.get(&key, deadline, one).await;
                (key, lookup)
            }
        });
        out.extend(futures::future::join_all(lookups).await);
        out
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
