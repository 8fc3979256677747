//! The cache as seen from outside: coalescing, stale-if-error, invalidation by events.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_for_a_cold_order_make_one_call_per_service() {
    let shop = spawn_shop().await;
    let composer = spawn_composer(&shop, config(&shop), false).await;
    let s = shop.seed().await;
    let token = customer_token(&s.customer_id);
    let requests = (0..20).map(|_| composer.summary(&s.order_id, &token));
    for (status, body) in futures::future::join_all(requests).await {
        assert_eq!(status, reqwest::StatusCode::OK, "{body}");
        assert_eq!(body["order"]["data"]["id"], s.order_id.as_str());
        assert_eq!(body["degraded"], false);
    }
    for svc in ["order", "customer", "product", "payment", "shipping"] {
        assert_eq!(composer.calls(svc).await, 1.0, "calls to {svc}");
    }
    let label = ["section=\"order\""];
    let hits = composer
        .metric("shoplens_composer_cache_hits_total", &label)
        .await;
    let misses = composer
        .metric("shoplens_composer_cache_misses_total", &label)
        .await;
    let coalesced = composer
        .metric("shoplens_composer_cache_coalesced_total", &label)
        .await;
    assert_eq!(misses, 1.0, "order misses");
    assert_eq!(hits + coalesced, 19.0, "{hits} hits, {coalesced} coalesced");
}

#[tokio::test]
async fn a_failing_service_is_served_stale_with_its_age() {
    let shop = spawn_shop().await;
    let mut cfg = fast(&shop);
    cfg.cache.payment_ttl_ms = 100;
    let composer = spawn_composer(&shop, cfg, false).await;
    let s = shop.seed().await;
    let token = customer_token(&s.customer_id);
    let order = shop.set_status(&s.order_id, "Paid").await;
    shop.pay(&order, "tok_ok").await;
    let body = composer.summary_ok(&s.order_id, &token).await;
    assert_eq!(body["payment"]["status"], "ok");
    let fetched_at = body["payment"]["as_of"].clone();

    shop.doubles.payment.set(Mode::Fail);
    tokio::time::sleep(Duration::from_millis(150)).await;
    let body = composer.summary_ok(&s.order_id, &token).await;
    assert_eq!(body["degraded"], true);
    let p = &body["payment"];
    assert_eq!(p["status"], "stale", "{body}");
    assert_eq!(p["as_of"], fetched_at);
    assert!(p["age_ms"].as_u64().unwrap() >= 150, "{p}");
    assert!(p["reason"].as_str().unwrap().contains("500"), "{p}");
    assert_eq!(p["data"]["status"], "Success");
    assert_eq!(body["order"]["status"], "ok");

    // A hanging service: still stale, still within the deadline.
    shop.doubles.payment.set(Mode::Hang);
    let start = Instant::now();
    let body = composer.summary_ok(&s.order_id, &token).await;
    assert!(
        start.elapsed() < Duration::from_millis(900),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(body["payment"]["status"], "stale", "{body}");

    shop.doubles.payment.set(Mode::Pass);
    tokio::time::sleep(Duration::from_millis(350)).await; // past the breaker's open time
    let body = composer.summary_ok(&s.order_id, &token).await;
    assert_eq!(body["payment"]["status"], "ok", "{body}");
    assert_eq!(body["degraded"], false);
    assert!(
        composer
            .metric(
                "shoplens_composer_cache_stale_served_total",
                &["section=\"payment\""]
            )
            .await
            >= 2.0
    );
}

async fn summary_until(
    composer: &Composer,
    order_id: &str,
    token: &str,
    done: impl Fn(&Value) -> bool,
) -> (Value, Duration) {
    let start = Instant::now();
    loop {
        let body = composer.summary_ok(order_id, token).await;
        if done(&body) || start.elapsed() > Duration::from_secs(3) {
            return (body, start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn events_evict_changed_orders_payments_and_shipments_before_their_ttl() {
    let shop = spawn_shop().await;
    let mut cfg = config(&shop);
    for ttl in [
        &mut cfg.cache.order_ttl_ms,
        &mut cfg.cache.payment_ttl_ms,
        &mut cfg.cache.shipping_ttl_ms,
    ] {
        *ttl = 60_000;
    }
    let composer = spawn_composer(&shop, cfg, true).await;
    let s = shop.seed().await;
    let token = customer_token(&s.customer_id);
    // Cached now: Placed, no payment, no shipment (each with a TTL of a minute).
    let body = composer.summary_ok(&s.order_id, &token).await;
    assert_eq!(body["payment"]["data"], Value::Null);
    let order = body["order"]["data"].clone();

    // PaymentCompleted, OrderStatusChanged, ShipmentCreated.
    shop.pay(&order, "tok_ok").await;
    shop.set_status(&s.order_id, "Paid").await;
    let shipment = shop.ship(&s.order_id, "Hamburg").await;
    let (body, took) = summary_until(&composer, &s.order_id, &token, |b| {
        b["payment"]["data"]["status"] == "Success"
            && b["order"]["data"]["status"] == "Paid"
            && b["shipping"]["data"]["location"] == "Hamburg"
    })
    .await;
    assert_eq!(
        body["payment"]["data"]["status"], "Success",
        "after {took:?}"
    );
    assert_eq!(body["order"]["data"]["status"], "Paid", "after {took:?}");
    assert_eq!(
        body["shipping"]["data"]["location"], "Hamburg",
        "after {took:?}"
    );
    assert_eq!(body["degraded"], false);

    // ShipmentLocationUpdated.
    shop.post(
        "shipping",
        &format!(
            "/api/v1/shipments/{}/locations",
            shipment["id"].as_str().unwrap()
        ),
        serde_json::json!({"location": "Munich"}),
    )
    .await;
    let (body, took) = summary_until(&composer, &s.order_id, &token, |b| {
        b["shipping"]["data"]["location"] == "Munich"
    })
    .await;
    assert_eq!(
        body["shipping"]["data"]["location"], "Munich",
        "after {took:?}"
    );
    assert_eq!(body["shipping"]["data"]["status"], "InTransit");
    assert!(
        composer
            .metric(
                "shoplens_composer_cache_invalidations_total",
                &["section=\"payment\""]
            )
            .await
            >= 1.0
    );
}

#[tokio::test]
async fn without_invalidation_the_cached_value_lives_out_its_ttl() {
    let shop = spawn_shop().await;
    let mut cfg = config(&shop);
    cfg.cache.payment_ttl_ms = 60_000;
    cfg.invalidation = false;
    let composer = spawn_composer(&shop, cfg, true).await;
    let s = shop.seed().await;
    let token = customer_token(&s.customer_id);
    let body = composer.summary_ok(&s.order_id, &token).await;
    assert_eq!(body["payment"]["data"], Value::Null);
    shop.pay(&body["order"]["data"], "tok_ok").await;
    // The event is on the bus...
    let events = shop.env.events("shop.payments", 1).await;
    assert_eq!(events.len(), 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // ... but nobody evicts: the composer still answers from its cache.
    let body = composer.summary_ok(&s.order_id, &token).await;
    assert_eq!(body["payment"]["data"], Value::Null, "{body}");
    assert_eq!(body["payment"]["status"], "ok");
    assert_eq!(composer.calls("payment").await, 1.0);
}

#[tokio::test]
async fn a_new_order_evicts_the_customers_cached_order_list() {
    let shop = spawn_shop().await;
    let mut cfg = config(&shop);
    cfg.cache.list_ttl_ms = 60_000;
    let composer = spawn_composer(&shop, cfg, true).await;
    let s = shop.seed().await;
    let token = customer_token(&s.customer_id);
    let path = format!("/api/v1/customers/{}/orders?limit=5", s.customer_id);
    let (_, body) = composer.get(&path, Some(&token)).await;
    assert_eq!(body["orders"].as_array().unwrap().len(), 1, "{body}");
    let (_, body) = composer.get(&path, Some(&token)).await;
    assert_eq!(body["orders"].as_array().unwrap().len(), 1);
    assert_eq!(
        composer.calls("order").await,
        1.0,
        "the second page came from the cache"
    );

    let newer = shop.order(&s.customer_id, &[&s.product_ids[0]], 1).await;
    let start = Instant::now();
    loop {
        let (_, body) = composer.get(&path, Some(&token)).await;
        let first = body["orders"][0]["order_id"].clone();
        if first == newer["id"] {
            assert_eq!(body["orders"].as_array().unwrap().len(), 2);
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "never evicted: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
