//! The gate: every statement a client sends is routed here first, in the simple and the
//! extended protocol, and every statement gets an answer (a result or a proper error; never
//! a dropped connection).
//!
//! - Queries (`SELECT`, `WITH`, `VALUES`, `EXPLAIN` of a query) run in a query worker.
//! - Catalog statements (`DESCRIBE t`, `SHOW TABLES`, `SHOW COLUMNS`) read only table schemas
//!   and run on the server's session.
//! - Session statements (`SET`, `SHOW`, `RESET`, `DISCARD`, ...) and transactions are answered
//!   per connection (`super::session`); cursors (`DECLARE`/`FETCH`/`CLOSE`) run their query
//!   in a worker (`super::cursor`).
//! - Everything else is refused with SQLSTATE 25006 (read-only).

use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{Set, Statement};
use datafusion_postgres::pgwire::error::PgWireResult;

use super::errors::{engine_error, read_only_error, user_error};
use super::session::{refuse_engine_setting, setting_name};
use crate::engine::{check_nesting, check_query_statement, read_only_options};

/// Where the gate sends a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// A query: planned, checked read-only, and run in a query worker.
    Query,
    /// Reads table schemas only; runs on the server's session.
    Catalog,
    /// A session statement, answered per connection.
    Session,
    /// `BEGIN`, `COMMIT`, `ROLLBACK`.
    Transaction,
    /// `DECLARE`, `FETCH`, `CLOSE`.
    Cursor,
}

/// The gate: where `statement` goes, or why it may not run.
pub fn route(statement: &Statement) -> PgWireResult<Route> {
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
        Statement::ExplainTable { .. }
        | Statement::ShowTables { .. }
        | Statement::ShowColumns { .. } => Route::Catalog,
        Statement::ShowVariable { .. }
        | Statement::ShowStatus { .. }
        | Statement::ShowCatalogs { .. }
        | Statement::ShowFunctions { .. } => Route::Session,
        Statement::Set(set) => {
            check_set(set)?;
            Route::Session
        }
        Statement::Reset(_)
        | Statement::Savepoint { .. }
        | Statement::ReleaseSavepoint { .. }
        | Statement::Discard { .. }
        | Statement::Deallocate { .. } => Route::Session,
        Statement::Rollback {
            savepoint: Some(_), ..
        } => Route::Session,
        Statement::StartTransaction { .. }
        | Statement::Commit { .. }
        | Statement::Rollback { .. } => Route::Transaction,
        Statement::Declare { .. } | Statement::Fetch { .. } | Statement::Close { .. } => {
            Route::Cursor
        }
        other => return Err(read_only_error(&statement_kind(other))),
    })
}

fn check_set(set: &Set) -> PgWireResult<()> {
    match set {
        Set::SingleAssignment { variable, .. } => refuse_engine_setting(&setting_name(variable)),
        Set::ParenthesizedAssignments { variables, .. } => variables
            .iter()
            .try_for_each(|v| refuse_engine_setting(&setting_name(v))),
        Set::MultipleAssignments { assignments } => assignments
            .iter()
            .try_for_each(|a| refuse_engine_setting(&setting_name(&a.name))),
        _ => Ok(()),
    }
}

/// The statement's leading keywords (`INSERT`, `CREATE TABLE`), for error messages: never the
/// statement itself, which may be long.
pub fn statement_kind(statement: &Statement) -> String {
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

/// Plans `statement` on the server's session (logical planning only: nothing runs) and
/// checks the plan cannot write or change the session (`SELECT INTO` plans a
/// `CREATE TABLE`). The plan gives a prepared statement's parameter and result types.
pub async fn plan_read_only(
    ctx: &SessionContext,
    statement: &Statement,
) -> PgWireResult<LogicalPlan> {
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

#[cfg(test)]
mod tests {
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;
    use datafusion_postgres::pgwire::error::PgWireError;

    use super::*;

    fn parse(sql: &str) -> Statement {
        Parser::parse_sql(&PostgreSqlDialect {}, sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .remove(0)
    }

    #[test]
    fn the_gate_routes_queries_and_session_statements() {
        for (sql, expected) in [
            ("SELECT 1", Route::Query),
            ("WITH x AS (SELECT 1) SELECT * FROM x", Route::Query),
            ("VALUES (1)", Route::Query),
            ("EXPLAIN SELECT 1", Route::Query),
            ("EXPLAIN ANALYZE SELECT 1", Route::Query),
            ("DESCRIBE orders", Route::Catalog),
            ("SHOW TABLES", Route::Catalog),
            ("SET application_name = 'x'", Route::Session),
            ("SET search_path = public", Route::Session),
            ("SET client_min_messages = warning", Route::Session),
            (
                "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
                Route::Session,
            ),
            ("RESET ALL", Route::Session),
            ("SHOW server_version", Route::Session),
            ("SHOW TRANSACTION ISOLATION LEVEL", Route::Session),
            ("SHOW DateStyle", Route::Session),
            ("SHOW STATUS", Route::Session),
            ("BEGIN", Route::Transaction),
            ("START TRANSACTION", Route::Transaction),
            ("COMMIT", Route::Transaction),
            ("ROLLBACK", Route::Transaction),
            ("SAVEPOINT s", Route::Session),
            ("ROLLBACK TO SAVEPOINT s", Route::Session),
            ("DECLARE c CURSOR FOR SELECT 1", Route::Cursor),
            ("FETCH 10 FROM c", Route::Cursor),
            ("CLOSE c", Route::Cursor),
            ("DISCARD ALL", Route::Session),
            ("DEALLOCATE ALL", Route::Session),
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
            ("SET \"datafusion.execution.batch_size\" = 1", "42501"),
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
}
