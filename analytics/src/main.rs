//! `shoplens-analytics`: the analytics server as its own process, for deployments where the
//! read model is in ClickHouse (the all-in-one `shoplens` process runs the same server),
//! and the `export` command for batch jobs.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use serde::{Deserialize, Serialize};
use shoplens_analytics::AnalyticsConfig;
use shoplens_analytics::cli::ExportArgs;
use shoplens_readmodel::config::ReadModelConfig;

#[derive(Parser)]
#[command(
    version,
    about = "ShopLens analytics: sales dashboard, SQL for BI tools, report exports"
)]
struct Cli {
    /// A TOML config file (layered over the defaults, under SHOPLENS_* environment variables).
    #[arg(long, env = "SHOPLENS_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Parse the command line, load the configuration as the command would (defaults, file,
    /// environment) and validate it, then exit without doing anything: 0 and a summary
    /// without secrets when it is valid, non-zero and the error otherwise.
    #[arg(long, global = true, hide = true)]
    check_config: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the dashboard, the SQL endpoints and exports (the default).
    Serve,
    /// Export a named report or an ad-hoc query into a CSV or Parquet file. Exit code 0
    /// when the file is complete, 1 when the export failed, 2 for a bad request.
    Export(ExportArgs),
    /// Read a password from stdin and print its hash for `analytics.users`.
    HashPassword,
}

/// Everything the process reads from its config layers.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ProcessConfig {
    /// Log JSON lines instead of human-readable text.
    log_json: bool,
    /// Who may call the server: bearer tokens' key and the shop's identity provider.
    auth: shoplens_kit::identity::AuthConfig,
    /// The read model to serve (the one the ingest worker writes).
    read_model: ReadModelConfig,
    analytics: AnalyticsConfig,
}

fn main() -> anyhow::Result<()> {
    // Query workers are this program started with `query-worker`.
    shoplens_analytics::isolation::run_if_requested();
    tokio::runtime::Runtime::new()
        .context("failed to start the runtime")?
        .block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut config: ProcessConfig = shoplens_kit::config::load(cli.config.as_deref())?;
    config.analytics.auth = config.auth.clone();
    shoplens_kit::telemetry::init_tracing(config.log_json);
    // Secrets (JWT key, passwords) show as *** in the configuration's Debug.
    tracing::debug!(?config, "configuration");
    if cli.check_config {
        shoplens_readmodel::config::validate_read_model(&config.read_model)
            .context("invalid configuration")?;
        config
            .analytics
            .check_exposure()
            .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        println!("configuration ok: read model {:?}", config.read_model.kind);
        return Ok(());
    }
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let engine =
                shoplens_analytics::startup::engine(&config.read_model, &config.analytics.query)
                    .await
                    .context("failed to open the read model")?;
            let handle = shoplens_analytics::start(&config.analytics, engine)
                .await
                .context("failed to start the analytics server")?;
            tracing::info!(url = handle.url(), sql = ?handle.pg_addr(), "analytics server running");
            shoplens_kit::shutdown_signal().await;
            tracing::info!("shutting down");
            handle.stop().await;
        }
        Command::HashPassword => {
            let mut password = String::new();
            std::io::stdin()
                .read_line(&mut password)
                .context("failed to read the password from stdin")?;
            let password = password.trim_end_matches(['\r', '\n']);
            anyhow::ensure!(
                password.len() >= 12,
                "use a password of at least 12 characters"
            );
            println!("{}", shoplens_analytics::users::hash(password));
        }
        Command::Export(args) => {
            let code =
                shoplens_analytics::cli::run(&config.read_model, &config.analytics.query, &args)
                    .await;
            std::process::exit(code as i32);
        }
    }
    Ok(())
}
