//! The payment service over real HTTP, with a real database and event log.

use reqwest::StatusCode;
use serde_json::{Value, json};
use shoplens_contract::{DomainEvent, Envelope};
use shoplens_test_support::services::TestService;

struct App(TestService);

impl std::ops::Deref for App {
    type Target = TestService;
    fn deref(&self) -> &TestService {
        &self.0
    }
}

async fn spawn_app() -> App {
    App(TestService::start("payment", |config, bus| async move {
        payment_service::start(&config, bus).await
    })
    .await)
}

impl App {
    async fn pay(&self, body: &str, key: Option<&str>) -> (StatusCode, Value) {
        self.post("/api/v1/payments", body, key).await
    }

    async fn capture(&self, id: &str) -> (StatusCode, Value) {
        let url = format!("{}/api/v1/payments/{id}/capture", self.url);
        self.send(self.http.post(url)).await
    }

    async fn refund(&self, id: &str) -> (StatusCode, Value) {
        let path = format!("/api/v1/payments/{id}/refund");
        self.post(&path, r#"{"reason":"customer changed their mind"}"#, None)
            .await
    }

    async fn events(&self, n: usize) -> Vec<Envelope> {
        self.env.events("shop.payments", n).await
    }

    async fn rows(&self) -> i64 {
        self.count_rows("payments").await
    }
}

fn payment(order_id: &str, card_token: &str) -> String {
    json!({
        "order_id": order_id, "amount": "42.5", "currency": "EUR", "method": "card",
        "card_token": card_token,
    })
    .to_string()
}

fn new_order() -> String {
    uuid::Uuid::now_v7().to_string()
}

async fn settle() {
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
}

#[tokio::test]
async fn a_successful_payment_is_stored_and_published() {
    let app = spawn_app().await;
    let order = new_order();
    let (status, created) = app.pay(&payment(&order, "tok_visa"), None).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["status"], "Success");
    assert_eq!(created["amount"], "42.50");
    assert_eq!(created["order_id"], order.as_str());
    assert_eq!(created["method"], "card");
    assert_eq!(created["failure_reason"], Value::Null);
    assert!(
        created.get("card_token").is_none(),
        "the token is never echoed"
    );
    let id = created["id"].as_str().unwrap();
    let (status, fetched) = app.get(&format!("/api/v1/payments/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(fetched, created);

    let events = app.events(1).await;
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0].aggregate_id, id,
        "payments are keyed by payment id"
    );
    match &events[0].payload {
        DomainEvent::PaymentCompleted(e) => {
            assert_eq!(e.payment_id, id);
            assert_eq!(e.order_id, order);
            assert_eq!(e.amount.to_string(), "42.50");
            assert_eq!(e.currency, "EUR");
            assert_eq!(e.method, "card");
        }
        other => panic!("unexpected event {other:?}"),
    }
}

#[tokio::test]
async fn a_retried_payment_with_the_same_key_happens_once() {
    let app = spawn_app().await;
    let order = new_order();
    let body = payment(&order, "tok_visa");
    let (s1, first) = app.pay(&body, Some("pay-1")).await;
    let (s2, second) = app.pay(&body, Some("pay-1")).await;
    assert_eq!((s1, s2), (StatusCode::CREATED, StatusCode::CREATED));
    assert_eq!(first, second);
    let (status, err) = app.pay(&payment(&order, "tok_other"), Some("pay-1")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(err["field"], "Idempotency-Key");
    settle().await;
    assert_eq!(app.rows().await, 1, "one payment stored");
    assert_eq!(app.events(1).await.len(), 1, "one payment, one event");
}

#[tokio::test]
async fn bad_input_gets_a_json_error_naming_the_field() {
    let app = spawn_app().await;
    let order = new_order();
    let good = payment(&order, "tok_visa");
    let cases = [
        (
            "{not json".to_owned(),
            StatusCode::BAD_REQUEST,
            None,
            "malformed_json",
        ),
        (
            good.replace(r#""method":"card","#, ""),
            StatusCode::BAD_REQUEST,
            Some("method"),
            "invalid_body",
        ),
        (
            good.replace(r#""card_token""#, r#""cvv":"123","card_token""#),
            StatusCode::BAD_REQUEST,
            Some("cvv"),
            "invalid_body",
        ),
        (
            good.replace(r#""42.5""#, "42.5"),
            StatusCode::BAD_REQUEST,
            Some("amount"),
            "invalid_body",
        ),
        (
            good.replace(&order, "order-7"),
            StatusCode::BAD_REQUEST,
            Some("order_id"),
            "invalid_id",
        ),
        (
            good.replace("42.5", "-42.50"),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("amount"),
            "invalid_field",
        ),
        (
            good.replace("42.5", "42.501"),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("amount"),
            "invalid_field",
        ),
        (
            good.replace("42.5", "0.00"),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("amount"),
            "invalid_field",
        ),
        (
            good.replace(r#""card""#, r#""cash""#),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("method"),
            "invalid_field",
        ),
        (
            good.replace("EUR", "EURO"),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("currency"),
            "invalid_field",
        ),
    ];
    for (body, status, field, code) in cases {
        let (got, err) = app.pay(&body, None).await;
        assert_eq!(got, status, "{body} -> {err}");
        assert_eq!(err["code"], code, "{body} -> {err}");
        assert_eq!(err["field"].as_str(), field, "{body} -> {err}");
    }

    let (status, err) = app.get("/api/v1/payments/not-a-uuid").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["field"], "id");
    let ghost = uuid::Uuid::now_v7().to_string();
    for (status, err) in [
        app.get(&format!("/api/v1/payments/{ghost}")).await,
        app.capture(&ghost).await,
        app.refund(&ghost).await,
    ] {
        assert_eq!(status, StatusCode::NOT_FOUND, "{err}");
        assert_eq!(err["code"], "not_found");
    }

    let (_, paid) = app.pay(&good, None).await;
    let id = paid["id"].as_str().unwrap();
    let (status, err) = app.capture(id).await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "a Success payment cannot be captured"
    );
    assert_eq!(err["code"], "illegal_transition");
    let path = format!("/api/v1/payments/{id}/refund");
    let (status, err) = app.post(&path, r#"{"reason":"  "}"#, None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(err["field"], "reason");
    let (status, err) = app.post(&path, "{}", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["field"], "reason");

    for (query, field) in [
        ("", "order_id"),
        ("?order_id=nope", "order_id"),
        ("?order_ids=", "order_ids"),
        (&format!("?order_id={order}&order_ids={order}"), "order_ids"),
        ("?customer_id=x", "customer_id"),
    ] {
        let (status, err) = app.get(&format!("/api/v1/payments{query}")).await;
        assert!(status.is_client_error(), "{query} -> {status}");
        assert_eq!(err["field"], field, "{query} -> {err}");
    }
    settle().await;
    assert_eq!(
        app.events(1).await.len(),
        1,
        "rejected requests publish nothing"
    );
}

#[tokio::test]
async fn the_fake_provider_decides_and_captures_and_refunds_follow_the_state_machine() {
    let app = spawn_app().await;
    let order = new_order();

    let (status, declined) = app.pay(&payment(&order, "tok_declined"), None).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(declined["status"], "Failed");
    assert_eq!(declined["failure_reason"], "card declined");
    let declined_id = declined["id"].as_str().unwrap();
    let (status, _) = app.capture(declined_id).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, err) = app.refund(declined_id).await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "only a Success payment is refunded"
    );
    assert_eq!(err["code"], "illegal_transition");

    let (_, pending) = app.pay(&payment(&order, "tok_pending"), None).await;
    assert_eq!(pending["status"], "Pending");
    let id = pending["id"].as_str().unwrap();
    let (status, _) = app.refund(id).await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "a Pending payment cannot be refunded"
    );
    settle().await;
    assert_eq!(
        app.events(1).await.len(),
        1,
        "a pending payment publishes nothing yet"
    );

    let (status, captured) = app.capture(id).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(captured["status"], "Success");
    assert_eq!(captured["created_at"], pending["created_at"]);
    let (status, _) = app.capture(id).await;
    assert_eq!(status, StatusCode::CONFLICT, "captured once only");

    let (status, refunded) = app.refund(id).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(refunded["status"], "Refunded");
    let (_, fetched) = app.get(&format!("/api/v1/payments/{id}")).await;
    assert_eq!(fetched, refunded);
    let (status, _) = app.refund(id).await;
    assert_eq!(status, StatusCode::CONFLICT, "refunded once only");

    let events = app.events(3).await;
    assert_eq!(events.len(), 3);
    match &events[0].payload {
        DomainEvent::PaymentFailed(e) => {
            assert_eq!(e.payment_id, declined_id);
            assert_eq!(e.order_id, order);
            assert_eq!(e.reason, "card declined");
            assert_eq!(e.method, "card");
            assert_eq!(e.amount.to_string(), "42.50");
        }
        other => panic!("unexpected event {other:?}"),
    }
    let of_pending: Vec<&DomainEvent> = events
        .iter()
        .filter(|e| e.aggregate_id == id)
        .map(|e| &e.payload)
        .collect();
    match of_pending[..] {
        [
            DomainEvent::PaymentCompleted(done),
            DomainEvent::PaymentRefunded(back),
        ] => {
            assert_eq!(done.payment_id, id);
            assert_eq!(done.amount.to_string(), "42.50");
            assert_eq!(back.payment_id, id);
            assert_eq!(back.order_id, order);
            assert_eq!(back.amount.to_string(), "42.50", "refunded in full");
            assert_eq!(back.currency, "EUR");
            assert_eq!(back.reason, "customer changed their mind");
        }
        _ => panic!("expected completed then refunded, got {of_pending:?}"),
    }
}

#[tokio::test]
async fn payments_are_listed_by_order_newest_first() {
    let app = spawn_app().await;
    let (a, b, ghost) = (new_order(), new_order(), new_order());
    let (_, a1) = app.pay(&payment(&a, "tok_declined"), None).await;
    let (_, a2) = app.pay(&payment(&a, "tok_visa"), None).await;
    let (_, b1) = app.pay(&payment(&b, "tok_pending"), None).await;
    let ids = |list: &Value| -> Vec<String> {
        list["payments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["id"].as_str().unwrap().to_owned())
            .collect()
    };

    let (status, list) = app.get(&format!("/api/v1/payments?order_id={a}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        ids(&list),
        [&a2["id"], &a1["id"]].map(|v| v.as_str().unwrap())
    );
    assert_eq!(list["payments"][0], a2);

    let (status, list) = app
        .get(&format!("/api/v1/payments?order_ids={a},{ghost},{b}"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        ids(&list),
        [&b1["id"], &a2["id"], &a1["id"]].map(|v| v.as_str().unwrap())
    );

    let (status, list) = app.get(&format!("/api/v1/payments?order_id={ghost}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list, json!({"payments": []}));

    let too_many: Vec<String> = (0..101).map(|_| new_order()).collect();
    let (status, err) = app
        .get(&format!(
            "/api/v1/payments?order_ids={}",
            too_many.join(",")
        ))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(err["field"], "order_ids");

    let (status, doc) = app.get("/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["paths"]["/api/v1/payments/{id}/refund"]["post"].is_object());
}
