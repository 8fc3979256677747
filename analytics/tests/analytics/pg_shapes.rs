//! Every statement gets an answer, never a dropped connection: statement shapes (SHOW, SET,
//! RESET, DESCRIBE, cursors, transactions, prepared statements, odd quoting, garbage) sent
//! over both protocols of the Postgres endpoint. Each must come back as a result or as a
//! server error with a SQLSTATE, and the same connection must answer `SELECT 1` afterwards.

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};
use tokio_postgres::error::SqlState;

use crate::support::{self, TestApp};

async fn app() -> (tempfile::TempDir, TestApp) {
    let events = support::events();
    let (dir, engine) = support::embedded_engine(&events).await;
    (dir, support::spawn_app(engine).await)
}

async fn connect(app: &TestApp) -> tokio_postgres::Client {
    app.pg_client_as(support::PG_USER, "").await
}

/// The shapes a tool, a person or a fuzzer sends.
const SHAPES: &[&str] = &[
    "SHOW STATUS",
    "SHOW ALL",
    "SHOW TABLES",
    "SHOW COLUMNS FROM orders",
    "SHOW FUNCTIONS",
    "SHOW CATALOGS",
    "SHOW \"DateStyle\"",
    "SHOW search_path",
    "SHOW statement_timeout",
    "SHOW no_such_thing",
    "SHOW",
    "SET \"datafusion.execution.batch_size\" = 1",
    "SET datafusion.execution.batch_size = 1",
    "SET \"DataFusion.Execution.Batch_Size\" TO 1",
    "SET datestyle = 'garbage'",
    "SET datestyle = 'ISO, DMY'",
    "SET extra_float_digits = 99",
    "SET bytea_output = 'escape'",
    "SET statement_timeout = '1s'",
    "SET statement_timeout = 'soon'",
    "SET statement_timeout TO DEFAULT",
    "SET TIME ZONE 'UTC'",
    "SET TIME ZONE LOCAL",
    "SET LOCAL search_path = public",
    "SET SESSION AUTHORIZATION DEFAULT",
    "SET ROLE NONE",
    "SET NAMES 'UTF8'",
    "SET application_name TO DEFAULT",
    "SET a.b.c = 1",
    "RESET ALL",
    "RESET \"DateStyle\"",
    "RESET datafusion.execution.batch_size",
    "DESCRIBE orders",
    "DESCRIBE no_such_table",
    "EXPLAIN SELECT 1",
    "EXPLAIN ANALYZE SELECT count(*) FROM orders",
    "EXPLAIN VERBOSE SELECT 1",
    "EXPLAIN DELETE FROM orders",
    "BEGIN",
    "BEGIN",
    "COMMIT",
    "ROLLBACK",
    "START TRANSACTION READ ONLY",
    "SAVEPOINT a",
    "RELEASE SAVEPOINT a",
    "ROLLBACK TO SAVEPOINT a",
    "COMMIT",
    "ABORT",
    "DECLARE c CURSOR FOR SELECT order_id FROM orders",
    "FETCH 1 FROM c",
    "FETCH FORWARD 3 FROM c",
    "FETCH ALL FROM c",
    "FETCH NEXT FROM nope",
    "FETCH PRIOR FROM c",
    "FETCH -1 FROM c",
    "FETCH ABSOLUTE 2 FROM c",
    "MOVE NEXT FROM c",
    "CLOSE c",
    "CLOSE c",
    "CLOSE ALL",
    "DECLARE d SCROLL CURSOR WITH HOLD FOR SELECT 1",
    "DECLARE e CURSOR FOR DELETE FROM orders",
    "DECLARE f CURSOR FOR SELECT 1 INTO t",
    "PREPARE p AS SELECT 1",
    "EXECUTE p",
    "DEALLOCATE p",
    "DEALLOCATE ALL",
    "DISCARD ALL",
    "DISCARD PLANS",
    "LISTEN x",
    "NOTIFY x",
    "UNLISTEN *",
    "VACUUM",
    "ANALYZE orders",
    "CHECKPOINT",
    "LOCK orders",
    "COPY orders TO STDOUT",
    "COPY (SELECT 1) TO STDOUT",
    "COPY orders FROM STDIN",
    "CREATE TEMP TABLE t (a int)",
    "CALL f()",
    "DO $$ BEGIN END $$",
    "SELECT 1",
    "SELECT",
    "VALUES (1), (2)",
    "TABLE orders",
    "SELECT \"order_id\" FROM \"orders\" LIMIT 1",
    "SELECT 'it''s'",
    "SELECT E'\\x41'",
    "SELECT $$dollar$$",
    "SELECT U&'\\0041'",
    "SELECT \"weird \"\" ident\" FROM orders",
    "SELECT 'ü', '😀', 'ℕ'",
    "SELECT 1 /* unterminated",
    "SELECT 'unterminated",
    "SELECT (((((1)))))",
    "SELECT $1",
    "SELECT * FROM pg_catalog.pg_class LIMIT 1",
    "SELECT current_setting('no_such')",
    "SELECT current_setting('search_path')",
    "SELECT version()",
    "SELECT 1; SELECT 2",
    "SELECT 1; BOGUS; SELECT 3",
    ";;;",
    "-- only a comment",
    "BOGUS",
    ")(",
    "SELECT 1 FROM",
    "INSERT INTO orders VALUES (1)",
    "SELECT * FROM orders WHERE order_id = ANY('{}')",
    "SELECT CAST('x' AS INT)",
    "SELECT 1/0",
];

/// Ok, or a server error with a SQLSTATE; anything else (the connection dropped) fails.
fn answered(sql: &str, protocol: &str, result: Result<(), tokio_postgres::Error>) {
    if let Err(e) = result {
        let db = e.as_db_error().unwrap_or_else(|| {
            panic!("{protocol} `{sql}`: not an answer but {e:?}");
        });
        assert!(
            db.code().code().len() == 5 && db.code() != &SqlState::INTERNAL_ERROR,
            "{protocol} `{sql}`: {} {}",
            db.code().code(),
            db.message()
        );
    }
}

/// The connection still answers (after ending any transaction the statement left open).
async fn alive(client: &tokio_postgres::Client, after: &str) {
    let _ = client.simple_query("ROLLBACK").await;
    let rows = client
        .simple_query("SELECT 41 + 1 AS n")
        .await
        .unwrap_or_else(|e| panic!("the connection died after `{after}`: {e:?}"));
    assert!(
        rows.iter()
            .any(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(r)
            if r.get("n") == Some("42"))),
        "after `{after}`"
    );
}

async fn send_both(client: &tokio_postgres::Client, sql: &str) {
    let simple = client.simple_query(sql).await.map(|_| ());
    answered(sql, "simple", simple);
    alive(client, sql).await;
    let extended = match client.prepare(sql).await {
        // A statement with parameters (`SELECT $1`) was answered by its description.
        Ok(statement) if !statement.params().is_empty() => Ok(()),
        Ok(statement) => client.query(&statement, &[]).await.map(|_| ()),
        Err(e) => Err(e),
    };
    answered(sql, "extended", extended);
    alive(client, sql).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_statement_shape_gets_an_answer_on_both_protocols() {
    let (_dir, app) = app().await;
    let client = connect(&app).await;
    for sql in SHAPES {
        send_both(&client, sql).await;
    }
    // The two regressions the issue names, by SQLSTATE.
    let e = client.simple_query("SHOW STATUS").await.unwrap_err();
    assert_eq!(e.as_db_error().unwrap().code().code(), "42704");
    let e = client
        .simple_query("SET \"datafusion.execution.batch_size\" = 1")
        .await
        .unwrap_err();
    assert_eq!(e.as_db_error().unwrap().code().code(), "42501");
    // A cursor pages through a real answer.
    client.simple_query("BEGIN").await.unwrap();
    client
        .simple_query("DECLARE c CURSOR FOR SELECT order_id FROM orders ORDER BY order_id")
        .await
        .unwrap();
    let rows = |m: Vec<tokio_postgres::SimpleQueryMessage>| {
        m.iter()
            .filter(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_)))
            .count()
    };
    assert_eq!(
        rows(client.simple_query("FETCH 5 FROM c").await.unwrap()),
        5
    );
    assert_eq!(
        rows(client.simple_query("FETCH 7 FROM c").await.unwrap()),
        7
    );
    client.simple_query("CLOSE c").await.unwrap();
    client.simple_query("COMMIT").await.unwrap();
    // statement_timeout is honoured (57014) and the connection carries on.
    client
        .simple_query("SET statement_timeout = 300")
        .await
        .unwrap();
    let e = client
        .simple_query("SELECT levenshtein(repeat('a', 100000), repeat('b', 100000))")
        .await
        .unwrap_err();
    assert_eq!(e.as_db_error().unwrap().code().code(), "57014", "{e:?}");
    alive(&client, "a statement timeout").await;
}

/// Random token soup: whatever it parses as, it gets an answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_statements_get_an_answer() {
    let (_dir, app) = app().await;
    let client = connect(&app).await;
    let words = prop::sample::select(vec![
        "SELECT",
        "SET",
        "SHOW",
        "RESET",
        "DESCRIBE",
        "DECLARE",
        "FETCH",
        "CLOSE",
        "BEGIN",
        "COMMIT",
        "ROLLBACK",
        "CURSOR",
        "FOR",
        "FROM",
        "TO",
        "=",
        "ALL",
        "orders",
        "c",
        "\"DateStyle\"",
        "'x'",
        "1",
        "-1",
        "$1",
        "(",
        ")",
        ",",
        "*",
        ";",
        "TIME",
        "ZONE",
        "datafusion.execution.batch_size",
        "\"datafusion.x\"",
        "LOCAL",
        "SESSION",
        "WITH",
        "HOLD",
        "NEXT",
        "PRIOR",
        "ABSOLUTE",
        "EXPLAIN",
        "ANALYZE",
        "VALUES",
        "TABLE",
        "AS",
        "pg_catalog.pg_type",
        "version()",
        "E'\\n'",
        "$$x$$",
        "--",
        "/*",
        "*/",
    ]);
    let mut runner = TestRunner::new(Config::default());
    let statements = prop::collection::vec(words, 1..8);
    let mut cases = Vec::new();
    for _ in 0..150 {
        let tree = statements.new_tree(&mut runner).expect("a statement");
        cases.push(tree.current().join(" "));
    }
    for sql in cases {
        send_both(&client, &sql).await;
    }
}
