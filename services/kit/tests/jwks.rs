//! Tokens signed by the shop's own identity provider: RS256 and ES256 keys from a JWKS URL
//! (served here by the test), cached and fetched again for an unknown key id; issuer,
//! audience, expiry and the role claim checked. The keys in `fixtures/` are test keys made
//! for this test only.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use shoplens_kit::identity::{AuthConfig, AuthError, JwksConfig, Role, Verifier};

const RSA: &str = include_str!("fixtures/rsa.pem");
const EC: &str = include_str!("fixtures/ec.pem");
const JWKS: &str = include_str!("fixtures/jwks.json");
const ISSUER: &str = "https://login.shop.example";

/// Serves the JWKS on port 0, counting its fetches.
async fn identity_provider() -> (String, Arc<AtomicUsize>) {
    let fetches = Arc::new(AtomicUsize::new(0));
    let counter = fetches.clone();
    let app = axum::Router::new().route(
        "/.well-known/jwks.json",
        axum::routing::get(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async { ([("content-type", "application/json")], JWKS) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/.well-known/jwks.json"), fetches)
}

fn verifier(url: &str) -> Verifier {
    Verifier::new(&AuthConfig {
        secret: "0123456789abcdef0123456789abcdef".into(),
        jwks: JwksConfig {
            url: url.into(),
            issuer: ISSUER.into(),
            audience: "shoplens".into(),
            role_claim: "roles".into(),
            refresh_secs: 300,
        },
        ..AuthConfig::default()
    })
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn sign(alg: Algorithm, kid: &str, claims: Value) -> String {
    let mut header = Header::new(alg);
    header.kid = Some(kid.into());
    let key = match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(RSA.as_bytes()).unwrap(),
        _ => EncodingKey::from_ec_pem(EC.as_bytes()).unwrap(),
    };
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
}

fn claims(roles: Value) -> Value {
    json!({"sub": "alice@shop.example", "iss": ISSUER, "aud": "shoplens",
           "exp": now() + 300, "iat": now(), "roles": roles})
}

#[tokio::test]
async fn rs256_and_es256_tokens_of_the_identity_provider_are_accepted() {
    let (url, fetches) = identity_provider().await;
    let v = verifier(&url);
    let rs = sign(
        Algorithm::RS256,
        "rsa-1",
        claims(json!(["employee", "analyst"])),
    );
    let who = v.verify(&rs).await.unwrap();
    assert_eq!(
        (who.subject.as_str(), who.role),
        ("alice@shop.example", Role::Analyst)
    );
    // The strongest ShopLens role of the list wins.
    let es = sign(Algorithm::ES256, "ec-1", claims(json!(["viewer", "admin"])));
    assert_eq!(v.verify(&es).await.unwrap().role, Role::Admin);
    // Cached: two tokens, one fetch.
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn wrong_issuer_audience_key_or_role_and_expired_tokens_are_refused() {
    let (url, fetches) = identity_provider().await;
    let v = verifier(&url);
    let mut wrong_issuer = claims(json!(["analyst"]));
    wrong_issuer["iss"] = json!("https://evil.example");
    let mut wrong_audience = claims(json!(["analyst"]));
    wrong_audience["aud"] = json!("another-app");
    let mut expired = claims(json!(["analyst"]));
    expired["exp"] = json!(now() - 120);
    for (why, token) in [
        ("issuer", sign(Algorithm::RS256, "rsa-1", wrong_issuer)),
        ("audience", sign(Algorithm::RS256, "rsa-1", wrong_audience)),
        (
            "no ShopLens role",
            sign(Algorithm::RS256, "rsa-1", claims(json!(["employee"]))),
        ),
        // Signed with the EC key but naming the RSA key's id.
        (
            "key",
            sign(Algorithm::ES256, "rsa-1", claims(json!(["analyst"]))),
        ),
        (
            "unknown key id",
            sign(Algorithm::RS256, "rsa-9", claims(json!(["analyst"]))),
        ),
    ] {
        assert!(v.verify(&token).await.is_err(), "{why} accepted");
    }
    assert_eq!(
        v.verify(&sign(Algorithm::RS256, "rsa-1", expired)).await,
        Err(AuthError::Expired)
    );
    // The unknown key id fetched the keys again once, not on every token.
    let before = fetches.load(Ordering::SeqCst);
    let unknown = sign(Algorithm::RS256, "rsa-8", claims(json!(["analyst"])));
    assert!(v.verify(&unknown).await.is_err());
    assert_eq!(fetches.load(Ordering::SeqCst), before);
}

#[tokio::test]
async fn the_shops_own_tokens_still_work_beside_the_identity_provider() {
    let (url, _) = identity_provider().await;
    let v = verifier(&url);
    let own = shoplens_kit::identity::issue(
        "0123456789abcdef0123456789abcdef",
        &shoplens_kit::identity::Identity::new("ops", Role::Monitor),
        std::time::Duration::from_secs(60),
    );
    assert_eq!(v.verify(&own).await.unwrap().role, Role::Monitor);
}
