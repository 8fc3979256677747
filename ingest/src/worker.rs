//! The ingest loop: poll the bus, decode and validate, park, batch, apply to the sink, and
//! only then commit the bus position.
//!
//! Guarantees (with a sink that keeps the rules of [`crate::sink`]):
//! - nothing is lost: a bus position is committed only after the sink has durably stored
//!   everything before it, and a failed apply is retried (with back-off, reading no further
//!   than the next batch) until it succeeds or the worker is stopped;
//! - nothing is counted twice: records below the position the sink stored are skipped, and
//!   the sink skips event ids it already holds (relay duplicates, replays after a crash or a
//!   rebalance);
//! - one bad record never stops a partition: it becomes a dead letter with its reason, and
//!   later events of the same aggregate (same topic and key) are parked behind it as dead
//!   letters too, so they cannot silently overtake it;
//! - memory is bounded: at most two batches of `batch_max_events` events are held, the one
//!   being applied and the one read ahead meanwhile (backpressure: while the sink refuses a
//!   batch, the worker reads no more than the next).

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shoplens_bus::{BusRecord, ConsumedRecord, EventBus, EventSource, Position};
use shoplens_contract::tables::TableRows;
use shoplens_contract::{DecodeError, Envelope};
use shoplens_readmodel::freshness::Freshness;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::IngestError;
use crate::metrics::{IngestMetrics, ReasonLabels, TableLabels};
use crate::sink::{ApplyReport, DeadLetter, IngestBatch, Sink};

/// How long a stopping worker keeps retrying to apply what it holds.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// How the worker batches and retries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerConfig {
    /// Flush a batch once it holds this many events. The worker holds up to two batches:
    /// one being applied, one read ahead meanwhile.
    pub batch_max_events: usize,
    /// Flush a batch at most this long after its first event arrived.
    pub batch_max_delay_ms: u64,
    /// Flush a batch once the bus has nothing more for now and its first event is this old:
    /// at a low rate events become visible about this soon; at a high rate the bus always
    /// has more, so batches grow (to `batch_max_events`, or what arrives within
    /// `batch_max_delay_ms`) and each apply carries more.
    pub batch_min_delay_ms: u64,
    /// First back-off after a failed apply; doubles up to `retry_max_ms`.
    pub retry_initial_ms: u64,
    /// Longest back-off between apply attempts while the sink is down.
    pub retry_max_ms: u64,
    /// How often the worker samples the bus's end offsets for the lag figure.
    pub lag_interval_ms: u64,
    /// Threads that decode and validate a polled batch of records side by side (the
    /// records are then taken in their order, and applied in order): 0 for one per core, 1
    /// for the worker's own thread only.
    pub decode_threads: usize,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            batch_max_events: 20_000,
            batch_max_delay_ms: 250,
            batch_min_delay_ms: 50,
            retry_initial_ms: 100,
            retry_max_ms: 5_000,
            lag_interval_ms: 1_000,
            decode_threads: 0,
        }
    }
}

/// What a worker has done, shared with the HTTP API and the rebuild supervisor.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct WorkerStatus {
    /// The read-model generation this worker writes.
    pub generation: u32,
    /// Next offset per (topic, partition) stored in the sink.
    pub positions: Vec<Position>,
    /// Events on the bus beyond `positions`, at the last sample (`None` before one).
    pub lag_events: Option<u64>,
    pub freshness: Freshness,
    pub events_consumed: u64,
    pub rows_written: u64,
    pub duplicates_skipped: u64,
    pub dead_letters: u64,
    pub batches: u64,
    /// Whether the last apply attempt succeeded.
    pub sink_up: bool,
    pub last_error: Option<String>,
    pub running: bool,
}

impl WorkerStatus {
    /// Events applied so far according to the stored positions (next offsets summed).
    pub fn applied_offsets(&self) -> u64 {
        self.positions.iter().map(|p| p.next_offset).sum()
    }
}

pub type SharedStatus = Arc<Mutex<WorkerStatus>>;

/// One worker: one bus consumer-group member writing one read-model generation.
pub struct Worker {
    source: Box<dyn EventSource>,
    sink: Arc<dyn Sink>,
    config: WorkerConfig,
    metrics: Arc<IngestMetrics>,
    status: SharedStatus,
    /// Whether this worker writes the live generation: only that one's figures go to the
    /// process's metrics (a rebuild's progress is in the rebuild status instead).
    live: Arc<std::sync::atomic::AtomicBool>,
    /// Where dead letters are also published (besides the sink's dead-letter table).
    dead_letter_topic: Option<DeadLetterTopic>,
    /// For a consumer-group member: the partitions this worker claimed in the sink (see
    /// [`Worker::claim`]); it takes records of these only. `None` for a source read alone.
    claimed: Option<Vec<(String, i32)>>,
    /// Claimed partitions whose seek to the stored position has not succeeded yet: their
    /// records are dropped until it does (they are read again from there).
    unsought: HashSet<(String, i32)>,
    /// The assignment changed while the worker read ahead during an apply: claim it again
    /// once the apply is done.
    claim_pending: bool,
    /// Whether to read the next batch while the sink applies one: only with a second CPU
    /// to apply on. On one, the two only take turns, and lose more to evicting each other's
    /// caches than they win by filling the store's fsync waits (measured: 20% more CPU per
    /// event).
    read_ahead: bool,
    /// Threads that decode a polled batch (`decode_threads`, 0 resolved to the CPUs this
    /// process may use, once: finding that out reads cgroup files).
    decode_threads: usize,
}

/// A bus topic that receives a copy of every dead letter, for tools that watch the bus.
#[derive(Clone)]
pub struct DeadLetterTopic {
    pub bus: Arc<dyn EventBus>,
    pub topic: String,
}

impl DeadLetterTopic {
    /// The bus record of a dead letter: JSON with its coordinates, reason and the original
    /// bytes (as text), keyed like the original.
    pub fn record(&self, d: &DeadLetter) -> BusRecord {
        let body = serde_json::json!({
            "topic": d.topic,
            "partition": d.partition,
            "offset": d.offset,
            "key": d.key,
            "event_id": d.event_id,
            "event_type": d.event_type,
            "reason_kind": d.reason_kind,
            "reason": d.reason,
            "payload": String::from_utf8_lossy(&d.payload),
            "received_at_ms": d.received_at_ms,
        });
        BusRecord {
            topic: self.topic.clone(),
            key: d.key.clone(),
            payload: serde_json::to_vec(&body)
                .expect("JSON values always serialize")
                .into(),
        }
    }
}

impl Worker {
    pub fn new(
        generation: u32,
        source: Box<dyn EventSource>,
        sink: Arc<dyn Sink>,
        config: WorkerConfig,
        metrics: Arc<IngestMetrics>,
    ) -> Worker {
        let status = WorkerStatus {
            generation,
            ..Default::default()
        };
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        let decode_threads = match config.decode_threads {
            0 => cpus,
            n => n,
        };
        Worker {
            source,
            sink,
            config,
            metrics,
            status: Arc::new(Mutex::new(status)),
            live: Arc::new(std::sync::atomic::AtomicBool::new(true)),
            dead_letter_topic: None,
            claimed: None,
            unsought: HashSet::new(),
            claim_pending: false,
            read_ahead: cpus > 1,
            decode_threads,
        }
    }

    /// Also publishes dead letters to `topic` (only while this worker is the live one, so a
    /// rebuild does not publish them again).
    pub fn with_dead_letter_topic(mut self, topic: Option<DeadLetterTopic>) -> Worker {
        self.dead_letter_topic = topic;
        self
    }

    pub fn status(&self) -> SharedStatus {
        self.status.clone()
    }

    /// The switch that says whether this worker writes the live generation (a rebuild's
    /// worker is switched on when it becomes live).
    pub fn live_switch(&self) -> Arc<std::sync::atomic::AtomicBool> {
        self.live.clone()
    }

    /// Runs until `shutdown`, then applies what it holds (retrying for a few seconds if
    /// the sink is down). Stopping never loses buffered events: what was not applied was not
    /// committed either, and is read again on restart.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), IngestError> {
        self.set_status(|s| s.running = true);
        let result = self.run_inner(&shutdown).await;
        self.set_status(|s| {
            s.running = false;
            if let Err(e) = &result {
                s.last_error = Some(e.to_string());
            }
        });
        result
    }

    async fn run_inner(&mut self, shutdown: &CancellationToken) -> Result<(), IngestError> {
        let Some(start) = self.load_start_state(shutdown).await? else {
            return Ok(());
        };
        let mut state = start;
        let mut next_lag_sample = Instant::now();
        // Whether the last poll found the bus drained (fewer records than there was room for).
        let mut drained = false;
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            let wait = match state.first_at {
                Some(first) => {
                    let max = first + Duration::from_millis(self.config.batch_max_delay_ms);
                    let min = first + Duration::from_millis(self.config.batch_min_delay_ms);
                    // Wake up when the batch may go, if the bus stays quiet until then.
                    let deadline = if Instant::now() < min {
                        min.min(max)
                    } else {
                        max
                    };
                    deadline.saturating_duration_since(Instant::now())
                }
                None => Duration::from_millis(self.config.batch_max_delay_ms.max(50)),
            };
            // (A batch holds at least one event, whatever the configuration says: with none
            // the loop below would flush an empty batch without ever polling.)
            let max_events = self.config.batch_max_events.max(1);
            let room = max_events.saturating_sub(state.buffered());
            // A batch filled while the last one was applied goes without another poll.
            if room > 0 {
                let polled = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    polled = self.source.poll(room, wait) => polled,
                };
                match polled {
                    Ok(records) => {
                        drained = records.len() < room;
                        if !self.take_polled(&mut state, records) {
                            // What these records hold is read again from the stored positions.
                            if !self.claim(&mut state, shutdown).await? {
                                break;
                            }
                            continue;
                        }
                        self.seek_unsought(&state);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot poll the bus; retrying");
                        self.set_status(|s| s.last_error = Some(format!("bus: {e}")));
                        tokio::select! {
                            _ = shutdown.cancelled() => break,
                            _ = tokio::time::sleep(Duration::from_millis(self.config.retry_initial_ms)) => {}
                        }
                    }
                }
            }
            let due = state.first_at.is_some_and(|first| {
                let age = first.elapsed();
                age >= Duration::from_millis(self.config.batch_max_delay_ms)
                    || (drained && age >= Duration::from_millis(self.config.batch_min_delay_ms))
            });
            if (state.buffered() >= max_events || due)
                && !self.flush_or_claim(&mut state, shutdown).await?
            {
                break;
            }
            if Instant::now() >= next_lag_sample {
                self.sample_lag(&state).await;
                next_lag_sample =
                    Instant::now() + Duration::from_millis(self.config.lag_interval_ms);
            }
        }
        // Drain: what is buffered is applied before the worker stops, while the sink takes
        // it within DRAIN_TIMEOUT; after that the batch is simply read again on restart.
        let drain = CancellationToken::new();
        let deadline = {
            let drain = drain.clone();
            tokio::spawn(async move {
                tokio::time::sleep(DRAIN_TIMEOUT).await;
                drain.cancel();
            })
        };
        match self.flush(&mut state, &drain, false).await {
            // Fenced off: the new owner reads it again.
            Ok(()) | Err(IngestError::Fenced(_)) => {}
            Err(e) => return Err(e),
        }
        deadline.abort();
        if let Err(e) = self.source.commit(&state.stored_positions()).await {
            tracing::warn!(error = %e, "cannot commit bus positions on stop");
        }
        Ok(())
    }

    /// Decodes polled records and takes them into `state`; `false` (taking none) if the
    /// source's assignment changed since this worker claimed it.
    fn take_polled(&self, state: &mut BatchState, records: Vec<ConsumedRecord>) -> bool {
        take_polled(
            self.reporter(),
            self.source.as_ref(),
            &self.claimed,
            &self.unsought,
            state,
            records,
            self.decode_threads,
        )
    }

    fn reporter(&self) -> Reporter<'_> {
        Reporter {
            metrics: &self.metrics,
            status: &self.status,
            live: &self.live,
        }
    }

    /// Flushes; if another worker fenced this one off meanwhile, claims the assignment again
    /// and re-reads. `false` if stopped meanwhile.
    async fn flush_or_claim(
        &mut self,
        state: &mut BatchState,
        shutdown: &CancellationToken,
    ) -> Result<bool, IngestError> {
        match self.flush(state, shutdown, self.read_ahead).await {
            Ok(()) if std::mem::take(&mut self.claim_pending) => self.claim(state, shutdown).await,
            Ok(()) => Ok(true),
            Err(IngestError::Fenced(why)) => {
                tracing::warn!(reason = why, "fenced off; claiming the assignment again");
                self.claim(state, shutdown).await
            }
            Err(e) => Err(e),
        }
    }

    /// Claims the source's current assignment in the sink (fencing off any earlier writer
    /// of those partitions), drops what is buffered, and seeks every claimed partition back
    /// to the position the sink stored, so nothing dropped is lost and nothing stored is
    /// counted again. `false` if stopped while the sink was down.
    async fn claim(
        &mut self,
        state: &mut BatchState,
        shutdown: &CancellationToken,
    ) -> Result<bool, IngestError> {
        let Some(owned) = self.source.owned_partitions() else {
            return Ok(true);
        };
        let claimed = self
            .until_the_sink_answers(shutdown, |sink| {
                let owned = owned.clone();
                async move {
                    let stored = sink.claim(&owned).await?;
                    let parked = sink.parked_keys().await?;
                    Ok((parked, stored))
                }
            })
            .await?;
        let Some((parked, stored)) = claimed else {
            return Ok(false);
        };
        tracing::info!(
            partitions = ?owned,
            stored = ?stored.iter().map(|p| (p.partition, p.next_offset)).collect::<Vec<_>>(),
            "claimed the assigned partitions"
        );
        *state = BatchState::new(parked.into_iter().collect(), &stored);
        self.unsought = owned.iter().cloned().collect();
        self.claimed = Some(owned);
        self.seek_unsought(state);
        self.set_status(|s| s.positions = stored);
        Ok(true)
    }

    /// Seeks each claimed partition not sought yet to its stored position (the start of the
    /// partition if none is stored).
    fn seek_unsought(&mut self, state: &BatchState) {
        let pending: Vec<(String, i32)> = self.unsought.iter().cloned().collect();
        for (topic, partition) in pending {
            let next_offset = state.stored.get(&topic, partition).unwrap_or(0);
            let position = Position {
                topic: topic.clone(),
                partition,
                next_offset,
            };
            match self.source.seek(&position) {
                Ok(()) => {
                    tracing::info!(topic, partition, next_offset, "sought the stored position");
                    self.unsought.remove(&(topic, partition));
                }
                Err(e) => {
                    tracing::debug!(error = %e, topic, partition, "seek not possible yet; retrying");
                }
            }
        }
    }

    /// Reads what the sink remembers: parked aggregates and stored positions. Retries while
    /// the sink is down; `None` if stopped meanwhile.
    async fn load_start_state(
        &mut self,
        shutdown: &CancellationToken,
    ) -> Result<Option<BatchState>, IngestError> {
        let loaded = self
            .until_the_sink_answers(shutdown, |sink| async move {
                let parked = sink.parked_keys().await?;
                let stored = sink.stored_positions().await?;
                let freshness = sink.freshness().await?;
                Ok((parked, stored, freshness))
            })
            .await?;
        let Some((parked, stored, freshness)) = loaded else {
            return Ok(None);
        };
        for p in &stored {
            // Where the bus can seek now (the embedded log), start there; Kafka members join
            // their group later, so records below the stored position are also skipped as
            // they arrive.
            if let Err(e) = self.source.seek(p) {
                tracing::debug!(error = %e, topic = p.topic, partition = p.partition, "seek deferred");
            }
        }
        let state = BatchState::new(parked.into_iter().collect(), &stored);
        self.set_status(|s| {
            s.positions = stored;
            s.freshness = freshness;
            s.sink_up = true;
        });
        self.update_gauges(freshness);
        Ok(Some(state))
    }

    /// Runs `op` on the sink until it succeeds, backing off while the sink is unavailable;
    /// a corrupt store stops the worker. `None` if stopped meanwhile.
    async fn until_the_sink_answers<T, Op, Fut>(
        // `&mut`: a `&Worker` is not `Send` (the event source is not `Sync`).
        &mut self,
        shutdown: &CancellationToken,
        mut op: Op,
    ) -> Result<Option<T>, IngestError>
    where
        Op: FnMut(Arc<dyn Sink>) -> Fut + Send,
        Fut: std::future::Future<Output = Result<T, IngestError>> + Send,
        T: Send,
    {
        let mut backoff = Backoff::new(&self.config);
        loop {
            match op(self.sink.clone()).await {
                Ok(done) => return Ok(Some(done)),
                Err(IngestError::Corrupt(e)) => return Err(IngestError::Corrupt(e)),
                Err(e) => {
                    self.sink_failed(&e);
                    if !backoff.wait(shutdown).await {
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// Applies the buffered batch, retrying while the sink is unavailable, then commits.
    /// With `read_ahead`, the next batch is read, decoded and taken into `state` while the
    /// sink applies this one (on its own threads), so the two overlap.
    async fn flush(
        &mut self,
        state: &mut BatchState,
        shutdown: &CancellationToken,
        read_ahead: bool,
    ) -> Result<(), IngestError> {
        if state.positions.is_empty() {
            state.first_at = None;
            return Ok(());
        }
        let batch_duplicates = std::mem::take(&mut state.batch_duplicates);
        let batch = state.finish();
        let events = batch.row_count() + batch.dead_letters.len() + batch_duplicates;
        let span = tracing::debug_span!("apply", events, rows = batch.row_count());
        let applied = {
            // Built from the fields, not `self.reporter()`: the source is polled mutably
            // while the apply future holds this.
            let reporter = Reporter {
                metrics: &self.metrics,
                status: &self.status,
                live: &self.live,
            };
            let apply = apply_until_stored(&*self.sink, &batch, &self.config, reporter, shutdown)
                .instrument(span);
            tokio::pin!(apply);
            loop {
                let room = self
                    .config
                    .batch_max_events
                    .saturating_sub(state.buffered());
                if !read_ahead || room == 0 || self.claim_pending {
                    break apply.await;
                }
                // Both polls are cancel-safe: a poll cut short by the end of the apply leaves
                // its records to the next one.
                let wait = Duration::from_millis(self.config.batch_max_delay_ms.max(50));
                tokio::select! {
                    biased;
                    applied = &mut apply => break applied,
                    polled = self.source.poll(room, wait) => match polled {
                        Ok(records) => {
                            if !take_polled(
                                reporter,
                                self.source.as_ref(),
                                &self.claimed,
                                &self.unsought,
                                state,
                                records,
                                self.decode_threads,
                            ) {
                                self.claim_pending = true;
                            }
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "cannot read ahead; waiting for the apply");
                            break apply.await;
                        }
                    },
                }
            }
        };
        let Some(mut report) = applied? else {
            // Stopped while the sink is down: nothing was committed, so the batch is read
            // again on restart. What was read ahead must not be applied without it.
            state.abandon();
            return Ok(());
        };
        if !self
            .publish_dead_letters(&batch.dead_letters, shutdown)
            .await
        {
            // Stopped while the bus is down: nothing committed, so read again on restart
            // (the sink skips what it already holds).
            state.abandon();
            return Ok(());
        }
        state.applied(&batch.positions);
        report.duplicates_skipped += batch_duplicates;
        if self.is_live() {
            self.count_batch(&batch, &report, events);
        }
        let freshness = match self.sink.freshness().await {
            Ok(f) => Some(f),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the freshness watermark");
                None
            }
        };
        let positions = state.stored_positions();
        self.set_status(|s| {
            s.positions = positions.clone();
            s.rows_written += report.rows_written as u64;
            s.duplicates_skipped += report.duplicates_skipped as u64;
            s.dead_letters += report.dead_letters_written as u64;
            s.batches += 1;
            s.sink_up = true;
            s.last_error = None;
            if let Some(f) = freshness {
                s.freshness = f;
            }
        });
        if let Some(f) = freshness {
            self.update_gauges(f);
        }
        crate::failpoint::hit(crate::failpoint::WORKER_APPLIED);
        // The sink holds the data and its positions; committing to the bus only saves
        // re-reading. A failed commit is harmless (the records are skipped when re-read).
        if let Err(e) = self.source.commit(&batch.positions).await {
            tracing::warn!(error = %e, "cannot commit bus positions; they are re-read and skipped");
        }
        Ok(())
    }

    /// Publishes dead letters to the dead-letter topic, retrying while the bus refuses;
    /// `false` if stopped first. At least once: a replay may publish one again.
    async fn publish_dead_letters(
        &mut self,
        letters: &[DeadLetter],
        shutdown: &CancellationToken,
    ) -> bool {
        let Some(dlq) = &self.dead_letter_topic else {
            return true;
        };
        if letters.is_empty() || !self.is_live() {
            return true;
        }
        let records: Vec<BusRecord> = letters.iter().map(|d| dlq.record(d)).collect();
        let mut backoff = Backoff::new(&self.config);
        loop {
            match dlq.bus.publish(&records).await {
                Ok(()) => return true,
                Err(e) => {
                    tracing::warn!(error = %e, topic = dlq.topic, "cannot publish dead letters; retrying");
                    self.set_status(|s| s.last_error = Some(format!("dead-letter topic: {e}")));
                    if !backoff.wait(shutdown).await {
                        return false;
                    }
                }
            }
        }
    }

    async fn sample_lag(&mut self, state: &BatchState) {
        let ends =
            match tokio::time::timeout(Duration::from_secs(2), self.source.end_offsets()).await {
                Ok(Ok(ends)) => ends,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "cannot read end offsets");
                    return;
                }
                Err(_) => return,
            };
        if ends.is_empty() {
            // A Kafka member before its group join owns no partitions yet: lag unknown.
            self.set_status(|s| s.lag_events = None);
            return;
        }
        let lag: u64 = ends
            .iter()
            .map(|end| {
                let at = state.stored.get(&end.topic, end.partition).unwrap_or(0);
                end.next_offset.saturating_sub(at)
            })
            .sum();
        self.set_status(|s| s.lag_events = Some(lag));
        if self.is_live() {
            self.metrics.lag_events.set(lag as i64);
        }
    }

    fn sink_failed(&self, e: &IngestError) {
        self.reporter().sink_failed(e);
    }

    fn update_gauges(&self, f: Freshness) {
        if self.is_live() {
            self.metrics.freshness_as_of_ms.set(f.as_of_ms.unwrap_or(0));
            self.metrics
                .freshness_visible_at_ms
                .set(f.visible_at_ms.unwrap_or(0));
        }
    }

    fn is_live(&self) -> bool {
        self.reporter().is_live()
    }

    /// Adds an applied batch to the process's counters.
    fn count_batch(&self, batch: &IngestBatch, report: &ApplyReport, events: usize) {
        self.metrics.batches.inc();
        self.metrics.batch_events.observe(events as f64);
        self.metrics
            .duplicates_skipped
            .inc_by(report.duplicates_skipped as u64);
        for (table, rows) in per_table_new_rows(batch, report.rows_written) {
            self.metrics
                .rows_written
                .get_or_create(&TableLabels {
                    table: table.to_owned(),
                })
                .inc_by(rows);
        }
        for dl in &batch.dead_letters {
            self.metrics
                .dead_letters
                .get_or_create(&ReasonLabels {
                    reason: dl.reason_kind.clone(),
                })
                .inc();
        }
    }

    fn set_status(&self, f: impl FnOnce(&mut WorkerStatus)) {
        self.reporter().set_status(f);
    }
}

/// Where a worker reports what it does: its status, and the process's metrics while it
/// writes the live generation. Borrowed apart from the worker's event source, so an apply
/// can report while the source reads ahead.
#[derive(Clone, Copy)]
struct Reporter<'a> {
    metrics: &'a IngestMetrics,
    status: &'a SharedStatus,
    live: &'a std::sync::atomic::AtomicBool,
}

impl Reporter<'_> {
    fn is_live(self) -> bool {
        self.live.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn set_status(self, f: impl FnOnce(&mut WorkerStatus)) {
        f(&mut self.status.lock().expect("status lock"));
    }

    fn sink_failed(self, e: &IngestError) {
        tracing::warn!(error = %e, "the read-model sink refused a request; backing off");
        if self.is_live() {
            self.metrics.sink_failures.inc();
        }
        self.set_status(|s| {
            s.sink_up = false;
            s.last_error = Some(e.to_string());
        });
    }
}

/// Applies `batch`, retrying while the sink is unavailable; `None` if stopped first.
async fn apply_until_stored(
    sink: &dyn Sink,
    batch: &IngestBatch,
    config: &WorkerConfig,
    reporter: Reporter<'_>,
    shutdown: &CancellationToken,
) -> Result<Option<ApplyReport>, IngestError> {
    let mut backoff = Backoff::new(config);
    loop {
        let started = Instant::now();
        match sink.apply(batch).await {
            Ok(report) => {
                if reporter.is_live() {
                    reporter
                        .metrics
                        .apply_seconds
                        .observe(started.elapsed().as_secs_f64());
                }
                return Ok(Some(report));
            }
            Err(IngestError::Corrupt(e)) => return Err(IngestError::Corrupt(e)),
            Err(IngestError::Fenced(e)) => return Err(IngestError::Fenced(e)),
            Err(e) => {
                reporter.sink_failed(&e);
                if !backoff.wait(shutdown).await {
                    return Ok(None);
                }
            }
        }
    }
}

/// Decodes polled records and takes those this worker owns into `state`; `false` (taking
/// none) if `source`'s assignment differs from `claimed`, so the caller claims it again.
/// Records of a partition still `unsought` are dropped: they are read again once its seek
/// succeeds.
fn take_polled(
    reporter: Reporter<'_>,
    source: &dyn EventSource,
    claimed: &Option<Vec<(String, i32)>>,
    unsought: &HashSet<(String, i32)>,
    state: &mut BatchState,
    records: Vec<ConsumedRecord>,
    decode_threads: usize,
) -> bool {
    if reporter.is_live() {
        reporter
            .metrics
            .events_consumed
            .inc_by(records.len() as u64);
    }
    reporter.set_status(|s| s.events_consumed += records.len() as u64);
    if let Some(owned) = source.owned_partitions()
        && claimed.as_ref() != Some(&owned)
    {
        return false;
    }
    let take = |record: &ConsumedRecord, decoded: Result<Envelope, DecodeError>| {
        // No owned key is built for the look-ups unless a seek is still outstanding.
        let takes = claimed.as_ref().is_none_or(|claimed| {
            claimed
                .iter()
                .any(|(t, p)| *p == record.partition && *t == record.topic)
                && (unsought.is_empty()
                    || !unsought.contains(&(record.topic.clone(), record.partition)))
        });
        if takes {
            state.take(record, decoded);
        }
    };
    decode_in_order(&records, decode_threads, take);
    true
}

/// New rows per table of an applied batch, for the metric. The sink reports only a total,
/// so the split assumes duplicates are spread like the rows (exact when none were skipped).
fn per_table_new_rows(batch: &IngestBatch, written: usize) -> Vec<(&'static str, u64)> {
    let total = batch.row_count();
    if total == 0 {
        return Vec::new();
    }
    batch
        .tables
        .iter()
        .map(|(t, b)| {
            let share = if written == total {
                b.num_rows() as u64
            } else {
                (b.num_rows() as u128 * written as u128 / total as u128) as u64
            };
            (t.name(), share)
        })
        .collect()
}

/// The batch being built, and what the worker knows about positions and parking.
struct BatchState {
    rows: TableRows,
    dead_letters: Vec<DeadLetter>,
    /// Event ids in this batch (an `IngestBatch` holds each id once).
    ids: HashSet<uuid::Uuid, foldhash::fast::RandomState>,
    /// Next offsets of what this batch covers.
    positions: Offsets,
    /// Next offsets of everything taken since the last claim, in this batch or one being
    /// applied: records below are held already.
    taken: Offsets,
    /// Next offsets the sink has stored: records below are already applied.
    stored: Offsets,
    /// Aggregates (topic, key) with a dead-lettered event: later events are parked.
    parked: HashSet<(String, String)>,
    first_at: Option<Instant>,
    /// Events dropped because the same id came earlier in this batch.
    batch_duplicates: usize,
}

impl BatchState {
    fn new(parked: HashSet<(String, String)>, stored: &[Position]) -> BatchState {
        BatchState {
            rows: TableRows::new(),
            dead_letters: Vec::new(),
            ids: HashSet::default(),
            positions: Offsets::default(),
            taken: Offsets::default(),
            stored: Offsets::from_positions(stored),
            parked,
            first_at: None,
            batch_duplicates: 0,
        }
    }

    fn buffered(&self) -> usize {
        self.rows.len() + self.dead_letters.len()
    }

    /// Takes one consumed record, with what decoding its payload gave, into the batch (or
    /// skips it).
    fn take(&mut self, record: &ConsumedRecord, decoded: Result<Envelope, DecodeError>) {
        let (topic, partition) = (record.topic.as_str(), record.partition);
        let held = self.taken.find(topic, partition);
        let floor = held
            .map(|i| self.taken.0[i].2)
            .or_else(|| self.stored.get(topic, partition))
            .unwrap_or(0);
        if record.offset < floor {
            // Already applied (a replay after a restart or a rebalance).
            return;
        }
        self.positions.set(topic, partition, record.offset + 1);
        match held {
            Some(i) => self.taken.0[i].2 = record.offset + 1,
            None => self.taken.set(topic, partition, record.offset + 1),
        }
        self.first_at.get_or_insert_with(Instant::now);
        match decoded {
            Err(e) => {
                self.parked
                    .insert((record.topic.clone(), record.key.clone()));
                self.dead_letters
                    .push(dead_letter(record, None, e.kind(), e.to_string()));
            }
            Ok(env) => {
                // (No key is built while nothing is parked, the usual case.)
                let parked = !self.parked.is_empty()
                    && self
                        .parked
                        .contains(&(record.topic.clone(), record.key.clone()));
                if parked {
                    let reason = format!(
                        "an earlier event of aggregate `{}` on topic {} was dead-lettered; later \
                         events of it are parked so they cannot overtake it",
                        record.key, record.topic
                    );
                    self.dead_letters
                        .push(dead_letter(record, Some(&env), "parked", reason));
                } else if self.ids.insert(env.event_id) {
                    self.rows.push(&env);
                } else {
                    // The same event twice in one batch (a relay duplicate): the first
                    // copy stands.
                    self.batch_duplicates += 1;
                }
            }
        }
    }

    /// The batch to apply; the builders start over.
    fn finish(&mut self) -> IngestBatch {
        let positions = std::mem::take(&mut self.positions).into_positions();
        self.ids.clear();
        self.first_at = None;
        IngestBatch {
            tables: self.rows.finish(),
            dead_letters: std::mem::take(&mut self.dead_letters),
            positions,
        }
    }

    /// Drops everything taken and not applied, so no later flush stores positions past a
    /// batch that was never applied (the worker is stopping; it is all read again).
    fn abandon(&mut self) {
        let _ = self.rows.finish();
        self.dead_letters.clear();
        self.ids.clear();
        self.positions.clear();
        self.taken.clear();
        self.first_at = None;
        self.batch_duplicates = 0;
    }

    /// Records that the sink stored everything up to `positions` (the records taken since
    /// belong to the next batch).
    fn applied(&mut self, positions: &[Position]) {
        for p in positions {
            self.stored.set(&p.topic, p.partition, p.next_offset);
        }
    }

    fn stored_positions(&self) -> Vec<Position> {
        self.stored.clone().into_positions()
    }
}

/// Next offsets per (topic, partition). A worker reads a handful of partitions, so a list
/// looked up by `&str` beats a map keyed by owned strings: taking a record allocates nothing.
#[derive(Clone, Debug, Default)]
struct Offsets(Vec<(String, i32, u64)>);

impl Offsets {
    fn from_positions(positions: &[Position]) -> Offsets {
        let mut offsets = Offsets::default();
        for p in positions {
            offsets.set(&p.topic, p.partition, p.next_offset);
        }
        offsets
    }

    /// Where (topic, partition) is held in the list.
    fn find(&self, topic: &str, partition: i32) -> Option<usize> {
        self.0
            .iter()
            .position(|(t, p, _)| *p == partition && t == topic)
    }

    fn get(&self, topic: &str, partition: i32) -> Option<u64> {
        self.find(topic, partition).map(|i| self.0[i].2)
    }

    fn set(&mut self, topic: &str, partition: i32, next: u64) {
        match self
            .0
            .iter_mut()
            .find(|(t, p, _)| *p == partition && t == topic)
        {
            Some(held) => held.2 = next,
            None => self.0.push((topic.to_owned(), partition, next)),
        }
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn clear(&mut self) {
        self.0.clear();
    }

    /// As positions, sorted.
    fn into_positions(self) -> Vec<Position> {
        let mut out: Vec<Position> = self
            .0
            .into_iter()
            .map(|(topic, partition, next_offset)| Position {
                topic,
                partition,
                next_offset,
            })
            .collect();
        out.sort();
        out
    }
}

/// Fewest records a decoding thread is given: below it, starting the thread costs more than
/// it saves.
const MIN_RECORDS_PER_THREAD: usize = 512;

/// How many threads decode `records` records, given at most `threads`.
fn decoding_threads(records: usize, threads: usize) -> usize {
    threads.min(records / MIN_RECORDS_PER_THREAD).max(1)
}

/// Records decoded at a time by one thread: small enough that a thread the OS set aside
/// (the cores are shared with the apply) holds up little, large enough that handing runs
/// over costs nothing.
const DECODE_RUN: usize = 256;

/// Decodes every record's payload and hands each record with what its decoding gave to
/// `take`, in the records' order, on this thread.
///
/// With several `threads` (see [`decoding_threads`]), the others decode runs of records in
/// the background, each taking the next run as it is free, while this one takes the decoded
/// runs in order and, when the next is not ready yet, decodes a run itself; so taking
/// overlaps decoding.
fn decode_in_order(
    records: &[ConsumedRecord],
    threads: usize,
    mut take: impl FnMut(&ConsumedRecord, Result<Envelope, DecodeError>),
) {
    let decode = |r: &ConsumedRecord| Envelope::decode(&r.payload);
    let threads = decoding_threads(records.len(), threads);
    if threads == 1 {
        // Each record decoded as it is taken: no list of decoded events in between.
        for record in records {
            take(record, decode(record));
        }
        return;
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let claim = || {
        let start = next.fetch_add(DECODE_RUN, std::sync::atomic::Ordering::Relaxed);
        (start < records.len()).then_some(start)
    };
    let decode_run = |start: usize| -> Vec<_> {
        records[start..(start + DECODE_RUN).min(records.len())]
            .iter()
            .map(decode)
            .collect()
    };
    std::thread::scope(|scope| {
        let (done, ready) = std::sync::mpsc::channel();
        for _ in 1..threads {
            let done = done.clone();
            scope.spawn(move || {
                while let Some(start) = claim() {
                    if done.send((start, decode_run(start))).is_err() {
                        return;
                    }
                }
            });
        }
        drop(done);
        let mut decoded: BTreeMap<usize, Vec<Result<Envelope, DecodeError>>> = BTreeMap::new();
        let mut taken = 0;
        while taken < records.len() {
            if let Some(run) = decoded.remove(&taken) {
                for (record, result) in records[taken..].iter().zip(run) {
                    take(record, result);
                    taken += 1;
                }
                continue;
            }
            while let Ok((start, run)) = ready.try_recv() {
                decoded.insert(start, run);
            }
            if decoded.contains_key(&taken) {
                continue;
            }
            if let Some(start) = claim() {
                decoded.insert(start, decode_run(start));
            } else {
                match ready.recv() {
                    Ok((start, run)) => {
                        decoded.insert(start, run);
                    }
                    // A decoding thread panicked (decoding never does); the scope
                    // re-raises it.
                    Err(_) => break,
                }
            }
        }
    });
}

fn dead_letter(
    record: &ConsumedRecord,
    env: Option<&Envelope>,
    kind: &str,
    reason: String,
) -> DeadLetter {
    // Even an undecodable event may name itself: keep its id and type when they parse.
    let (event_id, event_type) = match env {
        Some(env) => (
            Some(env.event_id.to_string()),
            Some(env.event_type().as_str().to_owned()),
        ),
        None => peek_identity(&record.payload),
    };
    DeadLetter {
        topic: record.topic.clone(),
        partition: record.partition,
        offset: record.offset,
        key: record.key.clone(),
        event_id,
        event_type,
        reason_kind: kind.to_owned(),
        reason,
        payload: record.payload.clone(),
        received_at_ms: chrono::Utc::now().timestamp_millis(),
    }
}

/// `event_id` and `event_type` of a JSON object that failed validation, when present.
fn peek_identity(payload: &[u8]) -> (Option<String>, Option<String>) {
    #[derive(Deserialize)]
    struct Identity {
        event_id: Option<serde_json::Value>,
        event_type: Option<serde_json::Value>,
    }
    let text = |v: Option<serde_json::Value>| match v {
        Some(serde_json::Value::String(s)) if s.len() <= 200 => Some(s),
        _ => None,
    };
    match serde_json::from_slice::<Identity>(payload) {
        Ok(i) => (text(i.event_id), text(i.event_type)),
        Err(_) => (None, None),
    }
}

/// Exponential back-off between attempts, cut short by shutdown.
struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    fn new(config: &WorkerConfig) -> Backoff {
        Backoff {
            next: Duration::from_millis(config.retry_initial_ms.max(1)),
            max: Duration::from_millis(config.retry_max_ms.max(config.retry_initial_ms)),
        }
    }

    /// Sleeps the next interval; `false` if `shutdown` fired first.
    async fn wait(&mut self, shutdown: &CancellationToken) -> bool {
        let sleep = self.next;
        self.next = (self.next * 2).min(self.max);
        tokio::select! {
            _ = shutdown.cancelled() => false,
            _ = tokio::time::sleep(sleep) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use shoplens_contract::{OrderStatus, OrderStatusChanged};

    use super::*;

    fn take(state: &mut BatchState, record: ConsumedRecord) {
        let decoded = Envelope::decode(&record.payload);
        state.take(&record, decoded);
    }

    #[test]
    fn decoding_on_several_threads_keeps_the_records_order() {
        let records: Vec<ConsumedRecord> = (0..3_000)
            .map(|i| {
                let payload = if i % 7 == 0 {
                    b"{not json".to_vec()
                } else {
                    paid(&format!("o{i}")).to_json()
                };
                record(i, &format!("o{i}"), payload)
            })
            .collect();
        let decode_all = |threads| {
            let mut taken = Vec::new();
            decode_in_order(&records, threads, |r, decoded| {
                taken.push((r.offset, decoded))
            });
            taken
        };
        let inline = decode_all(1);
        assert!(inline.iter().map(|(o, _)| *o).eq(0..3_000));
        for threads in [2, 3, 8] {
            assert_eq!(decode_all(threads), inline, "{threads} threads");
        }
        assert_eq!(inline.iter().filter(|(_, d)| d.is_err()).count(), 429);
    }

    fn record(offset: u64, key: &str, payload: Vec<u8>) -> ConsumedRecord {
        ConsumedRecord {
            topic: "shop.orders".into(),
            partition: 0,
            offset,
            key: key.into(),
            payload: Bytes::from(payload),
            timestamp_ms: 0,
        }
    }

    fn paid(order: &str) -> Envelope {
        Envelope::new(OrderStatusChanged {
            order_id: order.into(),
            customer_id: "c1".into(),
            from: Some(OrderStatus::Placed),
            to: OrderStatus::Paid,
        })
    }

    #[test]
    fn bad_records_are_dead_lettered_and_park_their_aggregate_only() {
        let mut state = BatchState::new(HashSet::new(), &[]);
        take(&mut state, record(0, "o1", b"{not json".to_vec()));
        take(&mut state, record(1, "o1", paid("o1").to_json()));
        take(&mut state, record(2, "o2", paid("o2").to_json()));
        let batch = state.finish();
        assert_eq!(batch.row_count(), 1);
        let kinds: Vec<_> = batch
            .dead_letters
            .iter()
            .map(|d| (d.offset, d.reason_kind.as_str()))
            .collect();
        assert_eq!(kinds, vec![(0, "malformed_json"), (1, "parked")]);
        assert_eq!(batch.positions[0].next_offset, 3);
    }

    #[test]
    fn records_below_the_stored_position_and_repeated_ids_are_skipped() {
        let stored = [Position {
            topic: "shop.orders".into(),
            partition: 0,
            next_offset: 2,
        }];
        let mut state = BatchState::new(HashSet::new(), &stored);
        let e = paid("o1");
        take(&mut state, record(0, "o1", paid("o1").to_json()));
        take(&mut state, record(1, "o1", paid("o1").to_json()));
        take(&mut state, record(2, "o1", e.to_json()));
        take(&mut state, record(3, "o1", e.to_json()));
        let batch = state.finish();
        assert_eq!(batch.row_count(), 1);
        assert_eq!(batch.positions[0].next_offset, 4);
    }

    #[test]
    fn a_dead_letter_keeps_the_identity_it_can_read() {
        let mut bad: serde_json::Value = serde_json::from_slice(&paid("o1").to_json()).unwrap();
        bad["payload"]["to"] = serde_json::json!("Teleported");
        let id = bad["event_id"].as_str().unwrap().to_owned();
        let mut state = BatchState::new(HashSet::new(), &[]);
        take(
            &mut state,
            record(0, "o1", serde_json::to_vec(&bad).unwrap()),
        );
        let batch = state.finish();
        let dl = &batch.dead_letters[0];
        assert_eq!(dl.event_id.as_deref(), Some(id.as_str()));
        assert_eq!(dl.event_type.as_deref(), Some("OrderStatusChanged"));
        assert_eq!(dl.reason_kind, "invalid_field");
    }
}
