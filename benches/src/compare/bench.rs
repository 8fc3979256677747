//! One measured round at one size: each path in a closed loop with its CPU time, then
//! staleness after a status change; and, at the largest size, each path at rising offered
//! load and through a burst.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::clients::Clients;
use super::{CompareOptions, CurvePoint, PathRun, ReadPath, Round, STALENESS_DEADLINE, Staleness};
use crate::load::{LoadResult, Window, closed_loop, open_loop};
use crate::machine::process_cpu_secs;
use crate::shop::{ReadSet, Shop};

/// Open-loop requests in flight at most (beyond that they are counted as dropped).
const MAX_IN_FLIGHT: usize = 1024;

/// Answers of one open-loop step, counted by whether they came inside its window: only
/// those count toward goodput, so a path that falls behind is not credited with the backlog
/// it works off after the window closed.
#[derive(Debug)]
struct WindowCount {
    end: Instant,
    ok_inside: AtomicU64,
    late: AtomicU64,
}

impl WindowCount {
    fn new(end: Instant) -> Self {
        WindowCount {
            end,
            ok_inside: AtomicU64::new(0),
            late: AtomicU64::new(0),
        }
    }

    /// One answer, `ok` or not, that came at `finished`.
    fn record(&self, finished: Instant, ok: bool) {
        if finished > self.end {
            self.late.fetch_add(1, Ordering::Relaxed);
        } else if ok {
            self.ok_inside.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Answered without error inside the window.
    fn ok_inside(&self) -> u64 {
        self.ok_inside.load(Ordering::Relaxed)
    }

    /// Answered after the window closed, with or without error.
    fn late(&self) -> u64 {
        self.late.load(Ordering::Relaxed)
    }
}

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

    /// One step at `rate` for `step`, and when its answers came. Without warm-up every
    /// request sent is measured, so the count covers the same requests as the result.
    async fn open(
        &self,
        path: ReadPath,
        rate: f64,
        seed: u64,
        step: Duration,
    ) -> (LoadResult, Arc<WindowCount>) {
        let window = Window::new(Duration::ZERO, step);
        let count = Arc::new(WindowCount::new(window.end));
        let clients = self.clients.clone();
        let counted = count.clone();
        let request = move |id: String| {
            let clients = clients.clone();
            let count = counted.clone();
            async move {
                let outcome = clients.request(path, id).await;
                count.record(Instant::now(), outcome.ok);
                outcome
            }
        };
        let rs = open_loop(
            self.reads.clone(),
            self.opts.zipf_exponent,
            seed,
            rate,
            MAX_IN_FLIGHT,
            window,
            request,
        )
        .await;
        (rs, count)
    }

    /// Places a new order, lets both paths see it as `Placed`, moves it to `Paid`, and
    /// times how long each path takes to show `Paid`: `None` for a path that missed the
    /// deadline, showing either state.
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
        // Both paths have seen the order as it is (the composer has it cached). A path that
        // answers with an error has not shown it yet; one that never does in time has
        // missed this sample, which is recorded rather than failing the run.
        let status = |composer: bool| {
            let id = id.clone();
            async move {
                if composer {
                    c.summary_status(&id).await.ok().flatten()
                } else {
                    c.cqrs_status(&id).await.ok().flatten()
                }
            }
        };
        let placed = Some("Placed".to_owned());
        let (mut composer_placed, mut cqrs_placed) = (false, false);
        let start = Instant::now();
        loop {
            composer_placed = composer_placed || status(true).await == placed;
            cqrs_placed = cqrs_placed || status(false).await == placed;
            if (composer_placed && cqrs_placed) || start.elapsed() > STALENESS_DEADLINE {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if !(composer_placed && cqrs_placed) {
            tracing::warn!(
                order = %id,
                composer_placed,
                cqrs_placed,
                "the new order did not show as Placed in time: a staleness miss"
            );
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
        let watch = |composer: bool, showed_placed: bool| {
            let paid = paid.clone();
            async move {
                if !showed_placed {
                    return None;
                }
                loop {
                    if status(composer).await == paid {
                        return Some(changed.elapsed().as_secs_f64() * 1000.0);
                    }
                    if changed.elapsed() > STALENESS_DEADLINE {
                        return None;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        };
        Ok(tokio::join!(
            watch(true, composer_placed),
            watch(false, cqrs_placed)
        ))
    }

    async fn staleness(&self, shop: &Shop, run: usize) -> anyhow::Result<Staleness> {
        let mut s = Staleness::default();
        for k in 0..self.opts.staleness_samples {
            let (composer, cqrs) = self.staleness_sample(shop, run * 1000 + k).await?;
            match composer {
                Some(ms) => s.composer_ms.push(ms),
                None => s.composer_misses += 1,
            }
            match cqrs {
                Some(ms) => s.cqrs_ms.push(ms),
                None => s.cqrs_misses += 1,
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
                let (rs, count) = self
                    .open(path, rate, (run * 1000 + i) as u64, self.opts.curve_step)
                    .await;
                points.push(CurvePoint {
                    path,
                    run,
                    phase,
                    fraction,
                    offered_rps: rate,
                    goodput_rps: count.ok_inside() as f64 / rs.window_secs.max(1e-9),
                    errors: rs.errors,
                    dropped: rs.dropped,
                    late: count.late(),
                    p50_ms: rs.latency.quantile_ms(0.5),
                    p99_ms: rs.latency.quantile_ms(0.99),
                });
            }
        }
        points
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_answers_without_error_inside_the_window_count_toward_goodput() {
        let end = Instant::now() + Duration::from_secs(60);
        let count = WindowCount::new(end);
        count.record(end - Duration::from_millis(10), true);
        count.record(end, true);
        // An error inside the window: neither goodput nor late.
        count.record(end - Duration::from_millis(5), false);
        // Answered after the window closed, with or without error.
        count.record(end + Duration::from_millis(1), true);
        count.record(end + Duration::from_secs(3), false);
        assert_eq!(count.ok_inside(), 2);
        assert_eq!(count.late(), 2);
    }
}
