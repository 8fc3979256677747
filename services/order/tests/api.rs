//! The order service over real HTTP, against the real customer and product services.

use reqwest::StatusCode;
use serde_json::{Value, json};
use shoplens_contract::{DomainEvent, Envelope, OrderStatus};
use shoplens_kit::ServiceHandle;
use shoplens_test_support::services::TestEnv;

struct Shop {
    env: TestEnv,
    http: reqwest::Client,
    customer: Option<ServiceHandle>,
    product: ServiceHandle,
    order: ServiceHandle,
}

async fn spawn_shop() -> Shop {
    let env = TestEnv::new();
    let customer = customer_service::start(&env.service_config("customer"), env.bus())
        .await
        .unwrap();
    let product = product_service::start(&env.service_config("product"), env.bus())
        .await
        .unwrap();
    let upstreams = order_service::Upstreams {
        customer_url: customer.url().into(),
        product_url: product.url().into(),
        timeout_ms: 1_000,
    };
    let order = order_service::start(&env.service_config("order"), &upstreams, env.bus())
        .await
        .unwrap();
    let http =
        shoplens_test_support::services::authorized_client(&env.service_config("order").auth);
    Shop {
        env,
        http,
        customer: Some(customer),
        product,
        order,
    }
}

impl Shop {
    async fn send(&self, req: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let resp = req.send().await.unwrap();
        (resp.status(), resp.json().await.unwrap_or(Value::Null))
    }

    async fn customer(&self, email: &str) -> String {
        let url = format!("{}/api/v1/customers", self.customer.as_ref().unwrap().url());
        let body = json!({"name": "Test Customer", "email": email, "country": "NL"});
        let (status, c) = self.send(self.http.post(url).json(&body)).await;
        assert_eq!(status, StatusCode::CREATED, "{c}");
        c["id"].as_str().unwrap().to_owned()
    }

    async fn product(&self, sku: &str, price: &str) -> String {
        let url = format!("{}/api/v1/products", self.product.url());
        let body = json!({"sku": sku, "name": format!("Product {sku}"), "description": "",
                          "category": "Books", "price": price, "currency": "EUR"});
        let (status, p) = self.send(self.http.post(url).json(&body)).await;
        assert_eq!(status, StatusCode::CREATED, "{p}");
        p["id"].as_str().unwrap().to_owned()
    }

    async fn place(&self, body: Value, key: Option<&str>) -> (StatusCode, Value) {
        let mut req = self
            .http
            .post(format!("{}/api/v1/orders", self.order.url()))
            .json(&body);
        if let Some(key) = key {
            req = req.header("Idempotency-Key", key);
        }
        self.send(req).await
    }

    async fn set_status(&self, id: &str, status: &str) -> (StatusCode, Value) {
        let url = format!("{}/api/v1/orders/{id}/status", self.order.url());
        self.send(self.http.post(url).json(&json!({"status": status})))
            .await
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(self.http.get(format!("{}{path}", self.order.url())))
            .await
    }

    async fn events(&self, n: usize) -> Vec<Envelope> {
        self.env.events("shop.orders", n).await
    }
}

#[tokio::test]
async fn placing_an_order_snapshots_prices_and_publishes_events() {
    let shop = spawn_shop().await;
    let c = shop.customer("a@example.com").await;
    let p1 = shop.product("A", "12.50").await;
    let p2 = shop.product("B", "0.99").await;
    let (status, order) = shop
        .place(
            json!({"customer_id": c, "lines": [{"product_id": p1, "quantity": 2}, {"product_id": p2, "quantity": 3}]}),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    assert_eq!(order["status"], "Placed");
    assert_eq!(order["total"], "27.97");
    assert_eq!(order["currency"], "EUR");
    assert_eq!(order["lines"][0]["unit_price"], "12.50");
    assert_eq!(order["lines"][1]["line_total"], "2.97");

    // A later price change does not touch the order.
    let url = format!("{}/api/v1/products/{p1}/price", shop.product.url());
    let (s, _) = shop
        .send(shop.http.put(url).json(&json!({"price": "20.00"})))
        .await;
    assert_eq!(s, StatusCode::OK);
    let id = order["id"].as_str().unwrap();
    let (_, again) = shop.get(&format!("/api/v1/orders/{id}")).await;
    assert_eq!(again, order);

    let events = shop.events(2).await;
    assert_eq!(events.len(), 2);
    match &events[0].payload {
        DomainEvent::OrderCreated(e) => {
            assert_eq!(e.order_id, id);
            assert_eq!(e.total.to_string(), "27.97");
            assert_eq!(e.lines.len(), 2);
        }
        other => panic!("expected OrderCreated, got {other:?}"),
    }
    assert!(matches!(&events[1].payload,
        DomainEvent::OrderStatusChanged(e) if e.from.is_none() && e.to == OrderStatus::Placed));
}

#[tokio::test]
async fn the_lifecycle_publishes_status_changes_and_purchases_when_paid() {
    let shop = spawn_shop().await;
    let c = shop.customer("b@example.com").await;
    let p1 = shop.product("A", "10.00").await;
    let p2 = shop.product("B", "5.25").await;
    let (_, order) = shop
        .place(
            json!({"customer_id": c, "lines": [{"product_id": p1, "quantity": 1}, {"product_id": p2, "quantity": 4}]}),
            None,
        )
        .await;
    let id = order["id"].as_str().unwrap();

    let (s, err) = shop.set_status(id, "Delivered").await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(err["code"], "illegal_transition");
    for next in ["Paid", "Paid", "Shipped", "Delivered"] {
        let (s, o) = shop.set_status(id, next).await;
        assert_eq!(s, StatusCode::OK, "{o}");
        assert_eq!(o["status"], next);
    }
    let (s, _) = shop.set_status(id, "Cancelled").await;
    assert_eq!(s, StatusCode::CONFLICT);

    // Created, Placed, Paid, 2 purchases, Shipped, Delivered; the repeated Paid added nothing.
    let events = shop.events(7).await;
    let kinds: Vec<_> = events.iter().map(|e| e.event_type().as_str()).collect();
    assert_eq!(
        kinds,
        [
            "OrderCreated",
            "OrderStatusChanged",
            "OrderStatusChanged",
            "ProductPurchased",
            "ProductPurchased",
            "OrderStatusChanged",
            "OrderStatusChanged"
        ]
    );
    let revenue: Vec<String> = events
        .iter()
        .filter_map(|e| match &e.payload {
            DomainEvent::ProductPurchased(p) => Some(p.revenue.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(revenue, ["10.00", "21.00"]);
}

#[tokio::test]
async fn bad_orders_are_rejected_naming_the_field_and_publish_nothing() {
    let shop = spawn_shop().await;
    let c = shop.customer("c@example.com").await;
    let p = shop.product("A", "1.00").await;
    let ghost = uuid::Uuid::now_v7().to_string();
    let cases = [
        (
            json!({"customer_id": ghost, "lines": [{"product_id": p, "quantity": 1}]}),
            422,
            "customer_id",
        ),
        (
            json!({"customer_id": c, "lines": [{"product_id": p, "quantity": 1}, {"product_id": ghost, "quantity": 1}]}),
            422,
            "lines[1].product_id",
        ),
        (
            json!({"customer_id": c, "lines": [{"product_id": p, "quantity": -2}]}),
            422,
            "lines[0].quantity",
        ),
        (
            json!({"customer_id": c, "lines": [{"product_id": p, "quantity": 0}]}),
            422,
            "lines[0].quantity",
        ),
        (json!({"customer_id": c, "lines": []}), 422, "lines"),
        (
            json!({"customer_id": c, "lines": [{"product_id": p, "quantity": 1}, {"product_id": p, "quantity": 1}]}),
            422,
            "lines[1].product_id",
        ),
        (
            json!({"customer_id": "nope", "lines": [{"product_id": p, "quantity": 1}]}),
            400,
            "customer_id",
        ),
        (
            json!({"customer_id": c, "lines": [{"product_id": p, "quantity": 1, "price": "0.01"}]}),
            400,
            "lines[0].price",
        ),
        (json!({"customer_id": c}), 400, "lines"),
        (
            json!({"customer_id": c, "lines": [{"product_id": p, "quantity": "1"}]}),
            400,
            "lines[0].quantity",
        ),
    ];
    for (body, status, field) in cases {
        let (got, err) = shop.place(body.clone(), None).await;
        assert_eq!(got.as_u16(), status, "{body} -> {err}");
        assert_eq!(err["field"], field, "{body} -> {err}");
    }
    let (s, err) = shop.get("/api/v1/orders/123").await;
    assert_eq!(
        (s, err["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("id"))
    );
    let (s, _) = shop.get(&format!("/api/v1/orders/{ghost}")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(
        shop.events(0).await.is_empty(),
        "rejected orders publish nothing"
    );
}

#[tokio::test]
async fn a_retry_is_answered_from_the_first_attempt_even_when_a_dependency_is_down() {
    let mut shop = spawn_shop().await;
    let c = shop.customer("d@example.com").await;
    let p = shop.product("A", "3.00").await;
    let body = json!({"customer_id": c, "lines": [{"product_id": p, "quantity": 1}]});
    let (s1, first) = shop.place(body.clone(), Some("checkout-1")).await;
    assert_eq!(s1, StatusCode::CREATED);

    shop.customer.take().unwrap().stop().await;
    let (s2, second) = shop.place(body.clone(), Some("checkout-1")).await;
    assert_eq!((s2, &second), (StatusCode::CREATED, &first));
    // Without the key the customer service is needed, and it is down: 503, nothing written.
    let (s3, err) = shop.place(body, None).await;
    assert_eq!(s3, StatusCode::SERVICE_UNAVAILABLE, "{err}");
    assert_eq!(err["code"], "dependency_unavailable");
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(shop.events(2).await.len(), 2, "one order, two events");
}

#[tokio::test]
async fn a_customers_orders_come_newest_first_a_page_at_a_time() {
    let shop = spawn_shop().await;
    let c = shop.customer("e@example.com").await;
    let other = shop.customer("f@example.com").await;
    let p = shop.product("A", "1.00").await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        let (_, o) = shop
            .place(
                json!({"customer_id": c, "lines": [{"product_id": p, "quantity": 1}]}),
                None,
            )
            .await;
        ids.push(o["id"].as_str().unwrap().to_owned());
    }
    shop.place(
        json!({"customer_id": other, "lines": [{"product_id": p, "quantity": 1}]}),
        None,
    )
    .await;
    ids.reverse();

    let (s, page1) = shop
        .get(&format!("/api/v1/orders?customer_id={c}&limit=3"))
        .await;
    assert_eq!(s, StatusCode::OK, "{page1}");
    let got: Vec<_> = page1["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].clone())
        .collect();
    assert_eq!(got, ids[..3]);
    let cursor = page1["next_cursor"].as_str().unwrap();
    let (_, page2) = shop
        .get(&format!(
            "/api/v1/orders?customer_id={c}&limit=3&before={cursor}"
        ))
        .await;
    let got: Vec<_> = page2["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].clone())
        .collect();
    assert_eq!(got, ids[3..]);
    assert!(page2["next_cursor"].is_null());

    let ghost = uuid::Uuid::now_v7();
    let (_, batch) = shop
        .get(&format!("/api/v1/orders?ids={},{ghost}", ids[0]))
        .await;
    assert_eq!(batch["orders"][0]["id"], ids[0].as_str());
    assert_eq!(batch["missing"], json!([ghost.to_string()]));

    let (s, err) = shop
        .get(&format!("/api/v1/orders?customer_id={c}&limit=1000"))
        .await;
    assert_eq!(
        (s, err["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("limit"))
    );
    let (s, err) = shop.get("/api/v1/orders").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{err}");
}

#[tokio::test]
async fn every_order_comes_oldest_first_a_page_at_a_time_with_its_paid_time() {
    let shop = spawn_shop().await;
    let c = shop.customer("g@example.com").await;
    let other = shop.customer("h@example.com").await;
    let p = shop.product("A", "2.50").await;
    let mut ids = Vec::new();
    for customer in [&c, &other, &c, &other, &c] {
        let (_, o) = shop
            .place(
                json!({"customer_id": customer, "lines": [{"product_id": p, "quantity": 2}]}),
                None,
            )
            .await;
        ids.push(o["id"].as_str().unwrap().to_owned());
    }
    let (_, paid) = shop.set_status(&ids[1], "Paid").await;
    let paid_at = paid["paid_at"]
        .as_str()
        .expect("paid_at once Paid")
        .to_owned();
    // Later steps keep the instant the order was paid.
    let (_, shipped) = shop.set_status(&ids[1], "Shipped").await;
    assert_eq!(shipped["paid_at"], paid_at.as_str());

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let after = cursor
            .as_ref()
            .map(|c| format!("&after={c}"))
            .unwrap_or_default();
        let (s, page) = shop
            .get(&format!("/api/v1/orders?all=true&limit=2{after}"))
            .await;
        assert_eq!(s, StatusCode::OK, "{page}");
        pages += 1;
        for o in page["orders"].as_array().unwrap() {
            seen.push(o["id"].as_str().unwrap().to_owned());
            let is_paid = o["id"] == ids[1].as_str();
            assert_eq!(o["paid_at"].is_string(), is_paid, "{o}");
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, ids, "every order once, oldest first");
    assert_eq!(pages, 3);

    for (query, field) in [
        ("all=true&limit=0", "limit"),
        ("all=true&limit=1001", "limit"),
        ("all=true&after=nope", "after"),
        ("after=0190a0b0-0000-7000-8000-000000000000", "after"),
    ] {
        let (s, err) = shop.get(&format!("/api/v1/orders?{query}")).await;
        assert!(s.is_client_error(), "{query}: {s} {err}");
        assert_eq!(err["field"], field, "{query}: {err}");
    }
    let (s, err) = shop
        .get(&format!("/api/v1/orders?all=true&customer_id={c}"))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{err}");
}

/// Whether this run's services are on PostgreSQL, where several replicas of a service share
/// one database (on SQLite, one process owns the file).
fn on_postgres() -> bool {
    let pg = matches!(
        shoplens_test_support::services::services_database(),
        shoplens_test_support::services::ServicesDb::Postgres(_)
    );
    if !pg {
        eprintln!(
            "replicas share a database on PostgreSQL only: run with SHOPLENS_TEST_SERVICES_DB=postgres"
        );
    }
    pg
}

/// A second replica of the shop's order service: the same database, bus and upstreams.
async fn second_replica(shop: &Shop, relay: shoplens_kit::config::RelayConfig) -> ServiceHandle {
    let upstreams = order_service::Upstreams {
        customer_url: shop.customer.as_ref().unwrap().url().into(),
        product_url: shop.product.url().into(),
        timeout_ms: 1_000,
    };
    let config = shoplens_kit::config::ServiceConfig {
        relay,
        ..shop.env.service_config("order")
    };
    order_service::start(&config, &upstreams, shop.env.bus())
        .await
        .unwrap()
}

/// The order's status changes as published, in order, once the last one published reaches
/// `status` (or after 10 s: every change commits with its event, so the relay gets there).
async fn status_chain(
    shop: &Shop,
    id: &str,
    status: &str,
) -> Vec<(Option<OrderStatus>, OrderStatus)> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let chain: Vec<_> = shop
            .events(0)
            .await
            .into_iter()
            .filter_map(|e| match e.payload {
                DomainEvent::OrderStatusChanged(c) if c.order_id == id => Some((c.from, c.to)),
                _ => None,
            })
            .collect();
        let reached = chain.last().is_some_and(|(_, to)| to.as_str() == status);
        if reached || std::time::Instant::now() > deadline {
            return chain;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_change_one_order_one_change_at_a_time() {
    if !on_postgres() {
        return;
    }
    let shop = spawn_shop().await;
    let second = second_replica(&shop, Default::default()).await;
    let c = shop.customer("replicas@example.com").await;
    let p = shop.product("R1", "5.00").await;
    let (status, order) = shop
        .place(
            json!({"customer_id": c, "lines": [{"product_id": p, "quantity": 1}]}),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    let id = order["id"].as_str().unwrap().to_owned();

    // Every legal next status at once, half through each replica: without a row lock two of
    // them would both start from Placed and the later would overwrite the earlier.
    let targets = ["Paid", "Cancelled", "Shipped", "Delivered"];
    let calls = (0..24).map(|i| {
        let base = if i % 2 == 0 {
            shop.order.url()
        } else {
            second.url()
        };
        let url = format!("{base}/api/v1/orders/{id}/status");
        let req = shop
            .http
            .post(url)
            .json(&json!({"status": targets[i % targets.len()]}));
        async move {
            let resp = req.send().await.unwrap();
            resp.status()
        }
    });
    let answers = futures::future::join_all(calls).await;
    assert!(
        answers
            .iter()
            .all(|s| *s == StatusCode::OK || *s == StatusCode::CONFLICT),
        "{answers:?}"
    );

    let (_, now) = shop.get(&format!("/api/v1/orders/{id}")).await;
    let chain = status_chain(&shop, &id, now["status"].as_str().unwrap()).await;
    // One chain: every change starts where the one before ended.
    assert_eq!(chain[0], (None, OrderStatus::Placed), "{chain:?}");
    for pair in chain.windows(2) {
        assert_eq!(pair[1].0, Some(pair[0].1), "a lost update: {chain:?}");
    }
    assert_eq!(now["status"], chain.last().unwrap().1.as_str(), "{chain:?}");
    assert!(chain.len() >= 2, "one change went through: {chain:?}");
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_replica_publishes_the_outbox_and_another_takes_over_when_it_stops() {
    if !on_postgres() {
        return;
    }
    let mut shop = spawn_shop().await;
    let fast = shoplens_kit::config::RelayConfig {
        poll_interval_ms: 20,
        takeover_poll_ms: 100,
        ..Default::default()
    };
    let second = second_replica(&shop, fast).await;
    let c = shop.customer("relay@example.com").await;
    let p = shop.product("R2", "5.00").await;
    let place = |url: String| {
        let req = shop
            .http
            .post(format!("{url}/api/v1/orders"))
            .json(&json!({"customer_id": c, "lines": [{"product_id": p, "quantity": 1}]}));
        async move {
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::CREATED);
        }
    };
    // The first replica started first and holds the lock; orders placed through the second
    // are published by the first's relay.
    for _ in 0..5 {
        place(second.url()).await;
    }
    let created = |events: &[Envelope]| {
        events
            .iter()
            .filter(|e| matches!(e.payload, DomainEvent::OrderCreated(_)))
            .map(|e| e.event_id)
            .collect::<Vec<_>>()
    };
    assert_eq!(created(&shop.events(10).await).len(), 5);
    assert!(shop.order.publishes_outbox(), "the first replica publishes");
    assert!(!second.publishes_outbox(), "the second stands by");

    // The first stops (draining what it holds); the second takes over and publishes the
    // orders placed after, each once.
    let first = std::mem::replace(&mut shop.order, second);
    first.stop().await;
    for _ in 0..5 {
        place(shop.order.url()).await;
    }
    let events = shop.events(20).await;
    let ids = created(&events);
    assert_eq!(
        ids.len(),
        10,
        "every order published once after the takeover"
    );
    let unique: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!(unique.len(), 10);
    assert!(
        shop.order.publishes_outbox(),
        "the second replica publishes now"
    );
}

/// An order service whose customer and product services each have a replica that is down
/// (a port nobody listens on) beside the real one.
async fn order_service_with_a_dead_replica_of_each(shop: &Shop) -> (ServiceHandle, String) {
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let upstreams = order_service::Upstreams {
        customer_url: vec![dead.clone(), shop.customer.as_ref().unwrap().url()].into(),
        product_url: vec![shop.product.url(), dead.clone()].into(),
        timeout_ms: 1_000,
    };
    let config = shop.env.service_config("order-beside-a-dead-replica");
    let order = order_service::start(&config, &upstreams, shop.env.bus())
        .await
        .unwrap();
    (order, dead)
}

#[tokio::test]
async fn orders_are_placed_while_a_replica_of_each_dependency_is_down() {
    let mut shop = spawn_shop().await;
    let (order, _dead) = order_service_with_a_dead_replica_of_each(&shop).await;
    let c = shop.customer("replicas@example.com").await;
    let p = shop.product("R", "2.00").await;
    let url = format!("{}/api/v1/orders", order.url());
    for i in 1..=6 {
        let body = json!({"customer_id": c, "lines": [{"product_id": p, "quantity": i}]});
        let (s, o) = shop.send(shop.http.post(&url).json(&body)).await;
        assert_eq!(s, StatusCode::CREATED, "order {i}: {o}");
        assert_eq!(o["total"], format!("{}.00", 2 * i), "{o}");
    }
    // A customer that does not exist is still told apart from a replica that is down.
    let body = json!({"customer_id": uuid::Uuid::now_v7().to_string(),
                      "lines": [{"product_id": p, "quantity": 1}]});
    let (s, err) = shop.send(shop.http.post(&url).json(&body)).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{err}");

    // Every customer replica down: the dependency's error, as with one URL.
    shop.customer.take().unwrap().stop().await;
    let body = json!({"customer_id": c, "lines": [{"product_id": p, "quantity": 1}]});
    for _ in 0..3 {
        let (s, err) = shop.send(shop.http.post(&url).json(&body)).await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{err}");
        assert_eq!(err["code"], "dependency_unavailable");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_idempotency_key_at_two_replicas_at_once_places_one_order() {
    if !on_postgres() {
        return;
    }
    let shop = spawn_shop().await;
    let second = second_replica(&shop, Default::default()).await;
    let c = shop.customer("idem-replicas@example.com").await;
    let p = shop.product("R3", "5.00").await;
    let body = json!({"customer_id": c, "lines": [{"product_id": p, "quantity": 2}]});
    let calls = (0..12).map(|i| {
        let base = if i % 2 == 0 {
            shop.order.url()
        } else {
            second.url()
        };
        let req = shop
            .http
            .post(format!("{base}/api/v1/orders"))
            .header("Idempotency-Key", "retried-at-two-replicas")
            .json(&body);
        async move {
            let resp = req.send().await.unwrap();
            (resp.status(), resp.json::<Value>().await.unwrap())
        }
    });
    let answers = futures::future::join_all(calls).await;
    for (status, order) in &answers {
        assert_eq!(*status, StatusCode::CREATED, "{order}");
        assert_eq!(order["id"], answers[0].1["id"], "one order for one key");
    }
    let (_, page) = shop.get(&format!("/api/v1/orders?customer_id={c}")).await;
    assert_eq!(page["orders"].as_array().unwrap().len(), 1, "{page}");
    second.stop().await;
}
