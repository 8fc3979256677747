//! The ingest process's HTTP API: status and freshness (the analytics server reads these),
//! dead letters, and the blue/green rebuild. `/health` and `/metrics` come from the kit.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use shoplens_kit::access::{Access, Endpoints, get, post, rules};
use shoplens_kit::http::ApiError;

use crate::sink::Freshness;
use crate::supervisor::{Ingest, IngestError};

/// The API's endpoints. Status and freshness stay open: health checks and dashboards read
/// them, and they hold counts and timestamps only. Dead letters (whole events, personal
/// data included) and rebuilds are for administrators.
pub fn endpoints() -> Endpoints<Ingest> {
    Endpoints::new()
        .with(get("/api/v1/status", Access::Public, status))
        .with(get("/api/v1/freshness", Access::Public, freshness))
        .with(get("/api/v1/dead-letters", rules::ADMINS, dead_letters))
        .with(get("/api/v1/rebuild", rules::ADMINS, rebuild_status))
        .with(post("/api/v1/rebuild", rules::ADMINS, start_rebuild))
}

/// The rules of the API's endpoints, for the access tests.
pub fn rules() -> Vec<shoplens_kit::access::Rule> {
    endpoints().rules()
}

async fn status(State(ingest): State<Ingest>) -> Response {
    Json(ingest.status()).into_response()
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
        }
    }
}

async fn freshness(State(ingest): State<Ingest>) -> Json<FreshnessReport> {
    let status = ingest.status();
    Json(FreshnessReport::new(
        status.live_generation,
        status.live.freshness,
        status.live.lag_events,
        chrono::Utc::now().timestamp_millis(),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeadLetterQuery {
    limit: Option<usize>,
}

#[derive(Debug, Serialize)]
struct DeadLetterView {
    topic: String,
    partition: i32,
    offset: u64,
    key: String,
    event_id: Option<String>,
    event_type: Option<String>,
    reason_kind: String,
    reason: String,
    /// The record's bytes, as text where they are UTF-8.
    payload: String,
    received_at_ms: i64,
}

const MAX_DEAD_LETTERS: usize = 1_000;

async fn dead_letters(
    State(ingest): State<Ingest>,
    query: Result<Query<DeadLetterQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::invalid("limit", e.body_text()))?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=MAX_DEAD_LETTERS).contains(&limit) {
        return Err(ApiError::invalid(
            "limit",
            format!("must be between 1 and {MAX_DEAD_LETTERS}"),
        ));
    }
    let (generation, sink) = ingest.live();
    let all = sink.dead_letters().await.map_err(internal)?;
    let total = all.len();
    let items: Vec<DeadLetterView> = all
        .into_iter()
        .take(limit)
        .map(|d| DeadLetterView {
            topic: d.topic,
            partition: d.partition,
            offset: d.offset,
            key: d.key,
            event_id: d.event_id,
            event_type: d.event_type,
            reason_kind: d.reason_kind,
            reason: d.reason,
            payload: String::from_utf8_lossy(&d.payload).into_owned(),
            received_at_ms: d.received_at_ms,
        })
        .collect();
    Ok(Json(serde_json::json!({
        "generation": generation,
        "total": total,
        "items": items,
    })))
}

async fn rebuild_status(State(ingest): State<Ingest>) -> Result<Response, ApiError> {
    match ingest.status().rebuild {
        Some(r) => Ok(Json(r).into_response()),
        None => Err(ApiError::not_found("rebuild", "latest")),
    }
}

async fn start_rebuild(State(ingest): State<Ingest>) -> Result<Response, ApiError> {
    match ingest.start_rebuild().await {
        Ok(status) => Ok((StatusCode::ACCEPTED, Json(status)).into_response()),
        Err(IngestError::RebuildRunning(g)) => Err(ApiError::conflict(
            "rebuild_running",
            format!("a rebuild is already running (generation {g})"),
        )),
        Err(e) => Err(ApiError::Unavailable {
            code: "read_model_unavailable",
            message: e.to_string(),
        }),
    }
}

fn internal(e: impl std::error::Error + Send + Sync + 'static) -> ApiError {
    ApiError::Internal(anyhow::Error::new(e))
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
