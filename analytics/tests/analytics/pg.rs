//! The Postgres wire protocol endpoint, driven by the real `psql` (postgresql-client; the simple
//! query protocol) and by `tokio-postgres` (the extended protocol with binary results, as JDBC
//! and pgx speak it): login (SCRAM), the queries BI tools send on connect, the read-only gate,
//! the engine's limits, the connection limit and shutdown.

use std::process::{Output, Stdio};
use std::time::Duration;

use rust_decimal::Decimal;
use shoplens_analytics::QueryConfig;
use shoplens_contract::{DomainEvent, Envelope, OrderCreated};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio_postgres::error::SqlState;

use crate::support::{self, TestApp};

const PSQL: &str = "psql";
/// Generous: a debug build plans the catalog queries of `\d` slowly.
const PSQL_DEADLINE: Duration = Duration::from_secs(120);

async fn app() -> (tempfile::TempDir, TestApp, Vec<Envelope>) {
    let events = support::events();
    let (dir, engine) = support::embedded_engine(&events).await;
    (dir, support::spawn_app(engine).await, events)
}

fn conninfo(port: u16, user: &str) -> String {
    format!("host=127.0.0.1 port={port} user={user} dbname=shoplens connect_timeout=10")
}

/// `psql` without a password: the environment and `~/.psqlrc` must not leak into a test.
fn psql_command(port: u16, user: &str, password: &str) -> Command {
    let mut cmd = Command::new(PSQL);
    cmd.arg(conninfo(port, user))
        .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1"])
        .env("PGPASSWORD", password)
        .env("PGAPPNAME", "shoplens-test")
        .env_remove("PGSERVICE")
        .env_remove("PGSSLMODE")
        .env_remove("PGOPTIONS")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Runs `script` (SQL and psql meta-commands, one session) as `user`.
async fn psql_as(port: u16, user: &str, password: &str, script: &str) -> Output {
    let mut child = psql_command(port, user, password)
        .args(["-f", "-"])
        .spawn()
        .expect("run psql (apt-get install postgresql-client)");
    let mut stdin = child.stdin.take().expect("psql stdin");
    stdin
        .write_all(script.as_bytes())
        .await
        .expect("write the script");
    drop(stdin);
    tokio::time::timeout(PSQL_DEADLINE, child.wait_with_output())
        .await
        .expect("psql finished in time")
        .expect("psql ran")
}

async fn psql(app: &TestApp, script: &str) -> Output {
    psql_as(app.pg_port, support::PG_USER, support::PG_PASSWORD, script).await
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The script succeeded; its output lines.
fn lines(out: &Output) -> Vec<String> {
    assert!(
        out.status.success(),
        "psql failed ({}): {}\nstdout: {}",
        out.status,
        stderr(out),
        stdout(out)
    );
    stdout(out).lines().map(str::to_owned).collect()
}

/// The script failed on an SQL error (psql exits 3 with `ON_ERROR_STOP`); its stderr.
fn sql_error(out: &Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(3),
        "expected an SQL error; stdout: {}\nstderr: {}",
        stdout(out),
        stderr(out)
    );
    let err = stderr(out);
    assert!(err.contains("ERROR:"), "{err}");
    err
}

fn orders_created(events: &[Envelope]) -> Vec<&OrderCreated> {
    events
        .iter()
        .filter_map(|e| match &e.payload {
            DomainEvent::OrderCreated(o) => Some(o),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn psql_counts_the_orders_the_events_created() {
    let (_dir, app, events) = app().await;
    let orders = orders_created(&events).len();
    assert!(orders > 0);
    let out = psql(
        &app,
        "SELECT count(*) FROM orders;\n\
         SELECT sum(orders_placed) FROM daily_sales;\n",
    )
    .await;
    assert_eq!(lines(&out), [orders.to_string(), orders.to_string()]);
}

#[tokio::test]
async fn the_queries_bi_tools_send_on_connect_all_work() {
    let (_dir, app, _events) = app().await;
    let out = psql(
        &app,
        "SELECT version();\n\
         SHOW server_version;\n\
         SELECT current_setting('server_version_num');\n\
         SHOW TRANSACTION ISOLATION LEVEL;\n\
         SELECT current_catalog;\n\
         SELECT current_database();\n\
         SELECT current_schema();\n\
         SET application_name = 'grafana';\n\
         SHOW application_name;\n\
         SET search_path = public;\n\
         SET extra_float_digits = 3;\n\
         SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL READ COMMITTED;\n\
         BEGIN;\n\
         SELECT 1;\n\
         COMMIT;\n\
         SELECT 'after the transaction';\n",
    )
    .await;
    let got = lines(&out);
    assert!(
        got[0].starts_with("PostgreSQL 16.0 "),
        "version() is what SQLAlchemy parses: {}",
        got[0]
    );
    assert_eq!(
        got[1..],
        [
            "16.0",
            "160000",
            "read committed",
            "shoplens",
            "shoplens",
            "public",
            "grafana",
            "1",
            "after the transaction",
        ]
    );
}

#[tokio::test]
async fn psql_describes_the_tables() {
    let (_dir, app, _events) = app().await;
    let out = psql(&app, "\\dt\n").await;
    let tables: Vec<String> = lines(&out)
        .iter()
        .filter_map(|l| {
            // public|daily_sales|table|shoplens
            let cols: Vec<&str> = l.split('|').collect();
            (cols.first() == Some(&"public")).then(|| cols[1].to_owned())
        })
        .collect();
    for table in [
        "daily_sales",
        "orders",
        "product_sales_daily",
        "dead_letters",
    ] {
        assert!(tables.iter().any(|t| t == table), "{table} in {tables:?}");
    }
    assert!(!tables.iter().any(|t| t.starts_with("pg_")), "{tables:?}");

    let out = psql(&app, "\\d orders\n").await;
    let columns: Vec<String> = lines(&out)
        .iter()
        .filter_map(|l| l.split('|').next().map(str::to_owned))
        .collect();
    for column in ["order_id", "customer_id", "total"] {
        assert!(
            columns.iter().any(|c| c == column),
            "{column} in {columns:?}"
        );
    }

    // The dimension views are there too.
    let out = psql(&app, "\\dv\n").await;
    let listed = lines(&out).join("\n");
    for view in ["products", "customers"] {
        assert!(
            listed.contains(&format!("public|{view}|view|")),
            "{view} in {listed}"
        );
    }
}

/// A `tokio-postgres` client: the extended protocol, binary results.
async fn pg_client(app: &TestApp) -> tokio_postgres::Client {
    app.pg_client_as(support::PG_USER, "").await
}

fn db_error(e: &tokio_postgres::Error) -> (SqlState, String) {
    let db = e
        .as_db_error()
        .unwrap_or_else(|| panic!("not a server error: {e:?}"));
    (db.code().clone(), db.message().to_owned())
}

#[tokio::test]
async fn extended_protocol_binds_parameters_and_returns_binary_rows() {
    let (_dir, app, events) = app().await;
    let orders = orders_created(&events);
    let client = pg_client(&app).await;

    // Parameters of three types, one prepared statement run twice.
    let by_lines = client
        .prepare("SELECT count(*) FROM orders WHERE line_count > $1")
        .await
        .unwrap();
    for min in [1i32, 2] {
        let want = orders.iter().filter(|o| o.lines.len() as i32 > min).count() as i64;
        let got: i64 = client.query_one(&by_lines, &[&min]).await.unwrap().get(0);
        assert_eq!(got, want, "line_count > {min}");
    }
    let customer = &orders[0].customer_id;
    let want = orders.iter().filter(|o| &o.customer_id == customer).count() as i64;
    let got: i64 = client
        .query_one(
            "SELECT count(*) FROM orders WHERE customer_id = $1",
            &[customer],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(got, want);
    let threshold = Decimal::from(100);
    let want = orders.iter().filter(|o| o.total > threshold).count() as i64;
    assert!(
        0 < want && want < orders.len() as i64,
        "the threshold splits"
    );
    let got: i64 = client
        .query_one(
            "SELECT count(*) FROM orders WHERE total > $1",
            &[&threshold],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(got, want);

    // Binary text, money and integers come back as they went in.
    let first = orders.iter().min_by_key(|o| &o.order_id).unwrap();
    let row = client
        .query_one(
            "SELECT order_id, total, line_count FROM orders ORDER BY order_id LIMIT 1",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), first.order_id);
    assert_eq!(row.get::<_, Decimal>(1), first.total);
    assert_eq!(row.get::<_, i32>(2), first.lines.len() as i32);

    // Session statements work in the extended protocol too.
    client
        .execute("SET application_name = 'metabase'", &[])
        .await
        .unwrap();
    let name: String = client
        .query_one("SHOW application_name", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(name, "metabase");
    let version: String = client
        .query_one("SHOW server_version", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(version, "16.0");
    let version: String = client
        .query_one("SELECT version()", &[])
        .await
        .unwrap()
        .get(0);
    assert!(version.starts_with("PostgreSQL 16.0 "), "{version}");
}

#[tokio::test]
async fn extended_protocol_refuses_writes_and_reports_limits() {
    let (_dir, app, events) = app().await;
    let client = pg_client(&app).await;
    for statement in [
        "INSERT INTO orders (order_id) VALUES ('x')",
        "UPDATE orders SET total = 0",
        "DELETE FROM orders",
        "DROP TABLE orders",
        "CREATE TABLE t (a int)",
        "COPY orders TO '/tmp/shoplens-pg-test'",
        "SELECT 1 AS a INTO copied",
    ] {
        let e = client.execute(statement, &[]).await.expect_err(statement);
        let (code, message) = db_error(&e);
        assert_eq!(
            code,
            SqlState::READ_ONLY_SQL_TRANSACTION,
            "{statement}: {message}"
        );
        assert!(message.contains("read-only"), "{statement}: {message}");
    }
    let e = client
        .execute("SET datafusion.execution.batch_size = 1", &[])
        .await
        .unwrap_err();
    assert_eq!(db_error(&e).0, SqlState::INSUFFICIENT_PRIVILEGE);

    let e = client
        .query("SELECT * FROM generate_series(1, 100000)", &[])
        .await
        .unwrap_err();
    let (code, message) = db_error(&e);
    assert_eq!(code, SqlState::PROGRAM_LIMIT_EXCEEDED, "{message}");
    assert!(message.contains("more than 10000 rows"), "{message}");

    let e = client.query("SELEC 1", &[]).await.unwrap_err();
    assert_eq!(db_error(&e).0, SqlState::SYNTAX_ERROR);
    let e = client
        .query("SELECT * FROM no_such_table", &[])
        .await
        .unwrap_err();
    assert_eq!(db_error(&e).0, SqlState::UNDEFINED_TABLE);

    // The same connection still answers, and nothing changed.
    let n: i64 = client
        .query_one("SELECT count(*) FROM orders", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, orders_created(&events).len() as i64);
}

#[tokio::test]
async fn a_wrong_password_or_user_is_refused_and_the_server_keeps_serving() {
    let (_dir, app, _events) = app().await;
    for (user, password) in [
        (support::PG_USER, "not-the-password"),
        (support::PG_USER, ""),
        ("postgres", support::PG_PASSWORD),
    ] {
        let out = psql_as(app.pg_port, user, password, "SELECT 1;\n").await;
        assert_eq!(out.status.code(), Some(2), "{user}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains(&format!(
                "password authentication failed for user \"{user}\""
            )),
            "{user}: {err}"
        );
        assert!(stdout(&out).is_empty());
    }
    let out = psql(&app, "SELECT 'still serving';\n").await;
    assert_eq!(lines(&out), ["still serving"]);
}

#[tokio::test]
async fn writes_and_file_access_are_refused() {
    let (_dir, app, events) = app().await;
    let scratch = tempfile::tempdir().unwrap();
    let copy_target = scratch.path().join("orders.csv");
    let copy = format!("COPY orders TO '{}'", copy_target.display());
    for statement in [
        "INSERT INTO orders (order_id) VALUES ('x')",
        "UPDATE orders SET total = 0",
        "DELETE FROM orders",
        "DROP TABLE orders",
        "CREATE TABLE t (a int)",
        "CREATE VIEW v AS SELECT 1",
        "TRUNCATE orders",
        "ALTER TABLE orders RENAME TO o",
        "GRANT SELECT ON orders TO bob",
        copy.as_str(),
        "SELECT 1 AS a INTO copied",
    ] {
        let err = sql_error(&psql(&app, &format!("{statement};\n")).await);
        assert!(
            err.contains("read-only"),
            "{statement} refused as a write: {err}"
        );
    }
    // Refused, though not necessarily by the gate: the file readers are not reachable.
    for statement in [
        "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/etc/passwd'",
        "SELECT * FROM '/etc/passwd'",
        "SELECT * FROM read_csv('/etc/passwd')",
        "SET datafusion.execution.batch_size = 1",
        "SELEC 1",
        "SELECT no_such_column FROM orders",
        "SELECT * FROM no_such_table",
    ] {
        sql_error(&psql(&app, &format!("{statement};\n")).await);
    }
    assert!(!copy_target.exists(), "COPY wrote a file");

    // Nothing changed, and the server still answers new connections.
    let out = psql(
        &app,
        "SELECT count(*) FROM orders;\n\
         SELECT count(*) FROM information_schema.tables \
           WHERE table_name IN ('t', 'v', 'copied', 'o');\n",
    )
    .await;
    assert_eq!(
        lines(&out),
        [orders_created(&events).len().to_string(), "0".into()]
    );
}

#[tokio::test]
async fn an_error_mid_session_leaves_the_connection_usable() {
    let (_dir, app, _events) = app().await;
    let mut cmd = psql_command(app.pg_port, support::PG_USER, support::PG_PASSWORD);
    cmd.args(["-v", "ON_ERROR_STOP=0", "-f", "-"]);
    let mut child = cmd.spawn().expect("run psql");
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(
            b"DELETE FROM orders;\nSELEC 1;\nSELECT * FROM generate_series(1, 100000);\n\
              BEGIN;\nSELECT 1/0;\nROLLBACK;\nSELECT 'alive';\n",
        )
        .await
        .unwrap();
    drop(stdin);
    let out = tokio::time::timeout(PSQL_DEADLINE, child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stdout(&out).lines().last(),
        Some("alive"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        stderr(&out).matches("ERROR:").count(),
        4,
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn more_rows_than_the_limit_is_a_clean_error() {
    let (_dir, app, _events) = app().await;
    let max = support::query_config().max_rows;
    let err = sql_error(&psql(&app, "SELECT * FROM generate_series(1, 100000);\n").await);
    assert!(err.contains(&format!("more than {max} rows")), "{err}");
    // At the limit is fine.
    let out = psql(
        &app,
        &format!("SELECT count(*) FROM generate_series(1, {max});\n"),
    )
    .await;
    assert_eq!(lines(&out), [max.to_string()]);
}

#[tokio::test]
async fn a_query_over_its_time_limit_is_a_clean_error() {
    let events = support::events();
    let dir = support::embedded_store(&events).await;
    let engine = support::embedded_engine_at(
        &dir,
        &QueryConfig {
            timeout_ms: 200,
            ..support::query_config()
        },
    )
    .await;
    let app = support::spawn_app(engine).await;
    let err = sql_error(
        &psql(
            &app,
            "SELECT count(*) FROM generate_series(1, 10000000000) a;\n",
        )
        .await,
    );
    assert!(err.contains("time limit of 200 ms"), "{err}");
    let out = psql(&app, "SELECT 'alive';\n").await;
    assert_eq!(lines(&out), ["alive"]);
}

/// A `psql` session kept open, connected once it answered its first query.
async fn open_session(app: &TestApp) -> Child {
    let mut child = psql_command(app.pg_port, support::PG_USER, support::PG_PASSWORD)
        .args(["-f", "-"])
        .spawn()
        .expect("run psql");
    let stdin = child.stdin.as_mut().unwrap();
    stdin.write_all(b"SELECT 'connected';\n").await.unwrap();
    stdin.flush().await.unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(PSQL_DEADLINE, out.next_line())
        .await
        .expect("the session answered")
        .unwrap();
    assert_eq!(first.as_deref(), Some("connected"));
    child
}

#[tokio::test]
async fn connections_over_the_limit_are_refused_until_one_closes() {
    let events = support::events();
    let (_dir, engine) = support::embedded_engine(&events).await;
    let mut config = support::app_config();
    config.sql.max_connections = 1;
    let app = support::spawn_app_with(engine, &config).await;

    let mut first = open_session(&app).await;
    let out = psql(&app, "SELECT 1;\n").await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("sorry, too many clients already"),
        "{}",
        stderr(&out)
    );

    // Closing the first session frees its slot.
    drop(first.stdin.take());
    let status = tokio::time::timeout(PSQL_DEADLINE, first.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
    let mut out = psql(&app, "SELECT 'second';\n").await;
    for _ in 0..50 {
        // The server notices the closed socket a moment after psql exits.
        if out.status.success() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        out = psql(&app, "SELECT 'second';\n").await;
    }
    assert_eq!(lines(&out), ["second"]);
}

#[tokio::test]
async fn after_shutdown_no_new_connection_is_accepted() {
    let (_dir, app, _events) = app().await;
    let port = app.pg_port;
    assert_eq!(lines(&psql(&app, "SELECT 1;\n").await), ["1"]);
    app.handle.stop().await;
    let out = psql_as(port, support::PG_USER, support::PG_PASSWORD, "SELECT 1;\n").await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stdout(&out).is_empty());
}

/// Who signs in decides what they see: an administrator reads customers' names and e-mail
/// addresses, an analyst reads them as `(redacted)` (a filter on them tests the redacted
/// value too, so it cannot probe the real one), and a viewer (the dashboard's role) runs no
/// SQL at all.
#[tokio::test]
async fn the_users_role_decides_what_psql_shows() {
    let (_dir, app, _events) = app().await;
    let script = "SELECT name, email FROM customers ORDER BY customer_id LIMIT 1;\n\
                  SELECT count(*) FROM customer_events WHERE email LIKE '%@%';\n\
                  SELECT count(*) FROM customers;\n";
    let admin = lines(&psql(&app, script).await);
    assert!(
        admin[0].contains('@') && !admin[0].contains("(redacted)"),
        "{admin:?}"
    );
    assert_ne!(admin[1], "0", "{admin:?}");
    let analyst =
        lines(&psql_as(app.pg_port, support::ANALYST, support::PG_PASSWORD, script).await);
    assert_eq!(analyst[0], "(redacted)|(redacted)");
    assert_eq!(analyst[1], "0", "the filter saw a real address");
    assert_eq!(analyst[2], admin[2], "masking hides values, not rows");

    let out = psql_as(
        app.pg_port,
        support::VIEWER,
        support::PG_PASSWORD,
        "SELECT 1;\n",
    )
    .await;
    let err = sql_error(&out);
    assert!(
        err.contains("42501") || err.contains("permission denied"),
        "{err}"
    );
    assert!(err.contains("analyst"), "{err}");
    // An analyst's password is not the admin's.
    let out = psql_as(app.pg_port, support::ANALYST, "test-pass-2", "SELECT 1;\n").await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}
