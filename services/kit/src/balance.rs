//! Calling a service that runs as several replicas: their URLs as configured, a circuit
//! breaker per replica, and the round robin that spreads calls over the replicas whose
//! circuit lets them through.
//!
//! A replica that keeps failing (refused, timed out, 5xx) is *ejected*: its circuit opens
//! and calls go to the others. After `open_ms` the next call that the round robin gives it
//! is a probe (half-open): an answer brings it back, a failure ejects it again. When every
//! replica is ejected no call is made at all — what the single breaker of one URL did.
//!
//! The breaker counts consecutive failures; at the threshold it opens. A probe that is
//! abandoned (its caller gave up) frees the slot for the next one.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::metrics::gauge::Gauge;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The base URLs of one service's replicas (`http://host:port`, no trailing path).
///
/// Configured as one URL (`"http://order:8083"`), a list (`["http://order-1:8083",
/// "http://order-2:8083"]`) or one comma-separated string (`"http://order-1:8083,
/// http://order-2:8083"`, what an environment variable gives). It serializes back to a
/// string when it holds one URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaUrls(Vec<String>);

impl ReplicaUrls {
    pub fn new<S: Into<String>>(urls: impl IntoIterator<Item = S>) -> ReplicaUrls {
        ReplicaUrls(urls.into_iter().map(Into::into).collect())
    }

    pub fn as_slice(&self) -> &[String] {
        &self.0
    }

    /// The first replica's URL (where a tool that talks to one replica goes).
    pub fn first(&self) -> Option<&str> {
        self.0.first().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Rejects an empty list and any URL that is not http(s); the message names `key`.
    pub fn check(&self, key: &str) -> Result<(), String> {
        if self.0.is_empty() {
            return Err(format!("{key} must name at least one URL, got none"));
        }
        for url in &self.0 {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(format!("{key} must be an http(s) URL, got `{url}`"));
            }
        }
        Ok(())
    }
}

impl From<String> for ReplicaUrls {
    fn from(url: String) -> Self {
        ReplicaUrls(vec![url])
    }
}

impl From<&str> for ReplicaUrls {
    fn from(url: &str) -> Self {
        ReplicaUrls(vec![url.to_owned()])
    }
}

impl From<Vec<String>> for ReplicaUrls {
    fn from(urls: Vec<String>) -> Self {
        ReplicaUrls(urls)
    }
}

/// The URLs, comma-separated (the string form the configuration accepts).
impl fmt::Display for ReplicaUrls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(","))
    }
}

impl Serialize for ReplicaUrls {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0.as_slice() {
            [one] => s.serialize_str(one),
            all => all.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for ReplicaUrls {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            List(Vec<String>),
            Text(String),
        }
        let urls: Vec<String> = match Either::deserialize(d)? {
            Either::List(list) => list,
            Either::Text(text) => text.split(',').map(str::to_owned).collect(),
        };
        Ok(ReplicaUrls(
            urls.iter()
                .map(|u| u.trim())
                .filter(|u| !u.is_empty())
                .map(str::to_owned)
                .collect(),
        ))
    }
}

/// The circuit breaker of each replica.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Use circuit breakers at all (off: every replica always gets its turn).
    pub enabled: bool,
    /// Consecutive failures that open a replica's circuit (eject it).
    pub failure_threshold: u32,
    /// How long an open circuit rejects calls before letting one probe through, in
    /// milliseconds.
    pub open_ms: u64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            enabled: true,
            failure_threshold: 5,
            open_ms: 2_000,
        }
    }
}

/// The state of a circuit, as a gauge shows it.
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

/// A circuit breaker for one replica. Cheap to share (`Arc`).
pub struct CircuitBreaker {
    config: BreakerConfig,
    /// What the breaker protects, for its log lines.
    name: String,
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
    /// A closed breaker; `gauge` follows its state.
    pub fn new(config: BreakerConfig, name: impl Into<String>, gauge: Gauge) -> Arc<Self> {
        gauge.set(CircuitState::Closed as i64);
        Arc::new(CircuitBreaker {
            config,
            name: name.into(),
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
            tracing::info!(
                target = %self.name,
                from = ?inner.state,
                to = ?state,
                "circuit breaker changed state"
            );
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

struct Replica {
    url: String,
    breaker: Arc<CircuitBreaker>,
}

/// One service's replicas, each behind its own circuit breaker, taken in turn. Cheap to
/// share (`Arc`).
pub struct Balancer {
    replicas: Vec<Replica>,
    next: AtomicUsize,
    /// The service's state: closed while any replica's circuit is, open when all are.
    state: Gauge,
}

/// The replica to call, with its breaker's permit: report the call's outcome with
/// [`Pick::success`] or [`Pick::failure`].
pub struct Pick<'a> {
    balancer: &'a Balancer,
    index: usize,
    permit: Permit,
}

impl Balancer {
    /// The replicas at `urls` (trailing slashes dropped), each with a `breaker`; `name` names
    /// the service in log lines. No metrics: see [`Balancer::with_gauges`].
    pub fn new(name: &str, urls: &ReplicaUrls, breaker: &BreakerConfig) -> Balancer {
        Balancer::with_gauges(name, urls, breaker, Gauge::default(), |_| Gauge::default())
    }

    /// [`Balancer::new`] whose states show in gauges: `state` the service's (closed while
    /// any replica's circuit is closed, open when all are open, half-open otherwise), and
    /// `replica_gauge(url)` each replica's.
    pub fn with_gauges(
        name: &str,
        urls: &ReplicaUrls,
        breaker: &BreakerConfig,
        state: Gauge,
        replica_gauge: impl Fn(&str) -> Gauge,
    ) -> Balancer {
        let replicas = urls
            .as_slice()
            .iter()
            .map(|url| {
                let url = url.trim_end_matches('/').to_owned();
                let breaker = CircuitBreaker::new(
                    breaker.clone(),
                    format!("{name} {url}"),
                    replica_gauge(&url),
                );
                Replica { url, breaker }
            })
            .collect();
        let balancer = Balancer {
            replicas,
            next: AtomicUsize::new(0),
            state,
        };
        balancer.refresh();
        balancer
    }

    pub fn len(&self) -> usize {
        self.replicas.len()
    }

    pub fn is_empty(&self) -> bool {
        self.replicas.is_empty()
    }

    /// The next replica in turn whose circuit lets a call through (an ejected replica's
    /// probe included), or `None` when every circuit is open.
    pub fn pick(&self) -> Option<Pick<'_>> {
        let n = self.replicas.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let pick = (0..n).find_map(|i| self.acquire((start + i) % n));
        self.refresh();
        pick
    }

    /// A replica other than `tried` for a retry: one whose circuit is closed if any, else
    /// one due for a probe; `None` when there is no other replica to call.
    pub fn pick_other(&self, tried: usize) -> Option<Pick<'_>> {
        let n = self.replicas.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let others = || {
            (0..n)
                .map(move |i| (start + i) % n)
                .filter(move |&i| i != tried)
        };
        let pick = others()
            .filter(|&i| self.replicas[i].breaker.state() == CircuitState::Closed)
            .find_map(|i| self.acquire(i))
            .or_else(|| others().find_map(|i| self.acquire(i)));
        self.refresh();
        pick
    }

    fn acquire(&self, index: usize) -> Option<Pick<'_>> {
        let permit = self.replicas[index].breaker.try_acquire()?;
        Some(Pick {
            balancer: self,
            index,
            permit,
        })
    }

    /// Every replica's URL and circuit state, in configured order.
    pub fn states(&self) -> Vec<(&str, CircuitState)> {
        self.replicas
            .iter()
            .map(|r| (r.url.as_str(), r.breaker.state()))
            .collect()
    }

    /// The service's state: closed while any replica's circuit is closed, open when all are
    /// open (no calls are made), half-open otherwise.
    pub fn state(&self) -> CircuitState {
        let states = self.states();
        if states.iter().any(|(_, s)| *s == CircuitState::Closed) {
            CircuitState::Closed
        } else if states.iter().all(|(_, s)| *s == CircuitState::Open) {
            CircuitState::Open
        } else {
            CircuitState::HalfOpen
        }
    }

    fn refresh(&self) {
        self.state.set(self.state() as i64);
    }
}

impl<'a> Pick<'a> {
    /// The replica's base URL (no trailing slash).
    pub fn url(&self) -> &'a str {
        &self.balancer.replicas[self.index].url
    }

    /// The replica's position in the configured list.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The replica answered (any status below 500).
    pub fn success(self) {
        self.permit.success();
        self.balancer.refresh();
    }

    /// The replica failed: refused, timed out, broke the connection or answered 5xx.
    pub fn failure(self) {
        self.permit.failure();
        self.balancer.refresh();
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
            "test",
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
            "test",
            Gauge::default(),
        );
        for _ in 0..5 {
            b.try_acquire().unwrap().failure();
        }
        assert!(b.try_acquire().is_some());
    }

    fn balancer(urls: &[&str], threshold: u32, open_ms: u64) -> Balancer {
        Balancer::new(
            "test",
            &ReplicaUrls::new(urls.iter().copied()),
            &BreakerConfig {
                enabled: true,
                failure_threshold: threshold,
                open_ms,
            },
        )
    }

    /// Which replicas `n` picks in a row go to (each reported a success).
    fn turns(b: &Balancer, n: usize) -> Vec<usize> {
        (0..n)
            .map(|_| {
                let p = b.pick().expect("a replica");
                let i = p.index();
                p.success();
                i
            })
            .collect()
    }

    #[test]
    fn calls_go_round_the_replicas_and_skip_an_ejected_one_until_its_probe() {
        let b = balancer(&["http://a/", "http://b", "http://c"], 1, 50);
        assert_eq!(turns(&b, 6), [0, 1, 2, 0, 1, 2]);
        assert_eq!(
            b.pick().unwrap().url(),
            "http://a",
            "trailing slash dropped"
        );
        let p = b.pick().unwrap();
        assert_eq!(p.index(), 1);
        p.failure();
        assert_eq!(b.states()[1], ("http://b", CircuitState::Open));
        assert_eq!(b.state(), CircuitState::Closed);
        let picked = turns(&b, 6);
        assert!(!picked.contains(&1), "{picked:?}");
        assert!(picked.contains(&0) && picked.contains(&2), "{picked:?}");

        // Past the open interval its turn is a probe; an answer brings it back.
        std::thread::sleep(Duration::from_millis(60));
        let probe = (0..3)
            .map(|_| b.pick().unwrap())
            .find(|p| p.index() == 1)
            .expect("the ejected replica's turn comes");
        assert_eq!(b.states()[1].1, CircuitState::HalfOpen);
        probe.success();
        assert_eq!(b.states()[1].1, CircuitState::Closed);
        assert!(turns(&b, 3).contains(&1));
    }

    #[test]
    fn a_retry_goes_to_another_replica_preferring_a_closed_one() {
        let b = balancer(&["http://a", "http://b", "http://c"], 1, 0);
        // b ejected, due for a probe at once (open_ms 0).
        let p = b.pick_other(0).unwrap();
        let i = p.index();
        p.failure();
        for _ in 0..6 {
            let p = b.pick_other(0).unwrap();
            assert_ne!(p.index(), 0);
            assert_ne!(p.index(), i, "a closed replica before a probe");
            p.success();
        }
        let single = balancer(&["http://a"], 1, 60_000);
        assert!(single.pick_other(0).is_none(), "no other replica");
    }

    #[test]
    fn with_every_replica_ejected_no_call_is_made() {
        let state = Gauge::default();
        let b = Balancer::with_gauges(
            "test",
            &ReplicaUrls::new(["http://a", "http://b"]),
            &BreakerConfig {
                enabled: true,
                failure_threshold: 1,
                open_ms: 60_000,
            },
            state.clone(),
            |_| Gauge::default(),
        );
        b.pick().unwrap().failure();
        assert_eq!(b.state(), CircuitState::Closed);
        assert_eq!(state.get(), 0);
        b.pick().unwrap().failure();
        assert_eq!(b.state(), CircuitState::Open);
        assert_eq!(state.get(), 1);
        assert!(b.pick().is_none());
        assert!(b.pick_other(0).is_none());
        let none = Balancer::new(
            "test",
            &ReplicaUrls::new(Vec::<String>::new()),
            &Default::default(),
        );
        assert!(none.pick().is_none());
    }

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    #[serde(default)]
    struct Upstream {
        urls: ReplicaUrls,
    }

    impl Default for Upstream {
        fn default() -> Self {
            Upstream {
                urls: ReplicaUrls::from("http://default:1"),
            }
        }
    }

    fn from_toml(toml: &str) -> Result<ReplicaUrls, String> {
        use figment::providers::{Format, Serialized, Toml};
        figment::Figment::from(Serialized::defaults(Upstream::default()))
            .merge(Toml::string(toml))
            .extract::<Upstream>()
            .map(|u| u.urls)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn one_url_a_list_or_a_comma_separated_string() {
        assert_eq!(
            from_toml("").unwrap(),
            ReplicaUrls::from("http://default:1")
        );
        assert_eq!(
            from_toml(r#"urls = "http://a:1""#).unwrap(),
            ReplicaUrls::from("http://a:1")
        );
        let two = ReplicaUrls::new(["http://a:1", "http://b:2"]);
        assert_eq!(
            from_toml(r#"urls = ["http://a:1", "http://b:2"]"#).unwrap(),
            two
        );
        assert_eq!(
            from_toml(r#"urls = "http://a:1, http://b:2,""#).unwrap(),
            two
        );
        assert_eq!(two.to_string(), "http://a:1,http://b:2");
        // What it serializes to reads back the same.
        for urls in [two, ReplicaUrls::from("http://a:1")] {
            let json = serde_json::to_string(&urls).unwrap();
            assert_eq!(serde_json::from_str::<ReplicaUrls>(&json).unwrap(), urls);
        }
        assert_eq!(
            serde_json::to_string(&ReplicaUrls::from("http://a:1")).unwrap(),
            r#""http://a:1""#
        );
        assert!(from_toml("urls = 5").is_err());
    }

    #[test]
    fn an_empty_list_or_a_bad_url_is_an_error_naming_the_key() {
        let empty = from_toml("urls = []").unwrap();
        assert!(empty.is_empty());
        let err = empty.check("order_upstreams.customer_url").unwrap_err();
        assert!(err.contains("order_upstreams.customer_url"), "{err}");
        assert!(err.contains("at least one URL"), "{err}");
        let blank = from_toml(r#"urls = " , ""#).unwrap();
        assert!(blank.check("k").unwrap_err().contains("at least one URL"));
        let err = ReplicaUrls::new(["http://a:1", "b:2"])
            .check("services.order")
            .unwrap_err();
        assert_eq!(err, "services.order must be an http(s) URL, got `b:2`");
        ReplicaUrls::new(["http://a:1", "https://b:2"])
            .check("k")
            .unwrap();
    }

    /// The environment layer of [`crate::config::load`]: a comma-separated variable. The
    /// test runs itself again as a child process with the variable set (a test may not
    /// change its own process's environment).
    #[test]
    fn an_environment_variable_is_a_comma_separated_list() {
        const VAR: &str = "SHOPLENS_URLS";
        if let Ok(expected) = std::env::var("SHOPLENS_TEST_EXPECTED_URLS") {
            let loaded: Upstream = crate::config::load(None).unwrap();
            assert_eq!(loaded.urls.to_string(), expected);
            assert_eq!(loaded.urls.len(), expected.split(',').count());
            return;
        }
        for (value, expected) in [
            ("http://a:1", "http://a:1"),
            ("http://a:1,http://b:2", "http://a:1,http://b:2"),
            (" http://a:1 , http://b:2 ", "http://a:1,http://b:2"),
        ] {
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "balance::tests::an_environment_variable_is_a_comma_separated_list",
                    "--nocapture",
                ])
                .env(VAR, value)
                .env("SHOPLENS_TEST_EXPECTED_URLS", expected)
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && stdout.contains("1 passed"),
                "{value}: {stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
