//! Who is asking: signed bearer tokens (HS256 JWTs) naming a customer or an admin. The
//! composer verifies them on every request; the tools and servers that call it (the
//! `token` command, reconciliation's admin calls, tests and benchmarks) issue them.
//!
//! Claims: `sub` (the customer id; anything for an admin), `role` (`"customer"` or
//! `"admin"`), `exp` (seconds since the Unix epoch) and `iat`. A token that is missing,
//! malformed, signed with another key, expired, or names a customer whose id is not a UUID
//! is rejected with 401; the handlers turn "not yours" into 403.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::ApiError;
use axum::http::{HeaderMap, header};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// What a verified token lets its bearer do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// A customer, who may read only their own orders (the customer id).
    Customer(String),
    /// Support staff, who may read any order.
    Admin,
}

impl Role {
    /// Whether this caller may read data belonging to `customer_id`.
    pub fn may_read(&self, customer_id: &str) -> bool {
        match self {
            Role::Admin => true,
            Role::Customer(own) => own == customer_id,
        }
    }
}

/// The JWT claims.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Claims {
    pub sub: String,
    pub role: String,
    pub exp: u64,
    pub iat: u64,
}

/// Why a token was refused (always a 401).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token (`Authorization: Bearer <token>`)")]
    Missing,
    #[error("malformed `Authorization` header")]
    MalformedHeader,
    #[error("token expired")]
    Expired,
    #[error("invalid token: {0}")]
    Invalid(String),
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        ApiError::Unauthorized(e.to_string())
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Signs a token for `role`, valid for `ttl` from now.
pub fn issue_token(secret: &str, role: &Role, ttl: Duration) -> String {
    let iat = now_secs();
    let (sub, role) = match role {
        Role::Customer(id) => (id.clone(), "customer"),
        Role::Admin => ("admin".to_owned(), "admin"),
    };
    let claims = Claims {
        sub,
        role: role.to_owned(),
        exp: iat + ttl.as_secs(),
        iat,
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("HS256 signing of plain claims cannot fail")
}

/// Checks a token's signature, expiry (no leeway) and claims, and says who it names.
pub fn verify_token(secret: &str, token: &str) -> Result<Role, AuthError> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = 0;
    validation.set_required_spec_claims(&["exp", "sub"]);
    let data = jsonwebtoken::decode::<Claims>(
        token,
        &DecodingKey::from_secret(secret.as_bytes()),
        &validation,
    )
    .map_err(|e| match e.kind() {
        jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
        _ => AuthError::Invalid(e.to_string()),
    })?;
    match data.claims.role.as_str() {
        "admin" => Ok(Role::Admin),
        "customer" => {
            uuid::Uuid::try_parse(&data.claims.sub)
                .map_err(|_| AuthError::Invalid("`sub` must be a customer id".into()))?;
            Ok(Role::Customer(data.claims.sub))
        }
        other => Err(AuthError::Invalid(format!("unknown role `{other}`"))),
    }
}

/// Reads and verifies the `Authorization: Bearer` header.
pub fn authenticate(secret: &str, headers: &HeaderMap) -> Result<Role, AuthError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or(AuthError::Missing)?
        .to_str()
        .map_err(|_| AuthError::MalformedHeader)?;
    let (scheme, token) = value
        .trim()
        .split_once(' ')
        .ok_or(AuthError::MalformedHeader)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(AuthError::MalformedHeader);
    }
    verify_token(secret, token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "01936b2e-1c4f-7000-8000-000000000001";

    #[test]
    fn round_trips_customer_and_admin_tokens() {
        let t = issue_token("k", &Role::Customer(ID.into()), Duration::from_secs(60));
        assert_eq!(verify_token("k", &t), Ok(Role::Customer(ID.into())));
        let t = issue_token("k", &Role::Admin, Duration::from_secs(60));
        assert_eq!(verify_token("k", &t), Ok(Role::Admin));
    }

    #[test]
    fn rejects_forged_expired_and_garbage_tokens() {
        let t = issue_token("other", &Role::Admin, Duration::from_secs(60));
        assert!(matches!(verify_token("k", &t), Err(AuthError::Invalid(_))));
        let past = Claims {
            sub: ID.into(),
            role: "customer".into(),
            exp: now_secs() - 10,
            iat: now_secs() - 100,
        };
        let t = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &past,
            &EncodingKey::from_secret(b"k"),
        )
        .unwrap();
        assert_eq!(verify_token("k", &t), Err(AuthError::Expired));
        assert!(verify_token("k", "not.a.token").is_err());
        assert!(verify_token("k", "").is_err());
        // A customer token whose subject is not an id.
        let t = issue_token("k", &Role::Customer("bob".into()), Duration::from_secs(60));
        assert!(verify_token("k", &t).is_err());
    }

    #[test]
    fn rejects_the_none_algorithm() {
        // header {"alg":"none","typ":"JWT"}, claims of an admin, no signature
        let t = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.\
                 eyJzdWIiOiJhZG1pbiIsInJvbGUiOiJhZG1pbiIsImV4cCI6OTk5OTk5OTk5OSwiaWF0IjowfQ.";
        assert!(verify_token("k", t).is_err());
    }

    #[test]
    fn reads_the_bearer_header() {
        let mut h = HeaderMap::new();
        assert_eq!(authenticate("k", &h), Err(AuthError::Missing));
        h.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(authenticate("k", &h), Err(AuthError::MalformedHeader));
        let t = issue_token("k", &Role::Admin, Duration::from_secs(60));
        h.insert(
            header::AUTHORIZATION,
            format!("Bearer {t}").parse().unwrap(),
        );
        assert_eq!(authenticate("k", &h), Ok(Role::Admin));
    }

    #[test]
    fn customers_read_only_their_own() {
        assert!(Role::Customer(ID.into()).may_read(ID));
        assert!(!Role::Customer(ID.into()).may_read("someone-else"));
        assert!(Role::Admin.may_read(ID));
    }
}
