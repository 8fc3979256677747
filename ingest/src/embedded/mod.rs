//! The embedded read model: the default back end, no servers. The same tables and
//! pre-aggregations as ClickHouse, as Parquet files on local disk that DataFusion queries, so
//! a restart loses nothing and needs no replay.
//!
//! On disk (`dir`, default `data/readmodel`):
//! ```text
//! LIVE                          the live generation's number (replaced atomically)
//! gen-0001/manifest.json        the commit point: live files per table, positions, freshness
//! gen-0001/raw/<table>/N-tag.parquet       raw event rows (RawTable::schema)
//! gen-0001/agg/<table>/N-tag.parquet       aggregate deltas or snapshots (AggTable::schema)
//! gen-0001/dead_letters/N-tag.parquet      dead letters (model::dead_letters_schema)
//! ```
//! (`N`: the manifest's file counter, 8 digits; `tag`: random per open sink.) A file is part
//! of the store only while the manifest lists it; `sink.rs` describes the commit protocol,
//! dedup and compaction.

mod dedup;
mod letters;
mod manifest;
mod segment;
mod sink;

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use sink::{EmbeddedSink, LiveFile, Snapshot};

use crate::sink::{ReadModelStore, Sink, SinkError, SinkResult};
use manifest::sync_dir;
use sink::blocking;

/// Settings of the embedded read model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmbeddedConfig {
    /// The store's directory: the `LIVE` pointer and one `gen-NNNN` directory per generation.
    pub dir: PathBuf,
    /// Sync files and directories to disk before a commit returns. Turning it off is only
    /// safe where losing the last commits on power loss is acceptable (tests, benchmarks).
    pub fsync: bool,
    /// How many files of one compaction level a raw or dead-letter table collects before they
    /// are merged into one file of the next level.
    pub compact_fan_in: usize,
    /// Files with at least this many rows are not merged any further.
    pub compact_max_rows: u64,
    /// How many delta files an aggregate table collects before they are replaced by one
    /// snapshot of the whole table (later only once the deltas hold as many rows as the
    /// last snapshot, and at the latest at 16 times this many files).
    pub aggregate_snapshot_after: usize,
    /// At most this many event ids (of whole recent files) are kept in memory for dedup;
    /// older ids are looked up in the files whose id range covers them.
    pub dedup_cache_ids: usize,
    /// Files replaced by compaction are deleted this many seconds later (or at the next
    /// open), so a reader that is scanning them can finish.
    pub retired_grace_secs: u64,
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        EmbeddedConfig {
            dir: PathBuf::from("data/readmodel"),
            fsync: true,
            compact_fan_in: 16,
            compact_max_rows: 4_000_000,
            aggregate_snapshot_after: 64,
            dedup_cache_ids: 1_000_000,
            retired_grace_secs: 60,
        }
    }
}

const LIVE: &str = "LIVE";
const LIVE_TMP: &str = "LIVE.tmp";

/// The generations of the embedded read model under one directory.
///
/// Opening a generation that is already open in this process returns the same sink, so the
/// worker and the readers share one writer and one in-memory state.
pub struct EmbeddedStore {
    config: EmbeddedConfig,
    open: Mutex<HashMap<u32, Weak<EmbeddedSink>>>,
    opening: tokio::sync::Mutex<()>,
}

impl EmbeddedStore {
    /// Creates the store's directory if missing. Generations are opened with
    /// [`ReadModelStore::open`] or [`EmbeddedStore::open_generation`].
    pub fn open(mut config: EmbeddedConfig) -> SinkResult<EmbeddedStore> {
        fs::create_dir_all(&config.dir)?;
        // Absolute, so the files a snapshot names stay valid whatever the reader's directory.
        config.dir = std::path::absolute(&config.dir)?;
        manifest_tmp_cleanup(&config.dir)?;
        Ok(EmbeddedStore {
            config,
            open: Mutex::new(HashMap::new()),
            opening: tokio::sync::Mutex::new(()),
        })
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.config.dir
    }

    fn generation_dir(&self, generation: u32) -> PathBuf {
        generation_dir(&self.config.dir, generation)
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Weak<EmbeddedSink>>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens (creating if missing) one generation, as its concrete sink (for
    /// [`EmbeddedSink::snapshot`]).
    pub async fn open_generation(&self, generation: u32) -> SinkResult<Arc<EmbeddedSink>> {
        let _one_at_a_time = self.opening.lock().await;
        if let Some(sink) = self.registry().get(&generation).and_then(Weak::upgrade) {
            return Ok(sink);
        }
        let root = self.generation_dir(generation);
        let config = self.config.clone();
        let sink = Arc::new(
            blocking(move || EmbeddedSink::open_blocking(root, config, generation)).await?,
        );
        self.registry().insert(generation, Arc::downgrade(&sink));
        Ok(sink)
    }
}

/// The directory of generation `generation` under the store's directory `dir`.
fn generation_dir(dir: &Path, generation: u32) -> PathBuf {
    dir.join(format!("gen-{generation:04}"))
}

/// The live generation under `dir` and the path of its manifest; `None` until a generation
/// has been made live. Cheap (it reads `LIVE` only): the manifest is replaced by a rename, so
/// a reader can tell from the file's identity whether [`read_snapshot`] would give anything
/// new.
pub fn live_manifest(dir: &Path) -> SinkResult<Option<(u32, PathBuf)>> {
    Ok(read_live(dir)?.map(|generation| {
        (
            generation,
            generation_dir(dir, generation).join(manifest::MANIFEST),
        )
    }))
}

/// The committed files of generation `generation` under `dir`, read without opening a
/// writer, so a reader in this or another process (the analytics server, the export
/// command) never disturbs the worker: the manifest is replaced atomically, and files it
/// stops listing stay on disk for `retired_grace_secs`.
pub fn read_snapshot(dir: &Path, generation: u32) -> SinkResult<Snapshot> {
    let root = std::path::absolute(generation_dir(dir, generation))?;
    match manifest::Manifest::load(&root)? {
        Some(m) => Ok(Snapshot::of(&root, generation, &m)),
        None => Err(SinkError::Corrupt(format!(
            "generation {generation} has no manifest in {}",
            root.display()
        ))),
    }
}

fn manifest_tmp_cleanup(dir: &Path) -> std::io::Result<()> {
    match fs::remove_file(dir.join(LIVE_TMP)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn read_live(dir: &Path) -> SinkResult<Option<u32>> {
    let path = dir.join(LIVE);
    match fs::read_to_string(&path) {
        Ok(text) => text.trim().parse().map(Some).map_err(|_| {
            SinkError::Corrupt(format!(
                "{} does not hold a generation number",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn invalid(what: String) -> SinkError {
    SinkError::Io(std::io::Error::new(std::io::ErrorKind::InvalidInput, what))
}

#[async_trait]
impl ReadModelStore for EmbeddedStore {
    async fn open(&self, generation: u32) -> SinkResult<Arc<dyn Sink>> {
        Ok(self.open_generation(generation).await?)
    }

    async fn live(&self) -> SinkResult<Option<u32>> {
        let dir = self.config.dir.clone();
        blocking(move || read_live(&dir)).await
    }

    async fn set_live(&self, generation: u32) -> SinkResult<()> {
        let dir = self.config.dir.clone();
        let gen_dir = self.generation_dir(generation);
        let fsync = self.config.fsync;
        blocking(move || {
            if !gen_dir.join(manifest::MANIFEST).is_file() {
                return Err(invalid(format!("generation {generation} does not exist")));
            }
            let tmp = dir.join(LIVE_TMP);
            let mut file = File::create(&tmp)?;
            file.write_all(format!("{generation}\n").as_bytes())?;
            if fsync {
                file.sync_all()?;
            }
            drop(file);
            fs::rename(&tmp, dir.join(LIVE))?;
            if fsync {
                sync_dir(&dir)?;
            }
            Ok(())
        })
        .await
    }

    async fn generations(&self) -> SinkResult<Vec<u32>> {
        let dir = self.config.dir.clone();
        blocking(move || {
            let mut out = Vec::new();
            for entry in fs::read_dir(&dir)? {
                let entry = entry?;
                let name = entry.file_name();
                let Some(number) = name.to_str().and_then(|n| n.strip_prefix("gen-")) else {
                    continue;
                };
                if let Ok(g) = number.parse::<u32>()
                    && entry.file_type()?.is_dir()
                {
                    out.push(g);
                }
            }
            out.sort_unstable();
            Ok(out)
        })
        .await
    }

    /// Deletes a generation's directory. Refused for the live one; a sink of it that is
    /// still open in this process must no longer be used.
    async fn drop_generation(&self, generation: u32) -> SinkResult<()> {
        if self.live().await? == Some(generation) {
            return Err(invalid(format!(
                "generation {generation} is live and cannot be dropped"
            )));
        }
        let _one_at_a_time = self.opening.lock().await;
        self.registry().remove(&generation);
        let gen_dir = self.generation_dir(generation);
        let dir = self.config.dir.clone();
        let fsync = self.config.fsync;
        blocking(move || {
            match fs::remove_dir_all(&gen_dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
                _ => {}
            }
            if fsync {
                sync_dir(&dir)?;
            }
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_has_defaults_and_rejects_unknown_fields() {
        let config: EmbeddedConfig = serde_json::from_str(r#"{"fsync": false}"#).unwrap();
        assert_eq!(
            config,
            EmbeddedConfig {
                fsync: false,
                ..EmbeddedConfig::default()
            }
        );
        assert_eq!(config.dir, PathBuf::from("data/readmodel"));
        assert!(serde_json::from_str::<EmbeddedConfig>(r#"{"fsynk": false}"#).is_err());
    }
}
