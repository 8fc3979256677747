//! Idempotent writes: a client that retries a write with the same `Idempotency-Key` gets the
//! first answer again, and the write happens once.
//!
//! The stored answer is written in the same transaction as the state change, so a crash
//! never leaves a key without its change or a change without its key. A key reused with a
//! different request body is a 422.

use axum::extract::FromRequestParts;
use axum::http::{HeaderValue, StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::db::{Backend, Conn};

use crate::ApiError;

pub const HEADER: &str = "idempotency-key";

/// The request's `Idempotency-Key` header, if it has one.
#[derive(Debug, Clone, Default)]
pub struct IdempotencyKey(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get(HEADER) else {
            return Ok(IdempotencyKey(None));
        };
        let key = value
            .to_str()
            .ok()
            .filter(|k| !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| b.is_ascii_graphic()))
            .ok_or_else(|| ApiError::BadRequest {
                code: "invalid_header",
                message: "Idempotency-Key must be 1-255 visible ASCII characters".into(),
                field: Some("Idempotency-Key".into()),
            })?;
        Ok(IdempotencyKey(Some(key.to_owned())))
    }
}

/// A stored answer, sent again.
pub struct Replay {
    status: StatusCode,
    body: Vec<u8>,
}

impl IntoResponse for Replay {
    fn into_response(self) -> Response {
        (
            self.status,
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                ),
                (
                    header::HeaderName::from_static("idempotent-replayed"),
                    HeaderValue::from_static("true"),
                ),
            ],
            self.body,
        )
            .into_response()
    }
}

fn request_hash(request: &impl Serialize) -> String {
    let bytes = serde_json::to_vec(request).expect("request bodies serialize");
    hex::encode(Sha256::digest(bytes))
}

impl IdempotencyKey {
    /// Inside the write transaction, before doing anything: the stored answer if this key was
    /// used before for `scope` with the same request.
    pub async fn replay(
        &self,
        tx: &mut Conn,
        scope: &str,
        request: &impl Serialize,
    ) -> Result<Option<Replay>, ApiError> {
        let Some(key) = &self.0 else { return Ok(None) };
        if Backend::of(tx) == Backend::Postgres {
            // Two replicas given the same key at once: the second waits here until the first
            // commits, then finds its answer below (SQLite's one writer already serializes).
            sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0)) IS NULL")
                .bind(format!("{scope}\u{1f}{key}"))
                .fetch_one(&mut *tx)
                .await?;
        }
        let row = sqlx::query(
            "SELECT request_hash, status, body FROM idempotency_keys WHERE scope = $1 AND key = $2",
        )
        .bind(scope)
        .bind(key)
        .fetch_optional(tx)
        .await?;
        let Some(row) = row else { return Ok(None) };
        if row.get::<String, _>("request_hash") != request_hash(request) {
            return Err(ApiError::Invalid {
                field: "Idempotency-Key".into(),
                message: "this Idempotency-Key was already used with a different request".into(),
            });
        }
        let status = StatusCode::from_u16(row.get::<i64, _>("status") as u16)
            .map_err(|e| ApiError::Internal(e.into()))?;
        Ok(Some(Replay {
            status,
            body: row.get("body"),
        }))
    }

    /// Inside the write transaction, after the change: remembers the answer.
    pub async fn store(
        &self,
        tx: &mut Conn,
        scope: &str,
        request: &impl Serialize,
        status: StatusCode,
        body: &impl Serialize,
    ) -> Result<(), ApiError> {
        let Some(key) = &self.0 else { return Ok(()) };
        sqlx::query(
            "INSERT INTO idempotency_keys (scope, key, request_hash, status, body, created_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(scope)
        .bind(key)
        .bind(request_hash(request))
        .bind(status.as_u16() as i64)
        .bind(serde_json::to_vec(body).map_err(|e| ApiError::Internal(e.into()))?)
        .bind(crate::db::stamp(Utc::now()))
        .execute(tx)
        .await?;
        Ok(())
    }
}
