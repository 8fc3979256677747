//! What the composer scenario measured: the types `results/composer.json` holds, and the
//! notes on how each figure is taken.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{ComposerOptions, Load, Mode};
use crate::machine::Machine;
use crate::results::Aim;
use crate::shop::WriterReport;

/// One mode measured once.
#[derive(Clone, Debug, Serialize)]
pub struct ModeResult {
    pub mode: Mode,
    pub load: Load,
    /// Open loop: the request rate offered.
    pub offered_rps: Option<f64>,
    pub requests: u64,
    /// Non-2xx answers or failed requests.
    pub errors: u64,
    /// 200s with a stale or unavailable section.
    pub degraded: u64,
    /// Open loop: requests not sent because too many were in flight.
    pub dropped: u64,
    pub throughput_rps: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
    /// Latency from the actual send (the open loop's `p50_ms`/`p99_ms` count from the
    /// scheduled start, which adds the generator's timer delay, up to about 1 ms).
    pub service_p50_ms: f64,
    pub service_p99_ms: f64,
    /// `shoplens_composer_downstream_calls_total` delta over the measured window.
    pub downstream_calls: f64,
    pub calls_per_request: f64,
    pub cache_hits: f64,
    pub cache_misses: f64,
    pub invalidations: f64,
    pub events_seen: f64,
}

/// One downstream call measured directly.
#[derive(Clone, Debug, Serialize)]
pub struct CallLatency {
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// The fan-out check of one run.
#[derive(Clone, Debug, Serialize)]
pub struct Fanout {
    pub offered_rps: f64,
    pub samples: u64,
    pub errors: u64,
    /// Per call: `order`, then `customer`, `products`, `payments`, `shipments` (concurrent);
    /// `second_round` is the wall time of the four concurrent calls together.
    pub calls: BTreeMap<&'static str, CallLatency>,
    pub order_p50_ms: f64,
    /// The second-round call with the highest p50.
    pub slowest_second_round_call: &'static str,
    pub slowest_second_round_p50_ms: f64,
    /// `order_p50_ms + slowest_second_round_p50_ms`: the critical path of two round trips.
    pub critical_path_p50_ms: f64,
    /// p50 of order + second round measured per sample (includes the wait for the slowest
    /// of four, which is more than the slowest single p50).
    pub measured_two_rounds_p50_ms: f64,
    /// The open-loop no-cache composer p50 (from the send) of the same run, same rate.
    pub composer_no_cache_p50_ms: f64,
    /// `composer_no_cache_p50_ms - critical_path_p50_ms`.
    pub overhead_ms: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct RunResult {
    pub run: usize,
    pub offered_rps: f64,
    pub closed: Vec<ModeResult>,
    pub open: Vec<ModeResult>,
    pub fanout: Fanout,
    /// Open loop, same offered load: p99(no cache) / p99(cache), latency from the send.
    pub p99_ratio_no_cache_over_cache: f64,
    /// Open loop, same offered load: p99(no cache) / p99(cache + invalidation), from the send.
    pub p99_ratio_no_cache_over_cache_invalidation: f64,
    /// The same two ratios with latency from the scheduled start.
    pub p99_ratio_scheduled_no_cache_over_cache: f64,
    pub p99_ratio_scheduled_no_cache_over_cache_invalidation: f64,
    pub secs: f64,
}

/// Medians over runs of one mode and load type.
#[derive(Clone, Debug, Serialize)]
pub struct SummaryRow {
    pub mode: Mode,
    pub load: Load,
    pub offered_rps: Option<f64>,
    pub throughput_rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub service_p50_ms: f64,
    pub service_p99_ms: f64,
    pub calls_per_request: f64,
    pub invalidations: f64,
    pub errors: u64,
    pub degraded: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub rows: Vec<SummaryRow>,
    pub p99_ratio_no_cache_over_cache: f64,
    pub p99_ratio_no_cache_over_cache_invalidation: f64,
    pub p99_ratio_scheduled_no_cache_over_cache: f64,
    pub p99_ratio_scheduled_no_cache_over_cache_invalidation: f64,
    pub fanout_overhead_ms: f64,
    pub fanout_critical_path_p50_ms: f64,
    pub fanout_composer_p50_ms: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct DataSize {
    pub customers: usize,
    pub products: usize,
    pub seeded_orders: usize,
    /// Readers pick among this many most recent orders.
    pub read_population: usize,
    pub orders_at_end: usize,
    pub seed_secs: f64,
    pub writer: WriterReport,
}

/// Everything `composer.json` holds.
#[derive(Clone, Debug, Serialize)]
pub struct ComposerResults {
    pub scenario: &'static str,
    pub command: String,
    pub machine: Machine,
    pub options: ComposerOptions,
    pub composer_cache: shoplens_composer::CacheConfig,
    pub data: DataSize,
    pub runs: Vec<RunResult>,
    pub summary: Summary,
    pub aims: Vec<Aim>,
    pub notes: Vec<&'static str>,
    pub total_secs: f64,
}

/// How each figure is taken, written with the results.
pub const NOTES: &[&str] = &[
    "Read load: GET /api/v1/orders/{id}/summary with an admin token; orders picked with \
     shop_simulator::ZipfPicker by recency rank (rank 0 = newest) over the most recent \
     `orders` orders — customers refreshing the orders they just placed in a festival sale.",
    "Background writes in every mode (so modes are comparable): new orders at \
     writer_rate_per_sec, each driven through payment, capture, Paid, shipment, Shipped, \
     location updates, delivery and Delivered, one step per writer_step; new orders join the \
     read set at once.",
    "Closed loop: `concurrency` workers, throughput is what the system sustained. Open loop: \
     one fixed rate for every mode (open_fraction of the no-cache closed-loop throughput of \
     the same run). Open-loop p50/p99 count from each request's scheduled start (no \
     coordinated omission; includes the generator's timer delay, up to about 1 ms); \
     service p50/p99 count from the actual send. The 10x aim and the fan-out check use the \
     latter.",
    "Downstream calls/request: delta of shoplens_composer_downstream_calls_total on the \
     composer's /metrics over the measured window, divided by the requests answered in it.",
    "Fan-out: the critical path of an uncached summary is two round trips — the order, then \
     customer, products (one batch), payments and shipments concurrently. The same calls \
     are made directly at the same offered rate; overhead = composer no-cache p50 - (order \
     p50 + the highest p50 of the four second-round calls).",
    "Each measurement uses a fresh composer (cold cache) and a warm-up that is not measured; \
     the five services, their data and the event log are shared by all runs.",
];
