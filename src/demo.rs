//! The demo traffic of the all-in-one process: first the shop's past (a year of orders by
//! default, created in about a minute), then live orders.
//!
//! The past goes through the same services, outbox and bus as live traffic: the five
//! services run on a pinned [`Clock`] that the history moves to each order's moment, and
//! that is released to the system time before live traffic starts. So the history lives in
//! the services' own databases, and `shoplens reconcile` matches over the whole range.
//!
//! `DATA_DIR/demo-history.json` records the last day created, so a restart only adds the
//! days since (none on the same day).

use std::path::{Path, PathBuf};
use std::time::Instant;

use chrono::{NaiveDate, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use shoplens_kit::clock::Clock;
use tokio_util::sync::CancellationToken;

use crate::config::DemoConfig;

/// The file that records how far the history got.
const MARKER: &str = "demo-history.json";

#[derive(Serialize, Deserialize)]
struct Marker {
    /// The last day whose orders were all started.
    through: NaiveDate,
}

/// The days of history still to create, and the clock the services run on meanwhile.
pub(crate) struct DemoPlan {
    pub clock: Clock,
    days: Vec<NaiveDate>,
    marker: PathBuf,
}

impl DemoPlan {
    /// The history still to make: `config.history.days` before today, less the days a
    /// previous run made. Only when all five services run in this process (the others
    /// would stamp the past with the system time).
    pub fn new(config: &DemoConfig, data_dir: &Path, all_here: bool) -> DemoPlan {
        let marker = data_dir.join(MARKER);
        let days = if !config.enabled || config.history.days == 0 {
            Vec::new()
        } else if !all_here {
            tracing::warn!("no demo history: it needs the five services in this process (`only`)");
            Vec::new()
        } else {
            let done = std::fs::read(&marker)
                .ok()
                .and_then(|bytes| serde_json::from_slice::<Marker>(&bytes).ok())
                .map(|m| m.through);
            let mut days = config.history.range(Utc::now().date_naive());
            days.retain(|day| done.is_none_or(|through| *day > through));
            days
        };
        let clock = match days.first() {
            Some(first) => Clock::pinned(
                Utc.from_utc_datetime(&first.and_hms_opt(0, 0, 0).expect("midnight exists")),
            ),
            None => Clock::system(),
        };
        DemoPlan {
            clock,
            days,
            marker,
        }
    }
}

/// The services' clock, as the simulator's history moves it.
struct ServicesClock(Clock);

impl shop_simulator::ShopClock for ServicesClock {
    fn now(&self) -> chrono::DateTime<Utc> {
        self.0.now()
    }

    fn advance_to(&self, to: chrono::DateTime<Utc>) {
        self.0.advance_to(to);
    }
}

/// Where the demo's "My Orders" link points, and the key its token is signed with.
pub(crate) struct DemoPage {
    pub composer_url: String,
    pub secret: String,
}

/// Seeds the catalogue (on the first history day, when there is history), creates the
/// history, then places live orders until `shutdown`.
pub(crate) async fn run(
    urls: shop_simulator::ShopUrls,
    config: DemoConfig,
    plan: DemoPlan,
    page: DemoPage,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let sim = &config.simulator;
    let past = async {
        let catalogue = shop_simulator::seed_catalogue(&urls, sim).await?;
        tracing::info!(
            customers = catalogue.customers.len(),
            products = catalogue.products.len(),
            "demo catalogue ready"
        );
        print_my_orders_link(&catalogue, &page);
        if !plan.days.is_empty() {
            let started = Instant::now();
            let report = shop_simulator::run_history(
                &urls,
                sim,
                &config.history,
                &catalogue,
                std::sync::Arc::new(ServicesClock(plan.clock.clone())),
                &plan.days,
                shutdown.clone(),
                |day, _| record_progress(&plan.marker, day),
            )
            .await?;
            println!(
                "  Demo history: {} orders over {} days ({} to {}), created in {:.0} s",
                report.orders_placed,
                plan.days.len(),
                plan.days[0],
                plan.days[plan.days.len() - 1],
                started.elapsed().as_secs_f64()
            );
        }
        anyhow::Ok(catalogue)
    }
    .await;
    // Whatever became of the past (a refused seeding too), the services stamp everything
    // from here on with the system time.
    plan.clock.release();
    let catalogue = past?;
    let report = shop_simulator::run(&urls, sim, &catalogue, shutdown).await?;
    tracing::info!(?report, "demo traffic finished");
    Ok(())
}

/// Records that `day`'s orders have all started; a failure only costs a repeat of the day.
fn record_progress(marker: &Path, day: NaiveDate) {
    let written = serde_json::to_vec(&Marker { through: day })
        .map_err(std::io::Error::other)
        .and_then(|bytes| {
            let tmp = marker.with_extension("tmp");
            std::fs::write(&tmp, bytes)?;
            std::fs::rename(&tmp, marker)
        });
    if let Err(e) = written {
        tracing::warn!(error = %e, path = %marker.display(), "failed to record the demo history's progress");
    }
    if day.format("%d").to_string() == "01" {
        tracing::info!(%day, "demo history");
    }
}

/// Customer 0 is the most active one under the simulator's Zipf popularity.
fn print_my_orders_link(catalogue: &shop_simulator::Catalogue, page: &DemoPage) {
    if let Some(customer) = catalogue.customers.first() {
        let token = shoplens_kit::identity::issue(
            &page.secret,
            &shoplens_kit::identity::Identity::new(
                customer.clone(),
                shoplens_kit::identity::Role::Customer,
            ),
            std::time::Duration::from_secs(24 * 3600),
        );
        println!(
            "  My Orders page of the busiest demo customer:\n    {}/my-orders?token={token}",
            page.composer_url
        );
    }
}
