//! The backlog: shop-shaped synthetic events without end, as bus records on the five service
//! topics, and publishing them.

use anyhow::Context;
use shoplens_bus::{BusRecord, EventBus};
use shoplens_contract::{Envelope, Service};
use shoplens_test_support::events::{StreamSpec, to_record};
use tokio::time::Instant;

use crate::synthetic::ShopEvents;

const ORDERS_PER_CHUNK: u32 = 2_000;

/// The backlog's events: 2,000 orders a simulated day, 1,000 customers and 200 products.
pub(super) fn backlog_events(seed: u64) -> ShopEvents {
    ShopEvents::new(StreamSpec {
        seed,
        customers: 1_000,
        products: 200,
        orders: ORDERS_PER_CHUNK,
        span: chrono::Duration::days(1),
        ..StreamSpec::default()
    })
}

/// The five service topics, under `prefix` when there is one.
pub(super) fn topics(prefix: &str) -> Vec<String> {
    Service::ALL
        .iter()
        .map(|s| {
            if prefix.is_empty() {
                s.default_topic().to_owned()
            } else {
                format!("{prefix}.{}", s.default_topic())
            }
        })
        .collect()
}

/// `e` as a bus record on its service's topic, under `prefix` when there is one.
pub(super) fn record(prefix: &str, e: &Envelope) -> BusRecord {
    let mut r = to_record(e);
    if !prefix.is_empty() {
        r.topic = format!("{prefix}.{}", r.topic);
    }
    r
}

/// Publishes `n` more generated events; returns (payload bytes, seconds).
pub(super) async fn fill(
    bus: &dyn EventBus,
    generator: &mut ShopEvents,
    prefix: &str,
    n: u64,
    chunk: usize,
) -> anyhow::Result<(u64, f64)> {
    let started = Instant::now();
    let mut bytes = 0u64;
    let mut left = n;
    let mut publish_secs = 0.0;
    while left > 0 {
        let take = left.min(chunk as u64) as usize;
        let records: Vec<BusRecord> = generator
            .take(take)
            .iter()
            .map(|e| record(prefix, e))
            .collect();
        bytes += records.iter().map(|r| r.payload.len() as u64).sum::<u64>();
        let t = Instant::now();
        bus.publish(&records).await.context("publish the backlog")?;
        publish_secs += t.elapsed().as_secs_f64();
        left -= take as u64;
    }
    tracing::debug!(
        total_secs = started.elapsed().as_secs_f64(),
        publish_secs,
        "filled"
    );
    Ok((bytes, publish_secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_events_are_exact_in_number_and_distinct() {
        let mut g = backlog_events(3);
        let a = g.take(10_000);
        let b = g.take(25_000);
        assert_eq!(a.len(), 10_000);
        assert_eq!(b.len(), 25_000);
        let ids: std::collections::HashSet<_> = a.iter().chain(&b).map(|e| e.event_id).collect();
        assert_eq!(ids.len(), 35_000);
        let registrations = a
            .iter()
            .chain(&b)
            .filter(|e| e.producer == Service::Customer)
            .count();
        assert_eq!(registrations, 1_000);
    }
}
