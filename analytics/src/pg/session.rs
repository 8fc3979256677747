//! Session statements, answered per connection without touching the shared engine: `SET`,
//! `SHOW`, `RESET`, `DISCARD`, `DEALLOCATE`, savepoints, and transactions (read-only, so a
//! transaction block only has to be acknowledged). A setting a tool sends on connect is
//! accepted (and ignored unless listed here) so connecting never fails; an engine setting
//! (`datafusion.*`, quoted or not) is refused, as it would change the engine for everyone.

use std::sync::Arc;
use std::time::Duration;

use datafusion::sql::sqlparser::ast::{Expr, ObjectName, Reset, Set, Statement};
use datafusion_postgres::pgwire::api::ClientInfo;
use datafusion_postgres::pgwire::api::results::{
    DataRowEncoder, FieldFormat, FieldInfo, QueryResponse, Response, Tag,
};
use datafusion_postgres::pgwire::api::{ClientPortalStore, Type};
use datafusion_postgres::pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use datafusion_postgres::pgwire::messages::PgWireBackendMessage;
use datafusion_postgres::pgwire::messages::response::TransactionStatus;
use datafusion_postgres::pgwire::messages::startup::ParameterStatus;
use futures::{Sink, SinkExt};

use super::errors::{read_only_error, user_error};
use super::gate::statement_kind;
use super::{SERVER_VERSION, SERVER_VERSION_NUM};

/// Where a connection keeps its `statement_timeout` (milliseconds).
const STATEMENT_TIMEOUT: &str = "shoplens.statement_timeout_ms";

/// The settings a connection keeps (in its metadata, where the row encoder reads the
/// formatting ones), with the values each accepts.
const CLIENT_SETTINGS: &[&str] = &[
    "datestyle",
    "bytea_output",
    "intervalstyle",
    "application_name",
    "extra_float_digits",
    "search_path",
    "timezone",
];

/// A setting's name as Postgres compares it: identifiers unquoted and lower case, parts joined
/// by dots (`"DateStyle"`, `datestyle` and `DATESTYLE` are one setting).
pub fn setting_name(name: &ObjectName) -> String {
    name.0
        .iter()
        .map(|part| match part.as_ident() {
            Some(ident) => ident.value.to_lowercase(),
            None => part.to_string().to_lowercase(),
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// The value of a setting the endpoint reports as fixed (`SHOW`, `current_setting()`).
pub fn show_setting(name: &str) -> Option<(&'static str, &'static str)> {
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

/// The default of a per-connection setting.
fn default_setting(name: &str) -> Option<&'static str> {
    Some(match name {
        "search_path" => "\"$user\", public",
        "timezone" => "UTC",
        "datestyle" => "ISO, MDY",
        "intervalstyle" => "postgres",
        "bytea_output" => "hex",
        "extra_float_digits" => "1",
        "application_name" => "",
        "statement_timeout" => "0",
        _ => return None,
    })
}

/// A value of `current_setting(name)`: the fixed ones, plus the per-connection defaults.
pub fn current_setting(name: &str) -> Option<&'static str> {
    let name = name.to_lowercase();
    show_setting(&name)
        .map(|(_, v)| v)
        .or_else(|| default_setting(&name))
}

/// The name Postgres reports a setting under in `ParameterStatus`, for those it reports.
fn reported_name(name: &str) -> Option<&'static str> {
    Some(match name {
        "timezone" => "TimeZone",
        "application_name" => "application_name",
        "datestyle" => "DateStyle",
        "intervalstyle" => "IntervalStyle",
        _ => return None,
    })
}

/// Checks a value for a setting the row encoder reads, so that a value it cannot handle is
/// refused here rather than failing (or worse) later.
fn check_value(name: &str, value: &str) -> PgWireResult<()> {
    let lower = value.to_lowercase();
    let ok = match name {
        "datestyle" => lower.split(',').map(str::trim).all(|w| {
            [
                "iso",
                "sql",
                "postgres",
                "german",
                "dmy",
                "mdy",
                "ymd",
                "euro",
                "us",
                "european",
                "noneuropean",
            ]
            .contains(&w)
        }),
        "intervalstyle" => {
            ["postgres", "postgres_verbose", "sql_standard", "iso_8601"].contains(&lower.as_str())
        }
        "bytea_output" => ["hex", "escape"].contains(&lower.as_str()),
        "extra_float_digits" => lower.parse::<i8>().is_ok_and(|d| (-15..=3).contains(&d)),
        _ => value.len() <= 256,
    };
    if ok {
        Ok(())
    } else {
        Err(user_error(
            "ERROR",
            "22023",
            format!(
                "invalid value for parameter \"{name}\": \"{}\"",
                value.chars().take(64).collect::<String>()
            ),
        ))
    }
}

/// Refuses a setting of the engine: it would change the engine for every user.
pub fn refuse_engine_setting(name: &str) -> PgWireResult<()> {
    if name.starts_with("datafusion.") || name == "datafusion" {
        let mut info = ErrorInfo::new(
            "ERROR".to_owned(),
            "42501".to_owned(),
            format!("permission denied to set parameter \"{name}\""),
        );
        info.detail =
            Some("engine settings are shared by every user of the analytics server".to_owned());
        return Err(PgWireError::UserError(Box::new(info)));
    }
    Ok(())
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

/// A connection's `statement_timeout`, when set.
pub fn statement_timeout(client: &(impl ClientInfo + ?Sized)) -> Option<Duration> {
    client
        .metadata()
        .get(STATEMENT_TIMEOUT)
        .and_then(|ms| ms.parse::<u64>().ok())
        .filter(|ms| *ms > 0)
        .map(Duration::from_millis)
}

/// `5000`, `'5s'`, `'1min'`, `'250ms'` as milliseconds, like Postgres reads
/// `statement_timeout`.
fn parse_timeout(value: &str) -> PgWireResult<u64> {
    let v = value.trim().to_lowercase();
    let (number, unit) = match v.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => (&v[..i], v[i..].trim()),
        None => (v.as_str(), "ms"),
    };
    let n: u64 = number.parse().map_err(|_| {
        user_error(
            "ERROR",
            "22023",
            format!("invalid value for parameter \"statement_timeout\": \"{value}\""),
        )
    })?;
    let scale = match unit {
        "ms" => 1,
        "s" => 1_000,
        "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => {
            return Err(user_error(
                "ERROR",
                "22023",
                format!("invalid value for parameter \"statement_timeout\": \"{value}\""),
            ));
        }
    };
    Ok(n.saturating_mul(scale))
}

/// One text row, as `SHOW` answers.
pub fn one_value(column: &str, value: &str) -> PgWireResult<Response> {
    rows(&[column], vec![vec![value.to_owned()]])
}

fn rows(columns: &[&str], values: Vec<Vec<String>>) -> PgWireResult<Response> {
    let fields = Arc::new(
        columns
            .iter()
            .map(|c| FieldInfo::new((*c).to_owned(), None, None, Type::TEXT, FieldFormat::Text))
            .collect::<Vec<_>>(),
    );
    let mut out = Vec::with_capacity(values.len());
    for row in values {
        let mut encoder = DataRowEncoder::new(fields.clone());
        for value in &row {
            encoder.encode_field(&Some(value.as_str()))?;
        }
        out.push(Ok(encoder.take_row()));
    }
    Ok(Response::Query(QueryResponse::new(
        fields,
        futures::stream::iter(out),
    )))
}

/// The name of a `SHOW`n setting, as Postgres reads it.
pub fn show_name(variable: &[datafusion::sql::sqlparser::ast::Ident]) -> String {
    variable
        .iter()
        .map(|v| v.value.to_lowercase())
        .collect::<Vec<_>>()
        .join(" ")
}

/// What `SHOW name` answers for this connection: its column and value.
fn show(name: &str, client: &(impl ClientInfo + ?Sized)) -> PgWireResult<(String, String)> {
    if let Some((column, value)) = show_setting(name) {
        return Ok((column.to_owned(), value.to_owned()));
    }
    if name == "statement_timeout" {
        let ms = statement_timeout(client).map_or(0, |d| d.as_millis());
        return Ok((
            name.to_owned(),
            if ms == 0 {
                "0".into()
            } else {
                format!("{ms}ms")
            },
        ));
    }
    if let Some(default) = default_setting(name) {
        let value = client.metadata().get(name).cloned();
        return Ok((name.to_owned(), value.unwrap_or_else(|| default.to_owned())));
    }
    Err(unknown_setting(name))
}

fn unknown_setting(name: &str) -> PgWireError {
    user_error(
        "ERROR",
        "42704",
        format!(
            "unrecognized configuration parameter \"{}\"",
            name.chars().take(64).collect::<String>()
        ),
    )
}

/// Answers a session statement for `client`.
pub async fn answer<C>(statement: &Statement, client: &mut C) -> PgWireResult<Response>
where
    C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    let tag = |t: &str| Ok(Response::Execution(Tag::new(t)));
    match statement {
        Statement::ShowVariable { variable } => {
            let name = show_name(variable);
            if name == "all" {
                let mut all: Vec<Vec<String>> = Vec::new();
                for n in [
                    "application_name",
                    "client_encoding",
                    "datestyle",
                    "default_transaction_read_only",
                    "extra_float_digits",
                    "intervalstyle",
                    "search_path",
                    "server_encoding",
                    "server_version",
                    "server_version_num",
                    "statement_timeout",
                    "timezone",
                    "transaction_isolation",
                ] {
                    let (column, value) = show(n, client)?;
                    all.push(vec![column, value, String::new()]);
                }
                return rows(&["name", "setting", "description"], all);
            }
            let (column, value) = show(&name, client)?;
            one_value(&column, &value)
        }
        // MySQL's `SHOW STATUS` and friends: Postgres reads them as settings it does not
        // know.
        Statement::ShowStatus { .. } => Err(unknown_setting("status")),
        Statement::ShowCatalogs { .. } => Err(unknown_setting("catalogs")),
        Statement::ShowFunctions { .. } => Err(unknown_setting("functions")),
        Statement::Set(set) => set_statement(set, client).await,
        Statement::Reset(reset) => {
            let metadata = client.metadata_mut();
            match &reset.reset {
                Reset::ALL => {
                    for key in CLIENT_SETTINGS {
                        metadata.remove(*key);
                    }
                    metadata.remove(STATEMENT_TIMEOUT);
                }
                Reset::ConfigurationParameter(name) => {
                    let name = setting_name(name);
                    refuse_engine_setting(&name)?;
                    metadata.remove(if name == "statement_timeout" {
                        STATEMENT_TIMEOUT
                    } else {
                        name.as_str()
                    });
                }
            }
            tag("RESET")
        }
        Statement::Savepoint { .. } => tag("SAVEPOINT"),
        Statement::ReleaseSavepoint { .. } => tag("RELEASE"),
        Statement::Rollback {
            savepoint: Some(_), ..
        } => tag("ROLLBACK"),
        Statement::Discard { object_type } => tag(&format!(
            "DISCARD {}",
            object_type.to_string().to_uppercase()
        )),
        Statement::Deallocate { name, .. } => {
            if name.value.eq_ignore_ascii_case("all") {
                tag("DEALLOCATE ALL")
            } else {
                tag("DEALLOCATE")
            }
        }
        _ => Err(read_only_error(&statement_kind(statement))),
    }
}

async fn set_statement<C>(set: &Set, client: &mut C) -> PgWireResult<Response>
where
    C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    let done = || Ok(Response::Execution(Tag::new("SET")));
    match set {
        Set::SingleAssignment {
            scope,
            hivevar,
            variable,
            values,
        } => {
            let name = setting_name(variable);
            refuse_engine_setting(&name)?;
            if scope.is_some() || *hivevar {
                // SET LOCAL / SESSION x: accepted like the plain form for the known ones.
            }
            let value = set_value(values);
            if name == "statement_timeout" {
                let ms = if value.eq_ignore_ascii_case("default") {
                    0
                } else {
                    parse_timeout(&value)?
                };
                client
                    .metadata_mut()
                    .insert(STATEMENT_TIMEOUT.to_owned(), ms.to_string());
                return done();
            }
            let key = if name == "time zone" {
                "timezone".to_owned()
            } else {
                name
            };
            if !CLIENT_SETTINGS.contains(&key.as_str()) {
                // Unknown to us: accepted and ignored, so a tool's connect-time SETs work.
                return done();
            }
            if value.eq_ignore_ascii_case("default") {
                client.metadata_mut().remove(&key);
                return done();
            }
            check_value(&key, &value)?;
            client.metadata_mut().insert(key.clone(), value.clone());
            if let Some(reported) = reported_name(&key) {
                client
                    .send(PgWireBackendMessage::ParameterStatus(ParameterStatus::new(
                        reported.to_owned(),
                        value,
                    )))
                    .await?;
            }
            done()
        }
        Set::ParenthesizedAssignments { variables, .. } => {
            for v in variables {
                refuse_engine_setting(&setting_name(v))?;
            }
            done()
        }
        Set::MultipleAssignments { assignments } => {
            for a in assignments {
                refuse_engine_setting(&setting_name(&a.name))?;
            }
            done()
        }
        Set::SetTimeZone {
            local: false,
            value,
        } => {
            let value = set_value(std::slice::from_ref(value));
            check_value("timezone", &value)?;
            client
                .metadata_mut()
                .insert("timezone".to_owned(), value.clone());
            client
                .send(PgWireBackendMessage::ParameterStatus(ParameterStatus::new(
                    "TimeZone".to_owned(),
                    value,
                )))
                .await?;
            done()
        }
        // SET ROLE, SESSION AUTHORIZATION, NAMES, TRANSACTION ...: accepted, nothing to change.
        _ => done(),
    }
}

/// `BEGIN`, `COMMIT`, `ROLLBACK`: acknowledged (the endpoint is read-only, every statement
/// sees the read model as it is when it runs).
pub fn transaction(
    statement: &Statement,
    client: &(impl ClientInfo + ?Sized),
) -> PgWireResult<Response> {
    Ok(match statement {
        Statement::StartTransaction { .. } => match client.transaction_status() {
            TransactionStatus::Idle => Response::TransactionStart(Tag::new("BEGIN")),
            TransactionStatus::Transaction => Response::Execution(Tag::new("BEGIN")),
            TransactionStatus::Error => return Err(aborted()),
        },
        Statement::Commit { .. } => match client.transaction_status() {
            TransactionStatus::Error => Response::TransactionEnd(Tag::new("ROLLBACK")),
            _ => Response::TransactionEnd(Tag::new("COMMIT")),
        },
        _ => Response::TransactionEnd(Tag::new("ROLLBACK")),
    })
}

/// A statement in a transaction block that failed before.
pub fn aborted() -> PgWireError {
    user_error(
        "ERROR",
        "25P02",
        "current transaction is aborted, commands ignored until end of transaction block".into(),
    )
}

#[cfg(test)]
mod tests {
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    use super::*;

    fn set_name(sql: &str) -> String {
        match Parser::parse_sql(&PostgreSqlDialect {}, sql)
            .unwrap()
            .remove(0)
        {
            Statement::Set(Set::SingleAssignment { variable, .. }) => setting_name(&variable),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn setting_names_are_compared_unquoted_and_in_lower_case() {
        assert_eq!(set_name("SET DateStyle = ISO"), "datestyle");
        assert_eq!(set_name("SET \"DateStyle\" = ISO"), "datestyle");
        assert_eq!(
            set_name("SET \"datafusion.execution.batch_size\" = 1"),
            "datafusion.execution.batch_size"
        );
        assert!(
            refuse_engine_setting(&set_name("SET \"datafusion.execution.batch_size\" = 1"))
                .is_err()
        );
        assert!(
            refuse_engine_setting(&set_name("SET DataFusion.Execution.Batch_Size = 1")).is_err()
        );
        assert!(refuse_engine_setting("search_path").is_ok());
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

    #[test]
    fn values_the_encoder_reads_are_checked() {
        assert!(check_value("datestyle", "ISO, MDY").is_ok());
        assert!(check_value("datestyle", "garbage").is_err());
        assert!(check_value("extra_float_digits", "3").is_ok());
        assert!(check_value("extra_float_digits", "99").is_err());
        assert!(check_value("bytea_output", "base64").is_err());
        assert_eq!(parse_timeout("5s").unwrap(), 5_000);
        assert_eq!(parse_timeout("250").unwrap(), 250);
        assert_eq!(parse_timeout("1min").unwrap(), 60_000);
        assert!(parse_timeout("soon").is_err());
    }
}
