//! The one error type at this crate's boundary: why a query did not answer (each kind
//! with its Postgres SQLSTATE), and why a server, an export or a reconciliation could not
//! run. [`GuardError`] (which limit stopped a query) and [`ReadModelError`] (what the store
//! said) are the details inside two of its variants.

use std::net::SocketAddr;

use datafusion::error::DataFusionError;

use crate::guard::GuardError;
use crate::read_model::ReadModelError;

/// Why something the analytics crate was asked to do failed.
#[derive(Debug, thiserror::Error)]
pub enum AnalyticsError {
    /// Not one read-only `SELECT` (or a statement a session may run).
    #[error("{0}")]
    Forbidden(String),
    /// The SQL does not parse or does not plan (unknown table or column, bad types), or
    /// evaluating it failed (division by zero, a bad cast); `sqlstate` is the Postgres
    /// code for it.
    #[error("{message}")]
    Invalid { message: String, sqlstate: String },
    #[error(transparent)]
    Limit(GuardError),
    /// The query needed more memory than it may use.
    #[error("query needs more memory than allowed: {0}")]
    Memory(String),
    /// Too many queries are running or waiting; try again later.
    #[error("{0}")]
    Busy(String),
    #[error(transparent)]
    ReadModel(#[from] ReadModelError),
    /// No query worker could be started.
    #[error("query workers unavailable: {0}")]
    Unavailable(String),
    #[error("query failed: {0}")]
    Internal(String),
    /// A command's arguments are wrong (the export command's usage errors).
    #[error("{0}")]
    Usage(String),
    /// Writing a command's output failed (an export's file).
    #[error("{0}")]
    Output(String),
    /// Reconciliation is not configured.
    #[error("reconciliation is not configured: set analytics.reconcile.composer_url")]
    ReconcileNotConfigured,
    /// The services' own figures (the composer's ledger) could not be fetched.
    #[error("the source of truth (the composer's ledger) is unavailable: {0}")]
    SourceOfTruth(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// A running server (asked over its API by a command) refused or failed.
    #[error("{0}")]
    Remote(String),
    /// The server refuses to start as configured (exposure with a development secret).
    #[error("the analytics server refuses to start: {0}")]
    Refused(String),
}

/// By hand because of `Listen`'s I/O error, cloned as its kind and message: the result cache
/// hands one computation's error to every caller that waited for it.
impl Clone for AnalyticsError {
    fn clone(&self) -> Self {
        use AnalyticsError as E;
        match self {
            E::Forbidden(m) => E::Forbidden(m.clone()),
            E::Invalid { message, sqlstate } => E::Invalid {
                message: message.clone(),
                sqlstate: sqlstate.clone(),
            },
            E::Limit(g) => E::Limit(g.clone()),
            E::Memory(m) => E::Memory(m.clone()),
            E::Busy(m) => E::Busy(m.clone()),
            E::ReadModel(e) => E::ReadModel(e.clone()),
            E::Unavailable(m) => E::Unavailable(m.clone()),
            E::Internal(m) => E::Internal(m.clone()),
            E::Usage(m) => E::Usage(m.clone()),
            E::Output(m) => E::Output(m.clone()),
            E::ReconcileNotConfigured => E::ReconcileNotConfigured,
            E::SourceOfTruth(m) => E::SourceOfTruth(m.clone()),
            E::Listen { addr, source } => E::Listen {
                addr: *addr,
                source: std::io::Error::new(source.kind(), source.to_string()),
            },
            E::Remote(m) => E::Remote(m.clone()),
            E::Refused(m) => E::Refused(m.clone()),
        }
    }
}

impl AnalyticsError {
    /// Bad input with the generic SQLSTATE (22000, data exception).
    pub fn invalid(message: impl Into<String>) -> AnalyticsError {
        AnalyticsError::Invalid {
            message: message.into(),
            sqlstate: "22000".into(),
        }
    }

    /// The Postgres SQLSTATE of this error.
    pub fn sqlstate(&self) -> &str {
        match self {
            AnalyticsError::Forbidden(_) => "25006",
            AnalyticsError::Invalid { sqlstate, .. } => sqlstate,
            AnalyticsError::Limit(GuardError::TooManyRows(_)) => "54000",
            AnalyticsError::Limit(GuardError::Timeout(_) | GuardError::CpuTime(_)) => "57014",
            AnalyticsError::Memory(_) => "53200",
            AnalyticsError::Busy(_) => "53300",
            AnalyticsError::ReadModel(_) => "58000",
            AnalyticsError::Unavailable(_) => "58000",
            AnalyticsError::Internal(_) => "XX000",
            AnalyticsError::Usage(_) => "22023",
            AnalyticsError::Output(_) | AnalyticsError::Listen { .. } => "58030",
            AnalyticsError::ReconcileNotConfigured | AnalyticsError::Refused(_) => "55000",
            AnalyticsError::SourceOfTruth(_) | AnalyticsError::Remote(_) => "58000",
        }
    }
}

impl From<DataFusionError> for AnalyticsError {
    fn from(e: DataFusionError) -> Self {
        if let Some(g) = GuardError::find(&e) {
            return AnalyticsError::Limit(g.clone());
        }
        if let DataFusionError::External(inner) = e.find_root()
            && let Some(rm) = inner.downcast_ref::<ReadModelError>()
        {
            return AnalyticsError::ReadModel(rm.clone());
        }
        let invalid = |message: String, sqlstate: &str| AnalyticsError::Invalid {
            message,
            sqlstate: sqlstate.to_owned(),
        };
        match e.find_root() {
            DataFusionError::SQL(..) => invalid(e.strip_backtrace(), "42601"),
            DataFusionError::SchemaError(..) => invalid(e.strip_backtrace(), "42703"),
            DataFusionError::Plan(m) if m.contains("not found") && m.contains("table") => {
                invalid(e.strip_backtrace(), "42P01")
            }
            DataFusionError::Plan(_) => invalid(e.strip_backtrace(), "42000"),
            DataFusionError::NotImplemented(_) => invalid(e.strip_backtrace(), "0A000"),
            DataFusionError::ResourcesExhausted(m) => AnalyticsError::Memory(m.clone()),
            // Errors evaluating the user's expressions (division by zero, bad casts).
            DataFusionError::Execution(m) if !m.trim().is_empty() => invalid(m.clone(), "22000"),
            // The second field is context (a backtrace), not the message.
            DataFusionError::ArrowError(a, _) => invalid(a.to_string(), "22000"),
            DataFusionError::Execution(_) => invalid(e.strip_backtrace(), "22000"),
            _ => AnalyticsError::Internal(e.strip_backtrace()),
        }
    }
}

/// A result of this crate.
pub type Result<T, E = AnalyticsError> = std::result::Result<T, E>;
