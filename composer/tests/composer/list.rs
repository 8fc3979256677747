//! The customer's orders: pagination, and one call per section per page (batching).

use reqwest::StatusCode;
use serde_json::Value;

use crate::support::*;

const SERVICES: [&str; 5] = ["order", "customer", "product", "payment", "shipping"];

async fn calls_by_service(composer: &Composer) -> Vec<f64> {
    let mut out = Vec::new();
    for s in SERVICES {
        out.push(composer.calls(s).await);
    }
    out
}

fn ids(page: &Value) -> Vec<String> {
    page["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["order_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn pages_newest_first_with_one_call_per_section_whatever_the_page_size() {
    let shop = spawn_shop().await;
    let mut cfg = config(&shop);
    cfg.cache.enabled = false; // every request goes to the services: count them
    let composer = spawn_composer(&shop, cfg, false).await;
    let customer = shop.customer("Grace Hopper").await;
    let mut products = Vec::new();
    for i in 0..4 {
        products.push(shop.product(&format!("Widget {i}"), "3.00").await);
    }
    let mut created = Vec::new();
    for i in 0..6 {
        let order = shop
            .order(&customer, &[&products[i % 4], &products[(i + 1) % 4]], 1)
            .await;
        if i % 2 == 0 {
            shop.pay(&order, "tok_ok").await;
        }
        if i % 3 == 0 {
            shop.ship(order["id"].as_str().unwrap(), &format!("Depot {i}"))
                .await;
        }
        created.push(order["id"].as_str().unwrap().to_owned());
    }
    created.reverse(); // newest first
    let token = customer_token(&customer);
    let base = format!("/api/v1/customers/{customer}/orders");

    let before = calls_by_service(&composer).await;
    let (status, small) = composer.get(&format!("{base}?limit=2"), Some(&token)).await;
    assert_eq!(status, StatusCode::OK, "{small}");
    let after_small = calls_by_service(&composer).await;
    let (status, page1) = composer.get(&format!("{base}?limit=4"), Some(&token)).await;
    assert_eq!(status, StatusCode::OK, "{page1}");
    let after_big = calls_by_service(&composer).await;
    for (i, svc) in SERVICES.iter().enumerate() {
        assert_eq!(after_small[i] - before[i], 1.0, "{svc} for a page of 2");
        assert_eq!(after_big[i] - after_small[i], 1.0, "{svc} for a page of 4");
    }

    assert_eq!(ids(&small), created[..2]);
    assert_eq!(ids(&page1), created[..4]);
    assert_eq!(page1["customer_id"], customer.as_str());
    assert_eq!(page1["degraded"], false);
    let cursor = page1["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let (status, page2) = composer
        .get(&format!("{base}?limit=4&cursor={cursor}"), Some(&token))
        .await;
    assert_eq!(status, StatusCode::OK, "{page2}");
    assert_eq!(ids(&page2), created[4..]);
    assert_eq!(page2["next_cursor"], Value::Null);

    // Every summary of the page is complete and right.
    for summary in page1["orders"].as_array().unwrap() {
        let id = summary["order_id"].as_str().unwrap();
        let i = 5 - created.iter().position(|c| c == id).unwrap();
        assert_eq!(summary["degraded"], false, "{summary}");
        assert_eq!(summary["order"]["data"]["status"], "Placed");
        assert_eq!(summary["customer"]["data"]["name"], "Grace Hopper");
        let names: Vec<&str> = summary["products"]["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                format!("Widget {}", i % 4),
                format!("Widget {}", (i + 1) % 4)
            ]
        );
        let paid = &summary["payment"]["data"];
        assert_eq!(paid.is_null(), i % 2 != 0, "{summary}");
        if !paid.is_null() {
            assert_eq!(paid["status"], "Success");
        }
        let shipped = &summary["shipping"]["data"];
        assert_eq!(shipped.is_null(), i % 3 != 0, "{summary}");
        if !shipped.is_null() {
            assert_eq!(shipped["location"], format!("Depot {i}"));
        }
    }
}

#[tokio::test]
async fn an_admin_may_list_anyone_and_an_empty_list_is_fine() {
    let shop = spawn_shop().await;
    let composer = spawn_composer(&shop, config(&shop), false).await;
    let s = shop.seed().await;
    let (status, body) = composer
        .get(
            &format!("/api/v1/customers/{}/orders", s.customer_id),
            Some(&admin_token()),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["orders"].as_array().unwrap().len(), 1);
    let nobody = shop.customer("Nobody").await;
    let (status, body) = composer
        .get(
            &format!("/api/v1/customers/{nobody}/orders"),
            Some(&customer_token(&nobody)),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["orders"], Value::Array(vec![]));
    assert_eq!(body["next_cursor"], Value::Null);
}
