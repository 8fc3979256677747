//! Starting a domain service: bind, open and migrate its database, serve its routes with
//! the standard stack, and run its outbox relay; stopping it gracefully.

use std::net::SocketAddr;
use std::sync::Arc;

use shoplens_bus::EventBus;
use shoplens_contract::Service;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::access::Routes;
use crate::clock::Clock;
use crate::config::ServiceConfig;
use crate::db::Db;
use crate::identity::{ServiceToken, Verifier};
use crate::metrics::Metrics;
use crate::outbox::{Outbox, Relay};

/// What a service crate tells the kit about itself.
pub struct ServiceSpec {
    pub service: Service,
    /// The service's own migrations for both databases (`shoplens_kit::migrations!()`),
    /// numbered from 100.
    pub migrations: crate::db::Migrations,
}

/// What a service is given rather than builds: the bus its relay publishes to, and the
/// clock it stamps its records and events with. A bus alone is a service on the system
/// time.
#[derive(Clone)]
pub struct Deps {
    pub bus: Arc<dyn EventBus>,
    pub clock: Clock,
}

impl From<Arc<dyn EventBus>> for Deps {
    fn from(bus: Arc<dyn EventBus>) -> Deps {
        Deps {
            bus,
            clock: Clock::system(),
        }
    }
}

/// What a service's handlers get.
#[derive(Clone)]
pub struct ServiceContext {
    pub db: Db,
    /// The time of this service's records and events.
    pub clock: Clock,
    pub outbox: Outbox,
    pub metrics: Arc<Metrics>,
    /// Checks the tokens of calls to this service.
    pub verifier: Verifier,
    /// Signs this service's own calls to other services.
    pub token: ServiceToken,
}

/// A running service.
pub struct ServiceHandle {
    pub service: Service,
    addr: SocketAddr,
    db: Db,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    /// The relay's `outbox_relay_leader` gauge (0 without a relay).
    relay_leader: prometheus_client::metrics::gauge::Gauge,
}

/// Starts a service. `routes` builds the service's own routes (from its endpoints, with
/// their access rules: `Endpoints::with_state`) and (optionally) its OpenAPI document from
/// the context; the kit adds the standard endpoints and middleware.
pub async fn start(
    spec: ServiceSpec,
    config: &ServiceConfig,
    deps: impl Into<Deps>,
    routes: impl FnOnce(ServiceContext) -> (Routes, Option<serde_json::Value>),
) -> Result<ServiceHandle, crate::Error> {
    let Deps { bus, clock } = deps.into();
    let name = spec.service.as_str();
    config
        .auth
        .check_exposure(config.listen)
        .map_err(|reason| crate::Error::Exposure {
            service: name.to_owned(),
            reason,
        })?;
    let db = Db::open(
        &config.database_url,
        &crate::db::DbOptions {
            max_connections: config.database_max_connections,
        },
        spec.migrations,
    )
    .await?;
    let topic = if config.topic.is_empty() {
        spec.service.default_topic()
    } else {
        &config.topic
    };
    shoplens_bus::validate_topic(topic)?;
    let outbox = Outbox::new(topic);
    let metrics = Metrics::new();
    let verifier = Verifier::new(&config.auth);
    let ctx = ServiceContext {
        db: db.clone(),
        clock,
        outbox: outbox.clone(),
        metrics: metrics.clone(),
        verifier: verifier.clone(),
        token: ServiceToken::new(&config.auth, name),
    };
    let (own_routes, openapi) = routes(ctx);
    let router = crate::http::standard_router(
        own_routes,
        openapi,
        metrics.clone(),
        &config.http,
        &verifier,
    );
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| crate::Error::Bind {
            service: name.to_owned(),
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    let mut tasks = Vec::new();
    let token = shutdown.clone();
    tasks.push(tokio::spawn(async move {
        if let Err(e) = crate::http::serve(listener, router, token).await {
            tracing::error!(error = %e, service = name, "HTTP server failed");
        }
    }));
    let mut relay_leader = prometheus_client::metrics::gauge::Gauge::default();
    if config.relay.enabled {
        let relay = Relay::new(db.clone(), &outbox, bus, config.relay.clone(), &metrics);
        relay_leader = relay.leader();
        tasks.push(tokio::spawn(relay.run(shutdown.clone())));
    }
    tracing::info!(service = name, %addr, topic, "service started");
    Ok(ServiceHandle {
        service: spec.service,
        addr,
        db,
        shutdown,
        tasks,
        relay_leader,
    })
}

impl ServiceHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Whether this replica's relay is the one publishing the service's outbox now (on
    /// SQLite, whether it has a relay).
    pub fn publishes_outbox(&self) -> bool {
        self.relay_leader.get() == 1
    }

    /// A token that stops the service when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops accepting requests, lets in-flight ones and the relay's batch finish, closes
    /// the database.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.wait().await;
    }

    /// Stops at once, as a crash would: no request finishes, the relay neither drains nor
    /// stamps what it published, and its connections (with a PostgreSQL lock session) close.
    /// For fault tests and benchmarks of a replica dying.
    pub async fn abort(self) {
        for task in &self.tasks {
            task.abort();
        }
        for task in self.tasks {
            let _ = task.await;
        }
        self.db.close().await;
    }

    /// Waits until the service has stopped (after its token was cancelled).
    pub async fn wait(self) {
        for task in self.tasks {
            let _ = task.await;
        }
        self.db.close().await;
    }
}

/// Resolves when the process is asked to stop (Ctrl-C or SIGTERM).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
