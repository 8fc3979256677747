//! The transactional outbox and its relay.
//!
//! A state change calls [`Outbox::enqueue`] inside its own transaction, so the change and its
//! events commit together or not at all. The [`Relay`] publishes unpublished rows in `seq`
//! order (SQLite has one writer, so `seq` order is commit order and per-aggregate order) and
//! stamps them published only after the bus acknowledged them. A crash between the two
//! publishes the batch again on restart: duplicates, never loss; readers deduplicate by
//! event id.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use shoplens_bus::{BusRecord, EventBus};
use shoplens_contract::Envelope;
use sqlx::{Row, SqliteConnection};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::RelayConfig;
use crate::db::Db;
use crate::metrics::Metrics;

/// Where a service writes its events; cheap to clone.
#[derive(Clone, Debug)]
pub struct Outbox {
    topic: Arc<str>,
    wake: Arc<Notify>,
}

impl Outbox {
    pub fn new(topic: &str) -> Outbox {
        Outbox {
            topic: topic.into(),
            wake: Arc::new(Notify::new()),
        }
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Writes `event` to the outbox as part of the caller's transaction.
    pub async fn enqueue(&self, tx: &mut SqliteConnection, event: &Envelope) -> sqlx::Result<()> {
        sqlx::query(
            "INSERT INTO outbox (event_id, topic, aggregate_id, event_type, payload, created_at)
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(event.event_id.to_string())
        .bind(&*self.topic)
        .bind(&event.aggregate_id)
        .bind(event.event_type().as_str())
        .bind(event.to_json())
        .bind(Utc::now().to_rfc3339())
        .execute(tx)
        .await?;
        Ok(())
    }

    /// Tells the relay there is something to publish; call after the commit.
    pub fn wake(&self) {
        self.wake.notify_one();
    }
}

struct RelayMetrics {
    published: Counter,
    failures: Counter,
    pending: Gauge,
}

/// Publishes a service's outbox to the bus.
pub struct Relay {
    db: Db,
    bus: Arc<dyn EventBus>,
    config: RelayConfig,
    wake: Arc<Notify>,
    metrics: RelayMetrics,
    batches_published: AtomicU64,
}

impl Relay {
    pub fn new(
        db: Db,
        outbox: &Outbox,
        bus: Arc<dyn EventBus>,
        config: RelayConfig,
        metrics: &Metrics,
    ) -> Relay {
        let m = RelayMetrics {
            published: Counter::default(),
            failures: Counter::default(),
            pending: Gauge::default(),
        };
        metrics.register(
            "outbox_published_events",
            "Events the relay published",
            m.published.clone(),
        );
        metrics.register(
            "outbox_publish_failures",
            "Failed bus publish attempts",
            m.failures.clone(),
        );
        metrics.register(
            "outbox_pending_events",
            "Outbox rows not yet published",
            m.pending.clone(),
        );
        Relay {
            db,
            bus,
            config,
            wake: outbox.wake.clone(),
            metrics: m,
            batches_published: AtomicU64::new(0),
        }
    }

    /// Publishes until `shutdown`, then drains what is left (for up to five seconds, while
    /// the bus accepts it), so a clean stop leaves nothing in the outbox.
    pub async fn run(self, shutdown: CancellationToken) {
        self.publish_until(&shutdown).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while tokio::time::Instant::now() < deadline {
            match self.publish_batch().await {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "outbox relay stopped with events still pending; they are published on the next start");
                    return;
                }
            }
        }
    }

    async fn publish_until(&self, shutdown: &CancellationToken) {
        let poll = Duration::from_millis(self.config.poll_interval_ms);
        let mut backoff = Duration::from_millis(50);
        let mut last_purge = tokio::time::Instant::now();
        loop {
            match self.publish_batch().await {
                Ok(0) => {
                    backoff = Duration::from_millis(50);
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = self.wake.notified() => {}
                        _ = tokio::time::sleep(poll) => {}
                    }
                }
                Ok(_) => backoff = Duration::from_millis(50),
                Err(e) => {
                    self.metrics.failures.inc();
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "outbox relay could not publish; will retry");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_millis(self.config.max_backoff_ms));
                }
            }
            if shutdown.is_cancelled() {
                return;
            }
            if last_purge.elapsed() > Duration::from_secs(60) {
                last_purge = tokio::time::Instant::now();
                if let Err(e) = self.purge().await {
                    tracing::warn!(error = %e, "could not purge published outbox rows");
                }
            }
        }
    }

    /// Publishes one batch of pending rows; returns how many were published.
    pub async fn publish_batch(&self) -> Result<usize, crate::Error> {
        let rows = sqlx::query(
            "SELECT seq, topic, aggregate_id, payload FROM outbox
             WHERE published_at IS NULL ORDER BY seq LIMIT ?",
        )
        .bind(self.config.batch_size)
        .fetch_all(&self.db.reader)
        .await?;
        if rows.is_empty() {
            self.metrics.pending.set(0);
            return Ok(0);
        }
        let first: i64 = rows[0].get("seq");
        let last: i64 = rows[rows.len() - 1].get("seq");
        let records: Vec<BusRecord> = rows
            .iter()
            .map(|r| BusRecord {
                topic: r.get("topic"),
                key: r.get("aggregate_id"),
                payload: Bytes::from(r.get::<Vec<u8>, _>("payload")),
            })
            .collect();
        self.bus.publish(&records).await?;
        let batches = self.batches_published.fetch_add(1, Ordering::SeqCst) + 1;
        if self.config.crash_after_batches == Some(batches) {
            tracing::error!(
                batches,
                "fault injection: crashing between publish and mark-published"
            );
            std::process::abort();
        }
        sqlx::query(
            "UPDATE outbox SET published_at = ? WHERE seq BETWEEN ? AND ? AND published_at IS NULL",
        )
        .bind(Utc::now().to_rfc3339())
        .bind(first)
        .bind(last)
        .execute(&self.db.writer)
        .await?;
        self.metrics.published.inc_by(records.len() as u64);
        let pending: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE published_at IS NULL")
                .fetch_one(&self.db.reader)
                .await?;
        self.metrics.pending.set(pending);
        Ok(records.len())
    }

    async fn purge(&self) -> sqlx::Result<()> {
        let cutoff = Utc::now() - chrono::Duration::hours(self.config.retention_hours as i64);
        sqlx::query("DELETE FROM outbox WHERE published_at IS NOT NULL AND published_at < ?")
            .bind(cutoff.to_rfc3339())
            .execute(&self.db.writer)
            .await?;
        Ok(())
    }
}

/// Counts outbox rows not yet published (for tests and health checks).
pub async fn pending(db: &Db) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE published_at IS NULL")
        .fetch_one(&db.reader)
        .await
}
