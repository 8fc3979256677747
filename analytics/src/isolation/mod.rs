//! Query isolation: every ad-hoc query (HTTP SQL, the Postgres endpoint, exports) runs in a
//! worker process, the way PostgreSQL runs each session in its own backend, so that no query
//! can stop, slow or kill the process that serves the shop.
//!
//! Guards inside one process catch mistakes but cannot make arbitrary SQL safe: DataFusion's
//! memory pool sees operators, not what a scalar function or constant folding allocates, and
//! a thread stuck in one long computation cannot be stopped from outside. A worker process
//! can: the kernel caps its address space (`RLIMIT_AS`) and CPU time (`RLIMIT_CPU`), and the
//! server kills it at the deadline or when the client goes away. A worker that dies is that
//! one query's error (out of memory, CPU time, deadline); the pool starts another.
//!
//! - [`protocol`]: the frames on the worker's stdin and stdout.
//! - [`worker`]: the worker process (`<program> query-worker`), its limits in `os`.
//! - [`pool`]: the server's side: idle workers, one query per worker, kills and reaping.
//! - [`admission`]: concurrency per user and in total, a bounded queue, "too busy".
//! - [`Executor`]: what the HTTP API and the Postgres endpoint call; with
//!   `workers.enabled = false` it runs queries in this process instead (for measuring what
//!   isolation costs; never where untrusted users reach the server).
//!
//! The in-process checks (read-only gate, bounded functions, nesting depth) stay the first
//! line: they answer the common mistakes with a precise error before any worker is involved.

pub mod admission;
mod cpus;
mod metrics;
mod os;
pub mod pool;
pub mod protocol;
pub mod worker;

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use bytes::Bytes;
use datafusion::common::ParamValues;
use futures::{Stream, StreamExt, TryStreamExt};
use shoplens_readmodel::config::ReadModelConfig;
use shoplens_readmodel::freshness::FreshnessReport;

pub use metrics::PoolMetrics;
pub use os::{allowed_cpus, lower_priority, scheduling_policy, set_process_affinity};
pub use pool::QueryPool;
pub use protocol::{Output, SessionKind};
pub use worker::run_if_requested;

use crate::AnalyticsError;
use crate::cache::{Key, Query, ResultCache};
use crate::engine::{Engine, Pii, QueryConfig};
use crate::export::Encoder;
use admission::{Admission, CoolDown};
use protocol::{Init, Request};

/// An answer's bytes.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, AnalyticsError>> + Send>>;
/// An answer's batches.
pub type BatchStream = Pin<Box<dyn Stream<Item = Result<RecordBatch, AnalyticsError>> + Send>>;

/// One ad-hoc query.
#[derive(Debug, Clone)]
pub struct Job {
    /// Whose query it is (concurrency is limited per user).
    pub user: String,
    pub sql: String,
    pub session: SessionKind,
    /// Whether the user may see personal data (administrators only).
    pub pii: Pii,
    /// The user's role (for the audit log).
    pub role: shoplens_kit::identity::Role,
    /// The values of `$1, $2, ...` (the Postgres extended protocol).
    pub params: Option<ParamValues>,
    /// A deadline shorter than the session's (a Postgres client's `statement_timeout`).
    pub timeout: Option<Duration>,
}

impl Job {
    /// A query of `user`, who sees personal data masked unless `pii` is set otherwise.
    pub fn new(user: &str, sql: &str, session: SessionKind) -> Job {
        Job {
            user: user.to_owned(),
            sql: sql.to_owned(),
            session,
            pii: Pii::Masked,
            role: shoplens_kit::identity::Role::Viewer,
            params: None,
            timeout: None,
        }
    }
}

/// Runs ad-hoc queries. Cheap to clone.
#[derive(Clone)]
pub struct Executor {
    kind: Kind,
    config: QueryConfig,
    metrics: PoolMetrics,
    cache: ResultCache,
    /// Where the read model's state is read for a cache key, when no caller passed it.
    watermark: Option<Box<Engine>>,
}

#[derive(Clone)]
enum Kind {
    Isolated(QueryPool),
    InProcess {
        engine: Box<Engine>,
        admission: Arc<Admission>,
    },
}

impl Executor {
    /// Starts the query workers `config.workers` asks for (their program opens the read model
    /// `read_model` names), or runs queries on `engine` when workers are disabled.
    pub async fn start(
        engine: &Engine,
        read_model: &ReadModelConfig,
        config: &QueryConfig,
        pg_users: &[String],
        metrics: PoolMetrics,
    ) -> Result<Executor, AnalyticsError> {
        let w = &config.workers;
        let kind = if w.enabled {
            let program = if w.program.is_empty() {
                std::env::current_exe().map_err(|e| {
                    AnalyticsError::Unavailable(format!("cannot tell this program's path: {e}"))
                })?
            } else {
                PathBuf::from(&w.program)
            };
            let init = Init {
                read_model: read_model.clone(),
                query: config.clone(),
                pg_users: pg_users.to_vec(),
            };
            Kind::Isolated(QueryPool::start(program, &init, w, metrics.clone()).await?)
        } else {
            tracing::warn!(
                "analytics.query.workers.enabled = false: ad-hoc queries run in the server \
                 process, where one hostile query can stop it"
            );
            Kind::InProcess {
                engine: Box::new(engine.clone()),
                admission: Arc::new(Admission::new(
                    w.max_concurrent,
                    w.max_concurrent_per_user,
                    w.max_queued,
                    Duration::from_millis(w.queue_timeout_ms),
                    // No query here ends a worker.
                    CoolDown::default(),
                )),
            }
        };
        Ok(Executor {
            kind,
            config: config.clone(),
            metrics,
            cache: ResultCache::disabled(),
            watermark: None,
        })
    }

    /// Interactive answers go through `cache` (see [`crate::cache`]), keyed by the state of
    /// `engine`'s read model.
    pub fn with_cache(mut self, cache: ResultCache, engine: &Engine) -> Executor {
        self.cache = cache;
        self.watermark = Some(Box::new(engine.clone()));
        self
    }

    /// `job` as a cacheable query: interactive queries only.
    fn cache_query(&self, job: &Job) -> Option<Query> {
        if job.session != SessionKind::Interactive {
            return None;
        }
        self.cache.query(&job.sql, job.params.as_ref(), job.pii)
    }

    /// The query workers, when queries run in them.
    pub fn pool(&self) -> Option<&QueryPool> {
        match &self.kind {
            Kind::Isolated(pool) => Some(pool),
            Kind::InProcess { .. } => None,
        }
    }

    fn limits(&self, job: &Job) -> (Duration, u64) {
        let (timeout, cpu) = match job.session {
            SessionKind::Interactive => (self.config.timeout_ms, self.config.workers.cpu_seconds),
            SessionKind::Export => (
                self.config.export_timeout_ms,
                self.config.workers.export_cpu_seconds,
            ),
        };
        let timeout = Duration::from_millis(timeout);
        (job.timeout.map_or(timeout, |t| t.min(timeout)), cpu)
    }

    fn count<T>(&self, result: Result<T, AnalyticsError>) -> Result<T, AnalyticsError> {
        if let Err(AnalyticsError::Busy(_)) = &result {
            self.metrics.refused_busy();
        }
        result
    }

    /// The answer to `job` encoded as `output`. `buffered`: the whole answer is computed
    /// before this returns, so any error is this call's (an HTTP status can still say it).
    pub async fn bytes(
        &self,
        job: &Job,
        output: Output,
        buffered: bool,
        freshness: Option<FreshnessReport>,
        rows: Arc<AtomicU64>,
    ) -> Result<ByteStream, AnalyticsError> {
        let key = match (self.cache_query(job), &freshness) {
            (Some(query), Some(seen)) => self.cache.key_at(query, seen),
            _ => None,
        };
        if let Some(key) = key {
            // Through the cache: the answer as batches (cached, or computed and kept), encoded
            // here with the freshness of this request.
            let result = match self.cached_batches(job, key).await {
                Ok((schema, batches)) => {
                    encode(schema, batches, output, buffered, freshness, rows).await
                }
                Err(e) => Err(e),
            };
            return self.count(result);
        }
        let (timeout, cpu_seconds) = self.limits(job);
        let result = match &self.kind {
            Kind::Isolated(pool) => {
                let params = job.params.as_ref().map(worker::encode_params).transpose()?;
                let request = Request {
                    sql: job.sql.clone(),
                    session: job.session,
                    pii: job.pii,
                    output,
                    buffered,
                    has_params: params.is_some(),
                    freshness,
                    cpu_seconds,
                };
                match pool
                    .run(&job.user, &request, params.as_deref(), timeout)
                    .await
                {
                    // Read to the end here: the worker is free for the next query at once,
                    // and the answer leaves in one piece.
                    Ok(running) if buffered => {
                        let mut running = running.count_rows(rows);
                        let mut out = Vec::new();
                        let mut failed = None;
                        while let Some(chunk) = running.next_chunk().await {
                            match chunk {
                                Ok(bytes) => out.extend_from_slice(&bytes),
                                Err(e) => {
                                    failed = Some(e);
                                    break;
                                }
                            }
                        }
                        match failed {
                            Some(e) => Err(e),
                            None => Ok(Box::pin(futures::stream::iter([Ok(Bytes::from(out))]))
                                as ByteStream),
                        }
                    }
                    Ok(running) => {
                        Ok(Box::pin(running.count_rows(rows).into_stream()) as ByteStream)
                    }
                    Err(e) => Err(e),
                }
            }
            Kind::InProcess { engine, admission } => {
                match in_process_batches(engine, admission, job, timeout).await {
                    Ok((schema, batches)) => {
                        encode(schema, batches, output, buffered, freshness, rows).await
                    }
                    Err(e) => Err(e),
                }
            }
        };
        self.count(result)
    }

    /// The answer to `job` as Arrow batches (an interactive one through the result cache).
    pub async fn batches(&self, job: &Job) -> Result<(SchemaRef, BatchStream), AnalyticsError> {
        // The read model's state is read only for a query the cache may answer.
        let key = match (&self.watermark, self.cache_query(job)) {
            (Some(engine), Some(query)) => self.cache.key_at(query, &engine.freshness().await?),
            _ => None,
        };
        match key {
            Some(key) => {
                let result = self.cached_batches(job, key).await;
                self.count(result)
            }
            None => self.count(self.computed_batches(job).await),
        }
    }

    /// The cached answer of `key`, or `job` computed and kept under `key` as it streams.
    async fn cached_batches(
        &self,
        job: &Job,
        key: Key,
    ) -> Result<(SchemaRef, BatchStream), AnalyticsError> {
        if let Some(hit) = self.cache.get(&key).await {
            return Ok((hit.schema.clone(), hit.stream()));
        }
        let (schema, batches) = self.computed_batches(job).await?;
        let batches = self.cache.tee(key, schema.clone(), batches);
        Ok((schema, batches))
    }

    /// `job` computed, as Arrow batches.
    async fn computed_batches(
        &self,
        job: &Job,
    ) -> Result<(SchemaRef, BatchStream), AnalyticsError> {
        let (timeout, cpu_seconds) = self.limits(job);
        match &self.kind {
            Kind::Isolated(pool) => {
                let params = job.params.as_ref().map(worker::encode_params).transpose()?;
                let request = Request {
                    sql: job.sql.clone(),
                    session: job.session,
                    pii: job.pii,
                    output: Output::Arrow,
                    buffered: false,
                    has_params: params.is_some(),
                    freshness: None,
                    cpu_seconds,
                };
                match pool
                    .run(&job.user, &request, params.as_deref(), timeout)
                    .await
                {
                    Ok(running) => running
                        .into_batches()
                        .await
                        .map(|(schema, batches)| (schema, Box::pin(batches) as BatchStream)),
                    Err(e) => Err(e),
                }
            }
            Kind::InProcess { engine, admission } => {
                in_process_batches(engine, admission, job, timeout).await
            }
        }
    }
}

/// `job` run in this process once `admission` lets it, its slot held until the answer's
/// last batch.
async fn in_process_batches(
    engine: &Engine,
    admission: &Arc<Admission>,
    job: &Job,
    timeout: Duration,
) -> Result<(SchemaRef, BatchStream), AnalyticsError> {
    let permit = admission
        .acquire(&job.user, tokio::time::Instant::now() + timeout)
        .await?;
    let stream = engine
        .run_in(job.session, job.pii, &job.sql, job.params.clone())
        .await?;
    let schema = stream.schema();
    let batches = stream.map_err(AnalyticsError::from).map(move |b| {
        let _held = &permit;
        b
    });
    Ok((schema, Box::pin(batches)))
}

/// `batches` encoded as `output` in this process: all of it before this returns when
/// `buffered`, else as it streams.
async fn encode(
    schema: SchemaRef,
    mut batches: BatchStream,
    output: Output,
    buffered: bool,
    freshness: Option<FreshnessReport>,
    rows: Arc<AtomicU64>,
) -> Result<ByteStream, AnalyticsError> {
    let mut encoder = Encoder::for_output(output, schema, freshness)?;
    if buffered {
        let mut out = encoder.head();
        while let Some(batch) = batches.next().await {
            let batch = batch?;
            rows.fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
            out.extend(encoder.write(&batch)?);
        }
        out.extend(encoder.finish()?);
        return Ok(Box::pin(futures::stream::iter([Ok(Bytes::from(out))])));
    }
    let head = encoder.head();
    let chunks = futures::stream::unfold(
        (Some((batches, encoder)), Some(head)),
        move |(state, head)| {
            let rows = rows.clone();
            async move {
                if let Some(head) = head.filter(|h| !h.is_empty()) {
                    return Some((Ok(Bytes::from(head)), (state, None)));
                }
                let (mut batches, mut encoder) = state?;
                loop {
                    match batches.next().await {
                        Some(Ok(batch)) => {
                            rows.fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
                            match encoder.write(&batch) {
                                Ok(bytes) if bytes.is_empty() => continue,
                                Ok(bytes) => {
                                    return Some((
                                        Ok(Bytes::from(bytes)),
                                        (Some((batches, encoder)), None),
                                    ));
                                }
                                Err(e) => return Some((Err(e), (None, None))),
                            }
                        }
                        Some(Err(e)) => return Some((Err(e), (None, None))),
                        None => {
                            let last = encoder.finish().map(Bytes::from);
                            return Some((last, (None, None)));
                        }
                    }
                }
            }
        },
    );
    Ok(Box::pin(chunks))
}
