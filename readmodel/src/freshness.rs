//! How fresh the read model is: the watermark every store keeps ([`Freshness`]) and the
//! report the ingest API serves and every analytics answer carries ([`FreshnessReport`]).

use serde::{Deserialize, Serialize};

/// How fresh the read model is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Freshness {
    /// The newest `occurred_at` of any event in the read model (ms since the Unix epoch).
    pub as_of_ms: Option<i64>,
    /// When the newest data became visible to queries (ms since the Unix epoch).
    pub visible_at_ms: Option<i64>,
}

/// How fresh the live read model is: what every analytics answer carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FreshnessReport {
    pub generation: u32,
    /// Newest event time in the read model (RFC 3339), `null` while it is empty.
    pub as_of: Option<String>,
    pub as_of_ms: Option<i64>,
    /// When that event became visible to queries.
    pub visible_at_ms: Option<i64>,
    /// How far the read model trails the shop: when it has applied everything on the bus,
    /// the delay with which its newest event became visible; otherwise the age of its newest
    /// event (it is at least that far behind).
    pub lag_ms: Option<i64>,
    /// Events on the bus not applied yet (`null` until first measured).
    pub lag_events: Option<u64>,
    /// Grows with every change of the generation's data: two answers with the same
    /// generation and data version were computed from the same data. Absent where the
    /// reader cannot tell (the ingest API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_version: Option<u64>,
}

impl FreshnessReport {
    pub fn new(
        generation: u32,
        f: Freshness,
        lag_events: Option<u64>,
        now_ms: i64,
    ) -> FreshnessReport {
        let lag_ms = f.as_of_ms.map(|as_of| match (lag_events, f.visible_at_ms) {
            (Some(0), Some(visible)) => (visible - as_of).max(0),
            _ => (now_ms - as_of).max(0),
        });
        FreshnessReport {
            generation,
            as_of: f.as_of_ms.and_then(|ms| {
                chrono::DateTime::from_timestamp_millis(ms)
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            }),
            as_of_ms: f.as_of_ms,
            visible_at_ms: f.visible_at_ms,
            lag_ms,
            lag_events,
            data_version: None,
        }
    }

    /// The report with the data version its reader saw.
    pub fn with_data_version(mut self, version: u64) -> FreshnessReport {
        self.data_version = Some(version);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_is_the_visibility_delay_when_caught_up_and_the_age_otherwise() {
        let f = Freshness {
            as_of_ms: Some(1_000),
            visible_at_ms: Some(1_300),
        };
        assert_eq!(FreshnessReport::new(1, f, Some(0), 9_000).lag_ms, Some(300));
        assert_eq!(
            FreshnessReport::new(1, f, Some(5), 9_000).lag_ms,
            Some(8_000)
        );
        assert_eq!(
            FreshnessReport::new(1, Freshness::default(), Some(0), 9_000).lag_ms,
            None
        );
        assert_eq!(
            FreshnessReport::new(1, f, None, 9_000).as_of.as_deref(),
            Some("1970-01-01T00:00:01.000Z")
        );
    }
}
