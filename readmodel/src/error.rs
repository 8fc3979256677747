//! The one error type of this crate: what can go wrong reading (or writing) the read model's
//! shared files.

/// Why the read model's files could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store holds something this version cannot read; retrying will not help.
    #[error("read model is corrupt or incompatible: {0}")]
    Corrupt(String),
    #[error("read model I/O failed: {0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
