//! Prometheus metrics: one registry per server (so tests and the all-in-one process never mix
//! two servers' numbers), with the HTTP metrics every server has.

use std::sync::{Arc, RwLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

/// Latency buckets from 0.1 ms to about 3 s.
pub fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

pub type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: RwLock<Registry>,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_duration: HistogramFamily<RouteLabels>,
}

impl Metrics {
    /// A registry whose metric names start with `shoplens_`.
    pub fn new() -> Arc<Metrics> {
        let metrics = Metrics {
            registry: RwLock::new(Registry::with_prefix("shoplens")),
            http_requests: Family::default(),
            http_duration: Family::new_with_constructor(latency_histogram),
        };
        metrics.register(
            "http_requests",
            "HTTP requests by method, route and status",
            metrics.http_requests.clone(),
        );
        metrics.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            metrics.http_duration.clone(),
        );
        Arc::new(metrics)
    }

    /// Adds a metric to this server's registry.
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        self.registry
            .write()
            .expect("metrics registry lock")
            .register(name, help, metric);
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(
            &mut out,
            &self.registry.read().expect("metrics registry lock"),
        )
        .expect("writing to a String cannot fail");
        out
    }
}
