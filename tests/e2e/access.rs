//! Who may call what, on every route of every server: the five services, the composer, the
//! ingest API and the analytics server of a running `shoplens run`. The routes come from
//! the servers' own rule lists (the lists their routers are built from), so a new route
//! without an example request here fails this test, and a route cannot exist without a rule.
//!
//! For each route: no credentials → 401, a role the rule does not allow → 403, an allowed
//! role → 2xx (public routes: 2xx without credentials). The allowed calls run in the order
//! the servers list their routes, on entities seeded first, so state-changing calls succeed.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use shoplens_kit::access::{Access, Rule};
use shoplens_kit::identity::{Identity, Role, issue};

use crate::process::Shoplens;

const SECRET: &str = "access-test-key-0123456789abcdef0123456789";

fn token(subject: &str, role: Role) -> String {
    issue(
        SECRET,
        &Identity::new(subject, role),
        Duration::from_secs(600),
    )
}

/// The ids the example requests use.
struct Seeded {
    customer: String,
    product: String,
    order: String,
    payment: String,
    shipment: String,
}

/// One request: a path with its parameters filled in, a body, and whether it is a form.
struct Example {
    path: String,
    body: Option<Value>,
    form: Option<&'static str>,
}

fn get(path: impl Into<String>) -> Option<Example> {
    Some(Example {
        path: path.into(),
        body: None,
        form: None,
    })
}

fn with(path: impl Into<String>, body: Value) -> Option<Example> {
    Some(Example {
        path: path.into(),
        body: Some(body),
        form: None,
    })
}

/// The example request of `server`'s `rule`, `n` making created entities unique.
fn example(server: &str, rule: &Rule, s: &Seeded, n: usize) -> Option<Example> {
    let range = "from=2026-01-01&to=2026-12-31";
    match (server, rule.method.as_str(), rule.path) {
        (_, "GET", "/health") => get("/health"),
        (_, "GET", "/metrics") => get("/metrics"),
        (_, "GET", "/openapi.json") => get("/openapi.json"),
        (_, "GET", "/api/v1/ledger") => get(format!("/api/v1/ledger?{range}")),
        ("customer", "GET", "/api/v1/customers") => {
            get(format!("/api/v1/customers?ids={}", s.customer))
        }
        ("customer", "POST", "/api/v1/customers") => with(
            "/api/v1/customers",
            json!({"name": "Ada", "email": format!("ada{n}@example.com"), "country": "GB"}),
        ),
        ("customer", "GET", "/api/v1/customers/{id}") => {
            get(format!("/api/v1/customers/{}", s.customer))
        }
        ("customer", "PATCH", "/api/v1/customers/{id}") => with(
            format!("/api/v1/customers/{}", s.customer),
            json!({"name": "Ada L."}),
        ),
        ("product", "GET", "/api/v1/products") => {
            get(format!("/api/v1/products?ids={}", s.product))
        }
        ("product", "POST", "/api/v1/products") => with(
            "/api/v1/products",
            json!({"sku": format!("SKU-{n}"), "name": "Book", "description": "",
                   "category": "Books", "price": "12.50", "currency": "EUR"}),
        ),
        ("product", "GET", "/api/v1/products/{id}") => {
            get(format!("/api/v1/products/{}", s.product))
        }
        ("product", "PUT", "/api/v1/products/{id}/price") => with(
            format!("/api/v1/products/{}/price", s.product),
            json!({"price": "13.50"}),
        ),
        ("order", "GET", "/api/v1/orders") => {
            get(format!("/api/v1/orders?customer_id={}", s.customer))
        }
        ("order", "POST", "/api/v1/orders") => with(
            "/api/v1/orders",
            json!({"customer_id": s.customer, "lines": [{"product_id": s.product, "quantity": 1}]}),
        ),
        ("order", "GET", "/api/v1/orders/{id}") => get(format!("/api/v1/orders/{}", s.order)),
        ("order", "POST", "/api/v1/orders/{id}/status") => with(
            format!("/api/v1/orders/{}/status", s.order),
            json!({"status": "Paid"}),
        ),
        ("payment", "GET", "/api/v1/payments") => {
            get(format!("/api/v1/payments?order_id={}", s.order))
        }
        ("payment", "POST", "/api/v1/payments") => with(
            "/api/v1/payments",
            json!({"order_id": s.order, "amount": "12.50", "currency": "EUR",
                   "method": "card", "card_token": "tok_pending"}),
        ),
        ("payment", "GET", "/api/v1/payments/{id}") => {
            get(format!("/api/v1/payments/{}", s.payment))
        }
        ("payment", "POST", "/api/v1/payments/{id}/capture") => {
            with(format!("/api/v1/payments/{}/capture", s.payment), json!({}))
        }
        ("payment", "POST", "/api/v1/payments/{id}/refund") => with(
            format!("/api/v1/payments/{}/refund", s.payment),
            json!({"reason": "changed my mind"}),
        ),
        ("shipping", "GET", "/api/v1/shipments") => {
            get(format!("/api/v1/shipments?order_id={}", s.order))
        }
        ("shipping", "POST", "/api/v1/shipments") => with(
            "/api/v1/shipments",
            json!({"order_id": s.order, "carrier": "DHL", "location": "Leeds",
                   "eta": "2030-01-01T00:00:00Z"}),
        ),
        ("shipping", "GET", "/api/v1/shipments/{id}") => {
            get(format!("/api/v1/shipments/{}", s.shipment))
        }
        ("shipping", "POST", "/api/v1/shipments/{id}/locations") => with(
            format!("/api/v1/shipments/{}/locations", s.shipment),
            json!({"location": "York"}),
        ),
        ("shipping", "POST", "/api/v1/shipments/{id}/deliver") => with(
            format!("/api/v1/shipments/{}/deliver", s.shipment),
            json!({"location": "York"}),
        ),
        ("composer", "GET", "/") => get("/"),
        ("composer", "GET", "/my-orders") => get("/my-orders"),
        ("composer", "GET", "/api/v1/orders/{order_id}/summary") => {
            get(format!("/api/v1/orders/{}/summary", s.order))
        }
        ("composer", "GET", "/api/v1/customers/{customer_id}/orders") => {
            get(format!("/api/v1/customers/{}/orders", s.customer))
        }
        ("composer", "GET", "/api/v1/sales/dashboard") => {
            get(format!("/api/v1/sales/dashboard?{range}"))
        }
        ("composer", "GET", "/api/v1/sales/ledger") => get(format!("/api/v1/sales/ledger?{range}")),
        ("ingest", "GET", "/api/v1/status") => get("/api/v1/status"),
        ("ingest", "GET", "/api/v1/freshness") => get("/api/v1/freshness"),
        ("ingest", "GET", "/api/v1/dead-letters") => get("/api/v1/dead-letters"),
        ("ingest", "GET", "/api/v1/rebuild") => get("/api/v1/rebuild"),
        ("ingest", "POST", "/api/v1/rebuild") => with("/api/v1/rebuild", json!({})),
        ("analytics", "GET", "/") => get("/"),
        ("analytics", "GET", "/dashboard") => get("/dashboard"),
        ("analytics", "POST", "/login") => Some(Example {
            path: "/login".into(),
            body: None,
            form: Some("user=shoplens&password=shoplens"),
        }),
        ("analytics", "POST", "/logout") => with("/logout", json!({})),
        ("analytics", "GET", "/api/v1/me") => get("/api/v1/me"),
        ("analytics", "GET", "/api/v1/freshness") => get("/api/v1/freshness"),
        ("analytics", "GET", p) if p.starts_with("/api/v1/dashboard/") => {
            get(format!("{p}?{range}"))
        }
        ("analytics", "GET", "/api/v1/tables") => get("/api/v1/tables"),
        ("analytics", "POST", "/api/v1/sql") => with(
            "/api/v1/sql",
            json!({"sql": "SELECT count(*) AS n FROM orders"}),
        ),
        ("analytics", "GET", "/api/v1/reports") => get("/api/v1/reports"),
        ("analytics", "GET", "/api/v1/reports/{file}") => {
            get(format!("/api/v1/reports/daily_sales.csv?{range}"))
        }
        ("analytics", "POST", "/api/v1/export") => with(
            "/api/v1/export?format=csv",
            json!({"sql": "SELECT order_id FROM orders"}),
        ),
        ("analytics", "GET", "/api/v1/reconcile") => get(format!("/api/v1/reconcile?{range}")),
        _ => None,
    }
}

/// A role the rule allows, and one it does not; for a customer, the seeded customer.
fn roles(access: Access) -> (Role, Role) {
    let Access::Roles(allowed) = access else {
        unreachable!("public routes have no roles")
    };
    let right = allowed[0];
    let wrong = [Role::Customer, Role::Monitor, Role::Viewer, Role::Service]
        .into_iter()
        .find(|r| !allowed.contains(r))
        .expect("a role the rule does not allow");
    (right, wrong)
}

async fn send(
    http: &reqwest::Client,
    base: &str,
    method: &Method,
    ex: &Example,
    token: Option<&str>,
) -> (StatusCode, String) {
    let mut req = http.request(method.clone(), format!("{base}{}", ex.path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(body) = &ex.body {
        req = req.json(body);
    }
    if let Some(form) = ex.form {
        req = req
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form);
    }
    let resp = req.send().await.expect("the server answers");
    let status = resp.status();
    (status, resp.text().await.unwrap_or_default())
}

async fn seed(info: &shoplens::RunInfo, http: &reqwest::Client) -> Seeded {
    let service = token("seeder", Role::Service);
    let post = |url: String, body: Value| {
        let (http, service) = (http.clone(), service.clone());
        async move {
            let resp = http
                .post(url)
                .bearer_auth(service)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert!(resp.status().is_success(), "seeding: {}", resp.status());
            resp.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let customer = post(
        format!("{}/api/v1/customers", info.customer),
        json!({"name": "Seed", "email": "seed@example.com", "country": "GB"}),
    )
    .await;
    let product = post(
        format!("{}/api/v1/products", info.product),
        json!({"sku": "SEED-1", "name": "Seed", "description": "", "category": "Books",
               "price": "12.50", "currency": "EUR"}),
    )
    .await;
    let order = post(
        format!("{}/api/v1/orders", info.order),
        json!({"customer_id": customer, "lines": [{"product_id": product, "quantity": 1}]}),
    )
    .await;
    let payment = post(
        format!("{}/api/v1/payments", info.payment),
        json!({"order_id": order, "amount": "12.50", "currency": "EUR", "method": "card",
               "card_token": "tok_pending"}),
    )
    .await;
    let shipment = post(
        format!("{}/api/v1/shipments", info.shipping),
        json!({"order_id": order, "carrier": "DHL", "location": "Leeds",
               "eta": "2030-01-01T00:00:00Z"}),
    )
    .await;
    // A finished rebuild, so that the ingest worker has a latest one to show (and none
    // running when the example starts another).
    let ingest = info.ingest.as_deref().expect("the ingest worker runs");
    shoplens_ingest::client::rebuild(ingest, &token("seeder", Role::Admin), &mut Vec::new())
        .await
        .expect("a rebuild");
    Seeded {
        customer,
        product,
        order,
        payment,
        shipment,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_of_every_server_checks_who_calls_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut shop = Shoplens::spawn(
        dir.path(),
        &["run", "--no-demo"],
        &[("SHOPLENS_AUTH__SECRET", SECRET)],
    );
    let info = shop.wait_ready();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::limited(3))
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let s = seed(&info, &http).await;
    let standard = shoplens_kit::http::standard_rules;
    let servers: Vec<(&str, String, Vec<Rule>)> = vec![
        (
            "customer",
            info.customer.clone(),
            [customer_service::rules(), standard(true)].concat(),
        ),
        (
            "product",
            info.product.clone(),
            [product_service::rules(), standard(true)].concat(),
        ),
        (
            "order",
            info.order.clone(),
            [order_service::rules(), standard(true)].concat(),
        ),
        (
            "payment",
            info.payment.clone(),
            [payment_service::rules(), standard(true)].concat(),
        ),
        (
            "shipping",
            info.shipping.clone(),
            [shipping_service::rules(), standard(true)].concat(),
        ),
        (
            "composer",
            info.composer.clone(),
            [shoplens_composer::rules(), standard(true)].concat(),
        ),
        (
            "ingest",
            info.ingest.clone().unwrap(),
            [shoplens_ingest::api::rules(), standard(false)].concat(),
        ),
        (
            "analytics",
            info.analytics.clone().unwrap(),
            [shoplens_analytics::api::rules(), standard(false)].concat(),
        ),
    ];
    let mut missing = Vec::new();
    let mut checked = 0;
    for (n, (server, base, rules)) in servers.iter().enumerate() {
        for (i, rule) in rules.iter().enumerate() {
            let what = format!("{server}: {} {}", rule.method, rule.path);
            let Some(ex) = example(server, rule, &s, n * 100 + i) else {
                missing.push(what);
                continue;
            };
            checked += 1;
            if rule.access == Access::Public {
                let (status, body) = send(&http, base, &rule.method, &ex, None).await;
                assert!(status.is_success(), "{what} (public): {status} {body}");
                continue;
            }
            let (status, body) = send(&http, base, &rule.method, &ex, None).await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{what} without credentials: {body}"
            );
            let (right, wrong) = roles(rule.access);
            let subject = |role: Role| {
                if role == Role::Customer {
                    s.customer.clone()
                } else {
                    format!("test-{role}")
                }
            };
            let (status, body) = send(
                &http,
                base,
                &rule.method,
                &ex,
                Some(&token(&subject(wrong), wrong)),
            )
            .await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{what} as {wrong}: {body}");
            let (status, body) = send(
                &http,
                base,
                &rule.method,
                &ex,
                Some(&token(&subject(right), right)),
            )
            .await;
            assert!(status.is_success(), "{what} as {right}: {status} {body}");
        }
    }
    assert!(
        missing.is_empty(),
        "routes without an example request in tests/e2e/access.rs: {missing:?}"
    );
    assert!(checked > 40, "only {checked} routes checked");
    // A token signed with another key is nobody's.
    let forged = issue(
        "another-key-0123456789abcdef0123456789ab",
        &Identity::new("mallory", Role::Admin),
        Duration::from_secs(60),
    );
    let resp = http
        .get(format!("{}/api/v1/customers/{}", info.customer, s.customer))
        .bearer_auth(forged)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(shop.terminate().success());
}
