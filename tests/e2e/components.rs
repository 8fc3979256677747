//! `shoplens run --only`: the system split over two processes, as docker-compose splits it
//! over containers. One runs the customer and product services, the other the order,
//! payment and shipping services and the composer, reaching the first over HTTP; the demo
//! traffic (beside the composer) goes through both.

use std::time::Duration;

use shoplens::Component;

use crate::process::{Shoplens, open_db, wait_orders_finished};

const SECRET: &str = "components-test-secret-0123456789abcdef";

#[tokio::test]
async fn run_only_starts_the_named_components_and_reaches_the_others_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let (data_a, data_b) = (dir.path().join("a"), dir.path().join("b"));
    // Nothing listens on the discard port: a URL a process must never use.
    let nowhere = "http://127.0.0.1:9";
    let alone = [
        ("SHOPLENS_INGEST__ENABLED", "false"),
        ("SHOPLENS_ANALYTICS__ENABLED", "false"),
        ("SHOPLENS_AUTH__SECRET", SECRET),
    ];

    let mut env_a = alone.to_vec();
    env_a.extend([
        ("SHOPLENS_COMPOSER__SERVICES__ORDER", nowhere),
        ("SHOPLENS_COMPOSER__SERVICES__PAYMENT", nowhere),
        ("SHOPLENS_COMPOSER__SERVICES__SHIPPING", nowhere),
    ]);
    // The `only` config key, as a comma-separated environment variable.
    env_a.push(("SHOPLENS_ONLY", "product,customer"));
    let mut a = Shoplens::spawn(&data_a, &["run"], &env_a);
    let info_a = a.wait_ready();
    assert_eq!(
        info_a.components,
        [Component::Customer, Component::Product],
        "start order, not the order given"
    );
    assert_eq!(info_a.composer, "", "no composer in this process");
    assert_eq!(
        info_a.order, nowhere,
        "the order service is reached elsewhere"
    );
    assert_eq!(info_a.ingest, None);
    assert_eq!(info_a.analytics, None);
    for url in [&info_a.customer, &info_a.product] {
        let resp = reqwest::get(format!("{url}/health")).await.unwrap();
        assert_eq!(resp.status(), 200, "{url}");
    }

    // The `--only` flag; the demo places orders through both processes.
    let mut env_b = alone.to_vec();
    env_b.extend([
        (
            "SHOPLENS_ORDER_UPSTREAMS__CUSTOMER_URL",
            info_a.customer.as_str(),
        ),
        (
            "SHOPLENS_ORDER_UPSTREAMS__PRODUCT_URL",
            info_a.product.as_str(),
        ),
        (
            "SHOPLENS_COMPOSER__SERVICES__CUSTOMER",
            info_a.customer.as_str(),
        ),
        (
            "SHOPLENS_COMPOSER__SERVICES__PRODUCT",
            info_a.product.as_str(),
        ),
        ("SHOPLENS_DEMO__SIMULATOR__ORDERS", "6"),
        ("SHOPLENS_DEMO__SIMULATOR__RATE_PER_SEC", "0"),
        ("SHOPLENS_DEMO__SIMULATOR__STEP_DELAY_MS", "0"),
        ("SHOPLENS_DEMO__SIMULATOR__CUSTOMERS", "4"),
        ("SHOPLENS_DEMO__SIMULATOR__PRODUCTS", "5"),
    ]);
    let mut b = Shoplens::spawn(
        &data_b,
        &["run", "--only", "composer,order,payment,shipping"],
        &env_b,
    );
    let info_b = b.wait_ready();
    assert_eq!(
        info_b.components,
        [
            Component::Order,
            Component::Payment,
            Component::Shipping,
            Component::Composer
        ]
    );
    assert_eq!(info_b.customer, info_a.customer);
    assert_eq!(info_b.product, info_a.product);
    for url in [
        &info_b.order,
        &info_b.payment,
        &info_b.shipping,
        &info_b.composer,
    ] {
        let resp = reqwest::get(format!("{url}/health")).await.unwrap();
        assert_eq!(resp.status(), 200, "{url}");
    }

    // Every order the demo placed in B was checked against A's customers and products.
    wait_orders_finished(&data_b, 6).await;
    assert!(
        !data_b.join("customer.db").exists(),
        "B has no customer database"
    );
    assert!(!data_a.join("order.db").exists(), "A has no order database");
    let customers = open_db(&data_a, "customer").await;
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM customers")
        .fetch_one(&customers)
        .await
        .unwrap();
    assert_eq!(count, 4, "the demo's customers live in A");
    customers.close().await;

    // B's composer merges an order from B with its customer and products from A.
    let orders = open_db(&data_b, "order").await;
    let (order_id, customer_id): (String, String) =
        sqlx::query_as("SELECT id, customer_id FROM orders LIMIT 1")
            .fetch_one(&orders)
            .await
            .unwrap();
    orders.close().await;
    let token = shoplens_kit::identity::issue(
        SECRET,
        &shoplens_kit::identity::Identity::new(
            customer_id.clone(),
            shoplens_kit::identity::Role::Customer,
        ),
        Duration::from_secs(60),
    );
    let summary: serde_json::Value = reqwest::Client::new()
        .get(format!(
            "{}/api/v1/orders/{order_id}/summary",
            info_b.composer
        ))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for section in ["order", "customer", "products", "payment", "shipping"] {
        assert_eq!(summary[section]["status"], "ok", "{section}: {summary}");
    }
    assert_eq!(summary["customer"]["data"]["id"], customer_id.as_str());

    assert!(b.terminate().success(), "graceful shutdown exits 0");
    assert!(a.terminate().success(), "graceful shutdown exits 0");
}
