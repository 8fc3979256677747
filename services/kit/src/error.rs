//! The kit's error at its boundary: what loading a configuration, opening a service's
//! database, publishing its outbox or starting a service can fail with. Request handlers
//! answer with [`crate::http::ApiError`] instead: that one is an HTTP response.

use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("config file {0} does not exist")]
    ConfigFileMissing(PathBuf),
    #[error("invalid configuration: {0}")]
    Config(Box<figment::Error>),
    #[error("invalid database URL `{url}`: {reason}")]
    DatabaseUrl { url: String, reason: String },
    #[error("failed to open database `{url}`: {source}")]
    Database { url: String, source: sqlx::Error },
    #[error("failed to apply the {which} migrations: {source}")]
    Migration {
        which: &'static str,
        source: sqlx::migrate::MigrateError,
    },
    #[error("the {service} service refuses to start: {reason}")]
    Exposure { service: String, reason: String },
    #[error("failed to bind the {service} service to {addr}: {source}")]
    Bind {
        service: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Bus(#[from] shoplens_bus::BusError),
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl From<figment::Error> for Error {
    fn from(e: figment::Error) -> Self {
        Error::Config(Box::new(e))
    }
}
