//! The analytics HTTP API: the dashboard page and its JSON views, `POST /api/v1/sql`, the
//! table catalogue, and report exports, and the OpenAPI document describing them
//! (`/openapi.json`). `/health` and `/metrics` come from the kit.

use std::time::Instant;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use shoplens_kit::access::{
    Access, Caller as KitCaller, Endpoints, SESSION_COOKIE, get, post, rules,
};
use shoplens_kit::http::{ApiError, ValidQuery};
use shoplens_kit::identity::{AuthConfig, Identity, Role};
use shoplens_kit::utoipa::{self, OpenApi, ToSchema};
use shoplens_readmodel::freshness::FreshnessReport;

use crate::AnalyticsError;
use crate::audit::Audit;
use crate::dashboard::{self, BadParam, Dashboard, DateRange};
use crate::engine::{Engine, Pii};
use crate::export::{self, ExportFormat, REPORTS};
use crate::isolation::{Executor, Job, Output, SessionKind};
use crate::metrics::AnalyticsMetrics;
use crate::read_model::Table;
use crate::reconcile::{ReconcileReport, Reconciler};
use crate::users::Users;

#[derive(Clone)]
pub struct AppState {
    /// Runs ad-hoc SQL and exports (in query workers).
    pub executor: Executor,
    /// Who may sign in to the dashboard page.
    pub users: Users,
    /// The key sessions are signed with, and how long they last.
    pub auth: AuthConfig,
    pub session_ttl: std::time::Duration,
    /// The dashboard's fixed queries (in this process).
    pub dashboard: Dashboard,
    pub refresh_ms: u64,
    pub metrics: AnalyticsMetrics,
    /// `None` when reconciliation is not configured.
    pub reconciler: Option<Reconciler>,
}

impl AppState {
    fn engine(&self) -> &Engine {
        self.dashboard.engine()
    }
}

/// Who may call what: the page and signing in are open (the page asks its user to sign in);
/// the dashboard's views are for viewers, SQL and exports for analysts, reconciliation for
/// admins. Personal data is masked for everyone but admins (`crate::privacy`).
pub fn endpoints() -> Endpoints<AppState> {
    Endpoints::new()
        .with(get("/", Access::Public, || async {
            Redirect::to("/dashboard")
        }))
        .with(get("/dashboard", Access::Public, page))
        .with(post("/login", Access::Public, login))
        .with(post("/logout", Access::Public, logout))
        .with(get("/api/v1/me", rules::VIEWERS, me))
        .with(get("/api/v1/freshness", rules::VIEWERS, freshness))
        .with(get("/api/v1/dashboard/daily", rules::VIEWERS, daily))
        .with(get(
            "/api/v1/dashboard/top-products",
            rules::VIEWERS,
            top_products,
        ))
        .with(get(
            "/api/v1/dashboard/top-customers",
            rules::VIEWERS,
            top_customers,
        ))
        .with(get("/api/v1/dashboard/trends", rules::VIEWERS, trends))
        .with(get("/api/v1/tables", rules::ANALYSTS, tables))
        .with(post("/api/v1/sql", rules::ANALYSTS, sql))
        .with(get("/api/v1/reports", rules::ANALYSTS, reports))
        .with(get("/api/v1/reports/{file}", rules::ANALYSTS, report_file))
        .with(post("/api/v1/export", rules::ANALYSTS, export_sql))
        .with(get("/api/v1/reconcile", rules::ADMINS, reconcile))
        .with(get("/openapi.json", Access::Public, openapi))
}

/// The API's OpenAPI document: its JSON endpoints with their parameters and the rules the
/// handlers check (the page, sign-in and sign-out are HTML and forms, left out).
#[derive(OpenApi)]
#[openapi(
    info(
        title = "ShopLens analytics",
        version = "1",
        description = "The sales dashboard's views, SQL, exports and reconciliation over the \
            read model. Every endpoint takes a bearer token (or the dashboard's session \
            cookie): viewers the views, analysts also SQL and exports, admins reconciliation. \
            `from`/`to` are days `YYYY-MM-DD`: `from` not after `to` (which defaults to the \
            newest data's day), the range at most 3,660 days, years 1970 to 9999."
    ),
    paths(
        me,
        freshness,
        daily,
        top_products,
        top_customers,
        trends,
        tables,
        sql,
        reports,
        report_file,
        export_sql,
        reconcile
    ),
    components(schemas(SqlRequest, ViewPeriod, SqlResultFormat, ReportFormat))
)]
pub struct ApiDoc;

/// `/openapi.json`: the document (served here, beside the routes it describes).
async fn openapi() -> Response {
    Json(ApiDoc::openapi()).into_response()
}

/// The JSON body of `POST /api/v1/sql` and `/api/v1/export` (a `text/plain` body is the SQL
/// itself).
#[derive(ToSchema)]
#[allow(dead_code)]
struct SqlRequest {
    /// One read-only statement (`SELECT`, `WITH`, `VALUES`, `EXPLAIN`); not blank.
    #[schema(
        min_length = 1,
        pattern = r"\S",
        example = "SELECT count(*) FROM orders"
    )]
    sql: String,
}

/// Trend periods.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
enum ViewPeriod {
    Month,
    Year,
}

/// The answer formats of `POST /api/v1/sql`.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
enum SqlResultFormat {
    Json,
    Csv,
    Arrow,
    Parquet,
}

/// The file formats of reports and exports.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
enum ReportFormat {
    Csv,
    Parquet,
}

/// The rules of the API's endpoints, for the access tests.
pub fn rules() -> Vec<shoplens_kit::access::Rule> {
    endpoints().rules()
}

#[derive(Deserialize)]
struct LoginForm {
    user: String,
    password: String,
}

/// `POST /login` (the page's form): a session cookie for a user whose password matches,
/// then back to the dashboard.
async fn login(State(state): State<AppState>, axum::Form(form): axum::Form<LoginForm>) -> Response {
    match state.users.sign_in(&form.user, &form.password) {
        Some(role) => {
            let identity = Identity::new(form.user.clone(), role);
            let token =
                shoplens_kit::identity::issue(&state.auth.secret, &identity, state.session_ttl);
            tracing::info!(user = %form.user, %role, "signed in to the dashboard");
            let cookie = format!(
                "{SESSION_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
                state.session_ttl.as_secs()
            );
            let mut resp = Redirect::to("/dashboard").into_response();
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                resp.headers_mut().insert(header::SET_COOKIE, v);
            }
            resp
        }
        None => {
            tracing::warn!(user = %form.user.chars().take(64).collect::<String>(), "dashboard sign-in failed");
            // A guess costs the guesser time, not the server (the sleep holds no thread).
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            Redirect::to("/dashboard?signin=failed").into_response()
        }
    }
}

/// `POST /logout`: the session cookie removed.
async fn logout() -> Response {
    let mut resp = Redirect::to("/dashboard").into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("shoplens_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
    );
    resp
}

/// `GET /api/v1/me`: who is signed in.
#[utoipa::path(get, path = "/api/v1/me", responses((status = 200, description = "The caller: subject and role"), (status = 401)))]
async fn me(KitCaller(who): KitCaller) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "user": who.subject,
        "role": who.role,
        "sees_personal_data": who.sees_personal_data(),
    }))
}

const PAGE: &str = include_str!("dashboard.html");

async fn page(State(state): State<AppState>) -> Html<String> {
    Html(PAGE.replace("__REFRESH_MS__", &state.refresh_ms.to_string()))
}

/// Who sent a request (verified by the endpoint's access rule): the name the per-user query
/// limits and the audit log count it under, and whether they may see personal data.
pub struct Caller {
    pub user: String,
    pub role: Role,
    pub pii: Pii,
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let KitCaller(who) = KitCaller::from_request_parts(parts, state).await?;
        Ok(Caller {
            user: who.subject.clone(),
            role: who.role,
            pii: if who.sees_personal_data() {
                Pii::Visible
            } else {
                Pii::Masked
            },
        })
    }
}

/// A query error as the API's JSON error, naming `field` where the caller's input is at
/// fault.
pub fn api_error(field: &str, e: AnalyticsError) -> ApiError {
    use crate::guard::GuardError;
    let bad = |code: &'static str, message: String| ApiError::BadRequest {
        code,
        message,
        field: Some(field.to_owned()),
    };
    let unavailable = |code: &'static str, message: String| ApiError::Unavailable { code, message };
    match e {
        AnalyticsError::Forbidden(m) => bad("forbidden_statement", m),
        AnalyticsError::Invalid { message, .. } => bad("invalid_sql", message),
        AnalyticsError::Limit(g @ GuardError::TooManyRows(_)) => {
            bad("too_many_rows", g.to_string())
        }
        AnalyticsError::Limit(g @ GuardError::Timeout(_)) => {
            unavailable("query_timeout", g.to_string())
        }
        AnalyticsError::Limit(g @ GuardError::CpuTime(_)) => {
            unavailable("query_cpu_limit", g.to_string())
        }
        AnalyticsError::Memory(m) => {
            bad("memory_limit", format!("query needs too much memory: {m}"))
        }
        AnalyticsError::Busy(m) => unavailable("too_busy", m),
        AnalyticsError::ReadModel(e) => unavailable("read_model_unavailable", e.to_string()),
        e @ AnalyticsError::Unavailable(_) => {
            unavailable("query_workers_unavailable", e.to_string())
        }
        e @ AnalyticsError::SourceOfTruth(_) => {
            unavailable("source_of_truth_unavailable", e.to_string())
        }
        e @ AnalyticsError::ReconcileNotConfigured => {
            unavailable("reconcile_not_configured", e.to_string())
        }
        AnalyticsError::Usage(m) => bad("invalid", m),
        AnalyticsError::Internal(m) => ApiError::Internal(anyhow::anyhow!(m)),
        // A server's start-up and a command's own failures never reach an HTTP answer.
        e @ (AnalyticsError::Output(_)
        | AnalyticsError::Remote(_)
        | AnalyticsError::Listen { .. }
        | AnalyticsError::Refused(_)) => ApiError::Internal(anyhow::anyhow!(e.to_string())),
    }
}

fn param_error(e: BadParam) -> ApiError {
    ApiError::invalid(e.field, e.message)
}

async fn current_freshness(state: &AppState) -> Result<FreshnessReport, ApiError> {
    state
        .engine()
        .freshness()
        .await
        .map_err(|e| api_error("freshness", e))
}

#[utoipa::path(get, path = "/api/v1/freshness", responses((status = 200, description = "How fresh the read model is"), (status = 401), (status = 403)))]
async fn freshness(State(state): State<AppState>) -> Result<Json<FreshnessReport>, ApiError> {
    Ok(Json(current_freshness(&state).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RangeQuery {
    from: Option<String>,
    to: Option<String>,
    days: Option<u32>,
    limit: Option<usize>,
    category: Option<String>,
    period: Option<String>,
}

impl RangeQuery {
    fn range(&self, freshness: &FreshnessReport) -> Result<DateRange, ApiError> {
        DateRange::parse_latest(
            self.from.as_deref(),
            self.to.as_deref(),
            self.days,
            Dashboard::default_to(freshness),
        )
        .map_err(param_error)
    }
}

/// Times a dashboard view and counts its outcome.
async fn observe<T: Serialize>(
    state: &AppState,
    view: &'static str,
    answer: impl Future<Output = Result<T, ApiError>>,
) -> Result<Json<T>, ApiError> {
    let start = Instant::now();
    let result = answer.await;
    state.metrics.observe(view, result.is_ok(), start.elapsed());
    result.map(Json)
}

#[utoipa::path(get, path = "/api/v1/dashboard/daily", params(("from" = Option<chrono::NaiveDate>, Query, description = "First day (default: 29 days before `to`); not after `to`"), ("to" = Option<chrono::NaiveDate>, Query, description = "Last day, inclusive (default: the newest data's day)"), ("days" = Option<u32>, Query, minimum = 1, maximum = 3660, description = "Instead of `from` (not with it): the range holds this many days up to `to` (default 30)")), responses((status = 200, description = "Sales per day"), (status = 401), (status = 403), (status = 422)))]
async fn daily(
    State(state): State<AppState>,
    caller: Caller,
    ValidQuery(q): ValidQuery<RangeQuery>,
) -> Result<Json<dashboard::Answer<dashboard::DailyRow>>, ApiError> {
    observe(&state, "daily", async {
        let f = current_freshness(&state).await?;
        let range = q.range(&f)?;
        state
            .dashboard
            .daily(caller.pii, f, range)
            .await
            .map_err(|e| api_error("query", e))
    })
    .await
}

#[utoipa::path(get, path = "/api/v1/dashboard/top-products", params(("from" = Option<chrono::NaiveDate>, Query, description = "First day (default: 29 days before `to`); not after `to`"), ("to" = Option<chrono::NaiveDate>, Query, description = "Last day, inclusive (default: the newest data's day)"), ("days" = Option<u32>, Query, minimum = 1, maximum = 3660, description = "Instead of `from` (not with it): the range holds this many days up to `to` (default 30)"), ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "Top-N size (default 10)"), ("category" = Option<String>, Query, max_length = 100, description = "Only this category: at most 100 printable characters")), responses((status = 200, description = "Best-selling products"), (status = 401), (status = 403), (status = 422)))]
async fn top_products(
    State(state): State<AppState>,
    caller: Caller,
    ValidQuery(q): ValidQuery<RangeQuery>,
) -> Result<Json<dashboard::Answer<dashboard::ProductRow>>, ApiError> {
    observe(&state, "top_products", async {
        let limit = dashboard::parse_limit(q.limit).map_err(param_error)?;
        let category = dashboard::parse_category(q.category.as_deref()).map_err(param_error)?;
        let f = current_freshness(&state).await?;
        let range = q.range(&f)?;
        state
            .dashboard
            .top_products(caller.pii, f, range, limit, category.as_deref())
            .await
            .map_err(|e| api_error("query", e))
    })
    .await
}

#[utoipa::path(get, path = "/api/v1/dashboard/top-customers", params(("from" = Option<chrono::NaiveDate>, Query, description = "First day (default: 29 days before `to`); not after `to`"), ("to" = Option<chrono::NaiveDate>, Query, description = "Last day, inclusive (default: the newest data's day)"), ("days" = Option<u32>, Query, minimum = 1, maximum = 3660, description = "Instead of `from` (not with it): the range holds this many days up to `to` (default 30)"), ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "Top-N size (default 10)")), responses((status = 200, description = "Best customers"), (status = 401), (status = 403), (status = 422)))]
async fn top_customers(
    State(state): State<AppState>,
    caller: Caller,
    ValidQuery(q): ValidQuery<RangeQuery>,
) -> Result<Json<dashboard::Answer<dashboard::CustomerRow>>, ApiError> {
    observe(&state, "top_customers", async {
        let limit = dashboard::parse_limit(q.limit).map_err(param_error)?;
        let f = current_freshness(&state).await?;
        let range = q.range(&f)?;
        state
            .dashboard
            .top_customers(caller.pii, f, range, limit)
            .await
            .map_err(|e| api_error("query", e))
    })
    .await
}

#[utoipa::path(get, path = "/api/v1/dashboard/trends", params(("from" = Option<chrono::NaiveDate>, Query, description = "First day (default: 29 days before `to`); not after `to`"), ("to" = Option<chrono::NaiveDate>, Query, description = "Last day, inclusive (default: the newest data's day)"), ("days" = Option<u32>, Query, minimum = 1, maximum = 3660, description = "Instead of `from` (not with it): the range holds this many days up to `to` (default 30)"), ("period" = Option<ViewPeriod>, Query, description = "`month` (default) or `year`")), responses((status = 200, description = "Sales per period"), (status = 401), (status = 403), (status = 422)))]
async fn trends(
    State(state): State<AppState>,
    caller: Caller,
    ValidQuery(q): ValidQuery<RangeQuery>,
) -> Result<Json<dashboard::Answer<dashboard::TrendRow>>, ApiError> {
    observe(&state, "trends", async {
        let period = dashboard::parse_period(q.period.as_deref()).map_err(param_error)?;
        let f = current_freshness(&state).await?;
        let range = q.range(&f)?;
        state
            .dashboard
            .trends(caller.pii, f, range, period)
            .await
            .map_err(|e| api_error("query", e))
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReconcileQuery {
    from: Option<String>,
    to: Option<String>,
}

/// `GET /api/v1/reconcile?from&to`: the read model against the services' own figures per
/// day, product and customer (default range: the 30 days up to today, UTC).
#[utoipa::path(get, path = "/api/v1/reconcile", params(("from" = Option<chrono::NaiveDate>, Query, description = "First day (default: 29 days before `to`); not after `to`"), ("to" = Option<chrono::NaiveDate>, Query, description = "Last day, inclusive (default: the newest data's day)")), responses((status = 200, description = "Differences per day, product and customer"), (status = 401), (status = 403), (status = 422), (status = 503)))]
async fn reconcile(
    State(state): State<AppState>,
    ValidQuery(q): ValidQuery<ReconcileQuery>,
) -> Result<Json<ReconcileReport>, ApiError> {
    observe(&state, "reconcile", async {
        let reconciler = state.reconciler.as_ref().ok_or(ApiError::Unavailable {
            code: "reconcile_not_configured",
            message: AnalyticsError::ReconcileNotConfigured.to_string(),
        })?;
        let today = chrono::Utc::now().date_naive();
        let range =
            DateRange::parse(q.from.as_deref(), q.to.as_deref(), today).map_err(param_error)?;
        let report = reconciler
            .reconcile(state.engine(), range)
            .await
            .map_err(|e| api_error("query", e))?;
        if !report.matches {
            tracing::warn!(
                from = %report.from,
                to = %report.to,
                differences = report.difference_count,
                lag_events = ?report.read_model.lag_events,
                "reconciliation found differences"
            );
        }
        Ok(report)
    })
    .await
}

#[derive(Serialize)]
struct TableInfo {
    name: String,
    kind: &'static str,
    columns: Vec<export::ColumnInfo>,
}

/// The tables and views the SQL endpoints expose, with their columns.
#[utoipa::path(get, path = "/api/v1/tables", responses((status = 200, description = "The tables and their columns"), (status = 401), (status = 403)))]
async fn tables(State(state): State<AppState>) -> Result<Json<Vec<TableInfo>>, ApiError> {
    let mut out: Vec<TableInfo> = Table::all()
        .into_iter()
        .map(|t| TableInfo {
            name: t.name().to_owned(),
            kind: match t {
                Table::Raw(_) => "raw events",
                Table::Agg(_) => "pre-aggregated (one row per key)",
                Table::DeadLetters => "dead letters",
            },
            columns: export::columns(&t.schema()),
        })
        .collect();
    let ctx = state.engine().interactive_context();
    for view in ["products", "customers"] {
        let provider = ctx
            .table_provider(view)
            .await
            .map_err(|e| ApiError::Internal(e.into()))?;
        out.push(TableInfo {
            name: view.to_owned(),
            kind: "dimension (current state, from the raw events)",
            columns: export::columns(&provider.schema()),
        });
    }
    Ok(Json(out))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SqlBody {
    sql: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FormatQuery {
    format: Option<String>,
}

/// The result formats of `POST /api/v1/sql`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SqlFormat {
    Json,
    Csv,
    Arrow,
    Parquet,
}

const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

fn sql_format(query: Option<&str>, headers: &HeaderMap) -> Result<SqlFormat, ApiError> {
    if let Some(f) = query {
        return match f {
            "json" => Ok(SqlFormat::Json),
            "csv" => Ok(SqlFormat::Csv),
            "arrow" => Ok(SqlFormat::Arrow),
            "parquet" => Ok(SqlFormat::Parquet),
            other => Err(ApiError::invalid(
                "format",
                format!(
                    "must be json, csv, arrow or parquet, got `{}`",
                    other.chars().take(20).collect::<String>()
                ),
            )),
        };
    }
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    Ok(if accept.contains("text/csv") {
        SqlFormat::Csv
    } else if accept.contains(ARROW_STREAM) || accept.contains("application/vnd.apache.arrow") {
        SqlFormat::Arrow
    } else if accept.contains("parquet") {
        SqlFormat::Parquet
    } else {
        SqlFormat::Json
    })
}

/// The SQL text of a request body: JSON `{"sql": "..."}` or the text itself.
fn sql_text(headers: &HeaderMap, body: &Bytes) -> Result<String, ApiError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let sql = if is_json {
        serde_json::from_slice::<SqlBody>(body)
            .map_err(|e| ApiError::BadRequest {
                code: "invalid_body",
                message: format!("expected {{\"sql\": \"SELECT ...\"}}: {e}"),
                field: Some("sql".into()),
            })?
            .sql
    } else {
        String::from_utf8(body.to_vec()).map_err(|_| ApiError::invalid("sql", "must be UTF-8"))?
    };
    if sql.trim().is_empty() {
        return Err(ApiError::invalid("sql", "must not be empty"));
    }
    Ok(sql)
}

/// `answer` with its bytes counted in `audit`, which is finished with the answer's end.
fn audited(
    answer: crate::isolation::ByteStream,
    audit: Audit,
) -> impl futures::Stream<Item = Result<Bytes, AnalyticsError>> + Send {
    futures::stream::unfold(
        (answer, Some(audit)),
        |(mut answer, mut audit): (crate::isolation::ByteStream, Option<Audit>)| async move {
            use futures::StreamExt;
            let item = answer.next().await;
            if let Some(a) = audit.as_mut() {
                match &item {
                    Some(Ok(bytes)) => a.add(0, bytes.len() as u64),
                    Some(Err(e)) => a.finish(e.sqlstate().to_owned()),
                    None => a.finish("ok"),
                }
            }
            // At the end the state, and with it the audit (its line written), is dropped.
            item.map(|i| (i, (answer, audit)))
        },
    )
}

fn freshness_headers(f: &FreshnessReport) -> Vec<(&'static str, HeaderValue)> {
    let mut out = vec![("x-shoplens-generation", HeaderValue::from(f.generation))];
    if let Some(as_of) = f
        .as_of
        .as_deref()
        .and_then(|s| HeaderValue::from_str(s).ok())
    {
        out.push(("x-shoplens-as-of", as_of));
    }
    if let Some(lag) = f.lag_ms {
        out.push(("x-shoplens-lag-ms", HeaderValue::from(lag)));
    }
    out
}

fn with_headers(mut resp: Response, headers: Vec<(&'static str, HeaderValue)>) -> Response {
    for (k, v) in headers {
        resp.headers_mut().insert(k, v);
    }
    resp
}

/// `POST /api/v1/sql`: one read-only query; the answer in the chosen format, with the
/// read model's freshness (in the JSON body, and as `X-ShopLens-*` headers in every format).
/// The query runs in a query worker; its answer is complete before the status is sent.
#[utoipa::path(post, path = "/api/v1/sql", request_body(content = SqlRequest, description = "JSON, or the SQL as `text/plain`"), params(("format" = Option<SqlResultFormat>, Query, description = "The answer format (default: by `Accept`, else JSON)")), responses((status = 200, description = "The answer"), (status = 400), (status = 401), (status = 403), (status = 422), (status = 429), (status = 503)))]
async fn sql(
    State(state): State<AppState>,
    caller: Caller,
    ValidQuery(q): ValidQuery<FormatQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let format = sql_format(q.format.as_deref(), &headers)?;
    let text = sql_text(&headers, &body)?;
    let start = Instant::now();
    let result = run_sql(&state, &caller, &text, format).await;
    state
        .metrics
        .observe("sql", result.is_ok(), start.elapsed());
    result
}

async fn run_sql(
    state: &AppState,
    caller: &Caller,
    text: &str,
    format: SqlFormat,
) -> Result<Response, ApiError> {
    let mut audit = Audit::start(&state.metrics, "http", &caller.user, caller.role, text);
    // The first line of defence, before any worker: one read-only statement.
    if let Err(e) = crate::engine::parse_read_only(text) {
        audit.finish(e.sqlstate().to_owned());
        return Err(api_error("sql", e));
    }
    let freshness = current_freshness(state).await?;
    let (output, content_type) = match format {
        SqlFormat::Json => (Output::Json, "application/json"),
        SqlFormat::Csv => (Output::Csv, ExportFormat::Csv.content_type()),
        SqlFormat::Parquet => (Output::Parquet, ExportFormat::Parquet.content_type()),
        SqlFormat::Arrow => (Output::Arrow, ARROW_STREAM),
    };
    let mut job = Job::new(&caller.user, text, SessionKind::Interactive);
    job.pii = caller.pii;
    job.role = caller.role;
    let answer = match state
        .executor
        .bytes(&job, output, true, Some(freshness.clone()), audit.rows())
        .await
    {
        Ok(answer) => answer,
        Err(e) => {
            audit.finish(e.sqlstate().to_owned());
            return Err(api_error("sql", e));
        }
    };
    let resp = (
        [(header::CONTENT_TYPE, content_type)],
        Body::from_stream(audited(answer, audit)),
    )
        .into_response();
    Ok(with_headers(resp, freshness_headers(&freshness)))
}

#[derive(Serialize)]
struct ReportInfo {
    name: &'static str,
    description: &'static str,
    csv: String,
    parquet: String,
}

#[utoipa::path(get, path = "/api/v1/reports", responses((status = 200, description = "The named reports and their file URLs"), (status = 401), (status = 403)))]
async fn reports() -> Json<Vec<ReportInfo>> {
    Json(
        REPORTS
            .iter()
            .map(|r| ReportInfo {
                name: r.name,
                description: r.description,
                csv: format!("/api/v1/reports/{}.csv?from=&to=", r.name),
                parquet: format!("/api/v1/reports/{}.parquet?from=&to=", r.name),
            })
            .collect(),
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportQuery {
    from: Option<String>,
    to: Option<String>,
}

/// `GET /api/v1/reports/{name}.{csv|parquet}?from=&to=`: streamed.
#[utoipa::path(get, path = "/api/v1/reports/{file}", params(("file" = String, Path, pattern = r"^[A-Za-z0-9_-]+\.(csv|parquet)$", description = "`REPORT.csv` or `REPORT.parquet`, REPORT a name `/api/v1/reports` lists (404 otherwise)"), ("from" = Option<chrono::NaiveDate>, Query, description = "First day (default: 29 days before `to`); not after `to`"), ("to" = Option<chrono::NaiveDate>, Query, description = "Last day, inclusive (default: the newest data's day)")), responses((status = 200, description = "The report, streamed"), (status = 401), (status = 403), (status = 404), (status = 422)))]
async fn report_file(
    State(state): State<AppState>,
    caller: Caller,
    Path(file): Path<String>,
    ValidQuery(q): ValidQuery<ReportQuery>,
) -> Result<Response, ApiError> {
    let (name, ext) = file.rsplit_once('.').ok_or_else(|| {
        ApiError::invalid("format", "name the file as REPORT.csv or REPORT.parquet")
    })?;
    let format = ExportFormat::parse("format", ext).map_err(param_error)?;
    let report = export::report(name).map_err(|e| ApiError::NotFound {
        what: "report",
        id: format!("{name} ({})", e.message),
    })?;
    let freshness = current_freshness(&state).await?;
    let range = DateRange::parse(
        q.from.as_deref(),
        q.to.as_deref(),
        Dashboard::default_to(&freshness),
    )
    .map_err(param_error)?;
    let filename = format!(
        "{}_{}_{}.{}",
        report.name,
        range.from,
        range.to,
        format.extension()
    );
    stream_export(
        &state,
        &caller,
        &report.sql(&range),
        format,
        &filename,
        &freshness,
        "report",
    )
    .await
}

/// `POST /api/v1/export?format=csv|parquet` with a query: an ad-hoc report, streamed.
#[utoipa::path(post, path = "/api/v1/export", request_body(content = SqlRequest, description = "JSON, or the SQL as `text/plain`"), params(("format" = Option<ReportFormat>, Query, description = "`csv` (default) or `parquet`")), responses((status = 200, description = "The answer as a file, streamed"), (status = 400), (status = 401), (status = 403), (status = 422), (status = 503)))]
async fn export_sql(
    State(state): State<AppState>,
    caller: Caller,
    ValidQuery(q): ValidQuery<FormatQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let format =
        ExportFormat::parse("format", q.format.as_deref().unwrap_or("csv")).map_err(param_error)?;
    let text = sql_text(&headers, &body)?;
    let freshness = current_freshness(&state).await?;
    let filename = format!("export.{}", format.extension());
    stream_export(&state, &caller, &text, format, &filename, &freshness, "sql").await
}

/// Streams an export from its query worker; its query slot is held until the last byte.
async fn stream_export(
    state: &AppState,
    caller: &Caller,
    sql: &str,
    format: ExportFormat,
    filename: &str,
    freshness: &FreshnessReport,
    field: &str,
) -> Result<Response, ApiError> {
    let mut audit = Audit::start(&state.metrics, "export", &caller.user, caller.role, sql);
    if let Err(e) = crate::engine::parse_read_only(sql) {
        audit.finish(e.sqlstate().to_owned());
        return Err(api_error(field, e));
    }
    let mut job = Job::new(&caller.user, sql, SessionKind::Export);
    job.pii = caller.pii;
    job.role = caller.role;
    let answer = match state
        .executor
        .bytes(&job, format.output(), false, None, audit.rows())
        .await
    {
        Ok(answer) => answer,
        Err(e) => {
            audit.finish(e.sqlstate().to_owned());
            return Err(api_error(field, e));
        }
    };
    state.metrics.exports.inc();
    let body = Body::from_stream(audited(answer, audit).inspect_err(|e| {
        tracing::warn!(error = %e, "export failed mid-stream");
    }));
    let mut resp = (StatusCode::OK, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(with_headers(resp, freshness_headers(freshness)))
}
