//! The ShopLens launcher: starts the whole system in one process (the embedded default) or
//! one part of it, and hosts the operator commands.
//!
//! [`System::start`] brings up the event bus and the five domain services (or the ones
//! `only` names), wires the order service to the customer and product services it calls,
//! and (optionally) runs demo traffic through the shop simulator. It writes `run-info.json` into the data
//! directory with every URL, so scripts and tests can find a system started on port 0.

pub mod config;
mod demo;

use std::sync::Arc;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use shoplens_bus::{EmbeddedLog, EmbeddedLogConfig, EventBus, KafkaBus};
use shoplens_ingest::startup::{IngestHandle, embedded_sources, kafka_sources};
use shoplens_kit::ServiceHandle;
use shoplens_kit::balance::ReplicaUrls;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::{BusKind, Component, Config};

/// Where a running system answers; written to `DATA_DIR/run-info.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunInfo {
    pub pid: u32,
    /// The components running in this process (`only`); the URLs of the others are where
    /// this process reaches them (its configuration; of several replicas, the first).
    #[serde(default = "Component::all")]
    pub components: Vec<Component>,
    /// The Order Summary API and the "My Orders" page (empty when it does not run here).
    pub composer: String,
    pub customer: String,
    pub product: String,
    pub order: String,
    pub payment: String,
    pub shipping: String,
    /// The ingest worker's API (status, freshness, dead letters, rebuild, metrics), when it
    /// runs in this process.
    #[serde(default)]
    pub ingest: Option<String>,
    /// The analytics server: sales dashboard (`/dashboard`), SQL and export API.
    #[serde(default)]
    pub analytics: Option<String>,
    /// The analytics server's Postgres wire protocol endpoint, as a connection URL
    /// (`postgres://USER@HOST:PORT/shoplens`, which `psql` takes as it is).
    #[serde(default)]
    pub analytics_sql: Option<String>,
}

impl RunInfo {
    /// The services' URLs, and `token` for the simulator's calls (a service token).
    pub fn shop_urls(&self, token: String) -> shop_simulator::ShopUrls {
        shop_simulator::ShopUrls {
            token,
            customer: self.customer.clone(),
            product: self.product.clone(),
            order: self.order.clone(),
            payment: self.payment.clone(),
            shipping: self.shipping.clone(),
        }
    }
}

/// The whole system running in this process: the five services, the composer and the
/// ingest worker, on the embedded log and read model or on Kafka and ClickHouse.
pub struct System {
    pub info: RunInfo,
    /// The embedded event log (`None` when the services publish to Kafka).
    pub log: Option<EmbeddedLog>,
    /// The domain services running in this process.
    services: Vec<ServiceHandle>,
    /// The composer, unless `only` leaves it out.
    composer: Option<shoplens_composer::ComposerHandle>,
    /// The ingest worker, unless it runs as its own process (`ingest.enabled = false`).
    pub ingest: Option<IngestHandle>,
    /// The analytics server, unless disabled (`analytics.enabled = false`).
    pub analytics: Option<shoplens_analytics::AnalyticsHandle>,
    /// The threads the ingest worker and the analytics server run on.
    read_side: Option<tokio::runtime::Runtime>,
    demo: Option<JoinHandle<()>>,
    shutdown: CancellationToken,
}

impl System {
    /// Starts everything `config` asks for.
    pub async fn start(config: Config) -> anyhow::Result<System> {
        let config = config.resolve();
        std::fs::create_dir_all(&config.data_dir).with_context(|| {
            format!(
                "failed to create data directory {}",
                config.data_dir.display()
            )
        })?;
        let topics = config.topics();
        let (bus, log): (Arc<dyn EventBus>, Option<EmbeddedLog>) = match config.bus.kind {
            BusKind::Embedded => {
                let log = EmbeddedLog::open(EmbeddedLogConfig {
                    dir: config.log_dir(),
                    fsync: config.bus.fsync,
                })
                .context("failed to open the embedded event log")?;
                (Arc::new(log.clone()), Some(log))
            }
            BusKind::Kafka => {
                let names: Vec<&str> = topics.iter().map(String::as_str).collect();
                let bus = KafkaBus::connect(&config.bus.kafka, &names)
                    .await
                    .context("failed to connect to Kafka")?;
                (Arc::new(bus), None)
            }
        };
        // Readers of the bus (the composer's invalidation, the ingest worker) get their
        // consumers from here, whichever bus it is.
        let sources = match &log {
            Some(log) => embedded_sources(log.clone(), topics.clone()),
            None => kafka_sources(config.bus.kafka.clone(), topics.clone()),
        };

        // `only` picks the components to run here; the others are reached at their
        // configured URLs (`order_upstreams`, `composer.services`).
        let runs = config.components();
        let here = |c: Component| runs.contains(&c);
        // The demo's history runs the services on a clock it moves through the past: all
        // five here, and the composer the demo runs beside.
        let demo_plan = demo::DemoPlan::new(
            &config.demo,
            &config.data_dir,
            Component::ALL.into_iter().all(here),
        );
        let deps = shoplens_kit::Deps {
            bus: bus.clone(),
            clock: demo_plan.clock.clone(),
        };
        let customer = match here(Component::Customer) {
            true => Some(customer_service::start(&config.customer, deps.clone()).await?),
            false => None,
        };
        let product = match here(Component::Product) {
            true => Some(product_service::start(&config.product, deps.clone()).await?),
            false => None,
        };
        let local_or = |svc: &Option<ServiceHandle>, urls: &ReplicaUrls| {
            svc.as_ref()
                .map_or_else(|| urls.clone(), |svc| svc.url().into())
        };
        let order = match here(Component::Order) {
            true => {
                let upstreams = order_service::Upstreams {
                    customer_url: local_or(&customer, &config.order_upstreams.customer_url),
                    product_url: local_or(&product, &config.order_upstreams.product_url),
                    ..config.order_upstreams.clone()
                };
                Some(order_service::start(&config.order, &upstreams, deps.clone()).await?)
            }
            false => None,
        };
        let payment = match here(Component::Payment) {
            true => Some(payment_service::start(&config.payment, deps.clone()).await?),
            false => None,
        };
        let shipping = match here(Component::Shipping) {
            true => Some(shipping_service::start(&config.shipping, deps.clone()).await?),
            false => None,
        };
        // Where each service answers: here, or where the composer is told it is.
        let remote = &config.composer.services;
        let urls = shoplens_composer::ServiceUrls {
            customer: local_or(&customer, &remote.customer),
            product: local_or(&product, &remote.product),
            order: local_or(&order, &remote.order),
            payment: local_or(&payment, &remote.payment),
            shipping: local_or(&shipping, &remote.shipping),
        };

        let mut composer_config = config.composer.clone();
        composer_config.services = urls.clone();
        let composer = if here(Component::Composer) {
            // The composer evicts a cached section as soon as an event says its source
            // changed.
            let invalidations: Option<Box<dyn shoplens_bus::EventSource>> =
                if composer_config.invalidation {
                    Some(sources("composer-invalidation".to_owned()).await?)
                } else {
                    None
                };
            Some(shoplens_composer::start(&composer_config, invalidations).await?)
        } else {
            None
        };

        // The read side (ingest worker, analytics server) runs on threads of its own, at a
        // lower priority: no read-side work runs on the threads that serve the shop, and a
        // busy read side yields the CPU to them.
        let read_side = read_side_runtime(config.read_side_nice)?;
        let ingest = if config.ingest.enabled {
            let (read_model, ingest) = (config.read_model.clone(), config.ingest.clone());
            let started = read_side.spawn(async move {
                let store = shoplens_ingest::startup::open_store(&read_model)
                    .await
                    .context("failed to open the read model")?;
                shoplens_ingest::startup::start_on(&ingest, store, sources, Some(bus))
                    .await
                    .context("failed to start the ingest worker")
            });
            Some(
                started
                    .await
                    .context("the ingest worker's start panicked")??,
            )
        } else {
            None
        };

        // Reconciliation compares the read model with this process's composer's ledger.
        let mut analytics_config = config.analytics.clone();
        let reconcile = &mut analytics_config.reconcile;
        if let Some(composer) = &composer
            && reconcile.composer_url.is_empty()
        {
            reconcile.composer_url = composer.url();
        }
        let analytics = if config.analytics.enabled {
            // In one process the worker knows how many events it has not applied yet.
            let lag: Option<shoplens_analytics::engine::LagSource> = ingest.as_ref().map(|h| {
                let ingest = h.ingest().clone();
                Arc::new(move || ingest.status().live.lag_events) as _
            });
            let read_model = config.read_model.clone();
            let started = read_side.spawn(async move {
                let mut engine =
                    shoplens_analytics::startup::engine(&read_model, &analytics_config.query)
                        .await
                        .context("failed to open the read model for the analytics server")?;
                if let Some(lag) = lag {
                    engine = engine.with_lag_source(lag);
                }
                shoplens_analytics::start(&analytics_config, engine)
                    .await
                    .context("failed to start the analytics server")
            });
            Some(
                started
                    .await
                    .context("the analytics server's start panicked")??,
            )
        } else {
            None
        };

        let first = |urls: &ReplicaUrls| urls.first().unwrap_or_default().to_owned();
        let info = RunInfo {
            pid: std::process::id(),
            components: runs.clone(),
            composer: composer.as_ref().map(|c| c.url()).unwrap_or_default(),
            customer: first(&urls.customer),
            product: first(&urls.product),
            order: first(&urls.order),
            payment: first(&urls.payment),
            shipping: first(&urls.shipping),
            ingest: ingest.as_ref().map(IngestHandle::url),
            analytics: analytics.as_ref().map(|a| a.url()),
            analytics_sql: analytics.as_ref().and_then(|a| a.pg_addr()).map(|a| {
                format!(
                    "postgres://{}@{a}/{}",
                    config
                        .analytics
                        .users
                        .first()
                        .map_or("shoplens", |u| u.name.as_str()),
                    shoplens_analytics::engine::CATALOG
                )
            }),
        };
        let shutdown = CancellationToken::new();
        // The demo runs beside the composer (its "My Orders" link points there).
        let demo = (config.demo.enabled && composer.is_some()).then(|| {
            let urls = info.shop_urls(config.service_token("demo"));
            let page = demo::DemoPage {
                composer_url: info.composer.clone(),
                secret: config.auth.secret.clone(),
            };
            let task = demo::run(urls, config.demo.clone(), demo_plan, page, shutdown.clone());
            tokio::spawn(async move {
                if let Err(e) = task.await {
                    tracing::warn!(error = %e, "demo traffic stopped");
                }
            })
        });
        let info_path = config.data_dir.join("run-info.json");
        std::fs::write(&info_path, serde_json::to_vec_pretty(&info)?)
            .with_context(|| format!("failed to write {}", info_path.display()))?;
        Ok(System {
            info,
            log,
            services: [customer, product, order, payment, shipping]
                .into_iter()
                .flatten()
                .collect(),
            composer,
            ingest,
            analytics,
            read_side: Some(read_side),
            demo,
            shutdown,
        })
    }

    /// Stops demo traffic, then every service (each drains its in-flight requests and its
    /// relay's current batch).
    pub async fn stop(self) {
        self.shutdown.cancel();
        if let Some(demo) = self.demo {
            let _ = demo.await;
        }
        if let Some(composer) = self.composer {
            composer.stop().await;
        }
        if let Some(analytics) = self.analytics {
            analytics.stop().await;
        }
        for service in self.services {
            service.stop().await;
        }
        // Last, so it applies what the relays published while draining.
        if let Some(ingest) = self.ingest {
            ingest.stop().await;
        }
        if let Some(read_side) = self.read_side {
            // Everything on it has stopped; its idle threads end in the background.
            read_side.shutdown_background();
        }
    }
}

/// The runtime of the read side: two threads at `nice` (and whatever they start, such as
/// query workers and the Kafka client's threads, inherits it).
fn read_side_runtime(nice: i32) -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("read-side")
        .on_thread_start(move || shoplens_analytics::isolation::lower_priority(nice))
        .enable_all()
        .build()
        .context("failed to start the read side's runtime")
}

pub use shoplens_kit::shutdown_signal;
