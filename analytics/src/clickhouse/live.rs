//! Which generation is live and how fresh it is, read the way the ingest store writes them
//! (the SQL of `shoplens_readmodel::clickhouse`): the live pointer cached for at most
//! [`LIVE_TTL`], no pointer yet meaning no generation.

use std::time::{Duration, Instant};

use shoplens_readmodel::clickhouse::{live_pointer_sql, watermark_sql};
use shoplens_readmodel::freshness::Freshness;

use super::client::{CallError, Inner, corrupt};
use crate::read_model::{ReadModelError, Watermark};

/// How long a read of the live pointer is reused: a blue/green switch is seen this late at
/// worst, and a dashboard refresh (a dozen scans) costs one look-up instead of a dozen.
pub const LIVE_TTL: Duration = Duration::from_secs(1);

/// ClickHouse's "database does not exist" and "table does not exist": for the live pointer,
/// that no generation was ever made live.
const UNKNOWN_DATABASE: u32 = 81;
const UNKNOWN_TABLE: u32 = 60;

impl Inner {
    /// The live generation, read at most [`LIVE_TTL`] ago; `None` before one was made live.
    pub(super) async fn live(&self) -> Result<Option<u32>, ReadModelError> {
        if let Some((at, generation)) = *self.live.lock().unwrap_or_else(|e| e.into_inner())
            && at.elapsed() < LIVE_TTL
        {
            return Ok(generation);
        }
        let sql = format!("{} FORMAT TabSeparated", live_pointer_sql(&self.base));
        let generation = match self.text(sql).await {
            Ok(text) => {
                let fields: Vec<&str> = text.trim_end_matches('\n').split('\t').collect();
                let parsed = match fields.as_slice() {
                    [generation, count] => generation
                        .parse::<u32>()
                        .ok()
                        .zip(count.parse::<u64>().ok()),
                    _ => None,
                };
                let (generation, count) = parsed
                    .ok_or_else(|| corrupt(format!("unexpected live pointer answer `{text}`")))?;
                (count > 0).then_some(generation)
            }
            Err(CallError::Refused {
                code: Some(UNKNOWN_DATABASE | UNKNOWN_TABLE),
                ..
            }) => None,
            Err(e) => return Err(e.into()),
        };
        *self.live.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), generation));
        Ok(generation)
    }

    /// The watermark of generation `generation`: its data version and its freshness, as the
    /// sink reads it, in one request.
    pub(super) async fn watermark(&self, generation: u32) -> Result<Watermark, ReadModelError> {
        let sql = format!(
            "{} FORMAT TabSeparated",
            watermark_sql(&self.database(generation))
        );
        let text = self.text(sql).await?;
        let line = text.trim_end_matches('\n');
        let fields: Vec<&str> = line.split('\t').collect();
        let parsed = match fields.as_slice() {
            [version, rows, as_of, visible] => (|| {
                Some((
                    version.parse::<u64>().ok()?,
                    rows.parse::<u64>().ok()?,
                    as_of.parse::<i64>().ok()?,
                    visible.parse::<i64>().ok()?,
                ))
            })(),
            _ => None,
        };
        let (version, rows, as_of, visible) =
            parsed.ok_or_else(|| corrupt(format!("unexpected watermark answer `{line}`")))?;
        let freshness = if rows == 0 {
            Freshness::default()
        } else {
            Freshness {
                as_of_ms: Some(as_of),
                visible_at_ms: Some(visible),
            }
        };
        Ok(Watermark {
            generation,
            freshness,
            version,
        })
    }
}
