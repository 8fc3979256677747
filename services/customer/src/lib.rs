//! The customer service: registers customers and keeps their contact details.
//!
//! Publishes `CustomerRegistered` and `CustomerUpdated`. Answers look-ups by id, one or many
//! at a time, for the order service and the composer.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shoplens_contract::{CustomerRegistered, CustomerUpdated, DomainEvent, Envelope, Service};
use shoplens_kit::access::rules::SERVICES;
use shoplens_kit::access::{Endpoints, get, patch, post};
use shoplens_kit::config::ServiceConfig;
use shoplens_kit::db::fetch_by_ids;
use shoplens_kit::http::{parse_id, parse_id_list};
use shoplens_kit::idempotency::IdempotencyKey;
use shoplens_kit::{ApiError, ServiceContext, ServiceHandle, ServiceSpec, ValidJson, ValidQuery};
use utoipa::{IntoParams, OpenApi, ToSchema};

/// Most ids one batch look-up may ask for.
pub const MAX_BATCH: usize = 100;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema, sqlx::FromRow)]
pub struct Customer {
    pub id: String,
    pub name: String,
    pub email: String,
    pub country: String,
    #[sqlx(try_from = "shoplens_kit::db::Stamp")]
    pub created_at: DateTime<Utc>,
    #[sqlx(try_from = "shoplens_kit::db::Stamp")]
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCustomer {
    /// Not blank; at most 200 characters.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"\S",
        example = "Ada Lovelace"
    )]
    pub name: String,
    /// Contains `@`; at most 320 characters; unique among customers (409 `email_taken`).
    #[schema(format = Email, min_length = 1, max_length = 320, pattern = "@", example = "ada@example.com")]
    pub email: String,
    /// Not blank; at most 64 characters.
    #[schema(min_length = 1, max_length = 64, pattern = r"\S", example = "GB")]
    pub country: String,
}

/// Fields to change; absent fields keep their value.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomerPatch {
    /// Not blank; at most 200 characters.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"\S",
        example = "Ada Lovelace"
    )]
    pub name: Option<String>,
    /// Contains `@`; at most 320 characters; unique among customers (409 `email_taken`).
    #[schema(format = Email, min_length = 1, max_length = 320, pattern = "@", example = "ada@example.com")]
    pub email: Option<String>,
    /// Not blank; at most 64 characters.
    #[schema(min_length = 1, max_length = 64, pattern = r"\S", example = "GB")]
    pub country: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct BatchQuery {
    /// Comma-separated customer ids (at most 100).
    pub ids: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CustomerBatch {
    pub customers: Vec<Customer>,
    /// Requested ids that do not exist.
    pub missing: Vec<String>,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "ShopLens customer service", version = "1"),
    paths(create_customer, get_customer, update_customer, batch_customers),
    components(schemas(Customer, NewCustomer, CustomerPatch, CustomerBatch))
)]
struct ApiDoc;

/// Starts the service.
pub async fn start(
    config: &ServiceConfig,
    deps: impl Into<shoplens_kit::Deps>,
) -> Result<ServiceHandle, shoplens_kit::Error> {
    let spec = ServiceSpec {
        service: Service::Customer,
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
        // Customers by the day they registered.
        .with(shoplens_kit::ledger::endpoint(
            "customers",
            "SELECT 'registered', created_at, NULL FROM customers",
        ))
        .with(get("/api/v1/customers", SERVICES, batch_customers))
        .with(post("/api/v1/customers", SERVICES, create_customer))
        .with(get("/api/v1/customers/{id}", SERVICES, get_customer))
        .with(patch("/api/v1/customers/{id}", SERVICES, update_customer))
}

fn validate(id: &str, name: &str, email: &str, country: &str) -> Result<(), ApiError> {
    DomainEvent::from(CustomerRegistered {
        customer_id: id.to_owned(),
        name: name.to_owned(),
        email: email.to_owned(),
        country: country.to_owned(),
    })
    .validate()?;
    Ok(())
}

async fn find(ctx: &ServiceContext, id: &str) -> Result<Option<Customer>, ApiError> {
    Ok(sqlx::query_as("SELECT * FROM customers WHERE id = $1")
        .bind(id)
        .fetch_optional(&ctx.db.reader)
        .await?)
}

fn email_taken(e: sqlx::Error) -> ApiError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            ApiError::conflict("email_taken", "a customer with this email already exists")
        }
        _ => e.into(),
    }
}

/// Registers a customer.
#[utoipa::path(post, path = "/api/v1/customers", request_body = NewCustomer,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retried request safe")),
    responses((status = 201, body = Customer), (status = 400), (status = 409), (status = 422)))]
async fn create_customer(
    State(ctx): State<ServiceContext>,
    idem: IdempotencyKey,
    ValidJson(req): ValidJson<NewCustomer>,
) -> Result<Response, ApiError> {
    let id = uuid::Uuid::now_v7().to_string();
    validate(&id, &req.name, &req.email, &req.country)?;
    let mut tx = ctx.db.begin().await?;
    if let Some(replay) = idem.replay(&mut tx, "create_customer", &req).await? {
        return Ok(replay.into_response());
    }
    let now = ctx.clock.now();
    let customer = Customer {
        id,
        name: req.name.trim().to_owned(),
        email: req.email.trim().to_owned(),
        country: req.country.trim().to_owned(),
        created_at: now,
        updated_at: now,
    };
    sqlx::query("INSERT INTO customers (id, name, email, country, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(&customer.id)
        .bind(&customer.name)
        .bind(&customer.email)
        .bind(&customer.country)
        .bind(shoplens_kit::db::stamp(now))
        .bind(shoplens_kit::db::stamp(now))
        .execute(&mut *tx)
        .await
        .map_err(email_taken)?;
    let event = Envelope::at(
        CustomerRegistered {
            customer_id: customer.id.clone(),
            name: customer.name.clone(),
            email: customer.email.clone(),
            country: customer.country.clone(),
        },
        now,
    );
    ctx.outbox.enqueue(&mut tx, &event).await?;
    idem.store(
        &mut tx,
        "create_customer",
        &req,
        StatusCode::CREATED,
        &customer,
    )
    .await?;
    tx.commit().await?;
    ctx.outbox.wake();
    Ok((StatusCode::CREATED, Json(customer)).into_response())
}

/// One customer.
#[utoipa::path(get, path = "/api/v1/customers/{id}",
    params(("id" = uuid::Uuid, Path, description = "Customer id (UUID)")),
    responses((status = 200, body = Customer), (status = 400), (status = 404)))]
async fn get_customer(
    State(ctx): State<ServiceContext>,
    Path(id): Path<String>,
) -> Result<Json<Customer>, ApiError> {
    parse_id("id", &id)?;
    find(&ctx, &id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("customer", id))
}

/// Changes a customer's details.
#[utoipa::path(patch, path = "/api/v1/customers/{id}", request_body = CustomerPatch,
    params(("id" = uuid::Uuid, Path, description = "Customer id (UUID)")),
    responses((status = 200, body = Customer), (status = 400), (status = 404), (status = 409), (status = 422)))]
async fn update_customer(
    State(ctx): State<ServiceContext>,
    Path(id): Path<String>,
    ValidJson(patch): ValidJson<CustomerPatch>,
) -> Result<Json<Customer>, ApiError> {
    parse_id("id", &id)?;
    let mut tx = ctx.db.begin().await?;
    // Locked until the transaction ends: see shoplens_kit::db.
    let sql = format!(
        "SELECT * FROM customers WHERE id = $1{}",
        shoplens_kit::db::for_update(&tx)
    );
    let current: Option<Customer> = sqlx::query_as(&sql)
        .bind(&id)
        .fetch_optional(&mut *tx)
        .await?;
    let mut customer = current.ok_or_else(|| ApiError::not_found("customer", &id))?;
    if let Some(name) = patch.name {
        customer.name = name.trim().to_owned();
    }
    if let Some(email) = patch.email {
        customer.email = email.trim().to_owned();
    }
    if let Some(country) = patch.country {
        customer.country = country.trim().to_owned();
    }
    validate(&id, &customer.name, &customer.email, &customer.country)?;
    customer.updated_at = ctx.clock.now();
    sqlx::query(
        "UPDATE customers SET name = $1, email = $2, country = $3, updated_at = $4 WHERE id = $5",
    )
    .bind(&customer.name)
    .bind(&customer.email)
    .bind(&customer.country)
    .bind(shoplens_kit::db::stamp(customer.updated_at))
    .bind(&id)
    .execute(&mut *tx)
    .await
    .map_err(email_taken)?;
    let event = Envelope::at(
        CustomerUpdated {
            customer_id: id.clone(),
            name: customer.name.clone(),
            email: customer.email.clone(),
            country: customer.country.clone(),
        },
        customer.updated_at,
    );
    ctx.outbox.enqueue(&mut tx, &event).await?;
    tx.commit().await?;
    ctx.outbox.wake();
    Ok(Json(customer))
}

/// Many customers by id in one call.
#[utoipa::path(get, path = "/api/v1/customers", params(BatchQuery),
    responses((status = 200, body = CustomerBatch), (status = 400), (status = 422)))]
async fn batch_customers(
    State(ctx): State<ServiceContext>,
    ValidQuery(q): ValidQuery<BatchQuery>,
) -> Result<Json<CustomerBatch>, ApiError> {
    let ids = parse_id_list("ids", &q.ids, MAX_BATCH)?;
    let ids: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
    let customers: Vec<Customer> =
        fetch_by_ids(&ctx.db.reader, "SELECT * FROM customers WHERE id IN", &ids).await?;
    let missing = ids
        .into_iter()
        .filter(|id| !customers.iter().any(|c| &c.id == id))
        .collect();
    Ok(Json(CustomerBatch { customers, missing }))
}
