//! The Kafka bus against a real broker (`SHOPLENS_TEST_KAFKA_BROKERS`, started by
//! `scripts/test.sh`): topic creation, keyed ordering, exact resume from committed offsets,
//! end offsets, and failures that must be errors rather than hangs.
//!
//! Every test uses its own topics and groups, so the tests run in parallel against one
//! broker. Joining a group is the slow part (about half the session timeout on tansu), so
//! each test joins as few times as it can.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use shoplens_bus::{
    BusError, BusRecord, ConsumedRecord, EventBus, EventSource, KafkaBus, KafkaConfig, KafkaSource,
    Position, ensure_topics,
};
use shoplens_test_support::kafka::test_brokers;

/// Long enough for a slow CI machine, short enough that a lost record fails the test fast.
const READ_DEADLINE: Duration = Duration::from_secs(60);

fn config() -> KafkaConfig {
    KafkaConfig {
        brokers: test_brokers(),
        partitions: 3,
        replication_factor: 1,
        // A first group join takes about half of this on tansu.
        session_timeout_ms: 6_000,
        client_id: "shoplens-bus-tests".into(),
        ..KafkaConfig::default()
    }
}

/// A topic or group name no other test (or earlier run against the same broker) uses.
fn unique(what: &str) -> String {
    format!("bus-test-{what}-{}", uuid::Uuid::now_v7().simple())
}

/// `count` records over `keys` keys; the payload is `key:n`, n counting that key's records
/// from 0 in publish order.
fn keyed_records(topic: &str, count: usize, keys: usize) -> Vec<BusRecord> {
    let mut per_key = vec![0usize; keys];
    (0..count)
        .map(|i| {
            let k = (i * 7 + i / keys) % keys;
            let n = per_key[k];
            per_key[k] += 1;
            BusRecord {
                topic: topic.to_owned(),
                key: format!("order-{k}"),
                payload: Bytes::from(format!("order-{k}:{n}")),
            }
        })
        .collect()
}

/// Polls until `count` records arrived (panicking after [`READ_DEADLINE`]), then once more
/// for a while to catch any record beyond `count` (a duplicate or a redelivery).
async fn read_exactly(source: &mut KafkaSource, count: usize) -> Vec<ConsumedRecord> {
    let start = Instant::now();
    let mut out = Vec::new();
    while out.len() < count {
        assert!(
            start.elapsed() < READ_DEADLINE,
            "only {} of {count} records arrived within {READ_DEADLINE:?}",
            out.len()
        );
        out.extend(
            source
                .poll(1_000, Duration::from_millis(500))
                .await
                .expect("poll"),
        );
    }
    let extra = source
        .poll(1_000, Duration::from_millis(1_000))
        .await
        .expect("poll");
    assert!(
        extra.is_empty() && out.len() == count,
        "expected exactly {count} records, got {} more: {:?}",
        out.len() + extra.len() - count,
        extra.first()
    );
    out
}

/// The records' payloads, per key, in the order they were consumed.
fn payloads_per_key(records: &[ConsumedRecord]) -> BTreeMap<String, Vec<String>> {
    let mut per_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in records {
        per_key
            .entry(r.key.clone())
            .or_default()
            .push(String::from_utf8(r.payload.to_vec()).expect("utf-8 payload"));
    }
    per_key
}

/// The partition count the broker reports for `topic`.
fn partition_count(topic: &str) -> usize {
    let client: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", test_brokers())
        .create()
        .expect("metadata client");
    let metadata = client
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let t = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .expect("topic in metadata");
    assert!(t.error().is_none(), "topic {topic}: {:?}", t.error());
    t.partitions().len()
}

#[tokio::test]
async fn ensure_topics_creates_missing_topics_and_is_idempotent() {
    let config = config();
    let (a, b) = (unique("ensure-a"), unique("ensure-b"));
    ensure_topics(&config, &[&a]).await.expect("create a");
    assert_eq!(partition_count(&a), 3);
    // Again, with one existing and one new topic, and a different partition count: the
    // existing topic is left as it is.
    let five = KafkaConfig {
        partitions: 5,
        ..config.clone()
    };
    ensure_topics(&five, &[&a, &b]).await.expect("idempotent");
    assert_eq!(partition_count(&a), 3);
    assert_eq!(partition_count(&b), 5);
    ensure_topics(&config, &[]).await.expect("nothing to do");
    match ensure_topics(&config, &["bad topic"]).await {
        Err(BusError::InvalidTopic(t)) => assert_eq!(t, "bad topic"),
        other => panic!("expected InvalidTopic, got {other:?}"),
    }
}

/// Publishes several thousand keyed records to a 3-partition topic; one member of a group
/// reads every record exactly once, each key's records in publish order; it commits half of
/// each partition and leaves; a new member of the same group resumes exactly at the commits.
#[tokio::test]
async fn keyed_records_arrive_once_in_order_and_a_new_member_resumes_at_the_commit() {
    let config = config();
    let topic = unique("orders");
    let group = unique("group");
    let bus = KafkaBus::connect(&config, &[&topic])
        .await
        .expect("connect");
    let records = keyed_records(&topic, 5_000, 41);
    // In several publish calls, as the outbox relay does.
    for chunk in records.chunks(700) {
        bus.publish(chunk).await.expect("publish");
    }
    bus.publish(&[]).await.expect("an empty publish is fine");

    let mut first = KafkaSource::subscribe(&config, &group, &[&topic])
        .await
        .expect("subscribe");
    let read = read_exactly(&mut first, records.len()).await;

    // Exactly once, each key in publish order.
    assert_eq!(
        payloads_per_key(&read),
        payloads_per_key_published(&records)
    );
    let mut per_partition: BTreeMap<i32, Vec<&ConsumedRecord>> = BTreeMap::new();
    for r in &read {
        assert_eq!(r.topic, topic);
        assert!(
            r.timestamp_ms > 1_700_000_000_000,
            "timestamp {}",
            r.timestamp_ms
        );
        per_partition.entry(r.partition).or_default().push(r);
    }
    assert_eq!(
        per_partition.keys().copied().collect::<Vec<_>>(),
        vec![0, 1, 2],
        "the keys spread over all three partitions"
    );
    // One key lives in one partition; offsets in a partition are consecutive and unique.
    let mut partition_of_key = BTreeMap::new();
    for (partition, rs) in &per_partition {
        for r in rs {
            let p = partition_of_key.entry(r.key.clone()).or_insert(*partition);
            assert_eq!(p, partition, "key {} in two partitions", r.key);
        }
        let offsets: Vec<u64> = rs.iter().map(|r| r.offset).collect();
        let start = offsets[0];
        assert_eq!(
            offsets,
            (start..start + rs.len() as u64).collect::<Vec<_>>(),
            "partition {partition}: offsets in order, no gap, no repeat"
        );
    }

    // The end offsets agree with what was read (brokers may report them late: retry).
    let expected_ends: Vec<Position> = per_partition
        .iter()
        .map(|(p, rs)| Position {
            topic: topic.clone(),
            partition: *p,
            next_offset: rs.last().expect("non-empty").offset + 1,
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let mut ends = first.end_offsets().await.expect("end offsets");
        ends.sort();
        if ends == expected_ends {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "end offsets {ends:?}, expected {expected_ends:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Commit the middle of each partition, then leave.
    let commits: Vec<Position> = per_partition
        .iter()
        .map(|(p, rs)| Position {
            topic: topic.clone(),
            partition: *p,
            next_offset: rs[rs.len() / 2].offset,
        })
        .collect();
    first.commit(&commits).await.expect("commit");
    first.close().await;

    // A new member of the group reads exactly the records at or after the commits.
    let expected: BTreeSet<(i32, u64, String, Bytes)> = read
        .iter()
        .filter(|r| {
            commits
                .iter()
                .any(|c| c.partition == r.partition && r.offset >= c.next_offset)
        })
        .map(|r| (r.partition, r.offset, r.key.clone(), r.payload.clone()))
        .collect();
    let mut second = KafkaSource::subscribe(&config, &group, &[&topic])
        .await
        .expect("subscribe again");
    let resumed = read_exactly(&mut second, expected.len()).await;
    let got: BTreeSet<(i32, u64, String, Bytes)> = resumed
        .iter()
        .map(|r| (r.partition, r.offset, r.key.clone(), r.payload.clone()))
        .collect();
    assert_eq!(got.len(), resumed.len(), "no record twice");
    assert_eq!(got, expected, "resumed exactly at the committed offsets");

    // Seek back to the start of one partition: its records come again, from there.
    let p0 = &per_partition[&0];
    second
        .seek(&Position {
            topic: topic.clone(),
            partition: 0,
            next_offset: p0[0].offset,
        })
        .expect("seek");
    let again = read_exactly(&mut second, p0.len()).await;
    assert_eq!(
        again
            .iter()
            .map(|r| (r.partition, r.offset))
            .collect::<Vec<_>>(),
        p0.iter().map(|r| (0, r.offset)).collect::<Vec<_>>()
    );
    match second.seek(&Position {
        topic: topic.clone(),
        partition: 7,
        next_offset: 0,
    }) {
        Err(BusError::NotAssigned { partition: 7, .. }) => {}
        other => panic!("expected NotAssigned, got {other:?}"),
    }
    second.close().await;
}

fn payloads_per_key_published(records: &[BusRecord]) -> BTreeMap<String, Vec<String>> {
    let mut per_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in records {
        per_key
            .entry(r.key.clone())
            .or_default()
            .push(String::from_utf8(r.payload.to_vec()).expect("utf-8 payload"));
    }
    per_key
}

/// The broker does not create topics, so a record for a missing topic can never be stored:
/// `publish` must fail once `message.timeout.ms` is up, not wait forever.
#[tokio::test]
async fn publishing_to_a_missing_topic_is_an_error_within_the_message_timeout() {
    let mut config = config();
    config
        .properties
        .insert("message.timeout.ms".into(), "2000".into());
    let existing = unique("exists");
    let bus = KafkaBus::connect(&config, &[&existing])
        .await
        .expect("connect");
    let missing = unique("missing");
    let started = Instant::now();
    let result = tokio::time::timeout(
        Duration::from_secs(30),
        bus.publish(&[BusRecord {
            topic: missing.clone(),
            key: "k".into(),
            payload: Bytes::from_static(b"lost"),
        }]),
    )
    .await
    .expect("publish returned within 30 s");
    match result {
        Err(BusError::Unavailable(message)) => {
            assert!(message.contains("1 of 1 records"), "{message}")
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(partition_count_or_none(&missing), None, "not auto-created");

    // The same producer still works for a topic that exists.
    bus.publish(&[BusRecord {
        topic: existing,
        key: "k".into(),
        payload: Bytes::from_static(b"stored"),
    }])
    .await
    .expect("publish to an existing topic");

    match bus
        .publish(&[BusRecord {
            topic: "no spaces".into(),
            key: "k".into(),
            payload: Bytes::new(),
        }])
        .await
    {
        Err(BusError::InvalidTopic(t)) => assert_eq!(t, "no spaces"),
        other => panic!("expected InvalidTopic, got {other:?}"),
    }
}

/// `None` when the broker does not know `topic`.
fn partition_count_or_none(topic: &str) -> Option<usize> {
    let client: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", test_brokers())
        .set("allow.auto.create.topics", "false")
        .create()
        .expect("metadata client");
    let metadata = client
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map(|t| t.partitions().len())
}

/// Polls both members in turn until `count` records arrived in total (panicking after
/// [`READ_DEADLINE`]), then a while longer to catch any record beyond `count`.
async fn read_from_both(
    a: &mut KafkaSource,
    b: &mut KafkaSource,
    count: usize,
) -> (Vec<ConsumedRecord>, Vec<ConsumedRecord>) {
    let start = Instant::now();
    let (mut from_a, mut from_b) = (Vec::new(), Vec::new());
    let wait = Duration::from_millis(100);
    while from_a.len() + from_b.len() < count {
        assert!(
            start.elapsed() < READ_DEADLINE,
            "only {} of {count} records arrived within {READ_DEADLINE:?}",
            from_a.len() + from_b.len()
        );
        from_a.extend(a.poll(1_000, wait).await.expect("poll a"));
        from_b.extend(b.poll(1_000, wait).await.expect("poll b"));
    }
    for _ in 0..5 {
        from_a.extend(a.poll(1_000, wait).await.expect("poll a"));
        from_b.extend(b.poll(1_000, wait).await.expect("poll b"));
    }
    assert_eq!(
        from_a.len() + from_b.len(),
        count,
        "records beyond the {count} expected"
    );
    (from_a, from_b)
}

/// The end of what `records` hold, per partition: the positions to commit after them.
fn ends(records: &[ConsumedRecord]) -> Vec<Position> {
    let mut ends: BTreeMap<(String, i32), u64> = BTreeMap::new();
    for r in records {
        let end = ends.entry((r.topic.clone(), r.partition)).or_default();
        *end = (*end).max(r.offset + 1);
    }
    ends.into_iter()
        .map(|((topic, partition), next_offset)| Position {
            topic,
            partition,
            next_offset,
        })
        .collect()
}

fn ids(records: &[ConsumedRecord]) -> BTreeSet<(i32, u64)> {
    records.iter().map(|r| (r.partition, r.offset)).collect()
}

/// A second member joining splits the partitions (nothing committed is read again); when a
/// member leaves without committing, the other takes its partitions over and reads them
/// again from their last commit: at least once, never lost.
#[tokio::test]
async fn members_share_partitions_and_take_over_from_the_last_commit() {
    let config = config();
    let topic = unique("shared");
    let group = unique("group");
    let bus = KafkaBus::connect(&config, &[&topic])
        .await
        .expect("connect");
    bus.publish(&keyed_records(&topic, 1_500, 30))
        .await
        .expect("publish");
    let mut a = KafkaSource::subscribe(&config, &group, &[&topic])
        .await
        .expect("subscribe a");
    let before = read_exactly(&mut a, 1_500).await;
    a.commit(&ends(&before)).await.expect("commit a");

    let mut b = KafkaSource::subscribe(&config, &group, &[&topic])
        .await
        .expect("subscribe b");
    let deadline = Instant::now() + READ_DEADLINE;
    while a.assignment().is_empty() || b.assignment().is_empty() {
        assert!(Instant::now() < deadline, "no rebalance to two members");
        a.poll(1_000, Duration::from_millis(100))
            .await
            .expect("poll a");
        b.poll(1_000, Duration::from_millis(100))
            .await
            .expect("poll b");
    }
    let (a_parts, b_parts) = (a.assignment(), b.assignment());
    assert_eq!(
        a_parts.len() + b_parts.len(),
        3,
        "a {a_parts:?}, b {b_parts:?}"
    );

    // New records go to whoever owns their partition; nothing committed comes again.
    bus.publish(&keyed_records(&topic, 1_500, 30))
        .await
        .expect("publish more");
    let (from_a, from_b) = read_from_both(&mut a, &mut b, 1_500).await;
    for r in &from_a {
        assert!(a_parts.contains(&(r.topic.clone(), r.partition)), "{r:?}");
    }
    for r in &from_b {
        assert!(b_parts.contains(&(r.topic.clone(), r.partition)), "{r:?}");
    }
    let mut all = ids(&from_a);
    all.extend(ids(&from_b));
    assert_eq!(all.len(), 1_500, "no record twice");
    assert!(
        all.is_disjoint(&ids(&before)),
        "committed records read again"
    );

    // b commits; a leaves without committing: b reads exactly a's uncommitted records again.
    b.commit(&ends(&from_b)).await.expect("commit b");
    a.close().await;
    let again = read_exactly(&mut b, from_a.len()).await;
    assert_eq!(ids(&again), ids(&from_a));
    b.close().await;
}
