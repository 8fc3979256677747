//! The DDL of `sql/` as migrations: the files embedded in the binary, split into statements
//! for one generation's database and applied once each (idempotently), and the materialized
//! views' `SELECT`s that the aggregate repair reuses.

use std::collections::HashSet;

use shoplens_readmodel::tables::AggTable;

use super::conn::{Conn, already_exists, now_ms};
use super::journal::repair;
use super::rowbinary::RowBinary;
use crate::sink::SinkResult;

/// The migrations of `sql/`, applied in this order; `{db}` stands for the generation's
/// database. Each file holds `;`-terminated statements and whole-line `--` comments.
pub const MIGRATIONS: &[(&str, &str)] = &[
    (
        "0001_raw_tables",
        include_str!("../../../sql/0001_raw_tables.sql"),
    ),
    (
        "0002_read_model",
        include_str!("../../../sql/0002_read_model.sql"),
    ),
    (
        "0003_apply_journal",
        include_str!("../../../sql/0003_apply_journal.sql"),
    ),
    (
        "0004_month_rollups",
        include_str!("../../../sql/0004_month_rollups.sql"),
    ),
    (
        "0005_fencing",
        include_str!("../../../sql/0005_fencing.sql"),
    ),
    (
        "0006_week_rollups",
        include_str!("../../../sql/0006_week_rollups.sql"),
    ),
];

/// The aggregate tables a migration creates over events already stored: filled from the raw
/// tables before the migration is recorded (its views see only later inserts).
const FILLS: &[(&str, &[AggTable])] = &[
    (
        "0004_month_rollups",
        &[
            AggTable::ProductSalesMonthly,
            AggTable::CustomerSpendMonthly,
        ],
    ),
    (
        "0006_week_rollups",
        &[AggTable::ProductSalesWeekly, AggTable::CustomerSpendWeekly],
    ),
];

/// The statements of one migration file for database `db`.
pub fn migration_statements(sql: &str, db: &str) -> Vec<String> {
    let text: String = sql
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    text.split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.replace("{db}", db))
        .collect()
}

/// The materialized views of the migrations as (target table, SELECT) for database `db`:
/// what each view adds to its target for the rows of one insert, so run over a whole raw
/// table it gives that table's whole contribution.
pub(super) fn view_selects(db: &str) -> Vec<(String, String)> {
    MIGRATIONS
        .iter()
        .flat_map(|(_, text)| migration_statements(text, db))
        .filter(|st| st.starts_with("CREATE MATERIALIZED VIEW"))
        .filter_map(|st| {
            let (head, select) = st.split_once("\nAS ")?;
            let target = head.lines().find_map(|l| l.trim().strip_prefix("TO "))?;
            let target = target.trim().rsplit('.').next()?.to_owned();
            Some((target, select.to_owned()))
        })
        .collect()
}

pub(super) async fn create_database(conn: &Conn, db: &str) -> SinkResult<()> {
    conn.execute(&format!("CREATE DATABASE IF NOT EXISTS {db}"))
        .await
        .or_else(already_exists)
}

/// Applies the migrations not yet recorded in `{db}.schema_migrations`, in order. Every
/// statement is `IF NOT EXISTS`, so a second process doing the same at once is harmless.
pub(super) async fn migrate(conn: &Conn, db: &str) -> SinkResult<()> {
    conn.execute(&format!(
        "CREATE TABLE IF NOT EXISTS {db}.schema_migrations (version String, applied_at Int64) \
         ENGINE = MergeTree ORDER BY version"
    ))
    .await
    .or_else(already_exists)?;
    let sql = format!("SELECT DISTINCT version FROM {db}.schema_migrations");
    let applied: HashSet<String> = conn
        .run(&sql, conn.client.query(&sql).fetch_all::<String>())
        .await?
        .into_iter()
        .collect();
    for (version, text) in MIGRATIONS {
        if applied.contains(*version) {
            continue;
        }
        for statement in migration_statements(text, db) {
            conn.execute(&statement).await.or_else(already_exists)?;
        }
        if let Some((_, tables)) = FILLS.iter().find(|(v, _)| v == version) {
            let rows = repair(conn, db, tables, None).await?;
            if rows > 0 {
                tracing::info!(database = db, version, rows, "filled new aggregate tables");
            }
        }
        let mut row = RowBinary::default();
        row.str(version);
        row.i64(now_ms());
        conn.insert(&format!("{db}.schema_migrations"), row.0)
            .await?;
        tracing::info!(database = db, version, "applied ClickHouse migration");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use arrow_schema::DataType;
    use shoplens_contract::tables::{MONEY, RawTable};

    use super::*;

    #[test]
    fn migrations_split_into_statements_without_comments() {
        let s = migration_statements(
            "-- a comment; with a semicolon\nCREATE TABLE {db}.a (x Int8)\nENGINE = Log;\n\n\
             CREATE TABLE {db}.b (y Int8) ENGINE = Log;\n",
            "g1",
        );
        assert_eq!(
            s,
            vec![
                "CREATE TABLE g1.a (x Int8)\nENGINE = Log",
                "CREATE TABLE g1.b (y Int8) ENGINE = Log"
            ]
        );
        // Every embedded statement is idempotent: `IF NOT EXISTS`, or an added column (18.16
        // has no `ADD COLUMN IF NOT EXISTS`; `migrate` takes "already exists" as done).
        for (_, text) in MIGRATIONS {
            for st in migration_statements(text, "d") {
                let adds_column = st.starts_with("ALTER TABLE") && st.contains(" ADD COLUMN ");
                assert!(st.contains("IF NOT EXISTS") || adds_column, "{st}");
            }
        }
    }

    /// The raw tables' DDL has exactly the contract's columns, in its order, with the
    /// ClickHouse type RowBinary encoding assumes.
    #[test]
    fn raw_table_ddl_matches_the_contract() {
        let statements = migration_statements(MIGRATIONS[0].1, "d");
        for table in RawTable::ALL {
            let head = format!("CREATE TABLE IF NOT EXISTS d.{}\n", table.name());
            let st = statements
                .iter()
                .find(|s| s.starts_with(&head))
                .unwrap_or_else(|| panic!("no DDL for {}", table.name()));
            let body = &st[st.find('(').unwrap() + 1..st.rfind(')').unwrap()];
            let columns: Vec<(String, String)> = body
                .split(",\n")
                .map(|c| {
                    let (name, ty) = c.trim().split_once(' ').unwrap();
                    (name.to_owned(), ty.trim().to_owned())
                })
                .collect();
            let expected: Vec<(String, String)> = table
                .schema()
                .fields()
                .iter()
                .map(|f| {
                    let base = match f.data_type() {
                        DataType::Utf8 => "String",
                        DataType::Int32 => "Int32",
                        DataType::Timestamp(..) => "Int64",
                        t if *t == MONEY => "Decimal(18, 2)",
                        t => panic!("unexpected type {t}"),
                    };
                    let ty = if f.is_nullable() {
                        format!("Nullable({base})")
                    } else {
                        base.to_owned()
                    };
                    (f.name().clone(), ty)
                })
                .collect();
            assert_eq!(columns, expected, "{}", table.name());
        }
    }

    #[test]
    fn every_aggregate_is_fed_by_the_views_the_model_defines() {
        let views = view_selects("d");
        let count = |t: AggTable| {
            views
                .iter()
                .filter(|(target, _)| target == t.name())
                .count()
        };
        assert_eq!(views.len(), 18);
        assert_eq!(count(AggTable::DailySales), 3);
        assert_eq!(count(AggTable::MonthlySales), 3);
        assert_eq!(count(AggTable::YearlySales), 3);
        assert_eq!(count(AggTable::ProductSalesDaily), 1);
        assert_eq!(count(AggTable::CustomerSpendDaily), 2);
        assert_eq!(count(AggTable::ProductSalesMonthly), 1);
        assert_eq!(count(AggTable::CustomerSpendMonthly), 2);
        assert_eq!(count(AggTable::ProductSalesWeekly), 1);
        assert_eq!(count(AggTable::CustomerSpendWeekly), 2);
        for (_, select) in &views {
            assert!(select.starts_with("SELECT"), "{select}");
            assert!(select.contains("FROM d."), "{select}");
        }
    }
}
