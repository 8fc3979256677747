//! The "My Orders" page in a real headless Chromium.

use std::time::Duration;

use crate::support::*;

/// The page in headless Chromium (see [`shoplens_test_support::services::headless_chromium`]).
async fn headless(url: &str, extra: &[String]) -> String {
    shoplens_test_support::services::headless_chromium(url, extra, Duration::from_secs(90)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_my_orders_page_shows_live_orders_in_a_real_browser() {
    let shop = spawn_shop().await;
    let mut cfg = config(&shop);
    cfg.cache.shipping_ttl_ms = 100;
    let composer = spawn_composer(&shop, cfg, false).await;
    let s = shop.seed().await;
    let order = shop.set_status(&s.order_id, "Paid").await;
    shop.pay(&order, "tok_ok").await;
    shop.ship(&s.order_id, "Rotterdam port").await;
    let second = shop.order(&s.customer_id, &[&s.product_ids[1]], 3).await;
    let token = customer_token(&s.customer_id);
    let url = format!("{}/my-orders?token={token}", composer.url);

    let dom = headless(&url, &["--dump-dom".to_owned()]).await;
    assert!(dom.contains("My Orders · Ada Lovelace"), "{dom}");
    assert!(dom.contains(&s.order_id), "{dom}");
    assert!(dom.contains(second["id"].as_str().unwrap()), "{dom}");
    assert!(dom.contains("Aurora Lamp"), "{dom}");
    assert!(dom.contains("Basalt Mug"), "{dom}");
    assert!(dom.contains(">Paid<"), "order status: {dom}");
    assert!(dom.contains(">Placed<"), "second order's status: {dom}");
    assert!(dom.contains("Success · card"), "payment: {dom}");
    assert!(
        dom.contains("At Rotterdam port"),
        "shipping location: {dom}"
    );
    assert!(dom.contains("not shipped yet"), "{dom}");
    assert!(
        dom.contains(r#"<div id="error"></div>"#),
        "no error shown: {dom}"
    );

    // A screenshot, for people: kept beside the test output.
    let shot = std::env::temp_dir().join("shoplens-my-orders.png");
    headless(
        &url,
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1200,900".to_owned(),
        ],
    )
    .await;
    assert!(std::fs::metadata(&shot).unwrap().len() > 1000);

    // The shipping service fails: the page still shows everything, shipping marked stale.
    shop.doubles.shipping.set(Mode::Fail);
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    let dom = headless(&url, &["--dump-dom".to_owned()]).await;
    assert!(dom.contains("some information is delayed"), "{dom}");
    assert!(dom.contains(r#"<div class="sec-stale">stale"#), "{dom}");
    assert!(
        dom.contains("At Rotterdam port"),
        "last known location: {dom}"
    );
    assert!(dom.contains("Success · card"), "{dom}");

    // Without a token the page says so.
    let dom = headless(
        &format!("{}/my-orders", composer.url),
        &["--dump-dom".to_owned()],
    )
    .await;
    assert!(dom.contains(r#"<div id="error">No valid token"#), "{dom}");
}

#[tokio::test]
async fn the_page_is_self_contained() {
    let shop = spawn_shop().await;
    let composer = spawn_composer(&shop, config(&shop), false).await;
    let resp = reqwest::get(format!("{}/", composer.url)).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = resp.text().await.unwrap();
    assert!(html.contains("/api/v1/customers/"));
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no external resources"
    );
}
