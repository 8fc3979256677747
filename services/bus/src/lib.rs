//! The event bus: how outbox relays publish events and how readers consume them.
//!
//! [`EventBus`] is the producing side, [`EventSource`] the consuming side. Both move opaque
//! bytes keyed by an aggregate id; the contract crate says what the bytes mean.
//! Two implementations:
//! - [`EmbeddedLog`] (the default): a durable, append-only log per topic on local disk with
//!   committed consumer offsets, for running everything in one process with no servers;
//! - `KafkaBus` and `KafkaSource` (module `kafka`, behind the `kafka` feature): a Kafka
//!   cluster, for deployments with several processes. Topics are created with
//!   `ensure_topics`, never by the broker on first use. Crates that only publish through the
//!   abstraction or read the embedded log build without it, and so without librdkafka.
//!
//! Guarantees every implementation gives:
//! - `publish` returns `Ok` only once every record is durably stored (the relay marks outbox
//!   rows published only then);
//! - records of one topic and key are delivered in the order they were published;
//! - delivery is at least once: a consumer that did not commit sees records again.

mod embedded;
#[cfg(feature = "kafka")]
mod kafka;

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

pub use embedded::{EmbeddedConsumer, EmbeddedLog, EmbeddedLogConfig};
#[cfg(feature = "kafka")]
pub use kafka::{KafkaBus, KafkaConfig, KafkaSource, ensure_topics};

/// A record to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusRecord {
    pub topic: String,
    /// The partition key: the aggregate id, so one aggregate's records stay in order.
    pub key: String,
    pub payload: Bytes,
}

/// A record as a consumer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumedRecord {
    pub topic: String,
    pub partition: i32,
    pub offset: u64,
    pub key: String,
    pub payload: Bytes,
    /// When the bus stored the record (milliseconds since the Unix epoch).
    pub timestamp_ms: i64,
}

/// A consumer position: the next offset to read in one topic partition.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct Position {
    pub topic: String,
    pub partition: i32,
    pub next_offset: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("event log I/O failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("event log at {path} is in use by another process")]
    Locked { path: String },
    #[error("event log is corrupt: {0}")]
    Corrupt(String),
    #[error("bus unavailable: {0}")]
    Unavailable(String),
    #[error("invalid topic name `{0}`")]
    InvalidTopic(String),
    /// A seek on a partition this consumer-group member does not own (now).
    #[error("partition {topic}/{partition} is not assigned to this consumer")]
    NotAssigned { topic: String, partition: i32 },
}

pub type Result<T, E = BusError> = std::result::Result<T, E>;

/// The producing side of the bus.
#[async_trait]
pub trait EventBus: Send + Sync + 'static {
    /// Publishes `records` in order and returns once all of them are durably acknowledged.
    /// On error some prefix may have been stored: the caller retries the whole batch and
    /// readers deduplicate.
    async fn publish(&self, records: &[BusRecord]) -> Result<()>;
}

/// The consuming side of the bus: one member of a consumer group.
#[async_trait]
pub trait EventSource: Send {
    /// Returns up to `max` records, waiting up to `wait` when none are available.
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<ConsumedRecord>>;

    /// Durably records where the group resumes after a restart.
    async fn commit(&mut self, positions: &[Position]) -> Result<()>;

    /// Moves the read position (e.g. to a position the sink stored itself).
    fn seek(&mut self, position: &Position) -> Result<()>;

    /// The offset one past the last record stored, per topic partition, for lag metrics.
    async fn end_offsets(&mut self) -> Result<Vec<Position>>;

    /// For a member of a consumer group: the (topic, partition)s it is assigned now, sorted
    /// (empty during a rebalance). `None`: the source reads all its topics alone.
    fn owned_partitions(&self) -> Option<Vec<(String, i32)>> {
        None
    }
}

/// Checks a topic name: 1-200 characters of `[A-Za-z0-9._-]`, as Kafka allows.
pub fn validate_topic(topic: &str) -> Result<()> {
    let ok = !topic.is_empty()
        && topic.len() <= 200
        && topic != "."
        && topic != ".."
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(BusError::InvalidTopic(topic.to_owned()))
    }
}
