//! A service's ledger endpoint (`GET /api/v1/ledger?from=&to=`): its records per day and
//! state ([`RecordCount`]), straight from its own database, for reconciliation. Only other
//! ShopLens servers (and admins) call it.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Deserialize;
use shoplens_contract::sales::{DateRange, RecordCount, count_records};

use crate::access::rules::SERVICES;
use crate::access::{Endpoint, get};
use crate::http::{ApiError, ValidQuery};
use crate::service::ServiceContext;

/// The service's `GET /api/v1/ledger`: the records `sql` selects (see [`record_counts`]),
/// counted as `entity`.
pub fn endpoint(entity: &'static str, sql: &'static str) -> Endpoint<ServiceContext> {
    get(
        "/api/v1/ledger",
        SERVICES,
        move |State(ctx): State<ServiceContext>, ValidQuery(q): ValidQuery<LedgerParams>| async move {
            record_counts(&ctx.db.reader, entity, sql, &q).await
        },
    )
}

/// The range asked for: `from` and `to`, both required (`YYYY-MM-DD`, inclusive).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerParams {
    pub from: Option<String>,
    pub to: Option<String>,
}

/// The records `sql` selects as `(kind, at, amount)` rows (`amount` a decimal's text or
/// NULL), counted per day of `at` and kind for the range of `params`.
pub async fn record_counts(
    pool: &crate::db::Pool,
    entity: &str,
    sql: &str,
    params: &LedgerParams,
) -> Result<Json<Vec<RecordCount>>, ApiError> {
    for (field, value) in [("from", &params.from), ("to", &params.to)] {
        if value.as_deref().is_none_or(|v| v.trim().is_empty()) {
            return Err(ApiError::invalid(field, "is required (YYYY-MM-DD)"));
        }
    }
    let range = DateRange::parse(
        params.from.as_deref(),
        params.to.as_deref(),
        Utc::now().date_naive(),
    )
    .map_err(|e| ApiError::invalid(e.field, e.message))?;
    let rows: Vec<(String, String, Option<String>)> = sqlx::query_as(sql).fetch_all(pool).await?;
    let mut records = Vec::with_capacity(rows.len());
    for (kind, at, amount) in rows {
        let at: DateTime<Utc> = crate::db::parse_stamp(&at).map_err(|e| {
            ApiError::Internal(anyhow::anyhow!("stored time `{at}` is not RFC 3339: {e}"))
        })?;
        let amount = match amount {
            Some(a) => Some(a.parse::<Decimal>().map_err(|e| {
                ApiError::Internal(anyhow::anyhow!("stored amount `{a}` is not a decimal: {e}"))
            })?),
            None => None,
        };
        records.push((kind, at, amount));
    }
    Ok(Json(count_records(entity, &range, records)))
}
