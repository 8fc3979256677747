//! Hostile SQL against `POST /api/v1/sql`: writes, DDL, file and URL access, session
//! changes, multi-statement smuggling, resource exhaustion and deep nesting. Each must get a
//! clear JSON error naming the `sql` field (or a 503 for the deadline), must not create a
//! file, and the server must answer a normal query afterwards.

use serde_json::Value;
use shoplens_analytics::QueryConfig;

use crate::support::{self, TestApp};

/// A server over the default synthetic shop with a short deadline, a small row limit and a
/// small memory pool, so exhaustion attacks end quickly.
async fn guarded_app() -> (tempfile::TempDir, TestApp, usize) {
    let events = support::events();
    let orders = events
        .iter()
        .filter(|e| matches!(e.payload, shoplens_contract::DomainEvent::OrderCreated(_)))
        .count();
    let dir = support::embedded_store(&events).await;
    let engine = support::embedded_engine_at(
        &dir,
        &QueryConfig {
            timeout_ms: 1_500,
            max_rows: 1_000,
            memory_limit_mb: 32,
            ..support::query_config()
        },
    )
    .await;
    (dir, support::spawn_app(engine).await, orders)
}

/// Sends `sql`; the status and the JSON error body (panics if the body is not JSON).
async fn attack(app: &TestApp, sql: &str) -> (u16, Value) {
    let resp = app.sql(sql, "json").await;
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("a response body");
    let body: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{sql}: not a JSON body ({e}): {status} {text}"));
    (status, body)
}

async fn still_serving(app: &TestApp, orders: usize) {
    let (status, body) = attack(app, "SELECT count(*) AS n FROM orders").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rows"][0]["n"], orders, "{body}");
}

#[tokio::test]
async fn writes_ddl_files_urls_and_session_changes_are_refused() {
    let (_dir, app, orders) = guarded_app().await;
    let scratch = tempfile::tempdir().unwrap();
    let target = |name: &str| scratch.path().join(name).display().to_string();
    let attacks: Vec<(String, &str)> = vec![
        ("UPDATE orders SET total = 0".into(), "forbidden_statement"),
        (
            "INSERT INTO orders SELECT * FROM orders".into(),
            "forbidden_statement",
        ),
        // DML behind WITH parses as a query whose body is a statement.
        (
            "WITH t AS (SELECT * FROM orders) INSERT INTO orders SELECT * FROM t".into(),
            "forbidden_statement",
        ),
        ("DROP VIEW products".into(), "forbidden_statement"),
        ("TRUNCATE orders".into(), "forbidden_statement"),
        ("CREATE SCHEMA s".into(), "forbidden_statement"),
        ("CREATE VIEW v AS SELECT 1".into(), "forbidden_statement"),
        (
            format!(
                "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '{}'",
                target("ext.csv")
            ),
            "forbidden_statement",
        ),
        (
            "CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION 'http://127.0.0.1:9/x.parquet'"
                .into(),
            "forbidden_statement",
        ),
        (
            format!("COPY orders TO '{}'", target("copy.csv")),
            "forbidden_statement",
        ),
        (
            format!(
                "COPY (SELECT * FROM customers) TO '{}' STORED AS PARQUET",
                target("copy.parquet")
            ),
            "forbidden_statement",
        ),
        (
            format!("EXPLAIN COPY orders TO '{}'", target("explain.csv")),
            "forbidden_statement",
        ),
        (
            format!("EXPLAIN ANALYZE COPY orders TO '{}'", target("analyze.csv")),
            "forbidden_statement",
        ),
        (
            format!(
                "SELECT * INTO t2 FROM orders; COPY t2 TO '{}'",
                target("two.csv")
            ),
            "invalid_sql",
        ),
        ("SELECT 1; DROP TABLE orders".into(), "invalid_sql"),
        ("SELECT 1;; DELETE FROM orders".into(), "invalid_sql"),
        ("SELECT * FROM '/etc/passwd'".into(), "invalid_sql"),
        (
            "SELECT * FROM 'http://127.0.0.1:9/x.parquet'".into(),
            "invalid_sql",
        ),
        (
            "SELECT * FROM read_parquet('http://127.0.0.1:9/x.parquet')".into(),
            "invalid_sql",
        ),
        (
            "SELECT * FROM read_json('/etc/passwd')".into(),
            "invalid_sql",
        ),
        (
            "SELECT * FROM parquet_metadata('/etc/passwd')".into(),
            "invalid_sql",
        ),
        (
            "SET datafusion.runtime.memory_limit = '100G'".into(),
            "forbidden_statement",
        ),
        (
            "SET datafusion.catalog.information_schema = false".into(),
            "forbidden_statement",
        ),
        (
            "RESET datafusion.execution.batch_size".into(),
            "forbidden_statement",
        ),
        ("PREPARE p AS SELECT 1".into(), "forbidden_statement"),
        ("EXECUTE p".into(), "forbidden_statement"),
        (
            "CREATE FUNCTION f(INT) RETURNS INT RETURN $1".into(),
            "forbidden_statement",
        ),
        ("BEGIN".into(), "forbidden_statement"),
        ("SHOW ALL".into(), "forbidden_statement"),
    ];
    for (sql, code) in &attacks {
        let (status, body) = attack(&app, sql).await;
        assert!((400..500).contains(&status), "{sql}: {status} {body}");
        assert_eq!(body["code"], *code, "{sql}: {body}");
        assert_eq!(body["field"], "sql", "{sql}: {body}");
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{sql}: {body}"
        );
    }
    let written: Vec<_> = std::fs::read_dir(scratch.path()).unwrap().collect();
    assert!(written.is_empty(), "an attack wrote {written:?}");

    // Nothing was created or changed.
    let (status, body) = attack(
        &app,
        "SELECT count(*) AS n FROM information_schema.tables \
         WHERE table_name IN ('t', 't2', 'v', 'copied')",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rows"][0]["n"], 0, "{body}");
    still_serving(&app, orders).await;
}

#[tokio::test]
async fn exhaustion_attacks_hit_a_limit_with_a_clear_error() {
    let (_dir, app, orders) = guarded_app().await;
    // (query, acceptable error codes): each hits the row limit, the memory pool, the
    // deadline (503) or a bound on what one function may build.
    let attacks: &[(&str, &[&str])] = &[
        (
            "SELECT count(*) FROM generate_series(1, 1000000000000)",
            &["query_timeout"],
        ),
        (
            "SELECT * FROM generate_series(1, 1000000000000)",
            &["too_many_rows"],
        ),
        (
            "SELECT sum(a.total + b.total + c.total + d.total) FROM orders a, orders b, \
             orders c, orders d",
            &["query_timeout", "memory_limit"],
        ),
        (
            "SELECT * FROM orders a, orders b, orders c",
            &["too_many_rows", "memory_limit"],
        ),
        (
            "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) \
             SELECT count(*) FROM r",
            &["query_timeout", "memory_limit"],
        ),
        (
            "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT * FROM r",
            // The row limit, or the deadline first on a busy machine.
            &["too_many_rows", "query_timeout"],
        ),
        (
            "SELECT k, count(*) FROM (SELECT v AS k FROM generate_series(1, 50000000) t(v)) \
             GROUP BY k ORDER BY k DESC",
            &["memory_limit", "query_timeout"],
        ),
        (
            "SELECT length(repeat('x', 2000000000))",
            &["value_too_large", "invalid_sql", "memory_limit"],
        ),
        (
            "SELECT length(repeat(name, 1000000000)) FROM customers",
            &["value_too_large", "invalid_sql", "memory_limit"],
        ),
        (
            "SELECT length(lpad('x', 2000000000, 'y'))",
            &["value_too_large", "invalid_sql", "memory_limit"],
        ),
        (
            "SELECT cardinality(array_repeat(1, 1000000000))",
            &["value_too_large", "invalid_sql", "memory_limit"],
        ),
        (
            "SELECT cardinality(range(0, 1000000000))",
            &["value_too_large", "invalid_sql", "memory_limit"],
        ),
        (
            "SELECT cardinality(generate_series(0, 1000000000))",
            &["value_too_large", "invalid_sql", "memory_limit"],
        ),
        (
            "SELECT length(replace(repeat('a', 20000), 'a', repeat('b', 100000)))",
            &["value_too_large", "invalid_sql", "memory_limit"],
        ),
        (
            "SELECT string_agg(repeat('x', 1000), ',') FROM generate_series(1, 10000000)",
            &["value_too_large", "memory_limit", "query_timeout"],
        ),
    ];
    for (sql, codes) in attacks {
        let (status, body) = attack(&app, sql).await;
        let code = body["code"].as_str().unwrap_or_default();
        assert!(codes.contains(&code), "{sql}: {status} {body}");
        assert!(
            (400..500).contains(&status) || status == 503,
            "{sql}: {status} {body}"
        );
        still_serving(&app, orders).await;
    }
}

#[tokio::test]
async fn deep_nesting_and_huge_statements_get_a_clear_error() {
    let (_dir, app, orders) = guarded_app().await;
    let parens = format!("SELECT {}1{}", "(".repeat(5_000), ")".repeat(5_000));
    let subqueries = format!(
        "SELECT * FROM {} orders {}",
        "(SELECT * FROM ".repeat(2_000),
        ") q".repeat(2_000)
    );
    let not_not = format!("SELECT {} true", "NOT ".repeat(5_000));
    let case = format!(
        "SELECT {} 1 {}",
        "CASE WHEN true THEN ".repeat(2_000),
        " END".repeat(2_000)
    );
    for sql in [&parens, &subqueries, &not_not, &case] {
        let (status, body) = attack(&app, sql).await;
        assert_eq!(status, 400, "{}: {body}", &sql[..40]);
        assert_eq!(body["code"], "invalid_sql", "{body}");
        assert_eq!(body["field"], "sql", "{body}");
    }
    // A long flat expression is not nested for the parser but is a deep tree for the
    // planner: refused before planning (thousands of levels overflowed the stack and
    // aborted the process); a long but reasonable one still answers.
    for terms in [3_000, 25_000] {
        let sum = format!("SELECT {} AS n", vec!["1"; terms].join("+"));
        let (status, body) = attack(&app, &sum).await;
        assert_eq!(status, 400, "{terms} terms: {body}");
        assert_eq!(body["code"], "invalid_sql", "{body}");
        assert!(
            body["error"].as_str().unwrap().contains("levels deep"),
            "{body}"
        );
    }
    let sum = format!("SELECT {} AS n", vec!["1"; 200].join(" + "));
    let (status, body) = attack(&app, &sum).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rows"][0]["n"], 200, "{body}");
    let filters = (0..200)
        .map(|i| format!("total <> {i}"))
        .collect::<Vec<_>>()
        .join(" AND ");
    let (status, body) = attack(
        &app,
        &format!("SELECT count(*) AS n FROM orders WHERE {filters}"),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // A statement over the body limit is refused before it is parsed.
    let huge = format!("SELECT 1 {}", " ".repeat(200 * 1024));
    let (status, body) = attack(&app, &huge).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["code"], "payload_too_large", "{body}");
    still_serving(&app, orders).await;
}

/// Arbitrary values of every dashboard parameter (and unknown ones): an answer, or a 4xx
/// JSON error naming the parameter; never a 5xx.
#[tokio::test]
async fn arbitrary_dashboard_parameters_get_an_answer_or_a_4xx_naming_them() {
    use proptest::strategy::{Strategy, ValueTree};
    let (_dir, app, _) = guarded_app().await;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let views = ["daily", "top-products", "top-customers", "trends"];
    let params = ["from", "to", "limit", "category", "period", "frm"];
    let value = proptest::prop_oneof![
        "\\PC{0,24}",
        "[0-9]{1,6}-[0-9]{1,2}-[0-9]{1,2}",
        "-?[0-9]{1,25}",
    ];
    let strategy = (0..views.len(), 0..params.len(), value);
    let mut answered = 0;
    for _ in 0..128 {
        let (view, param, value) = strategy.new_tree(&mut runner).unwrap().current();
        let (view, param) = (views[view], params[param]);
        let resp = app
            .client
            .get(format!("{}/api/v1/dashboard/{view}", app.url))
            .query(&[(param, value.as_str())])
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.expect("a JSON body");
        if status == 200 {
            answered += 1;
            continue;
        }
        assert!(
            (400..500).contains(&status),
            "{view}?{param}={value:?}: {status} {body}"
        );
        assert_eq!(body["field"], param, "{view}?{param}={value:?}: {body}");
        assert!(body["error"].as_str().is_some(), "{body}");
    }
    // Empty values are absent ones: some requests are answered.
    assert!(answered > 0);
}

/// A server whose query workers have small OS limits, so each limit is reached fast.
async fn limited_app(
    memory_mb: u64,
    cpu_seconds: u64,
    timeout_ms: u64,
) -> (tempfile::TempDir, TestApp) {
    let dir = support::embedded_store(&support::events()).await;
    let app = limited_app_over(&dir, memory_mb, cpu_seconds, timeout_ms).await;
    (dir, app)
}

/// [`limited_app`] over the store in `dir`.
async fn limited_app_over(
    dir: &tempfile::TempDir,
    memory_mb: u64,
    cpu_seconds: u64,
    timeout_ms: u64,
) -> TestApp {
    let mut config = QueryConfig {
        timeout_ms,
        ..support::query_config()
    };
    config.workers.memory_mb = memory_mb;
    config.workers.cpu_seconds = cpu_seconds;
    let engine = support::embedded_engine_at(dir, &config).await;
    let mut app = support::app_config();
    // The HTTP layer's own limit must not cut the query's.
    app.http.request_timeout_ms = timeout_ms + 30_000;
    support::spawn_app_with(engine, &app).await
}

/// An aggregate table larger than a query worker's memory is still answered in full: the
/// worker merges it a period at a time instead of holding it merged (issue 16: at 100M
/// events `SELECT count(*) FROM customer_spend_daily` ran its worker out of memory).
#[tokio::test]
async fn an_aggregate_table_larger_than_a_workers_memory_is_answered() {
    use chrono::{Duration, TimeZone, Utc};
    use shoplens_contract::{Envelope, OrderStatus, OrderStatusChanged};
    // 600,000 (day, customer) rows of `customer_spend_daily`: merged in memory they take
    // well over the workers' 64 MiB.
    let (days, customers) = (600, 1000);
    let start = Utc.with_ymd_and_hms(2024, 1, 1, 12, 0, 0).unwrap();
    let events: Vec<Envelope> = (0..days * customers)
        .map(|i| {
            let (day, customer) = (i / customers, i % customers);
            Envelope::at(
                OrderStatusChanged {
                    order_id: format!("o{i:07}"),
                    customer_id: format!("c{customer:05}"),
                    from: Some(OrderStatus::Placed),
                    to: OrderStatus::Paid,
                },
                start + Duration::days(day),
            )
        })
        .collect();
    let (dir, sink) = support::embedded_store_applied(&events, 40_000).await;
    drop(sink);

    let app = limited_app_over(&dir, 64, 60, 60_000).await;
    let (status, body) = attack(
        &app,
        "SELECT count(*) AS n, sum(orders_paid) AS paid, count(DISTINCT customer_id) AS c \
         FROM customer_spend_daily",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let n = days * customers;
    assert_eq!(body["rows"][0]["n"], n, "{body}");
    assert_eq!(body["rows"][0]["paid"], n, "{body}");
    assert_eq!(body["rows"][0]["c"], customers, "{body}");
    // A range is merged for its periods alone, and its month rollup too.
    let (status, body) = attack(
        &app,
        "SELECT (SELECT count(*) FROM customer_spend_daily \
                 WHERE day BETWEEN DATE '2024-03-01' AND DATE '2024-03-10') AS days, \
                (SELECT count(*) FROM customer_spend_monthly) AS months",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rows"][0]["days"], 10 * customers, "{body}");
    // 600 days from 2024-01-01 end in August 2025: 20 months.
    assert_eq!(body["rows"][0]["months"], 20 * customers, "{body}");
}

async fn metric(app: &TestApp, reason: &str) -> f64 {
    let key = format!("shoplens_analytics_query_workers_ended_total{{reason=\"{reason}\"}}");
    counter(app, &key).await
}

#[tokio::test]
async fn a_query_past_its_workers_address_space_ends_the_worker_not_the_server() {
    let (_dir, app) = limited_app(64, 30, 30_000).await;
    // 100 MB in one allocation, past the worker's 64 MiB: the kernel refuses it, the
    // worker aborts, the query gets a memory error and the server a new worker.
    let (status, body) = attack(
        &app,
        "SELECT length(concat(r, r)) AS n FROM (SELECT repeat('x', 50000000) AS r)",
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], "memory_limit", "{body}");
    assert!(metric(&app, "died").await >= 1.0);
    let (status, body) = attack(&app, "SELECT 40 + 2 AS n").await;
    assert_eq!(
        (status, &body["rows"][0]["n"]),
        (200, &Value::from(42)),
        "{body}"
    );
}

#[tokio::test]
async fn a_query_past_its_cpu_time_ends_its_worker() {
    let (_dir, app) = limited_app(1024, 1, 60_000).await;
    let started = std::time::Instant::now();
    let (status, body) = attack(
        &app,
        "SELECT levenshtein(repeat('a', 200000), repeat('b', 200000)) AS d",
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "query_cpu_limit", "{body}");
    // Its CPU time ran out before its 60 s deadline (on a busy machine a CPU second can
    // take a while of wall-clock time: the worker runs at a low priority).
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    let (status, _) = attack(&app, "SELECT 1 AS n").await;
    assert_eq!(status, 200);
}

/// A counter of `/metrics` (summed over its labels).
async fn counter(app: &TestApp, name: &str) -> f64 {
    let text = app
        .client
        .get(format!("{}/metrics", app.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter(|l| l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn ordinary_queries_reuse_warm_workers() {
    let (_dir, app) = limited_app(1024, 30, 30_000).await;
    let started = "shoplens_analytics_query_workers_started_total";
    // The pool settles after the first query (it tops up to its idle minimum).
    for _ in 0..3 {
        assert_eq!(attack(&app, "SELECT 1 AS n").await.0, 200);
    }
    // Until no worker has been started for 2 s (a replacement may still be starting).
    let mut before = counter(&app, started).await;
    let settle = std::time::Instant::now();
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        let now = counter(&app, started).await;
        if now == before || settle.elapsed() > std::time::Duration::from_secs(30) {
            break;
        }
        before = now;
    }
    assert!(before >= 1.0, "no worker started: {before}");
    for i in 0..20 {
        let (status, body) = attack(&app, &format!("SELECT {i} AS n")).await;
        assert_eq!((status, &body["rows"][0]["n"]), (200, &Value::from(i)));
    }
    assert_eq!(
        counter(&app, started).await,
        before,
        "a query that ends normally must leave its worker for the next one"
    );
}

/// A server whose query workers are configured by `configure`, and its idle workers' pids.
async fn app_with_workers(
    configure: impl FnOnce(&mut shoplens_analytics::engine::WorkersConfig),
) -> (tempfile::TempDir, TestApp, Vec<u32>) {
    let events = support::events();
    let dir = support::embedded_store(&events).await;
    let mut config = support::query_config();
    configure(&mut config.workers);
    let engine = support::embedded_engine_at(&dir, &config).await;
    let app = support::spawn_app(engine).await;
    let pids = app
        .handle
        .executor()
        .pool()
        .expect("query workers")
        .idle_pids();
    assert!(!pids.is_empty(), "no idle worker");
    (dir, app, pids)
}

#[tokio::test]
async fn query_workers_run_in_the_idle_scheduling_class() {
    let (_dir, _app, pids) = app_with_workers(|w| {
        w.idle_class = shoplens_analytics::engine::WorkersConfig::default().idle_class;
    })
    .await;
    for pid in pids {
        assert_eq!(
            shoplens_analytics::isolation::scheduling_policy(pid),
            Some(5),
            "worker {pid} is not in SCHED_IDLE"
        );
    }
}

#[tokio::test]
async fn query_workers_keep_to_the_cpus_they_are_given() {
    let (_dir, app, pids) = app_with_workers(|w| {
        w.share_cpus = false;
        w.cpus = vec![0];
    })
    .await;
    for pid in pids {
        assert_eq!(
            shoplens_analytics::isolation::allowed_cpus(pid),
            Some(vec![0]),
            "worker {pid}"
        );
    }
    // And they still answer.
    let (status, body) = attack(&app, "SELECT count(*) AS n FROM orders").await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_keeps_off_its_workers_cpus() {
    let all = shoplens_analytics::isolation::allowed_cpus(std::process::id()).unwrap();
    if all.len() < 2 {
        eprintln!("skipped: one CPU, nothing to set apart");
        return;
    }
    // The workers on the last CPU (the default on four CPUs or more: the last quarter),
    // this process (and every thread it starts later) off it.
    let last = *all.last().unwrap();
    let (_dir, app, pids) = app_with_workers(|w| {
        let defaults = shoplens_analytics::engine::WorkersConfig::default();
        w.share_cpus = defaults.share_cpus;
        w.cpus = vec![last];
        w.yield_cpus = defaults.yield_cpus;
    })
    .await;
    let theirs = app.handle.executor().pool().unwrap().worker_cpus();
    assert_eq!(theirs, vec![last]);
    for pid in &pids {
        assert_eq!(
            shoplens_analytics::isolation::allowed_cpus(*pid).as_ref(),
            Some(&theirs)
        );
    }
    let ours: Vec<usize> = all
        .iter()
        .copied()
        .filter(|c| !theirs.contains(c))
        .collect();
    assert_eq!(
        shoplens_analytics::isolation::allowed_cpus(std::process::id()),
        Some(ours.clone())
    );
    let later = std::thread::spawn(|| {
        let tid = rustix::thread::gettid().as_raw_nonzero().get() as u32;
        shoplens_analytics::isolation::allowed_cpus(tid)
    })
    .join()
    .unwrap();
    assert_eq!(
        later,
        Some(ours),
        "a thread started later keeps off them too"
    );
    let (status, _) = attack(&app, "SELECT 1 AS n").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_query_past_its_deadline_is_killed_on_time_and_a_hang_up_kills_its_worker() {
    let (_dir, app) = limited_app(1024, 60, 1_000).await;
    // A scalar function in one long computation: only killing its worker stops it.
    let started = std::time::Instant::now();
    let (status, body) = attack(
        &app,
        "SELECT levenshtein(repeat('a', 200000), repeat('b', 200000)) AS d",
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (503, Some("query_timeout")),
        "{body}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(metric(&app, "deadline").await >= 1.0);

    // The client leaves after 200 ms: its worker is killed then, not at the deadline.
    let before = metric(&app, "abandoned").await;
    let gone = app
        .client
        .post(format!("{}/api/v1/sql", app.url))
        .json(&serde_json::json!({
            "sql": "SELECT levenshtein(repeat('a', 200000), repeat('b', 200000)) AS d"
        }))
        .timeout(std::time::Duration::from_millis(200))
        .send()
        .await;
    assert!(gone.is_err());
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert!(metric(&app, "abandoned").await > before);
    let (status, _) = attack(&app, "SELECT 1 AS n").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn beyond_the_concurrency_limits_queries_are_refused_as_too_busy() {
    let events = support::events();
    let dir = support::embedded_store(&events).await;
    let mut config = QueryConfig {
        timeout_ms: 3_000,
        ..support::query_config()
    };
    config.workers.max_concurrent = 1;
    config.workers.max_queued = 1;
    config.workers.queue_timeout_ms = 500;
    let engine = support::embedded_engine_at(&dir, &config).await;
    let app = support::spawn_app(engine).await;
    let slow = "SELECT levenshtein(repeat('a', 100000), repeat('b', 100000)) AS d";
    let mut answers = Vec::new();
    for _ in 0..4 {
        let app = (app.client.clone(), app.url.clone());
        answers.push(tokio::spawn(async move {
            let resp = app
                .0
                .post(format!("{}/api/v1/sql", app.1))
                .json(&serde_json::json!({ "sql": slow }))
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.unwrap();
            (status, body["code"].as_str().unwrap_or("").to_owned())
        }));
    }
    let mut codes = Vec::new();
    for a in answers {
        codes.push(a.await.unwrap());
    }
    let busy = codes
        .iter()
        .filter(|(s, c)| *s == 503 && c == "too_busy")
        .count();
    // One runs, one waits (then gives up after 500 ms), two are refused at once.
    assert!(busy >= 2, "{codes:?}");
    assert!(codes.iter().any(|(_, c)| c == "query_timeout"), "{codes:?}");
}

#[tokio::test]
async fn a_user_whose_queries_keep_ending_their_workers_is_slowed_down_and_nobody_else() {
    use shoplens_kit::identity::Role;
    use std::time::{Duration, Instant};
    let events = support::events();
    let dir = support::embedded_store(&events).await;
    let mut config = QueryConfig {
        timeout_ms: 2_000,
        ..support::query_config()
    };
    config.workers.cool_down_ms = 1_500;
    config.workers.max_cool_down_ms = 10_000;
    let engine = support::embedded_engine_at(&dir, &config).await;
    let app = support::spawn_app(engine).await;
    let spin = "SELECT levenshtein(repeat('a', 200000), repeat('b', 200000)) AS d";

    // Killed at its deadline: a strike against the admin.
    let (status, body) = attack(&app, spin).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (503, Some("query_timeout"))
    );
    // The analyst is not held up by it.
    let started = Instant::now();
    let analyst = support::client_as(Role::Analyst)
        .post(format!("{}/api/v1/sql", app.url))
        .json(&serde_json::json!({ "sql": "SELECT 1 AS n" }))
        .send()
        .await
        .unwrap();
    assert_eq!(analyst.status().as_u16(), 200);
    assert!(started.elapsed() < Duration::from_millis(1_000));
    // The admin's next query waits out the cool-down, then runs; ending normally lifts it.
    let started = Instant::now();
    let (status, body) = attack(&app, "SELECT 1 AS n").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        started.elapsed() >= Duration::from_millis(1_000),
        "{:?}",
        started.elapsed()
    );
    let started = Instant::now();
    let (status, _) = attack(&app, "SELECT 1 AS n").await;
    assert_eq!(status, 200);
    assert!(started.elapsed() < Duration::from_millis(1_000));

    // A cool-down past the query's deadline ends in "too busy", saying why: the admission
    // unit tests check it (here the second query killed at its deadline would have to get a
    // worker within the half second its cool-down leaves it).
}
