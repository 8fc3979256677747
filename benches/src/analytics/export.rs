//! The export measurement: a big report exported by `shoplens_analytics::cli::export` in a
//! child process (this binary's hidden `analytics-export` command), so its peak memory is
//! its own.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use shoplens_analytics::QueryConfig;
use shoplens_analytics::cli::ExportArgs;
use shoplens_readmodel::config::ReadModelConfig;
use tokio::time::Instant;

use super::{AnalyticsOptions, DataInfo, ExportResult, ExportRun};
use crate::child;
use crate::machine::proc_status_mib;
use crate::results::median;

/// What the parent hands the `analytics-export` child (a JSON file).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExportSpec {
    pub read_model: ReadModelConfig,
    pub report: String,
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub format: String,
    pub output: PathBuf,
    /// Where the child writes its [`ExportReport`].
    pub report_path: PathBuf,
}

/// What the child measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExportReport {
    pub rows: u64,
    pub engine_secs: f64,
    pub export_secs: f64,
    pub vm_hwm_mib: f64,
}

/// The hidden `analytics-export` command: one export as the `export` command runs it.
pub async fn run_export_child(spec: &Path) -> anyhow::Result<()> {
    // `shoplens export` runs in a process with few malloc arenas (`cli::run`); the parent
    // starts this one so (`export` below), rather than this one starting a second process,
    // so that the memory the parent samples is the exporting process's.
    let spec: ExportSpec = child::read_spec(spec)?;
    let started = Instant::now();
    let engine = shoplens_analytics::startup::engine(&spec.read_model, &QueryConfig::default())
        .await
        .context("failed to open the read model")?;
    let engine_secs = started.elapsed().as_secs_f64();
    let args = ExportArgs {
        report: Some(spec.report.clone()),
        sql: None,
        from: Some(spec.from.to_string()),
        to: Some(spec.to.to_string()),
        format: Some(spec.format.clone()),
        output: Some(spec.output.clone()),
        list: false,
    };
    let started = Instant::now();
    let rows = shoplens_analytics::cli::export(&engine, &args, &mut std::io::stderr())
        .await
        .context("the export failed")?;
    let export_secs = started.elapsed().as_secs_f64();
    let report = ExportReport {
        rows,
        engine_secs,
        export_secs,
        vm_hwm_mib: proc_status_mib("self", "VmHWM:").unwrap_or(f64::NAN),
    };
    std::fs::write(&spec.report_path, serde_json::to_vec(&report)?)
        .with_context(|| format!("failed to write {}", spec.report_path.display()))?;
    Ok(())
}

/// Exports the report over the whole span in `format`, `export_runs` times, each in a child
/// process.
pub(super) async fn export(
    opts: &AnalyticsOptions,
    data: &DataInfo,
    read_model: &ReadModelConfig,
    format: &'static str,
    scratch: &Path,
) -> anyhow::Result<ExportResult> {
    let dir = scratch.join("export");
    std::fs::create_dir_all(&dir)?;
    let mut runs = Vec::new();
    for run in 1..=opts.export_runs {
        let spec = ExportSpec {
            read_model: read_model.clone(),
            report: opts.export_report.clone(),
            from: data.first_day,
            to: data.last_day,
            format: format.to_owned(),
            output: dir.join(format!("report.{format}")),
            report_path: dir.join("report.json"),
        };
        let _ = std::fs::remove_file(&spec.report_path);
        let spec_path = dir.join("spec.json");
        child::write_spec(&spec_path, &spec)?;
        let log_path = dir.join("child.log");
        let log = std::fs::File::create(&log_path)?;
        let started = Instant::now();
        let mut child = child::spawn_with(
            &opts.exe,
            "analytics-export",
            &spec_path,
            log.into(),
            &[shoplens_analytics::isolation::pool::FEW_MALLOC_ARENAS],
        )?;
        let pid = child.id().to_string();
        let mut max_rss = 0.0f64;
        let timeout = Duration::from_secs(1800);
        let status = loop {
            if let Some(rss) = proc_status_mib(&pid, "VmRSS:") {
                max_rss = max_rss.max(rss);
            }
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if started.elapsed() > timeout {
                let _ = child.kill();
                let _ = child.wait();
                bail!("the export child did not finish within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let wall_secs = started.elapsed().as_secs_f64();
        if !status.success() {
            bail!(
                "the export child failed ({status}): {}",
                std::fs::read_to_string(&log_path)
                    .unwrap_or_default()
                    .trim()
            );
        }
        let report: ExportReport = serde_json::from_slice(
            &std::fs::read(&spec.report_path).context("the export child wrote no report")?,
        )?;
        let file_bytes = std::fs::metadata(&spec.output).map_or(0, |m| m.len());
        let _ = std::fs::remove_file(&spec.output);
        tracing::info!(
            format,
            rows = report.rows,
            secs = report.export_secs,
            peak_mib = report.vm_hwm_mib,
            "exported"
        );
        runs.push(ExportRun {
            run,
            rows: report.rows,
            export_secs: report.export_secs,
            wall_secs,
            rows_per_sec: report.rows as f64 / report.export_secs,
            peak_rss_mib: report.vm_hwm_mib,
            max_sampled_rss_mib: max_rss,
            file_bytes,
        });
    }
    let med = |f: fn(&ExportRun) -> f64| median(runs.iter().map(f).collect());
    Ok(ExportResult {
        report: opts.export_report.clone(),
        format,
        from: data.first_day,
        to: data.last_day,
        rows: runs.first().map_or(0, |r| r.rows),
        median_rows_per_sec: med(|r| r.rows_per_sec),
        median_export_secs: med(|r| r.export_secs),
        median_wall_secs: med(|r| r.wall_secs),
        peak_rss_mib: runs.iter().map(|r| r.peak_rss_mib).fold(f64::NAN, f64::max),
        file_mib: runs
            .first()
            .map_or(0.0, |r| r.file_bytes as f64 / 1_048_576.0),
        runs,
    })
}
