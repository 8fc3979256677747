//! The server's side of the query workers: starting them, keeping `min_idle` ready, leasing
//! one to each query, and ending a query's worker when the query overruns its deadline, its
//! client goes away, or it answers something the server does not expect.
//!
//! Invariants:
//! - A worker runs one query at a time; it goes back to the idle list only after it sent the
//!   query's last frame (`End` or `Error`), so no stale frame can reach the next query.
//! - Every other way out of a query (deadline, a dropped answer, a protocol error, a dead
//!   worker) kills the worker (`SIGKILL`: a query in a scalar function cannot be stopped any
//!   other way) and reaps it in the background, removing its spill directory.
//! - The server reads at most one frame ([`MAX_FRAME`]) of a query at a time.

use std::collections::VecDeque;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use bytes::Bytes;
use datafusion::arrow::buffer::Buffer;
use datafusion::arrow::ipc::reader::StreamDecoder;
use futures::Stream;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::time::Instant;

use super::admission::{Admission, CoolDown, Permit};
use super::cpus::CpuPlan;
use super::metrics::PoolMetrics;
use super::protocol::{
    self, End, Init, MAX_FRAME, Request, Tag, WireError, read_frame, write_frame,
};
use super::worker::SUBCOMMAND;
use crate::AnalyticsError;
use crate::engine::WorkersConfig;
use crate::guard::GuardError;

/// How long past its deadline a query's worker gets to report the deadline itself (the
/// engine's own guard) before the server kills it.
const GRACE: Duration = Duration::from_millis(300);

/// The environment variable, and its value, that start a process with two malloc arenas
/// instead of glibc's up to eight per core: less address space reserved per thread (query
/// workers run under an address-space limit), and a lower peak for a long export, whose
/// freed buffers would otherwise stay spread over many arenas. glibc reads it only when a
/// process starts. Query workers and `shoplens export` (`crate::cli`) run so.
pub const FEW_MALLOC_ARENAS: (&str, &str) = ("MALLOC_ARENA_MAX", "2");

/// Lines of a worker's stderr kept to explain its death.
const STDERR_LINES: usize = 20;

/// The query workers of one analytics server. Cheap to clone.
#[derive(Clone)]
pub struct QueryPool {
    inner: Arc<Inner>,
}

struct Inner {
    program: PathBuf,
    /// The `Init` frame's payload, the same for every worker.
    init: Vec<u8>,
    config: WorkersConfig,
    idle: Mutex<Vec<Worker>>,
    starting: AtomicUsize,
    admission: Admission,
    /// Each worker's spill directory (its `TMPDIR`) lives under here.
    tmp_root: PathBuf,
    next_id: AtomicU64,
    metrics: PoolMetrics,
    /// The workers' CPUs (this process keeps off them).
    cpus: Arc<CpuPlan>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Idle workers die with their handles (kill on drop); their directories with this.
        let _ = std::fs::remove_dir_all(&self.tmp_root);
    }
}

struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
    queries: u32,
    tmp: PathBuf,
    stderr: Arc<Mutex<VecDeque<String>>>,
    stderr_done: Option<tokio::task::JoinHandle<()>>,
}

impl Worker {
    /// Kills the worker and reaps it (and its spill directory) in the background.
    fn kill(mut self) {
        let _ = self.child.start_kill();
        self.reap();
    }

    /// Closes its stdin, so it exits by itself, and reaps it in the background.
    fn retire(self) {
        let Worker {
            child, stdin, tmp, ..
        } = self;
        drop(stdin);
        reap(child, tmp);
    }

    fn reap(self) {
        let Worker { child, tmp, .. } = self;
        reap(child, tmp);
    }

    /// Why the worker ended (it closed its stdout): its exit status and last words.
    async fn death(mut self, cpu_seconds: u64) -> AnalyticsError {
        let status = tokio::time::timeout(Duration::from_secs(2), self.child.wait()).await;
        if let Some(done) = self.stderr_done.take() {
            let _ = tokio::time::timeout(Duration::from_secs(1), done).await;
        }
        let tail: Vec<String> = self
            .stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect();
        let error = match status {
            Ok(Ok(status)) => classify(status, &tail, cpu_seconds),
            _ => AnalyticsError::Internal("the query worker stopped answering".into()),
        };
        self.kill();
        error
    }
}

fn reap(mut child: Child, tmp: PathBuf) {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => {
            handle.spawn(async move {
                let _ = child.wait().await;
                let _ = tokio::fs::remove_dir_all(&tmp).await;
            });
        }
        Err(_) => {
            let _ = child.start_kill();
            let _ = std::fs::remove_dir_all(&tmp);
        }
    }
}

/// A dead worker's exit as the query's error.
fn classify(status: ExitStatus, stderr: &[String], cpu_seconds: u64) -> AnalyticsError {
    const SIGABRT: i32 = 6;
    const SIGKILL: i32 = 9;
    const SIGSEGV: i32 = 11;
    const SIGXCPU: i32 = 24;
    const SIGXFSZ: i32 = 25;
    let said = stderr.join(" | ");
    let out_of_memory = stderr
        .iter()
        .any(|l| l.contains("memory allocation of") || l.contains("out of memory"));
    match status.signal() {
        Some(SIGXCPU) => AnalyticsError::Limit(GuardError::CpuTime(cpu_seconds)),
        Some(SIGXFSZ) => {
            AnalyticsError::Memory("the query's spill files exceeded their quota".into())
        }
        Some(SIGABRT) if out_of_memory => AnalyticsError::Memory(
            "the query's worker ran out of its memory allowance and was ended".into(),
        ),
        // Nobody but the kernel's OOM killer sends it a SIGKILL the server did not send.
        Some(SIGKILL) => {
            AnalyticsError::Memory("the query's worker was killed by the system".into())
        }
        Some(SIGSEGV) if said.contains("overflowed its stack") => AnalyticsError::Invalid {
            message: "the query is too complex (its worker ran out of stack)".into(),
            sqlstate: "54001".into(),
        },
        _ if out_of_memory => AnalyticsError::Memory(
            "the query's worker ran out of its memory allowance and was ended".into(),
        ),
        _ => AnalyticsError::Internal(format!(
            "the query's worker ended unexpectedly ({status}){}",
            if said.is_empty() {
                String::new()
            } else {
                format!(": {}", said.chars().take(500).collect::<String>())
            }
        )),
    }
}

/// One query of the pool, from the moment its worker said it started until its last frame.
/// Dropping it before the end kills the worker.
pub struct Running {
    pool: Arc<Inner>,
    worker: Option<Worker>,
    permit: Permit,
    kill_at: Instant,
    timeout: Duration,
    cpu_seconds: u64,
    done: bool,
    /// Where the answer's row count goes when the worker reports it.
    rows: Option<Arc<AtomicU64>>,
}

impl Running {
    /// The answer's row count is added to `rows` when it ends.
    pub fn count_rows(mut self, rows: Arc<AtomicU64>) -> Running {
        self.rows = Some(rows);
        self
    }

    async fn frame(&mut self) -> Result<(Tag, Vec<u8>), AnalyticsError> {
        let Some(worker) = self.worker.as_mut() else {
            return Err(AnalyticsError::Internal("the query has no worker".into()));
        };
        match tokio::time::timeout_at(self.kill_at, read_frame(&mut worker.stdout)).await {
            Err(_) => {
                self.pool.metrics.killed("deadline");
                self.permit.strike();
                if let Some(w) = self.take_worker() {
                    w.kill();
                }
                Err(AnalyticsError::Limit(GuardError::Timeout(self.timeout)))
            }
            Ok(Ok(Some(frame))) => Ok(frame),
            Ok(Ok(None)) | Ok(Err(_)) => {
                self.pool.metrics.killed("died");
                self.permit.strike();
                let worker = self.take_worker();
                Err(match worker {
                    Some(w) => w.death(self.cpu_seconds).await,
                    None => AnalyticsError::Internal("the query has no worker".into()),
                })
            }
        }
    }

    fn take_worker(&mut self) -> Option<Worker> {
        self.done = true;
        self.worker.take()
    }

    /// The next bytes of the answer; `None` after the last.
    pub async fn next_chunk(&mut self) -> Option<Result<Bytes, AnalyticsError>> {
        if self.done {
            return None;
        }
        match self.frame().await {
            Ok((Tag::Data, bytes)) => Some(Ok(Bytes::from(bytes))),
            Ok((Tag::End, payload)) => {
                if let (Some(rows), Ok(end)) = (&self.rows, protocol::parse::<End>(&payload)) {
                    rows.fetch_add(end.rows, Ordering::Relaxed);
                }
                self.permit.clear();
                if let Some(w) = self.take_worker() {
                    self.pool.give_back(w);
                }
                None
            }
            Ok((Tag::Error, payload)) => {
                if let Some(w) = self.take_worker() {
                    self.pool.give_back(w);
                }
                Some(Err(wire_error(&payload)))
            }
            Ok((tag, _)) => {
                self.pool.metrics.killed("protocol");
                if let Some(w) = self.take_worker() {
                    w.kill();
                }
                Some(Err(AnalyticsError::Internal(format!(
                    "the query's worker sent an unexpected {tag:?} frame"
                ))))
            }
            Err(e) => Some(Err(e)),
        }
    }

    /// The answer's bytes as a stream (CSV, Parquet, JSON: what the worker encoded).
    pub fn into_stream(self) -> impl Stream<Item = Result<Bytes, AnalyticsError>> + Send + 'static {
        futures::StreamExt::fuse(futures::stream::unfold(self, |mut running| async move {
            running.next_chunk().await.map(|item| (item, running))
        }))
    }

    /// An Arrow answer decoded: its schema, then its batches.
    pub async fn into_batches(
        mut self,
    ) -> Result<
        (
            SchemaRef,
            impl Stream<Item = Result<RecordBatch, AnalyticsError>> + Send + 'static,
        ),
        AnalyticsError,
    > {
        let mut decoding = Decoding {
            decoder: StreamDecoder::new(),
            buffer: Buffer::from_vec(Vec::<u8>::new()),
            ready: VecDeque::new(),
            fed: 0,
        };
        let schema = loop {
            if let Some(schema) = decoding.decoder.schema() {
                break schema;
            }
            match self.next_chunk().await {
                Some(Ok(bytes)) => decoding.feed(bytes)?,
                Some(Err(e)) => return Err(e),
                None => return Err(AnalyticsError::Internal("the answer has no schema".into())),
            }
        };
        let batches = futures::stream::unfold(
            (self, decoding, false),
            |(mut running, mut decoding, failed)| async move {
                if failed {
                    return None;
                }
                loop {
                    if let Some(batch) = decoding.ready.pop_front() {
                        return Some((Ok(batch), (running, decoding, false)));
                    }
                    match running.next_chunk().await {
                        Some(Ok(bytes)) => {
                            if let Err(e) = decoding.feed(bytes) {
                                return Some((Err(e), (running, decoding, true)));
                            }
                        }
                        Some(Err(e)) => return Some((Err(e), (running, decoding, true))),
                        None => return None,
                    }
                }
            },
        );
        Ok((schema, futures::StreamExt::fuse(batches)))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(worker) = self.worker.take() {
            // The answer was abandoned (the client went away): the worker may still be
            // computing, and only killing it stops that.
            self.pool.metrics.killed("abandoned");
            self.permit.strike();
            worker.kill();
        }
    }
}

/// Arrow IPC bytes turned back into batches, at most about one frame held at a time.
struct Decoding {
    decoder: StreamDecoder,
    buffer: Buffer,
    ready: VecDeque<RecordBatch>,
    /// Bytes fed since the last complete batch.
    fed: usize,
}

impl Decoding {
    fn feed(&mut self, bytes: Bytes) -> Result<(), AnalyticsError> {
        self.fed += bytes.len();
        if self.fed > 2 * MAX_FRAME {
            return Err(AnalyticsError::Internal(
                "the query's worker sent a batch larger than allowed".into(),
            ));
        }
        self.buffer = Buffer::from(bytes);
        while !self.buffer.is_empty() {
            match self.decoder.decode(&mut self.buffer) {
                Ok(Some(batch)) => {
                    self.fed = 0;
                    self.ready.push_back(batch);
                }
                Ok(None) => {}
                Err(e) => return Err(AnalyticsError::Internal(format!("bad answer: {e}"))),
            }
        }
        Ok(())
    }
}

fn wire_error(payload: &[u8]) -> AnalyticsError {
    match protocol::parse::<WireError>(payload) {
        Ok(w) => protocol::from_wire(w),
        Err(e) => AnalyticsError::Internal(format!("bad error from the query's worker: {e}")),
    }
}

impl QueryPool {
    /// Starts the pool: `config.min_idle` workers of `program` opening the read model `init`
    /// names. Waits for the first, so a program that cannot serve is an error here.
    pub async fn start(
        program: PathBuf,
        init: &Init,
        config: &WorkersConfig,
        metrics: PoolMetrics,
    ) -> Result<QueryPool, AnalyticsError> {
        let tmp_root = std::env::temp_dir().join(format!(
            "shoplens-queries-{}-{}",
            std::process::id(),
            uuid_like()
        ));
        std::fs::create_dir_all(&tmp_root)
            .map_err(|e| AnalyticsError::Unavailable(format!("cannot create {tmp_root:?}: {e}")))?;
        let cpus = Arc::new(CpuPlan::new(config));
        cpus.apply();
        // The workers keep to their CPUs (the plan may have chosen them).
        let mut init = init.clone();
        init.query.workers.cpus = cpus.worker_cpus().to_vec();
        let pool = QueryPool {
            inner: Arc::new(Inner {
                program,
                init: serde_json::to_vec(&init)
                    .map_err(|e| AnalyticsError::Internal(e.to_string()))?,
                admission: Admission::new(
                    config.max_concurrent,
                    config.max_concurrent_per_user,
                    config.max_queued,
                    Duration::from_millis(config.queue_timeout_ms),
                    CoolDown::of(config),
                ),
                config: config.clone(),
                idle: Mutex::new(Vec::new()),
                starting: AtomicUsize::new(0),
                tmp_root,
                next_id: AtomicU64::new(0),
                metrics,
                cpus,
            }),
        };
        let first = pool.inner.spawn().await?;
        pool.inner.give_back(first);
        pool.inner.replenish();
        Ok(pool)
    }

    /// Queries running now.
    pub fn running(&self) -> usize {
        self.inner.admission.running()
    }

    /// Workers started and idle now.
    pub fn idle(&self) -> usize {
        self.inner.idle_count()
    }

    /// The CPUs the workers keep to; empty: any.
    pub fn worker_cpus(&self) -> Vec<usize> {
        self.inner.cpus.worker_cpus().to_vec()
    }

    /// The process ids of the idle workers.
    pub fn idle_pids(&self) -> Vec<u32> {
        let idle = self.inner.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.iter().filter_map(|w| w.child.id()).collect()
    }

    /// Runs `request` for `user` in a worker, within `timeout` from now (waiting for a slot
    /// included). Returns once the worker started answering: an error before that is the
    /// query's error (a planning error, too busy, the deadline, the worker's death).
    pub async fn run(
        &self,
        user: &str,
        request: &Request,
        params: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Running, AnalyticsError> {
        let deadline = Instant::now() + timeout;
        let permit = self.inner.admission.acquire(user, deadline).await?;
        let header =
            serde_json::to_vec(request).map_err(|e| AnalyticsError::Internal(e.to_string()))?;
        // A worker that died while idle fails the write: try a fresh one once.
        let mut worker = None;
        for _ in 0..2 {
            let mut w = self.inner.take(deadline, timeout).await?;
            let sent = async {
                write_frame(&mut w.stdin, Tag::Request, &header).await?;
                if let Some(params) = params {
                    write_frame(&mut w.stdin, Tag::Params, params).await?;
                }
                std::io::Result::Ok(())
            }
            .await;
            match sent {
                Ok(()) => {
                    worker = Some(w);
                    break;
                }
                Err(_) => {
                    self.inner.metrics.killed("died");
                    w.kill();
                }
            }
        }
        let Some(mut worker) = worker else {
            return Err(AnalyticsError::Unavailable(
                "query workers die as soon as they get a query".into(),
            ));
        };
        worker.queries += 1;
        self.inner.metrics.query_started();
        let mut running = Running {
            pool: self.inner.clone(),
            worker: Some(worker),
            permit,
            kill_at: deadline + GRACE,
            timeout,
            cpu_seconds: request.cpu_seconds,
            done: false,
            rows: None,
        };
        match running.frame().await? {
            (Tag::Started, _) => Ok(running),
            (Tag::Error, payload) => {
                if let Some(w) = running.take_worker() {
                    self.inner.give_back(w);
                }
                Err(wire_error(&payload))
            }
            (tag, _) => {
                self.inner.metrics.killed("protocol");
                if let Some(w) = running.take_worker() {
                    w.kill();
                }
                Err(AnalyticsError::Internal(format!(
                    "the query's worker sent an unexpected {tag:?} frame"
                )))
            }
        }
    }
}

impl Inner {
    fn idle_count(&self) -> usize {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// An idle worker, or a new one when none is idle; past `deadline` (the query's, which
    /// is `timeout` from its start) the query has timed out.
    async fn take(
        self: &Arc<Self>,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<Worker, AnalyticsError> {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        self.replenish();
        match idle {
            Some(worker) => Ok(worker),
            None => match tokio::time::timeout_at(deadline, self.spawn()).await {
                Ok(worker) => worker,
                Err(_) => Err(AnalyticsError::Limit(GuardError::Timeout(timeout))),
            },
        }
    }

    /// Keeps `min_idle` workers idle or starting, in the background.
    fn replenish(self: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        loop {
            let have = self.idle_count() + self.starting.load(Ordering::SeqCst);
            if have >= self.config.min_idle {
                return;
            }
            self.starting.fetch_add(1, Ordering::SeqCst);
            let inner = self.clone();
            runtime.spawn(async move {
                let started = inner.spawn().await;
                inner.starting.fetch_sub(1, Ordering::SeqCst);
                match started {
                    Ok(worker) => inner.give_back(worker),
                    Err(e) => tracing::warn!(error = %e, "cannot start a query worker"),
                }
            });
        }
    }

    fn give_back(&self, worker: Worker) {
        if worker.queries >= self.config.max_queries_per_worker {
            self.metrics.killed("retired");
            worker.retire();
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() >= self.config.min_idle.max(self.config.max_concurrent) {
            drop(idle);
            self.metrics.killed("retired");
            worker.retire();
        } else {
            idle.push(worker);
        }
    }

    /// Starts a worker and waits until it is ready.
    async fn spawn(&self) -> Result<Worker, AnalyticsError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let tmp = self.tmp_root.join(format!("w{id}"));
        let unavailable = |what: &str, e: &dyn std::fmt::Display| {
            AnalyticsError::Unavailable(format!("{what} {}: {e}", self.program.display()))
        };
        std::fs::create_dir_all(&tmp)
            .map_err(|e| unavailable("cannot create a directory for", &e))?;
        let mut command = Command::new(&self.program);
        command
            .arg(SUBCOMMAND)
            .env_clear()
            .env("TMPDIR", &tmp)
            .env(FEW_MALLOC_ARENAS.0, FEW_MALLOC_ARENAS.1)
            .env("RUST_BACKTRACE", "0")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .map_err(|e| unavailable("cannot start", &e))?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(AnalyticsError::Unavailable(
                "a worker's pipes are missing".into(),
            ));
        };
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let stderr_done = {
            let tail = tail.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    tracing::debug!(worker = %line, "query worker said");
                    let mut tail = tail.lock().unwrap_or_else(|e| e.into_inner());
                    if tail.len() == STDERR_LINES {
                        tail.pop_front();
                    }
                    tail.push_back(line);
                }
            })
        };
        let mut worker = Worker {
            child,
            stdin,
            stdout,
            queries: 0,
            tmp,
            stderr: tail,
            stderr_done: Some(stderr_done),
        };
        let ready = async {
            write_frame(&mut worker.stdin, Tag::Init, &self.init).await?;
            read_frame(&mut worker.stdout).await
        };
        let start_timeout = Duration::from_millis(self.config.start_timeout_ms);
        match tokio::time::timeout(start_timeout, ready).await {
            Ok(Ok(Some((Tag::Ready, _)))) => {
                self.metrics.worker_started();
                Ok(worker)
            }
            Ok(Ok(Some((tag, _)))) => {
                worker.kill();
                Err(AnalyticsError::Unavailable(format!(
                    "a query worker sent {tag:?} instead of Ready"
                )))
            }
            Ok(Ok(None) | Err(_)) => {
                let why = worker.death(0).await;
                Err(AnalyticsError::Unavailable(format!(
                    "a query worker ended during start-up: {why}"
                )))
            }
            Err(_) => {
                worker.kill();
                Err(AnalyticsError::Unavailable(format!(
                    "a query worker did not start within {} ms",
                    self.config.start_timeout_ms
                )))
            }
        }
    }
}

/// A short random-enough suffix for the pool's directory (two servers in one process).
fn uuid_like() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{nanos:x}{}", N.fetch_add(1, Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exit(code: i32) -> ExitStatus {
        ExitStatus::from_raw(code << 8)
    }

    fn signal(sig: i32) -> ExitStatus {
        ExitStatus::from_raw(sig)
    }

    #[test]
    fn a_dead_worker_is_explained_by_how_it_died() {
        let oom = vec!["memory allocation of 491520000000 bytes failed".to_owned()];
        assert!(matches!(
            classify(signal(6), &oom, 30),
            AnalyticsError::Memory(_)
        ));
        assert!(matches!(
            classify(signal(24), &[], 30),
            AnalyticsError::Limit(GuardError::CpuTime(30))
        ));
        assert!(matches!(
            classify(signal(9), &[], 30),
            AnalyticsError::Memory(_)
        ));
        assert_eq!(classify(signal(25), &[], 30).sqlstate(), "53200");
        let stack = vec!["thread 'x' has overflowed its stack".to_owned()];
        assert_eq!(classify(signal(11), &stack, 30).sqlstate(), "54001");
        match classify(exit(101), &["panicked at boom".to_owned()], 30) {
            AnalyticsError::Internal(m) => assert!(m.contains("panicked at boom"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}
