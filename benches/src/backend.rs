//! The read-model back ends (and their buses) a scenario runs on.

use serde::{Deserialize, Serialize};

/// Which read model, fed through which bus.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// Embedded log -> worker -> embedded Parquet store.
    Embedded,
    /// tansu Kafka broker -> worker -> ClickHouse.
    Clickhouse,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Embedded => "embedded",
            Backend::Clickhouse => "clickhouse",
        }
    }

    /// The `--backend` value that selects `backends`.
    pub fn flag(backends: &[Backend]) -> &'static str {
        match backends {
            [b] => b.name(),
            _ => "both",
        }
    }
}
