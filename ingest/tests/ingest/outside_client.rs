//! Interoperability with an outside Kafka client (Python confluent-kafka, its own
//! librdkafka): a producer in another language feeds the read model, and what ShopLens
//! publishes is read, and partitioned, the way other clients expect.

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use shoplens_bus::{BusRecord, EventBus, KafkaBus, ensure_topics};
use shoplens_ingest::startup::{IngestConfig, kafka_sources, start};
use shoplens_test_support::events::{StreamSpec, shop_events, to_record};

use crate::servers::*;
use crate::support::*;

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/ingest/outside_client.py"
);

/// Runs the Python client and returns its JSON answer.
fn python(args: &[&str]) -> serde_json::Value {
    let out = Command::new("python3")
        .arg(SCRIPT)
        .args(args)
        .output()
        .expect("python3 runs (scripts/test.sh installs confluent-kafka)");
    assert!(
        out.status.success(),
        "outside client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the outside client prints JSON")
}

/// Records as JSON lines for the Python producer.
fn lines_file(records: &[BusRecord]) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    for r in records {
        let line = serde_json::json!({
            "topic": r.topic,
            "key": r.key,
            "payload": String::from_utf8(r.payload.to_vec()).unwrap(),
        });
        writeln!(file, "{line}").unwrap();
    }
    file.flush().unwrap();
    file
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_from_a_producer_in_another_language_reach_the_read_model() {
    let prefix = format!("{}.", unique("outside"));
    let topics: Vec<String> = TOPICS.iter().map(|t| format!("{prefix}{t}")).collect();
    let kafka = kafka_config();
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    ensure_topics(&kafka, &names).await.unwrap();
    let events = shop_events(&StreamSpec {
        seed: 21,
        orders: 150,
        ..Default::default()
    });
    let records: Vec<BusRecord> = events.iter().map(to_record).collect();
    let file = lines_file(&records);
    let produced = python(&[
        "produce",
        &kafka.brokers,
        &prefix,
        file.path().to_str().unwrap(),
    ]);
    assert_eq!(produced["produced"], records.len());

    let mut config = IngestConfig {
        listen: ([127, 0, 0, 1], 0).into(),
        group: unique("g"),
        ..Default::default()
    };
    config.worker.batch_max_delay_ms = 20;
    let dir = tempfile::tempdir().unwrap();
    let handle = start(
        &config,
        embedded_store(dir.path()),
        kafka_sources(kafka.clone(), topics),
    )
    .await
    .unwrap();
    let start_wait = Instant::now();
    while handle.ingest().status().live.applied_offsets() < records.len() as u64 {
        assert!(
            start_wait.elapsed() < Duration::from_secs(60),
            "{:?}",
            handle.ingest().status()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, sink) = handle.ingest().live();
    assert_read_model(&sink, &events).await;
    handle.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outside_consumer_reads_what_shoplens_publishes_in_the_same_partitions() {
    let ours = unique("ours");
    let theirs = unique("theirs");
    let kafka = kafka_config();
    let bus = KafkaBus::connect(&kafka, &[&ours, &theirs]).await.unwrap();
    let keys: Vec<String> = (0..60).map(|i| format!("order-{i}")).collect();
    let record = |topic: &str, key: &String| BusRecord {
        topic: topic.to_owned(),
        key: key.clone(),
        payload: format!("{{\"key\":\"{key}\"}}").into_bytes().into(),
    };
    let published: Vec<BusRecord> = keys.iter().map(|k| record(&ours, k)).collect();
    bus.publish(&published).await.unwrap();
    // The outside client publishes the same keys with the Java client's partitioner.
    let file = lines_file(&keys.iter().map(|k| record(&theirs, k)).collect::<Vec<_>>());
    python(&["produce", &kafka.brokers, "", file.path().to_str().unwrap()]);

    let n = keys.len().to_string();
    let read_ours = python(&["consume", &kafka.brokers, &ours, &n]);
    let read_theirs = python(&["consume", &kafka.brokers, &theirs, &n]);
    assert_eq!(read_ours["count"], keys.len());
    assert_eq!(read_theirs["count"], keys.len());
    // Both producers put every key in the same partition: any Kafka client agrees with
    // ShopLens on where an aggregate's events are (and so on their order).
    assert_eq!(read_ours["partitions"], read_theirs["partitions"]);
    let used: std::collections::HashSet<u64> = read_ours["partitions"]
        .as_object()
        .unwrap()
        .values()
        .map(|p| p.as_u64().unwrap())
        .collect();
    assert!(used.len() > 1, "keys spread over partitions: {used:?}");
}
