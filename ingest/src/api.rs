//! The ingest process's HTTP API: status and freshness (the analytics server reads these),
//! dead letters, and the blue/green rebuild. `/health` and `/metrics` come from the kit.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use shoplens_kit::access::{Access, Endpoints, get, post, rules};
use shoplens_kit::http::ApiError;
use shoplens_readmodel::freshness::FreshnessReport;

use crate::IngestError;
use crate::supervisor::Ingest;

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
