//! The composer benchmark's harness works end to end: a smoke run (tiny sizes) through the
//! library writes a results file with sane values. No timing assertions.

use shoplens_benches::composer::{self, ComposerOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke_run_writes_sane_results() {
    let dir = tempfile::tempdir().unwrap();
    let opts = ComposerOptions::smoke(dir.path().to_path_buf());
    composer::run(&opts).await.expect("smoke run");
    if let Ok(keep) = std::env::var("SMOKE_KEEP") {
        std::fs::copy(dir.path().join("composer.json"), keep).unwrap();
    }

    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("composer.json")).unwrap()).unwrap();
    let md = std::fs::read_to_string(dir.path().join("RESULTS.md")).unwrap();
    assert!(md.contains("## Composer"), "{md}");
    assert!(md.contains("| no-cache |"), "{md}");

    assert!(json["machine"]["cores"].as_u64().unwrap() >= 1);
    assert!(json["data"]["seeded_orders"].as_u64().unwrap() > 0);
    let runs = json["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1);
    let run = &runs[0];
    for load in ["closed", "open"] {
        let rows = run[load].as_array().unwrap();
        assert_eq!(rows.len(), 3, "{load}");
        let calls = |mode: &str| {
            let row = rows.iter().find(|r| r["mode"] == mode).unwrap();
            let requests = row["requests"].as_u64().unwrap();
            let (p50, p99) = (
                row["p50_ms"].as_f64().unwrap(),
                row["p99_ms"].as_f64().unwrap(),
            );
            assert!(requests > 0, "{load} {mode}: no requests");
            assert!(
                p50 > 0.0 && p50 <= p99,
                "{load} {mode}: p50 {p50} p99 {p99}"
            );
            assert_eq!(row["errors"].as_u64().unwrap(), 0, "{load} {mode}: errors");
            row["calls_per_request"].as_f64().unwrap()
        };
        let uncached = calls("no-cache");
        // Five calls per summary (order, customer, products, payments, shipments).
        assert!(
            uncached >= 4.0,
            "{load}: {uncached} calls/request without cache"
        );
        for mode in ["cache", "cache+invalidation"] {
            let cached = calls(mode);
            assert!(cached < uncached, "{load} {mode}: {cached} vs {uncached}");
        }
    }
    let fanout = &run["fanout"];
    assert!(fanout["samples"].as_u64().unwrap() > 0);
    assert!(fanout["critical_path_p50_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(json["aims"].as_array().unwrap().len(), 3);
}
