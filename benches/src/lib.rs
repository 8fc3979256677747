//! ShopLens benchmarks: scenarios that start the real system in this process, drive it the
//! way clients do, and write what they measured: `benches/RESULTS.md` (a section per
//! scenario, the comparison first) and `benches/results/` (a JSON file per scenario, charts).
//! Performance claims live here, not in timed tests.
//!
//! Run: `cargo run --release -p shoplens-benches -- all` (or a single scenario, e.g.
//! `composer --runs 3 --duration-secs 5`; `--smoke` for a quick check of the harness).
//!
//! Scenarios: [`compare`] (the API Composer against CQRS on both requirements: order
//! tracking and the sales dashboard, with staleness, load curves and growth), [`composer`] (Order Summary: no cache / cache / cache + invalidation),
//! [`ingest`] (the event pipeline: throughput, freshness and worker memory per read model) and
//! [`analytics`] (dashboard latency against raw scans as the data grows, export throughput
//! and memory, per read model).

pub mod analytics;
pub mod chart;
pub mod compare;
pub mod components;
pub mod composer;
pub mod histogram;
pub mod ingest;
pub mod isolation;
pub mod load;
pub mod machine;
pub mod results;
pub mod servers;
pub mod shop;

/// The program the analytics server under test starts its query workers from: this one (the
/// `shoplens-bench` binary answers `query-worker`), or what [`set_worker_program`] said (a
/// test harness is not such a program).
pub fn worker_program() -> String {
    WORKER_PROGRAM
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .unwrap_or_default()
}

/// Starts query workers from `program` from now on (tests: the `shoplens-bench` binary).
pub fn set_worker_program(program: &str) {
    *WORKER_PROGRAM.lock().unwrap_or_else(|e| e.into_inner()) = Some(program.to_owned());
}

static WORKER_PROGRAM: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// The key the systems under test check tokens with (the development key: they listen on
/// loopback).
pub const SECRET: &str = shoplens_kit::identity::DEV_SECRET;

/// `builder` with every request carrying an admin token of [`SECRET`]: the benchmarks call
/// the services, the composer and the analytics server as an operator would.
pub fn admin_client(builder: reqwest::ClientBuilder) -> reqwest::Result<reqwest::Client> {
    use shoplens_kit::identity::{Identity, Role, issue};
    let token = issue(
        SECRET,
        &Identity::new("benchmark", Role::Admin),
        std::time::Duration::from_secs(7 * 24 * 3600),
    );
    let mut headers = reqwest::header::HeaderMap::new();
    if let Ok(value) = format!("Bearer {token}").parse() {
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    builder.default_headers(headers).build()
}
