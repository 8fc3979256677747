//! Helpers for tests that start real services: a temporary directory with a real embedded
//! event log, a config pointing at a fresh database in it, and a reader of published events.

use std::sync::Arc;
use std::time::Duration;

use shoplens_bus::{EmbeddedLog, EmbeddedLogConfig, EventSource};
use shoplens_contract::Envelope;

use crate::config::ServiceConfig;

/// A scratch directory holding an embedded log and service databases; removed on drop.
pub struct TestEnv {
    pub dir: tempfile::TempDir,
    pub log: EmbeddedLog,
}

impl TestEnv {
    pub fn new() -> TestEnv {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = EmbeddedLog::open(EmbeddedLogConfig {
            dir: dir.path().join("log"),
            fsync: false,
        })
        .expect("open embedded log");
        TestEnv { dir, log }
    }

    pub fn bus(&self) -> Arc<dyn shoplens_bus::EventBus> {
        Arc::new(self.log.clone())
    }

    /// A config on port 0 with its own database file `NAME.db`.
    pub fn service_config(&self, name: &str) -> ServiceConfig {
        ServiceConfig {
            database_url: format!(
                "sqlite://{}",
                self.dir.path().join(format!("{name}.db")).display()
            ),
            relay: crate::config::RelayConfig {
                poll_interval_ms: 20,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// Every event on `topic` so far, decoded (waits until at least `at_least` arrived, up to
    /// 10 s, then returns what there is).
    pub async fn events(&self, topic: &str, at_least: usize) -> Vec<Envelope> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let group = format!("test-{}", uuid::Uuid::now_v7());
            let mut consumer = self.log.consumer(&group, &[topic]).expect("consumer");
            let mut out = Vec::new();
            loop {
                let batch = consumer.poll(10_000, Duration::ZERO).await.expect("poll");
                if batch.is_empty() {
                    break;
                }
                out.extend(
                    batch
                        .iter()
                        .map(|r| Envelope::decode(&r.payload).expect("valid event")),
                );
            }
            if out.len() >= at_least || tokio::time::Instant::now() > deadline {
                return out;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Default for TestEnv {
    fn default() -> Self {
        TestEnv::new()
    }
}
