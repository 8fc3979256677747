//! Event-driven cache invalidation: when the bus says an order, payment, shipment (or a
//! customer or product) changed, drop its fresh cache entry so the next request sees the
//! change at once, while the TTL cache keeps absorbing the read load in between.
//!
//! The consumer starts at the end of the log: history says nothing about what is cached
//! now. Nothing is committed, for the same reason. A load that was in flight when the event
//! arrived could put the old value back; a second eviction one call timeout later closes
//! that window.

use std::sync::Arc;
use std::time::Duration;

use shoplens_bus::EventSource;
use shoplens_contract::{DomainEvent, Envelope};
use tokio_util::sync::CancellationToken;

use crate::compose::Composer;

/// Records read per poll.
const BATCH: usize = 512;

/// Reads `source` until `shutdown`, evicting what each event makes out of date.
pub async fn run(
    mut source: Box<dyn EventSource>,
    composer: Arc<Composer>,
    shutdown: CancellationToken,
) {
    match source.end_offsets().await {
        Ok(ends) => {
            for end in ends {
                if let Err(e) = source.seek(&end) {
                    tracing::warn!(error = %e, topic = end.topic, "could not skip to the end of the topic");
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not read end offsets; replaying the log"),
    }
    let recheck = composer.config.call_timeout() + Duration::from_millis(50);
    loop {
        let records = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = source.poll(BATCH, Duration::from_millis(500)) => r,
        };
        let records = match records {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "event bus poll failed; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
                }
            }
        };
        let mut events = Vec::with_capacity(records.len());
        for record in records {
            composer.metrics.events_seen.inc();
            match Envelope::decode(&record.payload) {
                Ok(env) => events.push(env.payload),
                Err(e) => {
                    composer.metrics.events_undecodable.inc();
                    tracing::warn!(
                        error = %e, topic = record.topic, offset = record.offset,
                        "skipping an undecodable event"
                    );
                }
            }
        }
        if events.is_empty() {
            continue;
        }
        for event in &events {
            evict(&composer, event).await;
        }
        let composer = composer.clone();
        tokio::spawn(async move {
            tokio::time::sleep(recheck).await;
            for event in &events {
                evict(&composer, event).await;
            }
        });
    }
    tracing::debug!("cache invalidation stopped");
}

/// Drops the fresh cache entries `event` makes out of date.
pub async fn evict(composer: &Composer, event: &DomainEvent) {
    match event {
        DomainEvent::OrderCreated(e) => {
            composer.orders.invalidate(&e.order_id).await;
            composer
                .lists
                .invalidate_prefix(&list_prefix(&e.customer_id));
        }
        DomainEvent::OrderStatusChanged(e) => {
            composer.orders.invalidate(&e.order_id).await;
            composer
                .lists
                .invalidate_prefix(&list_prefix(&e.customer_id));
        }
        DomainEvent::PaymentCompleted(_)
        | DomainEvent::PaymentFailed(_)
        | DomainEvent::PaymentRefunded(_) => {
            if let Some(order_id) = event.order_id() {
                composer.payments.invalidate(order_id).await;
            }
        }
        DomainEvent::ShipmentCreated(_)
        | DomainEvent::ShipmentLocationUpdated(_)
        | DomainEvent::ShipmentDelivered(_) => {
            if let Some(order_id) = event.order_id() {
                composer.shipments.invalidate(order_id).await;
            }
        }
        DomainEvent::CustomerUpdated(e) => composer.customers.invalidate(&e.customer_id).await,
        DomainEvent::ProductPriceChanged(e) => composer.products.invalidate(&e.product_id).await,
        DomainEvent::CustomerRegistered(_)
        | DomainEvent::ProductCreated(_)
        | DomainEvent::ProductPurchased(_) => {}
    }
}

/// The key prefix of a customer's cached order pages (`customer|limit|cursor`).
pub fn list_prefix(customer_id: &str) -> String {
    format!("{customer_id}|")
}
