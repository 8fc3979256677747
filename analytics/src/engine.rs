//! The query engine: one DataFusion SQL dialect over the read model, read-only and limited.
//!
//! Two sessions share the same tables: the *interactive* one (dashboard, SQL endpoints)
//! with a row limit, a deadline and a memory pool without spilling; the *export* one with
//! no row limit, a long deadline, and spilling to disk so exports stay memory-bounded.
//!
//! Tables (in catalog `shoplens`, schema `public`): the seven raw event tables, the five
//! pre-aggregated tables (merged: one row per key), `dead_letters`, and two dimension views
//! derived from the raw events, `products` and `customers`. See `docs/analytics.md`.

use std::sync::Arc;
use std::time::Duration;

use arrow_array::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use datafusion::sql::parser::{DFParser, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::Statement;
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use shoplens_ingest::api::FreshnessReport;

use crate::guard::{GuardError, GuardRule, QueryLimits};
use crate::read_model::{ReadModel, ReadModelError, Table};

/// The catalog and schema every table is in (the Postgres database is named after it).
pub const CATALOG: &str = "shoplens";
pub const SCHEMA: &str = "public";

/// Limits of the SQL engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryConfig {
    /// Interactive queries (dashboard, SQL endpoints) are stopped after this long.
    pub timeout_ms: u64,
    /// Interactive queries may return at most this many rows (exports have no limit).
    pub max_rows: u64,
    /// Memory all interactive queries together may use for their operators (MiB); a query
    /// that needs more fails instead of taking the server down.
    pub memory_limit_mb: usize,
    /// Memory exports may use before they spill to disk (MiB).
    pub export_memory_limit_mb: usize,
    /// Exports are stopped after this long.
    pub export_timeout_ms: u64,
}

impl Default for QueryConfig {
    fn default() -> Self {
        QueryConfig {
            timeout_ms: 10_000,
            max_rows: 100_000,
            memory_limit_mb: 512,
            export_memory_limit_mb: 128,
            export_timeout_ms: 6 * 3600 * 1000,
        }
    }
}

/// Why a query did not answer.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// Not one read-only `SELECT` (or a statement a session may run).
    #[error("{0}")]
    Forbidden(String),
    /// The SQL does not parse or does not plan (unknown table or column, bad types).
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Limit(GuardError),
    /// The memory pool refused the query.
    #[error("query needs more memory than allowed: {0}")]
    Memory(String),
    #[error(transparent)]
    ReadModel(#[from] ReadModelError),
    #[error("query failed: {0}")]
    Internal(String),
}

impl From<DataFusionError> for QueryError {
    fn from(e: DataFusionError) -> Self {
        if let Some(g) = GuardError::find(&e) {
            return QueryError::Limit(g.clone());
        }
        if let DataFusionError::External(inner) = e.find_root()
            && let Some(rm) = inner.downcast_ref::<ReadModelError>()
        {
            return QueryError::ReadModel(rm.clone());
        }
        match e.find_root() {
            DataFusionError::SQL(..)
            | DataFusionError::Plan(_)
            | DataFusionError::SchemaError(..)
            | DataFusionError::NotImplemented(_) => QueryError::Invalid(e.strip_backtrace()),
            DataFusionError::ResourcesExhausted(m) => QueryError::Memory(m.clone()),
            // Errors evaluating the user's expressions (division by zero, bad casts).
            DataFusionError::Execution(m) if !m.trim().is_empty() => QueryError::Invalid(m.clone()),
            // The second field is context (a backtrace), not the message.
            DataFusionError::ArrowError(a, _) => QueryError::Invalid(a.to_string()),
            DataFusionError::Execution(_) => QueryError::Invalid(e.strip_backtrace()),
            _ => QueryError::Internal(e.strip_backtrace()),
        }
    }
}

/// The engine the servers and the export command query through. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    interactive: Arc<SessionContext>,
    export: Arc<SessionContext>,
    read_model: Arc<dyn ReadModel>,
    lag_events: LagSource,
}

/// Events on the bus not yet in the read model, where the caller can tell (the ingest
/// worker in the same process); `None` when unknown.
pub type LagSource = Arc<dyn Fn() -> Option<u64> + Send + Sync>;

impl Engine {
    pub async fn new(
        read_model: Arc<dyn ReadModel>,
        config: &QueryConfig,
    ) -> Result<Engine, QueryError> {
        let mib = 1024 * 1024;
        let interactive = session(
            &read_model,
            QueryLimits {
                timeout: Duration::from_millis(config.timeout_ms),
                max_rows: Some(config.max_rows),
            },
            config.memory_limit_mb * mib,
            false,
        )
        .await?;
        let export = session(
            &read_model,
            QueryLimits {
                timeout: Duration::from_millis(config.export_timeout_ms),
                max_rows: None,
            },
            config.export_memory_limit_mb * mib,
            true,
        )
        .await?;
        Ok(Engine {
            interactive: Arc::new(interactive),
            export: Arc::new(export),
            read_model,
            lag_events: Arc::new(|| None),
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

    /// The interactive session, for the Postgres wire protocol (which adds its catalog
    /// tables and checks statements itself).
    pub fn interactive_context(&self) -> Arc<SessionContext> {
        self.interactive.clone()
    }

    /// How fresh the live read model is now.
    pub async fn freshness(&self) -> Result<FreshnessReport, QueryError> {
        let (generation, f) = self.read_model.freshness().await?;
        Ok(FreshnessReport::new(
            generation,
            f,
            (self.lag_events)(),
            chrono::Utc::now().timestamp_millis(),
        ))
    }

    /// Runs one read-only query in the interactive session.
    pub async fn query(&self, sql: &str) -> Result<SendableRecordBatchStream, QueryError> {
        run(&self.interactive, sql).await
    }

    /// Runs one read-only query in the interactive session and collects its rows.
    pub async fn collect(&self, sql: &str) -> Result<Vec<RecordBatch>, QueryError> {
        Ok(self.query(sql).await?.try_collect().await?)
    }

    /// Runs one read-only query in the export session (no row limit, spills to disk).
    pub async fn export(&self, sql: &str) -> Result<SendableRecordBatchStream, QueryError> {
        run(&self.export, sql).await
    }
}

async fn run(ctx: &SessionContext, sql: &str) -> Result<SendableRecordBatchStream, QueryError> {
    let statement = parse_read_only(sql)?;
    let state = ctx.state();
    let plan = state.statement_to_plan(statement).await?;
    // Second line of defence: the plan itself must not write or change the session.
    read_only_options()
        .verify_plan(&plan)
        .map_err(|e| QueryError::Forbidden(e.strip_backtrace()))?;
    let df = ctx.execute_logical_plan(plan).await?;
    Ok(df.execute_stream().await?)
}

/// DDL, DML and session statements are all refused.
pub fn read_only_options() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

/// Parses `sql` as exactly one read-only query (`SELECT`, `WITH`, `VALUES`, `EXPLAIN`).
pub fn parse_read_only(sql: &str) -> Result<DfStatement, QueryError> {
    let mut statements = DFParser::parse_sql_with_dialect(sql, &PostgreSqlDialect {})
        .map_err(|e| QueryError::Invalid(e.to_string()))?;
    let statement = match (statements.pop_front(), statements.is_empty()) {
        (None, _) => return Err(QueryError::Invalid("no SQL statement given".into())),
        (Some(_), false) => {
            return Err(QueryError::Invalid(
                "exactly one statement per request, please".into(),
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

fn forbidden() -> QueryError {
    QueryError::Forbidden(
        "only read-only queries (SELECT, WITH, VALUES, EXPLAIN) are allowed; \
         the analytics SQL endpoint cannot write, create, copy or read files"
            .into(),
    )
}

/// Ok for a plain query that is not nested too deeply and hides no statement (`WITH t AS
/// (...) INSERT ...` parses as a query whose body is an `INSERT`); the Postgres endpoint
/// also lets session statements through.
pub fn check_query_statement(s: &Statement) -> Result<(), QueryError> {
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
pub fn check_nesting(s: &Statement) -> Result<(), QueryError> {
    match walk(s) {
        Walk::TooDeep => Err(too_deep()),
        _ => Ok(()),
    }
}

fn too_deep() -> QueryError {
    QueryError::Invalid(format!(
        "the query nests expressions or subqueries more than {MAX_NESTING} levels deep"
    ))
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

async fn session(
    read_model: &Arc<dyn ReadModel>,
    limits: QueryLimits,
    memory_bytes: usize,
    spill: bool,
) -> Result<SessionContext, QueryError> {
    let config = SessionConfig::new()
        .with_default_catalog_and_schema(CATALOG, SCHEMA)
        .with_create_default_catalog_and_schema(true)
        .with_information_schema(true)
        .with_target_partitions(2);
    let disk = DiskManagerBuilder::default().with_mode(if spill {
        DiskManagerMode::OsTmpDirectory
    } else {
        DiskManagerMode::Disabled
    });
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_limit(memory_bytes, 1.0)
        .with_disk_manager_builder(disk)
        .build_arc()?;
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(runtime)
        .with_default_features()
        .with_physical_optimizer_rule(Arc::new(GuardRule { limits }))
        .build();
    let ctx = SessionContext::new_with_state(state);
    crate::bounded::bound_functions(&ctx);
    for table in Table::all() {
        ctx.register_table(table.name(), read_model.provider(table))?;
    }
    for (name, sql) in VIEWS {
        let view = ctx.sql(sql).await?.into_view();
        ctx.register_table(*name, view)?;
    }
    Ok(ctx)
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
                matches!(parse_read_only(bad), Err(QueryError::Forbidden(_))),
                "{bad} was not refused"
            );
        }
        assert!(matches!(
            parse_read_only("SELECT 1; SELECT 2"),
            Err(QueryError::Invalid(_))
        ));
        assert!(matches!(parse_read_only(""), Err(QueryError::Invalid(_))));
        assert!(matches!(
            parse_read_only("SELEC 1"),
            Err(QueryError::Invalid(_))
        ));
    }
}
