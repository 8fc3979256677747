//! The transactional outbox and its relay.
//!
//! A state change calls [`Outbox::enqueue`] inside its own transaction, so the change and its
//! events commit together or not at all. The [`Relay`] publishes unpublished rows in `seq`
//! order and stamps exactly those rows published, only after the bus acknowledged them. A
//! crash between the two publishes the batch again on restart: duplicates, never loss;
//! readers deduplicate by event id.
//!
//! Per-aggregate order: on SQLite (one writer) `seq` order is commit order. On PostgreSQL a
//! change reads its record `FOR UPDATE` before it enqueues (see [`crate::db`]), so a record's
//! next event gets a higher `seq` and commits later; a row of another aggregate that commits
//! late is published when it shows up (the relay picks rows by `published_at IS NULL`, never
//! by a high-water mark).
//!
//! One relay per database: on PostgreSQL every replica of a service runs a relay, and only the
//! one holding the service's advisory lock (a session lock on a connection of its own)
//! publishes; the others try for it every `relay.takeover_poll_ms`. When the holder dies its
//! session ends, the lock is free, and another replica takes over from the first unpublished
//! row: what the dead one published but had not stamped goes out again (readers deduplicate),
//! nothing is lost.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use shoplens_bus::{BusRecord, EventBus};
use shoplens_contract::Envelope;
use sqlx::Row;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::RelayConfig;
use crate::db::{Backend, Conn, Db};
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
    pub async fn enqueue(&self, tx: &mut Conn, event: &Envelope) -> sqlx::Result<()> {
        sqlx::query(
            "INSERT INTO outbox (event_id, topic, aggregate_id, event_type, payload, created_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(event.event_id.to_string())
        .bind(&*self.topic)
        .bind(&event.aggregate_id)
        .bind(event.event_type().as_str())
        .bind(event.to_json())
        .bind(crate::db::stamp(Utc::now()))
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
    leader: Gauge,
}

/// Publishes a service's outbox to the bus.
pub struct Relay {
    db: Db,
    bus: Arc<dyn EventBus>,
    config: RelayConfig,
    wake: Arc<Notify>,
    topic: Arc<str>,
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
            leader: Gauge::default(),
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
        metrics.register(
            "outbox_relay_leader",
            "1 while this replica's relay is the one publishing its service's outbox",
            m.leader.clone(),
        );
        Relay {
            db,
            bus,
            config,
            wake: outbox.wake.clone(),
            topic: outbox.topic.clone(),
            metrics: m,
            batches_published: AtomicU64::new(0),
        }
    }

    /// Its `outbox_relay_leader` gauge: 1 while it publishes.
    pub fn leader(&self) -> Gauge {
        self.metrics.leader.clone()
    }

    /// Publishes until `shutdown`, then drains what is left (for up to five seconds, while
    /// the bus accepts it), so a clean stop leaves nothing in the outbox.
    pub async fn run(self, shutdown: CancellationToken) {
        match self.db.backend() {
            Backend::Sqlite => {
                self.metrics.leader.set(1);
                self.publish_until(&shutdown, None).await;
                self.drain().await;
            }
            Backend::Postgres => loop {
                let Some(mut lock) = self.take_leadership(&shutdown).await else {
                    return;
                };
                self.metrics.leader.set(1);
                tracing::info!(topic = %self.topic, "this replica's relay publishes the outbox");
                if self.publish_until(&shutdown, Some(&mut lock)).await {
                    self.metrics.leader.set(0);
                    tracing::warn!(topic = %self.topic, "the relay lost its lock session; stopped publishing, will try to take it again");
                    continue;
                }
                // Still holding the lock: no other replica publishes while this one drains.
                self.drain().await;
                break;
            },
        }
        self.metrics.leader.set(0);
    }

    /// The advisory lock's key: one per service outbox (locks are per database already; the
    /// topic keeps two services sharing one database apart).
    fn lock_key(&self) -> i64 {
        crate::db::stable_hash(format!("shoplens.outbox.{}", self.topic).as_bytes()) as i64
    }

    /// Waits until this replica holds the outbox's lock (on a session of its own, returned),
    /// or `None` at shutdown.
    async fn take_leadership(&self, shutdown: &CancellationToken) -> Option<Conn> {
        let retry = Duration::from_millis(self.config.takeover_poll_ms.max(10));
        let mut said_standby = false;
        loop {
            match self.try_lock().await {
                Ok(Some(conn)) => return Some(conn),
                Ok(None) if !said_standby => {
                    said_standby = true;
                    tracing::info!(topic = %self.topic, "another replica's relay publishes the outbox; standing by");
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "the relay could not ask for its lock; will retry")
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                _ = tokio::time::sleep(retry) => {}
            }
        }
    }

    async fn try_lock(&self) -> sqlx::Result<Option<Conn>> {
        let mut conn = self.db.connect_alone().await?;
        // A publisher whose machine died (no FIN) loses its session, and with it the lock, in
        // about 11 s rather than the kernel's default two hours.
        for setting in [
            "SET tcp_keepalives_idle = 5",
            "SET tcp_keepalives_interval = 2",
            "SET tcp_keepalives_count = 3",
        ] {
            sqlx::query(setting).execute(&mut conn).await?;
        }
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(self.lock_key())
            .fetch_one(&mut conn)
            .await?;
        Ok(got.then_some(conn))
    }

    /// After `shutdown`: publishes what is left (for up to five seconds, while the bus accepts
    /// it), so a clean stop leaves nothing in the outbox.
    async fn drain(&self) {
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

    /// Publishes until `shutdown` (returns false) or, holding `lock`, until its session is
    /// gone (returns true: another replica may be publishing already).
    async fn publish_until(
        &self,
        shutdown: &CancellationToken,
        mut lock: Option<&mut Conn>,
    ) -> bool {
        let poll = Duration::from_millis(self.config.poll_interval_ms);
        let mut backoff = Duration::from_millis(50);
        let mut last_purge = tokio::time::Instant::now();
        loop {
            if let Some(lock) = lock.as_deref_mut() {
                // The lock lives as long as its session: check the session before each batch.
                if let Err(e) = sqlx::query("SELECT 1").execute(&mut *lock).await {
                    tracing::warn!(error = %e, "the relay's lock session failed");
                    return true;
                }
            }
            match self.publish_batch().await {
                Ok(0) => {
                    backoff = Duration::from_millis(50);
                    tokio::select! {
                        _ = shutdown.cancelled() => return false,
                        _ = self.wake.notified() => {}
                        _ = tokio::time::sleep(poll) => {}
                    }
                }
                Ok(_) => backoff = Duration::from_millis(50),
                Err(e) => {
                    self.metrics.failures.inc();
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "outbox relay could not publish; will retry");
                    tokio::select! {
                        _ = shutdown.cancelled() => return false,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_millis(self.config.max_backoff_ms));
                }
            }
            if shutdown.is_cancelled() {
                return false;
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
             WHERE published_at IS NULL ORDER BY seq LIMIT $1",
        )
        .bind(i64::from(self.config.batch_size))
        .fetch_all(&self.db.reader)
        .await?;
        if rows.is_empty() {
            self.metrics.pending.set(0);
            return Ok(0);
        }
        let seqs: Vec<i64> = rows.iter().map(|r| r.get("seq")).collect();
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
        // Exactly the rows published: on PostgreSQL a row inside their `seq` range may have
        // committed since they were read, and it is not published yet.
        let sql = format!(
            "UPDATE outbox SET published_at = $1 WHERE seq IN ({}) AND published_at IS NULL",
            crate::db::params(2, seqs.len())
        );
        let mut mark = sqlx::query(&sql).bind(crate::db::stamp(Utc::now()));
        for seq in &seqs {
            mark = mark.bind(*seq);
        }
        mark.execute(&self.db.writer).await?;
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
        sqlx::query("DELETE FROM outbox WHERE published_at IS NOT NULL AND published_at < $1")
            .bind(crate::db::stamp(cutoff))
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
