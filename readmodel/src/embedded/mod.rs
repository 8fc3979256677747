//! The embedded store's files, as its writer and its readers both see them.
//!
//! On disk (`dir`, default `data/readmodel`):
//! ```text
//! LIVE                          the live generation's number (replaced atomically)
//! gen-0001/manifest.json        the commit point: live files per table, positions, freshness
//! gen-0001/raw/<table>/N-tag.parquet       raw event rows (RawTable::schema)
//! gen-0001/agg/<table>/N-tag.parquet       aggregate deltas or snapshots (AggTable::schema)
//! gen-0001/dead_letters/N-tag.parquet      dead letters (tables::dead_letters_schema)
//! ```
//! (`N`: the manifest's file counter, 8 digits; `tag`: random per open writer.) A file is part
//! of the store only while the manifest lists it. [`live`] is the `LIVE` pointer and the
//! generation directories, [`manifest`] the commit point's format, [`snapshot`] what a reader
//! scans: the files of one committed state, read without opening a writer.

pub mod live;
pub mod manifest;
pub mod snapshot;

use std::fs::File;
use std::path::Path;

pub use live::live_manifest;
pub use snapshot::{LiveFile, Snapshot, read_snapshot};

/// Makes a directory's entries (new, renamed or removed files) durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}
