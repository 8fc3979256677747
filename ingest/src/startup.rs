//! Starting an ingest process: its configuration, its bus consumers (embedded log or
//! Kafka), and its HTTP server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shoplens_bus::{EmbeddedLog, EventBus, EventSource, KafkaConfig, KafkaSource};
use shoplens_contract::Service;
use shoplens_kit::config::HttpConfig;
use shoplens_kit::metrics::Metrics;
use shoplens_readmodel::config::{ReadModelConfig, ReadModelKind};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::IngestError;
use crate::clickhouse::ClickHouseStore;
use crate::embedded::EmbeddedStore;
use crate::metrics::IngestMetrics;
use crate::sink::{ReadModelStore, SinkResult};
use crate::supervisor::{Ingest, SourceFactory, SupervisorConfig};
use crate::worker::{DeadLetterTopic, WorkerConfig};

/// The ingest process's configuration (the sink and the bus are chosen by the caller: the
/// launcher passes its embedded log, the standalone binary its Kafka settings).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Run the worker in the all-in-one `shoplens` process (turn off when it runs as its
    /// own `shoplens-ingest` process; the standalone binary ignores this).
    pub enabled: bool,
    /// Where the ingest API (status, freshness, dead letters, rebuild, `/metrics`) listens.
    pub listen: SocketAddr,
    /// Consumer-group prefix; generation `g` of the read model reads as `{group}.g{g}`.
    pub group: String,
    /// The topics to project (empty: the five services' default topics).
    pub topics: Vec<String>,
    /// Every dead letter is also published to this topic (empty: not published; the
    /// read model's dead-letter table has them all the same).
    pub dead_letter_topic: String,
    pub worker: WorkerConfig,
    /// How long an old read-model generation is kept after a rebuild switched away from
    /// it, for queries still running on it.
    pub drop_old_generation_after_ms: u64,
    pub http: HttpConfig,
    /// Who may call the API: the root `auth` section, filled in by the binary that runs the
    /// worker (not configurable here).
    #[serde(skip)]
    pub auth: shoplens_kit::identity::AuthConfig,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            enabled: true,
            listen: ([127, 0, 0, 1], 8090).into(),
            group: "shoplens-ingest".into(),
            topics: Vec::new(),
            dead_letter_topic: "shop.dead-letters".into(),
            worker: WorkerConfig::default(),
            drop_old_generation_after_ms: 30_000,
            http: HttpConfig::default(),
            auth: Default::default(),
        }
    }
}

impl IngestConfig {
    /// The topics to consume: the configured ones, or every service's default topic.
    pub fn topics(&self) -> Vec<String> {
        if self.topics.is_empty() {
            Service::ALL
                .iter()
                .map(|s| s.default_topic().to_owned())
                .collect()
        } else {
            self.topics.clone()
        }
    }
}

/// Opens the configured store (creating its databases or directories when missing).
pub async fn open_store(config: &ReadModelConfig) -> SinkResult<Arc<dyn ReadModelStore>> {
    Ok(match config.kind {
        ReadModelKind::Embedded => Arc::new(EmbeddedStore::open(config.embedded.clone())?),
        ReadModelKind::Clickhouse => Arc::new(ClickHouseStore::connect(&config.clickhouse).await?),
    })
}

/// Consumers of the embedded log.
pub fn embedded_sources(log: EmbeddedLog, topics: Vec<String>) -> SourceFactory {
    Arc::new(move |group: String| {
        let log = log.clone();
        let topics = topics.clone();
        Box::pin(async move {
            let names: Vec<&str> = topics.iter().map(String::as_str).collect();
            let consumer = log.consumer(&group, &names)?;
            Ok(Box::new(consumer) as Box<dyn EventSource>)
        })
    })
}

/// Kafka consumer-group members.
pub fn kafka_sources(kafka: KafkaConfig, topics: Vec<String>) -> SourceFactory {
    Arc::new(move |group: String| {
        let kafka = kafka.clone();
        let topics = topics.clone();
        Box::pin(async move {
            let names: Vec<&str> = topics.iter().map(String::as_str).collect();
            let source = KafkaSource::subscribe(&kafka, &group, &names).await?;
            Ok(Box::new(source) as Box<dyn EventSource>)
        })
    })
}

/// A running ingest process: the workers and the API.
pub struct IngestHandle {
    addr: SocketAddr,
    ingest: Ingest,
    server: JoinHandle<std::io::Result<()>>,
    shutdown: CancellationToken,
}

impl IngestHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn ingest(&self) -> &Ingest {
        &self.ingest
    }

    /// Stops the API, then the workers (each applies what it holds first).
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.server.await;
        self.ingest.stop().await;
    }
}

/// Starts the workers on `store` and `sources`, and the API on `config.listen` (port 0
/// picks a free port). Dead letters go to the store only; see [`start_on`].
pub async fn start(
    config: &IngestConfig,
    store: Arc<dyn ReadModelStore>,
    sources: SourceFactory,
) -> Result<IngestHandle, IngestError> {
    start_on(config, store, sources, None).await
}

/// As [`start`], and dead letters are also published through `bus` to
/// `config.dead_letter_topic` (unless that is empty).
pub async fn start_on(
    config: &IngestConfig,
    store: Arc<dyn ReadModelStore>,
    sources: SourceFactory,
    bus: Option<Arc<dyn EventBus>>,
) -> Result<IngestHandle, IngestError> {
    let dead_letter_topic = match bus {
        Some(bus) if !config.dead_letter_topic.is_empty() => {
            shoplens_bus::validate_topic(&config.dead_letter_topic)
                .map_err(IngestError::DeadLetterTopic)?;
            Some(DeadLetterTopic {
                bus,
                topic: config.dead_letter_topic.clone(),
            })
        }
        _ => None,
    };
    let metrics = Metrics::new();
    let ingest_metrics = IngestMetrics::register(&metrics);
    let ingest = Ingest::start(
        store,
        sources,
        SupervisorConfig {
            group: config.group.clone(),
            worker: config.worker.clone(),
            drop_old_after: Duration::from_millis(config.drop_old_generation_after_ms),
            dead_letter_topic,
        },
        ingest_metrics,
    )
    .await?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| IngestError::Listen {
            addr: config.listen,
            source,
        })?;
    let addr = listener
        .local_addr()
        .map_err(|source| IngestError::Listen {
            addr: config.listen,
            source,
        })?;
    config
        .auth
        .check_exposure(config.listen)
        .map_err(IngestError::Refused)?;
    let verifier = shoplens_kit::identity::Verifier::new(&config.auth);
    let router = shoplens_kit::http::standard_router(
        crate::api::endpoints().with_state(ingest.clone(), &verifier),
        None,
        metrics,
        &config.http,
        &verifier,
    );
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(shoplens_kit::http::serve(
        listener,
        router,
        shutdown.clone(),
    ));
    tracing::info!(%addr, "ingest API started");
    Ok(IngestHandle {
        addr,
        ingest,
        server,
        shutdown,
    })
}
