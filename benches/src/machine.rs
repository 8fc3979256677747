//! What a result was measured on: machine, versions, commit and date, recorded with every
//! result file so numbers from different machines are never compared unknowingly.

use std::path::Path;
use std::process::Command;

use serde::Serialize;

/// The environment of one benchmark run.
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    /// The machine's online logical CPUs (not only those this process may use: the
    /// analytics server's CPU plan may restrict the benchmark's own process).
    pub cores: usize,
    /// CPU model from `/proc/cpuinfo`, if known.
    pub cpu_model: Option<String>,
    /// `MemTotal` from `/proc/meminfo`, in MiB.
    pub memory_mib: Option<u64>,
    /// Kernel (`/proc/sys/kernel/osrelease`).
    pub os: String,
    /// `rustc --version` at run time (the compiler in PATH).
    pub rustc: String,
    /// `git rev-parse --short HEAD`, with `-dirty` when the work tree has changes.
    pub git_commit: Option<String>,
    /// Build profile of this binary.
    pub profile: &'static str,
    /// When the run started (UTC, RFC 3339).
    pub date: String,
}

/// Versions of what ran besides the machine: the servers a scenario used, and crates.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Versions {
    /// `SELECT version()` of the ClickHouse server, when one ran.
    pub clickhouse_server: Option<String>,
    /// The Kafka broker, when one ran.
    pub broker: Option<String>,
    /// Crate versions from the workspace's Cargo.lock (rdkafka-sys carries librdkafka's).
    pub crates: Vec<(String, String)>,
}

impl Machine {
    pub fn detect() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_owned());
        let memory_mib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find(|l| l.starts_with("MemTotal:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|kb| kb.parse::<u64>().ok())
            })
            .map(|kb| kb / 1024);
        let os = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| format!("{} {}", std::env::consts::OS, s.trim()))
            .unwrap_or_else(|_| std::env::consts::OS.to_owned());
        let repo = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
        let git_commit = run("git", &["-C", repo, "rev-parse", "--short", "HEAD"]).map(|c| {
            let dirty = run(
                "git",
                &["-C", repo, "status", "--porcelain", "--untracked-files=no"],
            )
            .is_some_and(|s| !s.is_empty());
            if dirty { format!("{c}-dirty") } else { c }
        });
        Machine {
            cores: online_cpus().unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1)
            }),
            cpu_model,
            memory_mib,
            os,
            rustc: run("rustc", &["--version"]).unwrap_or_else(|| "unknown".into()),
            git_commit,
            profile: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            },
            date: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        }
    }

    /// The commit, or "unknown" outside a git checkout.
    pub fn commit(&self) -> &str {
        self.git_commit.as_deref().unwrap_or("unknown")
    }

    /// The CPU model, or "unknown CPU".
    pub fn cpu(&self) -> &str {
        self.cpu_model.as_deref().unwrap_or("unknown CPU")
    }

    /// The memory in MiB, or "unknown".
    pub fn memory(&self) -> String {
        self.memory_mib.map_or("unknown".into(), |v| v.to_string())
    }
}

fn run(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The versions of the `wanted` crates in the workspace's Cargo.lock, in lock-file order.
pub fn crate_versions(wanted: &[&str]) -> Vec<(String, String)> {
    let lock = include_str!("../../Cargo.lock");
    let mut out = Vec::new();
    let mut name: Option<&str> = None;
    for line in lock.lines() {
        if let Some(n) = line.strip_prefix("name = ") {
            name = Some(n.trim_matches('"'));
        } else if let (Some(v), Some(n)) = (line.strip_prefix("version = "), name.take())
            && wanted.contains(&n)
        {
            out.push((n.to_owned(), v.trim_matches('"').to_owned()));
        }
    }
    out
}

/// CPU seconds (user + system) this process has used, from `/proc/self/stat` (USER_HZ 100).
pub fn process_cpu_secs() -> f64 {
    stat_cpu_secs("/proc/self/stat")
}

/// CPU seconds (user + system) process `pid` has used so far; NaN if unknown.
pub fn pid_cpu_secs(pid: u32) -> f64 {
    stat_cpu_secs(&format!("/proc/{pid}/stat"))
}

/// CPU seconds the whole machine has been busy so far (every CPU's user, nice, system, irq,
/// softirq and steal time, from `/proc/stat`); NaN if unknown.
pub fn machine_busy_secs() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return f64::NAN;
    };
    let Some(cpu) = stat.lines().next() else {
        return f64::NAN;
    };
    let ticks: Vec<f64> = cpu
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy: f64 = [0, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|i| ticks.get(*i))
        .sum();
    busy / 100.0
}

fn stat_cpu_secs(path: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(path) else {
        return f64::NAN;
    };
    // Fields after the command name (which is in parentheses and may hold spaces).
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return f64::NAN;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    match (ticks(11), ticks(12)) {
        (Some(u), Some(s)) => (u + s) / 100.0,
        _ => f64::NAN,
    }
}

/// A `/proc/PID/status` figure in MiB (`VmHWM`, `VmRSS`); `pid` may be `self`.
pub fn proc_status_mib(pid: &str, field: &str) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// The machine's online CPUs, from `/sys/devices/system/cpu/online` (`0-3,6`).
fn online_cpus() -> Option<usize> {
    count_cpu_list(
        std::fs::read_to_string("/sys/devices/system/cpu/online")
            .ok()?
            .trim(),
    )
}

/// The number of CPUs in a kernel CPU list such as `0-3,6` (None if it is not one).
fn count_cpu_list(list: &str) -> Option<usize> {
    let mut count = 0;
    for part in list.split(',').filter(|p| !p.is_empty()) {
        count += match part.split_once('-') {
            Some((a, b)) => {
                b.parse::<usize>()
                    .ok()?
                    .checked_sub(a.parse::<usize>().ok()?)?
                    + 1
            }
            None => {
                part.parse::<usize>().ok()?;
                1
            }
        };
    }
    (count > 0).then_some(count)
}

/// `/proc/loadavg` (1, 5, 15 min): other work on the machine shares its cores.
pub fn load_average() -> Option<String> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let parts: Vec<&str> = text.split_whitespace().take(3).collect();
    Some(parts.join(" "))
}

/// Bytes of the files under `path` (a read model's size on disk).
pub fn dir_bytes(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_count_ranges_and_singles() {
        assert_eq!(count_cpu_list("0-1"), Some(2));
        assert_eq!(count_cpu_list("0-3,6"), Some(5));
        assert_eq!(count_cpu_list("0"), Some(1));
        assert_eq!(count_cpu_list(""), None);
        assert_eq!(count_cpu_list("3-1"), None);
        assert_eq!(count_cpu_list("x"), None);
    }

    #[test]
    fn lock_file_versions_are_found() {
        let v = crate_versions(&["rdkafka-sys", "tokio"]);
        assert!(v.iter().any(|(n, _)| n == "rdkafka-sys"), "{v:?}");
        assert!(v.iter().any(|(n, _)| n == "tokio"), "{v:?}");
    }
}
