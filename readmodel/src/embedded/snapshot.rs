//! What a reader of the embedded store scans: the files of one committed state of a
//! generation, read from its manifest without opening a writer, so a reader in this or
//! another process (the analytics server, a query worker, the export command) never
//! disturbs the worker.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use shoplens_contract::tables::RawTable;

use super::live::generation_dir;
use super::manifest::{Manifest, TableId};
use crate::freshness::Freshness;
use crate::tables::AggTable;
use crate::{Error, Result};

/// One live Parquet file of a [`Snapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveFile {
    /// Absolute path.
    pub path: PathBuf,
    pub rows: u64,
    pub bytes: u64,
}

/// The files that make up one committed state of a generation, for readers that scan them
/// (the analytics server registers them with DataFusion). Files stay on disk for at least
/// the configured grace period after a later commit replaced them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The generation these files belong to.
    pub generation: u32,
    /// Every raw table (all seven present), its files in the table's [`RawTable::schema`].
    pub raw: HashMap<RawTable, Vec<LiveFile>>,
    /// Every aggregate table, its files in [`AggTable::schema`]. These are *deltas*: a key
    /// may appear in several files and its sums add up (`GROUP BY` key, `SUM` the rest);
    /// [`crate::aggregate::Aggregates`] merges them.
    pub aggregates: BTreeMap<AggTable, Vec<LiveFile>>,
    /// Dead letters, in [`crate::tables::dead_letters_schema`].
    pub dead_letters: Vec<LiveFile>,
    pub freshness: Freshness,
    /// Grows whenever the files change (the manifest's segment counter): two snapshots of
    /// one generation with the same version hold the same data, so an answer computed from
    /// one is the answer of the other (the analytics server's result cache relies on it).
    pub version: u64,
}

impl Snapshot {
    /// The files `manifest` lists, under the generation directory `root`.
    pub fn of(root: &Path, generation: u32, manifest: &Manifest) -> Snapshot {
        let files = |t: TableId| {
            manifest
                .segments(t)
                .iter()
                .map(|s| LiveFile {
                    path: root.join(&s.file),
                    rows: s.rows,
                    bytes: s.bytes,
                })
                .collect::<Vec<_>>()
        };
        Snapshot {
            generation,
            raw: RawTable::ALL
                .into_iter()
                .map(|t| (t, files(TableId::Raw(t))))
                .collect(),
            aggregates: AggTable::ALL
                .into_iter()
                .map(|t| (t, files(TableId::Agg(t))))
                .collect(),
            dead_letters: files(TableId::DeadLetters),
            freshness: manifest.freshness,
            version: manifest.next_segment,
        }
    }
}

/// The committed files of generation `generation` under `dir`: the manifest is replaced
/// atomically, and files it stops listing stay on disk for `retired_grace_secs`.
pub fn read_snapshot(dir: &Path, generation: u32) -> Result<Snapshot> {
    let root = std::path::absolute(generation_dir(dir, generation))?;
    match Manifest::load(&root)? {
        Some(m) => Ok(Snapshot::of(&root, generation, &m)),
        None => Err(Error::Corrupt(format!(
            "generation {generation} has no manifest in {}",
            root.display()
        ))),
    }
}
