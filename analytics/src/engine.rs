//! The query engine: one DataFusion SQL dialect over the read model, read-only and limited.
//!
//! Two sessions share the same tables: the *interactive* one (dashboard, SQL endpoints)
//! with a row limit, a deadline and a memory pool without spilling; the *export* one with
//! no row limit, a long deadline, and spilling to disk so exports stay memory-bounded.
//!
//! Tables (in catalog `shoplens`, schema `public`): the seven raw event tables, the seven
//! pre-aggregated tables (merged: one row per key), `dead_letters`, and two dimension views
//! derived from the raw events, `products` and `customers`. See `docs/analytics.md`.

use std::sync::Arc;
use std::time::Duration;

use arrow_array::RecordBatch;
use datafusion::catalog::TableProvider;
use datafusion::common::ParamValues;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use datafusion::logical_expr::{DdlStatement, LogicalPlan};
use datafusion::physical_plan::execute_stream;
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use datafusion::sql::parser::{DFParser, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::Statement;
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use shoplens_readmodel::freshness::FreshnessReport;

use crate::AnalyticsError;
use crate::cache::{Cached, ResultCache};
use crate::guard::{GuardRule, QueryLimits};
pub use crate::isolation::protocol::SessionKind;
pub use crate::privacy::Pii;
use crate::read_model::{ReadModel, Table};
use crate::rollup::RollupRule;

/// The catalog and schema every table is in (the Postgres database is named after it).
pub const CATALOG: &str = "shoplens";
pub const SCHEMA: &str = "public";

/// Limits of the SQL engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryConfig {
    /// Interactive queries (dashboard, SQL endpoints) are stopped after this long.
    pub timeout_ms: u64,
    /// Interactive queries may return at most this many rows.
    pub max_rows: u64,
    /// Memory the interactive session's operators may use (MiB): in the server process,
    /// the dashboard views and reconciliation (ad-hoc queries run in query workers, whose
    /// own pool is a share of `workers.memory_mb`).
    pub memory_limit_mb: usize,
    /// Memory exports may use before they spill to disk (MiB).
    pub export_memory_limit_mb: usize,
    /// Exports are stopped after this long.
    pub export_timeout_ms: u64,
    /// Exports may return at most this many rows.
    pub export_max_rows: u64,
    /// Disk one query may fill with spill files (MiB).
    pub spill_quota_mb: u64,
    /// The largest answer the Postgres endpoint gathers in the server process (MiB of Arrow
    /// data); a larger one is refused (SQLSTATE 54000) and should be an export.
    pub max_result_mb: usize,
    /// The result cache of interactive answers (MiB of Arrow data; 0: none), shared by the
    /// dashboard, HTTP SQL and the Postgres endpoint; see `crate::cache`.
    pub result_cache_mb: usize,
    /// The query workers every ad-hoc query runs in.
    pub workers: WorkersConfig,
}

impl Default for QueryConfig {
    fn default() -> Self {
        QueryConfig {
            timeout_ms: 10_000,
            max_rows: 100_000,
            memory_limit_mb: 512,
            export_memory_limit_mb: 128,
            export_timeout_ms: 3600 * 1000,
            export_max_rows: 100_000_000,
            spill_quota_mb: 4096,
            max_result_mb: 64,
            result_cache_mb: 64,
            workers: WorkersConfig::default(),
        }
    }
}

/// Ad-hoc SQL (HTTP, Postgres, exports) runs in worker processes, each under operating
/// system limits, so that no query can stop, slow or kill the server process (which, in
/// the embedded default, also runs the shop). See `crate::isolation`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkersConfig {
    /// Run ad-hoc queries in worker processes. `false` runs them in the server process:
    /// for measuring what isolation costs, never where untrusted users reach the server.
    pub enabled: bool,
    /// The program started as a query worker (with the argument `query-worker`); empty:
    /// this program.
    pub program: String,
    /// Workers kept started and idle, so a query does not wait for one to start.
    pub min_idle: usize,
    /// A worker is replaced after this many queries.
    pub max_queries_per_worker: u32,
    /// Address space one worker may use beyond what it holds at start (MiB); a query that
    /// needs more gets an out-of-memory error. On the embedded store an aggregate table
    /// whose merged rows would take more than a quarter of it is merged a period at a time
    /// at each scan instead of being kept merged in the worker.
    pub memory_mb: u64,
    /// CPU seconds an interactive query may use.
    pub cpu_seconds: u64,
    /// CPU seconds an export may use.
    pub export_cpu_seconds: u64,
    /// Scheduling priority of the workers (`nice`, 0-19): the shop's threads come first.
    /// Applies when `idle_class` is off or the kernel refuses it.
    pub nice: i32,
    /// Run the workers in the kernel's idle scheduling class (`SCHED_IDLE`): they get a CPU
    /// only when no other thread wants it, and a thread of the shop that wakes up preempts
    /// them at once. When the shop keeps every core busy, queries wait (up to their
    /// deadline) rather than the shop.
    pub idle_class: bool,
    /// The CPUs (as the kernel numbers them) the workers run on. Empty: the last quarter
    /// of this process's CPUs when it has four or more, else any.
    pub cpus: Vec<usize>,
    /// Let the workers run on any CPU (no CPUs of their own).
    pub share_cpus: bool,
    /// This process's own threads (in the all-in-one process, the shop's) keep off the
    /// workers' CPUs, so that a query never shares a CPU with the shop: measured, a CPU a
    /// worker runs on stalls other threads now and then even in `SCHED_IDLE`
    /// (benches/RESULTS.md, "Query isolation"). The price: the shop never uses those CPUs.
    pub yield_cpus: bool,
    /// Queries running at once, over all users.
    pub max_concurrent: usize,
    /// Queries running at once for one user.
    pub max_concurrent_per_user: usize,
    /// Queries waiting for a slot at most; more are refused as too busy.
    pub max_queued: usize,
    /// How long a query waits for a slot at most (ms, and never past its deadline).
    pub queue_timeout_ms: u64,
    /// How long a worker may take to start (ms).
    pub start_timeout_ms: u64,
    /// After a query of a user ends its worker (killed at its deadline, past its memory or
    /// CPU cap, or abandoned by its client), that user's queries start at most one per this
    /// many ms, doubled with each such query in a row up to `max_cool_down_ms`, until one
    /// ends normally. 0: no cool-down.
    pub cool_down_ms: u64,
    /// The longest cool-down (ms).
    pub max_cool_down_ms: u64,
}

impl Default for WorkersConfig {
    fn default() -> Self {
        WorkersConfig {
            enabled: true,
            program: String::new(),
            min_idle: 2,
            max_queries_per_worker: 1000,
            memory_mb: 1024,
            cpu_seconds: 30,
            export_cpu_seconds: 3600,
            nice: 10,
            idle_class: true,
            cpus: Vec::new(),
            share_cpus: false,
            yield_cpus: true,
            max_concurrent: 4,
            max_concurrent_per_user: 2,
            max_queued: 32,
            queue_timeout_ms: 10_000,
            start_timeout_ms: 30_000,
            cool_down_ms: 1_000,
            max_cool_down_ms: 30_000,
        }
    }
}

/// The engine the servers and the export command query through. Cheap to clone.
///
/// Four sessions over the same providers: interactive and export, each once with personal
/// data visible (administrators) and once masked (everyone else, see [`crate::privacy`]);
/// the two of a kind share one memory pool.
#[derive(Clone)]
pub struct Engine {
    sessions: Arc<Sessions>,
    read_model: Arc<dyn ReadModel>,
    /// The limits it was built with (query workers build theirs from the same).
    config: QueryConfig,
    lag_events: LagSource,
    cache: ResultCache,
    plans: PlanCache,
}

struct Sessions {
    interactive: Arc<SessionContext>,
    interactive_masked: Arc<SessionContext>,
    export: Arc<SessionContext>,
    export_masked: Arc<SessionContext>,
}

/// Events on the bus not yet in the read model, where the caller can tell (the ingest
/// worker in the same process); `None` when unknown.
pub type LagSource = Arc<dyn Fn() -> Option<u64> + Send + Sync>;

impl Engine {
    pub async fn new(
        read_model: Arc<dyn ReadModel>,
        config: &QueryConfig,
    ) -> Result<Engine, AnalyticsError> {
        let mib = 1024 * 1024;
        let interactive = Limits {
            query: QueryLimits {
                timeout: Duration::from_millis(config.timeout_ms),
                max_rows: Some(config.max_rows),
            },
            runtime: runtime(config.memory_limit_mb * mib, None)?,
        };
        let export = Limits {
            query: QueryLimits {
                timeout: Duration::from_millis(config.export_timeout_ms),
                max_rows: Some(config.export_max_rows),
            },
            runtime: runtime(
                config.export_memory_limit_mb * mib,
                Some(config.spill_quota_mb.saturating_mul(mib as u64)),
            )?,
        };
        let sessions = Sessions {
            interactive: session(&read_model, &interactive, Pii::Visible).await?,
            interactive_masked: session(&read_model, &interactive, Pii::Masked).await?,
            export: session(&read_model, &export, Pii::Visible).await?,
            export_masked: session(&read_model, &export, Pii::Masked).await?,
        };
        Ok(Engine {
            sessions: Arc::new(sessions),
            read_model,
            config: config.clone(),
            lag_events: Arc::new(|| None),
            cache: ResultCache::disabled(),
            plans: PlanCache::new(PLAN_CACHE_ENTRIES),
        })
    }

    /// Where `lag_events` of the freshness report comes from.
    pub fn with_lag_source(mut self, lag: LagSource) -> Engine {
        self.lag_events = lag;
        self
    }

    /// `embedded` or `clickhouse`.
    pub fn back_end(&self) -> &'static str {
        self.read_model.kind()
    }

    /// The limits this engine was built with.
    pub fn config(&self) -> &QueryConfig {
        &self.config
    }

    /// The read model this engine reads.
    pub fn read_model(&self) -> &Arc<dyn ReadModel> {
        &self.read_model
    }

    /// The interactive session with personal data masked: what the Postgres endpoint plans
    /// prepared statements on (for their types) and reads schemas from.
    pub fn interactive_context(&self) -> Arc<SessionContext> {
        self.sessions.interactive_masked.clone()
    }

    /// Every session, for setting up what all of them share (the Postgres catalog).
    pub fn contexts(&self) -> [Arc<SessionContext>; 4] {
        let s = &self.sessions;
        [
            s.interactive.clone(),
            s.interactive_masked.clone(),
            s.export.clone(),
            s.export_masked.clone(),
        ]
    }

    /// How fresh the live read model is now, with its data version.
    pub async fn freshness(&self) -> Result<FreshnessReport, AnalyticsError> {
        let w = self.read_model.watermark().await?;
        Ok(FreshnessReport::new(
            w.generation,
            w.freshness,
            (self.lag_events)(),
            chrono::Utc::now().timestamp_millis(),
        )
        .with_data_version(w.version))
    }

    /// The result cache the dashboard reads through (none unless a server set one).
    pub fn with_result_cache(mut self, cache: ResultCache) -> Engine {
        self.cache = cache;
        self
    }

    /// Like [`Engine::collect`], through the result cache: `seen` is the read model's state
    /// as read before the query (see [`crate::cache`]).
    pub async fn collect_cached(
        &self,
        pii: Pii,
        sql: &str,
        seen: &FreshnessReport,
    ) -> Result<Arc<Cached>, AnalyticsError> {
        let compute = async {
            let stream = self.run_planned(pii, sql, seen.generation).await?;
            let schema = stream.schema();
            let batches: Vec<RecordBatch> = stream.try_collect().await?;
            Ok((schema, batches))
        };
        match self.cache.key(sql, None, pii, seen) {
            Some(key) => self.cache.get_or_compute(key, compute).await,
            None => {
                let (schema, batches) = compute.await?;
                Ok(Arc::new(Cached::uncached(schema, batches)))
            }
        }
    }

    /// Runs one of the server's own queries (the dashboard's) in the interactive session,
    /// its optimized logical plan taken from [`PlanCache`] when it was planned before in
    /// this generation: the dashboard asks the same few questions over and over, and
    /// parsing and optimizing them was a fifth of a view's CPU time. The physical plan is
    /// made anew every time, as it names the files (or the ClickHouse database) live now.
    async fn run_planned(
        &self,
        pii: Pii,
        sql: &str,
        generation: u32,
    ) -> Result<SendableRecordBatchStream, AnalyticsError> {
        let ctx = self.context(SessionKind::Interactive, pii);
        let state = ctx.state();
        let key = (sql.to_owned(), pii, generation);
        let plan = match self.plans.get(&key).await {
            Some(plan) => plan,
            None => {
                let plan = read_only_plan(&state, sql).await?;
                let optimized = Arc::new(state.optimize(&plan)?);
                if immutable(&plan) {
                    self.plans.insert(key, optimized.clone()).await;
                }
                optimized
            }
        };
        let physical = state
            .query_planner()
            .create_physical_plan(&plan, &state)
            .await?;
        Ok(execute_stream(physical, state.task_ctx())?)
    }

    /// The session of `kind` for a reader who may (or may not) see personal data.
    pub fn context(&self, kind: SessionKind, pii: Pii) -> Arc<SessionContext> {
        let s = &self.sessions;
        match (kind, pii) {
            (SessionKind::Interactive, Pii::Visible) => s.interactive.clone(),
            (SessionKind::Interactive, Pii::Masked) => s.interactive_masked.clone(),
            (SessionKind::Export, Pii::Visible) => s.export.clone(),
            (SessionKind::Export, Pii::Masked) => s.export_masked.clone(),
        }
    }

    /// Runs one read-only query in the given session, with the values of its `$n`
    /// placeholders (the Postgres extended protocol's bound parameters).
    pub async fn run_in(
        &self,
        session: SessionKind,
        pii: Pii,
        sql: &str,
        params: Option<ParamValues>,
    ) -> Result<SendableRecordBatchStream, AnalyticsError> {
        run(&self.context(session, pii), sql, params).await
    }

    /// Runs one read-only query in the interactive session, personal data as `pii` says,
    /// and collects its rows.
    pub async fn collect(&self, pii: Pii, sql: &str) -> Result<Vec<RecordBatch>, AnalyticsError> {
        Ok(self
            .run_in(SessionKind::Interactive, pii, sql, None)
            .await?
            .try_collect()
            .await?)
    }

    /// Runs one read-only query in the export session (row cap, spills to disk), personal
    /// data as `pii` says.
    pub async fn export(
        &self,
        pii: Pii,
        sql: &str,
    ) -> Result<SendableRecordBatchStream, AnalyticsError> {
        self.run_in(SessionKind::Export, pii, sql, None).await
    }
}

async fn run(
    ctx: &SessionContext,
    sql: &str,
    params: Option<ParamValues>,
) -> Result<SendableRecordBatchStream, AnalyticsError> {
    let mut plan = read_only_plan(&ctx.state(), sql).await?;
    if let Some(params) = params {
        plan = plan.with_param_values(params)?;
    }
    let df = ctx.execute_logical_plan(plan).await?;
    Ok(df.execute_stream().await?)
}

/// Optimized logical plans of the dashboard's queries, by SQL text, reader and generation.
/// Its invariant: a plan is only kept if it calls no function whose value may change
/// between two runs (`now()` is folded into a constant when a plan is optimized).
type PlanCache = moka::future::Cache<(String, Pii, u32), Arc<LogicalPlan>>;

/// The dashboard asks a few dozen distinct questions; their plans are small.
const PLAN_CACHE_ENTRIES: u64 = 256;

/// Whether `plan` (subqueries included) calls only immutable scalar functions.
fn immutable(plan: &LogicalPlan) -> bool {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    use datafusion::logical_expr::{Expr, Volatility};
    let mut only_immutable = true;
    let _ = plan.apply_with_subqueries(|node| {
        let _ = node.apply_expressions(|e| {
            let _ = e.apply(|e| {
                if let Expr::ScalarFunction(f) = e
                    && f.func.signature().volatility != Volatility::Immutable
                {
                    only_immutable = false;
                }
                Ok(TreeNodeRecursion::Continue)
            });
            Ok(TreeNodeRecursion::Continue)
        });
        Ok(TreeNodeRecursion::Continue)
    });
    only_immutable
}

/// The logical plan of `sql`, which must be one read-only query.
async fn read_only_plan(state: &SessionState, sql: &str) -> Result<LogicalPlan, AnalyticsError> {
    let statement = parse_read_only(sql)?;
    let plan = state.statement_to_plan(statement).await?;
    // Second line of defence: the plan itself must not write or change the session.
    read_only_options().verify_plan(&plan).map_err(|e| {
        let what = match &plan {
            LogicalPlan::Ddl(DdlStatement::CreateMemoryTable(_)) => "SELECT INTO",
            _ => "a statement that writes",
        };
        AnalyticsError::Forbidden(format!(
            "cannot execute {what}: the ShopLens analytics endpoint is read-only ({})",
            e.strip_backtrace()
        ))
    })?;
    Ok(plan)
}

/// DDL, DML and session statements are all refused.
pub fn read_only_options() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

/// Parses `sql` as exactly one read-only query (`SELECT`, `WITH`, `VALUES`, `EXPLAIN`).
pub fn parse_read_only(sql: &str) -> Result<DfStatement, AnalyticsError> {
    let mut statements =
        DFParser::parse_sql_with_dialect(sql, &PostgreSqlDialect {}).map_err(|e| {
            AnalyticsError::Invalid {
                message: e.to_string(),
                sqlstate: "42601".into(),
            }
        })?;
    let statement = match (statements.pop_front(), statements.is_empty()) {
        (None, _) => return Err(AnalyticsError::invalid("no SQL statement given")),
        (Some(_), false) => {
            return Err(AnalyticsError::invalid(
                "exactly one statement per request, please",
            ));
        }
        (Some(s), true) => s,
    };
    match &statement {
        DfStatement::Statement(s) => check_query_statement(s)?,
        DfStatement::Explain(e) => match e.statement.as_ref() {
            DfStatement::Statement(s) => check_query_statement(s)?,
            _ => return Err(forbidden()),
        },
        _ => return Err(forbidden()),
    }
    Ok(statement)
}

fn forbidden() -> AnalyticsError {
    AnalyticsError::Forbidden(
        "only read-only queries (SELECT, WITH, VALUES, EXPLAIN) are allowed; \
         the analytics SQL endpoint cannot write, create, copy or read files"
            .into(),
    )
}

/// Ok for a plain query that is not nested too deeply and hides no statement (`WITH t AS
/// (...) INSERT ...` parses as a query whose body is an `INSERT`); the Postgres endpoint
/// also lets session statements through.
pub fn check_query_statement(s: &Statement) -> Result<(), AnalyticsError> {
    match s {
        Statement::Query(_) => match walk(s) {
            Walk::Ok => Ok(()),
            Walk::TooDeep => Err(too_deep()),
            Walk::HidesStatement => Err(forbidden()),
        },
        _ => Err(forbidden()),
    }
}

/// How deeply expressions and subqueries may nest. The parser bounds parentheses and
/// function calls itself, but a flat chain such as `1 + 1 + ... + 1` is one level per
/// operator, and DataFusion clones, formats and evaluates expression trees recursively: a
/// few thousand levels overflow a thread's stack and abort the whole process.
pub const MAX_NESTING: usize = 256;

/// Refuses a statement whose expressions or subqueries nest deeper than [`MAX_NESTING`].
pub fn check_nesting(s: &Statement) -> Result<(), AnalyticsError> {
    match walk(s) {
        Walk::TooDeep => Err(too_deep()),
        _ => Ok(()),
    }
}

fn too_deep() -> AnalyticsError {
    AnalyticsError::Invalid {
        message: format!(
            "the query nests expressions or subqueries more than {MAX_NESTING} levels deep"
        ),
        sqlstate: "54001".into(),
    }
}

#[derive(Debug, PartialEq)]
enum Walk {
    Ok,
    TooDeep,
    HidesStatement,
}

/// Walks `s`, stopping at the nesting limit (so the walk itself never recurses deeper than
/// that) or at a statement inside the statement.
fn walk(s: &Statement) -> Walk {
    use datafusion::sql::sqlparser::ast::{Expr, Query, Visit, Visitor};
    use std::ops::ControlFlow;

    #[derive(Default)]
    struct State {
        depth: usize,
        statements: usize,
    }
    impl State {
        fn enter(&mut self) -> ControlFlow<Walk> {
            self.depth += 1;
            if self.depth > MAX_NESTING {
                ControlFlow::Break(Walk::TooDeep)
            } else {
                ControlFlow::Continue(())
            }
        }
        fn leave(&mut self) -> ControlFlow<Walk> {
            self.depth -= 1;
            ControlFlow::Continue(())
        }
    }
    impl Visitor for State {
        type Break = Walk;
        fn pre_visit_statement(&mut self, _: &Statement) -> ControlFlow<Walk> {
            self.statements += 1;
            if self.statements > 1 {
                ControlFlow::Break(Walk::HidesStatement)
            } else {
                ControlFlow::Continue(())
            }
        }
        fn pre_visit_query(&mut self, _: &Query) -> ControlFlow<Walk> {
            self.enter()
        }
        fn post_visit_query(&mut self, _: &Query) -> ControlFlow<Walk> {
            self.leave()
        }
        fn pre_visit_expr(&mut self, _: &Expr) -> ControlFlow<Walk> {
            self.enter()
        }
        fn post_visit_expr(&mut self, _: &Expr) -> ControlFlow<Walk> {
            self.leave()
        }
    }
    match s.visit(&mut State::default()) {
        ControlFlow::Continue(()) => Walk::Ok,
        ControlFlow::Break(why) => why,
    }
}

/// What the sessions of one kind share: their limits and their runtime (memory pool and
/// spill files).
struct Limits {
    query: QueryLimits,
    runtime: Arc<RuntimeEnv>,
}

/// A runtime whose memory pool holds `memory_bytes`; `spill_quota` (bytes) lets its queries
/// spill to disk, up to that.
fn runtime(
    memory_bytes: usize,
    spill_quota: Option<u64>,
) -> Result<Arc<RuntimeEnv>, AnalyticsError> {
    let disk = match spill_quota {
        Some(quota) => DiskManagerBuilder::default()
            .with_mode(DiskManagerMode::OsTmpDirectory)
            .with_max_temp_directory_size(quota),
        None => DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
    };
    Ok(RuntimeEnvBuilder::new()
        .with_memory_limit(memory_bytes, 1.0)
        .with_disk_manager_builder(disk)
        .build_arc()?)
}

/// A session over `read_model`, personal data as `pii` says.
async fn session(
    read_model: &Arc<dyn ReadModel>,
    limits: &Limits,
    pii: Pii,
) -> Result<Arc<SessionContext>, AnalyticsError> {
    let config = SessionConfig::new()
        .with_default_catalog_and_schema(CATALOG, SCHEMA)
        .with_create_default_catalog_and_schema(true)
        .with_information_schema(true)
        .with_target_partitions(2);
    let providers: Vec<(Table, Arc<dyn TableProvider>)> = Table::all()
        .into_iter()
        .map(|table| {
            let provider = read_model.provider(table);
            let provider = match pii {
                Pii::Visible => provider,
                Pii::Masked => crate::privacy::masked(table, provider),
            };
            (table, provider)
        })
        .collect();
    // Sums of a daily table over whole months read its month rollup.
    let rollups = RollupRule::new(|t| {
        let found = providers.iter().find(|(table, _)| *table == Table::Agg(t));
        found
            .expect("every aggregate table has a provider")
            .1
            .clone()
    });
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(limits.runtime.clone())
        .with_default_features()
        .with_optimizer_rule(Arc::new(rollups))
        .with_physical_optimizer_rule(Arc::new(GuardRule {
            limits: limits.query,
        }))
        // Whole sub-plans over ClickHouse tables run in ClickHouse (nothing to do for the
        // embedded store's tables).
        .with_query_planner(Arc::new(crate::clickhouse::RemotePlanner))
        .build();
    let ctx = SessionContext::new_with_state(state);
    crate::bounded::bound_functions(&ctx);
    for (table, provider) in providers {
        ctx.register_table(table.name(), provider)?;
    }
    for (name, sql) in VIEWS {
        let view = ctx.sql(sql).await?.into_view();
        ctx.register_table(*name, view)?;
    }
    Ok(Arc::new(ctx))
}

/// The names of the dimension views.
pub fn view_names() -> impl Iterator<Item = &'static str> {
    VIEWS.iter().map(|(name, _)| *name)
}

/// Dimension views over the raw events: the current state of every product and customer.
const VIEWS: &[(&str, &str)] = &[
    (
        "products",
        "SELECT c.product_id, c.sku, c.name, c.category, p.price, p.currency, \
                c.occurred_at AS created_at, p.updated_at \
         FROM product_events c \
         JOIN (SELECT product_id, \
                      last_value(price ORDER BY occurred_at, event_id) AS price, \
                      last_value(currency ORDER BY occurred_at, event_id) AS currency, \
                      max(occurred_at) AS updated_at \
               FROM product_events GROUP BY product_id) p \
           ON c.product_id = p.product_id \
         WHERE c.event_type = 'ProductCreated'",
    ),
    (
        "customers",
        "SELECT customer_id, \
                last_value(name ORDER BY occurred_at, event_id) AS name, \
                last_value(email ORDER BY occurred_at, event_id) AS email, \
                last_value(country ORDER BY occurred_at, event_id) AS country, \
                min(occurred_at) AS registered_at, \
                max(occurred_at) AS updated_at \
         FROM customer_events GROUP BY customer_id",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn plans_calling_functions_of_the_moment_are_not_kept() {
        let ctx = SessionContext::new();
        let plan = |sql: &'static str| {
            let ctx = ctx.clone();
            async move { ctx.sql(sql).await.expect(sql).logical_plan().clone() }
        };
        for kept in [
            "SELECT 1 + 1 AS two",
            "SELECT abs(-1), upper('a')",
            "SELECT x FROM (VALUES (1)) t(x) WHERE x IN (SELECT 1)",
        ] {
            assert!(immutable(&plan(kept).await), "{kept}");
        }
        for not_kept in [
            "SELECT now()",
            "SELECT random()",
            "SELECT x FROM (VALUES (1)) t(x) WHERE x IN (SELECT extract(year FROM now()))",
        ] {
            assert!(!immutable(&plan(not_kept).await), "{not_kept}");
        }
    }

    #[test]
    fn only_single_read_only_queries_parse() {
        for ok in [
            "SELECT 1",
            "with x as (select 1) select * from x",
            "VALUES (1)",
            "EXPLAIN SELECT 1",
        ] {
            parse_read_only(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "INSERT INTO orders VALUES (1)",
            "DELETE FROM orders",
            "UPDATE orders SET total = 0",
            "DROP TABLE orders",
            "CREATE TABLE t (a int)",
            "CREATE VIEW v AS SELECT 1",
            "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/etc/passwd'",
            "COPY orders TO '/tmp/x.csv'",
            "SET datafusion.execution.batch_size = 1",
            "EXPLAIN CREATE TABLE t (a int)",
            "WITH t AS (SELECT 1) INSERT INTO orders SELECT * FROM t",
            "WITH t AS (SELECT 1) DELETE FROM orders",
        ] {
            assert!(
                matches!(parse_read_only(bad), Err(AnalyticsError::Forbidden(_))),
                "{bad} was not refused"
            );
        }
        assert!(matches!(
            parse_read_only("SELECT 1; SELECT 2"),
            Err(AnalyticsError::Invalid { .. })
        ));
        assert!(matches!(
            parse_read_only(""),
            Err(AnalyticsError::Invalid { .. })
        ));
        assert!(matches!(
            parse_read_only("SELEC 1"),
            Err(AnalyticsError::Invalid { .. })
        ));
    }
}
