//! Cursors (`DECLARE c CURSOR FOR <query>`, `FETCH n FROM c`, `CLOSE c`), as Tableau and
//! other tools page through large answers: the query runs in a worker like any other and
//! its answer is read as `FETCH`es ask for rows. An open cursor holds its worker (and its
//! query slot) until it is read to the end, closed, the transaction or connection ends, or
//! its deadline passes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arrow_schema::SchemaRef;
use datafusion::sql::sqlparser::ast::{CloseCursor, DeclareType, FetchDirection, Statement, Value};
use datafusion_postgres::pgwire::api::portal::{Format, Portal};
use datafusion_postgres::pgwire::api::results::{Response, Tag};
use datafusion_postgres::pgwire::api::stmt::StoredStatement;
use datafusion_postgres::pgwire::api::store::{MemPortalStore, PortalStore};
use datafusion_postgres::pgwire::api::{ClientInfo, ClientPortalStore};
use datafusion_postgres::pgwire::error::PgWireResult;
use datafusion_postgres::pgwire::types::format::FormatOptions;

use super::errors::user_error;
use super::gate::plan_read_only;
use super::service::{PgService, PgStatement, Prepared};
use crate::isolation::SessionKind;

/// The result schema of each open cursor of a connection (kept in its session extensions),
/// so a `FETCH` prepared over the extended protocol describes the cursor's columns.
#[derive(Default)]
struct CursorSchemas(Mutex<HashMap<String, SchemaRef>>);

fn schemas(client: &(impl ClientInfo + ?Sized)) -> Arc<CursorSchemas> {
    client
        .session_extensions()
        .get_or_insert_with(CursorSchemas::default)
}

/// The columns of the cursor a `FETCH` reads, if it is open.
pub fn fetched_schema(
    client: &(impl ClientInfo + ?Sized),
    statement: &Statement,
) -> Option<SchemaRef> {
    let Statement::Fetch { name, .. } = statement else {
        return None;
    };
    let schemas = schemas(client);
    let map = schemas.0.lock().unwrap_or_else(|e| e.into_inner());
    map.get(&name.value).cloned()
}

fn store<C>(client: &C) -> PgWireResult<&MemPortalStore<PgStatement>>
where
    C: ClientPortalStore + ?Sized,
    C::PortalStore: PortalStore,
{
    client
        .portal_store()
        .as_any()
        .downcast_ref::<MemPortalStore<PgStatement>>()
        .ok_or_else(|| user_error("ERROR", "XX000", "cursors are not available".into()))
}

/// Answers `DECLARE`, `FETCH` or `CLOSE`.
pub async fn handle<C>(
    service: &PgService,
    statement: &Statement,
    client: &C,
) -> PgWireResult<Response>
where
    C: ClientInfo + ClientPortalStore + Send + Sync,
    C::PortalStore: PortalStore,
{
    match statement {
        Statement::Declare { stmts } => {
            for declare in stmts {
                if declare.declare_type != Some(DeclareType::Cursor) {
                    return Err(user_error(
                        "ERROR",
                        "42601",
                        "only DECLARE ... CURSOR FOR <query> is supported".into(),
                    ));
                }
                let Some(name) = declare.names.first() else {
                    return Err(user_error("ERROR", "42601", "a cursor needs a name".into()));
                };
                let Some(query) = &declare.for_query else {
                    return Err(user_error(
                        "ERROR",
                        "42601",
                        "DECLARE CURSOR needs a FOR query".into(),
                    ));
                };
                let query = Statement::Query(query.clone());
                let plan = plan_read_only(&service.ctx, &query).await?;
                let job = service.job(client, &query, None, SessionKind::Interactive);
                let format_options =
                    Arc::new(FormatOptions::from_client_metadata(client.metadata()));
                let Response::Query(answer) = service
                    .run(&job, &Format::UnifiedText, format_options, true)
                    .await?
                else {
                    return Err(user_error("ERROR", "XX000", "a cursor without rows".into()));
                };
                schemas(client)
                    .0
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(
                        name.value.clone(),
                        Arc::new(plan.schema().as_arrow().clone()),
                    );
                let prepared = Arc::new(Prepared {
                    statement: query,
                    plan,
                });
                let stored = Arc::new(StoredStatement::new(name.value.clone(), prepared, vec![]));
                let portal = Portal::new_cursor(name.value.clone(), stored);
                portal.start(answer).await;
                store(client)?.put_portal(Arc::new(portal));
            }
            Ok(Response::Execution(Tag::new("DECLARE CURSOR")))
        }
        Statement::Fetch {
            name, direction, ..
        } => {
            let max_rows = match direction {
                FetchDirection::Next | FetchDirection::Forward { limit: None } => 1,
                FetchDirection::Forward { limit: Some(v) } | FetchDirection::Count { limit: v } => {
                    count(v)?
                }
                FetchDirection::ForwardAll | FetchDirection::All => 0,
                _ => {
                    return Err(user_error(
                        "ERROR",
                        "55000",
                        "cursor can only scan forward".into(),
                    ));
                }
            };
            let portal = match store(client)?.get_portal(&name.value) {
                Some(entry) => match entry.value() {
                    Some(portal) => Arc::clone(portal),
                    None => {
                        return Err(user_error(
                            "ERROR",
                            "34000",
                            format!("cursor \"{}\" does not exist", name.value),
                        ));
                    }
                },
                None => {
                    return Err(user_error(
                        "ERROR",
                        "34000",
                        format!("cursor \"{}\" does not exist", name.value),
                    ));
                }
            };
            let fetched = portal.fetch(max_rows).await?;
            Ok(Response::Query(fetched.response))
        }
        Statement::Close { cursor } => {
            let store = store(client)?;
            let schemas = schemas(client);
            let mut schemas = schemas.0.lock().unwrap_or_else(|e| e.into_inner());
            match cursor {
                CloseCursor::All => {
                    store.clear_portals();
                    schemas.clear();
                }
                CloseCursor::Specific { name } => {
                    if store.get_portal(&name.value).is_none() {
                        return Err(user_error(
                            "ERROR",
                            "34000",
                            format!("cursor \"{}\" does not exist", name.value),
                        ));
                    }
                    store.rm_portal(&name.value);
                    schemas.remove(&name.value);
                }
            }
            Ok(Response::Execution(Tag::new("CLOSE CURSOR")))
        }
        _ => Err(user_error(
            "ERROR",
            "XX000",
            "not a cursor statement".into(),
        )),
    }
}

/// A `FETCH` count: a positive number of rows (0 in Postgres means "all").
fn count(v: &datafusion::sql::sqlparser::ast::ValueWithSpan) -> PgWireResult<usize> {
    match &v.value {
        Value::Number(n, _) => n.parse::<usize>().map_err(|_| {
            user_error(
                "ERROR",
                "22023",
                format!(
                    "invalid FETCH count {}",
                    n.chars().take(20).collect::<String>()
                ),
            )
        }),
        other => Err(user_error(
            "ERROR",
            "22023",
            format!("invalid FETCH count {other}"),
        )),
    }
}
