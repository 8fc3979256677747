//! The apply journal and the aggregate repair that closes ClickHouse's one gap (see the
//! module docs of `clickhouse`): an apply's start and done marks, and, when a start mark has
//! no done mark, the aggregates recomputed from the raw tables with the views' own `SELECT`s
//! and corrected per key.

use shoplens_contract::tables::MONEY;
use shoplens_readmodel::tables::AggTable;

use super::conn::{Conn, corrupt, now_ms};
use super::fence::{REPAIR_TOKEN, holds};
use super::migrations::view_selects;
use super::rowbinary::RowBinary;
use super::sink::ClickHouseSink;
use crate::IngestError;
use crate::sink::SinkResult;

impl ClickHouseSink {
    pub(super) async fn journal(
        &self,
        apply_id: &str,
        done: u8,
        token: Option<&str>,
    ) -> SinkResult<()> {
        let mut row = RowBinary::default();
        row.str(apply_id);
        row.0.push(done);
        row.i64(now_ms());
        row.str(token.unwrap_or_default());
        self.conn
            .insert(&format!("{}.apply_journal", self.db), row.0)
            .await
    }

    /// Makes every aggregate table equal to what its views give over the raw tables
    /// ([`repair`]); returns the number of correction rows. Only for a single writer: with
    /// fenced writers the repair runs through [`Self::repair_if_journal_says_so`].
    pub async fn repair_aggregates(&self) -> SinkResult<u64> {
        repair(&self.conn, &self.db, &AggTable::ALL, None).await
    }

    /// Repairs the aggregates if the journal holds an apply that never finished and can no
    /// longer finish: written by no fenced writer (a single writer, e.g. a crashed one), or
    /// by one that was fenced off since, or this sink's own apply that failed
    /// (`own_failed`). Then marks those applies done.
    ///
    /// A fenced sink first claims every partition with a repair token, so no other writer
    /// inserts during the repair, and fails with `Fenced` afterwards (its own claim is gone
    /// too; the worker claims its assignment again).
    pub(super) async fn repair_if_journal_says_so(&self, own_failed: bool) -> SinkResult<()> {
        let sql = format!(
            "SELECT apply_id, token FROM {db}.apply_journal GROUP BY apply_id, token \
             HAVING max(done) = 0",
            db = self.db
        );
        let open = self
            .conn
            .run(
                &sql,
                self.conn.client.query(&sql).fetch_all::<(String, String)>(),
            )
            .await?;
        if open.is_empty() {
            return Ok(());
        }
        let own = self.token();
        let holders: Vec<String> = if open.iter().any(|(_, t)| !t.is_empty()) {
            let sql = format!("SELECT token FROM {}.fence_holders", self.db);
            self.conn
                .run(&sql, self.conn.client.query(&sql).fetch_all::<String>())
                .await?
        } else {
            Vec::new()
        };
        let unfinished: Vec<(String, String)> = open
            .into_iter()
            .filter(|(_, t)| {
                t.is_empty()
                    || !holders.contains(t)
                    || (own_failed && own.as_deref() == Some(t.as_str()))
            })
            .collect();
        if unfinished.is_empty() {
            return Ok(());
        }
        // A fenced sink fences off every partition ever claimed for the repair, and releases
        // them afterwards.
        let fenced = match &own {
            None => None,
            Some(_) => Some(self.claimed_partitions().await?),
        };
        let fixed = match &fenced {
            None => self.repair_aggregates().await?,
            Some(partitions) => {
                let token = format!("{REPAIR_TOKEN}{}", uuid::Uuid::now_v7().simple());
                self.store_claims(&token, partitions).await?;
                let fixed = repair(
                    &self.conn,
                    &self.db,
                    &AggTable::ALL,
                    Some(&holds(&self.db, &token)),
                )
                .await?;
                if !self.still_holds(&token).await? {
                    return Err(IngestError::Unavailable(format!(
                        "a claim interrupted the repair of {}; repairing again later",
                        self.db
                    )));
                }
                fixed
            }
        };
        tracing::warn!(
            database = %self.db,
            unfinished_applies = unfinished.len(),
            corrected_rows = fixed,
            "repaired aggregates after an interrupted apply"
        );
        for (id, token) in &unfinished {
            self.journal(id, 1, Some(token)).await?;
        }
        if let Some(partitions) = &fenced {
            // Let the writers the repair fenced off claim their partitions again at once.
            let released = format!("released-{}", uuid::Uuid::now_v7().simple());
            self.store_claims(&released, partitions).await?;
            return Err(IngestError::Fenced(format!(
                "repaired {}; claim the assignment again",
                self.db
            )));
        }
        Ok(())
    }
}

/// Makes the aggregate `tables` of database `db` equal to what their materialized views
/// give over the whole raw tables, by inserting per key the difference (truth minus stored
/// sums; counts wrap modulo 2^64, which `sum` undoes). Returns the number of correction rows. Must not run
/// beside an apply (the sink's own applies wait for it); first waits for the inserts into
/// this database still running on the server (e.g. one whose client timed out), and
/// refuses if they do not end within the request timeout.
///
/// Also how a new aggregate table of an existing database is filled (`migrations`): it
/// inserts only differences, so running it again adds nothing.
/// With `fence`, an SQL condition, a correction is inserted only while it holds when the
/// insert starts (a repair of fenced writers; see `fence`).
pub(super) async fn repair(
    conn: &Conn,
    db: &str,
    tables: &[AggTable],
    fence: Option<&str>,
) -> SinkResult<u64> {
    // An insert whose client gave up (a timeout, or a sibling insert of the same apply
    // that failed) may still be running on the server; so may one of a writer a repair
    // claim just fenced off: wait for them, so the repair never races them.
    conn.wait_for_inserts(db).await?;
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
             USING ({keys}) WHERE ({differs})",
            truth_sums = truth_sums.join(", "),
            stored_sums = stored_sums.join(", "),
            union = selects.join(" UNION ALL "),
            differs = differs.join(" OR "),
        );
        let insert = format!(
            "INSERT INTO {db}.{name} ({keys}, {names}) \
             SELECT {keys}, {differences} FROM {differing}{fenced}",
            names = names.join(", "),
            differences = differences.join(", "),
            fenced = fence.map(|f| format!(" AND {f}")).unwrap_or_default(),
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
