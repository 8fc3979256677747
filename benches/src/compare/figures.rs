//! What the comparison measured: the types `results/compare.json` holds, and the notes on
//! how each figure is taken.

use serde::Serialize;

use super::{
    CompareOptions, DASHBOARD_P99_OBJECTIVE, ReadPath, SERVED_GOODPUT_SHARE, STALENESS_DEADLINE,
    TRACKING_P99_OBJECTIVE,
};
use crate::backend::Backend;
use crate::machine::{Machine, Versions};

/// One closed-loop measurement of one path.
#[derive(Clone, Debug, Serialize)]
pub struct PathRun {
    pub path: ReadPath,
    pub requests: u64,
    pub errors: u64,
    pub throughput_rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Process CPU milliseconds per answered request (everything in this process).
    pub cpu_ms_per_request: f64,
}

/// Staleness samples of one run, in milliseconds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Staleness {
    /// The samples each path showed in time.
    pub composer_ms: Vec<f64>,
    pub cqrs_ms: Vec<f64>,
    /// Samples where a path did not show the new order or its change within
    /// [`STALENESS_DEADLINE`]: kept as misses, so a path that falls behind cannot look
    /// fresher by losing its slowest samples.
    pub composer_misses: u64,
    pub cqrs_misses: u64,
}

/// One measured round at one size.
#[derive(Clone, Debug, Serialize)]
pub struct Round {
    pub run: usize,
    pub paths: Vec<PathRun>,
    pub staleness: Staleness,
}

/// One step of a scalability curve.
#[derive(Clone, Debug, Serialize)]
pub struct CurvePoint {
    pub path: ReadPath,
    pub run: usize,
    /// `curve` (a fraction of the closed-loop throughput) or `burst-base`/`burst-peak`/
    /// `burst-after`.
    pub phase: String,
    pub fraction: f64,
    pub offered_rps: f64,
    /// Answered without error inside the step's window, per second of the window.
    pub goodput_rps: f64,
    pub errors: u64,
    pub dropped: u64,
    /// Answered after the step's window closed: in the latencies, not in the goodput (an
    /// overloaded path would otherwise be credited with work it finished later).
    pub late: u64,
    /// From each request's scheduled start (queueing included).
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// Medians over runs of one path at one size.
#[derive(Clone, Debug, Serialize)]
pub struct PathSummary {
    pub path: ReadPath,
    pub throughput_rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub cpu_ms_per_request: f64,
    pub errors: u64,
}

/// Everything measured at one size.
#[derive(Clone, Debug, Serialize)]
pub struct SizeResult {
    pub orders: usize,
    /// Events the services had published when measuring began (the read model's size).
    pub events: u64,
    pub seed_secs: f64,
    /// Seconds from the end of seeding until the read model answered the dashboard with
    /// the live figures.
    pub catch_up_secs: f64,
    /// The composer's live dashboard and the read model's four views gave the same rows;
    /// always true in a written result, as a run where they differ fails.
    pub same_numbers: bool,
    pub rounds: Vec<Round>,
    pub summary: Vec<PathSummary>,
    /// Median over runs of p50(composer) / p50(CQRS), per requirement, from the same run.
    pub tracking_p50_ratio: f64,
    pub dashboard_p50_ratio: f64,
    pub dashboard_cpu_ratio: f64,
    pub staleness_composer_p50_ms: f64,
    pub staleness_composer_p99_ms: f64,
    pub staleness_cqrs_p50_ms: f64,
    pub staleness_cqrs_p99_ms: f64,
    /// Staleness samples per path over all runs, and those each path missed (the
    /// quantiles above are over the others).
    pub staleness_samples: u64,
    pub staleness_composer_misses: u64,
    pub staleness_cqrs_misses: u64,
    /// This process's resident memory (the whole system and the load generator), MiB:
    /// when measuring began at this size, when it ended, and the peak so far (VmHWM).
    pub rss_start_mib: f64,
    pub rss_end_mib: f64,
    pub peak_rss_mib: f64,
}

/// The whole comparison.
#[derive(Clone, Debug, Serialize)]
pub struct CompareResults {
    pub machine: Machine,
    pub versions: Versions,
    pub options: CompareOptions,
    pub command: String,
    pub total_secs: f64,
    pub sizes: Vec<SizeResult>,
    /// At the largest size.
    pub curves: Vec<CurvePoint>,
    pub notes: Vec<String>,
}

/// How each figure is taken, written with the results.
pub(super) fn notes(backend: Backend) -> Vec<String> {
    let mut notes: Vec<String> = vec![
        "Order tracking, API Composer: GET /api/v1/orders/{id}/summary with an admin token, the \
         product's default composer (short-TTL cache with request coalescing, eviction by \
         events); orders picked Zipf by recency among the size's orders."
            .to_owned(),
        "Order tracking, CQRS: POST /api/v1/sql on the analytics server with the order's latest \
         status (order_status_changes) and latest shipment location (shipment_events) as one \
         query; the same orders."
            .to_owned(),
        "Sales dashboard, CQRS: the four requests the dashboard page sends at once (daily, \
         top-products, top-customers, trends) over the last 30 days; latency until all four \
         answered. API Composer: GET /api/v1/sales/dashboard on the composer, which pages \
         through every order of the order service (500 per page) and looks up names, answering \
         the same four views. Before measuring at each size both answers are compared row by \
         row (same_numbers); a run where they still differ after 120 s fails, naming the \
         difference, instead of reporting figures."
            .to_owned(),
        "Closed loop: the given workers send back to back for the measured window after an \
         unmeasured warm-up; CPU per request = this process's CPU time over the window (all \
         services, composer, ingest, analytics and the load generator) / answered requests."
            .to_owned(),
        format!(
            "Staleness: a new order is placed and read through both paths until each shows it \
             as Placed (the composer then has it cached); it is moved to Paid in the order \
             service; from the moment that call returned, both paths are polled every 2 ms \
             until they show Paid. No other load runs meanwhile. A path that did not show the \
             order as Placed, or then as Paid, within {} s has missed that sample: misses are \
             reported per path (k of n missed), and the quantiles are over the samples shown \
             in time.",
            STALENESS_DEADLINE.as_secs()
        ),
        "Scalability: at the largest size, an open loop per path at fractions of the throughput \
         that path sustained closed-loop in the same run, latency from each request's \
         scheduled start (queueing included, no coordinated omission); then a festival-sale \
         burst: base, peak and base again. Goodput counts only requests answered without \
         error inside the step's window; those answered after it closed (late) count in the \
         latencies only."
            .to_owned(),
        format!(
            "Highest offered load served: the highest curve step (medians over runs) with \
             goodput >= {:.0}% of offered, no errors, and p99 within the path's latency \
             objective: {} ms for order tracking, {} ms for the dashboard.",
            SERVED_GOODPUT_SHARE * 100.0,
            TRACKING_P99_OBJECTIVE.as_millis(),
            DASHBOARD_P99_OBJECTIVE.as_millis()
        ),
        "Memory: this process's VmRSS when measuring at a size began and ended, and its VmHWM \
         (peak) so far, including the overload steps of the curves (open loops at 1.5x what \
         each path sustained, at most 1024 requests in flight): memory stays bounded when the \
         end-of-size figure does not keep growing with the load."
            .to_owned(),
        "Growth: the same shop grows between sizes (more orders seeded on top through the \
         services), and everything is measured again."
            .to_owned(),
        "Medians over runs; ratios are medians of per-run ratios (both paths measured in the \
         same run); the machine is shared, so compare ratios rather than absolute figures."
            .to_owned(),
    ];
    if backend == Backend::Clickhouse {
        notes.push(
            "CPU per request counts this process only: on this back end the ClickHouse server \
             and the Kafka broker run as their own processes, so the CQRS paths' CPU (and the \
             composer's relay publishing) is understated by theirs."
                .to_owned(),
        );
    }
    notes
}
