//! The ingest process's core: the live worker, and a blue/green rebuild beside it.
//!
//! The live generation of the read model is always complete and always served. A rebuild
//! ([`Ingest::start_rebuild`]) opens a new generation, fills it with a worker of its own
//! (its own consumer group, reading the retained log from the beginning), and once that
//! worker has applied at least everything the live one has, switches readers to it
//! ([`ReadModelStore::set_live`]), stops the old worker and drops the old generation after a
//! grace period (readers may still be scanning it). Dashboards never go blank and never
//! show a half-built model.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use serde::Serialize;
use shoplens_bus::{BusError, EventSource};
use shoplens_readmodel::freshness::Freshness;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::IngestError;
use crate::metrics::IngestMetrics;
use crate::sink::{ReadModelStore, Sink};
use crate::worker::{DeadLetterTopic, SharedStatus, Worker, WorkerConfig, WorkerStatus};

/// How often a process on a shared store checks whether another one switched generations.
const FOLLOW_LIVE_EVERY: Duration = Duration::from_secs(2);

/// Makes a bus consumer for a consumer group (a new group starts at the earliest record).
pub type SourceFactory =
    Arc<dyn Fn(String) -> BoxFuture<'static, Result<Box<dyn EventSource>, BusError>> + Send + Sync>;

/// What the supervisor needs besides the store and the bus.
#[derive(Clone)]
pub struct SupervisorConfig {
    /// Consumer-group prefix: generation `g` reads as group `{group}.g{g}`.
    pub group: String,
    pub worker: WorkerConfig,
    /// How long an old generation is kept after a switch, for readers still on it.
    pub drop_old_after: Duration,
    /// Where the live worker also publishes dead letters.
    pub dead_letter_topic: Option<DeadLetterTopic>,
}

/// The state of the latest rebuild, for the API and the `rebuild` command's progress bar.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct RebuildStatus {
    /// The generation being built.
    pub generation: u32,
    /// The generation that was live when the rebuild started.
    pub replacing: u32,
    /// `running`, `switched` (done: the new generation is live) or `failed`.
    pub state: String,
    /// Bus records the new generation has consumed up to (summed next offsets).
    pub applied: u64,
    /// What it must reach: the live generation's summed next offsets (moves under load),
    /// and never less than `applied` (the new generation may read ahead of the live one).
    pub target: u64,
    pub started_at_ms: i64,
    pub finished_at_ms: Option<i64>,
    pub error: Option<String>,
    /// Records read per second since the rebuild started (until it finished).
    #[serde(default)]
    pub events_per_sec: f64,
}

impl RebuildStatus {
    /// `applied` over the time from the start until `now_ms` (or the finish).
    fn rate_at(&mut self, now_ms: i64) {
        let secs = (self.finished_at_ms.unwrap_or(now_ms) - self.started_at_ms) as f64 / 1e3;
        self.events_per_sec = if secs > 0.0 {
            self.applied as f64 / secs
        } else {
            0.0
        };
    }
}

/// Everything about the ingest process a reader or an operator asks for.
#[derive(Debug, Clone, Serialize)]
pub struct IngestStatus {
    pub live_generation: u32,
    pub live: WorkerStatus,
    pub rebuild: Option<RebuildStatus>,
}

struct Running {
    generation: u32,
    sink: Arc<dyn Sink>,
    status: SharedStatus,
    /// Whether this worker writes the live generation (see `Worker::live_switch`).
    live: Arc<AtomicBool>,
    stop: CancellationToken,
    task: JoinHandle<Result<(), IngestError>>,
}

impl Running {
    fn status(&self) -> WorkerStatus {
        self.status.lock().expect("status lock").clone()
    }
}

struct State {
    live: Running,
    rebuild: Option<Running>,
    rebuild_status: Option<RebuildStatus>,
}

struct Inner {
    store: Arc<dyn ReadModelStore>,
    sources: SourceFactory,
    config: SupervisorConfig,
    metrics: Arc<IngestMetrics>,
    state: Mutex<State>,
    shutdown: CancellationToken,
}

/// The running ingest process. Cheap to clone.
#[derive(Clone)]
pub struct Ingest {
    inner: Arc<Inner>,
}

impl Ingest {
    /// Opens the live generation (making the newest, or generation 1, live on a store that
    /// has none), drops generations an earlier switch left behind, and starts the live
    /// worker.
    ///
    /// Several ingest processes may start at once on a shared store (ClickHouse): they all
    /// pick the same first generation (opening and making it live are idempotent), and a
    /// generation newer than the live one is left alone there, as it may be another
    /// process's rebuild. On a single-writer store it can only be an interrupted rebuild of
    /// this one, and is dropped.
    pub async fn start(
        store: Arc<dyn ReadModelStore>,
        sources: SourceFactory,
        config: SupervisorConfig,
        metrics: Arc<IngestMetrics>,
    ) -> Result<Ingest, IngestError> {
        let generations = store.generations().await?;
        let live = match store.live().await? {
            Some(g) => g,
            None => {
                let g = generations.iter().max().copied().unwrap_or(1);
                store.open(g).await?;
                store.set_live(g).await?;
                g
            }
        };
        for &g in generations.iter().filter(|g| **g != live) {
            if g > live && store.shared() {
                tracing::warn!(
                    generation = g,
                    "a read-model generation newer than the live one: another ingest process's \
                     rebuild, or an interrupted one (drop it through that process's rebuild)"
                );
                continue;
            }
            tracing::info!(
                generation = g,
                "dropping a read-model generation that is not live"
            );
            store.drop_generation(g).await?;
        }
        metrics.live_generation.set(i64::from(live));
        let shutdown = CancellationToken::new();
        let running = spawn_worker(&store, &sources, &config, &metrics, live, true).await?;
        let shared = store.shared();
        let ingest = Ingest {
            inner: Arc::new(Inner {
                store,
                sources,
                config,
                metrics,
                state: Mutex::new(State {
                    live: running,
                    rebuild: None,
                    rebuild_status: None,
                }),
                shutdown,
            }),
        };
        if shared {
            let this = ingest.clone();
            tokio::spawn(async move { this.follow_live().await });
        }
        Ok(ingest)
    }

    /// On a store several ingest processes share: when another process's rebuild made a
    /// newer generation live, stop writing the old one and write the new one (joining its
    /// consumer group), so every process ends up on the generation readers see.
    async fn follow_live(self) {
        let i = &self.inner;
        loop {
            tokio::select! {
                _ = i.shutdown.cancelled() => return,
                _ = tokio::time::sleep(FOLLOW_LIVE_EVERY) => {}
            }
            let live = match i.store.live().await {
                Ok(Some(g)) => g,
                Ok(None) => continue,
                Err(e) => {
                    tracing::debug!(error = %e, "cannot read the live generation");
                    continue;
                }
            };
            let (ours, rebuilding) = {
                let state = i.state.lock().expect("state lock");
                (state.live.generation, state.rebuild.is_some())
            };
            // Our own rebuild switches by itself; never go back to an older generation.
            if live <= ours || rebuilding {
                continue;
            }
            let running = match spawn_worker(
                &i.store, &i.sources, &i.config, &i.metrics, live, true,
            )
            .await
            {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(generation = live, error = %e, "cannot follow the live generation; retrying");
                    continue;
                }
            };
            let old = {
                let mut state = i.state.lock().expect("state lock");
                std::mem::replace(&mut state.live, running)
            };
            i.metrics.live_generation.set(i64::from(live));
            tracing::info!(
                generation = live,
                replaced = old.generation,
                "another ingest process made a rebuilt read model live; following it"
            );
            old.live.store(false, Ordering::Relaxed);
            old.stop.cancel();
            let _ = old.task.await;
        }
    }

    /// The live generation and its sink (what readers query).
    pub fn live(&self) -> (u32, Arc<dyn Sink>) {
        let state = self.inner.state.lock().expect("state lock");
        (state.live.generation, state.live.sink.clone())
    }

    pub fn store(&self) -> Arc<dyn ReadModelStore> {
        self.inner.store.clone()
    }

    pub fn status(&self) -> IngestStatus {
        let state = self.inner.state.lock().expect("state lock");
        let mut rebuild = state.rebuild_status.clone();
        if let (Some(r), Some(running)) = (&mut rebuild, &state.rebuild) {
            r.applied = running.status().applied_offsets();
            r.target = state.live.status().applied_offsets().max(r.applied);
        }
        if let Some(r) = &mut rebuild {
            r.rate_at(now_ms());
        }
        IngestStatus {
            live_generation: state.live.generation,
            live: state.live.status(),
            rebuild,
        }
    }

    /// The live read model's freshness as the live worker last saw it.
    pub fn freshness(&self) -> Freshness {
        self.status().live.freshness
    }

    /// Starts building a new generation beside the live one; see the module docs.
    pub async fn start_rebuild(&self) -> Result<RebuildStatus, IngestError> {
        let (replacing, busy) = {
            let state = self.inner.state.lock().expect("state lock");
            (
                state.live.generation,
                state.rebuild.as_ref().map(|r| r.generation),
            )
        };
        if let Some(g) = busy {
            return Err(IngestError::RebuildRunning(g));
        }
        let i = &self.inner;
        let generation = i.store.generations().await?.into_iter().max().unwrap_or(0) + 1;
        let running = spawn_worker(
            &i.store, &i.sources, &i.config, &i.metrics, generation, false,
        )
        .await?;
        let status = RebuildStatus {
            generation,
            replacing,
            state: "running".into(),
            applied: 0,
            target: 0,
            started_at_ms: now_ms(),
            finished_at_ms: None,
            error: None,
            events_per_sec: 0.0,
        };
        {
            let mut state = i.state.lock().expect("state lock");
            if let Some(r) = &state.rebuild {
                // Lost a race with another request: undo ours.
                running.stop.cancel();
                return Err(IngestError::RebuildRunning(r.generation));
            }
            state.rebuild = Some(running);
            state.rebuild_status = Some(status.clone());
        }
        tracing::info!(
            generation,
            replacing,
            "rebuilding the read model beside the live one"
        );
        let this = self.clone();
        tokio::spawn(async move { this.watch_rebuild().await });
        Ok(status)
    }

    /// Switches to the rebuilt generation once it has caught up with the live one.
    async fn watch_rebuild(self) {
        let i = &self.inner;
        loop {
            tokio::select! {
                _ = i.shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
            let (mut live, rebuilt, finished, live_sink) = {
                let state = i.state.lock().expect("state lock");
                let Some(r) = &state.rebuild else { return };
                (
                    state.live.status(),
                    r.status(),
                    r.task.is_finished(),
                    state.live.sink.clone(),
                )
            };
            // What the live generation stored, for every partition: with several ingest
            // processes, the live worker here owns only some of them.
            if let Ok(stored) = live_sink.stored_positions().await
                && !stored.is_empty()
            {
                live.positions = stored;
            }
            if finished && !rebuilt.running {
                let error = rebuilt
                    .last_error
                    .unwrap_or_else(|| "the rebuild worker stopped".into());
                self.fail_rebuild(error).await;
                return;
            }
            if caught_up(&live, &rebuilt) {
                match i.store.set_live(rebuilt.generation).await {
                    Ok(()) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot switch to the rebuilt generation; retrying");
                        continue;
                    }
                }
                let old = {
                    let mut state = i.state.lock().expect("state lock");
                    let new = state.rebuild.take().expect("rebuild present");
                    new.live.store(true, Ordering::Relaxed);
                    let old = std::mem::replace(&mut state.live, new);
                    if let Some(s) = &mut state.rebuild_status {
                        s.state = "switched".into();
                        s.applied = rebuilt.applied_offsets();
                        s.target = live.applied_offsets().max(s.applied);
                        s.finished_at_ms = Some(now_ms());
                    }
                    old
                };
                i.metrics.live_generation.set(i64::from(rebuilt.generation));
                tracing::info!(
                    generation = rebuilt.generation,
                    replaced = old.generation,
                    "the rebuilt read model is live"
                );
                old.live.store(false, Ordering::Relaxed);
                old.stop.cancel();
                let _ = old.task.await;
                tokio::select! {
                    _ = i.shutdown.cancelled() => {}
                    _ = tokio::time::sleep(i.config.drop_old_after) => {}
                }
                // On shutdown the old generation is dropped at the next start instead.
                if !i.shutdown.is_cancelled()
                    && let Err(e) = i.store.drop_generation(old.generation).await
                {
                    tracing::warn!(generation = old.generation, error = %e, "cannot drop the old generation");
                }
                return;
            }
        }
    }

    async fn fail_rebuild(&self, error: String) {
        let i = &self.inner;
        let failed = {
            let mut state = i.state.lock().expect("state lock");
            if let Some(s) = &mut state.rebuild_status {
                s.state = "failed".into();
                s.error = Some(error.clone());
                s.finished_at_ms = Some(now_ms());
            }
            state.rebuild.take()
        };
        tracing::error!(
            error,
            "the rebuild failed; the live read model is unchanged"
        );
        if let Some(f) = failed
            && let Err(e) = i.store.drop_generation(f.generation).await
        {
            tracing::warn!(generation = f.generation, error = %e, "cannot drop the failed generation");
        }
    }

    /// Stops the workers; each applies what it holds first.
    pub async fn stop(self) {
        self.inner.shutdown.cancel();
        let (live, rebuild) = {
            let mut state = self.inner.state.lock().expect("state lock");
            let live_stop = state.live.stop.clone();
            live_stop.cancel();
            let live_task = std::mem::replace(&mut state.live.task, tokio::spawn(async { Ok(()) }));
            let rebuild = state.rebuild.take();
            (live_task, rebuild)
        };
        if let Some(r) = rebuild {
            r.stop.cancel();
            let _ = r.task.await;
        }
        match live.await {
            Ok(Err(e)) => tracing::error!(error = %e, "the ingest worker failed"),
            Err(e) => tracing::error!(error = %e, "the ingest worker panicked"),
            Ok(Ok(())) => {}
        }
    }
}

/// The rebuilt generation has applied at least what the live one has, partition by
/// partition (both keep consuming, so this is checked again and again until it holds).
fn caught_up(live: &WorkerStatus, rebuilt: &WorkerStatus) -> bool {
    if !rebuilt.running {
        return false;
    }
    if live.positions.is_empty() {
        // Nothing applied live yet: caught up once the new worker has seen the bus empty.
        return rebuilt.lag_events == Some(0);
    }
    live.positions.iter().all(|l| {
        rebuilt.positions.iter().any(|r| {
            r.topic == l.topic && r.partition == l.partition && r.next_offset >= l.next_offset
        })
    })
}

async fn spawn_worker(
    store: &Arc<dyn ReadModelStore>,
    sources: &SourceFactory,
    config: &SupervisorConfig,
    metrics: &Arc<IngestMetrics>,
    generation: u32,
    live: bool,
) -> Result<Running, IngestError> {
    let sink = store.open(generation).await?;
    let group = format!("{}.g{generation}", config.group);
    let source = sources(group).await?;
    let worker = Worker::new(
        generation,
        source,
        sink.clone(),
        config.worker.clone(),
        metrics.clone(),
    )
    .with_dead_letter_topic(config.dead_letter_topic.clone());
    let live_switch = worker.live_switch();
    live_switch.store(live, Ordering::Relaxed);
    let status = worker.status();
    let stop = CancellationToken::new();
    let token = stop.clone();
    let task = tokio::spawn(async move {
        let result = worker.run(token).await;
        if let Err(e) = &result {
            tracing::error!(generation, error = %e, "ingest worker stopped");
        }
        result
    });
    Ok(Running {
        generation,
        sink,
        status,
        live: live_switch,
        stop,
        task,
    })
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
