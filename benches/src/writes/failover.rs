//! The relay's fail-over on PostgreSQL: replica A (started first) holds the outbox lock and
//! publishes; orders are created through B at a steady rate; A dies at once
//! (`ServiceHandle::abort`, a crash: no drain, no stamp, its lock session closes); B keeps
//! taking orders and takes the outbox over. A reader follows the topic in the embedded log
//! and notes when each order's OrderCreated event appears.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use shoplens_bus::EventSource;
use shoplens_contract::{DomainEvent, Envelope};
use shoplens_kit::config::RelayConfig;
use tokio_util::sync::CancellationToken;

use super::WritesOptions;
use super::figures::Failover;
use super::fixture::{Fixture, send};
use crate::results::quantile;
use crate::servers::Postgres;

/// The fail-over replicas' topic: their own, so the reader sees only their events (the
/// closed loops before published to the default one on the same log).
const TOPIC: &str = "shop.orders.failover";

/// What the reader saw in the log.
#[derive(Default)]
struct Seen {
    /// When each order's OrderCreated event first appeared.
    created: HashMap<String, Instant>,
    /// Arrival time of every batch of events.
    arrivals: Vec<Instant>,
    ids: HashSet<String>,
    events: u64,
    duplicates: u64,
}

/// Follows [`TOPIC`] from its start until `stop`.
async fn follow(
    fx: &Fixture,
    seen: Arc<Mutex<Seen>>,
    stop: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<anyhow::Result<()>>> {
    let group = crate::servers::unique_name("bench-failover");
    let mut consumer = fx.env.log.consumer(&group, &[TOPIC])?;
    Ok(tokio::spawn(async move {
        while !stop.is_cancelled() {
            // Wakes as soon as a record is appended.
            let batch = consumer.poll(10_000, Duration::from_millis(50)).await?;
            let now = Instant::now();
            if batch.is_empty() {
                continue;
            }
            let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
            seen.arrivals.push(now);
            for record in batch {
                let event = Envelope::decode(&record.payload)
                    .map_err(|e| anyhow::anyhow!("an invalid event in the log: {e}"))?;
                seen.events += 1;
                if !seen.ids.insert(event.event_id.to_string()) {
                    seen.duplicates += 1;
                }
                if let DomainEvent::OrderCreated(c) = &event.payload {
                    seen.created.entry(c.order_id.clone()).or_insert(now);
                }
            }
        }
        Ok(())
    }))
}

/// Runs the fail-over on a fresh database of `pg`.
pub(super) async fn failover(
    fx: &Fixture,
    pg: &Postgres,
    opts: &WritesOptions,
) -> anyhow::Result<Failover> {
    let relay = RelayConfig::default();
    let url = pg.database_url("orders_failover");
    let a = fx.order_replica(url.clone(), TOPIC).await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !a.publishes_outbox() {
        ensure!(
            Instant::now() < deadline,
            "the first replica's relay did not take the outbox lock within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let b = fx.order_replica(url, TOPIC).await?;
    // B's relay asks for the lock as it starts, and is refused.
    tokio::time::sleep(Duration::from_millis(200)).await;
    ensure!(
        a.publishes_outbox() && !b.publishes_outbox(),
        "A should publish and B stand by (A {}, B {})",
        a.publishes_outbox(),
        b.publishes_outbox()
    );

    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop_reader = CancellationToken::new();
    let reader = follow(fx, seen.clone(), stop_reader.clone()).await?;

    // Orders through B at a steady rate, each timed from its 201.
    let (before, after) = (opts.failover_before, opts.failover_after);
    let begin = Instant::now();
    let crash_at = begin + before;
    let end = crash_at + after;
    let interval = Duration::from_secs_f64(1.0 / opts.failover_rate.max(0.1));
    let created: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
    let errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let writer = {
        let (http, url) = (fx.http.clone(), b.url());
        let bodies: Vec<_> = (0..fx.product_ids.len() * 3)
            .map(|k| fx.order_body(k))
            .collect();
        let (created, errors) = (created.clone(), errors.clone());
        tokio::spawn(async move {
            let mut in_flight = tokio::task::JoinSet::new();
            for k in 0u32.. {
                let due = begin + interval * k;
                if due >= end {
                    break;
                }
                tokio::time::sleep_until(due.into()).await;
                while in_flight.try_join_next().is_some() {}
                let req = http
                    .post(format!("{url}/api/v1/orders"))
                    .json(&bodies[k as usize % bodies.len()]);
                let (created, errors) = (created.clone(), errors.clone());
                in_flight.spawn(async move {
                    match send(req).await {
                        Ok(order) => {
                            let at = Instant::now();
                            if let Some(id) = order["id"].as_str() {
                                created
                                    .lock()
                                    .unwrap_or_else(|e| e.into_inner())
                                    .push((id.to_owned(), at));
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "an order through B failed");
                            errors.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                    }
                });
            }
            while in_flight.join_next().await.is_some() {}
        })
    };

    // The crash, then B's takeover (polled every 10 ms).
    tokio::time::sleep_until(crash_at.into()).await;
    let crashed = Instant::now();
    a.abort().await;
    let takeover_deadline = crashed + Duration::from_secs(60);
    let took_over = loop {
        if b.publishes_outbox() {
            break Instant::now();
        }
        if Instant::now() > takeover_deadline {
            stop_reader.cancel();
            b.stop().await;
            bail!("B did not take the outbox over within 60 s of A's crash");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    writer.await.context("the order writer failed")?;

    // Wait for every created order's event (B's relay polls every poll_interval_ms).
    let created = std::mem::take(&mut *created.lock().unwrap_or_else(|e| e.into_inner()));
    let wait_until = Instant::now() + Duration::from_secs(30);
    loop {
        let missing = {
            let seen = seen.lock().unwrap_or_else(|e| e.into_inner());
            created
                .iter()
                .filter(|(id, _)| !seen.created.contains_key(id))
                .count()
        };
        if missing == 0 || Instant::now() > wait_until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Let a duplicate that trails its first copy arrive too.
    tokio::time::sleep(Duration::from_millis(relay.poll_interval_ms * 2)).await;
    stop_reader.cancel();
    reader.await.context("the log reader panicked")??;
    b.stop().await;

    let seen = seen.lock().unwrap_or_else(|e| e.into_inner());
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    // When events flowed again after the crash (B's first batch, or A's last if it was
    // appending as it died).
    let resumed = seen.arrivals.iter().copied().find(|t| *t > crashed);
    let mut delays = Vec::new();
    let mut before_crash = Vec::new();
    let (mut lost, mut held_up) = (0u64, 0u64);
    for (id, at) in &created {
        let Some(appeared) = seen.created.get(id) else {
            lost += 1;
            continue;
        };
        let delay = ms(appeared.saturating_duration_since(*at));
        delays.push(delay);
        if *at < crashed {
            before_crash.push(delay);
        }
        if resumed.is_some_and(|r| *at < r && *appeared >= r) {
            held_up += 1;
        }
    }
    let stall_ms = resumed.map_or(f64::NAN, |t| ms(t - crashed));
    Ok(Failover {
        takeover_poll_ms: relay.takeover_poll_ms,
        poll_interval_ms: relay.poll_interval_ms,
        rate_per_sec: opts.failover_rate,
        before_crash_secs: before.as_secs_f64(),
        after_crash_secs: after.as_secs_f64(),
        first_replica_published: true,
        orders_created: created.len() as u64,
        errors: errors.load(std::sync::atomic::Ordering::SeqCst),
        events_in_log: seen.events,
        takeover_ms: ms(took_over - crashed),
        stall_ms,
        longest_delay_ms: delays.iter().copied().fold(f64::NAN, f64::max),
        before_crash_delay_p50_ms: quantile(&before_crash, 0.5),
        before_crash_delay_max_ms: before_crash.iter().copied().fold(f64::NAN, f64::max),
        held_up,
        lost,
        duplicates: seen.duplicates,
    })
}
