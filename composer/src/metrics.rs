//! The composer's own Prometheus metrics, registered beside the kit's HTTP metrics
//! (requests and latency per route) in the server's registry.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets, linear_buckets};
use shoplens_kit::metrics::{HistogramFamily, Metrics, latency_histogram};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub endpoint: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub endpoint: &'static str,
    /// `ok`, `degraded` or the error status code.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabels {
    pub service: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReplicaLabels {
    pub service: &'static str,
    /// The replica's base URL, as configured.
    pub replica: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub service: &'static str,
    /// `ok`, `not_found`, `error` (5xx, refused, timed out) or `unexpected` (other 4xx,
    /// undecodable body).
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SectionLabels {
    pub section: &'static str,
}

fn fanout_histogram() -> Histogram {
    Histogram::new(linear_buckets(0.0, 1.0, 12))
}

fn request_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 14))
}

/// Every composer metric (names get the registry's `shoplens_` prefix).
pub struct ComposerMetrics {
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: HistogramFamily<EndpointLabels>,
    pub degraded_responses: Family<EndpointLabels, Counter>,
    pub downstream_calls: Family<CallLabels, Counter>,
    pub downstream_duration: HistogramFamily<ServiceLabels>,
    pub calls_per_request: HistogramFamily<EndpointLabels>,
    pub retries: Family<ServiceLabels, Counter>,
    pub retries_denied: Family<ServiceLabels, Counter>,
    pub breaker_rejections: Family<ServiceLabels, Counter>,
    pub circuit_state: Family<ServiceLabels, Gauge>,
    pub replica_circuit_state: Family<ReplicaLabels, Gauge>,
    pub cache_hits: Family<SectionLabels, Counter>,
    pub cache_misses: Family<SectionLabels, Counter>,
    pub cache_coalesced: Family<SectionLabels, Counter>,
    pub cache_stale_served: Family<SectionLabels, Counter>,
    pub invalidations: Family<SectionLabels, Counter>,
    pub events_seen: Counter,
    pub events_undecodable: Counter,
}

impl ComposerMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &Metrics) -> Arc<ComposerMetrics> {
        let m = ComposerMetrics {
            requests: Family::default(),
            request_duration: Family::new_with_constructor(request_histogram),
            degraded_responses: Family::default(),
            downstream_calls: Family::default(),
            downstream_duration: Family::new_with_constructor(latency_histogram),
            calls_per_request: Family::new_with_constructor(fanout_histogram),
            retries: Family::default(),
            retries_denied: Family::default(),
            breaker_rejections: Family::default(),
            circuit_state: Family::default(),
            replica_circuit_state: Family::default(),
            cache_hits: Family::default(),
            cache_misses: Family::default(),
            cache_coalesced: Family::default(),
            cache_stale_served: Family::default(),
            invalidations: Family::default(),
            events_seen: Counter::default(),
            events_undecodable: Counter::default(),
        };
        let r = registry;
        r.register(
            "composer_requests",
            "Composer requests by endpoint and outcome (ok, degraded, or the error status)",
            m.requests.clone(),
        );
        r.register(
            "composer_request_duration_seconds",
            "Composer request latency by endpoint",
            m.request_duration.clone(),
        );
        r.register(
            "composer_degraded_responses",
            "Answers with at least one section stale or unavailable",
            m.degraded_responses.clone(),
        );
        r.register(
            "composer_downstream_calls",
            "HTTP calls to the domain services (retries included) by service and outcome",
            m.downstream_calls.clone(),
        );
        r.register(
            "composer_downstream_call_duration_seconds",
            "Latency of calls to the domain services",
            m.downstream_duration.clone(),
        );
        r.register(
            "composer_downstream_calls_per_request",
            "Downstream calls one composer request made (its fan-out)",
            m.calls_per_request.clone(),
        );
        r.register(
            "composer_retries",
            "Retried downstream calls",
            m.retries.clone(),
        );
        r.register(
            "composer_retries_denied",
            "Retries not made because the retry budget was spent",
            m.retries_denied.clone(),
        );
        r.register(
            "composer_breaker_rejections",
            "Calls not made because every replica's circuit was open",
            m.breaker_rejections.clone(),
        );
        r.register(
            "composer_circuit_state",
            "Circuit breaker state per service: 0 closed (a replica's circuit is), \
             1 open (every replica's is), 2 half-open",
            m.circuit_state.clone(),
        );
        r.register(
            "composer_replica_circuit_state",
            "Circuit breaker state per replica of a service: 0 closed, 1 open (ejected), \
             2 half-open",
            m.replica_circuit_state.clone(),
        );
        r.register(
            "composer_cache_hits",
            "Section look-ups answered from the cache",
            m.cache_hits.clone(),
        );
        r.register(
            "composer_cache_misses",
            "Section look-ups that loaded from the service",
            m.cache_misses.clone(),
        );
        r.register(
            "composer_cache_coalesced",
            "Section look-ups that waited for a load another request had started",
            m.cache_coalesced.clone(),
        );
        r.register(
            "composer_cache_stale_served",
            "Sections served from an expired entry because the service failed",
            m.cache_stale_served.clone(),
        );
        r.register(
            "composer_cache_invalidations",
            "Cache entries evicted because an event said the data changed",
            m.invalidations.clone(),
        );
        r.register(
            "composer_events_seen",
            "Events read from the bus for cache invalidation",
            m.events_seen.clone(),
        );
        r.register(
            "composer_events_undecodable",
            "Bus records skipped because they were not valid events",
            m.events_undecodable.clone(),
        );
        Arc::new(m)
    }
}
