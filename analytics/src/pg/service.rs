//! The query handlers of the Postgres endpoint (simple and extended protocol): every
//! statement through the gate, queries through the [`Executor`] (a query worker), answers
//! encoded as Postgres rows.
//!
//! Memory: an answer is sent as it arrives from its worker, but pgwire gathers an extended
//! protocol answer whole before sending it, so each answer is capped at `max_result_mb`
//! (beyond: SQLSTATE 54000); the statements of a multi-statement simple query are answered
//! one after the other, each gathered under the same cap.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::ParamValues;
use datafusion::logical_expr::{EmptyRelation, LogicalPlan};
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion_postgres::arrow_pg::datatypes::df::deserialize_parameters_with_server_types;
use datafusion_postgres::arrow_pg::datatypes::{
    arrow_schema_to_pg_fields, encode_recordbatch, into_pg_type,
};
use datafusion_postgres::datafusion_pg_catalog::sql::PostgresCompatibilityParser;
use datafusion_postgres::pgwire::api::portal::{Format, Portal};
use datafusion_postgres::pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use datafusion_postgres::pgwire::api::results::{FieldInfo, QueryResponse, Response};
use datafusion_postgres::pgwire::api::stmt::QueryParser;
use datafusion_postgres::pgwire::api::store::PortalStore;
use datafusion_postgres::pgwire::api::{ClientInfo, ClientPortalStore, METADATA_USER, Type};
use datafusion_postgres::pgwire::error::{PgWireError, PgWireResult};
use datafusion_postgres::pgwire::messages::PgWireBackendMessage;
use datafusion_postgres::pgwire::messages::data::DataRow;
use datafusion_postgres::pgwire::messages::response::TransactionStatus;
use datafusion_postgres::pgwire::types::format::FormatOptions;
use futures::{FutureExt, Sink, StreamExt};

use super::errors::{engine_error, error_info, query_error, user_error};
use super::gate::{Route, plan_read_only, route};
use super::{cursor, session};
use crate::AnalyticsError;
use crate::audit::Audit;
use crate::engine::{Pii, read_only_options};
use crate::isolation::{BatchStream, Executor, Job, SessionKind};
use crate::metrics::AnalyticsMetrics;
use crate::users::Users;
use shoplens_kit::identity::Role;

/// A prepared statement: the statement and its plan on the server's session (for its
/// parameter and result types; the query itself runs in a worker).
#[derive(Debug)]
pub struct Prepared {
    pub statement: Statement,
    pub plan: LogicalPlan,
}

pub type PgStatement = Arc<Prepared>;

/// The handlers every connection shares.
pub struct PgService {
    pub(super) ctx: Arc<SessionContext>,
    parser: Arc<PgParser>,
    pub(super) executor: Executor,
    /// Who the connected users are (their roles).
    users: Users,
    /// The largest answer gathered in this process (bytes of Arrow data).
    pub(super) max_result_bytes: usize,
    audit: AnalyticsMetrics,
}

impl PgService {
    pub fn new(
        ctx: Arc<SessionContext>,
        executor: Executor,
        users: Users,
        max_result_bytes: usize,
        audit: AnalyticsMetrics,
    ) -> PgService {
        PgService {
            parser: Arc::new(PgParser {
                ctx: ctx.clone(),
                sql: PostgresCompatibilityParser::new(),
            }),
            ctx,
            executor,
            users,
            max_result_bytes,
            audit,
        }
    }

    /// The connected user's name and role; only analysts and admins run SQL.
    fn sql_user(&self, client: &(impl ClientInfo + ?Sized)) -> PgWireResult<(String, Role)> {
        let name = client
            .metadata()
            .get(METADATA_USER)
            .cloned()
            .unwrap_or_default();
        match self.users.get(&name).map(|(role, _)| *role) {
            Some(role @ (Role::Analyst | Role::Admin)) => Ok((name, role)),
            Some(role) => Err(user_error(
                "ERROR",
                "42501",
                format!("permission denied: `{name}` is a {role}; SQL needs the analyst role"),
            )),
            None => Err(user_error(
                "ERROR",
                "42501",
                format!("permission denied: `{name}` is not a user"),
            )),
        }
    }

    /// Answers one statement. `streamed`: the answer may hold its worker until the client
    /// read it (a single statement); otherwise it is gathered first.
    async fn statement<C>(
        &self,
        client: &mut C,
        statement: &Statement,
        params: Option<ParamValues>,
        format: &Format,
        streamed: bool,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let route = route(statement)?;
        if client.transaction_status() == TransactionStatus::Error && route != Route::Transaction {
            return Err(session::aborted());
        }
        if matches!(route, Route::Query | Route::Catalog | Route::Cursor) {
            self.sql_user(client)?;
        }
        match route {
            Route::Query => {
                let job = self.job(client, statement, params, SessionKind::Interactive);
                let format_options =
                    Arc::new(FormatOptions::from_client_metadata(client.metadata()));
                self.run(&job, format, format_options, streamed).await
            }
            Route::Catalog => self.catalog(statement, format).await,
            Route::Session => session::answer(statement, client).await,
            Route::Transaction => session::transaction(statement, client),
            Route::Cursor => cursor::handle(self, statement, client).await,
        }
    }

    /// The job of running `statement` for `client`.
    pub(super) fn job(
        &self,
        client: &(impl ClientInfo + ?Sized),
        statement: &Statement,
        params: Option<ParamValues>,
        session: SessionKind,
    ) -> Job {
        let (user, role) = self
            .sql_user(client)
            .unwrap_or_else(|_| (String::new(), Role::Viewer));
        let mut job = Job::new(&user, &statement.to_string(), session);
        job.params = params;
        job.timeout = session::statement_timeout(client);
        job.role = role;
        job.pii = if role == Role::Admin {
            Pii::Visible
        } else {
            Pii::Masked
        };
        job
    }

    /// Runs `job` in a worker and answers its rows. Waits for the first batch, so a client's
    /// cancel request (which ends this call) covers the computation.
    pub(super) async fn run(
        &self,
        job: &Job,
        format: &Format,
        format_options: Arc<FormatOptions>,
        streamed: bool,
    ) -> PgWireResult<Response> {
        let mut audit = Audit::start(&self.audit, "pg", &job.user, job.role, &job.sql);
        let (schema, batches) = match self.executor.batches(job).await {
            Ok(answer) => answer,
            Err(e) => {
                audit.finish(e.sqlstate().to_owned());
                return Err(query_error(e));
            }
        };
        let fields = Arc::new(arrow_schema_to_pg_fields(
            &schema,
            format,
            Some(format_options),
        )?);
        // Fused: the stream below is polled again after it ended (a chain, the row encoder).
        let mut batches = audited(capped(batches, self.max_result_bytes), audit).fuse();
        let first = batches.next().await;
        if let Some(Err(e)) = first {
            return Err(query_error(e));
        }
        let batches = futures::stream::iter(first).chain(batches);
        let rows = rows(fields.clone(), batches);
        if streamed {
            return Ok(Response::Query(QueryResponse::new(fields, rows)));
        }
        let gathered: Vec<PgWireResult<DataRow>> = rows.collect().await;
        if let Some(pos) = gathered.iter().position(Result::is_err) {
            let mut gathered = gathered;
            return Err(gathered
                .swap_remove(pos)
                .err()
                .unwrap_or(PgWireError::NotReadyForQuery));
        }
        Ok(Response::Query(QueryResponse::new(
            fields,
            futures::stream::iter(gathered),
        )))
    }

    /// `DESCRIBE t`, `SHOW TABLES`, `SHOW COLUMNS`: table schemas, on the server's session.
    async fn catalog(&self, statement: &Statement, format: &Format) -> PgWireResult<Response> {
        let plan = self
            .ctx
            .state()
            .statement_to_plan(DfStatement::Statement(Box::new(statement.clone())))
            .await
            .map_err(engine_error)?;
        read_only_options()
            .verify_plan(&plan)
            .map_err(|e| user_error("ERROR", "25006", e.strip_backtrace()))?;
        let df = self
            .ctx
            .execute_logical_plan(plan)
            .await
            .map_err(engine_error)?;
        let schema = df.schema().as_arrow().clone();
        let batches = df.collect().await.map_err(engine_error)?;
        let fields = Arc::new(arrow_schema_to_pg_fields(&schema, format, None)?);
        let mut out = Vec::new();
        for batch in batches {
            out.extend(encode_recordbatch(fields.clone(), batch));
        }
        Ok(Response::Query(QueryResponse::new(
            fields,
            futures::stream::iter(out),
        )))
    }

    /// The bound parameters of `portal`, typed by the statement's plan.
    fn params(
        &self,
        portal: &Portal<PgStatement>,
        plan: &LogicalPlan,
    ) -> PgWireResult<Option<ParamValues>> {
        let inferred = parameter_types(plan)?;
        if inferred.is_empty() && portal.parameter_len() == 0 {
            return Ok(None);
        }
        let wire = wire_types(&inferred);
        let inferred_refs: Vec<Option<&DataType>> = inferred.iter().map(Option::as_ref).collect();
        let wire_refs: Vec<Option<&Type>> = wire.iter().map(Some).collect();
        deserialize_parameters_with_server_types(portal, &inferred_refs, &wire_refs).map(Some)
    }
}

/// `batches` counted in `audit`, which is finished with the answer's end.
fn audited(batches: BatchStream, audit: Audit) -> BatchStream {
    Box::pin(futures::stream::unfold(
        (batches, audit),
        |(mut batches, mut audit)| async move {
            let item = batches.next().await;
            match &item {
                Some(Ok(b)) => audit.add(b.num_rows() as u64, b.get_array_memory_size() as u64),
                Some(Err(e)) => audit.finish(e.sqlstate().to_owned()),
                None => audit.finish("ok"),
            }
            item.map(|i| (i, (batches, audit)))
        },
    ))
}

/// Stops an answer that would gather more than `max_bytes` in this process.
fn capped(batches: BatchStream, max_bytes: usize) -> BatchStream {
    let mut total = 0usize;
    let mut stopped = false;
    Box::pin(batches.filter_map(move |b| {
        let item = if stopped {
            None
        } else {
            match b {
                Ok(batch) => {
                    total += batch.get_array_memory_size();
                    if total > max_bytes {
                        stopped = true;
                        Some(Err(AnalyticsError::Invalid {
                            message: format!(
                                "the answer is larger than {} MiB; add a LIMIT, select fewer \
                                 columns, or use an export",
                                max_bytes / (1024 * 1024)
                            ),
                            sqlstate: "54000".into(),
                        }))
                    } else {
                        Some(Ok(batch))
                    }
                }
                Err(e) => {
                    stopped = true;
                    Some(Err(e))
                }
            }
        };
        futures::future::ready(item)
    }))
}

/// Batches as Postgres data rows.
fn rows(
    fields: Arc<Vec<FieldInfo>>,
    batches: impl futures::Stream<Item = Result<datafusion::arrow::array::RecordBatch, AnalyticsError>>
    + Send
    + 'static,
) -> impl futures::Stream<Item = PgWireResult<DataRow>> + Send + 'static {
    batches
        .map(move |b| {
            let rows: Box<dyn Iterator<Item = PgWireResult<DataRow>> + Send + Sync> = match b {
                Ok(batch) => encode_recordbatch(fields.clone(), batch),
                Err(e) => Box::new(std::iter::once(Err(query_error(e)))),
            };
            futures::stream::iter(rows)
        })
        .flatten()
}

/// The types of `$1, $2, ...` as the plan infers them, in order.
fn parameter_types(plan: &LogicalPlan) -> PgWireResult<Vec<Option<DataType>>> {
    let types = plan.get_parameter_types().map_err(engine_error)?;
    let mut numbered: Vec<(usize, Option<DataType>)> = types
        .into_iter()
        .filter_map(|(name, t)| {
            name.trim_start_matches('$')
                .parse::<usize>()
                .ok()
                .map(|n| (n, t))
        })
        .collect();
    numbered.sort_by_key(|(n, _)| *n);
    let count = numbered.last().map_or(0, |(n, _)| *n);
    let mut out = vec![None; count];
    for (n, t) in numbered {
        if n >= 1 {
            out[n - 1] = t;
        }
    }
    Ok(out)
}

fn wire_types(types: &[Option<DataType>]) -> Vec<Type> {
    types
        .iter()
        .map(|t| {
            t.as_ref()
                .and_then(|t| into_pg_type(t).ok())
                .unwrap_or(Type::UNKNOWN)
        })
        .collect()
}

/// Runs `f`, turning a panic into an error answer (a bug somewhere below must not drop the
/// connection).
async fn guarded<T>(f: impl Future<Output = PgWireResult<T>> + Send) -> PgWireResult<T> {
    match std::panic::AssertUnwindSafe(f).catch_unwind().await {
        Ok(result) => result,
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            tracing::error!(%message, "a Postgres statement panicked");
            Err(user_error(
                "ERROR",
                "XX000",
                "internal error answering this statement".into(),
            ))
        }
    }
}

#[async_trait]
impl SimpleQueryHandler for PgService {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let statements = self.parser.parse(query)?;
        if statements.is_empty() {
            return Ok(vec![Response::EmptyQuery]);
        }
        let streamed = statements.len() == 1;
        let mut answers = Vec::with_capacity(statements.len());
        for statement in &statements {
            let answer =
                guarded(self.statement(client, statement, None, &Format::UnifiedText, streamed))
                    .await;
            match answer {
                Ok(response) => answers.push(response),
                Err(e) => {
                    // Like Postgres: the error ends the statements of this query string.
                    answers.push(Response::Error(error_info(e)));
                    break;
                }
            }
        }
        Ok(answers)
    }
}

#[async_trait]
impl ExtendedQueryHandler for PgService {
    type Statement = PgStatement;
    type QueryParser = PgParser;

    fn query_parser(&self) -> Arc<PgParser> {
        self.parser.clone()
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<PgStatement>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = PgStatement>,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let prepared = portal.statement.statement.clone();
        guarded(async {
            let params = match route(&prepared.statement)? {
                Route::Query => self.params(portal, &prepared.plan)?,
                _ => None,
            };
            self.statement(
                client,
                &prepared.statement,
                params,
                &portal.result_column_format,
                true,
            )
            .await
        })
        .await
    }
}

/// Parses a prepared statement (the extended protocol's Parse) and plans it on the server's
/// session for its parameter and result types.
pub struct PgParser {
    ctx: Arc<SessionContext>,
    sql: PostgresCompatibilityParser,
}

impl PgParser {
    /// The statements of `sql`, with the compatibility parser's rewrites and ours.
    fn parse(&self, sql: &str) -> PgWireResult<Vec<Statement>> {
        let mut statements = self
            .sql
            .parse(&super::rewrite::before_compatibility(sql))
            .map_err(|e| user_error("ERROR", "42601", e.to_string()))?;
        statements
            .iter_mut()
            .for_each(super::rewrite::postgres_spellings);
        Ok(statements)
    }
}

#[async_trait]
impl QueryParser for PgParser {
    type Statement = PgStatement;

    async fn parse_sql<C>(
        &self,
        client: &C,
        sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Option<PgStatement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        guarded(async {
            let mut statements = self.parse(sql)?;
            if statements.len() > 1 {
                return Err(user_error(
                    "ERROR",
                    "42601",
                    "cannot insert multiple commands into a prepared statement".into(),
                ));
            }
            let Some(statement) = statements.pop() else {
                return Ok(None);
            };
            let plan = match route(&statement)? {
                Route::Query => plan_read_only(&self.ctx, &statement).await?,
                Route::Catalog => self
                    .ctx
                    .state()
                    .statement_to_plan(DfStatement::Statement(Box::new(statement.clone())))
                    .await
                    .map_err(engine_error)?,
                Route::Session => match &statement {
                    Statement::ShowVariable { variable } => {
                        let name = session::show_name(variable);
                        if name == "all" {
                            answer_plan(&["name", "setting", "description"])?
                        } else {
                            let column =
                                session::show_setting(&name).map_or(name.as_str(), |(c, _)| c);
                            answer_plan(&[column])?
                        }
                    }
                    _ => answer_plan(&[])?,
                },
                Route::Cursor => match cursor::fetched_schema(client, &statement) {
                    Some(schema) => schema_plan(&schema)?,
                    None => answer_plan(&[])?,
                },
                Route::Transaction => answer_plan(&[])?,
            };
            Ok(Some(Arc::new(Prepared { statement, plan })))
        })
        .await
    }

    fn get_parameter_types(&self, stmt: &PgStatement) -> PgWireResult<Vec<Type>> {
        Ok(wire_types(&parameter_types(&stmt.plan)?))
    }

    fn get_result_schema(
        &self,
        stmt: &PgStatement,
        column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        arrow_schema_to_pg_fields(
            stmt.plan.schema().as_arrow(),
            column_format.unwrap_or(&Format::UnifiedText),
            None,
        )
    }
}

/// A plan with no rows and the columns of `schema` (a cursor's, for `FETCH`).
fn schema_plan(schema: &arrow_schema::Schema) -> PgWireResult<LogicalPlan> {
    let schema = datafusion::common::DFSchema::try_from(schema.clone()).map_err(engine_error)?;
    Ok(LogicalPlan::EmptyRelation(EmptyRelation {
        produce_one_row: false,
        schema: Arc::new(schema),
    }))
}

/// A plan with no rows and the given columns (all text), for statements answered without
/// the engine.
fn answer_plan(columns: &[&str]) -> PgWireResult<LogicalPlan> {
    use datafusion::arrow::datatypes::{Field, Schema};
    let schema = Schema::new(
        columns
            .iter()
            .map(|c| Field::new(*c, DataType::Utf8, false))
            .collect::<Vec<_>>(),
    );
    let schema = datafusion::common::DFSchema::try_from(schema).map_err(engine_error)?;
    Ok(LogicalPlan::EmptyRelation(EmptyRelation {
        produce_one_row: !columns.is_empty(),
        schema: Arc::new(schema),
    }))
}
