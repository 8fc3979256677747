//! ShopLens benchmarks: scenarios that start the real system in this process, drive it the
//! way clients do, and write what they measured to `benches/results/` (a JSON file per
//! scenario and a section of `RESULTS.md`). Performance claims live here, not in timed tests.
//!
//! Run: `cargo run --release -p shoplens-benches -- all` (or a single scenario, e.g.
//! `composer --runs 3 --duration-secs 5`; `--smoke` for a quick check of the harness).
//!
//! Scenarios: [`composer`] (Order Summary: no cache / cache / cache + invalidation),
//! [`ingest`] (the event pipeline: throughput, freshness and worker memory per read model) and
//! [`analytics`] (dashboard latency against raw scans as the data grows, export throughput
//! and memory, per read model).

pub mod analytics;
pub mod composer;
pub mod histogram;
pub mod ingest;
pub mod load;
pub mod machine;
pub mod results;
pub mod servers;
pub mod shop;
