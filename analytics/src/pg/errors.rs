//! Errors as a Postgres client expects them: an `ErrorResponse` with a SQLSTATE, so a client
//! can tell "fix your query" (42xxx), "a limit stopped it" (54000, 57014, 53200), "try again
//! later" (53300) and "the server failed" (XX000) apart; logged once.

use datafusion::error::DataFusionError;
use datafusion_postgres::pgwire::api::{ClientInfo, ErrorHandler, METADATA_USER};
use datafusion_postgres::pgwire::error::{ErrorInfo, PgWireError};

use crate::AnalyticsError;

/// Turns errors into the `ErrorResponse` a Postgres client expects, and logs them once.
pub struct ErrorReporter;

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
                Err(other) => PgWireError::ApiError(other),
            },
            PgWireError::QueryCanceled => user_error(
                "ERROR",
                "57014",
                "canceling statement due to user request".into(),
            ),
            other => other,
        };
        log(error);
    }
}

/// Logs an error a client is told about: client mistakes at debug level, the rest as
/// warnings.
pub fn log(error: &PgWireError) {
    match error {
        PgWireError::IoError(e) => tracing::debug!(error = %e, "Postgres connection I/O"),
        PgWireError::UserError(info) if !info.code.starts_with("XX") => {
            tracing::debug!(code = %info.code, message = %info.message, "Postgres error");
        }
        other => tracing::warn!(error = %other, "Postgres endpoint error"),
    }
}

pub fn user_error(severity: &str, code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        severity.to_owned(),
        code.to_owned(),
        message,
    )))
}

/// A query's failure as a Postgres error.
pub fn query_error(e: AnalyticsError) -> PgWireError {
    user_error("ERROR", e.sqlstate(), e.to_string())
}

/// An engine failure (planning in this process) as a Postgres error.
pub fn engine_error(e: DataFusionError) -> PgWireError {
    query_error(AnalyticsError::from(e))
}

/// An error as the `ErrorResponse` of one statement of several (the statements after it are
/// skipped, like Postgres does).
pub fn error_info(e: PgWireError) -> Box<ErrorInfo> {
    log(&e);
    match e {
        PgWireError::UserError(info) => info,
        PgWireError::ApiError(inner) => match inner.downcast::<DataFusionError>() {
            Ok(e) => error_info(engine_error(*e)),
            Err(other) => Box::new(ErrorInfo::new(
                "ERROR".into(),
                "XX000".into(),
                other.to_string(),
            )),
        },
        other => Box::new(ErrorInfo::new(
            "ERROR".into(),
            "XX000".into(),
            other.to_string(),
        )),
    }
}

pub fn read_only_error(what: &str) -> PgWireError {
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::guard::GuardError;

    #[test]
    fn limits_and_planning_errors_get_their_own_sqlstate() {
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
        for (e, code) in [
            (AnalyticsError::Memory("x".into()), "53200"),
            (AnalyticsError::Busy("x".into()), "53300"),
            (AnalyticsError::Limit(GuardError::CpuTime(3)), "57014"),
        ] {
            match query_error(e) {
                PgWireError::UserError(info) => assert_eq!(info.code, code),
                other => panic!("not a user error: {other:?}"),
            }
        }
    }
}
