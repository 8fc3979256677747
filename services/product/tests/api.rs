//! The product service over real HTTP, with a real database and event log.

use reqwest::{Method, StatusCode};
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
    App(TestService::start("product", |config, bus| async move {
        product_service::start(&config, bus).await
    })
    .await)
}

impl App {
    async fn create(&self, body: &str, key: Option<&str>) -> (StatusCode, Value) {
        self.post("/api/v1/products", body, key).await
    }

    async fn put_price(&self, id: &str, body: &str) -> (StatusCode, Value) {
        let path = format!("/api/v1/products/{id}/price");
        self.send_json(Method::PUT, &path, body, None).await
    }

    async fn events(&self, n: usize) -> Vec<Envelope> {
        self.env.events("shop.products", n).await
    }

    async fn rows(&self) -> i64 {
        self.count_rows("products").await
    }
}

const LAMP: &str = r#"{"sku":"LAMP-1","name":"Desk lamp","description":"A lamp.","category":"home","price":"19.9","currency":"EUR"}"#;

fn product(sku: &str, price: &str) -> String {
    json!({
        "sku": sku, "name": "Mug", "description": "", "category": "kitchen",
        "image_url": "https://img.example.com/mug.png", "price": price, "currency": "EUR",
    })
    .to_string()
}

#[tokio::test]
async fn creating_a_product_stores_it_and_publishes_the_event() {
    let app = spawn_app().await;
    let (status, created) = app.create(LAMP, None).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(
        created["price"], "19.90",
        "money is a string with two decimals"
    );
    assert_eq!(created["image_url"], Value::Null);
    assert_eq!(created["sku"], "LAMP-1");
    let id = created["id"].as_str().unwrap();
    let (status, fetched) = app.get(&format!("/api/v1/products/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(fetched, created);

    let events = app.events(1).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].aggregate_id, id);
    match &events[0].payload {
        DomainEvent::ProductCreated(e) => {
            assert_eq!(e.product_id, id);
            assert_eq!(e.sku, "LAMP-1");
            assert_eq!(e.name, "Desk lamp");
            assert_eq!(e.category, "home");
            assert_eq!(e.price.to_string(), "19.90");
            assert_eq!(e.currency, "EUR");
        }
        other => panic!("unexpected event {other:?}"),
    }
}

#[tokio::test]
async fn a_retried_creation_with_the_same_key_happens_once() {
    let app = spawn_app().await;
    let (s1, first) = app.create(LAMP, Some("k-1")).await;
    let (s2, second) = app.create(LAMP, Some("k-1")).await;
    assert_eq!((s1, s2), (StatusCode::CREATED, StatusCode::CREATED));
    assert_eq!(first, second);
    let (status, err) = app.create(&product("MUG-1", "3.00"), Some("k-1")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(err["field"], "Idempotency-Key");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(app.rows().await, 1, "one product stored");
    assert_eq!(app.events(1).await.len(), 1, "one creation, one event");
}

#[tokio::test]
async fn bad_input_gets_a_json_error_naming_the_field() {
    let app = spawn_app().await;
    let long = "x".repeat(2001);
    let cases = [
        (
            "{not json".to_owned(),
            StatusCode::BAD_REQUEST,
            None,
            "malformed_json",
        ),
        (
            r#"{"sku":"A","name":"A","description":"","category":"c","price":"1.00"}"#.to_owned(),
            StatusCode::BAD_REQUEST,
            Some("currency"),
            "invalid_body",
        ),
        (
            LAMP.replace(r#""currency""#, r#""colour":"red","currency""#),
            StatusCode::BAD_REQUEST,
            Some("colour"),
            "invalid_body",
        ),
        (
            LAMP.replace(r#""19.9""#, "19.9"),
            StatusCode::BAD_REQUEST,
            Some("price"),
            "invalid_body",
        ),
        (
            product("N-1", "-1.00"),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("price"),
            "invalid_field",
        ),
        (
            product("N-1", "1.005"),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("price"),
            "invalid_field",
        ),
        (
            LAMP.replace("EUR", "eur"),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("currency"),
            "invalid_field",
        ),
        (
            LAMP.replace("LAMP-1", " "),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("sku"),
            "invalid_field",
        ),
        (
            LAMP.replace("home", ""),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("category"),
            "invalid_field",
        ),
        (
            LAMP.replace("A lamp.", &long),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("description"),
            "invalid_field",
        ),
        (
            product("N-1", "1.00").replace("https://img.example.com/mug.png", &long[..501]),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("image_url"),
            "invalid_field",
        ),
    ];
    for (body, status, field, code) in cases {
        let (got, err) = app.create(&body, None).await;
        assert_eq!(got, status, "{body} -> {err}");
        assert_eq!(err["code"], code, "{body} -> {err}");
        assert_eq!(err["field"].as_str(), field, "{body} -> {err}");
    }

    let (status, err) = app.get("/api/v1/products/not-a-uuid").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["field"], "id");
    let ghost = uuid::Uuid::now_v7();
    let (status, err) = app.get(&format!("/api/v1/products/{ghost}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(err["code"], "not_found");
    let (status, _) = app
        .put_price(&ghost.to_string(), r#"{"price":"1.00"}"#)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (_, lamp) = app.create(LAMP, None).await;
    let (status, err) = app.create(LAMP, None).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(err["code"], "sku_taken");
    let id = lamp["id"].as_str().unwrap();
    let (status, err) = app.put_price(id, r#"{"price":"-5"}"#).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(err["field"], "price");
    let (status, err) = app.put_price(id, r#"{"price":"5","currency":"USD"}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["field"], "currency");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(
        app.events(1).await.len(),
        1,
        "rejected requests publish nothing"
    );
}

#[tokio::test]
async fn a_price_change_publishes_old_and_new_price_only_when_it_changes() {
    let app = spawn_app().await;
    let (_, lamp) = app.create(LAMP, None).await;
    let id = lamp["id"].as_str().unwrap();

    let (status, same) = app.put_price(id, r#"{"price":"19.90"}"#).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(same, lamp, "the same price changes nothing");

    let (status, changed) = app.put_price(id, r#"{"price":"17.5"}"#).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(changed["price"], "17.50");
    assert_eq!(changed["created_at"], lamp["created_at"]);
    assert_ne!(changed["updated_at"], lamp["updated_at"]);
    let (_, fetched) = app.get(&format!("/api/v1/products/{id}")).await;
    assert_eq!(fetched, changed);

    let (status, _) = app.put_price(id, r#"{"price":"21.00"}"#).await;
    assert_eq!(status, StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let events = app.events(3).await;
    let changes: Vec<(String, String)> = events
        .iter()
        .filter_map(|e| match &e.payload {
            DomainEvent::ProductPriceChanged(c) => {
                assert_eq!(c.product_id, id);
                assert_eq!(c.currency, "EUR");
                Some((c.old_price.to_string(), c.new_price.to_string()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(events.len(), 3, "created + two real changes");
    assert!(matches!(events[0].payload, DomainEvent::ProductCreated(_)));
    assert_eq!(
        changes,
        [
            ("19.90".to_owned(), "17.50".to_owned()),
            ("17.50".to_owned(), "21.00".to_owned())
        ]
    );
}

#[tokio::test]
async fn batch_lookup_reports_missing_ids() {
    let app = spawn_app().await;
    let (_, a) = app.create(LAMP, None).await;
    let (_, b) = app.create(&product("MUG-1", "3"), None).await;
    assert_eq!(b["image_url"], "https://img.example.com/mug.png");
    assert_eq!(b["price"], "3.00");
    let ghost = uuid::Uuid::now_v7().to_string();
    let (a, b) = (a["id"].as_str().unwrap(), b["id"].as_str().unwrap());
    let (status, batch) = app
        .get(&format!("/api/v1/products?ids={a},{b},{ghost},{a}"))
        .await;
    assert_eq!(status, StatusCode::OK);
    let mut ids: Vec<&str> = batch["products"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    ids.sort();
    let mut expected = vec![a, b];
    expected.sort();
    assert_eq!(ids, expected);
    assert_eq!(batch["missing"], json!([ghost]));

    let (status, err) = app.get("/api/v1/products?ids=nope").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["field"], "ids");
    let (status, err) = app.get("/api/v1/products").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["field"], "ids");
    let too_many: Vec<String> = (0..101).map(|_| uuid::Uuid::now_v7().to_string()).collect();
    let (status, err) = app
        .get(&format!("/api/v1/products?ids={}", too_many.join(",")))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(err["field"], "ids");

    let (status, doc) = app.get("/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["paths"]["/api/v1/products/{id}/price"]["put"].is_object());
}
