//! `shoplens-ingest`: the ingest worker as its own process, for deployments where the
//! services publish to Kafka (the all-in-one `shoplens` process runs the same worker on its
//! embedded log). Also the operator's `rebuild` command.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

use shoplens_bus::{EventBus, KafkaBus, KafkaConfig};
use shoplens_ingest::startup::{IngestConfig, kafka_sources, open_store, start_on};
use shoplens_readmodel::config::ReadModelConfig;

#[derive(Parser)]
#[command(
    version,
    about = "ShopLens ingest worker: Kafka events into the read model"
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
    /// Consume the services' topics into the read model (the default).
    Run,
    /// Rebuild the read model of a running worker from the retained log, beside the live
    /// one, and switch to it when it has caught up; shows progress. Exit code 0 once the
    /// new generation is live, 1 if the rebuild failed.
    Rebuild {
        /// The worker's API.
        #[arg(long, default_value = "http://127.0.0.1:8090")]
        url: String,
    },
}

/// Everything the process reads from its config layers.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ProcessConfig {
    /// Log JSON lines instead of human-readable text.
    log_json: bool,
    /// Who may call the ingest API (rebuilds and dead letters: administrators).
    auth: shoplens_kit::identity::AuthConfig,
    ingest: IngestConfig,
    /// The Kafka cluster the services publish to.
    kafka: KafkaConfig,
    read_model: ReadModelConfig,
}

impl ProcessConfig {
    /// Rejects what cannot work, without connecting to anything.
    fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            !self.kafka.brokers.trim().is_empty(),
            "kafka.brokers must name at least one broker"
        );
        let mut topics = self.ingest.topics();
        if !self.ingest.dead_letter_topic.is_empty() {
            topics.push(self.ingest.dead_letter_topic.clone());
        }
        for topic in &topics {
            shoplens_bus::validate_topic(topic)?;
        }
        Ok(shoplens_readmodel::config::validate_read_model(
            &self.read_model,
        )?)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut config: ProcessConfig = shoplens_kit::config::load(cli.config.as_deref())?;
    config.ingest.auth = config.auth.clone();
    shoplens_kit::telemetry::init_tracing(config.log_json);
    // Secrets (JWT key, passwords) show as *** in the configuration's Debug.
    tracing::debug!(?config, "configuration");
    if cli.check_config {
        config.validate().context("invalid configuration")?;
        config
            .auth
            .check_exposure(config.ingest.listen)
            .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        println!(
            "configuration ok: read model {:?}, topics {}",
            config.read_model.kind,
            config.ingest.topics().join(",")
        );
        return Ok(());
    }
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => {
            let store = open_store(&config.read_model)
                .await
                .context("failed to open the read model")?;
            let sources = kafka_sources(config.kafka.clone(), config.ingest.topics());
            let dead_letters = &config.ingest.dead_letter_topic;
            let bus: Option<Arc<dyn EventBus>> = if dead_letters.is_empty() {
                None
            } else {
                let bus = KafkaBus::connect(&config.kafka, &[dead_letters])
                    .await
                    .context("failed to connect to Kafka")?;
                Some(Arc::new(bus))
            };
            let handle = start_on(&config.ingest, store, sources, bus)
                .await
                .context("failed to start the ingest worker")?;
            tracing::info!(api = handle.url(), "ingest worker running");
            shoplens_kit::shutdown_signal().await;
            tracing::info!("shutting down: applying what is buffered");
            handle.stop().await;
        }
        Command::Rebuild { url } => {
            let mut err = std::io::stderr();
            let admin = shoplens_kit::identity::Identity::new(
                "operator",
                shoplens_kit::identity::Role::Admin,
            );
            shoplens_ingest::client::rebuild(&url, &config.auth.issue(&admin), &mut err).await?;
        }
    }
    Ok(())
}
