//! The summary endpoint: values, authorization, bad input.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::*;

fn money(v: &Value) -> f64 {
    v.as_str()
        .unwrap_or_else(|| panic!("money as a string, got {v}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn a_summary_has_every_section_with_correct_values() {
    let shop = spawn_shop().await;
    let composer = spawn_composer(&shop, config(&shop), false).await;
    let s = shop.seed().await;
    // The price changes after the order: paid 10.00, now 12.00.
    shop.send(
        reqwest::Method::PUT,
        format!(
            "{}/api/v1/products/{}/price",
            shop.url("product"),
            s.product_ids[0]
        ),
        json!({"price": "12.00"}),
    )
    .await;
    let order = shop.set_status(&s.order_id, "Paid").await;
    let payment = shop.pay(&order, "tok_ok").await;
    shop.ship(&s.order_id, "Leipzig hub").await;

    let body = composer
        .summary_ok(&s.order_id, &customer_token(&s.customer_id))
        .await;
    assert_eq!(body["order_id"], s.order_id.as_str());
    assert_eq!(body["degraded"], false, "{body}");
    for section in ["order", "customer", "products", "payment", "shipping"] {
        assert_eq!(body[section]["status"], "ok", "{section}: {body}");
        let as_of = body[section]["as_of"].as_str().unwrap();
        chrono::DateTime::parse_from_rfc3339(as_of).unwrap();
        assert!(body[section]["age_ms"].as_u64().unwrap() < 5_000);
        assert!(body[section].get("reason").is_none());
    }
    let o = &body["order"]["data"];
    assert_eq!(o["status"], "Paid");
    assert_eq!(o["customer_id"], s.customer_id.as_str());
    assert_eq!(money(&o["total"]), 29.0);
    assert_eq!(o["lines"].as_array().unwrap().len(), 2);
    let c = &body["customer"]["data"];
    assert_eq!(c["name"], "Ada Lovelace");
    assert!(c["email"].as_str().unwrap().ends_with("@example.com"));
    let lines = body["products"]["data"].as_array().unwrap();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["name"], "Aurora Lamp");
    assert_eq!(lines[0]["quantity"], 2);
    assert_eq!(money(&lines[0]["paid_price"]), 10.0);
    assert_eq!(money(&lines[0]["current_price"]), 12.0);
    assert_eq!(lines[0]["image_url"], "https://img.example/Aurora Lamp.png");
    assert_eq!(lines[1]["name"], "Basalt Mug");
    assert_eq!(lines[1]["description"], "Basalt Mug, a fine thing");
    assert_eq!(money(&lines[1]["paid_price"]), 4.5);
    assert_eq!(money(&lines[1]["current_price"]), 4.5);
    let p = &body["payment"]["data"];
    assert_eq!(p["id"], payment["id"]);
    assert_eq!(p["status"], "Success");
    assert_eq!(p["method"], "card");
    assert_eq!(money(&p["amount"]), 29.0);
    let sh = &body["shipping"]["data"];
    assert_eq!(sh["status"], "Created");
    assert_eq!(sh["carrier"], "DHL");
    assert_eq!(sh["location"], "Leipzig hub");
    assert_eq!(sh["eta"], "2030-01-02T10:00:00Z");
    assert!(sh["last_update"].is_string());
}

#[tokio::test]
async fn no_payment_or_shipment_yet_is_ok_and_the_latest_payment_wins() {
    let shop = spawn_shop().await;
    let mut cfg = config(&shop);
    cfg.cache.enabled = false;
    let composer = spawn_composer(&shop, cfg, false).await;
    let s = shop.seed().await;
    let token = customer_token(&s.customer_id);
    let body = composer.summary_ok(&s.order_id, &token).await;
    assert_eq!(body["degraded"], false);
    assert_eq!(body["payment"]["status"], "ok");
    assert_eq!(body["payment"]["data"], Value::Null);
    assert_eq!(body["shipping"]["status"], "ok");
    assert_eq!(body["shipping"]["data"], Value::Null);

    let order = body["order"]["data"].clone();
    shop.pay(&order, "tok_declined").await;
    let second = shop.pay(&order, "tok_pending").await;
    let body = composer.summary_ok(&s.order_id, &token).await;
    assert_eq!(body["payment"]["data"]["id"], second["id"]);
    assert_eq!(body["payment"]["data"]["status"], "Pending");
}

#[tokio::test]
async fn auth_and_bad_input_are_refused_before_any_downstream_call() {
    let shop = spawn_shop().await;
    let composer = spawn_composer(&shop, config(&shop), false).await;
    let s = shop.seed().await;
    let path = format!("/api/v1/orders/{}/summary", s.order_id);
    let forged = shoplens_kit::identity::issue(
        "not-the-secret",
        &shoplens_kit::identity::Identity::new("admin", shoplens_kit::identity::Role::Admin),
        std::time::Duration::from_secs(60),
    );
    let expired = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": s.customer_id, "role": "customer",
            "exp": chrono::Utc::now().timestamp() - 30, "iat": 0}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let cases: Vec<(String, Option<String>, StatusCode, &str)> = vec![
        (path.clone(), None, StatusCode::UNAUTHORIZED, "unauthorized"),
        (
            path.clone(),
            Some("garbage".into()),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            path.clone(),
            Some(forged),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            path.clone(),
            Some(expired),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            "/api/v1/orders/not-a-uuid/summary".into(),
            Some(customer_token(&s.customer_id)),
            StatusCode::BAD_REQUEST,
            "invalid_id",
        ),
        (
            "/api/v1/orders/1%27%20OR%201=1/summary".into(),
            Some(admin_token()),
            StatusCode::BAD_REQUEST,
            "invalid_id",
        ),
        (
            format!("/api/v1/customers/{}/orders", uuid::Uuid::now_v7()),
            Some(customer_token(&s.customer_id)),
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
        (
            "/api/v1/customers/nope/orders".into(),
            Some(admin_token()),
            StatusCode::BAD_REQUEST,
            "invalid_id",
        ),
        (
            format!("/api/v1/customers/{}/orders?cursor=zzz", s.customer_id),
            Some(customer_token(&s.customer_id)),
            StatusCode::BAD_REQUEST,
            "invalid_id",
        ),
        (
            format!("/api/v1/customers/{}/orders?limit=0", s.customer_id),
            Some(customer_token(&s.customer_id)),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            format!("/api/v1/customers/{}/orders?page=2", s.customer_id),
            Some(customer_token(&s.customer_id)),
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
    ];
    for (path, token, status, code) in cases {
        let (got, body) = composer.get(&path, token.as_deref()).await;
        assert_eq!(got, status, "{path}: {body}");
        assert_eq!(body["code"], code, "{path}: {body}");
        assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
    assert_eq!(composer.all_calls().await, 0.0, "no service was called");
}

#[tokio::test]
async fn another_customers_order_is_forbidden_and_an_admin_may_read_it() {
    let shop = spawn_shop().await;
    let composer = spawn_composer(&shop, config(&shop), false).await;
    let s = shop.seed().await;
    let eve = shop.customer("Eve").await;
    let (status, body) = composer.summary(&s.order_id, &customer_token(&eve)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["code"], "forbidden");
    assert!(body.get("order").is_none(), "nothing of the order leaks");
    let body = composer.summary_ok(&s.order_id, &admin_token()).await;
    assert_eq!(body["customer"]["data"]["name"], "Ada Lovelace");
    // Only the order was read for the refused request: nothing else.
    assert_eq!(composer.calls("customer").await, 1.0);
}

#[tokio::test]
async fn an_unknown_order_is_a_404() {
    let shop = spawn_shop().await;
    let composer = spawn_composer(&shop, config(&shop), false).await;
    let id = uuid::Uuid::now_v7().to_string();
    let (status, body) = composer.summary(&id, &admin_token()).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["code"], "not_found");
    assert_eq!(composer.calls("payment").await, 0.0);
}

#[tokio::test]
async fn health_and_metrics_are_served() {
    let shop = spawn_shop().await;
    let composer = spawn_composer(&shop, config(&shop), false).await;
    let s = shop.seed().await;
    composer
        .summary_ok(&s.order_id, &customer_token(&s.customer_id))
        .await;
    let (status, body) = composer.get("/health", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "ok");
    let (status, _) = composer.get("/metrics", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "metrics are for monitors");
    let (status, _) = composer
        .get("/metrics", Some(&customer_token(&s.customer_id)))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "metrics are for monitors");
    let text = composer.metrics().await;
    for name in [
        "shoplens_http_requests_total",
        "shoplens_http_request_duration_seconds",
        "shoplens_composer_requests_total",
        "shoplens_composer_request_duration_seconds",
        "shoplens_composer_downstream_calls_total",
        "shoplens_composer_downstream_calls_per_request",
        "shoplens_composer_cache_misses_total",
        "shoplens_composer_circuit_state",
    ] {
        assert!(text.contains(name), "{name} missing from\n{text}");
    }
    assert_eq!(
        sum_metric(
            &text,
            "shoplens_composer_requests_total",
            &["endpoint=\"order_summary\"", "outcome=\"ok\""]
        ),
        1.0
    );
    // Order, customer, products, payment, shipping: five calls for one cold summary.
    assert_eq!(
        sum_metric(
            &text,
            "shoplens_composer_downstream_calls_per_request_sum",
            &["endpoint=\"order_summary\""]
        ),
        5.0
    );
    assert_eq!(
        sum_metric(
            &text,
            "shoplens_composer_circuit_state",
            &["service=\"order\""]
        ),
        0.0
    );
}
