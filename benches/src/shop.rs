//! The shop under test: the whole system started in this process on a scratch directory,
//! seeded by the simulator, plus a background writer that keeps recent orders changing
//! (new orders, payments, shipments, status changes) so that caches see real churn.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use shop_simulator::{Catalogue, Planner, ShopUrls, SimConfig, ZipfPicker};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How much data to create before measuring.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ShopSize {
    pub customers: usize,
    pub products: usize,
    /// Orders the simulator places (and drives to their end) before measuring; also the
    /// size of the read population (the most recent this many orders).
    pub orders: usize,
    /// Zipf exponent of product/customer popularity and of which orders are read.
    pub zipf_exponent: f64,
}

/// The running shop and what was seeded into it.
pub struct Shop {
    pub system: shoplens::System,
    pub urls: ShopUrls,
    pub catalogue: Catalogue,
    pub reads: ReadSet,
    /// What the seeding run did.
    pub seeded: shop_simulator::SimReport,
    pub seed_secs: f64,
    _dir: tempfile::TempDir,
}

/// The simulator configuration used for seeding (a festival sale: most lines pick a few hot
/// products), as fast as the services go.
pub fn seed_config(size: &ShopSize) -> SimConfig {
    SimConfig {
        seed: 42,
        customers: size.customers,
        products: size.products,
        orders: Some(size.orders as u64),
        rate_per_sec: 0.0,
        concurrency: 16,
        zipf_exponent: size.zipf_exponent,
        festival: shop_simulator::FestivalConfig {
            enabled: true,
            ..Default::default()
        },
        step_delay_ms: 0,
    }
}

impl Shop {
    /// Starts the five services and the embedded log (no demo, ports 0, no fsync) in a
    /// temporary directory and seeds them.
    pub async fn start(size: &ShopSize) -> anyhow::Result<Shop> {
        Shop::start_with(size, |_| {}).await
    }

    /// [`Shop::start`] with the configuration changed by `configure` first (another bus or
    /// read model, a known signing secret).
    pub async fn start_with(
        size: &ShopSize,
        configure: impl FnOnce(&mut shoplens::Config),
    ) -> anyhow::Result<Shop> {
        let dir = tempfile::tempdir().context("failed to create a scratch directory")?;
        let mut config = shoplens::Config {
            data_dir: dir.path().to_path_buf(),
            ..Default::default()
        };
        config.demo.enabled = false;
        config.bus.fsync = false;
        let any_port: std::net::SocketAddr = ([127, 0, 0, 1], 0).into();
        for svc in [
            &mut config.customer,
            &mut config.product,
            &mut config.order,
            &mut config.payment,
            &mut config.shipping,
        ] {
            svc.listen = any_port;
        }
        config.composer.listen = any_port;
        config.ingest.listen = any_port;
        config.analytics.listen = any_port;
        config.analytics.sql.listen = any_port;
        config.analytics.query.workers.program = crate::worker_program();
        configure(&mut config);
        let token = config.service_token("benchmark");
        let system = shoplens::System::start(config)
            .await
            .context("failed to start the shop")?;
        let urls = system.info.shop_urls(token);
        let sim = seed_config(size);
        let started = std::time::Instant::now();
        let catalogue = shop_simulator::seed_catalogue(&urls, &sim)
            .await
            .context("failed to seed the catalogue")?;
        let seeded = shop_simulator::run(&urls, &sim, &catalogue, CancellationToken::new())
            .await
            .context("failed to seed orders")?;
        anyhow::ensure!(
            !seeded.order_ids.is_empty(),
            "seeding placed no orders ({} errors)",
            seeded.errors
        );
        let seed_secs = started.elapsed().as_secs_f64();
        let reads = ReadSet::new(seeded.order_ids.clone(), size.orders);
        Ok(Shop {
            system,
            urls,
            catalogue,
            reads,
            seeded,
            seed_secs,
            _dir: dir,
        })
    }

    /// Seeds `more` orders on top of what is there (the same catalogue, a new seed so they
    /// are new orders); they join the read set.
    pub async fn grow(&mut self, size: &ShopSize, more: usize, seed: u64) -> anyhow::Result<f64> {
        let sim = SimConfig {
            seed,
            orders: Some(more as u64),
            ..seed_config(size)
        };
        let started = std::time::Instant::now();
        let report =
            shop_simulator::run(&self.urls, &sim, &self.catalogue, CancellationToken::new())
                .await
                .context("failed to seed orders")?;
        for id in report.order_ids {
            self.reads.push(id);
        }
        Ok(started.elapsed().as_secs_f64())
    }

    pub async fn stop(self) {
        self.system.stop().await;
    }
}

/// The orders readers choose from: the `population` most recent orders, read with Zipf
/// popularity by recency (rank 0 = the newest order), the way customers refresh the orders
/// they just placed during a sale. The background writer appends new orders.
#[derive(Clone)]
pub struct ReadSet {
    ids: Arc<RwLock<Vec<String>>>,
    population: usize,
}

impl ReadSet {
    pub fn new(ids: Vec<String>, population: usize) -> ReadSet {
        ReadSet {
            ids: Arc::new(RwLock::new(ids)),
            population: population.max(1),
        }
    }

    /// A picker over the population's recency ranks.
    pub fn picker(&self, exponent: f64, seed: u64) -> ZipfPicker {
        ZipfPicker::new(self.population, exponent, seed)
    }

    /// The order at the picker's next rank.
    pub fn pick(&self, picker: &mut ZipfPicker) -> String {
        let rank = picker.pick();
        let ids = self.ids.read().expect("read set lock");
        let i = ids.len() - 1 - rank.min(ids.len() - 1);
        ids[i].clone()
    }

    fn push(&self, id: String) {
        self.ids.write().expect("read set lock").push(id);
    }

    pub fn len(&self) -> usize {
        self.ids.read().expect("read set lock").len()
    }

    /// Every order id so far, oldest first.
    pub fn ids(&self) -> Vec<String> {
        self.ids.read().expect("read set lock").clone()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What the background writer did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct WriterReport {
    pub orders_placed: u64,
    /// Successful writes of any kind (each emits at least one event).
    pub writes: u64,
    pub errors: u64,
    pub secs: f64,
}

/// Keeps placing orders at `rate_per_sec` and driving each through payment, shipping and
/// delivery, one step every `step_delay`, until `shutdown`. New orders join `reads`.
pub fn spawn_writer(
    shop: &Shop,
    size: &ShopSize,
    rate_per_sec: f64,
    step_delay: Duration,
    shutdown: CancellationToken,
) -> JoinHandle<WriterReport> {
    let sim = SimConfig {
        seed: 4242,
        ..seed_config(size)
    };
    let planner = Arc::new(Planner::new(
        &sim,
        shop.catalogue.customers.len(),
        shop.catalogue.products.len(),
    ));
    let ctx = Arc::new(WriterCtx {
        http: crate::admin_client(reqwest::Client::builder())
            .expect("a client with a default header builds"),
        urls: shop.urls.clone(),
        catalogue: shop.catalogue.clone(),
        reads: shop.reads.clone(),
        step_delay,
        writes: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        placed: AtomicU64::new(0),
    });
    tokio::spawn(async move {
        let started = tokio::time::Instant::now();
        let interval = Duration::from_secs_f64(1.0 / rate_per_sec.max(0.1));
        let mut tasks = tokio::task::JoinSet::new();
        let mut k: u64 = 0;
        loop {
            let due = started + interval.mul_f64(k as f64);
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep_until(due) => {}
            }
            while tasks.try_join_next().is_some() {}
            let plan = planner.plan(k);
            let ctx = ctx.clone();
            let stop = shutdown.clone();
            tasks.spawn(async move {
                if let Err(e) = ctx.lifecycle(&plan, &stop).await {
                    tracing::debug!(error = %e, "background order abandoned");
                    ctx.errors.fetch_add(1, Ordering::Relaxed);
                }
            });
            k += 1;
        }
        while tasks.join_next().await.is_some() {}
        WriterReport {
            orders_placed: ctx.placed.load(Ordering::Relaxed),
            writes: ctx.writes.load(Ordering::Relaxed),
            errors: ctx.errors.load(Ordering::Relaxed),
            secs: started.elapsed().as_secs_f64(),
        }
    })
}

struct WriterCtx {
    http: reqwest::Client,
    urls: ShopUrls,
    catalogue: Catalogue,
    reads: ReadSet,
    step_delay: Duration,
    writes: AtomicU64,
    errors: AtomicU64,
    placed: AtomicU64,
}

impl WriterCtx {
    async fn post(&self, url: String, body: Value) -> anyhow::Result<Value> {
        let resp = self.http.post(&url).json(&body).send().await?;
        let status = resp.status();
        let value: Value = resp.json().await.unwrap_or(Value::Null);
        anyhow::ensure!(status.is_success(), "POST {url} answered {status}: {value}");
        self.writes.fetch_add(1, Ordering::Relaxed);
        Ok(value)
    }

    /// Waits one step; false when shutting down (the order is then left where it is).
    async fn step(&self, stop: &CancellationToken) -> bool {
        tokio::select! {
            _ = stop.cancelled() => false,
            _ = tokio::time::sleep(self.step_delay) => true,
        }
    }

    async fn lifecycle(
        &self,
        plan: &shop_simulator::OrderPlan,
        stop: &CancellationToken,
    ) -> anyhow::Result<()> {
        let (orders, payments, shipments) = (
            format!("{}/api/v1/orders", self.urls.order),
            format!("{}/api/v1/payments", self.urls.payment),
            format!("{}/api/v1/shipments", self.urls.shipping),
        );
        let lines: Vec<Value> = plan
            .lines
            .iter()
            .map(|l| json!({"product_id": self.catalogue.products[l.product], "quantity": l.quantity}))
            .collect();
        let order = self
            .post(
                orders.clone(),
                json!({"customer_id": self.catalogue.customers[plan.customer], "lines": lines}),
            )
            .await?;
        let id = order["id"].as_str().context("order without id")?.to_owned();
        self.placed.fetch_add(1, Ordering::Relaxed);
        self.reads.push(id.clone());
        let status = |s: &str| (format!("{orders}/{id}/status"), json!({"status": s}));

        if !self.step(stop).await {
            return Ok(());
        }
        let payment = self
            .post(
                payments.clone(),
                json!({"order_id": id, "amount": order["total"], "currency": order["currency"],
                       "method": "card", "card_token": "tok_visa"}),
            )
            .await?;
        let pid = payment["id"].as_str().context("payment without id")?;
        if payment["status"] == "Pending" {
            self.post(format!("{payments}/{pid}/capture"), json!({}))
                .await?;
        }
        let (url, body) = status("Paid");
        self.post(url, body).await?;

        if !self.step(stop).await {
            return Ok(());
        }
        let eta = chrono::Utc::now() + chrono::Duration::days(i64::from(plan.eta_days));
        let shipment = self
            .post(
                shipments.clone(),
                json!({"order_id": id, "carrier": plan.carrier, "location": plan.warehouse,
                       "eta": eta}),
            )
            .await?;
        let sid = shipment["id"].as_str().context("shipment without id")?;
        let (url, body) = status("Shipped");
        self.post(url, body).await?;
        for place in &plan.route {
            if !self.step(stop).await {
                return Ok(());
            }
            self.post(
                format!("{shipments}/{sid}/locations"),
                json!({"location": place}),
            )
            .await?;
        }
        if !self.step(stop).await {
            return Ok(());
        }
        self.post(
            format!("{shipments}/{sid}/deliver"),
            json!({"location": plan.destination}),
        )
        .await?;
        let (url, body) = status("Delivered");
        self.post(url, body).await?;
        Ok(())
    }
}
