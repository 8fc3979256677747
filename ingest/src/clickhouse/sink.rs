//! The sink of one generation: an apply looks up what is new, journals its start, inserts
//! each table's new rows in one `INSERT` (the views feed the aggregates), then stores the
//! positions, the freshness watermark and the journal's done mark.

use std::fmt;

use arrow_array::{RecordBatch, TimestampMillisecondArray};
use async_trait::async_trait;
use shoplens_bus::Position;
use shoplens_contract::tables::{OCCURRED_AT, RawTable};
use shoplens_readmodel::clickhouse::freshness_sql;
use shoplens_readmodel::freshness::Freshness;
use shoplens_readmodel::tables::{AggTable, DEAD_LETTERS};
use tokio::sync::Mutex;

use super::conn::{Conn, corrupt, now_ms};
use super::rowbinary::{RowBinary, encode_dead_letter, encode_rows, typed};
use crate::IngestError;
use crate::sink::{ApplyReport, DeadLetter, IngestBatch, Sink, SinkResult};

/// One generation of the read model in ClickHouse.
pub struct ClickHouseSink {
    pub(super) conn: Conn,
    pub(super) db: String,
    /// The freshness watermark as stored, once read: `apply` writes a freshness row only
    /// when it advances. `None` until loaded.
    pub(super) as_of: Mutex<Option<Option<i64>>>,
    /// Whether an apply may have left the aggregates short (see the module docs). `None`
    /// until the journal was read.
    pub(super) repair_pending: Mutex<Option<bool>>,
    /// The token of this sink's claim, once it claimed partitions: every write is then
    /// fenced (see `fence`). `None`: the only writer, writing plainly.
    pub(super) fence: std::sync::Mutex<Option<String>>,
    pub(super) structures: super::fence::Structures,
}

impl fmt::Debug for ClickHouseSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClickHouseSink")
            .field("database", &self.db)
            .finish_non_exhaustive()
    }
}

impl ClickHouseSink {
    /// The database this sink writes.
    pub fn database(&self) -> &str {
        &self.db
    }

    async fn stored_as_of(&self) -> SinkResult<Option<i64>> {
        Ok(self.freshness().await?.as_of_ms)
    }
}

#[async_trait]
impl Sink for ClickHouseSink {
    async fn apply(&self, batch: &IngestBatch) -> SinkResult<ApplyReport> {
        let mut report = ApplyReport::default();
        let mut newest: Option<i64> = None;
        let mut inserts: Vec<(String, Vec<u8>)> = Vec::new();
        // Held for the whole apply: a repair never runs beside raw inserts.
        let mut repair_pending = self.repair_pending.lock().await;
        if repair_pending.is_none() || *repair_pending == Some(true) {
            let own_failed = *repair_pending == Some(true);
            *repair_pending = Some(true);
            self.repair_if_journal_says_so(own_failed).await?;
            *repair_pending = Some(false);
        }
        let token = self.token();
        let token = token.as_deref();
        let apply_id = uuid::Uuid::now_v7().to_string();
        // Which rows and dead letters are new: all look-ups at once.
        let tables: Vec<&(RawTable, RecordBatch)> = batch
            .tables
            .iter()
            .filter(|(_, rows)| rows.num_rows() > 0)
            .collect();
        let writes_raw = !tables.is_empty();
        let (new_rows, letters, ()) = tokio::try_join!(
            futures::future::try_join_all(
                tables
                    .iter()
                    .map(|(table, rows)| self.new_rows(*table, rows))
            ),
            self.new_dead_letters(&batch.dead_letters),
            async {
                if writes_raw {
                    self.journal(&apply_id, 0, token).await
                } else {
                    Ok(())
                }
            },
        )?;
        if writes_raw {
            crate::failpoint::hit(crate::failpoint::CLICKHOUSE_JOURNAL_STARTED);
        }
        for ((table, rows), new) in tables.into_iter().zip(new_rows) {
            report.duplicates_skipped += rows.num_rows() - new.len();
            report.rows_written += new.len();
            // Every row of the batch is stored once this apply succeeds, duplicates included:
            // so a retry whose rows all went in the first time still advances the watermark.
            let at = rows.column_by_name(OCCURRED_AT).ok_or_else(|| {
                corrupt(format!(
                    "table `{}`: no column `{OCCURRED_AT}`",
                    table.name()
                ))
            })?;
            let at: &TimestampMillisecondArray = typed(at, OCCURRED_AT)?;
            newest = newest.max(at.iter().flatten().max());
            if new.is_empty() {
                continue;
            }
            inserts.push((
                format!("{}.{}", self.db, table.name()),
                encode_rows(*table, rows, &new)?,
            ));
        }
        report.dead_letters_written = letters.len();
        if !letters.is_empty() {
            let mut out = RowBinary::default();
            for d in letters {
                encode_dead_letter(&mut out, d);
            }
            inserts.push((format!("{}.{DEAD_LETTERS}", self.db), out.0));
        }
        // One INSERT per table, concurrently; a retry after any failure is idempotent.
        if writes_raw {
            // From here until the done mark, a failure may leave the views behind.
            *repair_pending = Some(true);
        }
        futures::future::try_join_all(
            inserts
                .into_iter()
                .map(|(table, rows)| async move { self.write(&table, rows, token).await }),
        )
        .await?;
        if writes_raw {
            crate::failpoint::hit(crate::failpoint::CLICKHOUSE_RAW_INSERTED);
        }

        // Only now, with the data acknowledged: the positions (a restarted worker seeks there),
        // the freshness watermark and the journal's done mark, at once.
        let positions = async {
            if batch.positions.is_empty() {
                return Ok(());
            }
            let mut out = RowBinary::default();
            let applied_at = now_ms();
            for p in &batch.positions {
                out.str(&p.topic);
                out.i32(p.partition);
                out.u64(p.next_offset);
                out.i64(applied_at);
            }
            self.write(&format!("{}.positions", self.db), out.0, token)
                .await
        };
        let freshness = async {
            let Some(newest) = newest else {
                return Ok(());
            };
            let mut as_of = self.as_of.lock().await;
            let current = match *as_of {
                Some(current) => current,
                None => self.stored_as_of().await?,
            };
            if current.is_none_or(|c| newest > c) {
                let mut out = RowBinary::default();
                out.i64(newest);
                out.i64(now_ms());
                self.write(&format!("{}.freshness", self.db), out.0, token)
                    .await?;
                *as_of = Some(Some(newest));
            } else {
                *as_of = Some(current);
            }
            Ok(())
        };
        let done = async {
            if writes_raw {
                self.journal(&apply_id, 1, token).await
            } else {
                Ok(())
            }
        };
        tokio::try_join!(positions, freshness, done)?;
        *repair_pending = Some(false);
        if let Some(token) = token
            && !self.still_holds(token).await?
        {
            // Some inserts may have been turned away: what is stored is re-read by whoever
            // owns the partitions now (this worker too, once it claimed them again).
            *self.as_of.lock().await = None;
            return Err(IngestError::Fenced(format!(
                "another writer claimed partitions of {}",
                self.db
            )));
        }
        if writes_raw {
            crate::failpoint::hit(crate::failpoint::CLICKHOUSE_APPLY_DONE);
        }
        Ok(report)
    }

    async fn claim(&self, partitions: &[(String, i32)]) -> SinkResult<Vec<Position>> {
        self.claim_partitions(partitions).await
    }

    async fn parked_keys(&self) -> SinkResult<Vec<(String, String)>> {
        let sql = format!(
            "SELECT DISTINCT topic, key FROM {}.{DEAD_LETTERS} ORDER BY topic, key",
            self.db
        );
        self.conn
            .run(
                &sql,
                self.conn.client.query(&sql).fetch_all::<(String, String)>(),
            )
            .await
    }

    async fn freshness(&self) -> SinkResult<Freshness> {
        let sql = freshness_sql(&self.db);
        let row = self
            .conn
            .run(
                &sql,
                self.conn.client.query(&sql).fetch_optional::<(i64, i64)>(),
            )
            .await?;
        Ok(Freshness {
            as_of_ms: row.map(|r| r.0),
            visible_at_ms: row.map(|r| r.1),
        })
    }

    async fn stored_positions(&self) -> SinkResult<Vec<Position>> {
        let sql = format!(
            "SELECT topic, partition, max(next_offset) FROM {}.positions \
             GROUP BY topic, partition ORDER BY topic, partition",
            self.db
        );
        let rows = self
            .conn
            .run(
                &sql,
                self.conn
                    .client
                    .query(&sql)
                    .fetch_all::<(String, i32, u64)>(),
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|(topic, partition, next_offset)| Position {
                topic,
                partition,
                next_offset,
            })
            .collect())
    }

    /// Keys whose rows add up to no contribution (possible only after a repair took one back)
    /// are left out, as the Rust reference has no such keys.
    async fn aggregate(&self, table: AggTable) -> SinkResult<RecordBatch> {
        self.read_aggregate(table).await
    }

    async fn raw_row_count(&self, table: RawTable) -> SinkResult<u64> {
        let sql = format!("SELECT count() FROM {}.{}", self.db, table.name());
        self.conn
            .run(&sql, self.conn.client.query(&sql).fetch_one::<u64>())
            .await
    }

    async fn dead_letters(&self) -> SinkResult<Vec<DeadLetter>> {
        self.read_dead_letters().await
    }
}
