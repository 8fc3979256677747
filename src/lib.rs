//! The ShopLens launcher: starts the whole system in one process (the embedded default) or
//! one part of it, and hosts the operator commands.
//!
//! [`System::start`] brings up the embedded event log and the five domain services, wires
//! the order service to the customer and product services it calls, and (optionally) runs
//! demo traffic through the shop simulator. It writes `run-info.json` into the data
//! directory with every URL, so scripts and tests can find a system started on port 0.

pub mod config;

use std::sync::Arc;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use shoplens_bus::{EmbeddedLog, EmbeddedLogConfig, EventBus};
use shoplens_kit::ServiceHandle;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::Config;

/// Where a running system answers; written to `DATA_DIR/run-info.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunInfo {
    pub pid: u32,
    /// The Order Summary API and the "My Orders" page.
    pub composer: String,
    pub customer: String,
    pub product: String,
    pub order: String,
    pub payment: String,
    pub shipping: String,
}

impl RunInfo {
    pub fn shop_urls(&self) -> shop_simulator::ShopUrls {
        shop_simulator::ShopUrls {
            customer: self.customer.clone(),
            product: self.product.clone(),
            order: self.order.clone(),
            payment: self.payment.clone(),
            shipping: self.shipping.clone(),
        }
    }
}

/// The whole system running in this process.
pub struct System {
    pub info: RunInfo,
    pub log: EmbeddedLog,
    services: Vec<ServiceHandle>,
    composer: shoplens_composer::ComposerHandle,
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
        let log = EmbeddedLog::open(EmbeddedLogConfig {
            dir: config.log_dir(),
            fsync: config.bus.fsync,
        })
        .context("failed to open the embedded event log")?;
        let bus: Arc<dyn EventBus> = Arc::new(log.clone());

        let customer = customer_service::start(&config.customer, bus.clone()).await?;
        let product = product_service::start(&config.product, bus.clone()).await?;
        let upstreams = order_service::Upstreams {
            customer_url: customer.url(),
            product_url: product.url(),
            ..config.order_upstreams.clone()
        };
        let order = order_service::start(&config.order, &upstreams, bus.clone()).await?;
        let payment = payment_service::start(&config.payment, bus.clone()).await?;
        let shipping = shipping_service::start(&config.shipping, bus.clone()).await?;

        let mut composer_config = config.composer.clone();
        composer_config.services = shoplens_composer::ServiceUrls {
            customer: customer.url(),
            product: product.url(),
            order: order.url(),
            payment: payment.url(),
            shipping: shipping.url(),
        };
        // The composer evicts a cached section as soon as an event says its source changed.
        let invalidations: Option<Box<dyn shoplens_bus::EventSource>> =
            if composer_config.invalidation {
                Some(Box::new(log.consumer(
                    "composer-invalidation",
                    &[
                        "shop.orders",
                        "shop.payments",
                        "shop.shipping",
                        "shop.customers",
                        "shop.products",
                    ],
                )?))
            } else {
                None
            };
        let composer = shoplens_composer::start(&composer_config, invalidations).await?;

        let info = RunInfo {
            pid: std::process::id(),
            composer: composer.url(),
            customer: customer.url(),
            product: product.url(),
            order: order.url(),
            payment: payment.url(),
            shipping: shipping.url(),
        };
        let shutdown = CancellationToken::new();
        let demo = config.demo.enabled.then(|| {
            let urls = info.shop_urls();
            let sim = config.demo.simulator.clone();
            let token = shutdown.clone();
            let page = DemoPage {
                composer_url: info.composer.clone(),
                secret: composer_config.auth.secret.clone(),
            };
            tokio::spawn(async move {
                if let Err(e) = run_demo(urls, sim, page, token).await {
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
            services: vec![customer, product, order, payment, shipping],
            composer,
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
        self.composer.stop().await;
        for service in self.services {
            service.stop().await;
        }
    }
}

/// Where the demo's "My Orders" link points, and the key its token is signed with.
struct DemoPage {
    composer_url: String,
    secret: String,
}

async fn run_demo(
    urls: shop_simulator::ShopUrls,
    sim: shop_simulator::SimConfig,
    page: DemoPage,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let catalogue = shop_simulator::seed_catalogue(&urls, &sim).await?;
    tracing::info!(
        customers = catalogue.customers.len(),
        products = catalogue.products.len(),
        "demo catalogue ready; placing orders"
    );
    // Customer 0 is the most active one under the simulator's Zipf popularity.
    if let Some(customer) = catalogue.customers.first() {
        let token = shoplens_composer::auth::issue_token(
            &page.secret,
            &shoplens_composer::auth::Role::Customer(customer.clone()),
            std::time::Duration::from_secs(24 * 3600),
        );
        println!(
            "  My Orders page of the busiest demo customer:\n    {}/my-orders?token={token}",
            page.composer_url
        );
    }
    let report = shop_simulator::run(&urls, &sim, &catalogue, shutdown).await?;
    tracing::info!(?report, "demo traffic finished");
    Ok(())
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
