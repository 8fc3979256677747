//! The embedded store's commit point: `manifest.json`, listing the live segment files of
//! every table, the stored bus positions and the freshness watermark. It is replaced
//! atomically (temp file, fsync, rename, fsync of the directory), so after a crash the store
//! is exactly what the last manifest says; segment files it does not list are leftovers.
//! Readers take the files it lists ([`super::Snapshot`]); only the store's one writer
//! replaces it.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};
use shoplens_contract::tables::RawTable;

use super::sync_dir;
use crate::freshness::Freshness;
use crate::tables::{AggTable, DEAD_LETTERS};
use crate::{Error, Result};

/// The manifest's file name in a generation's directory.
pub const MANIFEST: &str = "manifest.json";
const MANIFEST_TMP: &str = "manifest.json.tmp";
/// The layout version this code writes and reads.
const FORMAT: u32 = 1;

/// A table of the store, as it is named on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TableId {
    Raw(RawTable),
    Agg(AggTable),
    DeadLetters,
}

impl TableId {
    pub fn all() -> impl Iterator<Item = TableId> {
        RawTable::ALL
            .into_iter()
            .map(TableId::Raw)
            // Month rollups are derived from their daily tables' deltas, never stored.
            .chain(
                AggTable::ALL
                    .into_iter()
                    .filter(|t| t.rolls_up().is_none())
                    .map(TableId::Agg),
            )
            .chain([TableId::DeadLetters])
    }

    /// The table's directory under the store's root, and its key in the manifest.
    pub fn dir(self) -> String {
        match self {
            TableId::Raw(t) => format!("raw/{}", t.name()),
            TableId::Agg(t) => format!("agg/{}", t.name()),
            TableId::DeadLetters => DEAD_LETTERS.to_owned(),
        }
    }

    fn from_dir(dir: &str) -> Option<TableId> {
        TableId::all().find(|t| t.dir() == dir)
    }
}

/// One live Parquet file of a table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Segment {
    /// Path relative to the store's root, `/`-separated.
    pub file: String,
    pub rows: u64,
    pub bytes: u64,
    /// The smallest and largest `event_id` in the file (raw tables only), so a dedup lookup
    /// reads only the files whose range covers an id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_range: Option<(String, String)>,
    /// How many compactions made this file (0: written by an `apply`). Compaction merges
    /// files of one level into one of the next, so a row is rewritten only a few times.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub level: u32,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// Where the worker resumes on one (topic, partition): the bus's position, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredPosition {
    pub topic: String,
    pub partition: i32,
    pub next_offset: u64,
}

/// The committed state of one generation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    /// The number the next segment file gets; never reused.
    pub next_segment: u64,
    /// Live segments per table directory ([`TableId::dir`]), oldest first.
    pub tables: BTreeMap<String, Vec<Segment>>,
    /// Where the worker resumes, one per (topic, partition), sorted.
    pub positions: Vec<StoredPosition>,
    pub freshness: Freshness,
}

impl Default for Manifest {
    fn default() -> Self {
        Manifest {
            format: FORMAT,
            next_segment: 1,
            tables: BTreeMap::new(),
            positions: Vec::new(),
            freshness: Freshness::default(),
        }
    }
}

impl Manifest {
    pub fn segments(&self, table: TableId) -> &[Segment] {
        self.tables.get(&table.dir()).map_or(&[], Vec::as_slice)
    }

    pub fn segments_mut(&mut self, table: TableId) -> &mut Vec<Segment> {
        self.tables.entry(table.dir()).or_default()
    }

    /// Every live segment with its table.
    pub fn all_segments(&self) -> impl Iterator<Item = (TableId, &Segment)> {
        TableId::all().flat_map(move |t| self.segments(t).iter().map(move |s| (t, s)))
    }

    /// Raises the position of each (topic, partition) in `positions` to the larger of the
    /// stored and the given next offset; returns whether anything changed.
    pub fn merge_positions(&mut self, positions: &[StoredPosition]) -> bool {
        let mut by_partition: BTreeMap<(String, i32), u64> = self
            .positions
            .iter()
            .map(|p| ((p.topic.clone(), p.partition), p.next_offset))
            .collect();
        for p in positions {
            let stored = by_partition
                .entry((p.topic.clone(), p.partition))
                .or_insert(p.next_offset);
            *stored = (*stored).max(p.next_offset);
        }
        let merged: Vec<StoredPosition> = by_partition
            .into_iter()
            .map(|((topic, partition), next_offset)| StoredPosition {
                topic,
                partition,
                next_offset,
            })
            .collect();
        let changed = merged != self.positions;
        self.positions = merged;
        changed
    }

    /// Reads the manifest; `None` if the store is new.
    pub fn load(root: &Path) -> Result<Option<Manifest>> {
        let path = root.join(MANIFEST);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let manifest: Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Corrupt(format!("{} cannot be read: {e}", path.display())))?;
        if manifest.format != FORMAT {
            return Err(Error::Corrupt(format!(
                "{} has format {}, this version reads format {FORMAT}",
                path.display(),
                manifest.format
            )));
        }
        if let Some(dir) = manifest
            .tables
            .keys()
            .find(|d| TableId::from_dir(d).is_none())
        {
            return Err(Error::Corrupt(format!(
                "{} lists unknown table `{dir}`",
                path.display()
            )));
        }
        Ok(Some(manifest))
    }

    /// Replaces the manifest atomically: a reader (or a restart) sees the old one or this
    /// one, never a mix.
    pub fn store(&self, root: &Path, fsync: bool) -> Result<()> {
        self.store_with(root, fsync, || {})
    }

    /// [`Manifest::store`], calling `before_rename` between writing the temporary file and
    /// renaming it over the manifest (where the crash tests stop a writer).
    pub fn store_with(&self, root: &Path, fsync: bool, before_rename: impl FnOnce()) -> Result<()> {
        let tmp = root.join(MANIFEST_TMP);
        let json = serde_json::to_vec(self).map_err(|e| Error::Io(std::io::Error::other(e)))?;
        let mut file = File::create(&tmp)?;
        file.write_all(&json)?;
        if fsync {
            file.sync_all()?;
        }
        drop(file);
        before_rename();
        fs::rename(&tmp, root.join(MANIFEST))?;
        if fsync {
            sync_dir(root)?;
        }
        Ok(())
    }

    /// Removes a temp manifest a crash left behind.
    pub fn remove_leftover_tmp(root: &Path) -> std::io::Result<()> {
        match fs::remove_file(root.join(MANIFEST_TMP)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_dirs_are_unique_and_found_again() {
        let dirs: Vec<String> = TableId::all().map(TableId::dir).collect();
        let unique: std::collections::HashSet<_> = dirs.iter().collect();
        assert_eq!(unique.len(), dirs.len());
        for t in TableId::all() {
            assert_eq!(TableId::from_dir(&t.dir()), Some(t));
        }
    }

    #[test]
    fn positions_merge_per_partition() {
        let mut m = Manifest::default();
        let pos = |topic: &str, partition, next_offset| StoredPosition {
            topic: topic.into(),
            partition,
            next_offset,
        };
        assert!(m.merge_positions(&[pos("order", 0, 5), pos("customer", 0, 2)]));
        assert!(!m.merge_positions(&[pos("order", 0, 5)]));
        assert!(m.merge_positions(&[pos("order", 0, 9)]));
        assert!(!m.merge_positions(&[pos("order", 0, 7)]));
        assert_eq!(m.positions, vec![pos("customer", 0, 2), pos("order", 0, 9)]);
    }

    #[test]
    fn manifest_round_trips_and_rejects_unknown_tables() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Manifest::load(dir.path()).unwrap(), None);
        let mut m = Manifest::default();
        m.segments_mut(TableId::Raw(RawTable::Orders))
            .push(Segment {
                file: "raw/orders/1.parquet".into(),
                rows: 3,
                bytes: 100,
                id_range: Some(("a".into(), "b".into())),
                level: 1,
            });
        m.next_segment = 2;
        m.store(dir.path(), true).unwrap();
        assert_eq!(Manifest::load(dir.path()).unwrap(), Some(m.clone()));

        m.tables.insert("raw/nope".into(), Vec::new());
        m.store(dir.path(), false).unwrap();
        assert!(matches!(Manifest::load(dir.path()), Err(Error::Corrupt(_))));
    }
}
