//! The shipping service: ships an order and follows each shipment until it is delivered.
//!
//! Publishes `ShipmentCreated`, `ShipmentLocationUpdated` and `ShipmentDelivered`, keyed by
//! shipment id. It does not call the order service: whoever drives checkout records the
//! progress on the order.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shoplens_contract::{
    DomainEvent, Envelope, Service, ShipmentCreated, ShipmentDelivered, ShipmentLocationUpdated,
};
use shoplens_kit::access::rules::SERVICES;
use shoplens_kit::access::{Endpoints, get, post};
use shoplens_kit::config::ServiceConfig;
use shoplens_kit::db::{Conn, fetch_by_ids};
use shoplens_kit::http::{one_or_many_ids, parse_id};
use shoplens_kit::idempotency::IdempotencyKey;
use shoplens_kit::{ApiError, ServiceContext, ServiceHandle, ServiceSpec, ValidJson, ValidQuery};
use utoipa::{IntoParams, OpenApi, ToSchema};

/// Most orders one look-up may ask for.
pub const MAX_BATCH: usize = 100;

/// Where a shipment is in its life: `Created`, then `InTransit` from its first location
/// update, then `Delivered`, after which it no longer changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum ShipmentStatus {
    Created,
    InTransit,
    Delivered,
}

impl ShipmentStatus {
    /// How it is stored (the variant's name).
    pub fn as_str(self) -> &'static str {
        match self {
            ShipmentStatus::Created => "Created",
            ShipmentStatus::InTransit => "InTransit",
            ShipmentStatus::Delivered => "Delivered",
        }
    }
}

/// Reads a stored status.
impl TryFrom<String> for ShipmentStatus {
    type Error = String;
    fn try_from(text: String) -> Result<ShipmentStatus, String> {
        match text.as_str() {
            "Created" => Ok(ShipmentStatus::Created),
            "InTransit" => Ok(ShipmentStatus::InTransit),
            "Delivered" => Ok(ShipmentStatus::Delivered),
            other => Err(format!("unknown shipping status `{other}` in database")),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema, sqlx::FromRow)]
pub struct Shipment {
    pub id: String,
    pub order_id: String,
    pub carrier: String,
    #[sqlx(try_from = "String")]
    pub status: ShipmentStatus,
    /// Where the shipment was last seen.
    pub location: String,
    /// When it is expected to arrive.
    #[sqlx(try_from = "shoplens_kit::db::Stamp")]
    pub eta: DateTime<Utc>,
    #[sqlx(try_from = "shoplens_kit::db::Stamp")]
    pub created_at: DateTime<Utc>,
    #[sqlx(try_from = "shoplens_kit::db::Stamp")]
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewShipment {
    /// The order being shipped (a UUID).
    #[schema(format = Uuid, example = "0190a5b0-7c1e-7d3a-9f00-000000000001")]
    pub order_id: String,
    /// Not blank; at most 64 characters (counted after trimming).
    #[schema(min_length = 1, max_length = 64, pattern = r"\S", example = "DHL")]
    pub carrier: String,
    /// Where the shipment starts. Not blank; at most 200 characters (counted after trimming).
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"\S",
        example = "Leipzig hub"
    )]
    pub location: String,
    /// RFC 3339.
    pub eta: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LocationUpdate {
    /// Not blank; at most 200 characters (counted after trimming).
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"\S",
        example = "Berlin depot"
    )]
    pub location: String,
    /// A new estimate (RFC 3339); absent or null keeps the current one.
    #[schema(nullable)]
    pub eta: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Delivery {
    /// Where it was delivered. Not blank; at most 200 characters (counted after trimming).
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"\S",
        example = "front door"
    )]
    pub location: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ShipmentQuery {
    /// One order's shipments.
    pub order_id: Option<String>,
    /// Comma-separated order ids (at most 100).
    pub order_ids: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ShipmentList {
    /// Newest first.
    pub shipments: Vec<Shipment>,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "ShopLens shipping service", version = "1"),
    paths(
        create_shipment,
        update_location,
        deliver_shipment,
        get_shipment,
        list_shipments
    ),
    components(schemas(
        Shipment,
        ShipmentStatus,
        NewShipment,
        LocationUpdate,
        Delivery,
        ShipmentList
    ))
)]
struct ApiDoc;

/// Starts the service.
pub async fn start(
    config: &ServiceConfig,
    deps: impl Into<shoplens_kit::Deps>,
) -> Result<ServiceHandle, shoplens_kit::Error> {
    let spec = ServiceSpec {
        service: Service::Shipping,
        migrations: shoplens_kit::migrations!(),
    };
    shoplens_kit::service::start(spec, config, deps, |ctx| {
        let openapi = serde_json::to_value(ApiDoc::openapi()).ok();
        (endpoints().with_state(ctx.clone(), &ctx.verifier), openapi)
    })
    .await
}

/// The rules of the service's endpoints, for the access tests.
pub fn rules() -> Vec<shoplens_kit::access::Rule> {
    endpoints().rules()
}

/// The service's endpoints: only other ShopLens servers (and admins) call them.
fn endpoints() -> Endpoints<ServiceContext> {
    Endpoints::new()
        // Shipments by status, by the day of their last change.
        .with(shoplens_kit::ledger::endpoint(
            "shipments",
            "SELECT status, updated_at, NULL FROM shipments",
        ))
        .with(get("/api/v1/shipments", SERVICES, list_shipments))
        .with(post("/api/v1/shipments", SERVICES, create_shipment))
        .with(get("/api/v1/shipments/{id}", SERVICES, get_shipment))
        .with(post(
            "/api/v1/shipments/{id}/locations",
            SERVICES,
            update_location,
        ))
        .with(post(
            "/api/v1/shipments/{id}/deliver",
            SERVICES,
            deliver_shipment,
        ))
}

/// Reads one shipping; `lock` inside a write transaction that changes it (see shoplens_kit::db).
async fn find(db: &mut Conn, id: &str, lock: bool) -> Result<Shipment, ApiError> {
    let sql = format!(
        "SELECT * FROM shipments WHERE id = $1{}",
        if lock {
            shoplens_kit::db::for_update(db)
        } else {
            ""
        }
    );
    sqlx::query_as(&sql)
        .bind(id)
        .fetch_optional(db)
        .await?
        .ok_or_else(|| ApiError::not_found("shipment", id))
}

/// Ships an order.
#[utoipa::path(post, path = "/api/v1/shipments", request_body = NewShipment,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retried request safe")),
    responses((status = 201, body = Shipment), (status = 400), (status = 422)))]
async fn create_shipment(
    State(ctx): State<ServiceContext>,
    idem: IdempotencyKey,
    ValidJson(req): ValidJson<NewShipment>,
) -> Result<Response, ApiError> {
    let id = uuid::Uuid::now_v7().to_string();
    let order_id = parse_id("order_id", &req.order_id)?.to_string();
    let created = ShipmentCreated {
        shipment_id: id.clone(),
        order_id,
        carrier: req.carrier.trim().to_owned(),
        location: req.location.trim().to_owned(),
        eta: req.eta,
    };
    DomainEvent::from(created.clone()).validate()?;
    let mut tx = ctx.db.begin().await?;
    if let Some(replay) = idem.replay(&mut tx, "create_shipment", &req).await? {
        return Ok(replay.into_response());
    }
    let now = ctx.clock.now();
    let shipment = Shipment {
        id,
        order_id: created.order_id.clone(),
        carrier: created.carrier.clone(),
        status: ShipmentStatus::Created,
        location: created.location.clone(),
        eta: created.eta,
        created_at: now,
        updated_at: now,
    };
    sqlx::query(
        "INSERT INTO shipments (id, order_id, carrier, status, location, eta, created_at,
                                updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&shipment.id)
    .bind(&shipment.order_id)
    .bind(&shipment.carrier)
    .bind(shipment.status.as_str())
    .bind(&shipment.location)
    .bind(shoplens_kit::db::stamp(shipment.eta))
    .bind(shoplens_kit::db::stamp(now))
    .bind(shoplens_kit::db::stamp(now))
    .execute(&mut *tx)
    .await?;
    ctx.outbox
        .enqueue(&mut tx, &Envelope::at(created, now))
        .await?;
    idem.store(
        &mut tx,
        "create_shipment",
        &req,
        StatusCode::CREATED,
        &shipment,
    )
    .await?;
    tx.commit().await?;
    ctx.outbox.wake();
    Ok((StatusCode::CREATED, Json(shipment)).into_response())
}

/// Applies `change` to shipment `id` and publishes the event it returns, in one transaction:
/// 409 `illegal_transition` once the shipment is delivered, 422 if the event's values are
/// not acceptable.
async fn advance(
    ctx: &ServiceContext,
    id: &str,
    change: impl FnOnce(&mut Shipment) -> DomainEvent,
) -> Result<Shipment, ApiError> {
    let id = parse_id("id", id)?.to_string();
    let mut tx = ctx.db.begin().await?;
    let mut shipment = find(&mut tx, &id, true).await?;
    if shipment.status == ShipmentStatus::Delivered {
        return Err(ApiError::conflict(
            "illegal_transition",
            "the shipment is already delivered",
        ));
    }
    let event = change(&mut shipment);
    event.validate()?;
    shipment.updated_at = ctx.clock.now();
    sqlx::query(
        "UPDATE shipments SET status = $1, location = $2, eta = $3, updated_at = $4 WHERE id = $5",
    )
    .bind(shipment.status.as_str())
    .bind(&shipment.location)
    .bind(shoplens_kit::db::stamp(shipment.eta))
    .bind(shoplens_kit::db::stamp(shipment.updated_at))
    .bind(&id)
    .execute(&mut *tx)
    .await?;
    ctx.outbox
        .enqueue(&mut tx, &Envelope::at(event, shipment.updated_at))
        .await?;
    tx.commit().await?;
    ctx.outbox.wake();
    Ok(shipment)
}

/// Records where a shipment is now (and optionally a new ETA): it is `InTransit`.
#[utoipa::path(post, path = "/api/v1/shipments/{id}/locations", request_body = LocationUpdate,
    params(("id" = uuid::Uuid, Path, description = "Shipment id (UUID)")),
    responses((status = 200, body = Shipment), (status = 400), (status = 404), (status = 409), (status = 422)))]
async fn update_location(
    State(ctx): State<ServiceContext>,
    Path(id): Path<String>,
    ValidJson(req): ValidJson<LocationUpdate>,
) -> Result<Json<Shipment>, ApiError> {
    let shipment = advance(&ctx, &id, |s| {
        s.status = ShipmentStatus::InTransit;
        s.location = req.location.trim().to_owned();
        s.eta = req.eta.unwrap_or(s.eta);
        ShipmentLocationUpdated {
            shipment_id: s.id.clone(),
            order_id: s.order_id.clone(),
            location: s.location.clone(),
            eta: s.eta,
        }
        .into()
    })
    .await?;
    Ok(Json(shipment))
}

/// Records the delivery: the shipment is `Delivered` and changes no more.
#[utoipa::path(post, path = "/api/v1/shipments/{id}/deliver", request_body = Delivery,
    params(("id" = uuid::Uuid, Path, description = "Shipment id (UUID)")),
    responses((status = 200, body = Shipment), (status = 400), (status = 404), (status = 409), (status = 422)))]
async fn deliver_shipment(
    State(ctx): State<ServiceContext>,
    Path(id): Path<String>,
    ValidJson(req): ValidJson<Delivery>,
) -> Result<Json<Shipment>, ApiError> {
    let shipment = advance(&ctx, &id, |s| {
        s.status = ShipmentStatus::Delivered;
        s.location = req.location.trim().to_owned();
        ShipmentDelivered {
            shipment_id: s.id.clone(),
            order_id: s.order_id.clone(),
            location: s.location.clone(),
        }
        .into()
    })
    .await?;
    Ok(Json(shipment))
}

/// One shipment.
#[utoipa::path(get, path = "/api/v1/shipments/{id}",
    params(("id" = uuid::Uuid, Path, description = "Shipment id (UUID)")),
    responses((status = 200, body = Shipment), (status = 400), (status = 404)))]
async fn get_shipment(
    State(ctx): State<ServiceContext>,
    Path(id): Path<String>,
) -> Result<Json<Shipment>, ApiError> {
    let id = parse_id("id", &id)?.to_string();
    let mut conn = ctx.db.reader.acquire().await?;
    Ok(Json(find(&mut conn, &id, false).await?))
}

/// The order ids a look-up asks for: `order_id` or `order_ids`, exactly one of them.
fn requested_orders(q: &ShipmentQuery) -> Result<Vec<String>, ApiError> {
    one_or_many_ids(
        ("order_id", q.order_id.as_deref()),
        ("order_ids", q.order_ids.as_deref()),
        MAX_BATCH,
    )
}

/// The shipments of one order (`?order_id=`) or of several (`?order_ids=a,b`), newest first.
#[utoipa::path(get, path = "/api/v1/shipments", params(ShipmentQuery),
    responses((status = 200, body = ShipmentList), (status = 400), (status = 422)))]
async fn list_shipments(
    State(ctx): State<ServiceContext>,
    ValidQuery(q): ValidQuery<ShipmentQuery>,
) -> Result<Json<ShipmentList>, ApiError> {
    let order_ids = requested_orders(&q)?;
    let mut shipments: Vec<Shipment> = fetch_by_ids(
        &ctx.db.reader,
        "SELECT * FROM shipments WHERE order_id IN",
        &order_ids,
    )
    .await?;
    // UUIDv7 ids order shipments made within the same instant.
    shipments.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
    Ok(Json(ShipmentList { shipments }))
}
