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
//! and memory, per read model) and [`writes`] (order writes on SQLite and PostgreSQL with one
//! and two replicas, and the outbox relay's fail-over).

pub mod analytics;
pub mod backend;
pub mod chart;
pub mod child;
pub mod compare;
pub mod components;
pub mod composer;
pub mod histogram;
pub mod ingest;
pub mod isolation;
pub mod load;
pub mod machine;
pub mod metrics;
pub mod report;
pub mod results;
pub mod servers;
pub mod shop;
pub mod synthetic;
pub mod writes;

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

/// `Bearer <token>` of an administrator, signed with [`SECRET`], valid for a week.
pub fn admin_bearer() -> String {
    use shoplens_kit::identity::{Identity, Role, issue};
    let token = issue(
        SECRET,
        &Identity::new("benchmark", Role::Admin),
        std::time::Duration::from_secs(7 * 24 * 3600),
    );
    format!("Bearer {token}")
}

/// `builder` with every request carrying an admin token of [`SECRET`]: the benchmarks call
/// the services, the composer and the analytics server as an operator would.
pub fn admin_client(builder: reqwest::ClientBuilder) -> reqwest::Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Ok(value) = admin_bearer().parse() {
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    builder.default_headers(headers).build()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// The scenarios: each renders its own results; none is imported by a shared module or
    /// by another scenario.
    const SCENARIOS: &[&str] = &[
        "analytics",
        "compare",
        "components",
        "composer",
        "ingest",
        "isolation",
        "writes",
    ];

    /// Every `.rs` file under `dir`, with the top-level module it belongs to.
    fn sources(dir: &Path, module: Option<&str>, out: &mut Vec<(String, String)>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            let module = module.map_or(name, str::to_owned);
            if path.is_dir() {
                sources(&path, Some(&module), out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push((module, std::fs::read_to_string(&path).unwrap()));
            }
        }
    }

    #[test]
    fn shared_modules_and_scenarios_import_no_other_scenario() {
        let mut files = Vec::new();
        sources(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            None,
            &mut files,
        );
        assert!(
            files.iter().any(|(m, _)| m == "results"),
            "no sources found"
        );
        let mut wrong = Vec::new();
        for (module, text) in &files {
            for scenario in SCENARIOS.iter().filter(|s| *s != module) {
                let path = format!("crate::{scenario}");
                if text.contains(&format!("{path}::")) || text.contains(&format!("{path};")) {
                    wrong.push(format!("{module} uses {path}"));
                }
            }
        }
        assert!(wrong.is_empty(), "{wrong:?}");
    }
}
