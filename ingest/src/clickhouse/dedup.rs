//! Exactly-once across all history: which of a batch's raw rows (by event id, looked up in
//! sorted chunks whose id range the primary-key index narrows) and which of its dead letters
//! (by topic, partition and offset) the generation does not hold yet.

use std::collections::{BTreeMap, HashSet};

use arrow_array::{Array, RecordBatch, StringArray};
use shoplens_contract::tables::{EVENT_ID, RawTable};
use shoplens_readmodel::tables::DEAD_LETTERS;

use super::conn::corrupt;
use super::rowbinary::typed;
use super::sink::ClickHouseSink;
use crate::sink::{DeadLetter, SinkResult};

/// At most this many event ids are looked up with one query. Each query names its ids (an
/// `IN` list, ~40 bytes an id, well under 18.16's 256 KiB `max_query_size`), so its answer
/// is never larger than the chunk, however many stored rows the chunk's id range spans.
const LOOKUP_CHUNK: usize = 4096;

/// The ids of a batch sorted, as chunks of at most [`LOOKUP_CHUNK`] ids; each chunk is one
/// lookup: its `[first, last]` range (for the primary-key index) and its ids.
fn id_chunks<'a>(ids: &[&'a str]) -> Vec<Vec<&'a str>> {
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    sorted.chunks(LOOKUP_CHUNK).map(<[&str]>::to_vec).collect()
}

/// An SQL list of quoted ids. Ids are UUIDs the worker formatted itself; anything else is
/// refused rather than quoted.
fn id_list(ids: &[&str]) -> SinkResult<String> {
    let mut out = String::with_capacity(ids.len() * 40);
    for (i, id) in ids.iter().enumerate() {
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
            return Err(corrupt(format!("event id `{id}` is not a UUID")));
        }
        if i > 0 {
            out.push(',');
        }
        out.push('\'');
        out.push_str(id);
        out.push('\'');
    }
    Ok(out)
}

impl ClickHouseSink {
    /// The row indices of `batch` whose event ids `table` does not hold yet.
    pub(super) async fn new_rows(
        &self,
        table: RawTable,
        batch: &RecordBatch,
    ) -> SinkResult<Vec<usize>> {
        let ids = batch
            .column_by_name(EVENT_ID)
            .ok_or_else(|| corrupt(format!("table `{}`: no column `{EVENT_ID}`", table.name())))?;
        let ids: &StringArray = typed(ids, EVENT_ID)?;
        if ids.null_count() > 0 {
            return Err(corrupt(format!("table `{}`: null event_id", table.name())));
        }
        let values: Vec<&str> = (0..ids.len()).map(|i| ids.value(i)).collect();
        let mut stored: HashSet<String> = HashSet::new();
        for chunk in id_chunks(&values) {
            let (Some(first), Some(last)) = (chunk.first(), chunk.last()) else {
                continue;
            };
            let sql = format!(
                "SELECT event_id FROM {}.{} WHERE event_id >= ? AND event_id <= ? \
                 AND event_id IN ({})",
                self.db,
                table.name(),
                id_list(&chunk)?
            );
            let found = self
                .conn
                .run(
                    "SELECT event_id .. IN (..)",
                    self.conn
                        .client
                        .query(&sql)
                        .bind(*first)
                        .bind(*last)
                        .fetch_all::<String>(),
                )
                .await?;
            stored.extend(found);
        }
        let mut seen: HashSet<&str> = HashSet::with_capacity(values.len());
        Ok(values
            .iter()
            .enumerate()
            .filter(|(_, id)| !stored.contains(**id) && seen.insert(**id))
            .map(|(i, _)| i)
            .collect())
    }

    /// The dead letters of the batch not stored yet (and not repeated within the batch).
    pub(super) async fn new_dead_letters<'a>(
        &self,
        letters: &'a [DeadLetter],
    ) -> SinkResult<Vec<&'a DeadLetter>> {
        let mut ranges: BTreeMap<(&str, i32), (u64, u64)> = BTreeMap::new();
        for d in letters {
            let r = ranges
                .entry((d.topic.as_str(), d.partition))
                .or_insert((d.offset, d.offset));
            r.0 = r.0.min(d.offset);
            r.1 = r.1.max(d.offset);
        }
        let sql = format!(
            "SELECT offset FROM {}.{DEAD_LETTERS} \
             WHERE topic = ? AND partition = ? AND offset >= ? AND offset <= ?",
            self.db
        );
        let mut stored: HashSet<(&str, i32, u64)> = HashSet::new();
        for ((topic, partition), (low, high)) in ranges {
            let offsets = self
                .conn
                .run(
                    &sql,
                    self.conn
                        .client
                        .query(&sql)
                        .bind(topic)
                        .bind(partition)
                        .bind(low)
                        .bind(high)
                        .fetch_all::<u64>(),
                )
                .await?;
            stored.extend(offsets.into_iter().map(|o| (topic, partition, o)));
        }
        Ok(letters
            .iter()
            .filter(|d| stored.insert((d.topic.as_str(), d.partition, d.offset)))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::IngestError;

    #[test]
    fn ids_are_looked_up_in_sorted_chunks() {
        assert_eq!(id_chunks(&["b", "c", "a"]), vec![vec!["a", "b", "c"]]);
        let ids: Vec<String> = (0..LOOKUP_CHUNK + 1).map(|i| format!("{i:06}")).collect();
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let chunks = id_chunks(&refs);
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[0][0], "000000");
        assert_eq!(chunks[1], vec![format!("{LOOKUP_CHUNK:06}").as_str()]);
        assert!(id_chunks(&[]).is_empty());
        assert_eq!(id_list(&["0a-1", "ff"]).unwrap(), "'0a-1','ff'");
        assert!(matches!(
            id_list(&["x' OR 1"]),
            Err(IngestError::Corrupt(_))
        ));
    }
}
