//! The Postgres wire protocol endpoint, so BI tools (psql, Grafana, Metabase, Superset)
//! connect to the analytics server as to a read-only Postgres 16 database named `shoplens`.
//!
//! What it supports, and why:
//!
//! - **Authentication** (`auth`): SCRAM-SHA-256 for the configured users
//!   (`analytics.users`); a failure is Postgres's own `FATAL 28P01 password authentication
//!   failed`, and only that connection is closed. Analysts and admins run SQL (a viewer's
//!   statements are refused with 42501); personal data is masked for all but admins. No TLS:
//!   the endpoint listens on a private address by default; put a TLS proxy in front
//!   otherwise.
//! - **Every statement gets an answer** (`gate`, `service`): our own handlers for the simple
//!   and the extended protocol route every statement: queries run in a query worker (see
//!   `crate::isolation`), so a hostile query ends its worker, never this process or another
//!   connection; session statements (`SET`, `SHOW`, `RESET`, transactions) and cursors are
//!   answered per connection (`session`, `cursor`); everything that could write is refused
//!   with SQLSTATE 25006; a panic below a statement is that statement's `XX000`.
//! - **Catalog** (`functions`): `pg_catalog` and `information_schema`, `version()` and
//!   `current_setting()` answering as Postgres 16 does, so `\dt`, `\d orders`, and the
//!   version probes of Grafana, Metabase and Superset work.
//! - **Limits**: at most `max_connections` connections (more get `FATAL 53300 sorry, too many
//!   clients already`); each query under the workers' limits (deadline 57014, memory 53200,
//!   too busy 53300, rows 54000), the client's `statement_timeout` if shorter, and a cancel
//!   request (57014).
//! - **Shutdown**: cancelling the token stops accepting; open connections run to their end.
//!
//! Not supported: `COPY`, writes of any kind, and `PREPARE`/`EXECUTE` as SQL statements (the
//! protocol-level prepared statements BI drivers use do work).

mod auth;
mod catalog;
mod cursor;
mod errors;
mod functions;
mod gate;
mod rewrite;
mod service;
mod session;

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion_postgres::pgwire::api::auth::sasl::SASLAuthStartupHandler;
use datafusion_postgres::pgwire::api::auth::sasl::scram::ScramAuth;
use datafusion_postgres::pgwire::api::auth::{
    AuthSource, DefaultServerParameterProvider, StartupHandler,
};
use datafusion_postgres::pgwire::api::cancel::DefaultCancelHandler;
use datafusion_postgres::pgwire::api::{
    ClientInfo, ConnectionManager, ErrorHandler, PgWireServerHandlers, PidSecretKeyGenerator,
    RandomPidSecretKeyGenerator,
};
use datafusion_postgres::pgwire::error::{PgWireError, PgWireResult};
use datafusion_postgres::pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use futures::Sink;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub use functions::install_catalog;
pub use session::current_setting;

use crate::config::PgConfig;
use crate::engine::Engine;
use crate::isolation::Executor;
use crate::metrics::AnalyticsMetrics;
use crate::users::Users;
use auth::ScramVerifier;
use errors::{ErrorReporter, user_error};
use service::PgService;

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

/// What the endpoint serves with.
pub struct Settings {
    pub config: PgConfig,
    /// Who may connect (analysts and admins may run SQL).
    pub users: Users,
    /// The largest answer gathered in this process.
    pub max_result_bytes: usize,
    /// Where every query is counted.
    pub audit: AnalyticsMetrics,
}

/// Serves the Postgres wire protocol on `listener` until `shutdown`: queries through
/// `executor`, planning and the catalog on the engine's interactive session.
pub async fn serve(
    listener: TcpListener,
    engine: Engine,
    executor: Executor,
    settings: Settings,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let Settings {
        config,
        users,
        max_result_bytes,
        audit,
    } = settings;
    let ctx = engine.interactive_context();
    for session in engine.contexts() {
        if let Err(e) = install_catalog(&session, &users.names()).await {
            tracing::error!(error = %e, "cannot set up pg_catalog; the Postgres endpoint is off");
            return Err(std::io::Error::other(e.to_string()));
        }
    }
    let shared = Arc::new(Shared::new(
        PgService::new(ctx, executor, users.clone(), max_result_bytes, audit),
        users,
    ));
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
        // Small messages (a row description, then rows, then CommandComplete) must not wait
        // for the client's delayed ACK.
        let _ = socket.set_nodelay(true);
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

/// What every connection shares.
struct Shared {
    service: Arc<PgService>,
    auth: Arc<dyn AuthSource>,
    parameters: Arc<DefaultServerParameterProvider>,
    connections: Arc<ConnectionManager>,
    pids: Arc<dyn PidSecretKeyGenerator>,
    cancel: Arc<DefaultCancelHandler>,
}

impl Shared {
    fn new(service: PgService, users: Users) -> Shared {
        let mut parameters = DefaultServerParameterProvider::default();
        parameters.server_version = SERVER_VERSION.to_owned();
        parameters.is_superuser = false;
        parameters.default_transaction_read_only = true;
        let connections = Arc::new(ConnectionManager::new());
        Shared {
            service: Arc::new(service),
            auth: Arc::new(ScramVerifier::new(users)),
            parameters: Arc::new(parameters),
            cancel: Arc::new(DefaultCancelHandler::new(connections.clone())),
            connections,
            pids: Arc::new(RandomPidSecretKeyGenerator::default()),
        }
    }
}

/// The handlers of one connection: the SASL handshake keeps per-connection state, so each
/// connection gets its own startup handler; statements go to the shared service.
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
