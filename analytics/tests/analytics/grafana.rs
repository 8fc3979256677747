//! The Grafana dashboard shipped with docker-compose (`deploy/grafana/dashboards`): every
//! SQL panel's query, with Grafana's time macros expanded as Grafana expands them, runs
//! against the Postgres endpoint as an analyst (the role Grafana connects with) and returns
//! rows; every panel names a provisioned data source; every metric a Prometheus panel asks
//! for is one a ShopLens server registers.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::support;

/// The range the panels are asked for: within the synthetic stream.
const FROM: &str = "2025-11-24T00:00:00Z";
const TO: &str = "2026-01-22T23:59:59Z";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn dashboard() -> Value {
    let path = root().join("deploy/grafana/dashboards/shoplens-sales.json");
    let text = std::fs::read_to_string(&path).expect("the dashboard file");
    serde_json::from_str(&text).expect("the dashboard is JSON")
}

/// Every panel, rows' nested panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in dashboard["panels"].as_array().expect("panels") {
        out.push(p);
        if let Some(nested) = p["panels"].as_array() {
            out.extend(nested);
        }
    }
    out
}

/// `sql` with the macros of Grafana's PostgreSQL data source expanded for `FROM..TO`.
fn expand(sql: &str) -> String {
    let quoted = |t: &str| format!("'{t}'");
    let mut out = sql
        .replace("$__timeFrom()", &quoted(FROM))
        .replace("$__timeTo()", &quoted(TO));
    while let Some(at) = out.find("$__timeFilter(") {
        let rest = &out[at + "$__timeFilter(".len()..];
        let end = rest.find(')').expect("a closed $__timeFilter");
        let column = rest[..end].to_owned();
        out = format!(
            "{}{column} BETWEEN {} AND {}{}",
            &out[..at],
            quoted(FROM),
            quoted(TO),
            &rest[end + 1..]
        );
    }
    assert!(
        !out.contains("$__"),
        "a Grafana macro this test does not know: {out}"
    );
    out
}

#[tokio::test]
async fn every_sql_panel_of_the_grafana_dashboard_returns_rows() {
    let (_dir, engine) = support::embedded_engine(&support::events()).await;
    let app = support::spawn_app(engine).await;
    let client = app.pg_client_as(support::ANALYST, "").await;
    let dashboard = dashboard();
    let mut ran = 0;
    for panel in panels(&dashboard) {
        let title = panel["title"].as_str().unwrap_or("?");
        let Some(targets) = panel["targets"].as_array() else {
            continue;
        };
        for target in targets {
            if target["datasource"]["uid"] != "shoplens-sql" {
                continue;
            }
            let sql = expand(target["rawSql"].as_str().expect("rawSql"));
            let rows = client
                .query(sql.as_str(), &[])
                .await
                .unwrap_or_else(|e| panic!("panel `{title}`: {e}\n{sql}"));
            assert!(!rows.is_empty(), "panel `{title}` returned no rows:\n{sql}");
            if target["format"] == "time_series" {
                assert_eq!(
                    rows[0].columns()[0].name(),
                    "time",
                    "panel `{title}`: a time series starts with its `time` column"
                );
            }
            ran += 1;
        }
    }
    assert!(ran >= 8, "only {ran} SQL panels");
}

#[test]
fn every_panel_names_a_provisioned_data_source_and_a_registered_metric() {
    let provisioning = std::fs::read_to_string(
        root().join("deploy/grafana/provisioning/datasources/shoplens.yml"),
    )
    .expect("the data source file");
    let dashboard = dashboard();
    let mut metrics = Vec::new();
    for panel in panels(&dashboard) {
        let title = panel["title"].as_str().unwrap_or("?");
        for target in panel["targets"].as_array().into_iter().flatten() {
            let uid = target["datasource"]["uid"]
                .as_str()
                .expect("a data source uid");
            assert!(
                provisioning.contains(&format!("uid: {uid}\n")),
                "panel `{title}` uses data source `{uid}`, which is not provisioned"
            );
            if let Some(expr) = target["expr"].as_str() {
                metrics.extend(metric_names(expr));
            }
        }
    }
    assert!(!metrics.is_empty(), "no Prometheus panel");
    let sources = rust_sources();
    for metric in metrics {
        let base = metric.strip_prefix("shoplens_").expect("a ShopLens metric");
        let base = ["_total", "_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| base.strip_suffix(s))
            .unwrap_or(base);
        assert!(
            sources.contains(&format!("\"{base}\"")),
            "a panel asks for `{metric}`, which no server registers"
        );
    }
}

/// The metric names (`shoplens_...`) in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("shoplens_"))
        .map(str::to_owned)
        .collect()
}

/// The Rust sources of the servers, concatenated.
fn rust_sources() -> String {
    let mut out = String::new();
    let mut todo: Vec<PathBuf> = ["services", "composer", "ingest", "analytics"]
        .iter()
        .map(|d| root().join(d))
        .collect();
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir)
            .expect("a source directory")
            .flatten()
        {
            let path = entry.path();
            if path.is_dir() {
                if !path.ends_with("target") && !path.ends_with("tests") {
                    todo.push(path);
                }
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push_str(&std::fs::read_to_string(&path).unwrap_or_default());
            }
        }
    }
    out
}
