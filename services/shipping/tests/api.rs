//! The shipping service over real HTTP, with a real database and event log.

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
    App(TestService::start("shipping", |config, bus| async move {
        shipping_service::start(&config, bus).await
    })
    .await)
}

impl App {
    async fn ship(&self, body: &str, key: Option<&str>) -> (StatusCode, Value) {
        self.post("/api/v1/shipments", body, key).await
    }

    async fn moved(&self, id: &str, body: &str) -> (StatusCode, Value) {
        self.post(&format!("/api/v1/shipments/{id}/locations"), body, None)
            .await
    }

    async fn deliver(&self, id: &str, body: &str) -> (StatusCode, Value) {
        self.post(&format!("/api/v1/shipments/{id}/deliver"), body, None)
            .await
    }

    async fn events(&self, n: usize) -> Vec<Envelope> {
        self.env.events("shop.shipping", n).await
    }

    async fn rows(&self) -> i64 {
        self.count_rows("shipments").await
    }
}

const ETA: &str = "2030-05-01T12:00:00Z";

fn shipment(order_id: &str) -> String {
    json!({"order_id": order_id, "carrier": "DHL", "location": "Berlin warehouse", "eta": ETA})
        .to_string()
}

fn new_order() -> String {
    uuid::Uuid::now_v7().to_string()
}

async fn settle() {
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
}

#[tokio::test]
async fn shipping_an_order_stores_the_shipment_and_publishes_the_event() {
    let app = spawn_app().await;
    let order = new_order();
    let (status, created) = app.ship(&shipment(&order), None).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["status"], "Created");
    assert_eq!(created["order_id"], order.as_str());
    assert_eq!(created["carrier"], "DHL");
    assert_eq!(created["location"], "Berlin warehouse");
    assert_eq!(created["eta"], ETA);
    let id = created["id"].as_str().unwrap();
    let (status, fetched) = app.get(&format!("/api/v1/shipments/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(fetched, created);

    let events = app.events(1).await;
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0].aggregate_id, id,
        "shipments are keyed by shipment id"
    );
    match &events[0].payload {
        DomainEvent::ShipmentCreated(e) => {
            assert_eq!(e.shipment_id, id);
            assert_eq!(e.order_id, order);
            assert_eq!(e.carrier, "DHL");
            assert_eq!(e.location, "Berlin warehouse");
            assert_eq!(e.eta.to_rfc3339(), "2030-05-01T12:00:00+00:00");
        }
        other => panic!("unexpected event {other:?}"),
    }
}

#[tokio::test]
async fn a_retried_shipment_with_the_same_key_happens_once() {
    let app = spawn_app().await;
    let order = new_order();
    let (s1, first) = app.ship(&shipment(&order), Some("ship-1")).await;
    let (s2, second) = app.ship(&shipment(&order), Some("ship-1")).await;
    assert_eq!((s1, s2), (StatusCode::CREATED, StatusCode::CREATED));
    assert_eq!(first, second);
    let (status, err) = app.ship(&shipment(&new_order()), Some("ship-1")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(err["field"], "Idempotency-Key");
    settle().await;
    assert_eq!(app.rows().await, 1, "one shipment stored");
    assert_eq!(app.events(1).await.len(), 1, "one shipment, one event");
}

#[tokio::test]
async fn bad_input_gets_a_json_error_naming_the_field() {
    let app = spawn_app().await;
    let order = new_order();
    let good = shipment(&order);
    let cases = [
        (
            "{not json".to_owned(),
            StatusCode::BAD_REQUEST,
            None,
            "malformed_json",
        ),
        (
            good.replace(r#""carrier":"DHL","#, ""),
            StatusCode::BAD_REQUEST,
            Some("carrier"),
            "invalid_body",
        ),
        (
            good.replace(r#""eta""#, r#""weight":3,"eta""#),
            StatusCode::BAD_REQUEST,
            Some("weight"),
            "invalid_body",
        ),
        (
            good.replace(ETA, "next tuesday"),
            StatusCode::BAD_REQUEST,
            Some("eta"),
            "invalid_body",
        ),
        (
            good.replace(&order, "order-7"),
            StatusCode::BAD_REQUEST,
            Some("order_id"),
            "invalid_id",
        ),
        (
            good.replace("DHL", " "),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("carrier"),
            "invalid_field",
        ),
        (
            good.replace("DHL", &"x".repeat(65)),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("carrier"),
            "invalid_field",
        ),
        (
            good.replace("Berlin warehouse", ""),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("location"),
            "invalid_field",
        ),
        (
            good.replace("Berlin warehouse", &"x".repeat(201)),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("location"),
            "invalid_field",
        ),
    ];
    for (body, status, field, code) in cases {
        let (got, err) = app.ship(&body, None).await;
        assert_eq!(got, status, "{body} -> {err}");
        assert_eq!(err["code"], code, "{body} -> {err}");
        assert_eq!(err["field"].as_str(), field, "{body} -> {err}");
    }

    let (status, err) = app.get("/api/v1/shipments/not-a-uuid").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["field"], "id");
    let ghost = new_order();
    for (status, err) in [
        app.get(&format!("/api/v1/shipments/{ghost}")).await,
        app.moved(&ghost, r#"{"location":"Hamburg"}"#).await,
        app.deliver(&ghost, r#"{"location":"Hamburg"}"#).await,
    ] {
        assert_eq!(status, StatusCode::NOT_FOUND, "{err}");
        assert_eq!(err["code"], "not_found");
    }

    let (_, created) = app.ship(&good, None).await;
    let id = created["id"].as_str().unwrap();
    let (status, err) = app.moved(id, r#"{"location":"  "}"#).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(err["field"], "location");
    let (status, err) = app
        .moved(id, r#"{"location":"Hamburg","eta":"soon"}"#)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["field"], "eta");
    let (status, err) = app.deliver(id, "{}").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["field"], "location");
    let (_, unchanged) = app.get(&format!("/api/v1/shipments/{id}")).await;
    assert_eq!(unchanged, created, "rejected updates change nothing");

    for (query, field) in [
        ("", "order_id"),
        ("?order_id=nope", "order_id"),
        ("?order_ids=a,b", "order_ids"),
        (&format!("?order_id={order}&order_ids={order}"), "order_ids"),
    ] {
        let (status, err) = app.get(&format!("/api/v1/shipments{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query} -> {err}");
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
async fn a_shipment_moves_in_transit_then_is_delivered_and_then_changes_no_more() {
    let app = spawn_app().await;
    let order = new_order();
    let (_, created) = app.ship(&shipment(&order), None).await;
    let id = created["id"].as_str().unwrap();

    let (status, first) = app.moved(id, r#"{"location":"Hamburg hub"}"#).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["status"], "InTransit");
    assert_eq!(first["location"], "Hamburg hub");
    assert_eq!(first["eta"], ETA, "no eta given: the estimate stays");

    let new_eta = "2030-05-02T08:30:00+02:00";
    let (status, second) = app
        .moved(
            id,
            &json!({"location": "Copenhagen", "eta": new_eta}).to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(second["status"], "InTransit");
    assert_eq!(second["eta"], "2030-05-02T06:30:00Z", "stored in UTC");

    let (status, delivered) = app.deliver(id, r#"{"location":"Front door"}"#).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(delivered["status"], "Delivered");
    assert_eq!(delivered["location"], "Front door");
    assert_eq!(delivered["created_at"], created["created_at"]);
    let (_, fetched) = app.get(&format!("/api/v1/shipments/{id}")).await;
    assert_eq!(fetched, delivered);

    let (status, err) = app.moved(id, r#"{"location":"Lost"}"#).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(err["code"], "illegal_transition");
    let (status, err) = app.deliver(id, r#"{"location":"Again"}"#).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(err["code"], "illegal_transition");

    settle().await;
    let events = app.events(4).await;
    let kinds: Vec<&str> = events.iter().map(|e| e.event_type().as_str()).collect();
    assert_eq!(
        kinds,
        [
            "ShipmentCreated",
            "ShipmentLocationUpdated",
            "ShipmentLocationUpdated",
            "ShipmentDelivered"
        ]
    );
    assert!(events.iter().all(|e| e.aggregate_id == id));
    match (&events[1].payload, &events[2].payload, &events[3].payload) {
        (
            DomainEvent::ShipmentLocationUpdated(a),
            DomainEvent::ShipmentLocationUpdated(b),
            DomainEvent::ShipmentDelivered(c),
        ) => {
            assert_eq!(
                (a.location.as_str(), a.order_id.as_str()),
                ("Hamburg hub", order.as_str())
            );
            assert_eq!(a.eta.to_rfc3339(), "2030-05-01T12:00:00+00:00");
            assert_eq!(b.location, "Copenhagen");
            assert_eq!(b.eta.to_rfc3339(), "2030-05-02T06:30:00+00:00");
            assert_eq!(
                (c.location.as_str(), c.shipment_id.as_str()),
                ("Front door", id)
            );
            assert_eq!(c.order_id, order);
        }
        other => panic!("unexpected events {other:?}"),
    }
}

#[tokio::test]
async fn shipments_are_listed_by_order_newest_first() {
    let app = spawn_app().await;
    let (a, b, ghost) = (new_order(), new_order(), new_order());
    let (_, a1) = app.ship(&shipment(&a), None).await;
    let (_, b1) = app.ship(&shipment(&b), None).await;
    let (_, a2) = app.ship(&shipment(&a), None).await;
    let ids = |list: &Value| -> Vec<String> {
        list["shipments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_owned())
            .collect()
    };

    let (status, list) = app.get(&format!("/api/v1/shipments?order_id={a}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        ids(&list),
        [&a2["id"], &a1["id"]].map(|v| v.as_str().unwrap())
    );
    assert_eq!(list["shipments"][1], a1);

    let (status, list) = app
        .get(&format!("/api/v1/shipments?order_ids={b},{ghost},{a}"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        ids(&list),
        [&a2["id"], &b1["id"], &a1["id"]].map(|v| v.as_str().unwrap())
    );

    let (status, list) = app
        .get(&format!("/api/v1/shipments?order_ids={ghost}"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list, json!({"shipments": []}));

    let (status, doc) = app.get("/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["paths"]["/api/v1/shipments/{id}/deliver"]["post"].is_object());
}
