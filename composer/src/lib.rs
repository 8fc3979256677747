//! The API composer: one live, aggregated answer per order for the customer's "My Orders"
//! screen, composed from the five domain services.
//!
//! # Endpoints
//!
//! - `GET /api/v1/orders/{order_id}/summary` → [`model::OrderSummary`]
//! - `GET /api/v1/customers/{customer_id}/orders?limit=10&cursor=ORDER_ID` →
//!   [`model::OrderList`]: the customer's orders, newest first, each as a summary; `limit`
//!   1 to 50; `cursor` is the previous page's `next_cursor`.
//! - `GET /` and `GET /my-orders`: the "My Orders" web page (`?token=...`).
//! - `GET /health`, `GET /metrics` (Prometheus).
//!
//! Both APIs need `Authorization: Bearer <token>` of role `customer` or `admin` (the shared
//! identity scheme, `shoplens_kit::identity`). A customer reads only their own orders, an
//! admin any; the live sales figures are for admins (the ledger also for other ShopLens
//! servers, role `service`, which reconciliation uses).
//! Errors are JSON `{"error", "code", "field"?}`: 401 missing, malformed, forged or expired
//! token; 400 malformed id (checked before any downstream call); 403 another customer's
//! order; 404 unknown order; 503 (`order_unavailable`) when the order itself cannot be read
//! and nothing recent is cached.
//!
//! # The summary (a stable shape)
//!
//! ```json
//! {"order_id": "…", "degraded": false,
//!  "order":    {"status": "ok", "as_of": "2026-01-01T10:00:00.123Z", "age_ms": 12,
//!               "data": {"id", "customer_id", "status", "lines": [{"line_no", "product_id",
//!                        "quantity", "unit_price", "line_total"}], "total", "currency",
//!                        "created_at", "updated_at"}},
//!  "customer": {"status", "as_of", "age_ms", "data": {"id", "name", "email", "country"}},
//!  "products": {"status", "as_of", "age_ms", "data": [{"line_no", "product_id", "quantity",
//!               "paid_price", "line_total", "name", "description", "image_url",
//!               "current_price", "currency"}]},
//!  "payment":  {"status", "as_of", "age_ms", "data": {"id", "status", "method", "amount",
//!               "currency", "failure_reason", "created_at", "updated_at"} | null},
//!  "shipping": {"status", "as_of", "age_ms", "data": {"id", "status", "carrier", "location",
//!               "eta", "created_at", "last_update"} | null}}
//! ```
//!
//! Every section has the same envelope ([`model::Section`]): `status` is `ok` (fetched now
//! or within its TTL), `stale` (its service failed; this is the last good value, `reason`
//! says why) or `unavailable` (its service failed and nothing recent is known: `data`,
//! `as_of` and `age_ms` are null, `reason` says why). `as_of` is when the data was fetched
//! from its service, `age_ms` how long ago. `degraded` is true when any section is not `ok`.
//! `payment`/`shipping` `data` is null, with status `ok`, when the order has none yet; they
//! show the order's latest payment and shipment (by `created_at`). In `products`, a line
//! whose product could not be read has null product fields; the section's status is the
//! worst of its lines' and its `as_of` the oldest.
//!
//! # How an answer is made
//!
//! At most two round trips on the critical path: the order first (it says who the
//! customer is and which products and which payment/shipment to look for), then customer,
//! products (one batch call), payment and shipping concurrently. Each section goes through
//! its own cache ([`cache`]); each call has a timeout, and the whole request a deadline,
//! after which missing sections are reported rather than waited for. See [`downstream`] for
//! retries and [`resilience`] for circuit breakers, [`invalidation`] for event-driven
//! eviction.

pub mod cache;
pub mod compose;
pub mod config;
pub mod downstream;
pub mod invalidation;
pub mod metrics;
pub mod model;
pub mod resilience;
mod routes;

pub use routes::rules;
pub mod sales;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::{BreakerConfig, CacheConfig, ComposerConfig, RetryConfig, ServiceUrls};

/// What starting the composer fails with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid composer configuration: {0}")]
    InvalidConfig(String),
    #[error("the composer refuses to start: {0}")]
    Exposure(String),
    #[error("failed to build the composer's HTTP client: {0}")]
    Client(reqwest::Error),
    #[error("failed to bind the composer to {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// A running composer.
pub struct ComposerHandle {
    addr: SocketAddr,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

/// Starts the composer: binds `config.listen`, serves the endpoints, and, when `events` is
/// given and `config.invalidation` is on, evicts cache entries as events arrive (the source
/// should read `shop.orders`, `shop.payments` and `shop.shipping`; `shop.customers` and
/// `shop.products` are understood too). It starts reading at the end of the log.
pub async fn start(
    config: &ComposerConfig,
    events: Option<Box<dyn shoplens_bus::EventSource>>,
) -> Result<ComposerHandle, Error> {
    config.validate()?;
    if config.auth.is_dev_secret() {
        tracing::warn!(
            "the composer uses the built-in development key; set SHOPLENS_AUTH__SECRET for \
             anything but local use"
        );
    }
    let registry = shoplens_kit::metrics::Metrics::new();
    let metrics = metrics::ComposerMetrics::register(&registry);
    let composer = Arc::new(compose::Composer::new(config, metrics)?);
    let verifier = shoplens_kit::identity::Verifier::new(&config.auth);
    let router = shoplens_kit::http::standard_router(
        routes::endpoints().with_state(composer.clone(), &verifier),
        routes::openapi(),
        registry,
        &config.http,
        &verifier,
    );
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| Error::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    let mut tasks = Vec::new();
    let token = shutdown.clone();
    tasks.push(tokio::spawn(async move {
        if let Err(e) = shoplens_kit::http::serve(listener, router, token).await {
            tracing::error!(error = %e, "composer HTTP server failed");
        }
    }));
    match events {
        Some(source) if config.invalidation => {
            tasks.push(tokio::spawn(invalidation::run(
                source,
                composer.clone(),
                shutdown.clone(),
            )));
        }
        Some(_) => tracing::info!("cache invalidation by events is turned off"),
        None => tracing::info!("no event source: cache entries live out their TTL"),
    }
    tracing::info!(%addr, "composer started");
    Ok(ComposerHandle {
        addr,
        shutdown,
        tasks,
    })
}

impl ComposerHandle {
    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A token that stops the composer when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops accepting requests, lets in-flight ones finish, stops the invalidation task.
    pub async fn stop(self) {
        self.shutdown.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
    }
}
