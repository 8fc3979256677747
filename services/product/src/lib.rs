//! The product service: the catalogue, each product with its SKU and current price.
//!
//! Publishes `ProductCreated` and `ProductPriceChanged`. Answers look-ups by id, one or many
//! at a time, for the order service (which snapshots prices into order lines) and the
//! composer.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use shoplens_contract::{DomainEvent, Envelope, ProductCreated, ProductPriceChanged, Service};
use shoplens_kit::access::rules::SERVICES;
use shoplens_kit::access::{Endpoints, get, post, put};
use shoplens_kit::config::ServiceConfig;
use shoplens_kit::db::Conn;
use shoplens_kit::db::fetch_by_ids;
use shoplens_kit::http::{parse_id, parse_id_list};
use shoplens_kit::idempotency::IdempotencyKey;
use shoplens_kit::{ApiError, ServiceContext, ServiceHandle, ServiceSpec, ValidJson, ValidQuery};
use utoipa::{IntoParams, OpenApi, ToSchema};

/// Most ids one batch look-up may ask for.
pub const MAX_BATCH: usize = 100;
/// Longest product description, in characters.
pub const MAX_DESCRIPTION: usize = 2000;
/// Longest image URL, in characters.
pub const MAX_IMAGE_URL: usize = 500;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema, sqlx::FromRow)]
pub struct Product {
    pub id: String,
    pub sku: String,
    pub name: String,
    pub description: String,
    pub category: String,
    pub image_url: Option<String>,
    /// Always with two decimal places (`"19.90"`).
    #[sqlx(try_from = "MoneyText")]
    #[schema(value_type = String, example = "19.90")]
    pub price: Decimal,
    pub currency: String,
    #[sqlx(try_from = "shoplens_kit::db::Stamp")]
    pub created_at: DateTime<Utc>,
    #[sqlx(try_from = "shoplens_kit::db::Stamp")]
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewProduct {
    /// Not blank; at most 64 characters; unique in the catalogue (409 `sku_taken`).
    #[schema(min_length = 1, max_length = 64, pattern = r"\S", example = "SKU-0001")]
    pub sku: String,
    /// Not blank; at most 200 characters.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"\S",
        example = "Espresso cup"
    )]
    pub name: String,
    /// May be empty; at most 2000 characters.
    #[schema(max_length = 2000, example = "A small cup.")]
    pub description: String,
    /// Not blank; at most 100 characters.
    #[schema(min_length = 1, max_length = 100, pattern = r"\S", example = "kitchen")]
    pub category: String,
    /// Omitted or null for none; otherwise not blank and at most 500 characters.
    #[schema(
        nullable,
        min_length = 1,
        max_length = 500,
        pattern = r"\S",
        example = "https://example.com/cup.png"
    )]
    pub image_url: Option<String>,
    /// A JSON string: not negative, at most two decimal places, below 10^16.
    #[serde(with = "rust_decimal::serde::str")]
    #[schema(value_type = String, pattern = r"^[0-9]{1,16}(\.[0-9]{1,2})?$", example = "19.90")]
    pub price: Decimal,
    /// An ISO 4217 code: three upper-case letters.
    #[schema(
        min_length = 3,
        max_length = 3,
        pattern = "^[A-Z]{3}$",
        example = "EUR"
    )]
    pub currency: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PriceChange {
    /// A JSON string: not negative, at most two decimal places, below 10^16.
    #[serde(with = "rust_decimal::serde::str")]
    #[schema(value_type = String, pattern = r"^[0-9]{1,16}(\.[0-9]{1,2})?$", example = "17.50")]
    pub price: Decimal,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct BatchQuery {
    /// Comma-separated product ids (at most 100).
    pub ids: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProductBatch {
    pub products: Vec<Product>,
    /// Requested ids that do not exist.
    pub missing: Vec<String>,
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

/// Checks `value` against the contract's money rules and gives it exactly two decimal places.
fn money(field: &str, value: Decimal) -> Result<Decimal, ApiError> {
    shoplens_contract::check_money(field, value)?;
    let mut value = if value.is_zero() {
        Decimal::ZERO
    } else {
        value
    };
    value.rescale(2);
    Ok(value)
}

#[derive(OpenApi)]
#[openapi(
    info(title = "ShopLens product service", version = "1"),
    paths(create_product, get_product, change_price, batch_products),
    components(schemas(Product, NewProduct, PriceChange, ProductBatch))
)]
struct ApiDoc;

/// Starts the service.
pub async fn start(
    config: &ServiceConfig,
    deps: impl Into<shoplens_kit::Deps>,
) -> Result<ServiceHandle, shoplens_kit::Error> {
    let spec = ServiceSpec {
        service: Service::Product,
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
        // Products by the day they were created.
        .with(shoplens_kit::ledger::endpoint(
            "products",
            "SELECT 'created', created_at, NULL FROM products",
        ))
        .with(get("/api/v1/products", SERVICES, batch_products))
        .with(post("/api/v1/products", SERVICES, create_product))
        .with(get("/api/v1/products/{id}", SERVICES, get_product))
        .with(put("/api/v1/products/{id}/price", SERVICES, change_price))
}

/// Validates a new product (the event's rules plus the fields the event does not carry) and
/// returns it trimmed, with its price in canonical form.
fn validate(id: &str, req: &NewProduct) -> Result<NewProduct, ApiError> {
    let product = NewProduct {
        sku: req.sku.trim().to_owned(),
        name: req.name.trim().to_owned(),
        description: req.description.trim().to_owned(),
        category: req.category.trim().to_owned(),
        image_url: req.image_url.as_ref().map(|u| u.trim().to_owned()),
        price: money("price", req.price)?,
        currency: req.currency.clone(),
    };
    DomainEvent::from(ProductCreated {
        product_id: id.to_owned(),
        sku: product.sku.clone(),
        name: product.name.clone(),
        category: product.category.clone(),
        price: product.price,
        currency: product.currency.clone(),
    })
    .validate()?;
    if product.description.chars().count() > MAX_DESCRIPTION {
        return Err(ApiError::invalid(
            "description",
            format!("must be at most {MAX_DESCRIPTION} characters"),
        ));
    }
    if let Some(url) = &product.image_url {
        if url.is_empty() {
            return Err(ApiError::invalid(
                "image_url",
                "must not be blank (omit it or use null)",
            ));
        }
        if url.chars().count() > MAX_IMAGE_URL {
            return Err(ApiError::invalid(
                "image_url",
                format!("must be at most {MAX_IMAGE_URL} characters"),
            ));
        }
    }
    Ok(product)
}

/// Reads one product; `lock` inside a write transaction that changes it (see shoplens_kit::db).
async fn find(db: &mut Conn, id: &str, lock: bool) -> Result<Option<Product>, ApiError> {
    let sql = format!(
        "SELECT * FROM products WHERE id = $1{}",
        if lock {
            shoplens_kit::db::for_update(db)
        } else {
            ""
        }
    );
    Ok(sqlx::query_as(&sql).bind(id).fetch_optional(db).await?)
}

fn sku_taken(e: sqlx::Error) -> ApiError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            ApiError::conflict("sku_taken", "a product with this SKU already exists")
        }
        _ => e.into(),
    }
}

/// Adds a product to the catalogue.
#[utoipa::path(post, path = "/api/v1/products", request_body = NewProduct,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retried request safe")),
    responses((status = 201, body = Product), (status = 400), (status = 409), (status = 422)))]
async fn create_product(
    State(ctx): State<ServiceContext>,
    idem: IdempotencyKey,
    ValidJson(req): ValidJson<NewProduct>,
) -> Result<Response, ApiError> {
    let id = uuid::Uuid::now_v7().to_string();
    let new = validate(&id, &req)?;
    let mut tx = ctx.db.begin().await?;
    if let Some(replay) = idem.replay(&mut tx, "create_product", &req).await? {
        return Ok(replay.into_response());
    }
    let now = ctx.clock.now();
    let product = Product {
        id,
        sku: new.sku,
        name: new.name,
        description: new.description,
        category: new.category,
        image_url: new.image_url,
        price: new.price,
        currency: new.currency,
        created_at: now,
        updated_at: now,
    };
    sqlx::query(
        "INSERT INTO products (id, sku, name, description, category, image_url, price, currency,
                               created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(&product.id)
    .bind(&product.sku)
    .bind(&product.name)
    .bind(&product.description)
    .bind(&product.category)
    .bind(&product.image_url)
    .bind(product.price.to_string())
    .bind(&product.currency)
    .bind(shoplens_kit::db::stamp(now))
    .bind(shoplens_kit::db::stamp(now))
    .execute(&mut *tx)
    .await
    .map_err(sku_taken)?;
    let event = Envelope::at(
        ProductCreated {
            product_id: product.id.clone(),
            sku: product.sku.clone(),
            name: product.name.clone(),
            category: product.category.clone(),
            price: product.price,
            currency: product.currency.clone(),
        },
        now,
    );
    ctx.outbox.enqueue(&mut tx, &event).await?;
    idem.store(
        &mut tx,
        "create_product",
        &req,
        StatusCode::CREATED,
        &product,
    )
    .await?;
    tx.commit().await?;
    ctx.outbox.wake();
    Ok((StatusCode::CREATED, Json(product)).into_response())
}

/// One product.
#[utoipa::path(get, path = "/api/v1/products/{id}",
    params(("id" = uuid::Uuid, Path, description = "Product id (UUID)")),
    responses((status = 200, body = Product), (status = 400), (status = 404)))]
async fn get_product(
    State(ctx): State<ServiceContext>,
    Path(id): Path<String>,
) -> Result<Json<Product>, ApiError> {
    let id = parse_id("id", &id)?.to_string();
    let mut conn = ctx.db.reader.acquire().await?;
    find(&mut conn, &id, false)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("product", id))
}

/// Sets a product's price; publishes `ProductPriceChanged` only if the price changed.
#[utoipa::path(put, path = "/api/v1/products/{id}/price", request_body = PriceChange,
    params(("id" = uuid::Uuid, Path, description = "Product id (UUID)")),
    responses((status = 200, body = Product), (status = 400), (status = 404), (status = 422)))]
async fn change_price(
    State(ctx): State<ServiceContext>,
    Path(id): Path<String>,
    ValidJson(req): ValidJson<PriceChange>,
) -> Result<Json<Product>, ApiError> {
    let id = parse_id("id", &id)?.to_string();
    let price = money("price", req.price)?;
    let mut tx = ctx.db.begin().await?;
    let mut product = find(&mut tx, &id, true)
        .await?
        .ok_or_else(|| ApiError::not_found("product", &id))?;
    if product.price == price {
        return Ok(Json(product));
    }
    let old_price = product.price;
    product.price = price;
    product.updated_at = ctx.clock.now();
    sqlx::query("UPDATE products SET price = $1, updated_at = $2 WHERE id = $3")
        .bind(price.to_string())
        .bind(shoplens_kit::db::stamp(product.updated_at))
        .bind(&id)
        .execute(&mut *tx)
        .await?;
    let event = Envelope::at(
        ProductPriceChanged {
            product_id: id.clone(),
            old_price,
            new_price: price,
            currency: product.currency.clone(),
        },
        product.updated_at,
    );
    ctx.outbox.enqueue(&mut tx, &event).await?;
    tx.commit().await?;
    ctx.outbox.wake();
    Ok(Json(product))
}

/// Many products by id in one call.
#[utoipa::path(get, path = "/api/v1/products", params(BatchQuery),
    responses((status = 200, body = ProductBatch), (status = 400), (status = 422)))]
async fn batch_products(
    State(ctx): State<ServiceContext>,
    ValidQuery(q): ValidQuery<BatchQuery>,
) -> Result<Json<ProductBatch>, ApiError> {
    let ids = parse_id_list("ids", &q.ids, MAX_BATCH)?;
    let ids: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
    let products: Vec<Product> =
        fetch_by_ids(&ctx.db.reader, "SELECT * FROM products WHERE id IN", &ids).await?;
    let missing = ids
        .into_iter()
        .filter(|id| !products.iter().any(|p| &p.id == id))
        .collect();
    Ok(Json(ProductBatch { products, missing }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_gets_two_decimal_places() {
        let d = |s: &str| s.parse::<Decimal>().unwrap();
        assert_eq!(money("price", d("12.5")).unwrap().to_string(), "12.50");
        assert_eq!(money("price", d("12.500")).unwrap().to_string(), "12.50");
        assert_eq!(money("price", d("-0")).unwrap().to_string(), "0.00");
        assert!(money("price", d("12.505")).is_err());
        assert!(money("price", d("-1")).is_err());
    }
}
