//! Starting and stopping the analytics server: the HTTP API and the Postgres endpoint over
//! one [`Engine`].

use std::net::SocketAddr;
use std::sync::Arc;

use shoplens_readmodel::config::{ReadModelConfig, ReadModelKind};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::{AppState, routes};
use crate::config::AnalyticsConfig;
use crate::dashboard::Dashboard;
use crate::embedded::EmbeddedReadModel;
use crate::engine::{Engine, QueryConfig, QueryError};
use crate::isolation::{Executor, PoolMetrics};
use crate::metrics::AnalyticsMetrics;
use crate::read_model::{ReadModel, ReadModelError};

/// The read model `config` names, for reading only.
pub async fn read_model(config: &ReadModelConfig) -> Result<Arc<dyn ReadModel>, ReadModelError> {
    Ok(match config.kind {
        ReadModelKind::Embedded => Arc::new(EmbeddedReadModel::new(config.embedded.dir.clone())),
        ReadModelKind::Clickhouse => {
            Arc::new(crate::clickhouse::ClickHouseReadModel::connect(&config.clickhouse).await?)
        }
    })
}

/// An engine over the read model `config` names.
pub async fn engine(config: &ReadModelConfig, query: &QueryConfig) -> Result<Engine, QueryError> {
    Engine::new(read_model(config).await?, query).await
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the query workers: {0}")]
    Workers(QueryError),
}

/// A running analytics server.
pub struct AnalyticsHandle {
    addr: SocketAddr,
    pg_addr: Option<SocketAddr>,
    engine: Engine,
    executor: Executor,
    tasks: Vec<JoinHandle<std::io::Result<()>>>,
    shutdown: CancellationToken,
}

impl AnalyticsHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The dashboard and the HTTP API.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The Postgres wire protocol endpoint, when enabled.
    pub fn pg_addr(&self) -> Option<SocketAddr> {
        self.pg_addr
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// What runs the ad-hoc queries (the query workers).
    pub fn executor(&self) -> &Executor {
        &self.executor
    }

    /// Stops accepting, lets running requests finish.
    pub async fn stop(self) {
        self.shutdown.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

async fn bind(addr: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr), StartError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Listen { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| StartError::Listen { addr, source })?;
    Ok((listener, local))
}

/// Starts the query workers (over the same read model as `engine`, with the same limits),
/// the HTTP server on `config.listen` and, if enabled, the Postgres endpoint on
/// `config.sql.listen` (port 0 picks a free port).
pub async fn start(
    config: &AnalyticsConfig,
    engine: Engine,
) -> Result<AnalyticsHandle, StartError> {
    let shutdown = CancellationToken::new();
    let metrics = shoplens_kit::metrics::Metrics::new();
    let executor = Executor::start(
        &engine,
        &engine.read_model().config(),
        engine.config(),
        &config.sql.user,
        PoolMetrics::register(&metrics),
    )
    .await
    .map_err(StartError::Workers)?;
    let state = AppState {
        executor: executor.clone(),
        dashboard: Dashboard::new(engine.clone()),
        refresh_ms: config.dashboard_refresh_ms,
        metrics: AnalyticsMetrics::register(&metrics),
        reconciler: crate::reconcile::Reconciler::new(&config.reconcile),
    };
    let router = shoplens_kit::http::standard_router(routes(state), None, metrics, &config.http);
    let (listener, addr) = bind(config.listen).await?;
    let mut tasks = vec![tokio::spawn(shoplens_kit::http::serve(
        listener,
        router,
        shutdown.clone(),
    ))];
    let mut pg_addr = None;
    if config.sql.enabled {
        if config.sql.password == crate::config::DEV_PASSWORD {
            tracing::warn!(
                "the Postgres endpoint uses the built-in development password; set \
                 SHOPLENS_ANALYTICS__SQL__PASSWORD"
            );
        }
        let (listener, local) = bind(config.sql.listen).await?;
        pg_addr = Some(local);
        tasks.push(tokio::spawn(crate::pg::serve(
            listener,
            engine.clone(),
            executor.clone(),
            config.sql.clone(),
            engine.config().max_result_mb.saturating_mul(1024 * 1024),
            shutdown.clone(),
        )));
    }
    tracing::info!(%addr, ?pg_addr, back_end = engine.back_end(), "analytics server started");
    Ok(AnalyticsHandle {
        addr,
        pg_addr,
        engine,
        executor,
        tasks,
        shutdown,
    })
}
