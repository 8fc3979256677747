//! The Kafka-protocol broker the test suite runs on 127.0.0.1 (started by `scripts/test.sh`).

/// The test broker's bootstrap address, from `SHOPLENS_TEST_KAFKA_BROKERS`; panics with how to
/// get one when it is not set.
pub fn test_brokers() -> String {
    std::env::var("SHOPLENS_TEST_KAFKA_BROKERS").unwrap_or_else(|_| {
        panic!(
            "SHOPLENS_TEST_KAFKA_BROKERS is not set: run the tests through ./scripts/test.sh, \
             which starts a broker"
        )
    })
}
