//! The composer's HTTP endpoints: the two JSON APIs and the "My Orders" page.
//!
//! Every API request is checked in this order, before any downstream call: the bearer token
//! and its role (401/403, the endpoint's access rule), then the ids in the path and query
//! (400/422), then whose order it is (403). Only then are services called.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;
use shoplens_kit::access::{Access, Caller, Endpoints, get, rules};
use shoplens_kit::http::parse_id;
use shoplens_kit::identity::Role;
use shoplens_kit::utoipa::{self, IntoParams, OpenApi, ToSchema};
use shoplens_kit::{ApiError, ValidQuery};
use tracing::Instrument;

use crate::compose::{Composer, MAX_PAGE};
use crate::downstream::REQUEST_CALLS;
use crate::metrics::{EndpointLabels, RequestLabels};

/// The "My Orders" page: one self-contained file, no external resources.
const PAGE: &str = include_str!("page.html");

/// The composer's OpenAPI document (`/openapi.json`): its JSON endpoints with their
/// parameters and the rules the handlers check.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "ShopLens API composer",
        version = "1",
        description = "Order Summary, My Orders and the live sales figures. Every endpoint \
            takes a bearer token; a customer reads only their own orders (403 otherwise)."
    ),
    paths(order_summary, customer_orders, sales_dashboard, sales_ledger),
    components(schemas(Period))
)]
pub struct ApiDoc;

/// The OpenAPI document, as the kit serves it.
pub fn openapi() -> Option<serde_json::Value> {
    serde_json::to_value(ApiDoc::openapi()).ok()
}

/// Trend periods of the sales dashboard.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
enum Period {
    Month,
    Year,
}

/// Who may call what: the page is open (it sends the token it is given); a customer's
/// orders are theirs (and support's); the live sales figures are for admins, and the
/// ledger also for other ShopLens servers (reconciliation, role `service`).
pub fn endpoints() -> Endpoints<Arc<Composer>> {
    const LEDGER: Access = Access::Roles(&[Role::Admin, Role::Service]);
    Endpoints::new()
        .with(get("/", Access::Public, page))
        .with(get("/my-orders", Access::Public, page))
        .with(get(
            "/api/v1/orders/{order_id}/summary",
            rules::CUSTOMERS,
            order_summary,
        ))
        .with(get(
            "/api/v1/customers/{customer_id}/orders",
            rules::CUSTOMERS,
            customer_orders,
        ))
        .with(get(
            "/api/v1/sales/dashboard",
            rules::ADMINS,
            sales_dashboard,
        ))
        .with(get("/api/v1/sales/ledger", LEDGER, sales_ledger))
}

/// The rules of the composer's endpoints, for the access tests.
pub fn rules() -> Vec<shoplens_kit::access::Rule> {
    endpoints().rules()
}

async fn page() -> Response {
    (
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        Html(PAGE),
    )
        .into_response()
}

/// Runs one API request with its metrics: count and latency by outcome, downstream calls
/// made for it, degraded answers.
async fn measured<T, F>(
    composer: &Composer,
    endpoint: &'static str,
    degraded: impl FnOnce(&T) -> bool,
    work: F,
) -> Result<Json<T>, ApiError>
where
    F: Future<Output = Result<T, ApiError>>,
{
    let start = Instant::now();
    let calls = Arc::new(AtomicU64::new(0));
    let result = REQUEST_CALLS.scope(calls.clone(), work).await;
    let m = &composer.metrics;
    let labels = EndpointLabels { endpoint };
    m.request_duration
        .get_or_create(&labels)
        .observe(start.elapsed().as_secs_f64());
    m.calls_per_request
        .get_or_create(&labels)
        .observe(calls.load(Ordering::Relaxed) as f64);
    let outcome = match &result {
        Ok(v) if degraded(v) => {
            m.degraded_responses.get_or_create(&labels).inc();
            "degraded".to_owned()
        }
        Ok(_) => "ok".to_owned(),
        Err(e) => e.status().as_u16().to_string(),
    };
    m.requests
        .get_or_create(&RequestLabels { endpoint, outcome })
        .inc();
    result.map(Json)
}

/// One order with its customer, products, payment and shipping, each section with its
/// own status (`ok`, `stale`, `unavailable`); 404 only for an unknown order.
#[utoipa::path(get, path = "/api/v1/orders/{order_id}/summary",
    params(("order_id" = uuid::Uuid, Path, description = "Order id (UUID)")),
    responses((status = 200, description = "The Order Summary"), (status = 400),
        (status = 401), (status = 403), (status = 404), (status = 503)))]
async fn order_summary(
    State(composer): State<Arc<Composer>>,
    Caller(who): Caller,
    Path(order_id): Path<String>,
) -> Result<Response, ApiError> {
    let c = &composer;
    let span = tracing::info_span!("order_summary", order_id = %order_id, caller = %who.subject);
    let work = async {
        let order_id = parse_id("order_id", &order_id)?.to_string();
        c.summary(&who, &order_id).await
    };
    measured(c, "order_summary", |s| s.degraded, work.instrument(span))
        .await
        .map(|j| j.into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Orders per page, 1 to 50 (default 10).
    #[param(minimum = 1, maximum = 50)]
    limit: Option<u32>,
    /// The `next_cursor` of the previous page (an order id; empty is none).
    #[param(format = Uuid)]
    cursor: Option<String>,
}

/// A customer's orders, newest first, a page at a time, each as an Order Summary.
#[utoipa::path(get, path = "/api/v1/customers/{customer_id}/orders",
    params(("customer_id" = uuid::Uuid, Path, description = "Customer id (UUID)"), ListQuery),
    responses((status = 200, description = "A page of Order Summaries and `next_cursor`"),
        (status = 400), (status = 401), (status = 403), (status = 422)))]
async fn customer_orders(
    State(composer): State<Arc<Composer>>,
    Caller(who): Caller,
    Path(customer_id): Path<String>,
    query: Result<ValidQuery<ListQuery>, ApiError>,
) -> Result<Response, ApiError> {
    let c = &composer;
    let span =
        tracing::info_span!("customer_orders", customer_id = %customer_id, caller = %who.subject);
    let work = async {
        let customer_id = parse_id("customer_id", &customer_id)?.to_string();
        let ValidQuery(q) = query?;
        let limit = q.limit.unwrap_or(10);
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(ApiError::invalid(
                "limit",
                format!("must be between 1 and {MAX_PAGE}"),
            ));
        }
        let cursor = match q.cursor.as_deref().filter(|s| !s.is_empty()) {
            Some(cur) => Some(parse_id("cursor", cur)?.to_string()),
            None => None,
        };
        c.list(&who, &customer_id, limit, cursor.as_deref()).await
    };
    measured(c, "customer_orders", |l| l.degraded, work.instrument(span))
        .await
        .map(|j| j.into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct SalesParams {
    /// First day, `YYYY-MM-DD` (default: 29 days before `to`); not after `to` (so not after
    /// today when `to` is absent), the range at most 3,660 days, years 1970 to 9999.
    #[param(format = Date)]
    from: Option<String>,
    /// Last day, inclusive, `YYYY-MM-DD` (default: today, UTC).
    #[param(format = Date)]
    to: Option<String>,
    /// Top-N size, 1 to 1,000 (default 10). Dashboard only.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// Only products of this category in the top products: at most 100 printable
    /// characters. Dashboard only.
    #[param(max_length = 100)]
    category: Option<String>,
    /// Trend periods: `month` (default) or `year`. Dashboard only.
    #[param(value_type = Option<Period>)]
    period: Option<String>,
}

fn param_error(e: shoplens_contract::sales::BadParam) -> ApiError {
    ApiError::invalid(e.field, e.message)
}

fn sales_range(q: &SalesParams) -> Result<shoplens_contract::sales::DateRange, ApiError> {
    shoplens_contract::sales::DateRange::parse(
        q.from.as_deref(),
        q.to.as_deref(),
        chrono::Utc::now().date_naive(),
    )
    .map_err(param_error)
}

/// When a live sales computation starting now must be done, and that limit in ms.
fn sales_deadline(c: &Composer) -> (tokio::time::Instant, u64) {
    let ms = c.config.sales_deadline_ms;
    (
        tokio::time::Instant::now() + std::time::Duration::from_millis(ms),
        ms,
    )
}

/// The sales dashboard's four views computed live from the services (every order paged
/// through at request time): the API-composition answer the read model is measured against.
#[utoipa::path(get, path = "/api/v1/sales/dashboard", params(SalesParams),
    responses((status = 200, description = "Daily sales, top products and customers, trends"),
        (status = 400), (status = 401), (status = 403), (status = 422), (status = 503)))]
async fn sales_dashboard(
    State(composer): State<Arc<Composer>>,
    query: Result<ValidQuery<SalesParams>, ApiError>,
) -> Result<Response, ApiError> {
    let c = &composer;
    let work = async {
        let ValidQuery(q) = query?;
        let sales = crate::sales::SalesQuery {
            range: sales_range(&q)?,
            limit: shoplens_contract::sales::parse_limit(q.limit).map_err(param_error)?,
            category: shoplens_contract::sales::parse_category(q.category.as_deref())
                .map_err(param_error)?,
            period: shoplens_contract::sales::Period::parse(q.period.as_deref())
                .map_err(|m| ApiError::invalid("period", m))?,
        };
        let (deadline, ms) = sales_deadline(c);
        Ok(crate::sales::dashboard(&c.downstream, &sales, deadline, ms).await?)
    };
    let span = tracing::info_span!("sales_dashboard");
    measured(c, "sales_dashboard", |_| false, work.instrument(span))
        .await
        .map(|j| j.into_response())
}

/// Per-day, per-product and per-customer sums of a range from the services' own data, for
/// reconciling the read model (`limit`, `category` and `period` do not apply).
#[utoipa::path(get, path = "/api/v1/sales/ledger",
    params(
        ("from" = Option<chrono::NaiveDate>, Query, description = "First day, `YYYY-MM-DD` (default: 29 days before `to`); not after `to` (today when absent), the range at most 3,660 days"),
        ("to" = Option<chrono::NaiveDate>, Query, description = "Last day, inclusive (default: today, UTC)")
    ),
    responses((status = 200, description = "Per-day, per-product and per-customer sums"),
        (status = 400), (status = 401), (status = 403), (status = 422), (status = 503)))]
async fn sales_ledger(
    State(composer): State<Arc<Composer>>,
    query: Result<ValidQuery<SalesParams>, ApiError>,
) -> Result<Response, ApiError> {
    let c = &composer;
    let work = async {
        let ValidQuery(q) = query?;
        for (field, given) in [
            ("limit", q.limit.is_some()),
            ("category", q.category.is_some()),
            ("period", q.period.is_some()),
        ] {
            if given {
                return Err(ApiError::invalid(field, "does not apply to the ledger"));
            }
        }
        let range = sales_range(&q)?;
        let (deadline, ms) = sales_deadline(c);
        Ok(crate::sales::ledger_report(&c.downstream, &range, deadline, ms).await?)
    };
    let span = tracing::info_span!("sales_ledger");
    measured(c, "sales_ledger", |_| false, work.instrument(span))
        .await
        .map(|j| j.into_response())
}
