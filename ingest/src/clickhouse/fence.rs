//! Fencing, for several ingest workers on one generation (`sql/0005_fencing.sql`).
//!
//! Exactly-once needs one writer per bus partition: two writers of the same events would
//! both look up an event id, both find it missing, and both insert it. A consumer group
//! gives each partition one owner at a time only in the group's view: a worker paused past
//! its session timeout (a "zombie") or one that has not yet seen a rebalance still writes.
//! So ClickHouse itself turns stale writers away:
//!
//! - [`ClickHouseSink::claim`] stores, for every partition a worker was assigned, a claim
//!   with a fresh token and an epoch above every earlier one. A token is a *fence holder*
//!   while none of its claims is superseded.
//! - Every write of a claimed sink is an `INSERT .. SELECT .. WHERE` the token is a holder
//!   ([`Conn::insert_where`]): the check runs inside ClickHouse when the insert starts, so a
//!   superseded writer's inserts store nothing, however late it wakes up.
//! - After storing its claim, the new owner waits until every insert that was already
//!   running on the server has ended (one may have passed its check just before the claim),
//!   and only then reads the stored positions; its look-ups by event id then see everything
//!   any earlier owner stored, so nothing is counted twice.
//! - An apply ends by checking that its token still holds. If not, some of its inserts may
//!   have been turned away: the apply fails with [`IngestError::Fenced`], the worker drops
//!   what it holds, claims its current assignment again and re-reads from the stored
//!   positions (an insert is all or nothing, so the re-read batch finds exactly the rows that
//!   went in).
//!
//! The aggregate repair (see `journal`) must not run beside any apply, so a sink that has
//! to repair first claims every partition with a repair token (fencing every other writer),
//! and its correction inserts are fenced by that token too.

use std::collections::HashMap;
use std::time::Duration;

use shoplens_bus::Position;

use super::conn::{corrupt, now_ms, now_ns};
use super::rowbinary::RowBinary;
use super::sink::ClickHouseSink;
use crate::sink::{Sink, SinkResult, positions_of};

/// How long a claim waits while another sink's repair holds the partitions: the repair
/// fences everyone, and taking partitions back at once would only make it start over.
const REPAIR_GRACE: Duration = Duration::from_secs(60);
/// Token prefix of a repair's claim.
pub(super) const REPAIR_TOKEN: &str = "repair-";

/// Whether a token is safe to splice into SQL (we make them: UUIDs and a prefix).
fn valid_token(token: &str) -> bool {
    !token.is_empty()
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The SQL condition "`token` holds the fence in `db`".
pub(super) fn holds(db: &str, token: &str) -> String {
    format!("(SELECT count() FROM {db}.fence_holders WHERE token = '{token}') = 1")
}

impl ClickHouseSink {
    /// The token this sink writes under, if it claimed partitions.
    pub(super) fn token(&self) -> Option<String> {
        self.fence.lock().expect("fence lock").clone()
    }

    /// Takes `partitions` over for this sink (see the module docs) and returns the positions
    /// stored for them. From now on every write of this sink is fenced by a fresh token.
    pub(super) async fn claim_partitions(
        &self,
        partitions: &[(String, i32)],
    ) -> SinkResult<Vec<Position>> {
        self.wait_for_repair(partitions).await?;
        let token = uuid::Uuid::now_v7().simple().to_string();
        self.store_claims(&token, partitions).await?;
        self.conn.wait_for_inserts(&self.db).await?;
        *self.fence.lock().expect("fence lock") = Some(token);
        // A writer that was fenced off may have left an apply unfinished: look again.
        *self.repair_pending.lock().await = None;
        *self.as_of.lock().await = None;
        Ok(positions_of(
            Sink::stored_positions(self).await?,
            partitions,
        ))
    }

    /// Stores one claim per partition for `token`, with an epoch above every stored one.
    pub(super) async fn store_claims(
        &self,
        token: &str,
        partitions: &[(String, i32)],
    ) -> SinkResult<()> {
        if !valid_token(token) {
            return Err(corrupt(format!(
                "fence token `{token}` is not a plain name"
            )));
        }
        if partitions.is_empty() {
            return Ok(());
        }
        let sql = format!("SELECT max(epoch) FROM {}.owners", self.db);
        let top = self
            .conn
            .run(&sql, self.conn.client.query(&sql).fetch_one::<u64>())
            .await?;
        // Wall-clock nanoseconds, so epochs also order across processes that never read each
        // other's claims; never below a stored one.
        let epoch = (now_ns().max(0) as u64).max(top + 1);
        let mut out = RowBinary::default();
        let at = now_ms();
        for (topic, partition) in partitions {
            out.str(topic);
            out.i32(*partition);
            out.str(token);
            out.u64(epoch);
            out.i64(at);
        }
        self.conn
            .insert(&format!("{}.owners", self.db), out.0)
            .await
    }

    /// Whether `token` still holds the fence.
    pub(super) async fn still_holds(&self, token: &str) -> SinkResult<bool> {
        let sql = format!(
            "SELECT count() FROM {}.fence_holders WHERE token = ?",
            self.db
        );
        let n = self
            .conn
            .run(
                &sql,
                self.conn.client.query(&sql).bind(token).fetch_one::<u64>(),
            )
            .await?;
        Ok(n == 1)
    }

    /// Every partition ever claimed in this generation.
    pub(super) async fn claimed_partitions(&self) -> SinkResult<Vec<(String, i32)>> {
        let sql = format!(
            "SELECT DISTINCT topic, partition FROM {}.owners ORDER BY topic, partition",
            self.db
        );
        self.conn
            .run(
                &sql,
                self.conn.client.query(&sql).fetch_all::<(String, i32)>(),
            )
            .await
    }

    /// Waits (up to [`REPAIR_GRACE`]) while a recent repair claim holds any of `partitions`.
    async fn wait_for_repair(&self, partitions: &[(String, i32)]) -> SinkResult<()> {
        let sql = format!(
            "SELECT count() FROM {db}.owners WHERE startsWith(token, ?) AND claimed_at > ? \
             AND (topic, partition, epoch) IN \
             (SELECT topic, partition, max(epoch) FROM {db}.owners GROUP BY topic, partition)",
            db = self.db
        );
        let deadline = tokio::time::Instant::now() + REPAIR_GRACE;
        loop {
            let since = now_ms() - REPAIR_GRACE.as_millis() as i64;
            let repairing = self
                .conn
                .run(
                    &sql,
                    self.conn
                        .client
                        .query(&sql)
                        .bind(REPAIR_TOKEN)
                        .bind(since)
                        .fetch_one::<u64>(),
                )
                .await?;
            if repairing == 0 || partitions.is_empty() || tokio::time::Instant::now() >= deadline {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The columns of `table` (qualified) as an external-data structure, `name Type, ..`.
    pub(super) async fn structure(&self, table: &str) -> SinkResult<String> {
        if let Some(s) = self.structures.lock().await.get(table) {
            return Ok(s.clone());
        }
        let (db, name) = table
            .split_once('.')
            .ok_or_else(|| corrupt(format!("table `{table}` is not qualified")))?;
        // In definition order on 18.16 and current versions alike.
        let sql = "SELECT name, type FROM system.columns WHERE database = ? AND table = ?";
        let columns = self
            .conn
            .run(
                sql,
                self.conn
                    .client
                    .query(sql)
                    .bind(db)
                    .bind(name)
                    .fetch_all::<(String, String)>(),
            )
            .await?;
        if columns.is_empty() {
            return Err(corrupt(format!("table `{table}` has no columns")));
        }
        let structure = columns
            .iter()
            .map(|(name, ty)| format!("{name} {}", structure_type(ty)))
            .collect::<Vec<_>>()
            .join(", ");
        self.structures
            .lock()
            .await
            .insert(table.to_owned(), structure.clone());
        Ok(structure)
    }

    /// Inserts RowBinary `rows` into `table` (qualified): plainly without a token, only while
    /// the token holds the fence with one.
    pub(super) async fn write(
        &self,
        table: &str,
        rows: Vec<u8>,
        token: Option<&str>,
    ) -> SinkResult<()> {
        match token {
            None => self.conn.insert(table, rows).await,
            Some(token) => {
                let structure = self.structure(table).await?;
                self.conn
                    .insert_where(table, &structure, rows, &holds(&self.db, token))
                    .await
            }
        }
    }
}

/// A column type as external data's structure takes it: 18.16 splits the structure at every
/// comma, so `Decimal(P, S)` is written as the comma-free `Decimal32/64/128(S)` it is.
fn structure_type(ty: &str) -> String {
    let decimal = |inner: &str| {
        let (p, s) = inner.split_once(',')?;
        let p: u32 = p.trim().parse().ok()?;
        let bits = match p {
            0..=9 => 32,
            10..=18 => 64,
            _ => 128,
        };
        Some(format!("Decimal{bits}({})", s.trim()))
    };
    if let Some(inner) = ty
        .strip_prefix("Nullable(Decimal(")
        .and_then(|r| r.strip_suffix("))"))
        && let Some(d) = decimal(inner)
    {
        return format!("Nullable({d})");
    }
    if let Some(inner) = ty
        .strip_prefix("Decimal(")
        .and_then(|r| r.strip_suffix(')'))
        && let Some(d) = decimal(inner)
    {
        return d;
    }
    ty.to_owned()
}

/// Structures read once per sink.
pub(super) type Structures = tokio::sync::Mutex<HashMap<String, String>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_checked_before_they_reach_sql() {
        assert!(valid_token("0190abcdef"));
        assert!(valid_token("repair-0190abcdef"));
        assert!(!valid_token("x' OR 1=1 --"));
        assert!(!valid_token(""));
        assert_eq!(structure_type("Decimal(18, 2)"), "Decimal64(2)");
        assert_eq!(structure_type("Decimal(38, 2)"), "Decimal128(2)");
        assert_eq!(
            structure_type("Nullable(Decimal(9, 4))"),
            "Nullable(Decimal32(4))"
        );
        assert_eq!(structure_type("Nullable(String)"), "Nullable(String)");
        assert_eq!(
            holds("db", "t1"),
            "(SELECT count() FROM db.fence_holders WHERE token = 't1') = 1"
        );
    }
}
