//! The errors of this crate: what can go wrong reading (or writing) the read model's shared
//! files ([`Error`]), and a `read_model` configuration that cannot work ([`ConfigError`]).

/// Why the read model's files could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store holds something this version cannot read; retrying will not help.
    #[error("read model is corrupt or incompatible: {0}")]
    Corrupt(String),
    #[error("read model I/O failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Why a `read_model` configuration cannot work (found without connecting to anything).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("read_model.clickhouse.url must be an http(s) URL, got `{0}`")]
    ClickHouseUrl(String),
    #[error("read_model.clickhouse.database must be letters, digits and `_`, got `{0}`")]
    ClickHouseDatabase(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
