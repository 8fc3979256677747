//! The customer service over real HTTP, with a real database and event log.

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
    App(TestService::start("customer", |config, bus| async move {
        customer_service::start(&config, bus).await
    })
    .await)
}

impl App {
    async fn register(&self, body: &str, key: Option<&str>) -> (StatusCode, Value) {
        self.post("/api/v1/customers", body, key).await
    }

    async fn events(&self, n: usize) -> Vec<Envelope> {
        self.env.events("shop.customers", n).await
    }
}

const ADA: &str = r#"{"name":"Ada Lovelace","email":"ada@example.com","country":"GB"}"#;

#[tokio::test]
async fn registering_a_customer_stores_it_and_publishes_the_event() {
    let app = spawn_app().await;
    let (status, created) = app.register(ADA, None).await;
    assert_eq!(status, StatusCode::CREATED);
    let id = created["id"].as_str().unwrap();
    let (status, fetched) = app.get(&format!("/api/v1/customers/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(fetched, created);

    let events = app.events(1).await;
    assert_eq!(events.len(), 1);
    match &events[0].payload {
        DomainEvent::CustomerRegistered(e) => {
            assert_eq!(e.customer_id, id);
            assert_eq!(e.email, "ada@example.com");
        }
        other => panic!("unexpected event {other:?}"),
    }
}

#[tokio::test]
async fn a_retried_registration_with_the_same_key_happens_once() {
    let app = spawn_app().await;
    let (s1, first) = app.register(ADA, Some("k-1")).await;
    let (s2, second) = app.register(ADA, Some("k-1")).await;
    assert_eq!((s1, s2), (StatusCode::CREATED, StatusCode::CREATED));
    assert_eq!(first, second);
    let other = r#"{"name":"Grace","email":"grace@example.com","country":"US"}"#;
    let (status, err) = app.register(other, Some("k-1")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(err["field"], "Idempotency-Key");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(app.events(1).await.len(), 1, "one registration, one event");
}

#[tokio::test]
async fn bad_input_gets_a_json_error_naming_the_field() {
    let app = spawn_app().await;
    let cases = [
        ("{not json", StatusCode::BAD_REQUEST, None, "malformed_json"),
        (
            r#"{"name":"A","email":"a@b.c"}"#,
            StatusCode::BAD_REQUEST,
            Some("country"),
            "invalid_body",
        ),
        (
            r#"{"name":"A","email":"a@b.c","country":"GB","nickname":"x"}"#,
            StatusCode::BAD_REQUEST,
            Some("nickname"),
            "invalid_body",
        ),
        (
            r#"{"name":"A","email":"nope","country":"GB"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("email"),
            "invalid_field",
        ),
        (
            r#"{"name":"  ","email":"a@b.c","country":"GB"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("name"),
            "invalid_field",
        ),
        (
            r#"{"name":7,"email":"a@b.c","country":"GB"}"#,
            StatusCode::BAD_REQUEST,
            Some("name"),
            "invalid_body",
        ),
    ];
    for (body, status, field, code) in cases {
        let (got, err) = app.register(body, None).await;
        assert_eq!(got, status, "{body} -> {err}");
        assert_eq!(err["code"], code, "{body} -> {err}");
        assert_eq!(err["field"].as_str(), field, "{body} -> {err}");
    }
    let huge = format!(
        r#"{{"name":"{}","email":"a@b.c","country":"GB"}}"#,
        "x".repeat(100_000)
    );
    let (status, err) = app.register(&huge, None).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{err}");
    assert_eq!(err["code"], "payload_too_large");

    let (status, err) = app.get("/api/v1/customers/not-a-uuid").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["field"], "id");
    let (status, _) = app
        .get(&format!("/api/v1/customers/{}", uuid::Uuid::now_v7()))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (_, dup) = app.register(ADA, None).await;
    assert!(dup["id"].is_string());
    let (status, err) = app.register(ADA, None).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(err["code"], "email_taken");
    assert_eq!(
        app.events(1).await.len(),
        1,
        "rejected requests publish nothing"
    );
}

#[tokio::test]
async fn batch_lookup_and_update() {
    let app = spawn_app().await;
    let (_, a) = app.register(ADA, None).await;
    let (_, b) = app
        .register(
            r#"{"name":"Grace Hopper","email":"grace@example.com","country":"US"}"#,
            None,
        )
        .await;
    let ghost = uuid::Uuid::now_v7().to_string();
    let (status, batch) = app
        .get(&format!(
            "/api/v1/customers?ids={},{},{ghost}",
            a["id"].as_str().unwrap(),
            b["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(batch["customers"].as_array().unwrap().len(), 2);
    assert_eq!(batch["missing"], json!([ghost]));

    let resp = app
        .http
        .patch(format!(
            "{}/api/v1/customers/{}",
            app.url,
            a["id"].as_str().unwrap()
        ))
        .json(&json!({"country": "FR"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let updated: Value = resp.json().await.unwrap();
    assert_eq!(updated["country"], "FR");
    assert_eq!(updated["name"], "Ada Lovelace");
    let events = app.events(3).await;
    assert!(matches!(&events[2].payload, DomainEvent::CustomerUpdated(e) if e.country == "FR"));

    let (status, doc) = app.get("/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["paths"]["/api/v1/customers/{id}"].is_object());
}
