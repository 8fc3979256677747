//! The order service: places orders and moves them through Placed → Paid → Shipped →
//! Delivered (or Cancelled).
//!
//! Placing an order checks with the customer service that the customer exists and fetches all
//! products in one batch call, snapshotting their current prices on the order lines. Publishes
//! `OrderCreated`, `OrderStatusChanged` and, when an order is paid, one `ProductPurchased` per
//! line.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use shoplens_contract::{
    Envelope, OrderCreated, OrderLine as EventLine, OrderStatus, OrderStatusChanged,
    ProductPurchased, Service, check_quantity,
};
use shoplens_kit::access::rules::SERVICES;
use shoplens_kit::access::{Endpoints, get, post};
use shoplens_kit::balance::ReplicaUrls;
use shoplens_kit::client::{ClientError, ServiceClient};
use shoplens_kit::config::ServiceConfig;
use shoplens_kit::db::Conn;
use shoplens_kit::db::fetch_by_ids;
use shoplens_kit::http::{parse_id, parse_id_list};
use shoplens_kit::idempotency::IdempotencyKey;
use shoplens_kit::{ApiError, ServiceContext, ServiceHandle, ServiceSpec, ValidJson, ValidQuery};
use utoipa::{IntoParams, OpenApi, ToSchema};

/// Most ids one batch look-up may ask for.
pub const MAX_BATCH: usize = 100;
/// Most lines on one order.
pub const MAX_LINES: usize = 50;
/// Largest page of the all-orders listing (`?all=true`).
pub const MAX_SCAN_PAGE: u32 = 1_000;

/// Where the services the order service depends on live. Each is one base URL, or its
/// replicas' (a list, or a comma-separated string): calls go to them in turn, and a replica
/// that keeps failing is skipped until it answers again (`shoplens_kit::balance`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Upstreams {
    /// Base URL of the customer service, or of each of its replicas.
    pub customer_url: ReplicaUrls,
    /// Base URL of the product service, or of each of its replicas.
    pub product_url: ReplicaUrls,
    /// Timeout of one call to either, in milliseconds.
    pub timeout_ms: u64,
}

impl Default for Upstreams {
    fn default() -> Self {
        Upstreams {
            customer_url: "http://127.0.0.1:8081".into(),
            product_url: "http://127.0.0.1:8082".into(),
            timeout_ms: 2_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct Line {
    pub line_no: i32,
    pub product_id: String,
    pub quantity: i32,
    #[schema(value_type = String)]
    pub unit_price: Decimal,
    #[schema(value_type = String)]
    pub line_total: Decimal,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct Order {
    pub id: String,
    pub customer_id: String,
    #[schema(value_type = schema::OrderStatus, example = "Placed")]
    pub status: OrderStatus,
    pub lines: Vec<Line>,
    #[schema(value_type = String)]
    pub total: Decimal,
    pub currency: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// When it became Paid (the instant its sales count on); absent until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paid_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewLine {
    /// An existing product (a UUID; 422 `no such product` otherwise). Each product at most
    /// once per order, and all products of an order in one currency.
    #[schema(format = Uuid, example = "0190a5b0-7c1e-7d3a-9f00-000000000002")]
    pub product_id: String,
    #[schema(minimum = 1, maximum = 10_000, example = 2)]
    pub quantity: i32,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewOrder {
    /// An existing customer (a UUID; 422 `no such customer` otherwise).
    #[schema(format = Uuid, example = "0190a5b0-7c1e-7d3a-9f00-000000000001")]
    pub customer_id: String,
    /// 1 to 50 lines, no product twice (raise its quantity instead); the order's total
    /// (quantity × the product's current price, summed) must stay below 10^16.
    #[schema(min_items = 1, max_items = 50)]
    pub lines: Vec<NewLine>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusChange {
    /// The new status. Placed → Paid → Shipped → Delivered, or Cancelled before Shipped;
    /// another transition is a 409 `illegal_transition`, the current status a no-op.
    #[schema(value_type = schema::OrderStatus, example = "Paid")]
    pub status: OrderStatus,
}

/// Schema-only types: how values of other crates look on the wire.
mod schema {
    /// The lifecycle of an order.
    #[derive(utoipa::ToSchema)]
    #[allow(dead_code)]
    pub enum OrderStatus {
        Placed,
        Paid,
        Shipped,
        Delivered,
        Cancelled,
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct OrdersQuery {
    /// Comma-separated order ids (at most 100).
    pub ids: Option<String>,
    /// A customer's orders, newest first.
    pub customer_id: Option<String>,
    /// Page size for `customer_id` (1-100, default 20).
    pub limit: Option<u32>,
    /// Cursor for `customer_id`: the `next_cursor` of the previous page.
    pub before: Option<String>,
    /// `true`: every order, oldest first, a page at a time (reports and reconciliation
    /// page through the whole shop this way).
    pub all: Option<bool>,
    /// Cursor for `all`: the `next_cursor` of the previous page.
    pub after: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OrderPage {
    pub orders: Vec<Order>,
    /// Batch look-ups: requested ids that do not exist.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missing: Option<Vec<String>>,
    /// Customer and all-orders listings: the cursor of the next page, null on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<Option<String>>,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "ShopLens order service", version = "1"),
    paths(create_order, get_order, list_orders, change_status),
    components(schemas(
        Order,
        Line,
        NewOrder,
        NewLine,
        StatusChange,
        OrderPage,
        schema::OrderStatus
    ))
)]
struct ApiDoc;

#[derive(Clone)]
struct AppState {
    ctx: ServiceContext,
    customers: ServiceClient,
    products: ServiceClient,
}

/// Starts the service.
pub async fn start(
    config: &ServiceConfig,
    upstreams: &Upstreams,
    deps: impl Into<shoplens_kit::Deps>,
) -> Result<ServiceHandle, shoplens_kit::Error> {
    let spec = ServiceSpec {
        service: Service::Order,
        migrations: shoplens_kit::migrations!(),
    };
    let timeout = Duration::from_millis(upstreams.timeout_ms);
    let upstreams = upstreams.clone();
    shoplens_kit::service::start(spec, config, deps, move |ctx| {
        let client = |name: &str, urls: &ReplicaUrls| {
            ServiceClient::new(name, urls.clone(), timeout).with_token(ctx.token.clone())
        };
        let state = AppState {
            customers: client("customer service", &upstreams.customer_url),
            products: client("product service", &upstreams.product_url),
            ctx: ctx.clone(),
        };
        let routes = endpoints().with_state(state, &ctx.verifier);
        (routes, serde_json::to_value(ApiDoc::openapi()).ok())
    })
    .await
}

/// The service's endpoints: only other ShopLens servers (and admins) call them.
fn endpoints() -> Endpoints<AppState> {
    Endpoints::new()
        .with(get("/api/v1/orders", SERVICES, list_orders))
        .with(post("/api/v1/orders", SERVICES, create_order))
        .with(get("/api/v1/orders/{id}", SERVICES, get_order))
        .with(post("/api/v1/orders/{id}/status", SERVICES, change_status))
}

/// The rules of the service's endpoints, for the access tests.
pub fn rules() -> Vec<shoplens_kit::access::Rule> {
    endpoints().rules()
}

#[derive(sqlx::FromRow)]
struct OrderRow {
    id: String,
    customer_id: String,
    status: String,
    total: String,
    currency: String,
    #[sqlx(try_from = "shoplens_kit::db::Stamp")]
    created_at: DateTime<Utc>,
    #[sqlx(try_from = "shoplens_kit::db::Stamp")]
    updated_at: DateTime<Utc>,
    paid_at: Option<String>,
}

#[derive(sqlx::FromRow)]
struct LineRow {
    order_id: String,
    line_no: i32,
    product_id: String,
    quantity: i32,
    unit_price: String,
}

fn decimal(column: &str, text: &str) -> Result<Decimal, ApiError> {
    text.parse().map_err(|e| {
        ApiError::Internal(anyhow::anyhow!(
            "corrupt {column} `{text}` in database: {e}"
        ))
    })
}

/// Assembles orders from their rows, keeping the order of `rows`.
fn assemble(rows: Vec<OrderRow>, mut lines: Vec<LineRow>) -> Result<Vec<Order>, ApiError> {
    lines.sort_by(|a, b| (&a.order_id, a.line_no).cmp(&(&b.order_id, b.line_no)));
    rows.into_iter()
        .map(|row| {
            let order_lines = lines
                .iter()
                .filter(|l| l.order_id == row.id)
                .map(|l| {
                    let unit_price = decimal("unit_price", &l.unit_price)?;
                    Ok(Line {
                        line_no: l.line_no,
                        product_id: l.product_id.clone(),
                        quantity: l.quantity,
                        unit_price,
                        line_total: unit_price * Decimal::from(l.quantity),
                    })
                })
                .collect::<Result<Vec<_>, ApiError>>()?;
            Ok(Order {
                status: row
                    .status
                    .parse()
                    .map_err(|e: String| ApiError::Internal(anyhow::anyhow!(e)))?,
                total: decimal("total", &row.total)?,
                id: row.id,
                customer_id: row.customer_id,
                lines: order_lines,
                currency: row.currency,
                created_at: row.created_at,
                updated_at: row.updated_at,
                paid_at: row
                    .paid_at
                    .as_deref()
                    .map(shoplens_kit::db::parse_stamp)
                    .transpose()
                    .map_err(|e| {
                        ApiError::Internal(anyhow::anyhow!("corrupt paid_at in database: {e}"))
                    })?,
            })
        })
        .collect()
}

async fn load(pool: &shoplens_kit::db::Pool, ids: &[String]) -> Result<Vec<Order>, ApiError> {
    let rows: Vec<OrderRow> = fetch_by_ids(pool, "SELECT * FROM orders WHERE id IN", ids).await?;
    let lines: Vec<LineRow> =
        fetch_by_ids(pool, "SELECT * FROM order_lines WHERE order_id IN", ids).await?;
    assemble(rows, lines)
}

async fn load_one_in_tx(tx: &mut Conn, id: &str) -> Result<Option<Order>, ApiError> {
    // Locked until the transaction ends: see shoplens_kit::db.
    let sql = format!(
        "SELECT * FROM orders WHERE id = $1{}",
        shoplens_kit::db::for_update(tx)
    );
    let row: Option<OrderRow> = sqlx::query_as(&sql)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
    let Some(row) = row else { return Ok(None) };
    let lines: Vec<LineRow> = sqlx::query_as("SELECT * FROM order_lines WHERE order_id = $1")
        .bind(id)
        .fetch_all(&mut *tx)
        .await?;
    Ok(assemble(vec![row], lines)?.pop())
}

#[derive(Deserialize)]
struct ProductInfo {
    id: String,
    price: Decimal,
    currency: String,
}

#[derive(Deserialize)]
struct ProductBatch {
    products: Vec<ProductInfo>,
    missing: Vec<String>,
}

fn dependency_down(e: ClientError) -> ApiError {
    ApiError::Unavailable {
        code: "dependency_unavailable",
        message: e.to_string(),
    }
}

/// Checks the request's shape before any call to another service.
fn validate_new_order(req: &NewOrder) -> Result<(), ApiError> {
    parse_id("customer_id", &req.customer_id)?;
    if req.lines.is_empty() || req.lines.len() > MAX_LINES {
        return Err(ApiError::invalid(
            "lines",
            format!("must have 1 to {MAX_LINES} lines"),
        ));
    }
    for (i, line) in req.lines.iter().enumerate() {
        parse_id(&format!("lines[{i}].product_id"), &line.product_id)?;
        check_quantity(&format!("lines[{i}].quantity"), line.quantity)?;
        if req.lines[..i]
            .iter()
            .any(|l| l.product_id == line.product_id)
        {
            return Err(ApiError::invalid(
                format!("lines[{i}].product_id"),
                "the same product appears twice; raise its quantity instead",
            ));
        }
    }
    Ok(())
}

/// Places an order.
#[utoipa::path(post, path = "/api/v1/orders", request_body = NewOrder,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retried request safe")),
    responses((status = 201, body = Order), (status = 400), (status = 422), (status = 503)))]
async fn create_order(
    State(state): State<AppState>,
    idem: IdempotencyKey,
    ValidJson(req): ValidJson<NewOrder>,
) -> Result<Response, ApiError> {
    validate_new_order(&req)?;
    // A retry must not depend on the other services being up.
    {
        let mut conn = state.ctx.db.reader.acquire().await?;
        if let Some(replay) = idem.replay(&mut conn, "create_order", &req).await? {
            return Ok(replay.into_response());
        }
    }
    let product_ids: Vec<&str> = req.lines.iter().map(|l| l.product_id.as_str()).collect();
    let customer_path = format!("/api/v1/customers/{}", req.customer_id);
    let products_path = format!("/api/v1/products?ids={}", product_ids.join(","));
    let (customer, products) = tokio::join!(
        state
            .customers
            .get_json::<serde_json::Value>(&customer_path),
        state.products.get_json::<ProductBatch>(&products_path)
    );
    if customer.map_err(dependency_down)?.is_none() {
        return Err(ApiError::invalid("customer_id", "no such customer"));
    }
    let products = products.map_err(dependency_down)?.ok_or_else(|| {
        dependency_down(ClientError::Unavailable {
            service: "product service".into(),
            reason: "batch look-up answered 404".into(),
        })
    })?;
    let mut lines = Vec::with_capacity(req.lines.len());
    for (i, line) in req.lines.iter().enumerate() {
        let field = format!("lines[{i}].product_id");
        if products.missing.contains(&line.product_id) {
            return Err(ApiError::invalid(field, "no such product"));
        }
        let product = products
            .products
            .iter()
            .find(|p| p.id == line.product_id)
            .ok_or_else(|| ApiError::invalid(field, "no such product"))?;
        lines.push(EventLine {
            line_no: i as i32 + 1,
            product_id: line.product_id.clone(),
            quantity: line.quantity,
            unit_price: product.price,
        });
    }
    let currency = products.products[0].currency.clone();
    if products.products.iter().any(|p| p.currency != currency) {
        return Err(ApiError::invalid(
            "lines",
            "all products of an order must have one currency",
        ));
    }
    let total: Decimal = lines
        .iter()
        .map(|l| l.unit_price * Decimal::from(l.quantity))
        .sum();
    let now = state.ctx.clock.now();
    let order_id = uuid::Uuid::now_v7().to_string();
    let created = OrderCreated {
        order_id: order_id.clone(),
        customer_id: req.customer_id.clone(),
        lines,
        total,
        currency,
    };
    shoplens_contract::DomainEvent::from(created.clone()).validate()?;

    let mut tx = state.ctx.db.begin().await?;
    if let Some(replay) = idem.replay(&mut tx, "create_order", &req).await? {
        return Ok(replay.into_response());
    }
    sqlx::query(
        "INSERT INTO orders (id, customer_id, status, total, currency, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&order_id)
    .bind(&created.customer_id)
    .bind(OrderStatus::Placed.as_str())
    .bind(total.to_string())
    .bind(&created.currency)
    .bind(shoplens_kit::db::stamp(now))
    .bind(shoplens_kit::db::stamp(now))
    .execute(&mut *tx)
    .await?;
    for line in &created.lines {
        sqlx::query(
            "INSERT INTO order_lines (order_id, line_no, product_id, quantity, unit_price)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&order_id)
        .bind(i64::from(line.line_no))
        .bind(&line.product_id)
        .bind(i64::from(line.quantity))
        .bind(line.unit_price.to_string())
        .execute(&mut *tx)
        .await?;
    }
    let placed = OrderStatusChanged {
        order_id: order_id.clone(),
        customer_id: created.customer_id.clone(),
        from: None,
        to: OrderStatus::Placed,
    };
    state
        .ctx
        .outbox
        .enqueue(&mut tx, &Envelope::at(created, now))
        .await?;
    state
        .ctx
        .outbox
        .enqueue(&mut tx, &Envelope::at(placed, now))
        .await?;
    let order = load_one_in_tx(&mut tx, &order_id).await?.ok_or_else(|| {
        ApiError::Internal(anyhow::anyhow!("order vanished inside its transaction"))
    })?;
    idem.store(&mut tx, "create_order", &req, StatusCode::CREATED, &order)
        .await?;
    tx.commit().await?;
    state.ctx.outbox.wake();
    Ok((StatusCode::CREATED, Json(order)).into_response())
}

/// One order.
#[utoipa::path(get, path = "/api/v1/orders/{id}",
    params(("id" = uuid::Uuid, Path, description = "Order id (UUID)")),
    responses((status = 200, body = Order), (status = 400), (status = 404)))]
async fn get_order(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Order>, ApiError> {
    parse_id("id", &id)?;
    load(&state.ctx.db.reader, std::slice::from_ref(&id))
        .await?
        .pop()
        .map(Json)
        .ok_or_else(|| ApiError::not_found("order", id))
}

/// Many orders by id, one customer's orders newest first, or every order oldest first (a
/// page at a time).
#[utoipa::path(get, path = "/api/v1/orders", params(OrdersQuery),
    responses((status = 200, body = OrderPage), (status = 400), (status = 422)))]
async fn list_orders(
    State(state): State<AppState>,
    ValidQuery(q): ValidQuery<OrdersQuery>,
) -> Result<Json<OrderPage>, ApiError> {
    let pool = &state.ctx.db.reader;
    let all = q.all.unwrap_or(false);
    if q.after.is_some() && !all {
        return Err(ApiError::invalid(
            "after",
            "is the cursor of `all=true` listings",
        ));
    }
    if q.before.is_some() && q.customer_id.is_none() {
        return Err(ApiError::invalid(
            "before",
            "is the cursor of `customer_id` listings",
        ));
    }
    match (&q.ids, &q.customer_id, all) {
        (Some(ids), None, false) => {
            let ids: Vec<String> = parse_id_list("ids", ids, MAX_BATCH)?
                .iter()
                .map(|id| id.to_string())
                .collect();
            let orders = load(pool, &ids).await?;
            let missing = ids
                .into_iter()
                .filter(|id| !orders.iter().any(|o| &o.id == id))
                .collect();
            Ok(Json(OrderPage {
                orders,
                missing: Some(missing),
                next_cursor: None,
            }))
        }
        (None, Some(customer_id), false) => {
            parse_id("customer_id", customer_id)?;
            let limit = page_limit(q.limit, 20, 100)?;
            if let Some(before) = &q.before {
                parse_id("before", before)?;
            }
            // One more than asked tells whether there is a next page.
            let ids: Vec<String> = sqlx::query_scalar(
                "SELECT id FROM orders WHERE customer_id = $1 AND ($2 IS NULL OR id < $3)
                 ORDER BY id DESC LIMIT $4",
            )
            .bind(customer_id)
            .bind(&q.before)
            .bind(&q.before)
            .bind(i64::from(limit) + 1)
            .fetch_all(pool)
            .await?;
            let (ids, next) = split_page(ids, limit);
            let mut orders = load(pool, &ids).await?;
            orders.sort_by(|a, b| b.id.cmp(&a.id));
            Ok(Json(OrderPage {
                orders,
                missing: None,
                next_cursor: Some(next),
            }))
        }
        (None, None, true) => {
            let limit = page_limit(q.limit, 100, MAX_SCAN_PAGE)?;
            if let Some(after) = &q.after {
                parse_id("after", after)?;
            }
            // Ids are UUIDv7: id order is creation order, and an order placed while a
            // reader pages lands after its cursor, never before it.
            let ids: Vec<String> = sqlx::query_scalar(
                "SELECT id FROM orders WHERE ($1 IS NULL OR id > $2) ORDER BY id LIMIT $3",
            )
            .bind(&q.after)
            .bind(&q.after)
            .bind(i64::from(limit) + 1)
            .fetch_all(pool)
            .await?;
            let (ids, next) = split_page(ids, limit);
            let mut orders = load(pool, &ids).await?;
            orders.sort_by(|a, b| a.id.cmp(&b.id));
            Ok(Json(OrderPage {
                orders,
                missing: None,
                next_cursor: Some(next),
            }))
        }
        (None, None, false) => Err(ApiError::BadRequest {
            code: "invalid_query",
            message: "give `ids`, `customer_id` or `all=true`".into(),
            field: Some("customer_id".into()),
        }),
        _ => Err(ApiError::BadRequest {
            code: "invalid_query",
            message: "give one of `ids`, `customer_id` and `all=true`".into(),
            field: Some("ids".into()),
        }),
    }
}

/// Checks a page size (`1..=max`, `default` when absent).
fn page_limit(limit: Option<u32>, default: u32, max: u32) -> Result<u32, ApiError> {
    let limit = limit.unwrap_or(default);
    if !(1..=max).contains(&limit) {
        return Err(ApiError::invalid(
            "limit",
            format!("must be between 1 and {max}"),
        ));
    }
    Ok(limit)
}

/// Cuts a look-up of `limit + 1` ids to the page, and the next page's cursor (the page's
/// last id) if there was one more.
fn split_page(mut ids: Vec<String>, limit: u32) -> (Vec<String>, Option<String>) {
    let more = ids.len() > limit as usize;
    ids.truncate(limit as usize);
    let next = more.then(|| ids.last().cloned()).flatten();
    (ids, next)
}

/// Moves an order to a new status. Asking for the status it already has changes nothing.
#[utoipa::path(post, path = "/api/v1/orders/{id}/status", request_body = StatusChange,
    params(("id" = uuid::Uuid, Path, description = "Order id (UUID)")),
    responses((status = 200, body = Order), (status = 400), (status = 404), (status = 409)))]
async fn change_status(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ValidJson(req): ValidJson<StatusChange>,
) -> Result<Json<Order>, ApiError> {
    parse_id("id", &id)?;
    let mut tx = state.ctx.db.begin().await?;
    let order = load_one_in_tx(&mut tx, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("order", &id))?;
    if order.status == req.status {
        return Ok(Json(order));
    }
    if !order.status.can_become(req.status) {
        return Err(ApiError::conflict(
            "illegal_transition",
            format!("an order cannot go from {} to {}", order.status, req.status),
        ));
    }
    let now = state.ctx.clock.now();
    // `paid_at` is the instant of the Paid events below: the order's sales count on its day.
    let paid_at = (req.status == OrderStatus::Paid).then_some(now);
    sqlx::query(
        "UPDATE orders SET status = $1, updated_at = $2, paid_at = COALESCE($3, paid_at) WHERE id = $4",
    )
    .bind(req.status.as_str())
    .bind(shoplens_kit::db::stamp(now))
    .bind(paid_at.map(shoplens_kit::db::stamp))
    .bind(&id)
    .execute(&mut *tx)
    .await?;
    let changed = OrderStatusChanged {
        order_id: id.clone(),
        customer_id: order.customer_id.clone(),
        from: Some(order.status),
        to: req.status,
    };
    state
        .ctx
        .outbox
        .enqueue(&mut tx, &Envelope::at(changed, now))
        .await?;
    if req.status == OrderStatus::Paid {
        for line in &order.lines {
            let purchased = ProductPurchased {
                order_id: id.clone(),
                line_no: line.line_no,
                customer_id: order.customer_id.clone(),
                product_id: line.product_id.clone(),
                quantity: line.quantity,
                unit_price: line.unit_price,
                revenue: line.line_total,
                currency: order.currency.clone(),
            };
            state
                .ctx
                .outbox
                .enqueue(&mut tx, &Envelope::at(purchased, now))
                .await?;
        }
    }
    let order = load_one_in_tx(&mut tx, &id).await?.ok_or_else(|| {
        ApiError::Internal(anyhow::anyhow!("order vanished inside its transaction"))
    })?;
    tx.commit().await?;
    state.ctx.outbox.wake();
    Ok(Json(order))
}
