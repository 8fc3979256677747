//! One measured round at one size: each path in a closed loop with its CPU time, then
//! staleness after a status change; and, at the largest size, each path at rising offered
//! load and through a burst.

use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::clients::Clients;
use super::{CompareOptions, CurvePoint, PathRun, ReadPath, Round, Staleness};
use crate::load::{LoadResult, Window, closed_loop, open_loop};
use crate::machine::process_cpu_secs;
use crate::shop::{ReadSet, Shop};

/// Open-loop requests in flight at most (beyond that they are counted as dropped).
const MAX_IN_FLIGHT: usize = 1024;

fn summarize(rs: &LoadResult, cpu_secs: f64, path: ReadPath) -> PathRun {
    let answered = rs.requests.saturating_sub(rs.errors).max(1);
    PathRun {
        path,
        requests: rs.requests,
        errors: rs.errors,
        throughput_rps: rs.throughput(),
        p50_ms: rs.latency.quantile_ms(0.5),
        p99_ms: rs.latency.quantile_ms(0.99),
        cpu_ms_per_request: cpu_secs * 1000.0 / answered as f64,
    }
}

/// What every measurement at one size shares: the options, the clients, the orders read.
pub(super) struct Bench<'a> {
    pub(super) opts: &'a CompareOptions,
    pub(super) clients: Clients,
    pub(super) reads: ReadSet,
}

impl Bench<'_> {
    fn concurrency(&self, path: ReadPath) -> usize {
        match path {
            ReadPath::TrackingComposer | ReadPath::TrackingCqrs => self.opts.tracking_concurrency,
            ReadPath::DashboardCqrs | ReadPath::DashboardComposer => {
                self.opts.dashboard_concurrency
            }
        }
    }

    async fn closed(&self, path: ReadPath, seed: u64) -> PathRun {
        let clients = self.clients.clone();
        let request = move |id: String| {
            let clients = clients.clone();
            async move { clients.request(path, id).await }
        };
        let c = self.concurrency(path);
        let e = self.opts.zipf_exponent;
        // Warm-up unmeasured, then the measured window with its CPU time.
        closed_loop(
            self.reads.clone(),
            e,
            seed,
            c,
            Window::new(Duration::ZERO, self.opts.warmup),
            request.clone(),
        )
        .await;
        let cpu0 = process_cpu_secs();
        let rs = closed_loop(
            self.reads.clone(),
            e,
            seed + 1,
            c,
            Window::new(Duration::ZERO, self.opts.duration),
            request,
        )
        .await;
        summarize(&rs, process_cpu_secs() - cpu0, path)
    }

    async fn open(&self, path: ReadPath, rate: f64, seed: u64, step: Duration) -> LoadResult {
        let clients = self.clients.clone();
        let request = move |id: String| {
            let clients = clients.clone();
            async move { clients.request(path, id).await }
        };
        open_loop(
            self.reads.clone(),
            self.opts.zipf_exponent,
            seed,
            rate,
            MAX_IN_FLIGHT,
            Window::new(Duration::ZERO, step),
            request,
        )
        .await
    }

    /// Places a new order, lets both paths see it as `Placed`, moves it to `Paid`, and
    /// times how long each path takes to show `Paid`.
    async fn staleness_sample(
        &self,
        shop: &Shop,
        k: usize,
    ) -> anyhow::Result<(Option<f64>, Option<f64>)> {
        let c = &self.clients;
        let cat = &shop.catalogue;
        let body = json!({
            "customer_id": cat.customers[k % cat.customers.len()],
            "lines": [{"product_id": cat.products[k % cat.products.len()], "quantity": 1}],
        });
        let resp = c
            .http
            .post(format!("{}/api/v1/orders", c.order))
            .json(&body)
            .send()
            .await?;
        anyhow::ensure!(
            resp.status().is_success(),
            "placing an order: {}",
            resp.status()
        );
        let order: Value = resp.json().await?;
        let id = order["id"].as_str().context("order without id")?.to_owned();
        // Both paths have seen the order as it is (the composer has it cached).
        let limit = Duration::from_secs(10);
        let placed = Some("Placed".to_owned());
        let start = Instant::now();
        while c.summary_status(&id).await? != placed || c.cqrs_status(&id).await? != placed {
            anyhow::ensure!(start.elapsed() < limit, "order {id} never showed as Placed");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let resp = c
            .http
            .post(format!("{}/api/v1/orders/{id}/status", c.order))
            .json(&json!({"status": "Paid"}))
            .send()
            .await?;
        anyhow::ensure!(resp.status().is_success(), "paying: {}", resp.status());
        let changed = Instant::now();
        let paid = Some("Paid".to_owned());
        let watch = |composer: bool| {
            let id = id.clone();
            let paid = paid.clone();
            async move {
                loop {
                    let seen = if composer {
                        c.summary_status(&id).await.ok().flatten()
                    } else {
                        c.cqrs_status(&id).await.ok().flatten()
                    };
                    if seen == paid {
                        return Some(changed.elapsed().as_secs_f64() * 1000.0);
                    }
                    if changed.elapsed() > limit {
                        return None;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        };
        Ok(tokio::join!(watch(true), watch(false)))
    }

    async fn staleness(&self, shop: &Shop, run: usize) -> anyhow::Result<Staleness> {
        let mut s = Staleness::default();
        for k in 0..self.opts.staleness_samples {
            let (composer, cqrs) = self.staleness_sample(shop, run * 1000 + k).await?;
            match composer {
                Some(ms) => s.composer_ms.push(ms),
                None => s.composer_timeouts += 1,
            }
            match cqrs {
                Some(ms) => s.cqrs_ms.push(ms),
                None => s.cqrs_timeouts += 1,
            }
        }
        Ok(s)
    }

    pub(super) async fn round(&self, shop: &Shop, run: usize) -> anyhow::Result<Round> {
        let mut paths = Vec::new();
        for (i, path) in ReadPath::ALL.into_iter().enumerate() {
            tracing::info!(run, path = path.label(), "closed loop");
            paths.push(self.closed(path, (run * 100 + i * 10) as u64).await);
        }
        tracing::info!(run, "staleness");
        let staleness = self.staleness(shop, run).await?;
        Ok(Round {
            run,
            paths,
            staleness,
        })
    }

    pub(super) async fn curves(&self, round: &Round, run: usize) -> Vec<CurvePoint> {
        let mut points = Vec::new();
        for path in ReadPath::ALL {
            let max = round
                .paths
                .iter()
                .find(|p| p.path == path)
                .map_or(1.0, |p| p.throughput_rps.max(1.0));
            let mut steps: Vec<(String, f64)> = self
                .opts
                .curve_fractions
                .iter()
                .map(|f| ("curve".to_owned(), *f))
                .collect();
            steps.push(("burst-base".into(), self.opts.burst_base));
            steps.push(("burst-peak".into(), self.opts.burst_peak));
            steps.push(("burst-after".into(), self.opts.burst_base));
            for (i, (phase, fraction)) in steps.into_iter().enumerate() {
                let rate = (max * fraction).max(1.0);
                tracing::info!(run, path = path.label(), phase, rate, "open loop");
                let rs = self
                    .open(path, rate, (run * 1000 + i) as u64, self.opts.curve_step)
                    .await;
                points.push(CurvePoint {
                    path,
                    run,
                    phase,
                    fraction,
                    offered_rps: rate,
                    goodput_rps: rs.requests.saturating_sub(rs.errors) as f64
                        / rs.window_secs.max(1e-9),
                    errors: rs.errors,
                    dropped: rs.dropped,
                    p50_ms: rs.latency.quantile_ms(0.5),
                    p99_ms: rs.latency.quantile_ms(0.99),
                });
            }
        }
        points
    }
}
