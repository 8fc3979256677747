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

        let info = RunInfo {
            pid: std::process::id(),
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
            tokio::spawn(async move {
                if let Err(e) = run_demo(urls, sim, token).await {
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
        for service in self.services {
            service.stop().await;
        }
    }
}

async fn run_demo(
    urls: shop_simulator::ShopUrls,
    sim: shop_simulator::SimConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let catalogue = shop_simulator::seed_catalogue(&urls, &sim).await?;
    tracing::info!(
        customers = catalogue.customers.len(),
        products = catalogue.products.len(),
        "demo catalogue ready; placing orders"
    );
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
