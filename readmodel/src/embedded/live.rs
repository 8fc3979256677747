//! The embedded store's generations and its live pointer: one `gen-NNNN` directory per
//! generation under the store's directory, and the `LIVE` file naming the live one,
//! replaced atomically (temp file, rename) so a reader sees the old number or the new one.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::manifest::MANIFEST;
use super::sync_dir;
use crate::{Error, Result};

const LIVE: &str = "LIVE";
const LIVE_TMP: &str = "LIVE.tmp";
const GENERATION_PREFIX: &str = "gen-";

/// The directory of generation `generation` under the store's directory `dir`.
pub fn generation_dir(dir: &Path, generation: u32) -> PathBuf {
    dir.join(format!("{GENERATION_PREFIX}{generation:04}"))
}

/// Every generation directory under `dir`, ascending.
pub fn generations(dir: &Path) -> std::io::Result<Vec<u32>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(number) = name
            .to_str()
            .and_then(|n| n.strip_prefix(GENERATION_PREFIX))
        else {
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
}

/// The live generation under `dir`; `None` until a generation has been made live.
pub fn read_live(dir: &Path) -> Result<Option<u32>> {
    let path = dir.join(LIVE);
    match fs::read_to_string(&path) {
        Ok(text) => text.trim().parse().map(Some).map_err(|_| {
            Error::Corrupt(format!(
                "{} does not hold a generation number",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Makes `generation` the live one under `dir`, atomically for readers (synced to disk when
/// `fsync`). The caller checks that the generation exists.
pub fn write_live(dir: &Path, generation: u32, fsync: bool) -> std::io::Result<()> {
    let tmp = dir.join(LIVE_TMP);
    let mut file = File::create(&tmp)?;
    file.write_all(format!("{generation}\n").as_bytes())?;
    if fsync {
        file.sync_all()?;
    }
    drop(file);
    fs::rename(&tmp, dir.join(LIVE))?;
    if fsync {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Removes a temp `LIVE` file a crash left behind.
pub fn remove_leftover_tmp(dir: &Path) -> std::io::Result<()> {
    match fs::remove_file(dir.join(LIVE_TMP)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The live generation under `dir` and the path of its manifest; `None` until a generation
/// has been made live. Cheap (it reads `LIVE` only): the manifest is replaced by a rename, so
/// a reader can tell from the file's identity whether [`super::read_snapshot`] would give
/// anything new.
pub fn live_manifest(dir: &Path) -> Result<Option<(u32, PathBuf)>> {
    Ok(read_live(dir)?
        .map(|generation| (generation, generation_dir(dir, generation).join(MANIFEST))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_live_pointer_names_a_generation_directory() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_live(dir.path()).unwrap(), None);
        assert_eq!(live_manifest(dir.path()).unwrap(), None);
        fs::create_dir(generation_dir(dir.path(), 2)).unwrap();
        fs::create_dir(generation_dir(dir.path(), 10)).unwrap();
        fs::create_dir(dir.path().join("gen-x")).unwrap();
        fs::write(dir.path().join("gen-0003"), b"a file").unwrap();
        assert_eq!(generations(dir.path()).unwrap(), vec![2, 10]);

        write_live(dir.path(), 10, true).unwrap();
        assert_eq!(read_live(dir.path()).unwrap(), Some(10));
        assert_eq!(
            live_manifest(dir.path()).unwrap(),
            Some((10, dir.path().join("gen-0010").join("manifest.json")))
        );
        fs::write(dir.path().join(LIVE), b"ten").unwrap();
        assert!(matches!(read_live(dir.path()), Err(Error::Corrupt(_))));
        fs::write(dir.path().join(LIVE_TMP), b"1").unwrap();
        remove_leftover_tmp(dir.path()).unwrap();
        remove_leftover_tmp(dir.path()).unwrap();
        assert!(!dir.path().join(LIVE_TMP).exists());
    }
}
