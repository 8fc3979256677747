//! The simulator against the five real services, in-process, with a real event log.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde_json::Value;
use shop_simulator::{
    Catalogue, FestivalConfig, FinalStatus, OrderPlan, Planner, ShopUrls, SimConfig, SimReport,
};
use shoplens_kit::ServiceHandle;
use shoplens_test_support::services::TestEnv;
use tokio_util::sync::CancellationToken;

struct Shop {
    env: TestEnv,
    urls: ShopUrls,
    http: reqwest::Client,
    _services: Vec<ServiceHandle>,
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
        timeout_ms: 5_000,
    };
    let order = order_service::start(&env.service_config("order"), &upstreams, env.bus())
        .await
        .unwrap();
    let payment = payment_service::start(&env.service_config("payment"), env.bus())
        .await
        .unwrap();
    let shipping = shipping_service::start(&env.service_config("shipping"), env.bus())
        .await
        .unwrap();
    let auth = env.service_config("any").auth;
    let urls = ShopUrls {
        customer: customer.url(),
        product: product.url(),
        order: order.url(),
        payment: payment.url(),
        shipping: shipping.url(),
        token: shoplens_kit::identity::ServiceToken::new(&auth, "simulator").token(),
    };
    Shop {
        env,
        urls,
        http: shoplens_test_support::services::authorized_client(&auth),
        _services: vec![customer, product, order, payment, shipping],
    }
}

impl Shop {
    async fn get(&self, url: String) -> Value {
        let resp = self.http.get(&url).send().await.unwrap();
        assert!(resp.status().is_success(), "GET {url}: {}", resp.status());
        resp.json().await.unwrap()
    }

    /// The orders with these ids, in the same order.
    async fn orders(&self, ids: &[String]) -> Vec<Value> {
        let mut out = Vec::new();
        for chunk in ids.chunks(100) {
            let url = format!("{}/api/v1/orders?ids={}", self.urls.order, chunk.join(","));
            let batch = self.get(url).await;
            assert_eq!(batch["missing"], Value::Array(vec![]), "{batch}");
            let by_id: HashMap<&str, &Value> = batch["orders"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| (o["id"].as_str().unwrap(), o))
                .collect();
            out.extend(chunk.iter().map(|id| by_id[id.as_str()].clone()));
        }
        out
    }

    /// How many events of each type are on `topic`, once at least `at_least` arrived.
    async fn event_counts(&self, topic: &str, at_least: usize) -> HashMap<&'static str, usize> {
        let events = self.env.events(topic, at_least).await;
        let mut counts = HashMap::new();
        for e in events {
            *counts.entry(e.payload.event_type().as_str()).or_default() += 1;
        }
        counts
    }
}

fn small_config(seed: u64, orders: u64) -> SimConfig {
    SimConfig {
        seed,
        customers: 20,
        products: 15,
        orders: Some(orders),
        rate_per_sec: 0.0,
        concurrency: 8,
        ..SimConfig::default()
    }
}

/// The plans of orders `0..config.orders` for `config`'s catalogue size.
fn plans(config: &SimConfig) -> Vec<OrderPlan> {
    let planner = Planner::new(config, config.customers, config.products);
    (0..config.orders.unwrap())
        .map(|k| planner.plan(k))
        .collect()
}

/// A seed whose first `orders` orders take every branch of the lifecycle, so that one
/// short run covers them all.
fn seed_covering_every_branch(orders: u64) -> u64 {
    (0..10_000)
        .find(|&seed| {
            let plans = plans(&small_config(seed, orders));
            let any = |f: &dyn Fn(&OrderPlan) -> bool| plans.iter().any(f);
            any(&|p| p.cancel_at_once)
                && any(&|p| p.gets_paid() && p.first_payment_declined)
                && any(&|p| !p.cancel_at_once && !p.gets_paid())
                && any(&|p| p.gets_paid() && p.refund)
                && any(&|p| p.final_status() == FinalStatus::Delivered)
        })
        .expect("some seed takes every branch")
}

/// The counts a run of these plans reports when every call succeeds.
fn expected_report(plans: &[OrderPlan]) -> SimReport {
    let count = |f: &dyn Fn(&OrderPlan) -> bool| plans.iter().filter(|p| f(p)).count() as u64;
    let delivered = |p: &OrderPlan| p.final_status() == FinalStatus::Delivered;
    SimReport {
        orders_placed: plans.len() as u64,
        payments_failed: count(&|p| !p.cancel_at_once && p.first_payment_declined),
        orders_paid: count(&|p| p.gets_paid()),
        orders_cancelled: count(&|p| p.final_status() == FinalStatus::Cancelled),
        refunds: count(&|p| p.gets_paid() && p.refund),
        shipments: count(&delivered),
        location_updates: plans
            .iter()
            .filter(|p| delivered(p))
            .map(|p| p.route.len() as u64)
            .sum(),
        orders_delivered: count(&delivered),
        errors: 0,
        order_ids: Vec::new(),
    }
}

fn without_ids(report: &SimReport) -> SimReport {
    SimReport {
        order_ids: Vec::new(),
        ..report.clone()
    }
}

/// What an order looks like in the order service, by catalogue index: (customer, lines as
/// (product, quantity), status).
type Shape = (usize, Vec<(usize, u64)>, String);

fn shape(order: &Value, catalogue: &Catalogue) -> Shape {
    let index =
        |ids: &[String], id: &Value| ids.iter().position(|x| x == id.as_str().unwrap()).unwrap();
    let lines = order["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                index(&catalogue.products, &l["product_id"]),
                l["quantity"].as_u64().unwrap(),
            )
        })
        .collect();
    (
        index(&catalogue.customers, &order["customer_id"]),
        lines,
        order["status"].as_str().unwrap().to_owned(),
    )
}

fn planned_shape(plan: &OrderPlan) -> Shape {
    (
        plan.customer,
        plan.lines
            .iter()
            .map(|l| (l.product, u64::from(l.quantity)))
            .collect(),
        plan.final_status().as_str().to_owned(),
    )
}

#[tokio::test]
async fn seeding_creates_the_configured_catalogue_once() {
    let shop = spawn_shop().await;
    let config = SimConfig {
        seed: 7,
        customers: 12,
        products: 9,
        ..SimConfig::default()
    };
    let first = shop_simulator::seed_catalogue(&shop.urls, &config)
        .await
        .unwrap();
    assert_eq!(first.customers.len(), 12);
    assert_eq!(first.products.len(), 9);
    let distinct: HashSet<&String> = first.customers.iter().chain(&first.products).collect();
    assert_eq!(distinct.len(), 21);

    let again = shop_simulator::seed_catalogue(&shop.urls, &config)
        .await
        .unwrap();
    assert_eq!(
        again.customers, first.customers,
        "same seed, same customers"
    );
    assert_eq!(again.products, first.products, "same seed, same products");

    let customer = shop
        .get(format!(
            "{}/api/v1/customers/{}",
            shop.urls.customer, first.customers[3]
        ))
        .await;
    assert_eq!(customer["email"], "customer-3-7@example.com");
    assert_eq!(customer["name"], shop_simulator::customer_for(7, 3).name);
    let product = shop
        .get(format!(
            "{}/api/v1/products/{}",
            shop.urls.product, first.products[4]
        ))
        .await;
    let planned = shop_simulator::product_for(7, 4);
    assert_eq!(product["sku"], "SKU-7-4");
    assert_eq!(product["price"], planned.price.as_str());
    assert_eq!(product["currency"], "EUR");

    let customers = shop.event_counts("shop.customers", 12).await;
    let products = shop.event_counts("shop.products", 9).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(customers, HashMap::from([("CustomerRegistered", 12)]));
    assert_eq!(products, HashMap::from([("ProductCreated", 9)]));
    assert_eq!(
        shop.event_counts("shop.customers", 12).await,
        customers,
        "the second seeding published nothing"
    );
}

#[tokio::test]
async fn a_run_drives_every_order_to_its_planned_end_and_publishes_the_events() {
    let shop = spawn_shop().await;
    let config = small_config(seed_covering_every_branch(30), 30);
    let catalogue = shop_simulator::seed_catalogue(&shop.urls, &config)
        .await
        .unwrap();
    let report = shop_simulator::run(&shop.urls, &config, &catalogue, CancellationToken::new())
        .await
        .unwrap();
    let plans = plans(&config);

    // The counts are exactly what the plans say, and they balance.
    assert_eq!(without_ids(&report), expected_report(&plans), "{report:?}");
    assert_eq!(report.orders_placed, 30);
    assert_eq!(report.orders_delivered + report.orders_cancelled, 30);
    assert_eq!(report.orders_paid, report.orders_delivered + report.refunds);
    assert_eq!(report.shipments, report.orders_delivered);
    assert!(report.refunds > 0 && report.payments_failed > 0);
    let ids: HashSet<&String> = report.order_ids.iter().collect();
    assert_eq!(ids.len(), 30);

    // The order service agrees, order by order (ids are in order number order).
    let orders = shop.orders(&report.order_ids).await;
    for (plan, order) in plans.iter().zip(&orders) {
        assert_eq!(
            shape(order, &catalogue),
            planned_shape(plan),
            "order {}",
            plan.index
        );
    }
    // Payments add up to the orders' totals.
    let order = &orders[plans
        .iter()
        .position(|p| p.refund && p.gets_paid())
        .unwrap()];
    let payments = shop
        .get(format!(
            "{}/api/v1/payments?order_id={}",
            shop.urls.payment,
            order["id"].as_str().unwrap()
        ))
        .await;
    let refunded = &payments["payments"][0];
    assert_eq!(refunded["status"], "Refunded");
    assert_eq!(refunded["amount"], order["total"]);
    assert_eq!(refunded["currency"], order["currency"]);

    // And so does the event log.
    let paid_lines: usize = plans
        .iter()
        .filter(|p| p.gets_paid())
        .map(|p| p.lines.len())
        .sum();
    let status_changes = report.orders_placed
        + report.orders_paid
        + report.orders_cancelled
        + report.shipments
        + report.orders_delivered;
    let want_orders = HashMap::from([
        ("OrderCreated", 30),
        ("OrderStatusChanged", status_changes as usize),
        ("ProductPurchased", paid_lines),
    ]);
    let mut want_payments = HashMap::from([
        ("PaymentCompleted", report.orders_paid as usize),
        ("PaymentFailed", report.payments_failed as usize),
        ("PaymentRefunded", report.refunds as usize),
    ]);
    want_payments.retain(|_, n| *n > 0);
    let want_shipping = HashMap::from([
        ("ShipmentCreated", report.shipments as usize),
        ("ShipmentLocationUpdated", report.location_updates as usize),
        ("ShipmentDelivered", report.orders_delivered as usize),
    ]);
    let total = |m: &HashMap<&str, usize>| m.values().sum::<usize>();
    let got_orders = shop.event_counts("shop.orders", total(&want_orders)).await;
    let got_payments = shop
        .event_counts("shop.payments", total(&want_payments))
        .await;
    let got_shipping = shop
        .event_counts("shop.shipping", total(&want_shipping))
        .await;
    assert_eq!(got_orders, want_orders);
    assert_eq!(got_payments, want_payments);
    assert_eq!(got_shipping, want_shipping);
}

#[tokio::test]
async fn the_same_seed_makes_the_same_decisions_against_fresh_services() {
    let config = SimConfig {
        concurrency: 6,
        ..small_config(2024, 20)
    };
    let mut shapes = Vec::new();
    let mut reports = Vec::new();
    for _ in 0..2 {
        let shop = spawn_shop().await;
        let catalogue = shop_simulator::seed_catalogue(&shop.urls, &config)
            .await
            .unwrap();
        let report = shop_simulator::run(&shop.urls, &config, &catalogue, CancellationToken::new())
            .await
            .unwrap();
        let orders = shop.orders(&report.order_ids).await;
        shapes.push(
            orders
                .iter()
                .map(|o| shape(o, &catalogue))
                .collect::<Vec<_>>(),
        );
        reports.push(without_ids(&report));
    }
    assert_eq!(shapes[0].len(), 20);
    assert_eq!(shapes[0], shapes[1]);
    assert_eq!(reports[0], reports[1]);
    let other = plans(&small_config(2025, 20));
    let other: Vec<Shape> = other.iter().map(planned_shape).collect();
    assert_ne!(shapes[0], other, "another seed decides otherwise");
}

#[tokio::test]
async fn an_unreachable_service_abandons_orders_without_stopping_the_run() {
    let shop = spawn_shop().await;
    let config = small_config(seed_covering_every_branch(12), 12);
    let catalogue = shop_simulator::seed_catalogue(&shop.urls, &config)
        .await
        .unwrap();
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let urls = ShopUrls {
        shipping: closed,
        ..shop.urls.clone()
    };
    let report = shop_simulator::run(&urls, &config, &catalogue, CancellationToken::new())
        .await
        .unwrap();
    let plans = plans(&config);
    let would_ship = plans
        .iter()
        .filter(|p| p.final_status() == FinalStatus::Delivered)
        .count() as u64;
    assert!(would_ship > 0);
    assert_eq!(report.orders_placed, 12);
    assert_eq!(report.errors, would_ship, "{report:?}");
    assert_eq!(report.shipments, 0);
    assert_eq!(report.orders_delivered, 0);
    assert_eq!(report.orders_cancelled + report.errors, 12);
    let orders = shop.orders(&report.order_ids).await;
    for (plan, order) in plans.iter().zip(&orders) {
        let want = match plan.final_status() {
            FinalStatus::Delivered => "Paid",
            FinalStatus::Cancelled => "Cancelled",
        };
        assert_eq!(order["status"], want, "order {}", plan.index);
    }
}

#[tokio::test]
async fn shutdown_stops_new_orders_and_lets_running_ones_stop_between_steps() {
    let shop = spawn_shop().await;
    let config = SimConfig {
        orders: None,
        rate_per_sec: 50.0,
        step_delay_ms: 30,
        ..small_config(5, 0)
    };
    let catalogue = shop_simulator::seed_catalogue(&shop.urls, &config)
        .await
        .unwrap();
    let shutdown = CancellationToken::new();
    let stopper = shutdown.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(400)).await;
        stopper.cancel();
    });
    let started = std::time::Instant::now();
    let report = shop_simulator::run(&shop.urls, &config, &catalogue, shutdown)
        .await
        .unwrap();
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
    assert_eq!(report.errors, 0, "{report:?}");
    // About 50/s for 0.4 s, at most `concurrency` (8) at a time.
    assert!(
        (3..=30).contains(&report.orders_placed),
        "{}",
        report.orders_placed
    );
    assert!(
        report.orders_delivered < report.orders_placed,
        "a 30 ms pause per step leaves most orders unfinished: {report:?}"
    );
}

#[tokio::test]
async fn orders_start_at_the_configured_rate_and_faster_during_the_festival() {
    let shop = spawn_shop().await;
    let base = SimConfig {
        rate_per_sec: 4.0,
        festival: FestivalConfig {
            enabled: true,
            rate_multiplier: 10.0,
            hot_products: 3,
            hot_share: 0.9,
        },
        ..small_config(11, 12)
    };
    let catalogue = shop_simulator::seed_catalogue(&shop.urls, &base)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let report = shop_simulator::run(&shop.urls, &base, &catalogue, CancellationToken::new())
        .await
        .unwrap();
    // 12 orders at 40/s: the last starts 11/40 s = 275 ms in; without the festival it would
    // be 2.75 s. (The upper bound uses the orders' own timestamps, which a busy test machine
    // delays far less than whole lifecycles; it stays well below the 2.75 s of the base rate.)
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(275), "{elapsed:?}");
    assert_eq!(report.orders_placed, 12);
    assert_eq!(report.errors, 0);
    let orders = shop.orders(&report.order_ids).await;
    let created: Vec<chrono::DateTime<chrono::Utc>> = orders
        .iter()
        .map(|o| o["created_at"].as_str().unwrap().parse().unwrap())
        .collect();
    let span = (created[11] - created[0]).to_std().unwrap();
    assert!(span >= Duration::from_millis(200), "{span:?}");
    assert!(span < Duration::from_millis(2_200), "{span:?}");
    let hot: HashSet<usize> = Planner::new(&base, 20, 15)
        .hot_products()
        .iter()
        .copied()
        .collect();
    let lines: Vec<usize> = orders
        .iter()
        .flat_map(|o| shape(o, &catalogue).1)
        .map(|(product, _)| product)
        .collect();
    let hot_lines = lines.iter().filter(|p| hot.contains(p)).count();
    assert!(
        hot_lines * 2 > lines.len(),
        "{hot_lines} of {} lines are hot",
        lines.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_default_sized_run_at_full_speed_has_no_errors() {
    let shop = spawn_shop().await;
    let config = SimConfig {
        seed: 3,
        rate_per_sec: 0.0,
        ..SimConfig::default()
    };
    let catalogue = shop_simulator::seed_catalogue(&shop.urls, &config)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let report = shop_simulator::run(&shop.urls, &config, &catalogue, CancellationToken::new())
        .await
        .unwrap();
    let elapsed = started.elapsed();
    assert_eq!(report.errors, 0, "{report:?}");
    assert_eq!(report.orders_placed, 500);
    assert_eq!(without_ids(&report), expected_report(&plans(&config)));
    eprintln!("500 orders in {elapsed:?}");
}
