//! What every scenario's results share: the files they are written to (`RESULTS.md`, a
//! section per scenario, and `results/`), aims, medians, and the pieces of a section that
//! read alike in every scenario (the environment lines, aims, notes, number formats). It
//! knows no scenario: each renders itself through [`crate::report::Report`].

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;

use crate::machine::Machine;

/// The title of the comparison section, the first of `RESULTS.md`.
pub const COMPARISON: &str = "Comparison: API Composer vs CQRS";

/// Replaces (or appends) the `## {title}` section of `RESULTS.md` in `dir`.
pub fn write_section(dir: &Path, title: &str, body: &str) -> anyhow::Result<()> {
    let path = dir.join("RESULTS.md");
    let old = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        "# ShopLens benchmark results\n\nWritten by `cargo run --release -p shoplens-benches \
         -- all`; each scenario rewrites its own section.\n"
            .to_owned()
    });
    let heading = format!("## {title}\n");
    let mut out = String::new();
    let mut rest = old.as_str();
    if let Some(at) = rest.find(&heading) {
        out.push_str(&rest[..at]);
        rest = &rest[at + heading.len()..];
        rest = rest.find("\n## ").map_or("", |next| &rest[next + 1..]);
    } else if title == COMPARISON
        && let Some(first) = rest.find("\n## ")
    {
        // The comparison leads the file: it is what the other sections explain.
        out.push_str(&rest[..first + 1]);
        rest = &rest[first + 1..];
    } else {
        out.push_str(rest.trim_end());
        out.push_str("\n\n");
        rest = "";
    }
    out.push_str(&heading);
    out.push('\n');
    out.push_str(body.trim_end());
    out.push_str("\n\n");
    out.push_str(rest);
    std::fs::write(&path, out.trim_end().to_owned() + "\n")
        .with_context(|| format!("failed to write {}", path.display()))
}

/// Where the machine-readable results and charts go: `results/` under the output directory
/// (whose `RESULTS.md` holds the tables).
pub fn data_dir(dir: &Path) -> PathBuf {
    dir.join("results")
}

/// What a scenario aims at, and whether the run met it.
#[derive(Clone, Debug, Serialize)]
pub struct Aim {
    /// What is aimed at, e.g. "export memory under 200 MB". Written as `aim`, the key the
    /// results files have always used.
    #[serde(rename = "aim")]
    pub name: String,
    /// The threshold, where the section shows it in a column of its own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    pub measured: String,
    pub met: bool,
}

/// The median of the finite values (NaN when there are none).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The nearest-rank `q` quantile of `v` (NaN when it is empty).
pub fn quantile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

/// Milliseconds with two decimals, `n/a` when there is no figure.
pub fn ms(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.2}")
    } else {
        "n/a".into()
    }
}

/// A rate (or any large figure) without decimals, `n/a` when there is no figure.
pub fn rate(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.0}")
    } else {
        "n/a".into()
    }
}

/// Bytes as MiB with one decimal.
pub fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / 1_048_576.0)
}

/// `Command: ...`, the first line of a section: how to write it again.
pub fn command_line(command: &str, smoke: bool) -> String {
    let smoke = if smoke {
        " (smoke run: sizes too small for figures)"
    } else {
        ""
    };
    format!("Command: `{command}`{smoke}\n\n")
}

/// The lines a section opens with: the command, when and from which commit it ran, and on
/// what machine, whose cores `sharing` (what the scenario runs beside the benchmark) share.
pub fn environment(command: &str, smoke: bool, m: &Machine, sharing: &str) -> String {
    let mut t = command_line(command, smoke);
    let _ = writeln!(
        t,
        "- Date {}, commit {}, {} build, {}.",
        m.date,
        m.commit(),
        m.profile,
        m.rustc
    );
    let _ = writeln!(
        t,
        "- Machine: {} cores ({}), {} MiB memory, {}; {sharing} share these cores.",
        m.cores,
        m.cpu(),
        m.memory(),
        m.os
    );
    t
}

/// `name version` of each crate, comma-separated.
pub fn crate_list(crates: &[(String, String)]) -> String {
    let crates: Vec<String> = crates.iter().map(|(n, v)| format!("{n} {v}")).collect();
    crates.join(", ")
}

/// `Aims:` and a line per aim, met or not.
pub fn aims_list(aims: &[Aim]) -> String {
    let mut t = "Aims:\n".to_owned();
    for aim in aims {
        let met = if aim.met { "met" } else { "not met" };
        let _ = writeln!(t, "- **{met}** — {}: {}", aim.name, aim.measured);
    }
    t
}

/// How the figures were measured, a line per note, as `results/{stem}.json` has them too.
pub fn notes_list(stem: &str, notes: &[impl AsRef<str>]) -> String {
    let mut t = format!("How it is measured (also in `results/{stem}.json`, `notes`):\n");
    for note in notes {
        let _ = writeln!(t, "- {}", note.as_ref());
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank_and_medians_skip_what_is_not_finite() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 50.0);
        assert_eq!(quantile(&v, 0.99), 99.0);
        assert_eq!(quantile(&v, 1.0), 100.0);
        assert!(quantile(&[], 0.5).is_nan());
        assert_eq!(median(vec![3.0, 1.0, 2.0, 10.0]), 2.5);
        assert_eq!(median(vec![3.0, f64::NAN, 1.0]), 2.0);
    }

    #[test]
    fn a_section_is_replaced_and_others_kept() {
        let dir = tempfile::tempdir().unwrap();
        write_section(dir.path(), "Composer", "one").unwrap();
        write_section(dir.path(), "Ingest", "two").unwrap();
        write_section(dir.path(), "Composer", "three").unwrap();
        let text = std::fs::read_to_string(dir.path().join("RESULTS.md")).unwrap();
        assert!(text.starts_with("# ShopLens benchmark results"), "{text}");
        assert!(text.contains("## Composer\n\nthree\n"), "{text}");
        assert!(text.contains("## Ingest\n\ntwo\n"), "{text}");
        assert!(!text.contains("one"), "{text}");
        assert_eq!(text.matches("## Composer").count(), 1);
    }
}
