//! The ingest process's HTTP API: status and freshness (the analytics server reads these),
//! dead letters, and the blue/green rebuild, and the OpenAPI document describing them
//! (`/openapi.json`). `/health` and `/metrics` come from the kit.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use shoplens_kit::access::{Access, Endpoints, get, post, rules};
use shoplens_kit::http::ApiError;
use shoplens_kit::utoipa::{self, IntoParams, OpenApi};
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
        .with(get("/openapi.json", Access::Public, openapi))
}

/// The API's OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "ShopLens ingest API",
        version = "1",
        description = "The ingest worker's status, freshness, dead letters and blue/green \
            rebuild. Status and freshness are open; the rest takes an admin's bearer token."
    ),
    paths(status, freshness, dead_letters, rebuild_status, start_rebuild)
)]
pub struct ApiDoc;

/// `/openapi.json`: the document (served here, beside the routes it describes).
async fn openapi() -> Response {
    Json(ApiDoc::openapi()).into_response()
}

/// The rules of the API's endpoints, for the access tests.
pub fn rules() -> Vec<shoplens_kit::access::Rule> {
    endpoints().rules()
}

/// The worker's state: live generation, positions, lag, a rebuild in progress.
#[utoipa::path(get, path = "/api/v1/status", responses((status = 200, description = "Status")))]
async fn status(State(ingest): State<Ingest>) -> Response {
    Json(ingest.status()).into_response()
}

/// How fresh the live read model is (`as_of`, `visible_at`, the bus lag).
#[utoipa::path(get, path = "/api/v1/freshness",
    responses((status = 200, description = "The freshness report")))]
async fn freshness(State(ingest): State<Ingest>) -> Json<FreshnessReport> {
    let status = ingest.status();
    Json(FreshnessReport::new(
        status.live_generation,
        status.live.freshness,
        status.live.lag_events,
        chrono::Utc::now().timestamp_millis(),
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct DeadLetterQuery {
    /// How many dead letters to return, 1 to 1,000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
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

/// The live generation's dead letters (whole events, personal data included).
#[utoipa::path(get, path = "/api/v1/dead-letters", params(DeadLetterQuery),
    responses((status = 200, description = "`generation`, `total` and the first `limit` items"),
        (status = 401), (status = 403), (status = 422)))]
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

/// The latest rebuild's progress.
#[utoipa::path(get, path = "/api/v1/rebuild",
    responses((status = 200, description = "The rebuild's status"), (status = 401),
        (status = 403), (status = 404, description = "No rebuild has run")))]
async fn rebuild_status(State(ingest): State<Ingest>) -> Result<Response, ApiError> {
    match ingest.status().rebuild {
        Some(r) => Ok(Json(r).into_response()),
        None => Err(ApiError::not_found("rebuild", "latest")),
    }
}

/// Starts a blue/green rebuild of the read model (no body).
#[utoipa::path(post, path = "/api/v1/rebuild",
    responses((status = 202, description = "Started; the rebuild's status"), (status = 401),
        (status = 403), (status = 409, description = "A rebuild is already running"),
        (status = 503)))]
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
