//! One mode measured under one load (a fresh composer, warm-up, then the measured window and
//! its counters), and the fan-out check (the downstream calls made directly).

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Context;

use super::requests::{Counters, counters, direct_request, start_composer, summary_request};
use super::{CallLatency, ComposerOptions, Fanout, Load, Mode, ModeResult};
use crate::histogram::Histogram;
use crate::load::{LoadResult, Window, closed_loop, open_loop};
use crate::shop::Shop;

/// Open-loop requests in flight at most (bounds memory if a mode cannot keep up).
const MAX_IN_FLIGHT: usize = 2048;

/// What every measurement of a run shares: the shop, the options, one client, the token.
pub(super) struct Bench<'a> {
    pub(super) shop: &'a Shop,
    pub(super) opts: &'a ComposerOptions,
    pub(super) client: reqwest::Client,
    pub(super) auth: Arc<str>,
}

impl Bench<'_> {
    pub(super) async fn measure(
        &self,
        mode: Mode,
        load: Load,
        run: usize,
        rate: f64,
    ) -> anyhow::Result<ModeResult> {
        let tag = format!("r{run}-{load:?}").to_lowercase();
        let composer = start_composer(self.shop, mode, &tag).await?;
        let base: Arc<str> = composer.url().into();
        let request = summary_request(self.client.clone(), base.clone(), self.auth.clone());
        let window = Window::new(self.opts.warmup, self.opts.duration);
        let (reads, s, seed) = (self.shop.reads.clone(), self.opts.zipf_exponent, run as u64);
        let task = match load {
            Load::Closed => {
                let c = self.opts.concurrency;
                tokio::spawn(closed_loop(reads, s, seed, c, window, request))
            }
            Load::Open => tokio::spawn(open_loop(
                reads,
                s,
                seed,
                rate,
                MAX_IN_FLIGHT,
                window,
                request,
            )),
        };
        tokio::time::sleep_until(window.measure_from).await;
        let before = counters(&self.client, &base).await?;
        let result = task.await.context("load task failed")?;
        let after = counters(&self.client, &base).await?;
        composer.stop().await;
        let r = mode_result(
            mode,
            load,
            (load == Load::Open).then_some(rate),
            &result,
            before,
            after,
        );
        tracing::info!(
            mode = mode.name(),
            ?load,
            rps = r.throughput_rps,
            p50 = r.p50_ms,
            p99 = r.p99_ms,
            calls_per_request = r.calls_per_request,
            "measured"
        );
        Ok(r)
    }

    pub(super) async fn fanout(&self, run: usize, rate: f64, composer_p50: f64) -> Fanout {
        let request = direct_request(self.client.clone(), Arc::new(self.shop.urls.clone()));
        let window = Window::new(self.opts.warmup, self.opts.duration);
        let result = open_loop(
            self.shop.reads.clone(),
            self.opts.zipf_exponent,
            run as u64,
            rate,
            MAX_IN_FLIGHT,
            window,
            request,
        )
        .await;
        fanout_result(&result, rate, composer_p50)
    }
}

fn mode_result(
    mode: Mode,
    load: Load,
    offered_rps: Option<f64>,
    r: &LoadResult,
    before: Counters,
    after: Counters,
) -> ModeResult {
    let calls = after.downstream_calls - before.downstream_calls;
    ModeResult {
        mode,
        load,
        offered_rps,
        requests: r.requests,
        errors: r.errors,
        degraded: r.degraded,
        dropped: r.dropped,
        throughput_rps: r.throughput(),
        p50_ms: r.latency.quantile_ms(0.50),
        p90_ms: r.latency.quantile_ms(0.90),
        p99_ms: r.latency.quantile_ms(0.99),
        max_ms: r.latency.max_ms(),
        mean_ms: r.latency.mean_ms(),
        service_p50_ms: r.service.quantile_ms(0.50),
        service_p99_ms: r.service.quantile_ms(0.99),
        downstream_calls: calls,
        calls_per_request: if r.requests > 0 {
            calls / r.requests as f64
        } else {
            f64::NAN
        },
        cache_hits: after.cache_hits - before.cache_hits,
        cache_misses: after.cache_misses - before.cache_misses,
        invalidations: after.invalidations - before.invalidations,
        events_seen: after.events_seen - before.events_seen,
    }
}

fn fanout_result(r: &LoadResult, rate: f64, composer_p50: f64) -> Fanout {
    let empty = Histogram::default();
    let h = |name: &str| r.parts.get(name).unwrap_or(&empty);
    let calls: BTreeMap<&'static str, CallLatency> = [
        "order",
        "customer",
        "products",
        "payments",
        "shipments",
        "second_round",
        "two_rounds",
    ]
    .into_iter()
    .map(|name| {
        (
            name,
            CallLatency {
                p50_ms: h(name).quantile_ms(0.5),
                p99_ms: h(name).quantile_ms(0.99),
            },
        )
    })
    .collect();
    let (slowest, slowest_p50) = ["customer", "products", "payments", "shipments"]
        .into_iter()
        .map(|n| (n, calls[n].p50_ms))
        .fold(("customer", f64::MIN), |a, b| if b.1 > a.1 { b } else { a });
    let order_p50 = calls["order"].p50_ms;
    let critical = order_p50 + slowest_p50;
    Fanout {
        offered_rps: rate,
        samples: r.requests,
        errors: r.errors,
        order_p50_ms: order_p50,
        slowest_second_round_call: slowest,
        slowest_second_round_p50_ms: slowest_p50,
        critical_path_p50_ms: critical,
        measured_two_rounds_p50_ms: calls["two_rounds"].p50_ms,
        calls,
        composer_no_cache_p50_ms: composer_p50,
        overhead_ms: composer_p50 - critical,
    }
}
