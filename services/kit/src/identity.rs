//! One identity scheme for every server: bearer tokens naming a subject and a role.
//!
//! Tokens are JWTs. The shop's own are signed with HS256 and the shared secret
//! (`auth.secret`, at least 32 bytes; `shoplens token` issues them). Tokens signed by the
//! shop's identity provider (RS256 or ES256, keys from its JWKS URL, cached and refreshed)
//! are accepted too when `auth.jwks.url` is set: that is how a real shop plugs in its login.
//!
//! Claims: `sub` (who), `role` (one of [`Role`]; for the identity provider, the claim named
//! by `auth.jwks.role_claim`, a string or a list whose strongest known role wins), `exp`.
//! A token that is missing, malformed, signed with another key, expired, or names no known
//! role is refused (401); a known caller without the role an endpoint needs is refused with
//! 403 (`crate::access`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use tokio::sync::RwLock;

/// The shortest HMAC key a server accepts.
pub const MIN_SECRET_BYTES: usize = 32;

/// The development key of the embedded default; a server listening beyond loopback refuses
/// to start with it.
pub const DEV_SECRET: &str = "shoplens-development-secret-not-for-production-use";

/// What a caller may do. Viewers, analysts and administrators are business users, each
/// with more than the one before; customers, services and monitors are their own kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A shop customer: their own orders, through the composer.
    Customer,
    /// A business user: the sales dashboard.
    Viewer,
    /// Also SQL (HTTP and Postgres) and exports.
    Analyst,
    /// Also reconciliation, rebuilds, dead letters, live sales, and personal data.
    Admin,
    /// Another ShopLens server calling a domain service's API (or the composer's ledger).
    Service,
    /// A metrics scraper (Prometheus): `/metrics`.
    Monitor,
}

impl Role {
    pub const ALL: [Role; 6] = [
        Role::Customer,
        Role::Viewer,
        Role::Analyst,
        Role::Admin,
        Role::Service,
        Role::Monitor,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Customer => "customer",
            Role::Viewer => "viewer",
            Role::Analyst => "analyst",
            Role::Admin => "admin",
            Role::Service => "service",
            Role::Monitor => "monitor",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// How much a role may do, for picking the strongest of several (an identity provider's
    /// `roles` list).
    fn rank(self) -> u8 {
        match self {
            Role::Customer | Role::Monitor => 0,
            Role::Service => 1,
            Role::Viewer => 2,
            Role::Analyst => 3,
            Role::Admin => 4,
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who is calling, as a verified token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub subject: String,
    pub role: Role,
}

impl Identity {
    pub fn new(subject: impl Into<String>, role: Role) -> Identity {
        Identity {
            subject: subject.into(),
            role,
        }
    }

    /// Whether this caller may read data belonging to the customer `customer_id`.
    pub fn may_read_customer(&self, customer_id: &str) -> bool {
        match self.role {
            Role::Admin => true,
            Role::Customer => self.subject == customer_id,
            _ => false,
        }
    }

    /// Whether this caller may see personal data (customer names, e-mail addresses).
    pub fn sees_personal_data(&self) -> bool {
        self.role == Role::Admin
    }
}

/// The claims of the shop's own tokens.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
struct Claims {
    sub: String,
    role: String,
    exp: u64,
    iat: u64,
}

/// Why a token was refused (always a 401).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing credentials (`Authorization: Bearer <token>`)")]
    Missing,
    #[error("malformed `Authorization` header")]
    MalformedHeader,
    #[error("token expired")]
    Expired,
    #[error("invalid token: {0}")]
    Invalid(String),
}

/// The identity configuration every server shares (section `auth`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// The HMAC-SHA256 key the shop's tokens are signed with, at least 32 bytes. A secret:
    /// never logged. The built-in development key works on loopback only.
    pub secret: String,
    /// Lifetime of the tokens this server issues (seconds).
    pub token_ttl_secs: u64,
    /// The shop's identity provider, whose tokens are accepted too (off while `url` is empty).
    pub jwks: JwksConfig,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            secret: DEV_SECRET.into(),
            token_ttl_secs: 3600,
            jwks: JwksConfig::default(),
        }
    }
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("secret", &"***")
            .field("token_ttl_secs", &self.token_ttl_secs)
            .field("jwks", &self.jwks)
            .finish()
    }
}

impl AuthConfig {
    /// Whether the secret is the built-in development key.
    pub fn is_dev_secret(&self) -> bool {
        self.secret == DEV_SECRET
    }

    /// Refuses a key too short to be safe, naming the key.
    pub fn validate(&self, key: &str) -> Result<(), String> {
        if self.secret.len() < MIN_SECRET_BYTES {
            return Err(format!(
                "{key} must be at least {MIN_SECRET_BYTES} bytes (it is {}); generate one with \
                 `openssl rand -hex 32`",
                self.secret.len()
            ));
        }
        if !self.jwks.url.is_empty() && self.jwks.issuer.is_empty() {
            return Err(format!(
                "{key}: auth.jwks.issuer must name the identity provider whose tokens are \
                 accepted"
            ));
        }
        Ok(())
    }

    /// Refuses what would let others in: a key shorter than [`MIN_SECRET_BYTES`], or the
    /// built-in development key on a server that listens beyond loopback (`listen`). The
    /// error names the key and says how to set it.
    pub fn check_exposure(&self, listen: std::net::SocketAddr) -> Result<(), String> {
        self.validate("auth.secret")?;
        if self.is_dev_secret() && !listen.ip().is_loopback() {
            return Err(format!(
                "auth.secret is the built-in development key, and this server would listen on \
                 {listen}, beyond loopback: set SHOPLENS_AUTH__SECRET to a key of your own \
                 (`openssl rand -hex 32`)"
            ));
        }
        Ok(())
    }

    /// A token for `identity`, valid for `token_ttl_secs`.
    pub fn issue(&self, identity: &Identity) -> String {
        issue(
            &self.secret,
            identity,
            Duration::from_secs(self.token_ttl_secs),
        )
    }
}

/// The shop's identity provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JwksConfig {
    /// Where its public keys are (`https://login.example.com/.well-known/jwks.json`); empty:
    /// only the shop's own tokens are accepted.
    pub url: String,
    /// The `iss` its tokens carry (required with `url`).
    pub issuer: String,
    /// The `aud` its tokens must carry; empty: not checked.
    pub audience: String,
    /// The claim holding the role: a string, or a list of strings (the strongest ShopLens
    /// role in it wins).
    pub role_claim: String,
    /// How often the keys are fetched again (seconds); an unknown key id also triggers a
    /// fetch, at most once every 10 seconds.
    pub refresh_secs: u64,
}

impl Default for JwksConfig {
    fn default() -> Self {
        JwksConfig {
            url: String::new(),
            issuer: String::new(),
            audience: String::new(),
            role_claim: "role".into(),
            refresh_secs: 300,
        }
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Signs a token for `identity` with `secret`, valid for `ttl` from now.
pub fn issue(secret: &str, identity: &Identity, ttl: Duration) -> String {
    let iat = now_secs();
    let claims = Claims {
        sub: identity.subject.clone(),
        role: identity.role.as_str().to_owned(),
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

/// Reads the bearer token of an `Authorization` header value.
pub fn bearer(value: &str) -> Result<&str, AuthError> {
    let (scheme, token) = value
        .trim()
        .split_once(' ')
        .ok_or(AuthError::MalformedHeader)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(AuthError::MalformedHeader);
    }
    Ok(token)
}

/// Verifies tokens: the shop's own (HS256), and the identity provider's when configured.
/// Cheap to clone.
#[derive(Clone)]
pub struct Verifier {
    secret: Arc<DecodingKey>,
    jwks: Option<Arc<Jwks>>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("jwks", &self.jwks.as_ref().map(|j| &j.config.url))
            .finish_non_exhaustive()
    }
}

impl Verifier {
    pub fn new(config: &AuthConfig) -> Verifier {
        Verifier {
            secret: Arc::new(DecodingKey::from_secret(config.secret.as_bytes())),
            jwks: (!config.jwks.url.is_empty()).then(|| {
                Arc::new(Jwks {
                    config: config.jwks.clone(),
                    http: reqwest::Client::builder()
                        .timeout(Duration::from_secs(5))
                        .build()
                        .unwrap_or_default(),
                    keys: RwLock::new(KeyCache::default()),
                })
            }),
        }
    }

    /// Who `token` names, if it is valid.
    pub async fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| AuthError::Invalid(e.to_string()))?;
        match header.alg {
            Algorithm::HS256 => self.verify_own(token),
            Algorithm::RS256 | Algorithm::ES256 => match &self.jwks {
                Some(jwks) => jwks.verify(token, header.alg, header.kid.as_deref()).await,
                None => Err(AuthError::Invalid(
                    "no identity provider is configured for this server".into(),
                )),
            },
            other => Err(AuthError::Invalid(format!(
                "algorithm {other:?} not accepted"
            ))),
        }
    }

    fn verify_own(&self, token: &str) -> Result<Identity, AuthError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        let data = jsonwebtoken::decode::<Claims>(token, &self.secret, &validation)
            .map_err(token_error)?;
        let role = Role::parse(&data.claims.role)
            .ok_or_else(|| AuthError::Invalid(format!("unknown role `{}`", data.claims.role)))?;
        identity(data.claims.sub, role)
    }
}

/// The bearer token a server sends when it calls another (role `service`), minted from the
/// shared secret and renewed before it expires. Cheap to clone.
#[derive(Clone)]
pub struct ServiceToken {
    inner: Arc<std::sync::Mutex<(String, u64)>>,
    secret: Arc<str>,
    subject: Arc<str>,
}

impl std::fmt::Debug for ServiceToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceToken")
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

/// A service token's lifetime; it is renewed when less than a quarter is left.
const SERVICE_TOKEN_TTL: Duration = Duration::from_secs(3600);

impl ServiceToken {
    /// Tokens naming `subject` (the calling server, e.g. `composer`).
    pub fn new(config: &AuthConfig, subject: &str) -> ServiceToken {
        ServiceToken {
            inner: Arc::new(std::sync::Mutex::new((String::new(), 0))),
            secret: config.secret.as_str().into(),
            subject: subject.into(),
        }
    }

    /// The current token.
    pub fn token(&self) -> String {
        let mut current = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let now = now_secs();
        if current.1 < now + SERVICE_TOKEN_TTL.as_secs() / 4 {
            let identity = Identity::new(self.subject.as_ref(), Role::Service);
            *current = (
                issue(&self.secret, &identity, SERVICE_TOKEN_TTL),
                now + SERVICE_TOKEN_TTL.as_secs(),
            );
        }
        current.0.clone()
    }

    /// `Bearer <token>`, for an `Authorization` header.
    pub fn header(&self) -> String {
        format!("Bearer {}", self.token())
    }
}

fn token_error(e: jsonwebtoken::errors::Error) -> AuthError {
    match e.kind() {
        jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
        _ => AuthError::Invalid(e.to_string()),
    }
}

/// A verified subject and role as an identity: a customer's subject is their id (a UUID).
fn identity(subject: String, role: Role) -> Result<Identity, AuthError> {
    if role == Role::Customer && uuid::Uuid::try_parse(&subject).is_err() {
        return Err(AuthError::Invalid("`sub` must be a customer id".into()));
    }
    if subject.is_empty() || subject.len() > 256 {
        return Err(AuthError::Invalid(
            "`sub` must be 1 to 256 characters".into(),
        ));
    }
    Ok(Identity { subject, role })
}

/// The identity provider's keys, by key id.
struct Jwks {
    config: JwksConfig,
    http: reqwest::Client,
    keys: RwLock<KeyCache>,
}

#[derive(Default)]
struct KeyCache {
    keys: HashMap<String, (Algorithm, Arc<DecodingKey>)>,
    fetched: Option<Instant>,
    last_attempt: Option<Instant>,
}

/// How often an unknown key id may cause a fetch.
const REFETCH_AFTER: Duration = Duration::from_secs(10);

impl Jwks {
    async fn key(&self, kid: &str) -> Result<(Algorithm, Arc<DecodingKey>), AuthError> {
        let refresh = Duration::from_secs(self.config.refresh_secs.max(1));
        {
            let cache = self.keys.read().await;
            let fresh = cache.fetched.is_some_and(|t| t.elapsed() < refresh);
            if let Some(key) = cache.keys.get(kid)
                && fresh
            {
                return Ok(key.clone());
            }
            let recently_tried = cache
                .last_attempt
                .is_some_and(|t| t.elapsed() < REFETCH_AFTER);
            if recently_tried {
                return cache
                    .keys
                    .get(kid)
                    .cloned()
                    .ok_or_else(|| AuthError::Invalid(format!("unknown key id `{kid}`")));
            }
        }
        let mut cache = self.keys.write().await;
        cache.last_attempt = Some(Instant::now());
        match self.fetch().await {
            Ok(keys) => {
                cache.keys = keys;
                cache.fetched = Some(Instant::now());
            }
            // Keep the keys we have: the provider being down must not log everyone out.
            Err(e) => tracing::warn!(url = %self.config.url, error = %e, "cannot fetch the JWKS"),
        }
        cache
            .keys
            .get(kid)
            .cloned()
            .ok_or_else(|| AuthError::Invalid(format!("unknown key id `{kid}`")))
    }

    async fn fetch(&self) -> Result<HashMap<String, (Algorithm, Arc<DecodingKey>)>, String> {
        let set: JwkSet = self
            .http
            .get(&self.config.url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| e.without_url().to_string())?
            .json()
            .await
            .map_err(|e| e.without_url().to_string())?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let (Some(kid), Ok(key)) = (&jwk.common.key_id, DecodingKey::from_jwk(jwk)) else {
                continue;
            };
            let alg = match &jwk.algorithm {
                jsonwebtoken::jwk::AlgorithmParameters::RSA(_) => Algorithm::RS256,
                jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(_) => Algorithm::ES256,
                _ => continue,
            };
            keys.insert(kid.clone(), (alg, Arc::new(key)));
        }
        Ok(keys)
    }

    async fn verify(
        &self,
        token: &str,
        alg: Algorithm,
        kid: Option<&str>,
    ) -> Result<Identity, AuthError> {
        let kid = kid.ok_or_else(|| AuthError::Invalid("the token names no key (`kid`)".into()))?;
        let (key_alg, key) = self.key(kid).await?;
        if key_alg != alg {
            return Err(AuthError::Invalid(format!(
                "key `{kid}` is for {key_alg:?}, not {alg:?}"
            )));
        }
        let mut validation = Validation::new(alg);
        validation.leeway = 30;
        validation.set_required_spec_claims(&["exp", "sub", "iss"]);
        validation.set_issuer(&[&self.config.issuer]);
        if self.config.audience.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&[&self.config.audience]);
        }
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation)
            .map_err(token_error)?;
        let sub = data.claims["sub"].as_str().unwrap_or_default().to_owned();
        let role = match &data.claims[self.config.role_claim.as_str()] {
            serde_json::Value::String(s) => Role::parse(s),
            serde_json::Value::Array(list) => list
                .iter()
                .filter_map(|v| v.as_str().and_then(Role::parse))
                .max_by_key(|r| r.rank()),
            _ => None,
        }
        .ok_or_else(|| {
            AuthError::Invalid(format!(
                "no ShopLens role in the `{}` claim",
                self.config.role_claim
            ))
        })?;
        identity(sub, role)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "01936b2e-1c4f-7000-8000-000000000001";
    const KEY: &str = "0123456789abcdef0123456789abcdef";

    fn verifier(secret: &str) -> Verifier {
        Verifier::new(&AuthConfig {
            secret: secret.into(),
            ..AuthConfig::default()
        })
    }

    #[tokio::test]
    async fn every_role_round_trips() {
        for role in Role::ALL {
            let subject = if role == Role::Customer { ID } else { "alice" };
            let t = issue(KEY, &Identity::new(subject, role), Duration::from_secs(60));
            assert_eq!(
                verifier(KEY).verify(&t).await,
                Ok(Identity::new(subject, role))
            );
        }
    }

    #[tokio::test]
    async fn forged_expired_garbage_and_unsigned_tokens_are_refused() {
        let t = issue(
            "another-key-another-key-another-k",
            &Identity::new("a", Role::Admin),
            Duration::from_secs(60),
        );
        assert!(matches!(
            verifier(KEY).verify(&t).await,
            Err(AuthError::Invalid(_))
        ));
        let past = Claims {
            sub: "a".into(),
            role: "admin".into(),
            exp: now_secs() - 10,
            iat: now_secs() - 100,
        };
        let t = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &past,
            &EncodingKey::from_secret(KEY.as_bytes()),
        )
        .unwrap();
        assert_eq!(verifier(KEY).verify(&t).await, Err(AuthError::Expired));
        assert!(verifier(KEY).verify("not.a.token").await.is_err());
        assert!(verifier(KEY).verify("").await.is_err());
        // alg none, an admin's claims, no signature.
        let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.\
                    eyJzdWIiOiJhZG1pbiIsInJvbGUiOiJhZG1pbiIsImV4cCI6OTk5OTk5OTk5OSwiaWF0IjowfQ.";
        assert!(verifier(KEY).verify(none).await.is_err());
        // A customer whose subject is not an id; a role nobody knows.
        let t = issue(
            KEY,
            &Identity::new("bob", Role::Customer),
            Duration::from_secs(60),
        );
        assert!(verifier(KEY).verify(&t).await.is_err());
        let odd = Claims {
            sub: "a".into(),
            role: "root".into(),
            exp: now_secs() + 60,
            iat: now_secs(),
        };
        let t = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &odd,
            &EncodingKey::from_secret(KEY.as_bytes()),
        )
        .unwrap();
        assert!(verifier(KEY).verify(&t).await.is_err());
        // RS256 without an identity provider.
        let rs = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.e30.c2ln";
        assert!(verifier(KEY).verify(rs).await.is_err());
    }

    #[test]
    fn short_keys_and_a_provider_without_issuer_are_refused() {
        let short = AuthConfig {
            secret: "short".into(),
            ..AuthConfig::default()
        };
        let e = short.validate("auth.secret").unwrap_err();
        assert!(e.contains("auth.secret") && e.contains("32"), "{e}");
        assert!(AuthConfig::default().validate("auth.secret").is_ok());
        let mut idp = AuthConfig::default();
        idp.jwks.url = "http://127.0.0.1:9/jwks".into();
        assert!(idp.validate("auth").is_err());
        assert!(format!("{idp:?}").contains("***"));
        assert!(!format!("{idp:?}").contains(DEV_SECRET));
    }

    #[test]
    fn the_development_key_stays_on_loopback() {
        let dev = AuthConfig::default();
        assert!(
            dev.check_exposure("127.0.0.1:8081".parse().unwrap())
                .is_ok()
        );
        let e = dev
            .check_exposure("0.0.0.0:8081".parse().unwrap())
            .unwrap_err();
        assert!(
            e.contains("auth.secret") && e.contains("SHOPLENS_AUTH__SECRET"),
            "{e}"
        );
        let own = AuthConfig {
            secret: KEY.into(),
            ..AuthConfig::default()
        };
        assert!(own.check_exposure("0.0.0.0:8081".parse().unwrap()).is_ok());
    }

    #[test]
    fn bearer_headers_are_read_strictly() {
        assert_eq!(bearer("Bearer abc"), Ok("abc"));
        assert_eq!(bearer("bearer  abc "), Ok("abc"));
        assert_eq!(bearer("Basic abc"), Err(AuthError::MalformedHeader));
        assert_eq!(bearer("Bearer "), Err(AuthError::MalformedHeader));
        assert_eq!(bearer("abc"), Err(AuthError::MalformedHeader));
    }

    #[test]
    fn customers_read_only_their_own_and_only_admins_see_personal_data() {
        let me = Identity::new(ID, Role::Customer);
        assert!(me.may_read_customer(ID));
        assert!(!me.may_read_customer("someone-else"));
        assert!(Identity::new("a", Role::Admin).may_read_customer(ID));
        assert!(!Identity::new("a", Role::Analyst).may_read_customer(ID));
        assert!(Identity::new("a", Role::Admin).sees_personal_data());
        assert!(!Identity::new("a", Role::Analyst).sees_personal_data());
    }
}
