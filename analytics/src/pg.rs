//! The Postgres wire protocol endpoint, so BI tools (psql, Grafana, Metabase, Superset)
//! connect to the analytics server as to a read-only Postgres 16 database named `shoplens`.
//!
//! What it supports, and why:
//!
//! - **Authentication**: SCRAM-SHA-256 (what Postgres itself uses by default, and what every
//!   current client speaks) for the one configured user. The password never crosses the wire
//!   and is never logged; an unknown user gets the same challenge as the real one (a decoy
//!   verifier), so a probe cannot tell users apart. A failure is Postgres's own `FATAL 28P01
//!   password authentication failed`, and only that connection is closed. No TLS: the
//!   endpoint listens on a private address by default; put a TLS proxy in front otherwise.
//! - **Read-only**: a gate ([`ReadOnlyHook`]) sees every statement first, in the simple and the
//!   extended (Parse) protocol. It lets through queries (`SELECT`, `WITH`, `VALUES`, `EXPLAIN`
//!   of a query, `DESCRIBE`), and the session statements tools send on connect (`SET`, `RESET`,
//!   `SHOW`, `BEGIN`/`COMMIT`/`ROLLBACK`, `SAVEPOINT`, `DECLARE`/`FETCH`/`CLOSE` cursors,
//!   `DISCARD`, `DEALLOCATE`), and refuses everything else with SQLSTATE 25006. A query's
//!   *plan* is checked too, because `SELECT … INTO t` is a query that creates a table. Session
//!   statements never reach the shared DataFusion session: `SET datafusion.*` is refused and
//!   other unknown settings are accepted and ignored, as they would otherwise change the engine
//!   for every user of the server.
//! - **Catalog**: `pg_catalog` and `information_schema` over the interactive session, plus
//!   `version()` and `current_setting()` answering as Postgres 16 does, so `\dt`, `\d orders`,
//!   and the version probes of Grafana, Metabase and Superset work.
//! - **Limits**: at most `max_connections` connections at once (more get Postgres's `FATAL 53300
//!   sorry, too many clients already`); each query is bounded by the engine's deadline, row
//!   limit and memory pool, and its failure is an `ErrorResponse` on that connection only.
//! - **Shutdown**: cancelling the token stops accepting; open connections run to their end.
//!
//! Not supported: `COPY` (also not `COPY … TO STDOUT`), writes of any kind, `PREPARE`/`EXECUTE`
//! as SQL statements (the protocol-level prepared statements BI drivers use do work), and a
//! client's `statement_timeout` (the server's query deadline applies instead).

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::array::{Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::{DFSchema, ParamValues, ScalarValue};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::{
    ColumnarValue, EmptyRelation, LogicalPlan, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature, TypeSignature, Volatility,
};
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{Expr, Reset, Set, Statement};
use datafusion::sql::sqlparser::parser::ParserError;
use datafusion_postgres::arrow_pg::datatypes::df::encode_dataframe;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::context::{
    PgCatalogContextProvider, Role,
};
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::setup_pg_catalog;
use datafusion_postgres::hooks::HookClient;
use datafusion_postgres::hooks::cursor::CursorStatementHook;
use datafusion_postgres::hooks::set_show::SetShowHook;
use datafusion_postgres::hooks::transactions::TransactionStatementHook;
use datafusion_postgres::pgwire::api::auth::sasl::SASLAuthStartupHandler;
use datafusion_postgres::pgwire::api::auth::sasl::scram::{
    ScramAuth, gen_salted_password, random_nonce,
};
use datafusion_postgres::pgwire::api::auth::{
    AuthSource, DefaultServerParameterProvider, LoginInfo, Password, StartupHandler,
};
use datafusion_postgres::pgwire::api::cancel::DefaultCancelHandler;
use datafusion_postgres::pgwire::api::portal::Format;
use datafusion_postgres::pgwire::api::results::{
    DataRowEncoder, FieldFormat, FieldInfo, QueryResponse, Response, Tag,
};
use datafusion_postgres::pgwire::api::store::PortalStore;
use datafusion_postgres::pgwire::api::{
    ClientInfo, ConnectionManager, ErrorHandler, METADATA_USER, PgWireServerHandlers,
    PidSecretKeyGenerator, RandomPidSecretKeyGenerator, Type,
};
use datafusion_postgres::pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use datafusion_postgres::pgwire::messages::startup::ParameterStatus;
use datafusion_postgres::pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use datafusion_postgres::pgwire::types::format::FormatOptions;
use datafusion_postgres::{DfSessionService, QueryHook};
use futures::Sink;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::PgConfig;
use crate::engine::{
    CATALOG, Engine, QueryError, check_nesting, check_query_statement, read_only_options,
};
use crate::guard::GuardError;

/// The Postgres version the endpoint reports. Clients pick their catalog queries by it, and
/// ours (`datafusion-pg-catalog`) follows Postgres 16's catalog.
pub const SERVER_VERSION: &str = "16.0";
/// [`SERVER_VERSION`] as `server_version_num`.
pub const SERVER_VERSION_NUM: &str = "160000";

/// Connections turned away at once with a proper "too many clients" error; beyond this, a
/// flood of connections is simply dropped so refusing costs nothing.
const MAX_REFUSING: usize = 16;
/// Pause after a failed `accept` (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves the Postgres wire protocol on `listener` until `shutdown`: sets up the catalog on
/// the engine's interactive session, then accepts connections.
pub async fn serve(
    listener: TcpListener,
    engine: Engine,
    config: PgConfig,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let ctx = engine.interactive_context();
    if let Err(e) = install_catalog(&ctx, &config.user) {
        tracing::error!(error = %e, "cannot set up pg_catalog; the Postgres endpoint is off");
        return Err(std::io::Error::other(e.to_string()));
    }
    let shared = Arc::new(Shared::new(ctx, &config));
    let slots = Arc::new(Semaphore::new(
        config.max_connections.min(Semaphore::MAX_PERMITS),
    ));
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    let mut next_id: u64 = 0;
    tracing::info!(
        addr = ?listener.local_addr().ok(),
        max_connections = config.max_connections,
        "Postgres endpoint accepting connections"
    );
    loop {
        let (socket, peer) = tokio::select! {
            biased;
            _ = shutdown.cancelled() => {
                tracing::info!("Postgres endpoint stopped accepting connections");
                return Ok(());
            }
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a Postgres connection failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        next_id += 1;
        let span = tracing::info_span!("pg_connection", id = next_id, %peer);
        match slots.clone().try_acquire_owned() {
            Ok(permit) => {
                let handlers = ConnectionHandlers {
                    shared: shared.clone(),
                };
                tokio::spawn(serve_connection(socket, handlers, permit).instrument(span));
            }
            Err(_) => {
                let _enter = span.enter();
                tracing::warn!(
                    max_connections = config.max_connections,
                    "too many Postgres connections; refusing one"
                );
                if let Ok(permit) = refusing.clone().try_acquire_owned() {
                    let handlers = RefusingHandlers {
                        cancel: shared.cancel.clone(),
                    };
                    tokio::spawn(serve_connection(socket, handlers, permit).in_current_span());
                }
            }
        }
    }
}

/// Runs one connection to its end, holding its connection slot.
async fn serve_connection(
    socket: tokio::net::TcpStream,
    handlers: impl PgWireServerHandlers,
    _slot: OwnedSemaphorePermit,
) {
    tracing::debug!("Postgres connection opened");
    match datafusion_postgres::pgwire::tokio::process_socket(socket, None, handlers).await {
        Ok(()) => tracing::debug!("Postgres connection closed"),
        Err(e) => tracing::debug!(error = %e, "Postgres connection ended with an error"),
    }
}

/// Adds `pg_catalog`, `information_schema`'s Postgres functions, `version()` and
/// `current_setting()` to the session, once (a second server on the same engine reuses them).
fn install_catalog(ctx: &SessionContext, user: &str) -> Result<(), DataFusionError> {
    let catalog = ctx
        .catalog(CATALOG)
        .ok_or_else(|| DataFusionError::Plan(format!("catalog {CATALOG} is missing")))?;
    if catalog.schema("pg_catalog").is_some() {
        return Ok(());
    }
    setup_pg_catalog(
        ctx,
        CATALOG,
        CatalogRoles {
            user: user.to_owned(),
        },
    )
    .map_err(|e| *e)?;
    ctx.register_udf(ScalarUDF::from(PgVersion::new()));
    ctx.register_udf(ScalarUDF::from(CurrentSetting::new()));
    Ok(())
}

/// What every connection shares.
struct Shared {
    service: Arc<DfSessionService>,
    auth: Arc<dyn AuthSource>,
    parameters: Arc<DefaultServerParameterProvider>,
    connections: Arc<ConnectionManager>,
    pids: Arc<dyn PidSecretKeyGenerator>,
    cancel: Arc<DefaultCancelHandler>,
}

impl Shared {
    fn new(ctx: Arc<SessionContext>, config: &PgConfig) -> Shared {
        // The gate first, so nothing reaches the engine unchecked; the query runner last, so
        // the built-in hooks (cursors, SET/SHOW, transactions) see their statements before it.
        let hooks: Vec<Arc<dyn QueryHook>> = vec![
            Arc::new(ReadOnlyHook),
            Arc::new(CursorStatementHook),
            Arc::new(SetShowHook),
            Arc::new(TransactionStatementHook),
            Arc::new(ReadOnlyQueryRunner),
        ];
        let mut parameters = DefaultServerParameterProvider::default();
        parameters.server_version = SERVER_VERSION.to_owned();
        parameters.is_superuser = false;
        parameters.default_transaction_read_only = true;
        let connections = Arc::new(ConnectionManager::new());
        Shared {
            service: Arc::new(DfSessionService::new_with_hooks(ctx, hooks)),
            auth: Arc::new(ScramVerifier::new(&config.user, &config.password)),
            parameters: Arc::new(parameters),
            cancel: Arc::new(DefaultCancelHandler::new(connections.clone())),
            connections,
            pids: Arc::new(RandomPidSecretKeyGenerator::default()),
        }
    }
}

/// The handlers of one connection: the SASL handshake keeps per-connection state, so each
/// connection gets its own startup handler; queries go to the shared session service.
struct ConnectionHandlers {
    shared: Arc<Shared>,
}

impl PgWireServerHandlers for ConnectionHandlers {
    fn simple_query_handler(
        &self,
    ) -> Arc<impl datafusion_postgres::pgwire::api::query::SimpleQueryHandler> {
        self.shared.service.clone()
    }

    fn extended_query_handler(
        &self,
    ) -> Arc<impl datafusion_postgres::pgwire::api::query::ExtendedQueryHandler> {
        self.shared.service.clone()
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        Arc::new(
            SASLAuthStartupHandler::new(self.shared.parameters.clone())
                .with_scram(ScramAuth::new(self.shared.auth.clone()))
                .with_pid_secret_key_generator(self.shared.pids.clone())
                .with_connection_manager(self.shared.connections.clone()),
        )
    }

    fn error_handler(&self) -> Arc<impl ErrorHandler> {
        Arc::new(ErrorReporter)
    }

    fn cancel_handler(&self) -> Arc<impl datafusion_postgres::pgwire::api::cancel::CancelHandler> {
        self.shared.cancel.clone()
    }
}

/// The handlers of a connection over the limit: its startup fails with Postgres's "too many
/// clients" error; a cancel request (which comes on its own connection) still works.
struct RefusingHandlers {
    cancel: Arc<DefaultCancelHandler>,
}

impl PgWireServerHandlers for RefusingHandlers {
    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        Arc::new(TooManyClients)
    }

    fn cancel_handler(&self) -> Arc<impl datafusion_postgres::pgwire::api::cancel::CancelHandler> {
        self.cancel.clone()
    }
}

struct TooManyClients;

#[async_trait]
impl StartupHandler for TooManyClients {
    async fn on_startup<C>(
        &self,
        _client: &mut C,
        _message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        Err(user_error(
            "FATAL",
            "53300",
            "sorry, too many clients already".into(),
        ))
    }
}

/// The SCRAM verifier of the configured user, computed once: SCRAM needs the salted password,
/// and computing it takes 4096 PBKDF2 rounds.
struct ScramVerifier {
    user: String,
    salt: Vec<u8>,
    salted: Vec<u8>,
    /// The verifier of a random password, for every other user name.
    decoy: Vec<u8>,
}

impl ScramVerifier {
    fn new(user: &str, password: &str) -> ScramVerifier {
        let iterations = datafusion_postgres::pgwire::api::auth::sasl::scram::SCRAM_ITERATIONS;
        let salt = random_nonce().into_bytes();
        ScramVerifier {
            user: user.to_owned(),
            salted: gen_salted_password(password, &salt, iterations),
            decoy: gen_salted_password(&random_nonce(), &salt, iterations),
            salt,
        }
    }
}

impl Debug for ScramVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramVerifier")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl AuthSource for ScramVerifier {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        // The comparison of the client's proof with this verifier is pgwire's; the proof is
        // bound to a fresh nonce, so its timing tells nothing reusable.
        let salted = if login.user() == Some(self.user.as_str()) {
            &self.salted
        } else {
            &self.decoy
        };
        Ok(Password::new(Some(self.salt.clone()), salted.clone()))
    }
}

/// The one role `pg_catalog.pg_roles` lists: the configured user, who can log in and read.
#[derive(Debug, Clone)]
struct CatalogRoles {
    user: String,
}

#[async_trait]
impl PgCatalogContextProvider for CatalogRoles {
    async fn roles(&self) -> Vec<String> {
        vec![self.user.clone()]
    }

    async fn role(&self, name: &str) -> Option<Role> {
        (name == self.user).then(|| Role {
            name: self.user.clone(),
            is_superuser: false,
            can_login: true,
            can_create_db: false,
            can_create_role: false,
            can_create_user: false,
            can_replication: false,
            grants: vec![],
            inherited_roles: vec![],
        })
    }
}

/// Turns errors into the `ErrorResponse` a Postgres client expects (SQLSTATE and message), and
/// logs them once.
struct ErrorReporter;

impl ErrorHandler for ErrorReporter {
    fn on_error<C>(&self, client: &C, error: &mut PgWireError)
    where
        C: ClientInfo,
    {
        let user = client
            .metadata()
            .get(METADATA_USER)
            .map_or("", String::as_str);
        let taken = std::mem::replace(error, PgWireError::NotReadyForQuery);
        *error = match taken {
            PgWireError::InvalidPassword(_) => {
                tracing::warn!(user, "Postgres password authentication failed");
                user_error(
                    "FATAL",
                    "28P01",
                    format!("password authentication failed for user \"{user}\""),
                )
            }
            PgWireError::ApiError(inner) => match inner.downcast::<DataFusionError>() {
                Ok(e) => engine_error(*e),
                Err(other) => match other.downcast::<ParserError>() {
                    Ok(e) => user_error("ERROR", "42601", e.to_string()),
                    Err(other) => PgWireError::ApiError(other),
                },
            },
            other => other,
        };
        match error {
            PgWireError::IoError(e) => tracing::debug!(error = %e, "Postgres connection I/O"),
            PgWireError::UserError(info) if !info.code.starts_with("XX") => {
                tracing::debug!(code = %info.code, message = %info.message, "Postgres error");
            }
            other => tracing::warn!(error = %other, "Postgres endpoint error"),
        }
    }
}

fn user_error(severity: &str, code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        severity.to_owned(),
        code.to_owned(),
        message,
    )))
}

/// An engine failure as a Postgres error: the guard's limits, bad SQL and the memory pool get
/// their own SQLSTATEs, so a client can tell "fix your query" from "the server failed".
fn engine_error(e: DataFusionError) -> PgWireError {
    let code = match e.find_root() {
        DataFusionError::SQL(..) => "42601",
        DataFusionError::SchemaError(..) => "42703",
        DataFusionError::Plan(m) if m.contains("not found") && m.contains("table") => "42P01",
        DataFusionError::Plan(_) => "42000",
        DataFusionError::NotImplemented(_) => "0A000",
        _ => "",
    };
    let q = QueryError::from(e);
    let code = match &q {
        QueryError::Limit(GuardError::TooManyRows(_)) => "54000",
        QueryError::Limit(GuardError::Timeout(_)) => "57014",
        QueryError::Forbidden(_) => "25006",
        QueryError::Invalid(_) if !code.is_empty() => code,
        QueryError::Invalid(_) => "22000",
        QueryError::Memory(_) => "53200",
        QueryError::ReadModel(_) => "58000",
        QueryError::Internal(_) => "XX000",
    };
    user_error("ERROR", code, q.to_string())
}

fn read_only_error(what: &str) -> PgWireError {
    let mut info = ErrorInfo::new(
        "ERROR".to_owned(),
        "25006".to_owned(),
        format!("cannot execute {what}: the ShopLens analytics endpoint is read-only"),
    );
    info.hint = Some(
        "only queries (SELECT, WITH, VALUES, EXPLAIN) and session statements (SET, SHOW, \
         BEGIN, COMMIT, ...) are allowed"
            .to_owned(),
    );
    PgWireError::UserError(Box::new(info))
}

/// The statement's leading keywords (`INSERT`, `CREATE TABLE`), for error messages: never the
/// statement itself, which may be long.
fn statement_kind(statement: &Statement) -> String {
    let text = statement.to_string();
    let mut words = text.split_whitespace();
    let first = words.next().unwrap_or("statement").to_uppercase();
    match first.as_str() {
        "CREATE" | "DROP" | "ALTER" => {
            let mut kind = first;
            for word in words.take(2) {
                kind.push(' ');
                kind.push_str(&word.to_uppercase());
                if !matches!(
                    word.to_uppercase().as_str(),
                    "EXTERNAL" | "OR" | "TEMPORARY" | "TEMP" | "UNLOGGED"
                ) {
                    break;
                }
            }
            kind
        }
        _ => first,
    }
}

/// Where the gate sends a statement.
#[derive(Debug, PartialEq)]
enum Route {
    /// A query: planned, checked read-only, and run (by [`ReadOnlyQueryRunner`] in the simple
    /// protocol, by the session service from the checked plan in the extended one).
    Query,
    /// Harmless; the built-in hooks or the engine handle it.
    Builtin,
    /// A session statement the gate answers itself, without touching the shared session.
    Answer,
}

/// The configuration parameters the built-in SET hook keeps per connection (and only there).
const CLIENT_SETTINGS: &[&str] = &[
    "datestyle",
    "bytea_output",
    "intervalstyle",
    "application_name",
    "extra_float_digits",
    "search_path",
];

/// The gate: which statements may run, and who handles them.
fn route(statement: &Statement) -> PgWireResult<Route> {
    // 54001: statement_too_complex. Before anything clones or plans the statement.
    check_nesting(statement).map_err(|e| user_error("ERROR", "54001", e.to_string()))?;
    // Queries are what the engine's HTTP endpoint accepts too.
    if check_query_statement(statement).is_ok() {
        return Ok(Route::Query);
    }
    Ok(match statement {
        Statement::Explain { statement, .. } => {
            if check_query_statement(statement).is_err() {
                return Err(read_only_error(&format!(
                    "EXPLAIN {}",
                    statement_kind(statement)
                )));
            }
            Route::Query
        }
        Statement::ExplainTable { .. } => Route::Builtin,
        Statement::ShowVariable { variable } => {
            let name = variable
                .iter()
                .map(|v| v.value.to_lowercase())
                .collect::<Vec<_>>()
                .join(" ");
            if show_setting(&name).is_some() {
                Route::Answer
            } else {
                Route::Builtin
            }
        }
        Statement::ShowStatus { .. }
        | Statement::ShowCatalogs { .. }
        | Statement::ShowTables { .. }
        | Statement::ShowColumns { .. }
        | Statement::ShowFunctions { .. } => Route::Builtin,
        Statement::Set(set) => route_set(set)?,
        Statement::Reset(_) | Statement::Savepoint { .. } | Statement::ReleaseSavepoint { .. } => {
            Route::Answer
        }
        Statement::Rollback {
            savepoint: Some(_), ..
        } => Route::Answer,
        Statement::StartTransaction { .. }
        | Statement::Commit { .. }
        | Statement::Rollback { .. }
        | Statement::Declare { .. }
        | Statement::Fetch { .. }
        | Statement::Close { .. } => Route::Builtin,
        Statement::Discard { .. } | Statement::Deallocate { .. } => Route::Answer,
        other => return Err(read_only_error(&statement_kind(other))),
    })
}

fn route_set(set: &Set) -> PgWireResult<Route> {
    let refuse_engine_setting = |name: &str| {
        if name.to_lowercase().starts_with("datafusion.") {
            let mut info = ErrorInfo::new(
                "ERROR".to_owned(),
                "42501".to_owned(),
                format!("permission denied to set parameter \"{name}\""),
            );
            info.detail =
                Some("engine settings are shared by every user of the analytics server".to_owned());
            Err(PgWireError::UserError(Box::new(info)))
        } else {
            Ok(())
        }
    };
    Ok(match set {
        Set::SingleAssignment {
            scope,
            hivevar,
            variable,
            values,
        } => {
            let name = variable.to_string().to_lowercase();
            refuse_engine_setting(&name)?;
            let plain = scope.is_none() && !hivevar;
            // Those the built-in hook keeps in the connection's metadata, never in the engine.
            if plain
                && (name == "statement_timeout"
                    || (CLIENT_SETTINGS.contains(&name.as_str())
                        && matches!(values.first(), Some(Expr::Value(_)))))
            {
                Route::Builtin
            } else {
                Route::Answer
            }
        }
        Set::ParenthesizedAssignments { variables, .. } => {
            for v in variables {
                refuse_engine_setting(&v.to_string())?;
            }
            Route::Answer
        }
        Set::MultipleAssignments { assignments } => {
            for a in assignments {
                refuse_engine_setting(&a.name.to_string())?;
            }
            Route::Answer
        }
        // The built-in hook keeps the time zone per connection.
        Set::SetTimeZone { local: false, .. } => Route::Builtin,
        // SET ROLE, SESSION AUTHORIZATION, NAMES, TRANSACTION ...: accepted, nothing to change.
        _ => Route::Answer,
    })
}

/// The value of a setting the endpoint reports as fixed (`SHOW`, `current_setting()`).
fn show_setting(name: &str) -> Option<(&'static str, &'static str)> {
    Some(match name {
        "server_version" => ("server_version", SERVER_VERSION),
        "server_version_num" => ("server_version_num", SERVER_VERSION_NUM),
        "transaction isolation level" | "transaction_isolation" => {
            ("transaction_isolation", "read committed")
        }
        "default_transaction_isolation" => ("default_transaction_isolation", "read committed"),
        "transaction_read_only" => ("transaction_read_only", "on"),
        "default_transaction_read_only" => ("default_transaction_read_only", "on"),
        "server_encoding" => ("server_encoding", "UTF8"),
        "client_encoding" => ("client_encoding", "UTF8"),
        "standard_conforming_strings" => ("standard_conforming_strings", "on"),
        "integer_datetimes" => ("integer_datetimes", "on"),
        "is_superuser" => ("is_superuser", "off"),
        "max_identifier_length" => ("max_identifier_length", "63"),
        "lc_collate" => ("lc_collate", "C"),
        "lc_ctype" => ("lc_ctype", "C"),
        _ => return None,
    })
}

/// A value of `current_setting(name)`: the fixed ones, plus the per-connection defaults.
fn current_setting(name: &str) -> Option<&'static str> {
    let name = name.to_lowercase();
    if let Some((_, value)) = show_setting(&name) {
        return Some(value);
    }
    Some(match name.as_str() {
        "search_path" => "\"$user\", public",
        "timezone" => "UTC",
        "datestyle" => "ISO, YMD",
        "intervalstyle" => "postgres",
        "application_name" => "",
        "statement_timeout" => "0",
        _ => return None,
    })
}

/// Plans `statement` and checks the plan cannot write or change the session (`SELECT INTO`
/// plans a `CREATE TABLE`).
async fn plan_read_only(ctx: &SessionContext, statement: &Statement) -> PgWireResult<LogicalPlan> {
    let plan = ctx
        .state()
        .statement_to_plan(DfStatement::Statement(Box::new(statement.clone())))
        .await
        .map_err(engine_error)?;
    read_only_options().verify_plan(&plan).map_err(|e| {
        tracing::debug!(error = %e.strip_backtrace(), "refused a query plan that writes");
        let kind = statement_kind(statement);
        read_only_error(&if kind == "SELECT" {
            "SELECT INTO".to_owned()
        } else {
            format!("{kind} that writes")
        })
    })?;
    Ok(plan)
}

/// A plan with no rows and the given columns (all text), for statements the gate answers.
fn answer_plan(columns: &[&str]) -> PgWireResult<LogicalPlan> {
    let schema = Schema::new(
        columns
            .iter()
            .map(|c| Field::new(*c, DataType::Utf8, false))
            .collect::<Vec<_>>(),
    );
    let schema = DFSchema::try_from(schema).map_err(engine_error)?;
    Ok(LogicalPlan::EmptyRelation(EmptyRelation {
        produce_one_row: !columns.is_empty(),
        schema: Arc::new(schema),
    }))
}

/// One text row, as `SHOW` answers.
fn one_value(column: &str, value: &str) -> PgWireResult<Response> {
    let fields = Arc::new(vec![FieldInfo::new(
        column.to_owned(),
        None,
        None,
        Type::TEXT,
        FieldFormat::Text,
    )]);
    let mut encoder = DataRowEncoder::new(fields.clone());
    encoder.encode_field(&Some(value))?;
    let row = encoder.take_row();
    Ok(Response::Query(QueryResponse::new(
        fields,
        futures::stream::iter([Ok(row)]),
    )))
}

/// The text of a `SET` value: `public`, `'x'` and `5` all as Postgres would store them.
fn set_value(values: &[Expr]) -> String {
    values
        .iter()
        .map(|v| match v {
            Expr::Value(v) => v.clone().into_string().unwrap_or_else(|| v.to_string()),
            Expr::Identifier(ident) => ident.value.clone(),
            other => other.to_string(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Answers the session statements the gate keeps away from the engine.
async fn answer(statement: &Statement, client: &mut dyn HookClient) -> PgWireResult<Response> {
    let tag = |t: &str| Ok(Response::Execution(Tag::new(t)));
    match statement {
        Statement::ShowVariable { variable } => {
            let name = variable
                .iter()
                .map(|v| v.value.to_lowercase())
                .collect::<Vec<_>>()
                .join(" ");
            match show_setting(&name) {
                Some((column, value)) => one_value(column, value),
                None => Err(user_error(
                    "ERROR",
                    "42704",
                    format!("unrecognized configuration parameter \"{name}\""),
                )),
            }
        }
        Statement::Set(Set::SingleAssignment {
            variable, values, ..
        }) => {
            let name = variable.to_string().to_lowercase();
            let value = set_value(values);
            // Kept per connection where the built-in hooks read them; anything else is
            // accepted and ignored, as a tool's connect-time SETs must not fail.
            let (key, reported) = match name.as_str() {
                "timezone" | "time zone" => ("timezone", Some("TimeZone")),
                "application_name" => ("application_name", Some("application_name")),
                n if CLIENT_SETTINGS.contains(&n) => (n, None),
                _ => return tag("SET"),
            };
            client.metadata_mut().insert(key.to_owned(), value.clone());
            if let Some(reported) = reported {
                client
                    .send_message(PgWireBackendMessage::ParameterStatus(ParameterStatus::new(
                        reported.to_owned(),
                        value,
                    )))
                    .await?;
            }
            tag("SET")
        }
        Statement::Set(_) => tag("SET"),
        Statement::Reset(reset) => {
            let metadata = client.metadata_mut();
            match &reset.reset {
                Reset::ALL => {
                    for key in CLIENT_SETTINGS.iter().chain(&["timezone"]) {
                        metadata.remove(*key);
                    }
                }
                Reset::ConfigurationParameter(name) => {
                    metadata.remove(&name.to_string().to_lowercase());
                }
            }
            tag("RESET")
        }
        Statement::Savepoint { .. } => tag("SAVEPOINT"),
        Statement::ReleaseSavepoint { .. } => tag("RELEASE"),
        Statement::Rollback { .. } => tag("ROLLBACK"),
        Statement::Discard { object_type } => {
            client.portal_store().clear_portals();
            tag(&format!("DISCARD {object_type}"))
        }
        Statement::Deallocate { name, .. } => {
            if name.value.eq_ignore_ascii_case("all") {
                tag("DEALLOCATE ALL")
            } else {
                client.portal_store().rm_statement(&name.value);
                tag("DEALLOCATE")
            }
        }
        _ => Err(read_only_error(&statement_kind(statement))),
    }
}

/// The gate, first of the hooks: refuses every statement that is not a query or a harmless
/// session statement, in both protocols, and answers the session statements that must not
/// reach the shared DataFusion session.
#[derive(Debug)]
struct ReadOnlyHook;

impl ReadOnlyHook {
    /// A cursor runs its query through the engine directly: check that query's plan here.
    async fn check_cursors(ctx: &SessionContext, statement: &Statement) -> PgWireResult<()> {
        if let Statement::Declare { stmts } = statement {
            for declare in stmts {
                if let Some(query) = &declare.for_query {
                    plan_read_only(ctx, &Statement::Query(query.clone())).await?;
                }
            }
        }
        Ok(())
    }
}

#[async_trait]
impl QueryHook for ReadOnlyHook {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        match route(statement) {
            Err(e) => Some(Err(e)),
            Ok(Route::Answer) => Some(answer(statement, client).await),
            Ok(Route::Query) => None,
            Ok(Route::Builtin) => Self::check_cursors(ctx, statement).await.err().map(Err),
        }
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        ctx: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        match route(statement) {
            Err(e) => Some(Err(e)),
            // The session service runs exactly this checked plan.
            Ok(Route::Query) => Some(plan_read_only(ctx, statement).await),
            Ok(Route::Answer) => Some(match statement {
                Statement::ShowVariable { variable } => {
                    let name = variable
                        .iter()
                        .map(|v| v.value.to_lowercase())
                        .collect::<Vec<_>>()
                        .join(" ");
                    let column = show_setting(&name).map_or("setting", |(c, _)| c);
                    answer_plan(&[column])
                }
                _ => answer_plan(&[]),
            }),
            Ok(Route::Builtin) => Self::check_cursors(ctx, statement).await.err().map(Err),
        }
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        _plan: &LogicalPlan,
        _params: &ParamValues,
        _ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        match route(statement) {
            Err(e) => Some(Err(e)),
            Ok(Route::Answer) => Some(answer(statement, client).await),
            Ok(Route::Query | Route::Builtin) => None,
        }
    }
}

/// Last of the hooks: runs a query of the simple protocol from its checked plan (the session
/// service would re-plan the SQL text unchecked).
#[derive(Debug)]
struct ReadOnlyQueryRunner;

#[async_trait]
impl QueryHook for ReadOnlyQueryRunner {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        if route(statement).ok()? != Route::Query {
            return None;
        }
        Some(
            async {
                let plan = plan_read_only(ctx, statement).await?;
                let df = ctx.execute_logical_plan(plan).await.map_err(engine_error)?;
                let format = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
                Ok(Response::Query(
                    encode_dataframe(df, &Format::UnifiedText, Some(format)).await?,
                ))
            }
            .await,
        )
    }

    async fn handle_extended_parse_query(
        &self,
        _statement: &Statement,
        _ctx: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        None
    }

    async fn handle_extended_query(
        &self,
        _statement: &Statement,
        _plan: &LogicalPlan,
        _params: &ParamValues,
        _ctx: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        None
    }
}

/// `version()` as Postgres words it (`PostgreSQL 16.0 …`), which is what SQLAlchemy and other
/// drivers parse; it also names the engine.
#[derive(Debug, PartialEq, Eq, Hash)]
struct PgVersion {
    signature: Signature,
}

impl PgVersion {
    fn new() -> PgVersion {
        PgVersion {
            signature: Signature::nullary(Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for PgVersion {
    fn name(&self) -> &str {
        "version"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(
        &self,
        _args: ScalarFunctionArgs,
    ) -> datafusion::error::Result<ColumnarValue> {
        Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(format!(
            "PostgreSQL {SERVER_VERSION} (ShopLens analytics, Apache DataFusion {}) on {}, \
             read-only",
            datafusion::DATAFUSION_VERSION,
            std::env::consts::ARCH,
        )))))
    }
}

/// `current_setting(name [, missing_ok])` for the settings tools ask about on connect
/// (`server_version_num`, `search_path`, ...); an unknown name is Postgres's error.
#[derive(Debug, PartialEq, Eq, Hash)]
struct CurrentSetting {
    signature: Signature,
}

impl CurrentSetting {
    fn new() -> CurrentSetting {
        CurrentSetting {
            signature: Signature::one_of(
                vec![TypeSignature::String(1), TypeSignature::Any(2)],
                Volatility::Stable,
            ),
        }
    }
}

impl ScalarUDFImpl for CurrentSetting {
    fn name(&self) -> &str {
        "current_setting"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::error::Result<ColumnarValue> {
        let missing_ok = matches!(
            args.args.get(1),
            Some(ColumnarValue::Scalar(ScalarValue::Boolean(Some(true))))
        );
        let lookup = |name: Option<&str>| -> datafusion::error::Result<Option<String>> {
            let Some(name) = name else { return Ok(None) };
            match current_setting(name) {
                Some(value) => Ok(Some(value.to_owned())),
                None if missing_ok => Ok(None),
                None => Err(DataFusionError::Execution(format!(
                    "unrecognized configuration parameter \"{name}\""
                ))),
            }
        };
        match args.args.first() {
            Some(ColumnarValue::Scalar(name)) => {
                let name = name.try_as_str().ok_or_else(|| {
                    DataFusionError::Plan("current_setting takes a setting name".into())
                })?;
                Ok(ColumnarValue::Scalar(ScalarValue::Utf8(lookup(name)?)))
            }
            Some(ColumnarValue::Array(names)) => {
                let names = datafusion::arrow::compute::cast(names, &DataType::Utf8)?;
                let names = names
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .ok_or_else(|| {
                        DataFusionError::Plan("current_setting takes a setting name".into())
                    })?;
                let values = (0..names.len())
                    .map(|i| lookup((!names.is_null(i)).then(|| names.value(i))))
                    .collect::<datafusion::error::Result<StringArray>>()?;
                Ok(ColumnarValue::Array(Arc::new(values)))
            }
            None => Err(DataFusionError::Plan(
                "current_setting takes a setting name".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    use super::*;

    fn parse(sql: &str) -> Statement {
        Parser::parse_sql(&PostgreSqlDialect {}, sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .remove(0)
    }

    #[test]
    fn the_gate_lets_queries_and_session_statements_through() {
        for (sql, expected) in [
            ("SELECT 1", Route::Query),
            ("WITH x AS (SELECT 1) SELECT * FROM x", Route::Query),
            ("VALUES (1)", Route::Query),
            ("EXPLAIN SELECT 1", Route::Query),
            ("SET application_name = 'x'", Route::Builtin),
            ("SET search_path = public", Route::Answer),
            ("SET extra_float_digits = 3", Route::Builtin),
            ("SET client_min_messages = warning", Route::Answer),
            (
                "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
                Route::Answer,
            ),
            ("RESET ALL", Route::Answer),
            ("SHOW server_version", Route::Answer),
            ("SHOW TRANSACTION ISOLATION LEVEL", Route::Answer),
            ("SHOW DateStyle", Route::Builtin),
            ("BEGIN", Route::Builtin),
            ("START TRANSACTION", Route::Builtin),
            ("COMMIT", Route::Builtin),
            ("ROLLBACK", Route::Builtin),
            ("DECLARE c CURSOR FOR SELECT 1", Route::Builtin),
            ("FETCH 10 FROM c", Route::Builtin),
            ("CLOSE c", Route::Builtin),
            ("DISCARD ALL", Route::Answer),
            ("DEALLOCATE ALL", Route::Answer),
        ] {
            let got = route(&parse(sql)).unwrap_or_else(|e| panic!("{sql} refused: {e}"));
            assert_eq!(got, expected, "{sql}");
        }
    }

    #[test]
    fn the_gate_refuses_everything_that_could_write() {
        for (sql, code) in [
            ("INSERT INTO orders VALUES (1)", "25006"),
            ("UPDATE orders SET total = 0", "25006"),
            ("DELETE FROM orders", "25006"),
            ("DROP TABLE orders", "25006"),
            ("CREATE TABLE t (a int)", "25006"),
            ("CREATE VIEW v AS SELECT 1", "25006"),
            ("ALTER TABLE orders ADD COLUMN x int", "25006"),
            ("TRUNCATE orders", "25006"),
            ("COPY orders TO '/tmp/x'", "25006"),
            ("GRANT SELECT ON orders TO bob", "25006"),
            ("PREPARE p AS SELECT 1", "25006"),
            ("EXPLAIN DELETE FROM orders", "25006"),
            ("SET datafusion.execution.batch_size = 1", "42501"),
            ("SET datafusion.runtime.memory_limit = '1G'", "42501"),
        ] {
            match route(&parse(sql)) {
                Err(PgWireError::UserError(info)) => assert_eq!(info.code, code, "{sql}"),
                other => panic!("{sql} was not refused: {other:?}"),
            }
        }
    }

    #[test]
    fn refusals_name_the_statement_kind_not_its_text() {
        assert_eq!(
            statement_kind(&parse("insert into orders values (1)")),
            "INSERT"
        );
        assert_eq!(statement_kind(&parse("DROP TABLE orders")), "DROP TABLE");
        assert_eq!(
            statement_kind(&parse("CREATE OR REPLACE VIEW v AS SELECT 1")),
            "CREATE OR REPLACE"
        );
    }

    #[test]
    fn guard_errors_get_their_own_sqlstate() {
        let stop = |g: GuardError| DataFusionError::External(Box::new(g));
        for (e, code) in [
            (stop(GuardError::TooManyRows(10)), "54000"),
            (stop(GuardError::Timeout(Duration::from_secs(1))), "57014"),
            (DataFusionError::Plan("table 'x' not found".into()), "42P01"),
            (DataFusionError::Internal("boom".into()), "XX000"),
        ] {
            match engine_error(e) {
                PgWireError::UserError(info) => {
                    assert_eq!(info.code, code);
                    assert_eq!(info.severity, "ERROR");
                }
                other => panic!("not a user error: {other:?}"),
            }
        }
    }

    #[test]
    fn settings_answer_like_postgres_16() {
        assert_eq!(current_setting("server_version_num"), Some("160000"));
        assert_eq!(current_setting("SERVER_VERSION"), Some(SERVER_VERSION));
        assert_eq!(current_setting("no_such_setting"), None);
        assert_eq!(
            show_setting("transaction isolation level"),
            Some(("transaction_isolation", "read committed"))
        );
    }
}
