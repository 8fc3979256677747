//! Starting and stopping the analytics server: the HTTP API and the Postgres endpoint over
//! one [`Engine`].

use std::net::SocketAddr;
use std::sync::Arc;

use shoplens_readmodel::config::{ReadModelConfig, ReadModelKind};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::AnalyticsError;
use crate::api::{AppState, endpoints};
use crate::cache::ResultCache;
use crate::config::AnalyticsConfig;
use crate::dashboard::Dashboard;
use crate::embedded::EmbeddedReadModel;
use crate::engine::{Engine, QueryConfig};
use crate::isolation::{Executor, PoolMetrics};
use crate::metrics::AnalyticsMetrics;
use crate::read_model::{ReadModel, ReadModelError};
use crate::users::Users;
use shoplens_kit::identity::Verifier;

/// The read model `config` names, for reading only.
pub async fn read_model(config: &ReadModelConfig) -> Result<Arc<dyn ReadModel>, ReadModelError> {
    read_model_within(config, None).await
}

/// [`read_model`] for a process with `memory` bytes for its queries (a query worker, the
/// export command), if limited: the embedded store merges an aggregate table too large
/// for it a period at a time ([`EmbeddedReadModel::within`]).
pub async fn read_model_within(
    config: &ReadModelConfig,
    memory: Option<u64>,
) -> Result<Arc<dyn ReadModel>, ReadModelError> {
    let dir = config.embedded.dir.clone();
    Ok(match config.kind {
        ReadModelKind::Embedded => Arc::new(match memory {
            Some(bytes) => EmbeddedReadModel::within(dir, bytes),
            None => EmbeddedReadModel::new(dir),
        }),
        ReadModelKind::Clickhouse => {
            Arc::new(crate::clickhouse::ClickHouseReadModel::connect(&config.clickhouse).await?)
        }
    })
}

/// An engine over the read model `config` names.
pub async fn engine(
    config: &ReadModelConfig,
    query: &QueryConfig,
) -> Result<Engine, AnalyticsError> {
    Engine::new(read_model(config).await?, query).await
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

async fn bind(addr: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr), AnalyticsError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| AnalyticsError::Listen { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| AnalyticsError::Listen { addr, source })?;
    Ok((listener, local))
}

/// Starts the query workers (over the same read model as `engine`, with the same limits),
/// the HTTP server on `config.listen` and, if enabled, the Postgres endpoint on
/// `config.sql.listen` (port 0 picks a free port).
pub async fn start(
    config: &AnalyticsConfig,
    engine: Engine,
) -> Result<AnalyticsHandle, AnalyticsError> {
    config.check_exposure().map_err(AnalyticsError::Refused)?;
    let users = Users::new(&config.users).map_err(AnalyticsError::Refused)?;
    let verifier = Verifier::new(&config.auth);
    let shutdown = CancellationToken::new();
    let metrics = shoplens_kit::metrics::Metrics::new();
    let executor = Executor::start(
        &engine,
        &engine.read_model().config(),
        engine.config(),
        &users.names(),
        PoolMetrics::register(&metrics),
    )
    .await?;
    let cache = ResultCache::new(
        engine.config().result_cache_mb,
        &engine.interactive_context(),
        &metrics,
    );
    let engine = engine.with_result_cache(cache.clone());
    let executor = executor.with_cache(cache, &engine);
    let analytics_metrics = AnalyticsMetrics::register(&metrics);
    let state = AppState {
        executor: executor.clone(),
        users: users.clone(),
        auth: config.auth.clone(),
        session_ttl: std::time::Duration::from_secs(config.session_ttl_secs),
        dashboard: Dashboard::new(engine.clone()),
        refresh_ms: config.dashboard_refresh_ms,
        metrics: analytics_metrics.clone(),
        reconciler: crate::reconcile::Reconciler::new(&config.reconcile, &config.auth),
    };
    let router = shoplens_kit::http::standard_router(
        endpoints().with_state(state, &verifier),
        None,
        metrics,
        &config.http,
        &verifier,
    );
    let (listener, addr) = bind(config.listen).await?;
    let mut tasks = vec![tokio::spawn(shoplens_kit::http::serve(
        listener,
        router,
        shutdown.clone(),
    ))];
    let mut pg_addr = None;
    if config.sql.enabled {
        let dev = users.with_dev_password();
        if !dev.is_empty() {
            tracing::warn!(
                users = %dev.join(", "),
                "users with the built-in development password; configure analytics.users"
            );
        }
        let (listener, local) = bind(config.sql.listen).await?;
        pg_addr = Some(local);
        tasks.push(tokio::spawn(crate::pg::serve(
            listener,
            engine.clone(),
            executor.clone(),
            crate::pg::Settings {
                config: config.sql.clone(),
                users: users.clone(),
                max_result_bytes: engine.config().max_result_mb.saturating_mul(1024 * 1024),
                audit: analytics_metrics.clone(),
            },
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
