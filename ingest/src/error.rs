//! The one error type at this crate's boundary: what starting the ingest process, running its
//! workers, writing a read-model store and asking a running ingest process for a rebuild
//! can fail with. The worker tells [`IngestError::Unavailable`] (back off and retry) from
//! the rest (stop: retrying will not help).

use std::net::SocketAddr;

use shoplens_bus::BusError;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The store cannot be reached or refused the write; the worker backs off and retries.
    #[error("sink unavailable: {0}")]
    Unavailable(String),
    /// The store holds something this version cannot read; retrying will not help.
    #[error("sink is corrupt or incompatible: {0}")]
    Corrupt(String),
    /// Another worker claimed partitions this writer wrote: some of its last apply may have
    /// been turned away. Claim the current assignment again and re-read from the stored
    /// positions.
    #[error("fenced off: {0}")]
    Fenced(String),
    #[error("I/O failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot read the event bus: {0}")]
    Bus(#[from] BusError),
    #[error("bad dead-letter topic: {0}")]
    DeadLetterTopic(BusError),
    /// Another writer (an ingest worker in another process) holds this embedded generation.
    #[error(
        "the embedded read model at {0} already has a writer{1}: the embedded store takes one \
         ingest worker (run several on ClickHouse)"
    )]
    SecondWriter(String, String),
    #[error("a rebuild is already running (generation {0})")]
    RebuildRunning(u32),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the ingest API refuses to start: {0}")]
    Refused(String),
    /// A running ingest process (asked over its API) refused or failed.
    #[error("{0}")]
    Remote(String),
}

impl From<shoplens_readmodel::Error> for IngestError {
    fn from(e: shoplens_readmodel::Error) -> Self {
        match e {
            shoplens_readmodel::Error::Corrupt(m) => IngestError::Corrupt(m),
            shoplens_readmodel::Error::Io(e) => IngestError::Io(e),
        }
    }
}

/// A result of this crate.
pub type Result<T, E = IngestError> = std::result::Result<T, E>;
