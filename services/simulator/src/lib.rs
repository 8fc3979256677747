//! A deterministic, seeded shop simulator: creates a catalogue (products with prices in
//! categories) and customers, then drives realistic order lifecycles through the five
//! services' REST APIs.
//!
//! Every random decision comes from the seed: the catalogue's content from `(seed, item)`,
//! and everything about order number `k` (customer, lines, payment outcome, route) from
//! `(seed, k)` alone, so two runs with the same seed make the same decisions whatever the
//! interleaving of concurrent orders. Popularity of products and customers is Zipf-like;
//! a "festival sale" multiplies the rate and sends most lines to a few hot products.
//!
//! - [`seed_catalogue`] creates the customers and products (idempotently);
//! - [`run`] drives order lifecycles and returns a [`SimReport`];
//! - [`run_history`] creates a shop's past ([`HistoryConfig`]) with the services' clock
//!   pinned to each order's moment;
//! - [`Planner`] gives the decisions for one order without any I/O;
//! - [`ZipfPicker`] is a seeded Zipf sampler, also used by the benchmarks.

mod catalogue;
mod client;
mod history;
mod lifecycle;
mod pace;
mod plan;
mod zipf;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use catalogue::{NewCustomer, NewProduct, customer_for, product_for, seed_catalogue};
pub use client::CallError;
pub use history::{HistoryConfig, ShopClock, SystemClock, is_festival, run_history};
pub use pace::Pacer;
pub use plan::{FinalStatus, OrderPlan, PlannedLine, Planner};
pub use zipf::ZipfPicker;

/// What the simulator's public functions fail with: a configuration or catalogue that makes
/// no sense, or a seeding call the services refused. (A failed call during a run abandons its
/// order and is counted, not returned.)
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("invalid simulator configuration: {0}")]
    InvalidConfig(String),
    #[error("the catalogue needs at least one customer and one product")]
    EmptyCatalogue,
    #[error("the token is not a valid header value")]
    Token,
    #[error("failed to build the HTTP client: {0}")]
    Client(reqwest::Error),
    #[error("failed to create {what}: {source}")]
    Seed { what: String, source: CallError },
}

/// Base URLs of the five services, like `http://127.0.0.1:8081` (no trailing path), and the
/// bearer token the simulator's calls carry (the services answer only tokens of role
/// `service` or `admin`).
#[derive(Clone, Serialize, Deserialize)]
pub struct ShopUrls {
    pub customer: String,
    pub product: String,
    pub order: String,
    pub payment: String,
    pub shipping: String,
    /// A secret: never logged.
    #[serde(default, skip_serializing)]
    pub token: String,
}

impl std::fmt::Debug for ShopUrls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShopUrls")
            .field("customer", &self.customer)
            .field("product", &self.product)
            .field("order", &self.order)
            .field("payment", &self.payment)
            .field("shipping", &self.shipping)
            .field("token", &"***")
            .finish()
    }
}

/// What to simulate, and how fast.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SimConfig {
    /// Seed of every random choice.
    pub seed: u64,
    /// Customers to create.
    pub customers: usize,
    /// Products to create.
    pub products: usize,
    /// Stop after this many orders (None = until shut down).
    pub orders: Option<u64>,
    /// Orders started per second (0 = as fast as possible).
    pub rate_per_sec: f64,
    /// Order lifecycles in flight at once.
    pub concurrency: usize,
    /// Zipf exponent for product and customer popularity.
    pub zipf_exponent: f64,
    /// The "festival sale" burst mode.
    pub festival: FestivalConfig,
    /// Pause between lifecycle steps of one order, milliseconds (0 = none). Lets a demo show
    /// live status changes.
    pub step_delay_ms: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 0,
            customers: 200,
            products: 100,
            orders: Some(500),
            rate_per_sec: 20.0,
            concurrency: 16,
            zipf_exponent: 1.1,
            festival: FestivalConfig::default(),
            step_delay_ms: 0,
        }
    }
}

/// A festival sale: while enabled (for the whole run), orders start `rate_multiplier` times
/// as fast and most lines pick from a few hot products.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FestivalConfig {
    /// Whether the sale is on.
    pub enabled: bool,
    /// Factor on `rate_per_sec` during the sale.
    pub rate_multiplier: f64,
    /// How many products are on sale (chosen from the seed); during the festival most lines
    /// pick from these.
    pub hot_products: usize,
    /// Share of order lines (0..=1) that pick a hot product during the sale.
    pub hot_share: f64,
}

impl Default for FestivalConfig {
    fn default() -> Self {
        FestivalConfig {
            enabled: false,
            rate_multiplier: 10.0,
            hot_products: 10,
            hot_share: 0.8,
        }
    }
}

impl SimConfig {
    /// Orders started per second, festival included (0 = as fast as possible).
    pub fn effective_rate(&self) -> f64 {
        if self.festival.enabled {
            self.rate_per_sec * self.festival.rate_multiplier
        } else {
            self.rate_per_sec
        }
    }

    /// Rejects values that make no sense (negative rates, a share outside 0..=1, ...).
    pub fn validate(&self) -> Result<(), SimError> {
        let invalid = |reason: String| Err(SimError::InvalidConfig(reason));
        let finite_non_negative = |name: &str, v: f64| {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                invalid(format!("{name} must be a finite number >= 0, not {v}"))
            }
        };
        finite_non_negative("rate_per_sec", self.rate_per_sec)?;
        finite_non_negative("zipf_exponent", self.zipf_exponent)?;
        finite_non_negative("festival.rate_multiplier", self.festival.rate_multiplier)?;
        if !(0.0..=1.0).contains(&self.festival.hot_share) {
            return invalid(format!(
                "festival.hot_share must be between 0 and 1, not {}",
                self.festival.hot_share
            ));
        }
        if self.concurrency < 1 {
            return invalid("concurrency must be at least 1".into());
        }
        Ok(())
    }
}

/// Ids of what [`seed_catalogue`] created, issued by the services; index `i` is item `i`
/// (index 0 is the most popular).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Catalogue {
    pub customers: Vec<String>,
    pub products: Vec<String>,
}

/// What a [`run`] did. For a run that was not shut down early,
/// `orders_placed + (errors before placing) = orders started`, and every placed order ends
/// `Delivered`, `Cancelled` or abandoned with an error.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct SimReport {
    /// Orders created (`POST /orders` answered 201).
    pub orders_placed: u64,
    /// Payment attempts that came back `Failed`.
    pub payments_failed: u64,
    /// Orders moved to `Paid`.
    pub orders_paid: u64,
    /// Orders moved to `Cancelled` (at once, after a declined payment, or after a refund).
    pub orders_cancelled: u64,
    /// Payments refunded.
    pub refunds: u64,
    /// Shipments created.
    pub shipments: u64,
    /// Shipment location updates posted.
    pub location_updates: u64,
    /// Orders moved to `Delivered`.
    pub orders_delivered: u64,
    /// Orders abandoned because a call failed.
    pub errors: u64,
    /// Ids of the placed orders, in order number order (not completion order). Kept only
    /// for a bounded run (`orders` set), so an endless demo does not grow without limit.
    pub order_ids: Vec<String>,
}

impl SimReport {
    /// Adds another report's counts and ids to this one.
    pub fn merge(&mut self, other: SimReport) {
        self.orders_placed += other.orders_placed;
        self.payments_failed += other.payments_failed;
        self.orders_paid += other.orders_paid;
        self.orders_cancelled += other.orders_cancelled;
        self.refunds += other.refunds;
        self.shipments += other.shipments;
        self.location_updates += other.location_updates;
        self.orders_delivered += other.orders_delivered;
        self.errors += other.errors;
        self.order_ids.extend(other.order_ids);
    }
}

/// Drives order lifecycles until `config.orders` were started and finished, or `shutdown`
/// is cancelled (then it stops starting new orders and lets in-flight ones finish their
/// current step).
///
/// A failed call abandons that order and counts in `errors`; only a config or catalogue
/// that makes no sense is an `Err`.
pub async fn run(
    urls: &ShopUrls,
    config: &SimConfig,
    catalogue: &Catalogue,
    shutdown: CancellationToken,
) -> Result<SimReport, SimError> {
    config.validate()?;
    if catalogue.customers.is_empty() || catalogue.products.is_empty() {
        return Err(SimError::EmptyCatalogue);
    }
    let planner = Arc::new(Planner::new(
        config,
        catalogue.customers.len(),
        catalogue.products.len(),
    ));
    let driver = Arc::new(lifecycle::Driver::new(
        urls,
        config,
        catalogue.clone(),
        shutdown.clone(),
        Arc::new(SystemClock),
    )?);
    let semaphore = Arc::new(Semaphore::new(config.concurrency));
    let mut pacer = Pacer::new(config.effective_rate(), tokio::time::Instant::now());
    let mut tasks = JoinSet::new();
    // Order ids by order number, sorted at the end (lifecycles finish in any order).
    let mut ids: Vec<(u64, String)> = Vec::new();
    let mut report = SimReport::default();
    tracing::info!(
        seed = config.seed,
        orders = ?config.orders,
        rate = config.effective_rate(),
        festival = config.festival.enabled,
        run = %driver.run_id(),
        "simulation started"
    );

    let mut k: u64 = 0;
    while config.orders.is_none_or(|n| k < n) {
        let due = pacer.schedule(k, tokio::time::Instant::now());
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep_until(due) => {}
        }
        let permit = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            // The semaphore is never closed.
            permit = semaphore.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        while let Some(done) = tasks.try_join_next() {
            collect(done, config.orders.is_some(), &mut ids, &mut report);
        }
        let plan = planner.plan(k);
        let driver = driver.clone();
        tasks.spawn(async move {
            let outcome = driver.drive(plan, None).await;
            drop(permit);
            (k, outcome)
        });
        k += 1;
        if k.is_multiple_of(100) {
            tracing::debug!(started = k, "orders started");
        }
    }
    while let Some(done) = tasks.join_next().await {
        collect(done, config.orders.is_some(), &mut ids, &mut report);
    }
    ids.sort_by_key(|(k, _)| *k);
    report.order_ids = ids.into_iter().map(|(_, id)| id).collect();
    tracing::info!(
        started = k,
        placed = report.orders_placed,
        delivered = report.orders_delivered,
        cancelled = report.orders_cancelled,
        errors = report.errors,
        "simulation finished"
    );
    Ok(report)
}

/// Adds one finished lifecycle to the report; a panicked one counts as an error.
fn collect(
    done: Result<(u64, SimReport), tokio::task::JoinError>,
    keep_ids: bool,
    ids: &mut Vec<(u64, String)>,
    report: &mut SimReport,
) {
    match done {
        Ok((k, mut one)) => {
            if keep_ids {
                ids.extend(one.order_ids.drain(..).map(|id| (k, id)));
            } else {
                one.order_ids.clear();
            }
            report.merge(one);
        }
        Err(e) => {
            tracing::warn!(error = %e, "an order lifecycle task failed");
            report.errors += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_the_documented_ones_and_a_typo_is_an_error() {
        let config: SimConfig = serde_json::from_str(r#"{"seed": 7}"#).unwrap();
        assert_eq!(
            config,
            SimConfig {
                seed: 7,
                ..SimConfig::default()
            }
        );
        assert_eq!(config.customers, 200);
        assert_eq!(config.products, 100);
        assert_eq!(config.orders, Some(500));
        assert_eq!(config.concurrency, 16);
        assert_eq!(config.festival.rate_multiplier, 10.0);
        let typo = serde_json::from_str::<SimConfig>(r#"{"seeed": 7}"#).unwrap_err();
        assert!(typo.to_string().contains("seeed"), "{typo}");
        let typo =
            serde_json::from_str::<SimConfig>(r#"{"festival": {"enable": true}}"#).unwrap_err();
        assert!(typo.to_string().contains("enable"), "{typo}");
    }

    #[test]
    fn the_festival_multiplies_the_rate() {
        let mut config = SimConfig::default();
        assert_eq!(config.effective_rate(), 20.0);
        config.festival.enabled = true;
        assert_eq!(config.effective_rate(), 200.0);
    }

    #[test]
    fn nonsense_configs_are_rejected() {
        assert!(SimConfig::default().validate().is_ok());
        let bad = [
            SimConfig {
                rate_per_sec: -1.0,
                ..SimConfig::default()
            },
            SimConfig {
                zipf_exponent: f64::NAN,
                ..SimConfig::default()
            },
            SimConfig {
                concurrency: 0,
                ..SimConfig::default()
            },
            SimConfig {
                festival: FestivalConfig {
                    hot_share: 1.5,
                    ..FestivalConfig::default()
                },
                ..SimConfig::default()
            },
        ];
        for config in bad {
            assert!(config.validate().is_err(), "{config:?}");
        }
    }

    #[test]
    fn merging_reports_adds_counts_and_keeps_id_order() {
        let mut a = SimReport {
            orders_placed: 1,
            orders_delivered: 1,
            order_ids: vec!["a".into()],
            ..SimReport::default()
        };
        a.merge(SimReport {
            orders_placed: 1,
            orders_cancelled: 1,
            errors: 2,
            order_ids: vec!["b".into()],
            ..SimReport::default()
        });
        assert_eq!(a.orders_placed, 2);
        assert_eq!(a.orders_delivered + a.orders_cancelled, 2);
        assert_eq!(a.errors, 2);
        assert_eq!(a.order_ids, ["a", "b"]);
    }
}
