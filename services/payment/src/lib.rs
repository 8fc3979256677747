//! The payment service: takes an order's payment through a built-in fake provider, and
//! captures and refunds payments.
//!
//! Publishes `PaymentCompleted`, `PaymentFailed` and `PaymentRefunded`, keyed by payment id.
//! It does not call the order service: whoever drives checkout records the outcome on the
//! order.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use shoplens_contract::{
    DomainEvent, Envelope, PaymentCompleted, PaymentFailed, PaymentRefunded, Service,
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
/// The accepted payment methods.
pub const METHODS: [&str; 3] = ["card", "paypal", "bank_transfer"];
/// Longest refund reason, in characters.
pub const MAX_REASON: usize = 500;
/// The fake provider declines this card token.
pub const TOKEN_DECLINED: &str = "tok_declined";
/// The fake provider leaves a payment with this card token `Pending` until it is captured.
pub const TOKEN_PENDING: &str = "tok_pending";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum PaymentStatus {
    Pending,
    Success,
    Failed,
    Refunded,
}

impl PaymentStatus {
    /// How it is stored (the variant's name).
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Pending => "Pending",
            PaymentStatus::Success => "Success",
            PaymentStatus::Failed => "Failed",
            PaymentStatus::Refunded => "Refunded",
        }
    }
}

/// Reads a stored status.
impl TryFrom<String> for PaymentStatus {
    type Error = String;
    fn try_from(text: String) -> Result<PaymentStatus, String> {
        match text.as_str() {
            "Pending" => Ok(PaymentStatus::Pending),
            "Success" => Ok(PaymentStatus::Success),
            "Failed" => Ok(PaymentStatus::Failed),
            "Refunded" => Ok(PaymentStatus::Refunded),
            other => Err(format!("unknown payment status `{other}` in database")),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema, sqlx::FromRow)]
pub struct Payment {
    pub id: String,
    pub order_id: String,
    #[sqlx(try_from = "String")]
    pub status: PaymentStatus,
    /// `card`, `paypal` or `bank_transfer`.
    pub method: String,
    /// Always with two decimal places (`"42.00"`).
    #[sqlx(try_from = "MoneyText")]
    #[schema(value_type = String, example = "42.00")]
    pub amount: Decimal,
    pub currency: String,
    /// Why the provider refused the payment (only when `Failed`).
    pub failure_reason: Option<String>,
    #[sqlx(try_from = "shoplens_kit::db::Stamp")]
    pub created_at: DateTime<Utc>,
    #[sqlx(try_from = "shoplens_kit::db::Stamp")]
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPayment {
    /// The order being paid (a UUID).
    #[schema(format = Uuid, example = "0190a5b0-7c1e-7d3a-9f00-000000000001")]
    pub order_id: String,
    /// A JSON string, above zero, with at most two decimal places, below 10^16.
    #[serde(with = "rust_decimal::serde::str")]
    #[schema(
        value_type = String,
        pattern = r"^([1-9][0-9]{0,15}(\.[0-9]{1,2})?|0\.(0[1-9]|[1-9][0-9]?))$",
        example = "42.00"
    )]
    pub amount: Decimal,
    /// An ISO 4217 code: three upper-case letters.
    #[schema(
        min_length = 3,
        max_length = 3,
        pattern = "^[A-Z]{3}$",
        example = "EUR"
    )]
    pub currency: String,
    #[schema(value_type = PaymentMethod)]
    pub method: String,
    /// For the fake provider: `tok_declined` fails, `tok_pending` waits for a capture,
    /// anything else (or nothing) succeeds. Never stored.
    #[schema(nullable)]
    pub card_token: Option<String>,
}

/// How a payment is made (the accepted values of `method`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PaymentMethod {
    Card,
    Paypal,
    BankTransfer,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Refund {
    /// Not blank; at most 500 characters (counted after trimming).
    #[schema(
        min_length = 1,
        max_length = 500,
        pattern = r"\S",
        example = "damaged in transit"
    )]
    pub reason: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PaymentQuery {
    /// One order's payments.
    pub order_id: Option<String>,
    /// Comma-separated order ids (at most 100).
    pub order_ids: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PaymentList {
    /// Newest first.
    pub payments: Vec<Payment>,
}

/// Money as SQLite holds it: the decimal's text, so no value is ever rounded through a float.
#[derive(sqlx::Type)]
#[sqlx(transparent)]
struct MoneyText(String);

impl TryFrom<MoneyText> for Decimal {
    type Error = rust_decimal::Error;
    fn try_from(text: MoneyText) -> Result<Decimal, Self::Error> {
        text.0.parse()
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "ShopLens payment service", version = "1"),
    paths(
        create_payment,
        capture_payment,
        refund_payment,
        get_payment,
        list_payments
    ),
    components(schemas(Payment, PaymentStatus, PaymentMethod, NewPayment, Refund, PaymentList))
)]
struct ApiDoc;

/// Starts the service.
pub async fn start(
    config: &ServiceConfig,
    deps: impl Into<shoplens_kit::Deps>,
) -> Result<ServiceHandle, shoplens_kit::Error> {
    let spec = ServiceSpec {
        service: Service::Payment,
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
        // Payments by status (not `Pending`: such a payment published nothing) and amount, by the
        // day of their last change.
        .with(shoplens_kit::ledger::endpoint(
            "payments",
            "SELECT status, updated_at, amount FROM payments WHERE status != 'Pending'",
        ))
        .with(get("/api/v1/payments", SERVICES, list_payments))
        .with(post("/api/v1/payments", SERVICES, create_payment))
        .with(get("/api/v1/payments/{id}", SERVICES, get_payment))
        .with(post(
            "/api/v1/payments/{id}/capture",
            SERVICES,
            capture_payment,
        ))
        .with(post(
            "/api/v1/payments/{id}/refund",
            SERVICES,
            refund_payment,
        ))
}

/// What the built-in fake provider makes of a card token: the status and, if it refused,
/// why.
fn fake_provider(card_token: Option<&str>) -> (PaymentStatus, Option<&'static str>) {
    match card_token {
        Some(TOKEN_DECLINED) => (PaymentStatus::Failed, Some("card declined")),
        Some(TOKEN_PENDING) => (PaymentStatus::Pending, None),
        _ => (PaymentStatus::Success, None),
    }
}

/// `PaymentCompleted` for a payment that just succeeded.
fn completed(p: &Payment) -> DomainEvent {
    PaymentCompleted {
        payment_id: p.id.clone(),
        order_id: p.order_id.clone(),
        amount: p.amount,
        currency: p.currency.clone(),
        method: p.method.clone(),
    }
    .into()
}

/// Checks a new payment and returns its order id in canonical form and its amount with two
/// decimal places.
fn validate(id: &str, req: &NewPayment) -> Result<(String, Decimal), ApiError> {
    let order_id = parse_id("order_id", &req.order_id)?.to_string();
    DomainEvent::from(PaymentCompleted {
        payment_id: id.to_owned(),
        order_id: order_id.clone(),
        amount: req.amount,
        currency: req.currency.clone(),
        method: req.method.clone(),
    })
    .validate()?;
    if req.amount.is_zero() {
        return Err(ApiError::invalid("amount", "must be greater than zero"));
    }
    if !METHODS.contains(&req.method.as_str()) {
        return Err(ApiError::invalid(
            "method",
            format!("must be one of {}", METHODS.join(", ")),
        ));
    }
    let mut amount = req.amount;
    amount.rescale(2);
    Ok((order_id, amount))
}

/// Reads one payment; `lock` inside a write transaction that changes it (see shoplens_kit::db).
async fn find(db: &mut Conn, id: &str, lock: bool) -> Result<Payment, ApiError> {
    let sql = format!(
        "SELECT * FROM payments WHERE id = $1{}",
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
        .ok_or_else(|| ApiError::not_found("payment", id))
}

/// Takes a payment: the fake provider decides at once whether it succeeded, failed or waits
/// for a capture.
#[utoipa::path(post, path = "/api/v1/payments", request_body = NewPayment,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retried request safe")),
    responses((status = 201, body = Payment), (status = 400), (status = 422)))]
async fn create_payment(
    State(ctx): State<ServiceContext>,
    idem: IdempotencyKey,
    ValidJson(req): ValidJson<NewPayment>,
) -> Result<Response, ApiError> {
    let id = uuid::Uuid::now_v7().to_string();
    let (order_id, amount) = validate(&id, &req)?;
    let mut tx = ctx.db.begin().await?;
    if let Some(replay) = idem.replay(&mut tx, "create_payment", &req).await? {
        return Ok(replay.into_response());
    }
    let (status, failure_reason) = fake_provider(req.card_token.as_deref());
    let now = ctx.clock.now();
    let payment = Payment {
        id,
        order_id,
        status,
        method: req.method.clone(),
        amount,
        currency: req.currency.clone(),
        failure_reason: failure_reason.map(str::to_owned),
        created_at: now,
        updated_at: now,
    };
    sqlx::query(
        "INSERT INTO payments (id, order_id, status, method, amount, currency, failure_reason,
                               created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&payment.id)
    .bind(&payment.order_id)
    .bind(payment.status.as_str())
    .bind(&payment.method)
    .bind(payment.amount.to_string())
    .bind(&payment.currency)
    .bind(&payment.failure_reason)
    .bind(shoplens_kit::db::stamp(now))
    .bind(shoplens_kit::db::stamp(now))
    .execute(&mut *tx)
    .await?;
    let event = match payment.status {
        PaymentStatus::Success => Some(completed(&payment)),
        PaymentStatus::Failed => Some(DomainEvent::from(PaymentFailed {
            payment_id: payment.id.clone(),
            order_id: payment.order_id.clone(),
            amount: payment.amount,
            currency: payment.currency.clone(),
            method: payment.method.clone(),
            reason: payment.failure_reason.clone().unwrap_or_default(),
        })),
        // A pending payment is announced when it is captured.
        PaymentStatus::Pending | PaymentStatus::Refunded => None,
    };
    if let Some(event) = event {
        ctx.outbox
            .enqueue(&mut tx, &Envelope::at(event, now))
            .await?;
    }
    idem.store(
        &mut tx,
        "create_payment",
        &req,
        StatusCode::CREATED,
        &payment,
    )
    .await?;
    tx.commit().await?;
    ctx.outbox.wake();
    Ok((StatusCode::CREATED, Json(payment)).into_response())
}

/// Moves payment `id` from `from` to `to` and publishes `event` of the changed payment, in
/// one transaction; 409 `illegal_transition` if the payment is not in `from`.
async fn transition(
    ctx: &ServiceContext,
    id: &str,
    from: PaymentStatus,
    to: PaymentStatus,
    event: impl FnOnce(&Payment) -> DomainEvent,
) -> Result<Payment, ApiError> {
    let id = parse_id("id", id)?.to_string();
    let mut tx = ctx.db.begin().await?;
    let mut payment = find(&mut tx, &id, true).await?;
    if payment.status != from {
        return Err(ApiError::conflict(
            "illegal_transition",
            format!(
                "a {:?} payment cannot become {to:?} (only a {from:?} one can)",
                payment.status
            ),
        ));
    }
    payment.status = to;
    payment.updated_at = ctx.clock.now();
    sqlx::query("UPDATE payments SET status = $1, updated_at = $2 WHERE id = $3")
        .bind(payment.status.as_str())
        .bind(shoplens_kit::db::stamp(payment.updated_at))
        .bind(&id)
        .execute(&mut *tx)
        .await?;
    let envelope = Envelope::at(event(&payment), payment.updated_at);
    ctx.outbox.enqueue(&mut tx, &envelope).await?;
    tx.commit().await?;
    ctx.outbox.wake();
    Ok(payment)
}

/// Captures a `Pending` payment: it becomes `Success`.
#[utoipa::path(post, path = "/api/v1/payments/{id}/capture",
    params(("id" = uuid::Uuid, Path, description = "Payment id (UUID)")),
    responses((status = 200, body = Payment), (status = 400), (status = 404), (status = 409)))]
async fn capture_payment(
    State(ctx): State<ServiceContext>,
    Path(id): Path<String>,
) -> Result<Json<Payment>, ApiError> {
    let payment = transition(
        &ctx,
        &id,
        PaymentStatus::Pending,
        PaymentStatus::Success,
        completed,
    )
    .await?;
    Ok(Json(payment))
}

/// Refunds a `Success` payment in full: it becomes `Refunded`.
#[utoipa::path(post, path = "/api/v1/payments/{id}/refund", request_body = Refund,
    params(("id" = uuid::Uuid, Path, description = "Payment id (UUID)")),
    responses((status = 200, body = Payment), (status = 400), (status = 404), (status = 409), (status = 422)))]
async fn refund_payment(
    State(ctx): State<ServiceContext>,
    Path(id): Path<String>,
    ValidJson(req): ValidJson<Refund>,
) -> Result<Json<Payment>, ApiError> {
    let reason = req.reason.trim().to_owned();
    if reason.is_empty() {
        return Err(ApiError::invalid("reason", "must not be blank"));
    }
    if reason.chars().count() > MAX_REASON {
        return Err(ApiError::invalid(
            "reason",
            format!("must be at most {MAX_REASON} characters"),
        ));
    }
    let payment = transition(
        &ctx,
        &id,
        PaymentStatus::Success,
        PaymentStatus::Refunded,
        |p| {
            PaymentRefunded {
                payment_id: p.id.clone(),
                order_id: p.order_id.clone(),
                amount: p.amount,
                currency: p.currency.clone(),
                reason,
            }
            .into()
        },
    )
    .await?;
    Ok(Json(payment))
}

/// One payment.
#[utoipa::path(get, path = "/api/v1/payments/{id}",
    params(("id" = uuid::Uuid, Path, description = "Payment id (UUID)")),
    responses((status = 200, body = Payment), (status = 400), (status = 404)))]
async fn get_payment(
    State(ctx): State<ServiceContext>,
    Path(id): Path<String>,
) -> Result<Json<Payment>, ApiError> {
    let id = parse_id("id", &id)?.to_string();
    let mut conn = ctx.db.reader.acquire().await?;
    Ok(Json(find(&mut conn, &id, false).await?))
}

/// The order ids a look-up asks for: `order_id` or `order_ids`, exactly one of them.
fn requested_orders(q: &PaymentQuery) -> Result<Vec<String>, ApiError> {
    one_or_many_ids(
        ("order_id", q.order_id.as_deref()),
        ("order_ids", q.order_ids.as_deref()),
        MAX_BATCH,
    )
}

/// Every payment attempt of one order (`?order_id=`) or of several (`?order_ids=a,b`),
/// newest first.
#[utoipa::path(get, path = "/api/v1/payments", params(PaymentQuery),
    responses((status = 200, body = PaymentList), (status = 400), (status = 422)))]
async fn list_payments(
    State(ctx): State<ServiceContext>,
    ValidQuery(q): ValidQuery<PaymentQuery>,
) -> Result<Json<PaymentList>, ApiError> {
    let order_ids = requested_orders(&q)?;
    let mut payments: Vec<Payment> = fetch_by_ids(
        &ctx.db.reader,
        "SELECT * FROM payments WHERE order_id IN",
        &order_ids,
    )
    .await?;
    // UUIDv7 ids order payments made within the same instant.
    payments.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
    Ok(Json(PaymentList { payments }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fake_provider_follows_the_card_token() {
        assert_eq!(
            fake_provider(Some("tok_declined")),
            (PaymentStatus::Failed, Some("card declined"))
        );
        assert_eq!(
            fake_provider(Some("tok_pending")),
            (PaymentStatus::Pending, None)
        );
        assert_eq!(
            fake_provider(Some("tok_visa")),
            (PaymentStatus::Success, None)
        );
        assert_eq!(fake_provider(None), (PaymentStatus::Success, None));
    }
}
