//! The embedded read model: the default back end, no servers. The same tables and
//! pre-aggregations as ClickHouse, as Parquet files on local disk that DataFusion queries, so
//! a restart loses nothing and needs no replay.
//!
//! The files on disk (`dir`, default `data/readmodel`: the `LIVE` pointer, one `gen-NNNN`
//! directory per generation, its `manifest.json` and Parquet segments) are laid out as
//! [`shoplens_readmodel::embedded`] describes, shared with the readers; `sink.rs` describes
//! the commit protocol, dedup and compaction.

mod dedup;
mod letters;
mod segment;
mod sink;

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use async_trait::async_trait;
use shoplens_readmodel::config::EmbeddedConfig;
use shoplens_readmodel::embedded::live::{self, generation_dir};
use shoplens_readmodel::embedded::manifest::MANIFEST;
use shoplens_readmodel::embedded::sync_dir;

pub use sink::EmbeddedSink;

use crate::IngestError;
use crate::sink::{ReadModelStore, Sink, SinkResult};
use sink::blocking;

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
        live::remove_leftover_tmp(&config.dir)?;
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

fn invalid(what: String) -> IngestError {
    IngestError::Io(std::io::Error::new(std::io::ErrorKind::InvalidInput, what))
}

#[async_trait]
impl ReadModelStore for EmbeddedStore {
    async fn open(&self, generation: u32) -> SinkResult<Arc<dyn Sink>> {
        Ok(self.open_generation(generation).await?)
    }

    async fn live(&self) -> SinkResult<Option<u32>> {
        let dir = self.config.dir.clone();
        blocking(move || Ok(live::read_live(&dir)?)).await
    }

    async fn set_live(&self, generation: u32) -> SinkResult<()> {
        let dir = self.config.dir.clone();
        let gen_dir = self.generation_dir(generation);
        let fsync = self.config.fsync;
        blocking(move || {
            if !gen_dir.join(MANIFEST).is_file() {
                return Err(invalid(format!("generation {generation} does not exist")));
            }
            Ok(live::write_live(&dir, generation, fsync)?)
        })
        .await
    }

    async fn generations(&self) -> SinkResult<Vec<u32>> {
        let dir = self.config.dir.clone();
        blocking(move || Ok(live::generations(&dir)?)).await
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
