//! The composer's configuration: where the services are, how long to wait for them, how to
//! cache their answers and how to protect them.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
/// The circuit breaker of each replica of each service (`breaker`).
pub use shoplens_kit::balance::BreakerConfig;
use shoplens_kit::balance::ReplicaUrls;
use shoplens_kit::config::HttpConfig;

/// Everything the composer is configured with. Built-in defaults make a bare `start` work
/// against the all-in-one process's default ports.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ComposerConfig {
    /// Address to listen on (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Base URLs of the five domain services, each one URL or a list of its replicas'.
    pub services: ServiceUrls,
    /// How bearer tokens are checked, and the key the composer's calls to the services are
    /// signed with: the root `auth` section, filled in by the launcher (not configurable
    /// here).
    #[serde(skip)]
    pub auth: shoplens_kit::identity::AuthConfig,
    /// Limits of the composer's own HTTP server.
    pub http: HttpConfig,
    /// Longest wait for one downstream call (one attempt), in milliseconds.
    pub call_timeout_ms: u64,
    /// Longest time a whole request may take, in milliseconds; when it is up the composer
    /// answers with what it has (degraded) rather than wait.
    pub deadline_ms: u64,
    /// Longest time a live sales computation (`/api/v1/sales/*`, which pages through every
    /// order) may take, in milliseconds; keep it under `http.request_timeout_ms`.
    pub sales_deadline_ms: u64,
    /// The short-TTL cache of downstream answers.
    pub cache: CacheConfig,
    /// Evict cache entries when events say the data changed. Only effective when
    /// [`crate::start`] is given an event source.
    pub invalidation: bool,
    /// Retries of failed reads.
    pub retry: RetryConfig,
    /// The circuit breaker in front of each replica of each service.
    pub breaker: BreakerConfig,
}

impl Default for ComposerConfig {
    fn default() -> Self {
        ComposerConfig {
            listen: "127.0.0.1:0".parse().expect("valid address"),
            services: ServiceUrls::default(),
            auth: Default::default(),
            http: HttpConfig::default(),
            call_timeout_ms: 300,
            deadline_ms: 800,
            sales_deadline_ms: 9_000,
            cache: CacheConfig::default(),
            invalidation: true,
            retry: RetryConfig::default(),
            breaker: BreakerConfig::default(),
        }
    }
}

impl ComposerConfig {
    pub fn call_timeout(&self) -> Duration {
        Duration::from_millis(self.call_timeout_ms)
    }

    pub fn deadline(&self) -> Duration {
        Duration::from_millis(self.deadline_ms)
    }

    /// Rejects values that cannot work (a zero deadline, a service without a URL, a URL
    /// that is not http(s)).
    pub fn validate(&self) -> Result<(), crate::Error> {
        let positive = [
            ("call_timeout_ms", self.call_timeout_ms),
            ("deadline_ms", self.deadline_ms),
            ("sales_deadline_ms", self.sales_deadline_ms),
            ("retry.max_attempts", u64::from(self.retry.max_attempts)),
            (
                "breaker.failure_threshold",
                u64::from(self.breaker.failure_threshold),
            ),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(crate::Error::InvalidConfig(format!(
                    "{name} must be at least 1"
                )));
            }
        }
        self.auth
            .check_exposure(self.listen)
            .map_err(crate::Error::Exposure)?;
        for (name, urls) in self.services.all() {
            urls.check(&format!("services.{name}"))
                .map_err(crate::Error::InvalidConfig)?;
        }
        Ok(())
    }
}

/// Base URLs (`http://host:port`, no trailing path) of the domain services. Each is one URL,
/// or its replicas' as a list or a comma-separated string: calls go to them in turn, and a
/// replica that fails is skipped until it answers again.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceUrls {
    pub customer: ReplicaUrls,
    pub product: ReplicaUrls,
    pub order: ReplicaUrls,
    pub payment: ReplicaUrls,
    pub shipping: ReplicaUrls,
}

impl Default for ServiceUrls {
    fn default() -> Self {
        ServiceUrls {
            customer: "http://127.0.0.1:8081".into(),
            product: "http://127.0.0.1:8082".into(),
            order: "http://127.0.0.1:8083".into(),
            payment: "http://127.0.0.1:8084".into(),
            shipping: "http://127.0.0.1:8085".into(),
        }
    }
}

impl ServiceUrls {
    pub fn all(&self) -> [(&'static str, &ReplicaUrls); 5] {
        [
            ("customer", &self.customer),
            ("product", &self.product),
            ("order", &self.order),
            ("payment", &self.payment),
            ("shipping", &self.shipping),
        ]
    }
}

/// The per-section cache. Volatile sections (order, payment, shipping, the order lists) get
/// a short TTL, stable ones (customer, product) a longer one.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Cache downstream answers at all (off: every request calls every service).
    pub enabled: bool,
    /// TTL of an order, in milliseconds.
    pub order_ttl_ms: u64,
    /// TTL of a customer's page of orders, in milliseconds.
    pub list_ttl_ms: u64,
    /// TTL of an order's latest payment, in milliseconds.
    pub payment_ttl_ms: u64,
    /// TTL of an order's latest shipment, in milliseconds.
    pub shipping_ttl_ms: u64,
    /// TTL of a customer, in milliseconds.
    pub customer_ttl_ms: u64,
    /// TTL of a product, in milliseconds.
    pub product_ttl_ms: u64,
    /// How long after its TTL an entry may still be served (marked `stale`) when its
    /// service fails, in milliseconds.
    pub stale_for_ms: u64,
    /// Most entries per section.
    pub max_entries: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            enabled: true,
            order_ttl_ms: 1_500,
            list_ttl_ms: 1_500,
            payment_ttl_ms: 1_500,
            shipping_ttl_ms: 1_500,
            customer_ttl_ms: 60_000,
            product_ttl_ms: 30_000,
            stale_for_ms: 60_000,
            max_entries: 10_000,
        }
    }
}

/// Retries of idempotent reads, limited by a budget so that retries cannot multiply the
/// load on a struggling service.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Attempts per call, the first included (1 = no retries).
    pub max_attempts: u32,
    /// Pause before a retry, in milliseconds.
    pub backoff_ms: u64,
    /// Retries allowed per first attempt, over time (0.2 = at most one retry per five calls).
    pub budget_ratio: f64,
    /// Retries always allowed per second, so that a quiet composer can still retry.
    pub budget_min_per_sec: u32,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: 2,
            backoff_ms: 20,
            budget_ratio: 0.2,
            budget_min_per_sec: 10,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_unknown_keys_are_errors() {
        ComposerConfig::default().validate().unwrap();
        let err = serde_json::from_str::<ComposerConfig>(r#"{"deadline":5}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
        let c: ComposerConfig =
            serde_json::from_str(r#"{"deadline_ms":5,"cache":{"order_ttl_ms":7}}"#).unwrap();
        assert_eq!(c.deadline_ms, 5);
        assert_eq!(c.cache.order_ttl_ms, 7);
        assert_eq!(c.cache.product_ttl_ms, 30_000);
    }

    #[test]
    fn rejects_unusable_values() {
        let mut c = ComposerConfig::default();
        c.services.order = "localhost:8083".into();
        assert!(c.validate().is_err());
        let c = ComposerConfig {
            deadline_ms: 0,
            ..Default::default()
        };
        assert!(c.validate().is_err());
    }

    #[test]
    fn a_service_is_one_url_or_its_replicas_and_never_none() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("composer.toml");
        std::fs::write(
            &file,
            r#"
[services]
customer = "http://customer:8081"
order = ["http://order-1:8083", "http://order-2:8083/"]
payment = "http://payment-1:8084, http://payment-2:8084"
"#,
        )
        .unwrap();
        let c: ComposerConfig = shoplens_kit::config::load(Some(&file)).unwrap();
        c.validate().unwrap();
        assert_eq!(c.services.customer.as_slice(), ["http://customer:8081"]);
        assert_eq!(
            c.services.order.as_slice(),
            ["http://order-1:8083", "http://order-2:8083/"]
        );
        assert_eq!(
            c.services.payment.as_slice(),
            ["http://payment-1:8084", "http://payment-2:8084"]
        );
        assert_eq!(c.services.shipping, ServiceUrls::default().shipping);

        std::fs::write(&file, "[services]\norder = []\n").unwrap();
        let c: ComposerConfig = shoplens_kit::config::load(Some(&file)).unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.contains("services.order must name at least one URL"),
            "{err}"
        );
        std::fs::write(&file, "[services]\nshipping = [\"http://a:1\", \"b:2\"]\n").unwrap();
        let c: ComposerConfig = shoplens_kit::config::load(Some(&file)).unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.contains("services.shipping must be an http(s) URL, got `b:2`"),
            "{err}"
        );
    }
}
