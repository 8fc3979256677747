//! The composer's configuration: where the services are, how long to wait for them, how to
//! cache their answers and how to protect them.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shoplens_kit::config::HttpConfig;

/// Everything the composer is configured with. Built-in defaults make a bare `start` work
/// against the all-in-one process's default ports.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ComposerConfig {
    /// Address to listen on (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Base URLs of the five domain services.
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
    /// The circuit breaker in front of each service.
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

    /// Rejects values that cannot work (a zero deadline, an empty URL).
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
        for (name, url) in self.services.all() {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(crate::Error::InvalidConfig(format!(
                    "services.{name} must be an http(s) URL, got `{url}`"
                )));
            }
        }
        Ok(())
    }
}

/// Base URLs (`http://host:port`, no trailing path) of the domain services.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceUrls {
    pub customer: String,
    pub product: String,
    pub order: String,
    pub payment: String,
    pub shipping: String,
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
    pub fn all(&self) -> [(&'static str, &str); 5] {
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

/// The circuit breaker per service.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Use circuit breakers at all.
    pub enabled: bool,
    /// Consecutive failures that open the circuit.
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
}
