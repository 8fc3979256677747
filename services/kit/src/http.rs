//! HTTP plumbing every server shares: the JSON error, validated extractors, and the
//! standard middleware stack and endpoints.

use crate::access::{self, Access, Endpoints, Routes, Rule, rules};
use crate::identity::Verifier;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{FromRequest, FromRequestParts, MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header, request::Parts};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

use crate::config::HttpConfig;
use crate::metrics::{HttpLabels, Metrics, RouteLabels};

/// The error every endpoint returns: a status code and a JSON body
/// `{"error": "...", "code": "...", "field": "..."}` (`field` only when one field is at fault).
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed (bad JSON, unknown field, wrong type): 400.
    #[error("{message}")]
    BadRequest {
        code: &'static str,
        message: String,
        field: Option<String>,
    },
    /// The request is well formed but a value is not acceptable: 422.
    #[error("invalid `{field}`: {message}")]
    Invalid { field: String, message: String },
    #[error("{what} `{id}` not found")]
    NotFound { what: &'static str, id: String },
    /// The request conflicts with the current state (illegal transition, reused key): 409.
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("request body is larger than the {limit}-byte limit")]
    PayloadTooLarge { limit: usize },
    /// A service this one depends on cannot answer: 503.
    #[error("{message}")]
    Unavailable { code: &'static str, message: String },
    /// Anything unexpected: 500, logged once, details not shown to the client.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: String,
    code: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

impl ApiError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn not_found(what: &'static str, id: impl Into<String>) -> ApiError {
        ApiError::NotFound {
            what,
            id: id.into(),
        }
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::Conflict {
            code,
            message: message.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest { code, .. } => code,
            ApiError::Invalid { .. } => "invalid_field",
            ApiError::NotFound { .. } => "not_found",
            ApiError::Conflict { code, .. } => code,
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::Unavailable { code, .. } => code,
            ApiError::Internal(_) => "internal",
        }
    }

    fn field(&self) -> Option<&str> {
        match self {
            ApiError::BadRequest { field, .. } => field.as_deref(),
            ApiError::Invalid { field, .. } => Some(field),
            _ => None,
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        ApiError::Internal(anyhow::Error::new(e).context("database error"))
    }
}

impl From<shoplens_contract::InvalidField> for ApiError {
    fn from(e: shoplens_contract::InvalidField) -> Self {
        ApiError::invalid(e.field, e.reason)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = match &self {
            ApiError::Internal(e) => {
                tracing::error!(error = ?e, "internal error");
                "internal error".to_owned()
            }
            other => other.to_string(),
        };
        let body = ErrorBody {
            error: message,
            code: self.code(),
            field: self.field(),
        };
        (self.status(), Json(body)).into_response()
    }
}

/// A JSON body, deserialized strictly: a wrong content type, malformed JSON, a missing,
/// unknown or mistyped field each give a 400 naming the field; an oversize body a 413.
pub struct ValidJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ValidJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        if !is_json {
            return Err(ApiError::BadRequest {
                code: "unsupported_media_type",
                message: "expected `Content-Type: application/json`".into(),
                field: None,
            });
        }
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| match e.status() {
                StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge {
                    limit: body_limit_hint(&e.body_text()),
                },
                _ => ApiError::BadRequest {
                    code: "bad_body",
                    message: e.body_text(),
                    field: None,
                },
            })?;
        let de = &mut serde_json::Deserializer::from_slice(&bytes);
        match serde_path_to_error::deserialize(de) {
            Ok(v) => Ok(ValidJson(v)),
            Err(err) => {
                let path = err.path().to_string();
                let inner = err.into_inner();
                let (code, field) = if inner.is_syntax() || inner.is_eof() {
                    ("malformed_json", None)
                } else {
                    ("invalid_body", Some(field_name(&path, &inner.to_string())))
                };
                Err(ApiError::BadRequest {
                    code,
                    message: format!("invalid JSON body: {inner}"),
                    field,
                })
            }
        }
    }
}

fn body_limit_hint(text: &str) -> usize {
    text.split(|c: char| !c.is_ascii_digit())
        .find_map(|n| n.parse().ok())
        .unwrap_or(0)
}

/// serde_path_to_error's path ends at the unknown field itself, but at the parent of a
/// missing one (whose name is only in the message); return the full path either way.
fn field_name(path: &str, message: &str) -> String {
    let missing = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next());
    match (path, missing) {
        (".", Some(f)) => f.to_owned(),
        (p, Some(f)) => format!("{p}.{f}"),
        (p, None) => p.to_owned(),
    }
}

/// Query parameters, deserialized strictly, with a 400 naming the parameter on error.
pub struct ValidQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ValidQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(ValidQuery)
            .map_err(|err| {
                let path = err.path().to_string();
                let inner = err.into_inner().to_string();
                // `?=x` has a parameter without a name: blame the query string itself.
                let field = Some(field_name(&path, &inner))
                    .filter(|f| !f.is_empty() && f != ".")
                    .unwrap_or_else(|| "query".to_owned());
                ApiError::BadRequest {
                    code: "invalid_query",
                    field: Some(field),
                    message: format!("invalid query string: {inner}"),
                }
            })
    }
}

/// The standard endpoints every server has: `/health` (open, for health checks),
/// `/metrics` (Prometheus; monitors and admins) and, when the server has one, its OpenAPI
/// document `/openapi.json` (open).
fn standard_endpoints(openapi: Option<serde_json::Value>) -> Endpoints<Arc<Metrics>> {
    let with_document = openapi.is_some();
    let openapi = Arc::new(openapi);
    let endpoints = Endpoints::new()
        .with(access::get("/health", Access::Public, || async {
            Json(serde_json::json!({"status": "ok"}))
        }))
        .with(access::get(
            "/metrics",
            rules::MONITORS,
            |State(m): State<Arc<Metrics>>| async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("text/plain; version=0.0.4"),
                    )],
                    m.encode(),
                )
            },
        ));
    if !with_document {
        return endpoints;
    }
    endpoints.with(access::get("/openapi.json", Access::Public, move || {
        let openapi = openapi.clone();
        async move {
            match openapi.as_ref() {
                Some(doc) => Json(doc.clone()).into_response(),
                None => ApiError::not_found("document", "openapi.json").into_response(),
            }
        }
    }))
}

/// The rules of the standard endpoints of a server with (`openapi`) or without an OpenAPI
/// document, for the access tests.
pub fn standard_rules(openapi: bool) -> Vec<Rule> {
    standard_endpoints(openapi.then(|| serde_json::json!({}))).rules()
}

/// Adds the standard endpoints and middleware to a server's routes (built from its
/// [`Endpoints`], so every route has an access rule): `/health`, `/metrics`,
/// `/openapi.json`, a JSON 404, panics caught as 500s, a body limit, a request timeout, a
/// concurrency limit, a tracing span and metrics per request.
pub fn standard_router(
    routes: Routes,
    openapi: Option<serde_json::Value>,
    metrics: Arc<Metrics>,
    config: &HttpConfig,
    verifier: &Verifier,
) -> Router {
    let standard = standard_endpoints(openapi).with_state(metrics.clone(), verifier);
    let router = routes
        .router
        .merge(standard.router)
        .fallback(|uri: axum::http::Uri| async move {
            ApiError::not_found("route", uri.path().to_owned())
        });
    apply_layers(router, metrics, config)
}

/// The middleware part of [`standard_router`], for servers with their own endpoints.
pub fn apply_layers(router: Router, metrics: Arc<Metrics>, config: &HttpConfig) -> Router {
    router
        // By `Content-Length`, before any handler: also endpoints that take no body (which
        // `DefaultBodyLimit`, applied only by body extractors, leaves alone) answer 413.
        .layer(tower_http::limit::RequestBodyLimitLayer::new(
            config.body_limit_bytes,
        ))
        .layer(axum::middleware::from_fn_with_state(
            config.body_limit_bytes,
            json_errors,
        ))
        .layer(axum::middleware::from_fn_with_state(
            metrics,
            record_metrics,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(
            config.body_limit_bytes,
        ))
        // Global: `Router::layer` gives every route its own copy of a layer, and a plain
        // `ConcurrencyLimitLayer` would then limit each route separately.
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            config.concurrency_limit,
        ))
        .layer(axum::middleware::from_fn_with_state(
            Duration::from_millis(config.request_timeout_ms),
            request_timeout,
        ))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::Internal(anyhow::anyhow!("handler panicked")).into_response()
        }))
        .layer(TraceLayer::new_for_http())
}

/// Turns the plain-text rejections of axum's own extractors (`Bytes`, `String`, a wrong
/// method, an oversize body) into the JSON error every endpoint promises; JSON errors and
/// successful responses pass through untouched.
async fn json_errors(State(limit): State<usize>, req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let error = match status {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge { limit }.to_string(),
        _ if text.is_empty() => status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_owned(),
        _ => text,
    };
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => "bad_body",
        s if s.is_server_error() => "internal",
        _ => "bad_request",
    };
    let body = serde_json::to_vec(&ErrorBody {
        error,
        code,
        field: None,
    })
    .unwrap_or_default();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, axum::body::Body::from(body))
}

async fn request_timeout(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => ApiError::Unavailable {
            code: "timeout",
            message: format!("request took longer than {} ms", limit.as_millis()),
        }
        .into_response(),
    }
}

async fn record_metrics(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().to_string();
    let start = Instant::now();
    let resp = next.run(req).await;
    metrics
        .http_duration
        .get_or_create(&RouteLabels {
            route: route.clone(),
        })
        .observe(start.elapsed().as_secs_f64());
    metrics
        .http_requests
        .get_or_create(&HttpLabels {
            method,
            route,
            status: resp.status().as_u16(),
        })
        .inc();
    resp
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then drains in-flight requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    // Without TCP_NODELAY a response written in two pieces (a streamed body's last chunk
    // after its data) waits for the client's delayed ACK: 40 ms on Linux.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY on a connection");
        }
    });
    // The peer's address is a request extension (`ConnectInfo`), for servers that limit
    // work per client.
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(async move { shutdown.cancelled().await })
    .await
}

/// Parses an entity id (a UUID, as every service issues them), naming the field on error.
pub fn parse_id(field: &str, value: &str) -> Result<uuid::Uuid, ApiError> {
    uuid::Uuid::try_parse(value).map_err(|_| ApiError::BadRequest {
        code: "invalid_id",
        message: format!(
            "`{field}` must be a UUID, got `{}`",
            value.chars().take(64).collect::<String>()
        ),
        field: Some(field.to_owned()),
    })
}

/// Parses a comma-separated list of ids (`?ids=a,b,c`), at most `max` of them, without
/// duplicates.
pub fn parse_id_list(field: &str, value: &str, max: usize) -> Result<Vec<uuid::Uuid>, ApiError> {
    let mut ids = Vec::new();
    for part in value.split(',').filter(|p| !p.is_empty()) {
        let id = parse_id(field, part)?;
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    if ids.is_empty() {
        return Err(ApiError::invalid(field, "must list at least one id"));
    }
    if ids.len() > max {
        return Err(ApiError::invalid(
            field,
            format!("at most {max} ids per request"),
        ));
    }
    Ok(ids)
}

/// The ids a look-up asks for through exactly one of two query parameters: one id
/// (`order_id=a`) or a comma-separated list (`order_ids=a,b`, at most `max`). Each parameter
/// is `(name, value)`; errors name the parameter at fault.
pub fn one_or_many_ids(
    one: (&str, Option<&str>),
    many: (&str, Option<&str>),
    max: usize,
) -> Result<Vec<String>, ApiError> {
    let query_error = |field: &str, message: String| ApiError::BadRequest {
        code: "invalid_query",
        message,
        field: Some(field.to_owned()),
    };
    let ids = match (one.1, many.1) {
        (Some(id), None) => vec![parse_id(one.0, id)?],
        (None, Some(ids)) => parse_id_list(many.0, ids, max)?,
        (None, None) => {
            return Err(query_error(
                one.0,
                format!("missing query parameter `{}` (or `{}`)", one.0, many.0),
            ));
        }
        (Some(_), Some(_)) => {
            return Err(query_error(
                many.0,
                format!("give either `{}` or `{}`, not both", one.0, many.0),
            ));
        }
    };
    Ok(ids.iter().map(|id| id.to_string()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_missing_and_unknown_fields() {
        assert_eq!(field_name(".", "missing field `name`"), "name");
        assert_eq!(
            field_name("lines[0].qty", "unknown field `qty`, expected one of"),
            "lines[0].qty"
        );
        assert_eq!(
            field_name("lines[0]", "missing field `quantity`"),
            "lines[0].quantity"
        );
        assert_eq!(
            field_name("lines[0].quantity", "invalid type: string"),
            "lines[0].quantity"
        );
    }

    mod props {
        use axum::body::Body;
        use proptest::prelude::*;
        use tower::ServiceExt;

        use super::super::*;

        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Line {
            sku: String,
            quantity: u32,
        }

        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Query {
            limit: Option<u32>,
            since: Option<chrono::NaiveDate>,
        }

        /// A server with one strict JSON and query endpoint behind the standard middleware.
        fn app() -> Router {
            let verifier = crate::identity::Verifier::new(&Default::default());
            let routes = crate::access::Endpoints::new()
                .with(crate::access::post(
                    "/lines",
                    crate::access::Access::Public,
                    |ValidQuery(_): ValidQuery<Query>, ValidJson(_): ValidJson<Vec<Line>>| async {
                        "ok"
                    },
                ))
                .with_state((), &verifier);
            let config = HttpConfig {
                body_limit_bytes: 256,
                ..HttpConfig::default()
            };
            standard_router(routes, None, Metrics::new(), &config, &verifier)
        }

        /// The status and JSON body of one request (panics if an error is not JSON).
        fn send(query: &str, body: Vec<u8>) -> (StatusCode, serde_json::Value) {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let uri = format!(
                    "/lines?{}",
                    form_urlencoded::byte_serialize(query.as_bytes())
                        .collect::<String>()
                        .replace("%3D", "=")
                        .replace("%26", "&")
                );
                let req = Request::post(uri)
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Body::from(body))
                    .unwrap();
                let resp = app().oneshot(req).await.unwrap();
                let status = resp.status();
                let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
                    .await
                    .unwrap();
                let json = if status.is_success() {
                    serde_json::Value::Null
                } else {
                    serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                        panic!(
                            "{status}: not JSON ({e}): {}",
                            String::from_utf8_lossy(&bytes)
                        )
                    })
                };
                (status, json)
            })
        }

        fn assert_clear_error(status: StatusCode, body: &serde_json::Value) {
            assert!(status.is_client_error(), "{status} {body}");
            assert!(
                body["error"].as_str().is_some_and(|e| !e.is_empty()),
                "{body}"
            );
            let code = body["code"].as_str().unwrap();
            if matches!(code, "invalid_body" | "invalid_query") {
                assert!(
                    body["field"].as_str().is_some_and(|f| !f.is_empty()),
                    "{body}"
                );
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(128))]

            #[test]
            fn arbitrary_bodies_get_a_clear_4xx(body in proptest::collection::vec(any::<u8>(), 0..400)) {
                let (status, json) = send("", body);
                if !status.is_success() {
                    assert_clear_error(status, &json);
                }
            }

            #[test]
            fn mistyped_fields_are_named(sku in "\\PC{0,12}", quantity in "\\PC{0,12}") {
                let body = serde_json::to_vec(&serde_json::json!([{"sku": sku, "quantity": quantity}])).unwrap();
                let (status, json) = send("", body);
                prop_assert_eq!(status, StatusCode::BAD_REQUEST);
                assert_clear_error(status, &json);
                prop_assert_eq!(json["field"].as_str(), Some("[0].quantity"));
            }

            #[test]
            fn arbitrary_query_strings_get_a_clear_4xx(key in "(limit|since|other|\\PC{0,6})", value in "\\PC{0,20}") {
                let (status, json) = send(&format!("{key}={value}"), b"[]".to_vec());
                if !status.is_success() {
                    assert_clear_error(status, &json);
                    prop_assert_eq!(json["code"].as_str(), Some("invalid_query"));
                }
            }
        }

        #[test]
        fn oversize_and_wrong_method_are_json_too() {
            let (status, json) = send("", vec![b' '; 1_000]);
            assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{json}");
            assert_eq!(json["code"], "payload_too_large");
            let (status, json) = send("limit=x", b"[]".to_vec());
            assert_eq!(status, StatusCode::BAD_REQUEST);
            assert_eq!(json["field"], "limit");
        }
    }
}
