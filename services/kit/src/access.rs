//! Who may call which endpoint. Every route of every server is an [`Endpoint`]: a method, a
//! path, an [`Access`] rule and a handler; a server's router is built from its list
//! ([`Endpoints::into_router`]), and the rule is checked before the handler runs. A route
//! cannot exist without a rule, and the list is what the access tests walk (no credentials
//! → 401, a wrong role → 403, the right role → the handler).
//!
//! Credentials: `Authorization: Bearer <token>` (APIs, tools), or the session cookie the
//! analytics server sets when a business user signs in to the dashboard page
//! ([`SESSION_COOKIE`]: HttpOnly, SameSite=Strict).

use std::sync::Arc;

use axum::extract::{FromRequestParts, Request};
use axum::handler::Handler;
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on};
use axum::{Json, Router};

use crate::identity::{AuthError, Identity, Role, Verifier, bearer};

/// The cookie holding a signed-in business user's session token.
pub const SESSION_COOKIE: &str = "shoplens_session";

/// Who may call an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone: health checks, the pages' HTML (they sign their user in), the OpenAPI
    /// documents.
    Public,
    /// Callers with one of these roles.
    Roles(&'static [Role]),
}

/// The usual rules.
pub mod rules {
    use super::Access;
    use crate::identity::Role::*;

    /// Business users: the dashboard.
    pub const VIEWERS: Access = Access::Roles(&[Viewer, Analyst, Admin]);
    /// SQL and exports.
    pub const ANALYSTS: Access = Access::Roles(&[Analyst, Admin]);
    /// Operations: reconciliation, rebuilds, dead letters, live sales.
    pub const ADMINS: Access = Access::Roles(&[Admin]);
    /// The domain services' APIs: other ShopLens servers (and operators).
    pub const SERVICES: Access = Access::Roles(&[Service, Admin]);
    /// A customer's own orders (and support staff).
    pub const CUSTOMERS: Access = Access::Roles(&[Customer, Admin]);
    /// `/metrics`.
    pub const MONITORS: Access = Access::Roles(&[Monitor, Admin]);
}

impl Access {
    /// Whether `role` passes this rule.
    pub fn allows(self, role: Role) -> bool {
        match self {
            Access::Public => true,
            Access::Roles(roles) => roles.contains(&role),
        }
    }
}

/// One route and who may call it.
pub struct Endpoint<S> {
    pub method: Method,
    pub path: &'static str,
    pub access: Access,
    route: MethodRouter<S>,
}

/// What the access tests walk: an endpoint without its handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub method: Method,
    pub path: &'static str,
    pub access: Access,
}

impl<S: Clone + Send + Sync + 'static> Endpoint<S> {
    pub fn new<H, T>(method: Method, path: &'static str, access: Access, handler: H) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        let filter = MethodFilter::try_from(method.clone())
            .unwrap_or_else(|_| panic!("{method} is not a routable method"));
        Endpoint {
            method,
            path,
            access,
            route: on(filter, handler),
        }
    }
}

/// `GET path`, callable as `access` says.
pub fn get<S, H, T>(path: &'static str, access: Access, handler: H) -> Endpoint<S>
where
    S: Clone + Send + Sync + 'static,
    H: Handler<T, S>,
    T: 'static,
{
    Endpoint::new(Method::GET, path, access, handler)
}

/// `POST path`, callable as `access` says.
pub fn post<S, H, T>(path: &'static str, access: Access, handler: H) -> Endpoint<S>
where
    S: Clone + Send + Sync + 'static,
    H: Handler<T, S>,
    T: 'static,
{
    Endpoint::new(Method::POST, path, access, handler)
}

/// `PUT path`, callable as `access` says.
pub fn put<S, H, T>(path: &'static str, access: Access, handler: H) -> Endpoint<S>
where
    S: Clone + Send + Sync + 'static,
    H: Handler<T, S>,
    T: 'static,
{
    Endpoint::new(Method::PUT, path, access, handler)
}

/// `PATCH path`, callable as `access` says.
pub fn patch<S, H, T>(path: &'static str, access: Access, handler: H) -> Endpoint<S>
where
    S: Clone + Send + Sync + 'static,
    H: Handler<T, S>,
    T: 'static,
{
    Endpoint::new(Method::PATCH, path, access, handler)
}

/// A server's routes with their state and access checks applied, and the rules they have.
pub struct Routes {
    pub router: Router,
    pub rules: Vec<Rule>,
}

/// A server's endpoints.
pub struct Endpoints<S> {
    list: Vec<Endpoint<S>>,
}

impl<S: Clone + Send + Sync + 'static> Default for Endpoints<S> {
    fn default() -> Self {
        Endpoints { list: Vec::new() }
    }
}

impl<S: Clone + Send + Sync + 'static> Endpoints<S> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with(mut self, endpoint: Endpoint<S>) -> Self {
        self.list.push(endpoint);
        self
    }

    pub fn extend(mut self, other: Endpoints<S>) -> Self {
        self.list.extend(other.list);
        self
    }

    /// The rules, for the access tests.
    pub fn rules(&self) -> Vec<Rule> {
        self.list
            .iter()
            .map(|e| Rule {
                method: e.method.clone(),
                path: e.path,
                access: e.access,
            })
            .collect()
    }

    /// The routes of these endpoints over `state`, each behind its access check.
    pub fn with_state(self, state: S, verifier: &Verifier) -> Routes {
        let rules = self.rules();
        Routes {
            router: self.into_router(verifier.clone()).with_state(state),
            rules,
        }
    }

    /// The router of these endpoints, each behind its access check.
    pub fn into_router(self, verifier: Verifier) -> Router<S> {
        let verifier = Arc::new(verifier);
        let mut router = Router::new();
        for e in self.list {
            let route = match e.access {
                Access::Public => e.route,
                Access::Roles(_) => {
                    let (access, verifier) = (e.access, verifier.clone());
                    e.route.layer(axum::middleware::from_fn(move |req, next| {
                        check(access, verifier.clone(), req, next)
                    }))
                }
            };
            router = router.route(e.path, route);
        }
        router
    }
}

/// The credentials of a request: its bearer token, else its session cookie.
pub fn credentials(parts: &axum::http::HeaderMap) -> Result<String, AuthError> {
    if let Some(value) = parts.get(header::AUTHORIZATION) {
        let value = value.to_str().map_err(|_| AuthError::MalformedHeader)?;
        return bearer(value).map(str::to_owned);
    }
    session_cookie(parts).ok_or(AuthError::Missing)
}

/// The session cookie's token, if the request carries one.
pub fn session_cookie(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim().to_owned())
        .filter(|v| !v.is_empty())
}

async fn check(access: Access, verifier: Arc<Verifier>, mut req: Request, next: Next) -> Response {
    let token = match credentials(req.headers()) {
        Ok(token) => token,
        Err(e) => return unauthorized(e),
    };
    let identity = match verifier.verify(&token).await {
        Ok(identity) => identity,
        Err(e) => return unauthorized(e),
    };
    if !access.allows(identity.role) {
        return forbidden(identity.role);
    }
    req.extensions_mut().insert(identity);
    next.run(req).await
}

fn unauthorized(e: AuthError) -> Response {
    let mut resp = (
        StatusCode::UNAUTHORIZED,
        Json(serde_json::json!({"error": e.to_string(), "code": "unauthorized"})),
    )
        .into_response();
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"shoplens\""),
    );
    resp
}

fn forbidden(role: Role) -> Response {
    (
        StatusCode::FORBIDDEN,
        Json(serde_json::json!({
            "error": format!("the role `{role}` may not use this endpoint"),
            "code": "forbidden",
        })),
    )
        .into_response()
}

/// The verified caller of an endpoint with an access rule (an extractor).
pub struct Caller(pub Identity);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        match parts.extensions.get::<Identity>() {
            Some(identity) => Ok(Caller(identity.clone())),
            // A handler that needs a caller on a public endpoint: a wiring mistake.
            None => Err(unauthorized(AuthError::Missing)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::body::Body;
    use tower::ServiceExt;

    use super::*;
    use crate::identity::{AuthConfig, issue};

    const KEY: &str = "0123456789abcdef0123456789abcdef";

    fn app() -> Router {
        let verifier = Verifier::new(&AuthConfig {
            secret: KEY.into(),
            ..AuthConfig::default()
        });
        Endpoints::new()
            .with(get("/open", Access::Public, || async { "open" }))
            .with(get(
                "/sql",
                rules::ANALYSTS,
                |Caller(who): Caller| async move { who.subject },
            ))
            .into_router(verifier)
    }

    async fn call(
        path: &str,
        auth: Option<String>,
        cookie: Option<String>,
    ) -> (StatusCode, String) {
        let mut req = Request::builder().uri(path);
        if let Some(a) = auth {
            req = req.header(header::AUTHORIZATION, a);
        }
        if let Some(c) = cookie {
            req = req.header(header::COOKIE, c);
        }
        let resp = app()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    fn token(role: Role) -> String {
        issue(KEY, &Identity::new("ann", role), Duration::from_secs(60))
    }

    #[tokio::test]
    async fn each_rule_is_checked_before_the_handler() {
        assert_eq!(call("/open", None, None).await.0, StatusCode::OK);
        let (status, body) = call("/sql", None, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert!(body.contains("\"code\":\"unauthorized\""), "{body}");
        let bad = call("/sql", Some("Bearer nonsense".into()), None).await;
        assert_eq!(bad.0, StatusCode::UNAUTHORIZED);
        let viewer = call(
            "/sql",
            Some(format!("Bearer {}", token(Role::Viewer))),
            None,
        )
        .await;
        assert_eq!(viewer.0, StatusCode::FORBIDDEN, "{}", viewer.1);
        let analyst = call(
            "/sql",
            Some(format!("Bearer {}", token(Role::Analyst))),
            None,
        )
        .await;
        assert_eq!(analyst, (StatusCode::OK, "ann".to_owned()));
        let cookie = format!("theme=dark; {SESSION_COOKIE}={}", token(Role::Admin));
        assert_eq!(call("/sql", None, Some(cookie)).await.0, StatusCode::OK);
    }

    #[test]
    fn rules_list_every_endpoint() {
        let verifier_free: Endpoints<()> = Endpoints::new()
            .with(get("/a", Access::Public, || async { "" }))
            .with(post("/b", rules::ADMINS, || async { "" }));
        let rules = verifier_free.rules();
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[1].method, Method::POST);
        assert!(rules[1].access.allows(Role::Admin));
        assert!(!rules[1].access.allows(Role::Analyst));
    }
}
