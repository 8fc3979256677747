//! The scenarios' child processes: this binary started with one of its hidden commands and
//! a JSON spec file, so that what a scenario measures of the child (its memory) is its own.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::Context;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Writes the spec a child is started with.
pub fn write_spec(path: &Path, spec: &impl Serialize) -> anyhow::Result<()> {
    std::fs::write(path, serde_json::to_vec_pretty(spec)?)
        .with_context(|| format!("failed to write {}", path.display()))
}

/// Reads the spec this process, a child, was started with.
pub fn read_spec<T: DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let bytes =
        std::fs::read(path).with_context(|| format!("failed to read {}", path.display()))?;
    Ok(serde_json::from_slice(&bytes)?)
}

/// Starts `exe command --spec spec`, logging warnings only, to `stderr`.
pub fn spawn(exe: &Path, command: &str, spec: &Path, stderr: Stdio) -> anyhow::Result<Child> {
    spawn_with(exe, command, spec, stderr, &[])
}

/// [`spawn`] with these environment variables set too.
pub fn spawn_with(
    exe: &Path,
    command: &str,
    spec: &Path,
    stderr: Stdio,
    envs: &[(&str, &str)],
) -> anyhow::Result<Child> {
    Command::new(exe)
        .arg(command)
        .arg("--spec")
        .arg(spec)
        .env("RUST_LOG", "warn")
        .envs(envs.iter().copied())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .with_context(|| format!("failed to start {}", exe.display()))
}
