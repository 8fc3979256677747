//! Asking the questions: the real analytics server over a loaded read model, one client in
//! a closed loop per question and way, per-run quantiles and their medians over runs.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use shoplens_analytics::QueryConfig;
use shoplens_analytics::config::AnalyticsConfig;
use tokio::time::Instant;

use super::data::Loaded;
use super::export::export;
use super::questions::{number, questions, summary};
use super::{AnalyticsOptions, DataInfo, Latency, QuestionResult, RunLatency, SizeResult};
use crate::histogram::Histogram;
use crate::machine::proc_status_mib;
use crate::results::median;

/// One request of the benchmark's client.
enum Call<'a> {
    Get(String),
    Sql(&'a str),
}

/// Sends `call` and reads the whole answer; an error names the status and the body.
async fn send(client: &reqwest::Client, base: &str, call: &Call<'_>) -> Result<Vec<u8>, String> {
    let request = match call {
        Call::Get(path) => client.get(format!("{base}{path}")),
        Call::Sql(sql) => client
            .post(format!("{base}/api/v1/sql"))
            .header(reqwest::header::CONTENT_TYPE, "text/plain")
            .body(sql.to_string()),
    };
    let resp = request.send().await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = resp.bytes().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!(
            "HTTP {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(500)])
        ));
    }
    Ok(body.to_vec())
}

/// How many requests one measurement makes.
struct Plan {
    warmup: usize,
    max: usize,
    min: usize,
    budget: Duration,
}

/// Times `plan.max` calls (fewer once the budget is spent) after `plan.warmup` untimed
/// ones; if every warm-up call failed, or the first three timed ones, the question is not
/// asked further in this run.
async fn measure(
    client: &reqwest::Client,
    base: &str,
    call: &Call<'_>,
    plan: &Plan,
    run: usize,
    first_error: &mut Option<String>,
) -> (RunLatency, Histogram) {
    let mut hist = Histogram::default();
    let mut warmup_errors = 0u64;
    for _ in 0..plan.warmup {
        if let Err(e) = send(client, base, call).await {
            first_error.get_or_insert(e);
            warmup_errors += 1;
        }
    }
    // A question that fails every time (a time limit) is not asked again and again; one
    // that fails now and then is measured, its failures counted.
    let hopeless = plan.warmup > 0 && warmup_errors == plan.warmup as u64;
    let mut errors = 0u64;
    let started = Instant::now();
    let mut done = 0usize;
    loop {
        let spent = done >= plan.min && started.elapsed() >= plan.budget;
        let failing = errors >= 3 && hist.count() == 0;
        if hopeless || done >= plan.max || spent || failing {
            break;
        }
        let t = Instant::now();
        match send(client, base, call).await {
            Ok(_) => hist.record(t.elapsed()),
            Err(e) => {
                errors += 1;
                first_error.get_or_insert(e);
            }
        }
        done += 1;
    }
    let ok = hist.count() > 0;
    let q = |v: f64| if ok { v } else { f64::NAN };
    let run = RunLatency {
        run,
        requests: hist.count(),
        errors,
        warmup_errors,
        secs: started.elapsed().as_secs_f64(),
        p50_ms: q(hist.quantile_ms(0.5)),
        p99_ms: q(hist.quantile_ms(0.99)),
        max_ms: q(hist.max_ms()),
        mean_ms: q(hist.mean_ms()),
    };
    (run, hist)
}

fn latency(runs: Vec<RunLatency>, pooled: &Histogram, first_error: Option<String>) -> Latency {
    let ok = pooled.count() > 0;
    Latency {
        p50_ms: median(runs.iter().map(|r| r.p50_ms).collect()),
        p99_ms: median(runs.iter().map(|r| r.p99_ms).collect()),
        pooled_p50_ms: if ok {
            pooled.quantile_ms(0.5)
        } else {
            f64::NAN
        },
        pooled_p99_ms: if ok {
            pooled.quantile_ms(0.99)
        } else {
            f64::NAN
        },
        max_ms: if ok { pooled.max_ms() } else { f64::NAN },
        requests: runs.iter().map(|r| r.requests).sum(),
        errors: runs.iter().map(|r| r.errors).sum(),
        first_error,
        runs,
    }
}

/// `count(*)` of `table` through the server's SQL.
async fn count_rows(client: &reqwest::Client, base: &str, table: &str) -> Option<u64> {
    let sql = format!("SELECT count(*) AS n FROM {table}");
    let body = send(client, base, &Call::Sql(&sql)).await.ok()?;
    let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
    number(&v["rows"][0]["n"])
}

const COUNTED_TABLES: &[&str] = &[
    "orders",
    "order_status_changes",
    "product_purchases",
    "daily_sales",
    "product_sales_daily",
    "customer_spend_daily",
    "monthly_sales",
];

/// Starts the analytics server over `loaded` and asks every question.
pub(super) async fn measure_size(
    opts: &AnalyticsOptions,
    data: &DataInfo,
    loaded: &Loaded,
    scratch: &Path,
) -> anyhow::Result<SizeResult> {
    let backend = loaded.backend;
    let mut query = QueryConfig {
        timeout_ms: opts.query_timeout_ms,
        result_cache_mb: opts.result_cache_mb,
        ..QueryConfig::default()
    };
    query.workers.program = crate::worker_program();
    let mut config = AnalyticsConfig {
        listen: ([127, 0, 0, 1], 0).into(),
        query: query.clone(),
        ..AnalyticsConfig::default()
    };
    config.http.request_timeout_ms = opts.query_timeout_ms;
    config.sql.listen = ([127, 0, 0, 1], 0).into();
    let engine = shoplens_analytics::startup::engine(&loaded.read_model, &query)
        .await
        .with_context(|| format!("{}: failed to open the read model", backend.name()))?;
    let handle = shoplens_analytics::start(&config, engine)
        .await
        .context("failed to start the analytics server")?;
    let base = handle.url();
    let client = crate::admin_client(
        reqwest::Client::builder().timeout(Duration::from_millis(opts.query_timeout_ms + 30_000)),
    )?;

    let mut table_rows = BTreeMap::new();
    for table in COUNTED_TABLES {
        if let Some(n) = count_rows(&client, &base, table).await {
            table_rows.insert((*table).to_owned(), n);
        }
    }

    let questions = questions(data.last_day);
    let dashboard_plan = Plan {
        warmup: opts.warmup,
        max: opts.queries,
        min: opts.min_queries.min(opts.queries),
        budget: opts.query_budget,
    };
    let raw_plan = Plan {
        warmup: 1,
        max: opts.raw_queries,
        min: opts.raw_min_queries.min(opts.raw_queries),
        budget: opts.raw_budget,
    };
    struct Acc {
        runs: Vec<RunLatency>,
        hist: Histogram,
        first_error: Option<String>,
    }
    let new_acc = || Acc {
        runs: Vec::new(),
        hist: Histogram::default(),
        first_error: None,
    };
    let mut dash: Vec<Acc> = questions.iter().map(|_| new_acc()).collect();
    let mut raw: Vec<Acc> = questions.iter().map(|_| new_acc()).collect();

    // The two ways must answer the same question.
    let mut answers = Vec::new();
    for q in &questions {
        let d = send(&client, &base, &Call::Get(q.dashboard.clone())).await;
        let r = send(&client, &base, &Call::Sql(&q.raw_sql)).await;
        let d = d.ok().and_then(|b| summary(q.view, &b));
        let r = r.ok().and_then(|b| summary(q.view, &b));
        answers.push((d, r));
    }

    for run in 1..=opts.runs {
        for (q, acc) in questions.iter().zip(&mut dash) {
            let call = Call::Get(q.dashboard.clone());
            let (r, h) = measure(
                &client,
                &base,
                &call,
                &dashboard_plan,
                run,
                &mut acc.first_error,
            )
            .await;
            acc.hist.merge(&h);
            acc.runs.push(r);
        }
        for (q, acc) in questions.iter().zip(&mut raw) {
            let call = Call::Sql(&q.raw_sql);
            let (r, h) = measure(&client, &base, &call, &raw_plan, run, &mut acc.first_error).await;
            acc.hist.merge(&h);
            acc.runs.push(r);
        }
        tracing::info!(
            backend = backend.name(),
            events = data.events,
            run,
            "questions asked"
        );
    }
    handle.stop().await;
    let bench_peak_rss_mib = proc_status_mib("self", "VmHWM:");

    let results: Vec<QuestionResult> = questions
        .into_iter()
        .zip(dash)
        .zip(raw)
        .zip(answers)
        .map(|(((question, d), r), (da, ra))| {
            let dashboard = latency(d.runs, &d.hist, d.first_error);
            let raw = latency(r.runs, &r.hist, r.first_error);
            QuestionResult {
                raw_over_dashboard_p50: raw.p50_ms / dashboard.p50_ms,
                answers_agree: match (&da, &ra) {
                    (Some(a), Some(b)) => Some(a == b),
                    _ => None,
                },
                dashboard_answer: da,
                raw_answer: ra,
                question,
                dashboard,
                raw,
            }
        })
        .collect();

    let mut exports = Vec::new();
    for format in ["csv", "parquet"] {
        exports.push(export(opts, data, &loaded.read_model, format, scratch).await?);
    }

    Ok(SizeResult {
        backend,
        events: data.events,
        load_secs: loaded.load_secs,
        load_events_per_sec: data.events as f64 / loaded.load_secs,
        store_bytes: loaded.store_bytes,
        table_rows,
        questions: results,
        exports,
        bench_peak_rss_mib,
    })
}
