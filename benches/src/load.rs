//! Load generators (in-process tokio tasks): a closed loop (C workers, each sending its next
//! request when the previous one is answered) and an open loop (a fixed request rate,
//! latency measured from each request's *scheduled* time so a slow server cannot hide its
//! queueing — no coordinated omission). Requests pick orders from a [`ReadSet`].

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::histogram::Histogram;
use crate::shop::ReadSet;

/// What one request (or one group of calls) came to.
#[derive(Debug, Default)]
pub struct Outcome {
    pub ok: bool,
    /// A 200 whose body says `"degraded":true`.
    pub degraded: bool,
    /// Latencies of named parts (e.g. single downstream calls), recorded separately.
    pub parts: Vec<(&'static str, Duration)>,
}

/// The measured window of one load run.
#[derive(Clone, Debug, Default)]
pub struct LoadResult {
    pub requests: u64,
    pub errors: u64,
    pub degraded: u64,
    /// Open loop only: requests not sent because too many were already in flight.
    pub dropped: u64,
    pub window_secs: f64,
    /// From the scheduled start (open loop) or the send (closed loop).
    pub latency: Histogram,
    /// From the moment the request was actually sent (excludes the load generator's own
    /// scheduling delay, about a timer tick).
    pub service: Histogram,
    pub parts: BTreeMap<&'static str, Histogram>,
}

impl LoadResult {
    fn add(&mut self, latency: Duration, service: Duration, outcome: Outcome) {
        self.requests += 1;
        self.service.record(service);
        self.errors += u64::from(!outcome.ok);
        self.degraded += u64::from(outcome.degraded);
        self.latency.record(latency);
        for (name, d) in outcome.parts {
            self.parts.entry(name).or_default().record(d);
        }
    }

    fn merge(&mut self, other: LoadResult) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.degraded += other.degraded;
        self.dropped += other.dropped;
        self.latency.merge(&other.latency);
        self.service.merge(&other.service);
        for (name, h) in other.parts {
            self.parts.entry(name).or_default().merge(&h);
        }
    }

    pub fn throughput(&self) -> f64 {
        if self.window_secs > 0.0 {
            self.requests as f64 / self.window_secs
        } else {
            0.0
        }
    }
}

/// When a load run warms up, measures, and ends.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    pub begin: Instant,
    pub measure_from: Instant,
    pub end: Instant,
}

impl Window {
    /// Starting now: `warmup`, then `duration` measured.
    pub fn new(warmup: Duration, duration: Duration) -> Window {
        let begin = Instant::now();
        Window {
            begin,
            measure_from: begin + warmup,
            end: begin + warmup + duration,
        }
    }

    fn secs(&self) -> f64 {
        (self.end - self.measure_from).as_secs_f64()
    }
}

/// `concurrency` workers send requests back to back during `window`; requests started in
/// the measured part are recorded.
pub async fn closed_loop<F, Fut>(
    reads: ReadSet,
    exponent: f64,
    seed: u64,
    concurrency: usize,
    window: Window,
    request: F,
) -> LoadResult
where
    F: Fn(String) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Outcome> + Send,
{
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..concurrency.max(1) {
        let reads = reads.clone();
        let request = request.clone();
        workers.spawn(async move {
            let mut picker = reads.picker(exponent, seed.wrapping_mul(1000).wrapping_add(w as u64));
            let mut result = LoadResult::default();
            loop {
                let start = Instant::now();
                if start >= window.end {
                    break;
                }
                let id = reads.pick(&mut picker);
                let outcome = request(id).await;
                if start >= window.measure_from {
                    let took = start.elapsed();
                    result.add(took, took, outcome);
                }
            }
            result
        });
    }
    let mut total = LoadResult {
        window_secs: window.secs(),
        ..Default::default()
    };
    while let Some(done) = workers.join_next().await {
        if let Ok(one) = done {
            total.merge(one);
        }
    }
    total
}

/// Sends requests at `rate_per_sec` during `window` (at most `max_in_flight` at once; the
/// rest are counted as dropped), measuring each from its scheduled start; waits for the
/// last answers before returning.
#[allow(clippy::too_many_arguments)]
pub async fn open_loop<F, Fut>(
    reads: ReadSet,
    exponent: f64,
    seed: u64,
    rate_per_sec: f64,
    max_in_flight: usize,
    window: Window,
    request: F,
) -> LoadResult
where
    F: Fn(String) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    let result = Arc::new(Mutex::new(LoadResult {
        window_secs: window.secs(),
        ..Default::default()
    }));
    let interval = Duration::from_secs_f64(1.0 / rate_per_sec.max(0.001));
    let mut picker = reads.picker(exponent, seed);
    let mut in_flight = tokio::task::JoinSet::new();
    let mut k: u64 = 0;
    loop {
        let due = window.begin + interval.mul_f64(k as f64);
        k += 1;
        if due >= window.end {
            break;
        }
        tokio::time::sleep_until(due).await;
        while in_flight.try_join_next().is_some() {}
        let measured = due >= window.measure_from;
        if in_flight.len() >= max_in_flight {
            if measured {
                result.lock().expect("result lock").dropped += 1;
            }
            continue;
        }
        let id = reads.pick(&mut picker);
        let request = request.clone();
        let result = result.clone();
        in_flight.spawn(async move {
            let sent = Instant::now();
            let outcome = request(id).await;
            if measured {
                let (latency, service) = (due.elapsed(), sent.elapsed());
                result
                    .lock()
                    .expect("result lock")
                    .add(latency, service, outcome);
            }
        });
    }
    while in_flight.join_next().await.is_some() {}
    let mut guard = result.lock().expect("result lock");
    std::mem::take(&mut *guard)
}
