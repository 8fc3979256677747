//! The apply journal and the aggregate repair that closes ClickHouse's one gap (see the
//! module docs of `clickhouse`): an apply's start and done marks, and, when a start mark has
//! no done mark, the aggregates recomputed from the raw tables with the views' own `SELECT`s
//! and corrected per key.

use std::time::Duration;

use shoplens_contract::tables::MONEY;
use shoplens_readmodel::tables::AggTable;

use super::conn::{Conn, corrupt, now_ms};
use super::migrations::view_selects;
use super::rowbinary::RowBinary;
use super::sink::ClickHouseSink;
use crate::IngestError;
use crate::sink::SinkResult;

impl ClickHouseSink {
    pub(super) async fn journal(&self, apply_id: &str, done: u8) -> SinkResult<()> {
        let mut row = RowBinary::default();
        row.str(apply_id);
        row.0.push(done);
        row.i64(now_ms());
        self.conn
            .insert(&format!("{}.apply_journal", self.db), row.0)
            .await
    }

    /// Repairs the aggregates if the journal holds an apply that never finished, then marks
    /// those applies done.
    /// Makes every aggregate table equal to what its views give over the raw tables
    /// ([`repair`]); returns the number of correction rows.
    pub async fn repair_aggregates(&self) -> SinkResult<u64> {
        repair(&self.conn, &self.db, &AggTable::ALL).await
    }

    pub(super) async fn repair_if_journal_says_so(&self) -> SinkResult<()> {
        let sql = format!(
            "SELECT apply_id FROM {}.apply_journal GROUP BY apply_id HAVING max(done) = 0",
            self.db
        );
        let unfinished = self
            .conn
            .run(&sql, self.conn.client.query(&sql).fetch_all::<String>())
            .await?;
        if unfinished.is_empty() {
            return Ok(());
        }
        let fixed = self.repair_aggregates().await?;
        tracing::warn!(
            database = %self.db,
            unfinished_applies = unfinished.len(),
            corrected_rows = fixed,
            "repaired aggregates after an interrupted apply"
        );
        for id in unfinished {
            self.journal(&id, 1).await?;
        }
        Ok(())
    }
}

/// Makes the aggregate `tables` of database `db` equal to what their materialized views
/// give over the whole raw tables, by inserting per key the difference (truth minus stored
/// sums; counts wrap modulo 2^64, which `sum` undoes). Returns the number of correction rows. Must not run
/// beside an apply (the sink's own applies wait for it); refuses while an insert into
/// this database is still running on the server (e.g. one whose client timed out).
///
/// Also how a new aggregate table of an existing database is filled (`migrations`): it
/// inserts only differences, so running it again adds nothing.
pub(super) async fn repair(conn: &Conn, db: &str, tables: &[AggTable]) -> SinkResult<u64> {
    // An insert whose client gave up (a timeout, or a sibling insert of the same apply
    // that failed) may still be running on the server: wait for it, within the request
    // timeout, so the repair never races it.
    let sql = "SELECT count() FROM system.processes WHERE startsWith(query, ?)";
    let prefix = format!("INSERT INTO {}.", db);
    let deadline = tokio::time::Instant::now() + conn.timeout;
    loop {
        let running = conn
            .run(
                sql,
                conn.client
                    .query(sql)
                    .bind(prefix.as_str())
                    .fetch_one::<u64>(),
            )
            .await?;
        if running == 0 {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(IngestError::Unavailable(format!(
                "{running} inserts into {} still running; repair later",
                db
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let views = view_selects(db);
    let mut corrected = 0;
    for &table in tables {
        let selects: Vec<&str> = views
            .iter()
            .filter(|(target, _)| target == table.name())
            .map(|(_, select)| select.as_str())
            .collect();
        // The table's columns: the model's (money is Decimal, the rest UInt64 sums after
        // the keys) plus `contributions`.
        let schema = table.schema();
        let mut columns: Vec<(String, String)> = schema
            .fields()
            .iter()
            .map(|f| {
                let ty = if *f.data_type() == MONEY {
                    "Decimal"
                } else {
                    "UInt64"
                };
                (f.name().clone(), ty.to_owned())
            })
            .collect();
        columns.push(("contributions".into(), "UInt64".into()));
        if selects.is_empty() {
            return Err(corrupt(format!(
                "no views feed aggregate `{}`",
                table.name()
            )));
        }
        let (keys, sums) = columns.split_at(table.key_columns());
        let keys: Vec<&str> = keys.iter().map(|(n, _)| n.as_str()).collect();
        let keys = keys.join(", ");
        let truth_sums: Vec<String> = sums
            .iter()
            .map(|(n, _)| format!("sum({n}) AS truth_{n}"))
            .collect();
        let stored_sums: Vec<String> = sums
            .iter()
            .map(|(n, _)| format!("sum({n}) AS stored_{n}"))
            .collect();
        let differences: Vec<String> = sums
            .iter()
            .map(|(n, ty)| {
                if ty.starts_with("Decimal") {
                    format!("truth_{n} - stored_{n}")
                } else {
                    format!("toUInt64(truth_{n} - stored_{n})")
                }
            })
            .collect();
        let differs: Vec<String> = sums
            .iter()
            .map(|(n, _)| format!("truth_{n} != stored_{n}"))
            .collect();
        let names: Vec<&str> = sums.iter().map(|(n, _)| n.as_str()).collect();
        let name = table.name();
        // The keys whose stored sums differ from the truth: counted, then repaired.
        let differing = format!(
            "(SELECT {keys}, {truth_sums} FROM ({union}) GROUP BY {keys}) \
             ALL FULL OUTER JOIN \
             (SELECT {keys}, {stored_sums} FROM {db}.{name} GROUP BY {keys}) \
             USING ({keys}) WHERE {differs}",
            truth_sums = truth_sums.join(", "),
            stored_sums = stored_sums.join(", "),
            union = selects.join(" UNION ALL "),
            differs = differs.join(" OR "),
        );
        let insert = format!(
            "INSERT INTO {db}.{name} ({keys}, {names}) \
             SELECT {keys}, {differences} FROM {differing}",
            names = names.join(", "),
            differences = differences.join(", "),
        );
        let count = format!("SELECT count() FROM {differing}");
        let rows = conn
            .run(&count, conn.client.query(&count).fetch_one::<u64>())
            .await?;
        if rows > 0 {
            conn.execute(&insert).await?;
            corrected += rows;
        }
    }
    Ok(corrected)
}
