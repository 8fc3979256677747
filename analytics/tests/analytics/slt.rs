//! SQL test files with expected answers (`analytics/tests/slt/*.slt`, the sqllogictest
//! format), run on both back ends over the same events: the dashboard's queries, the shapes
//! pushed down to ClickHouse, and what the endpoint refuses.
//!
//! The subset of the format read here:
//!
//! ```text
//! # a comment
//! query ITR rowsort        <- one letter per column; `rowsort` sorts the rows first
//! SELECT ...               <- the statement, one or more lines
//! ----
//! 1 a 2.50                 <- the expected rows, cells separated by one space
//!                          <- a blank line ends the record
//! statement error read-only  <- the statement must fail, its message containing the rest
//! INSERT INTO ...
//! ```
//!
//! Cells print as Arrow displays them, NULL as `NULL` and an empty string as `(empty)`.
//! `SHOPLENS_SLT_BLESS=1` rewrites each file's expected rows with the embedded store's
//! answers (to review before committing); a normal run compares both back ends with them.

use std::path::{Path, PathBuf};

use arrow_array::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use shoplens_analytics::Engine;
use shoplens_analytics::embedded::EmbeddedReadModel;
use shoplens_analytics::engine::Pii;

use crate::support;

#[derive(Debug, Clone)]
enum Record {
    Query {
        /// The line after which the expected rows go (for blessing).
        header: String,
        columns: usize,
        rowsort: bool,
        sql: String,
        expected: Vec<String>,
    },
    Error {
        header: String,
        pattern: String,
        sql: String,
    },
    Comment(String),
}

fn parse(text: &str, file: &Path) -> Vec<Record> {
    let mut records = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line.trim().is_empty() || line.starts_with('#') {
            records.push(Record::Comment(line.to_owned()));
            continue;
        }
        let mut sql = Vec::new();
        while let Some(l) = lines.peek() {
            if l.trim().is_empty() || *l == "----" {
                break;
            }
            sql.push(lines.next().unwrap_or_default().to_owned());
        }
        let sql = sql.join("\n");
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["query", types, rest @ ..] => {
                let mut expected = Vec::new();
                if lines.peek() == Some(&"----") {
                    lines.next();
                    while let Some(l) = lines.peek() {
                        if l.is_empty() {
                            break;
                        }
                        expected.push(lines.next().unwrap_or_default().to_owned());
                    }
                }
                records.push(Record::Query {
                    header: line.to_owned(),
                    columns: types.len(),
                    rowsort: rest.contains(&"rowsort"),
                    sql,
                    expected,
                });
            }
            ["statement", "error", pattern @ ..] => records.push(Record::Error {
                header: line.to_owned(),
                pattern: pattern.join(" "),
                sql,
            }),
            _ => panic!("{}: cannot read the record `{line}`", file.display()),
        }
    }
    records
}

/// The rows of an answer as the files show them.
fn lines(batches: &[RecordBatch], rowsort: bool) -> (usize, Vec<String>) {
    let options = FormatOptions::default().with_null("NULL");
    let mut out = Vec::new();
    let mut columns = 0;
    for batch in batches {
        columns = batch.num_columns();
        let formatters = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).expect("a formatter"))
            .collect::<Vec<_>>();
        for row in 0..batch.num_rows() {
            let cells: Vec<String> = formatters
                .iter()
                .map(|f| {
                    let cell = f.value(row).to_string();
                    if cell.is_empty() {
                        "(empty)".to_owned()
                    } else {
                        cell
                    }
                })
                .collect();
            out.push(cells.join(" "));
        }
    }
    if rowsort {
        out.sort();
    }
    (columns, out)
}

fn files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/slt");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "slt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .slt files in {}", dir.display());
    files
}

/// Runs every record of `file` on `engine`; the failures, described.
async fn check(engine: &Engine, file: &Path, records: &[Record]) -> Vec<String> {
    let mut failures = Vec::new();
    let back_end = engine.back_end();
    for record in records {
        match record {
            Record::Query {
                columns,
                rowsort,
                sql,
                expected,
                ..
            } => match engine.collect(Pii::Visible, sql).await {
                Ok(batches) => {
                    let (got_columns, got) = lines(&batches, *rowsort);
                    if !batches.is_empty() && got_columns != *columns {
                        failures.push(format!(
                            "{}: {back_end}: {got_columns} columns, the header says {columns}\n{sql}",
                            file.display()
                        ));
                    } else if got != *expected {
                        failures.push(format!(
                            "{}: {back_end}: answer differs\n{sql}\nexpected:\n{}\ngot:\n{}",
                            file.display(),
                            expected.join("\n"),
                            got.join("\n")
                        ));
                    }
                }
                Err(e) => failures.push(format!("{}: {back_end}: {e}\n{sql}", file.display())),
            },
            Record::Error { pattern, sql, .. } => match engine.collect(Pii::Visible, sql).await {
                Ok(_) => failures.push(format!(
                    "{}: {back_end}: expected an error containing `{pattern}`\n{sql}",
                    file.display()
                )),
                Err(e) if e.to_string().contains(pattern.as_str()) => {}
                Err(e) => failures.push(format!(
                    "{}: {back_end}: the error `{e}` does not contain `{pattern}`\n{sql}",
                    file.display()
                )),
            },
            Record::Comment(_) => {}
        }
    }
    failures
}

/// `records` with the expected rows `engine` answers.
async fn bless(engine: &Engine, records: &[Record]) -> String {
    let mut out = Vec::new();
    for record in records {
        match record {
            Record::Comment(line) => out.push(line.clone()),
            Record::Error { header, sql, .. } => {
                out.push(header.clone());
                out.push(sql.clone());
            }
            Record::Query {
                header,
                rowsort,
                sql,
                ..
            } => {
                let batches = engine
                    .collect(Pii::Visible, sql)
                    .await
                    .unwrap_or_else(|e| panic!("{e}\n{sql}"));
                out.push(header.clone());
                out.push(sql.clone());
                out.push("----".to_owned());
                out.extend(lines(&batches, *rowsort).1);
            }
        }
    }
    out.join("\n") + "\n"
}

#[tokio::test]
async fn sql_files_give_their_expected_answers_on_both_back_ends() {
    let events = support::events();
    let (_dir, embedded) = support::embedded_engine(&events).await;
    let (_config, clickhouse) = support::clickhouse_engine("slt", &events).await;
    let bless_mode = std::env::var("SHOPLENS_SLT_BLESS").is_ok_and(|v| v == "1");
    let mut failures = Vec::new();
    let mut records_run = 0;
    for file in files() {
        let text = std::fs::read_to_string(&file).expect("read the .slt file");
        let records = parse(&text, &file);
        if bless_mode {
            std::fs::write(&file, bless(&embedded, &records).await).expect("bless");
            continue;
        }
        records_run += records
            .iter()
            .filter(|r| !matches!(r, Record::Comment(_)))
            .count();
        failures.extend(check(&embedded, &file, &records).await);
        failures.extend(check(&clickhouse, &file, &records).await);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(
        bless_mode || records_run >= 20,
        "only {records_run} records ran"
    );
}

/// The same files on the embedded store with every aggregate table merged a period at a
/// time at each scan, as a query worker merges a table too large for its memory.
#[tokio::test]
async fn sql_files_give_their_expected_answers_with_aggregates_merged_a_period_at_a_time() {
    let dir = support::embedded_store(&support::events()).await;
    // No merged row fits: every aggregate table is merged by periods.
    let model = EmbeddedReadModel::within(dir.path().join("readmodel"), 0);
    let engine = Engine::new(std::sync::Arc::new(model), &support::query_config())
        .await
        .expect("engine");
    let mut failures = Vec::new();
    for file in files() {
        let text = std::fs::read_to_string(&file).expect("read the .slt file");
        failures.extend(check(&engine, &file, &parse(&text, &file)).await);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
