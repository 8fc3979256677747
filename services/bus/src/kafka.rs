//! The Kafka implementation of the bus, for deployments with several processes.
//!
//! [`KafkaBus`] publishes through one idempotent producer (`acks=all`), keyed by aggregate id
//! so one aggregate's records land in one partition, in order. [`KafkaSource`] is one member
//! of a consumer group that never commits on its own: the caller commits the positions it
//! has made durable, and a restarted member resumes exactly there.
//!
//! Nothing here relies on the broker creating topics: [`KafkaBus::connect`] and
//! [`KafkaSource::subscribe`] create the topics they are given ([`ensure_topics`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use crate::{BusError, BusRecord, ConsumedRecord, EventBus, EventSource, Position, Result};

/// How long an admin request (topic creation) or a metadata request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// How long `publish` waits before retrying a record the full local queue refused.
const QUEUE_FULL_BACKOFF: Duration = Duration::from_millis(10);
/// Default bound of a consumer's prefetched records (librdkafka's default is 64 MiB), so a
/// reader's memory stays bounded whatever the backlog on the broker.
const CONSUMER_QUEUE_KBYTES: u32 = 16 * 1024;
/// Default bound of one fetch response (librdkafka's default is 50 MiB).
const FETCH_MAX_BYTES: u32 = 8 * 1024 * 1024;
/// Longest a fetch waits at the broker for more data before answering.
const FETCH_WAIT_MAX_MS: u32 = 50;
/// Default bound of a producer's queue of records not yet acknowledged (librdkafka's default
/// is 1 GiB); `publish` waits for room when it is full.
const PRODUCER_QUEUE_KBYTES: u32 = 64 * 1024;

/// How to reach the Kafka cluster and how to create topics on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap brokers, comma-separated `host:port` pairs.
    pub brokers: String,
    /// Partition count of the topics this process creates at startup (existing topics are
    /// left as they are). Parallelism of a consumer group is bounded by it.
    pub partitions: i32,
    /// Replication factor of the topics this process creates at startup.
    pub replication_factor: i32,
    /// `retention.ms` of the topics this process creates: -1 (the default) keeps events
    /// forever, which a complete read-model rebuild from the log needs.
    pub topic_retention_ms: i64,
    /// A consumer-group member that sends no heartbeat for this long is considered dead and
    /// its partitions are reassigned. Joining a group takes a good part of it.
    pub session_timeout_ms: u32,
    /// The client id the brokers see (in their logs and quotas).
    pub client_id: String,
    /// Extra librdkafka properties (e.g. `message.timeout.ms`, `security.protocol`), applied
    /// after, and so overriding, every setting this crate makes.
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".into(),
            partitions: 3,
            replication_factor: 1,
            topic_retention_ms: -1,
            session_timeout_ms: 10_000,
            client_id: "shoplens".into(),
            properties: BTreeMap::new(),
        }
    }
}

impl KafkaConfig {
    /// The consumer settings: manual commits only, earliest offset for a new group, bounded
    /// prefetch; then `properties` on top.
    fn consumer_config(&self, group: &str) -> ClientConfig {
        let session = self.session_timeout_ms;
        self.client_config(&[
            ("group.id", group.to_owned()),
            ("enable.auto.commit", "false".into()),
            ("enable.auto.offset.store", "false".into()),
            ("auto.offset.reset", "earliest".into()),
            ("enable.partition.eof", "false".into()),
            ("session.timeout.ms", session.to_string()),
            ("heartbeat.interval.ms", (session / 3).max(1).to_string()),
            // Bounded prefetch: memory stays flat however far behind the group is.
            (
                "queued.max.messages.kbytes",
                CONSUMER_QUEUE_KBYTES.to_string(),
            ),
            ("fetch.max.bytes", FETCH_MAX_BYTES.to_string()),
            // librdkafka waits up to 500 ms for a fetch to fill; the read model's freshness
            // is worth more than the fewer, fuller fetches (override via `properties`).
            ("fetch.wait.max.ms", FETCH_WAIT_MAX_MS.to_string()),
        ])
    }

    /// A client config with the given role-specific settings, then `properties` on top.
    fn client_config(&self, settings: &[(&str, String)]) -> ClientConfig {
        let mut cc = ClientConfig::new();
        cc.set("bootstrap.servers", &self.brokers)
            .set("client.id", &self.client_id);
        for (k, v) in settings {
            cc.set(*k, v);
        }
        for (k, v) in &self.properties {
            cc.set(k, v);
        }
        cc
    }
}

/// Creates those of `topics` that do not exist yet, with the configured partition count,
/// replication factor and retention. A topic that already exists (whatever its settings) is
/// fine.
pub async fn ensure_topics(config: &KafkaConfig, topics: &[&str]) -> Result<()> {
    for t in topics {
        crate::validate_topic(t)?;
    }
    if topics.is_empty() {
        return Ok(());
    }
    let admin: AdminClient<BusContext> = config
        .client_config(&[])
        .create_with_context(BusContext::new("admin", None))
        .map_err(|e| unavailable("cannot create a Kafka admin client", e))?;
    let retention = config.topic_retention_ms.to_string();
    let new_topics: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| {
            NewTopic::new(
                t,
                config.partitions,
                TopicReplication::Fixed(config.replication_factor),
            )
            .set("retention.ms", &retention)
        })
        .collect();
    let options = AdminOptions::new()
        .request_timeout(Some(REQUEST_TIMEOUT))
        .operation_timeout(Some(REQUEST_TIMEOUT));
    let results = admin
        .create_topics(&new_topics, &options)
        .await
        .map_err(|e| unavailable("cannot create topics", e))?;
    let mut failed = Vec::new();
    for result in results {
        match result {
            Ok(topic) => tracing::info!(
                topic,
                partitions = config.partitions,
                replication_factor = config.replication_factor,
                "created Kafka topic"
            ),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => failed.push(format!("{topic}: {code}")),
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(BusError::Unavailable(format!(
            "cannot create topics: {}",
            failed.join(", ")
        )))
    }
}

/// The producing side: an idempotent producer, cheap to share (`publish` takes `&self`).
pub struct KafkaBus {
    config: KafkaConfig,
    /// Replaced when the idempotent producer hits a fatal error (it never recovers by
    /// itself); a `FutureProducer` is a handle, so cloning it out is cheap.
    producer: Mutex<FutureProducer<BusContext>>,
}

impl KafkaBus {
    /// Creates `topics` if they are missing and a producer for them. Records for other
    /// topics can be published too, but only to topics that exist: the broker does not
    /// create them.
    pub async fn connect(config: &KafkaConfig, topics: &[&str]) -> Result<KafkaBus> {
        ensure_topics(config, topics).await?;
        let producer = new_producer(config)?;
        Ok(KafkaBus {
            config: config.clone(),
            producer: Mutex::new(producer),
        })
    }

    fn producer(&self) -> Result<FutureProducer<BusContext>> {
        let mut producer = self.producer.lock().expect("producer lock");
        if let Some((code, reason)) = producer.client().fatal_error() {
            tracing::error!(%code, reason, "the Kafka producer failed fatally; creating a new one");
            *producer = new_producer(&self.config)?;
        }
        Ok(producer.clone())
    }
}

fn new_producer(config: &KafkaConfig) -> Result<FutureProducer<BusContext>> {
    config
        .client_config(&[
            ("enable.idempotence", "true".into()),
            ("acks", "all".into()),
            ("linger.ms", "5".into()),
            ("message.timeout.ms", "30000".into()),
            (
                "queue.buffering.max.kbytes",
                PRODUCER_QUEUE_KBYTES.to_string(),
            ),
            // The Java client's partitioner, so other clients agree on where a key lives.
            ("partitioner", "murmur2_random".into()),
        ])
        .create_with_context(BusContext::new("producer", None))
        .map_err(|e| unavailable("cannot create a Kafka producer", e))
}

#[async_trait]
impl EventBus for KafkaBus {
    async fn publish(&self, records: &[BusRecord]) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        // Checked before anything is enqueued, so a bad name stores nothing.
        for r in records {
            crate::validate_topic(&r.topic)?;
        }
        let producer = self.producer()?;
        // Enqueue everything first (the producer batches them), then wait for every
        // delivery report. Records are enqueued in order and the producer is idempotent, so
        // one key's records are stored in order even when the producer retries.
        let mut deliveries = Vec::with_capacity(records.len());
        for r in records {
            let mut record = FutureRecord::to(&r.topic)
                .key(r.key.as_str())
                .payload(r.payload.as_ref());
            loop {
                match producer.send_result(record) {
                    Ok(delivery) => {
                        deliveries.push(delivery);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        // The local queue is full: wait for deliveries to drain it.
                        record = back;
                        tokio::time::sleep(QUEUE_FULL_BACKOFF).await;
                    }
                    Err((e, _)) => {
                        return Err(unavailable(
                            &format!("cannot enqueue a record for topic {}", r.topic),
                            e,
                        ));
                    }
                }
            }
        }
        let results = futures::future::join_all(deliveries).await;
        let mut failed = 0;
        let mut first_error = None;
        for result in results {
            let error = match result {
                Ok(Ok(_)) => continue,
                Ok(Err((e, _))) => e.to_string(),
                Err(_) => "the producer dropped the delivery report".to_owned(),
            };
            failed += 1;
            first_error.get_or_insert(error);
        }
        match first_error {
            None => Ok(()),
            Some(e) => Err(BusError::Unavailable(format!(
                "{failed} of {} records were not delivered: {e}",
                records.len()
            ))),
        }
    }
}

type GroupConsumer = StreamConsumer<BusContext>;

/// The consuming side: one member of a Kafka consumer group. Offsets are committed only by
/// [`EventSource::commit`]; a new group starts at the earliest offset.
pub struct KafkaSource {
    /// `None` only while dropping (closing a consumer blocks; see `Drop`).
    consumer: Option<Arc<GroupConsumer>>,
    group: String,
}

impl KafkaSource {
    /// Creates `topics` if they are missing and joins `group` as a reader of them. The
    /// group is joined, and partitions assigned, while [`EventSource::poll`] is called.
    pub async fn subscribe(config: &KafkaConfig, group: &str, topics: &[&str]) -> Result<Self> {
        crate::validate_topic(group)?;
        ensure_topics(config, topics).await?;
        let consumer: GroupConsumer = config
            .consumer_config(group)
            .create_with_context(BusContext::new("consumer", Some(group.to_owned())))
            .map_err(|e| unavailable("cannot create a Kafka consumer", e))?;
        consumer
            .subscribe(topics)
            .map_err(|e| unavailable("cannot subscribe", e))?;
        Ok(KafkaSource {
            consumer: Some(Arc::new(consumer)),
            group: group.to_owned(),
        })
    }

    /// Leaves the group and waits until the broker knows, so another member can take the
    /// partitions over at once (dropping does the same in the background).
    pub async fn close(mut self) {
        if let Some(consumer) = self.consumer.take() {
            let group = self.group.clone();
            if let Err(e) = tokio::task::spawn_blocking(move || drop(consumer)).await {
                tracing::warn!(group, error = %e, "closing the Kafka consumer failed");
            }
        }
    }

    pub fn group(&self) -> &str {
        &self.group
    }

    /// The topic partitions currently assigned to this member (empty before the group is
    /// joined and during a rebalance).
    pub fn assignment(&self) -> Vec<(String, i32)> {
        match self.consumer().assignment() {
            Ok(tpl) => tpl
                .elements()
                .iter()
                .map(|e| (e.topic().to_owned(), e.partition()))
                .collect(),
            Err(e) => {
                tracing::warn!(group = self.group, error = %e, "cannot read the assignment");
                Vec::new()
            }
        }
    }

    fn consumer(&self) -> &Arc<GroupConsumer> {
        self.consumer
            .as_ref()
            .expect("consumer is present until drop")
    }
}

impl Drop for KafkaSource {
    fn drop(&mut self) {
        // Dropping the consumer leaves the group, waiting for the broker: do that off the
        // async threads when there is a runtime.
        if let Some(consumer) = self.consumer.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn_blocking(move || drop(consumer));
        }
    }
}

fn to_record(m: &BorrowedMessage<'_>) -> Result<ConsumedRecord> {
    let offset = u64::try_from(m.offset()).map_err(|_| {
        BusError::Unavailable(format!(
            "{}/{}: the broker returned the invalid offset {}",
            m.topic(),
            m.partition(),
            m.offset()
        ))
    })?;
    Ok(ConsumedRecord {
        topic: m.topic().to_owned(),
        partition: m.partition(),
        offset,
        key: String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
        payload: Bytes::copy_from_slice(m.payload().unwrap_or_default()),
        timestamp_ms: m.timestamp().to_millis().unwrap_or(0),
    })
}

#[async_trait]
impl EventSource for KafkaSource {
    /// Waits up to `wait` for a first record, then adds what is already fetched, up to `max`.
    /// Cancel-safe: nothing is awaited once a record has been taken.
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<ConsumedRecord>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let consumer = self.consumer().clone();
        let mut stream = consumer.stream();
        let first = match tokio::time::timeout(wait, stream.next()).await {
            Err(_) | Ok(None) => return Ok(Vec::new()),
            Ok(Some(m)) => m.map_err(|e| unavailable("cannot consume", e))?,
        };
        let mut out = Vec::with_capacity(max.min(1024));
        out.push(to_record(&first)?);
        while out.len() < max {
            // Only what librdkafka has already fetched: no waiting here.
            match stream.next().now_or_never() {
                Some(Some(Ok(m))) => out.push(to_record(&m)?),
                Some(Some(Err(e))) => {
                    // Hand out what was read; the next poll reports a lasting error.
                    tracing::warn!(group = self.group, error = %e, "consumer error");
                    break;
                }
                Some(None) | None => break,
            }
        }
        Ok(out)
    }

    /// Commits exactly `positions` and waits for the broker to store them. Positions of
    /// partitions this member no longer owns (a rebalance moved them) are skipped with a
    /// warning: their new owner reads from the last commit, so records are seen again but
    /// none is lost. A commit the broker rejects because a rebalance is under way is an
    /// error; poll (which completes the rebalance), then commit again.
    async fn commit(&mut self, positions: &[Position]) -> Result<()> {
        if positions.is_empty() {
            return Ok(());
        }
        let assigned = self.assignment();
        let mut tpl = TopicPartitionList::with_capacity(positions.len());
        for p in positions {
            if !assigned
                .iter()
                .any(|(t, part)| *t == p.topic && *part == p.partition)
            {
                tracing::warn!(
                    group = self.group,
                    topic = p.topic,
                    partition = p.partition,
                    next_offset = p.next_offset,
                    "not committing the offset of a partition no longer assigned to this member"
                );
                continue;
            }
            let offset = i64::try_from(p.next_offset).map_err(|_| {
                BusError::Unavailable(format!("offset {} too large", p.next_offset))
            })?;
            tpl.add_partition_offset(&p.topic, p.partition, Offset::Offset(offset))
                .map_err(|e| unavailable("cannot build the commit", e))?;
        }
        if tpl.count() == 0 {
            return Ok(());
        }
        let consumer = self.consumer().clone();
        tokio::task::spawn_blocking(move || consumer.commit(&tpl, CommitMode::Sync))
            .await
            .map_err(|e| BusError::Unavailable(format!("commit task failed: {e}")))?
            .map_err(|e| unavailable("cannot commit offsets", e))
    }

    /// Seeks a partition assigned to this member; the next poll reads from there.
    fn seek(&mut self, position: &Position) -> Result<()> {
        let assigned = self.assignment();
        if !assigned
            .iter()
            .any(|(t, p)| *t == position.topic && *p == position.partition)
        {
            return Err(BusError::NotAssigned {
                topic: position.topic.clone(),
                partition: position.partition,
            });
        }
        let offset = i64::try_from(position.next_offset).map_err(|_| {
            BusError::Unavailable(format!("offset {} too large", position.next_offset))
        })?;
        self.consumer()
            .seek(
                &position.topic,
                position.partition,
                Offset::Offset(offset),
                Duration::from_secs(5),
            )
            .map_err(|e| {
                unavailable(
                    &format!("cannot seek {}/{}", position.topic, position.partition),
                    e,
                )
            })
    }

    fn owned_partitions(&self) -> Option<Vec<(String, i32)>> {
        let mut owned = self.assignment();
        owned.sort();
        Some(owned)
    }

    /// High watermarks of the partitions currently assigned to this member (none before it
    /// has joined its group), asked for all partitions at once (one round trip each).
    /// Meant for lag metrics only: brokers may report them late.
    async fn end_offsets(&mut self) -> Result<Vec<Position>> {
        let requests = self.assignment().into_iter().map(|(topic, partition)| {
            let consumer = self.consumer().clone();
            tokio::task::spawn_blocking(move || {
                let (_low, high) = consumer
                    .fetch_watermarks(&topic, partition, REQUEST_TIMEOUT)
                    .map_err(|e| {
                        unavailable(&format!("cannot read the end of {topic}/{partition}"), e)
                    })?;
                Ok(Position {
                    topic,
                    partition,
                    next_offset: u64::try_from(high).unwrap_or(0),
                })
            })
        });
        futures::future::join_all(requests)
            .await
            .into_iter()
            .map(|joined| {
                joined
                    .map_err(|e| BusError::Unavailable(format!("end offsets task failed: {e}")))?
            })
            .collect()
    }
}

fn unavailable(what: &str, e: KafkaError) -> BusError {
    BusError::Unavailable(format!("{what}: {e}"))
}

/// Routes librdkafka's logs and errors to `tracing` and logs consumer-group rebalances.
struct BusContext {
    role: &'static str,
    group: Option<String>,
}

impl BusContext {
    fn new(role: &'static str, group: Option<String>) -> Self {
        BusContext { role, group }
    }
}

impl ClientContext for BusContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        let (role, group) = (self.role, self.group.as_deref().unwrap_or(""));
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", role, group, fac, "{message}")
            }
            RDKafkaLogLevel::Warning => {
                tracing::warn!(target: "librdkafka", role, group, fac, "{message}")
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", role, group, fac, "{message}")
            }
            RDKafkaLogLevel::Debug => {
                tracing::debug!(target: "librdkafka", role, group, fac, "{message}")
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let group = self.group.as_deref().unwrap_or("");
        tracing::warn!(target: "librdkafka", role = self.role, group, %error, reason, "Kafka client error");
    }
}

impl ConsumerContext for BusContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let group = self.group.as_deref().unwrap_or("");
        match rebalance {
            Rebalance::Assign(tpl) => {
                tracing::info!(group, partitions = %partitions(tpl), "partitions assigned")
            }
            Rebalance::Revoke(tpl) => {
                tracing::info!(group, partitions = %partitions(tpl), "partitions revoked")
            }
            Rebalance::Error(e) => tracing::warn!(group, error = %e, "rebalance failed"),
        }
    }
}

/// `topic/partition` pairs, comma-separated, for logs.
fn partitions(tpl: &TopicPartitionList) -> String {
    tpl.elements()
        .iter()
        .map(|e| format!("{}/{}", e.topic(), e.partition()))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_unknown_fields() {
        let c: KafkaConfig = serde_json::from_str(r#"{"brokers": "b:1"}"#).unwrap();
        assert_eq!(c.brokers, "b:1");
        assert_eq!(c.partitions, 3);
        assert_eq!(c.session_timeout_ms, 10_000);
        assert!(serde_json::from_str::<KafkaConfig>(r#"{"broker": "b:1"}"#).is_err());
    }

    #[test]
    fn properties_override_built_in_settings() {
        let mut c = KafkaConfig::default();
        c.properties
            .insert("message.timeout.ms".into(), "1234".into());
        let cc = c.client_config(&[("message.timeout.ms", "30000".into())]);
        assert_eq!(cc.get("message.timeout.ms"), Some("1234"));
        assert_eq!(cc.get("bootstrap.servers"), Some("127.0.0.1:9092"));
    }

    #[test]
    fn consumer_prefetch_is_bounded_and_overridable() {
        let mut c = KafkaConfig::default();
        let cc = c.consumer_config("g");
        assert_eq!(cc.get("queued.max.messages.kbytes"), Some("16384"));
        assert_eq!(cc.get("fetch.max.bytes"), Some("8388608"));
        assert_eq!(cc.get("enable.auto.commit"), Some("false"));
        assert_eq!(cc.get("group.id"), Some("g"));
        c.properties
            .insert("queued.max.messages.kbytes".into(), "4096".into());
        let cc = c.consumer_config("g");
        assert_eq!(cc.get("queued.max.messages.kbytes"), Some("4096"));
    }
}
