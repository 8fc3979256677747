//! The read side never hurts the write side: hostile SQL against the whole running system
//! (the five services, the composer, the ingest worker and the analytics server in one
//! `shoplens run` process, with demo traffic), over HTTP and over `psql`.
//!
//! Allocation bombs through the functions that build values, CPU bombs, huge cross joins,
//! deep nesting, a client that hangs up mid-query, and many at once. Each query must get a
//! clear error within its deadline plus one second, while the shop keeps answering (a probe
//! places orders and reads their Order Summary the whole time), the ingest worker keeps
//! applying the demo's events, and the main process's peak RSS stays under a bound.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::process::Command;

use shoplens_kit::identity::{Identity, Role};

use crate::process::Shoplens;

/// The analytics deadline the suite runs with.
const DEADLINE: Duration = Duration::from_secs(3);
/// What "a clear error within the deadline" allows on top of it.
const SLACK: Duration = Duration::from_secs(1);
/// Peak RSS of the main process (services, composer, ingest worker, analytics server).
const MAIN_RSS_BOUND_MIB: u64 = 512;
const SECRET: &str = "hostile-suite-secret-0123456789abcdef";
const PG_USER: &str = "mallory";
const PG_PASSWORD: &str = "hostile-suite-pg-password";

fn token(subject: &str, role: Role) -> String {
    shoplens_kit::identity::issue(
        SECRET,
        &Identity::new(subject.to_owned(), role),
        Duration::from_secs(3600),
    )
}

/// One hostile query and the error codes (`code` of the JSON error) that are a clear answer.
struct Attack {
    name: &'static str,
    sql: String,
    codes: &'static [&'static str],
}

const LIMITS: &[&str] = &[
    "memory_limit",
    "query_timeout",
    "query_cpu_limit",
    "too_many_rows",
    "invalid_sql",
];

fn attacks() -> Vec<Attack> {
    let a = |name, sql: &str, codes| Attack {
        name,
        sql: sql.to_owned(),
        codes,
    };
    vec![
        a(
            "cpu: levenshtein over two 200k strings",
            "SELECT levenshtein(repeat('a', 200000), repeat('b', 200000)) AS d",
            &["query_timeout", "query_cpu_limit"],
        ),
        a(
            "cpu: a cross join of 4e10 rows",
            "SELECT count(*) FROM generate_series(1, 200000) a CROSS JOIN generate_series(1, 200000) b",
            &["query_timeout", "query_cpu_limit"],
        ),
        a(
            "cpu: an endless recursive CTE",
            "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r",
            &[
                "query_timeout",
                "query_cpu_limit",
                "memory_limit",
                "invalid_sql",
            ],
        ),
        a(
            "memory: array_agg of two billion numbers",
            "SELECT cardinality(array_agg(value)) FROM generate_series(1, 2000000000)",
            &["memory_limit", "query_timeout", "query_cpu_limit"],
        ),
        a(
            "memory: string_agg of a generated series",
            "SELECT length(string_agg(CAST(value AS VARCHAR), ',')) FROM generate_series(1, 2000000000)",
            &["memory_limit", "query_timeout", "query_cpu_limit"],
        ),
        a(
            "memory: concat of sixteen 60 MB strings",
            "SELECT length(concat(r, r, r, r, r, r, r, r, r, r, r, r, r, r, r, r)) AS n \
             FROM (SELECT repeat('x', 60000000) AS r)",
            &["memory_limit", "query_timeout", "query_cpu_limit"],
        ),
        a(
            "memory: array_concat of large arrays",
            "SELECT cardinality(array_concat(a, a, a, a, a, a, a, a, a, a)) AS n \
             FROM (SELECT array_repeat(1, 8000000) AS a)",
            &["memory_limit", "query_timeout", "query_cpu_limit"],
        ),
        a(
            "memory: regexp_replace growing a string",
            "SELECT length(regexp_replace(repeat('a', 60000000), 'a', 'bbbbbbbb', 'g')) AS n",
            &["memory_limit", "query_timeout", "query_cpu_limit"],
        ),
        a(
            "memory: DISTINCT over three billion values",
            "SELECT count(*) FROM (SELECT DISTINCT value FROM generate_series(1, 3000000000))",
            &["memory_limit", "query_timeout", "query_cpu_limit"],
        ),
        a(
            "rows: a million wide rows",
            "SELECT repeat('x', 1000) AS s FROM generate_series(1, 1000000)",
            &["too_many_rows", "memory_limit"],
        ),
        a(
            "cpu: a cross join of the read model's tables",
            "SELECT sum(length(concat(a.order_id, b.order_id, c.order_id, d.product_id))) \
             FROM orders a, orders b, orders c, product_purchases d",
            &["query_timeout", "query_cpu_limit", "memory_limit"],
        ),
        Attack {
            name: "nesting: 5000 levels",
            sql: format!("SELECT {}1", "1 + ".repeat(5000)),
            codes: &["invalid_sql"],
        },
    ]
}

struct System {
    shop: Shoplens,
    info: shoplens::RunInfo,
    /// Sends a service token (the services' calls); SQL adds [`System::analyst`]'s.
    http: reqwest::Client,
    /// The hostile analyst's bearer token.
    analyst: String,
    /// The metrics scraper's.
    monitor: String,
    /// A customer and a product of our own, for the probe's orders.
    customer: String,
    product: String,
}

async fn start(dir: &std::path::Path, extra_env: &[(&str, &str)]) -> System {
    let timeout_ms = DEADLINE.as_millis().to_string();
    // The analyst the suite's psql signs in as.
    let users = format!(
        "[\"{PG_USER} analyst {}\"]",
        shoplens_analytics::users::hash(PG_PASSWORD)
    );
    let mut env: Vec<(&str, &str)> = vec![
        ("SHOPLENS_DEMO__SIMULATOR__ORDERS", "100000"),
        ("SHOPLENS_DEMO__SIMULATOR__RATE_PER_SEC", "5"),
        ("SHOPLENS_DEMO__SIMULATOR__STEP_DELAY_MS", "50"),
        ("SHOPLENS_DEMO__SIMULATOR__CUSTOMERS", "20"),
        ("SHOPLENS_DEMO__SIMULATOR__PRODUCTS", "15"),
        ("SHOPLENS_AUTH__SECRET", SECRET),
        ("SHOPLENS_ANALYTICS__USERS", &users),
        ("SHOPLENS_ANALYTICS__QUERY__TIMEOUT_MS", &timeout_ms),
        ("SHOPLENS_ANALYTICS__QUERY__WORKERS__MEMORY_MB", "512"),
        ("SHOPLENS_ANALYTICS__QUERY__WORKERS__CPU_SECONDS", "6"),
        ("SHOPLENS_ANALYTICS__QUERY__WORKERS__MAX_CONCURRENT", "4"),
        // The suite's HTTP queries all come from 127.0.0.1: one user.
        (
            "SHOPLENS_ANALYTICS__QUERY__WORKERS__MAX_CONCURRENT_PER_USER",
            "4",
        ),
        ("SHOPLENS_ANALYTICS__QUERY__WORKERS__MAX_QUEUED", "4"),
        // Attacks at full rate: without the cool-down that slows down a user whose queries
        // keep ending their workers (the analytics tests check it), so every attack meets
        // its own limit and the shop meets the most churn.
        ("SHOPLENS_ANALYTICS__QUERY__WORKERS__COOL_DOWN_MS", "0"),
    ];
    env.extend_from_slice(extra_env);
    let mut shop = Shoplens::spawn(dir, &[], &env);
    let info = shop.wait_ready();
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {}", token("probe", Role::Service))
            .parse()
            .unwrap(),
    );
    let http = reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap();
    let customer: Value = http
        .post(format!("{}/api/v1/customers", info.customer))
        .json(&json!({"name": "Probe Customer", "email": "probe@example.com", "country": "GB"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let product: Value = http
        .post(format!("{}/api/v1/products", info.product))
        .json(
            &json!({"sku": "PROBE-1", "name": "Probe", "description": "", "category": "Books",
                      "price": "9.99", "currency": "EUR"}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    System {
        shop,
        info,
        http,
        analyst: token(PG_USER, Role::Analyst),
        monitor: token("prometheus", Role::Monitor),
        customer: customer["id"].as_str().unwrap().to_owned(),
        product: product["id"].as_str().unwrap().to_owned(),
    }
}

/// What the probe saw while it placed orders and read their summaries.
#[derive(Debug, Default)]
struct ProbeReport {
    rounds: u64,
    failures: Vec<String>,
    slowest: Duration,
}

/// Places an order and reads its Order Summary through the composer, over and over, until
/// `stop`.
async fn probe(sys: Arc<System>, stop: Arc<AtomicBool>) -> ProbeReport {
    let mut report = ProbeReport::default();
    let token = token(&sys.customer, Role::Customer);
    while !stop.load(Ordering::SeqCst) {
        let started = Instant::now();
        let order = sys
            .http
            .post(format!("{}/api/v1/orders", sys.info.order))
            .timeout(Duration::from_secs(10))
            .json(&json!({"customer_id": sys.customer,
                          "lines": [{"product_id": sys.product, "quantity": 1}]}))
            .send()
            .await;
        let id = match order {
            Ok(r) if r.status().is_success() => r.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned(),
            Ok(r) => {
                report.failures.push(format!("order: {}", r.status()));
                continue;
            }
            Err(e) => {
                report.failures.push(format!("order: {e}"));
                continue;
            }
        };
        let summary = sys
            .http
            .get(format!("{}/api/v1/orders/{id}/summary", sys.info.composer))
            .bearer_auth(&token)
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        match summary {
            Ok(r) if r.status() == 200 => {
                let body: Value = r.json().await.unwrap();
                for section in ["order", "customer", "payment", "shipping"] {
                    if body[section]["status"] == "unavailable" {
                        report
                            .failures
                            .push(format!("summary: {section} unavailable"));
                    }
                }
            }
            Ok(r) => report.failures.push(format!("summary: {}", r.status())),
            Err(e) => report.failures.push(format!("summary: {e}")),
        }
        report.slowest = report.slowest.max(started.elapsed());
        report.rounds += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    report
}

/// Sends `attack` over HTTP and checks it got a clear JSON error in time.
async fn http_attack(sys: &System, attack: &Attack) -> String {
    let analytics = sys.info.analytics.as_deref().unwrap();
    let started = Instant::now();
    let resp = sys
        .http
        .post(format!("{analytics}/api/v1/sql"))
        .bearer_auth(&sys.analyst)
        .json(&json!({ "sql": attack.sql }))
        .timeout(DEADLINE + Duration::from_secs(30))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{}: no answer: {e}", attack.name));
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    let took = started.elapsed();
    let body: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {status} {text}", attack.name));
    let code = body["code"].as_str().unwrap_or("").to_owned();
    assert!(
        status >= 400 && attack.codes.contains(&code.as_str()),
        "{}: expected one of {:?}, got {status} {body}",
        attack.name,
        attack.codes
    );
    assert!(
        took <= DEADLINE + SLACK,
        "{}: answered after {took:?}",
        attack.name
    );
    code
}

/// Runs `sql` through `psql` (verbose errors: the SQLSTATE is printed); its stderr.
async fn psql(sys: &System, sql: &str) -> (bool, String, Duration) {
    let url = sys.info.analytics_sql.clone().unwrap();
    let started = Instant::now();
    let out = Command::new("psql")
        .arg(&url)
        .args([
            "-X",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-v",
            "VERBOSITY=verbose",
        ])
        .args(["-c", sql, "-c", "SELECT 41 + 1"])
        .env("PGPASSWORD", PG_PASSWORD)
        .env("PGCONNECT_TIMEOUT", "10")
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run psql (apt-get install postgresql-client)");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        started.elapsed(),
    )
}

async fn metric(sys: &System, name: &str) -> f64 {
    let analytics = sys.info.analytics.as_deref().unwrap();
    let text = sys
        .http
        .get(format!("{analytics}/metrics"))
        .bearer_auth(&sys.monitor)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn orders_in_read_model(sys: &System) -> u64 {
    let analytics = sys.info.analytics.as_deref().unwrap();
    let body: Value = sys
        .http
        .post(format!("{analytics}/api/v1/sql"))
        .bearer_auth(&sys.analyst)
        .json(&json!({"sql": "SELECT count(*) AS n FROM orders"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["rows"][0]["n"]
        .as_u64()
        .unwrap_or_else(|| panic!("no count: {body}"))
}

fn peak_rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kib: u64 = line[6..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    kib / 1024
}

async fn hostile_suite(extra_env: &[(&str, &str)]) {
    let dir = tempfile::tempdir().unwrap();
    let sys = Arc::new(start(dir.path(), extra_env).await);
    // Some demo orders in the read model first.
    let started = Instant::now();
    let before = loop {
        let n = orders_in_read_model(&sys).await;
        if n > 0 {
            break n;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no orders reach the read model"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };

    let stop = Arc::new(AtomicBool::new(false));
    let prober = tokio::spawn(probe(sys.clone(), stop.clone()));

    // One at a time, each with its own clear error in time.
    for attack in attacks() {
        let code = http_attack(&sys, &attack).await;
        eprintln!("{}: {code}", attack.name);
    }

    // Over the Postgres protocol: the SQLSTATE, and the connection carries on.
    for (sql, codes) in [
        (
            "SELECT levenshtein(repeat('a', 200000), repeat('b', 200000))",
            &["57014"][..],
        ),
        (
            "SELECT cardinality(array_agg(value)) FROM generate_series(1, 2000000000)",
            &["53200", "57014"][..],
        ),
        (
            "SELECT length(concat(r, r, r, r, r, r, r, r, r, r, r, r, r, r, r, r)) \
             FROM (SELECT repeat('x', 60000000) AS r)",
            &["53200", "57014"][..],
        ),
        ("SHOW STATUS", &["42704"][..]),
    ] {
        let (ok, out, took) = psql(&sys, sql).await;
        assert!(!ok, "{sql}: {out}");
        assert!(
            codes.iter().any(|c| out.contains(&format!("ERROR:  {c}"))),
            "{sql}: expected SQLSTATE {codes:?}: {out}"
        );
        assert!(
            took <= DEADLINE + SLACK + Duration::from_secs(1),
            "{sql}: {took:?}"
        );
    }
    let (ok, out, _) = psql(&sys, "SELECT 1").await;
    assert!(ok && out.contains("42"), "{out}");

    // A client that hangs up mid-query: its worker is killed, not left running.
    let abandoned = metric(
        &sys,
        "shoplens_analytics_query_workers_ended_total{reason=\"abandoned\"}",
    )
    .await;
    let analytics = sys.info.analytics.clone().unwrap();
    let gone = sys
        .http
        .post(format!("{analytics}/api/v1/sql"))
        .bearer_auth(&sys.analyst)
        .json(&json!({"sql": "SELECT levenshtein(repeat('a', 200000), repeat('b', 200000))"}))
        .timeout(Duration::from_millis(500))
        .send()
        .await;
    assert!(
        gone.is_err(),
        "the query should still run when the client leaves"
    );
    let started = Instant::now();
    loop {
        let now = metric(
            &sys,
            "shoplens_analytics_query_workers_ended_total{reason=\"abandoned\"}",
        )
        .await;
        if now > abandoned {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "the abandoned query's worker was not killed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Many at once: every one answered clearly (some as too busy) within its deadline.
    let mut all = Vec::new();
    for round in 0..2 {
        for attack in attacks().into_iter().take(6) {
            let sys = sys.clone();
            all.push(tokio::spawn(async move {
                let analytics = sys.info.analytics.clone().unwrap();
                let started = Instant::now();
                let resp = sys
                    .http
                    .post(format!("{analytics}/api/v1/sql"))
                    .bearer_auth(&sys.analyst)
                    .json(&json!({ "sql": attack.sql }))
                    .send()
                    .await
                    .unwrap();
                let status = resp.status().as_u16();
                let body: Value = resp.json().await.unwrap();
                let code = body["code"].as_str().unwrap_or("").to_owned();
                assert!(
                    status >= 400 && (attack.codes.contains(&code.as_str()) || code == "too_busy"),
                    "round {round} {}: {status} {body}",
                    attack.name
                );
                assert!(
                    started.elapsed() <= DEADLINE + SLACK,
                    "round {round} {}: {:?}",
                    attack.name,
                    started.elapsed()
                );
                code
            }));
        }
    }
    let mut codes = Vec::new();
    for task in all {
        codes.push(task.await.unwrap());
    }
    assert!(codes.iter().any(|c| c == "too_busy"), "{codes:?}");
    assert!(
        codes.iter().any(|c| LIMITS.contains(&c.as_str())),
        "{codes:?}"
    );

    stop.store(true, Ordering::SeqCst);
    let report = prober.await.unwrap();
    eprintln!("probe: {report:?}");
    assert!(report.failures.is_empty(), "the shop failed: {report:?}");
    assert!(report.rounds >= 20, "the probe barely ran: {report:?}");
    assert!(
        report.slowest < Duration::from_secs(2),
        "an order and its summary took {:?}",
        report.slowest
    );

    // The ingest worker kept applying the demo's events.
    let started = Instant::now();
    loop {
        let after = orders_in_read_model(&sys).await;
        if after > before + 20 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the read model stopped growing: {before} -> {after}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let rss = peak_rss_mib(sys.shop.child.id());
    eprintln!("main process peak RSS: {rss} MiB");
    assert!(rss < MAIN_RSS_BOUND_MIB, "main process peak RSS {rss} MiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_queries_never_hurt_the_shop_embedded() {
    hostile_suite(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_queries_never_hurt_the_shop_on_clickhouse() {
    let Ok(url) = std::env::var("SHOPLENS_TEST_CLICKHOUSE_URL") else {
        eprintln!("skipped: no SHOPLENS_TEST_CLICKHOUSE_URL");
        return;
    };
    let database = format!("hostile_{}", std::process::id());
    let reader = std::env::var("SHOPLENS_TEST_CLICKHOUSE_READER").unwrap_or_default();
    let password = std::env::var("SHOPLENS_TEST_CLICKHOUSE_READER_PASSWORD").unwrap_or_default();
    hostile_suite(&[
        ("SHOPLENS_READ_MODEL__KIND", "clickhouse"),
        ("SHOPLENS_READ_MODEL__CLICKHOUSE__URL", &url),
        ("SHOPLENS_READ_MODEL__CLICKHOUSE__DATABASE", &database),
        // The analytics server reads as the read-only user, the worker writes as `default`.
        ("SHOPLENS_READ_MODEL__CLICKHOUSE__READER_USER", &reader),
        (
            "SHOPLENS_READ_MODEL__CLICKHOUSE__READER_PASSWORD",
            &password,
        ),
    ])
    .await;
}
