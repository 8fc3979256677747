//! The `export` command (in `shoplens` and `shoplens-analytics`): a named report or an
//! ad-hoc query into a CSV or Parquet file, for batch jobs.
//!
//! Cron-friendly: progress goes to stderr (a bar on a terminal, a line per 10% otherwise),
//! the row count to stdout, and the exit code says what happened ([`ExitCode`]). The file
//! is written beside its final name and renamed at the end, so a failed run never leaves a
//! file that looks whole.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use chrono::NaiveDate;
use shoplens_readmodel::config::ReadModelConfig;

use crate::AnalyticsError;
use crate::dashboard::{BadParam, DateRange};
use crate::engine::{Engine, QueryConfig};
use crate::export::{self, ExportFormat};

/// What the export command was asked to do (the flags of both binaries).
#[derive(Debug, Clone, clap::Args)]
pub struct ExportArgs {
    /// A named report (see `--list`); or use `--sql`.
    #[arg(long, conflicts_with = "sql", required_unless_present_any = ["sql", "list"])]
    pub report: Option<String>,
    /// An ad-hoc read-only query instead of a named report.
    #[arg(long)]
    pub sql: Option<String>,
    /// First day of the report (YYYY-MM-DD, inclusive); default: 30 days before `--to`.
    #[arg(long)]
    pub from: Option<String>,
    /// Last day of the report (YYYY-MM-DD, inclusive); default: the newest data's day.
    #[arg(long)]
    pub to: Option<String>,
    /// `csv` or `parquet`; default: from the output file's extension, else csv.
    #[arg(long)]
    pub format: Option<String>,
    /// The output file.
    #[arg(short = 'o', long, required_unless_present = "list")]
    pub output: Option<PathBuf>,
    /// List the named reports and exit.
    #[arg(long)]
    pub list: bool,
}

/// The command's exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    /// The file is complete.
    Ok = 0,
    /// The query or the output failed (read model unavailable, time limit, disk full).
    Failed = 1,
    /// The request is wrong (unknown report, bad dates or format, forbidden SQL); retrying
    /// will not help.
    Usage = 2,
}

impl From<BadParam> for AnalyticsError {
    fn from(e: BadParam) -> Self {
        AnalyticsError::Usage(format!("--{}: {}", e.field, e.message))
    }
}

impl AnalyticsError {
    /// The export command's exit code for this error: bad arguments or SQL are the
    /// caller's to fix (usage), anything else a failure.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            AnalyticsError::Usage(_)
            | AnalyticsError::Forbidden(_)
            | AnalyticsError::Invalid { .. } => ExitCode::Usage,
            _ => ExitCode::Failed,
        }
    }
}

/// The named reports, one per line.
pub fn report_list() -> String {
    export::REPORTS
        .iter()
        .map(|r| format!("{:<22} {}\n", r.name, r.description))
        .collect()
}

/// Runs this export again in a child process with few malloc arenas, unless this process
/// has them (`MALLOC_ARENA_MAX` set, as for query workers, which run the HTTP exports);
/// returns the child's exit code. glibc reads the setting only when a process starts.
/// With an arena per busy thread, the freed buffers of a long export are spread over many
/// arenas and the peak resident memory grows with the data: whole-span exports at 100M
/// events peaked at 175 MiB (CSV) and 202 MiB (Parquet), and at 130 and 161 MiB with two
/// arenas, in about the same time (benches/RESULTS.md).
/// `None`: go on in this process (the setting is there, or this is not glibc, or the child
/// could not be started).
fn rerun_with_few_malloc_arenas() -> Option<i32> {
    let (var, value) = crate::isolation::pool::FEW_MALLOC_ARENAS;
    if !cfg!(all(target_os = "linux", target_env = "gnu")) || std::env::var_os(var).is_some() {
        return None;
    }
    let exe = std::env::current_exe().ok()?;
    let status = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(var, value)
        .status()
        .ok()?;
    // Ended by a signal: no code; an export that did not finish is a failure.
    Some(status.code().unwrap_or(ExitCode::Failed as i32))
}

/// The whole command as both binaries run it: lists the reports, or opens the read model,
/// exports, prints the row count (stdout) or the error (stderr); returns the exit code.
pub async fn run(read_model: &ReadModelConfig, query: &QueryConfig, args: &ExportArgs) -> ExitCode {
    if args.list {
        print!("{}", report_list());
        return ExitCode::Ok;
    }
    if let Some(code) = rerun_with_few_malloc_arenas() {
        std::process::exit(code);
    }
    let result = async {
        // An export's memory is its spilling pool's.
        let memory = (query.export_memory_limit_mb as u64).saturating_mul(1024 * 1024);
        let model = crate::startup::read_model_within(read_model, Some(memory)).await?;
        let engine = crate::engine::Engine::new(model, query).await?;
        export(&engine, args, &mut std::io::stderr()).await
    }
    .await;
    match result {
        Ok(rows) => {
            println!("{rows}");
            ExitCode::Ok
        }
        Err(e) => {
            eprintln!("export failed: {e}");
            e.exit_code()
        }
    }
}

/// Runs the export; returns the rows written. Progress goes to `progress`.
pub async fn export(
    engine: &Engine,
    args: &ExportArgs,
    progress: &mut (dyn Write + Send),
) -> Result<u64, AnalyticsError> {
    let output = args
        .output
        .clone()
        .ok_or_else(|| AnalyticsError::Usage("--output is required".into()))?;
    let format = match args.format.as_deref() {
        Some(f) => ExportFormat::parse("format", f)?,
        None if output.extension().is_some_and(|e| e == "parquet") => ExportFormat::Parquet,
        None => ExportFormat::Csv,
    };
    let (sql, label) = match (&args.report, &args.sql) {
        (Some(name), None) => {
            let report = export::report(name)?;
            let to_default = match args.to {
                Some(_) => NaiveDate::MIN,
                None => crate::dashboard::Dashboard::default_to(&engine.freshness().await?),
            };
            let range = DateRange::parse(args.from.as_deref(), args.to.as_deref(), to_default)?;
            (
                report.sql(&range),
                format!("{} {}..{}", report.name, range.from, range.to),
            )
        }
        (None, Some(sql)) => (sql.clone(), "query".to_owned()),
        _ => return Err(AnalyticsError::Usage("give --report or --sql".into())),
    };
    // Planning first: a bad query fails before any file is created.
    // The operator who runs it reads the read model's files anyway.
    let stream = engine.export(crate::privacy::Pii::Visible, &sql).await?;
    let file_name = output.file_name().ok_or_else(|| {
        AnalyticsError::Usage(format!("--output {} is not a file", output.display()))
    })?;
    let tmp = output.with_file_name(format!(".{}.partial", file_name.to_string_lossy()));
    let failed =
        |e: &dyn std::fmt::Display| AnalyticsError::Output(format!("{}: {e}", tmp.display()));
    let file = std::fs::File::create(&tmp).map_err(|e| failed(&e))?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    let mut bar = Progress::new(progress, label);
    let result = export::write_stream(stream, format, &mut out, |rows| bar.update(rows)).await;
    let rows = match result {
        Ok(rows) => rows,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    drop(out);
    std::fs::rename(&tmp, &output).map_err(|e| failed(&e))?;
    bar.finish(rows, &output);
    Ok(rows)
}

/// Progress on stderr: a redrawn line on a terminal, a line every 10 s otherwise.
struct Progress<'a> {
    out: &'a mut (dyn Write + Send),
    label: String,
    tty: bool,
    started: std::time::Instant,
    last: std::time::Instant,
}

impl<'a> Progress<'a> {
    fn new(out: &'a mut (dyn Write + Send), label: String) -> Progress<'a> {
        let now = std::time::Instant::now();
        Progress {
            out,
            label,
            tty: std::io::stderr().is_terminal(),
            started: now,
            last: now,
        }
    }

    fn line(&self, rows: u64) -> String {
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        format!(
            "exporting {}: {rows} rows, {:.0} rows/s",
            self.label,
            rows as f64 / secs
        )
    }

    fn update(&mut self, rows: u64) {
        let every = if self.tty { 0.2 } else { 10.0 };
        if self.last.elapsed().as_secs_f64() < every {
            return;
        }
        self.last = std::time::Instant::now();
        let line = self.line(rows);
        let _ = if self.tty {
            write!(self.out, "\r{line}\x1b[K")
        } else {
            writeln!(self.out, "{line}")
        };
    }

    fn finish(&mut self, rows: u64, output: &std::path::Path) {
        let line = self.line(rows);
        let _ = if self.tty {
            writeln!(self.out, "\r{line}\x1b[K")
        } else {
            writeln!(self.out, "{line}")
        };
        let _ = writeln!(self.out, "wrote {}", output.display());
    }
}
