//! Real servers for the tests: the shared ClickHouse and Kafka broker the test script
//! starts (found through environment variables). A private ClickHouse a test can stop and
//! restart is `shoplens_test_support::clickhouse::LocalClickHouse`.

use shoplens_bus::KafkaConfig;
use shoplens_readmodel::config::ClickHouseConfig;

/// The shared ClickHouse server. Panics when the test script did not start one, so a run
/// without it fails instead of silently skipping.
pub fn clickhouse_url() -> String {
    std::env::var("SHOPLENS_TEST_CLICKHOUSE_URL").unwrap_or_else(|_| {
        panic!(
            "SHOPLENS_TEST_CLICKHOUSE_URL is not set: run the tests through ./scripts/test.sh, \
             which starts ClickHouse"
        )
    })
}

/// A unique name for this test's databases, topics and groups.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

pub fn clickhouse_config(url: &str, database: &str) -> ClickHouseConfig {
    ClickHouseConfig {
        url: url.to_owned(),
        database: database.to_owned(),
        request_timeout_ms: 5_000,
        ..Default::default()
    }
}

/// Kafka settings for tests: the shared broker, quick group joins.
pub fn kafka_config() -> KafkaConfig {
    KafkaConfig {
        brokers: shoplens_test_support::kafka::test_brokers(),
        session_timeout_ms: 6_000,
        ..Default::default()
    }
}
