//! A service run as several replicas: calls spread over them, a dead replica ejected (its
//! circuit open) while the answers stay whole, brought back when it answers again, and the
//! service's circuit open only when every replica's is.

use std::time::Duration;

use crate::support::*;

/// Another replica of a service: a double in front of the same real service.
async fn replica(shop: &Shop, service: &str) -> Double {
    Double::start(shop.url(service)).await
}

/// A URL nobody listens on.
async fn closed_port() -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    format!("http://{}", l.local_addr().unwrap())
}

fn replica_state(service: &str, url: &str) -> [String; 2] {
    [
        format!("service=\"{service}\""),
        format!("replica=\"{url}\""),
    ]
}

impl Composer {
    /// The `composer_replica_circuit_state` of one replica: 0 closed, 1 open, 2 half-open.
    async fn replica_state(&self, service: &str, url: &str) -> f64 {
        let labels = replica_state(service, url);
        let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
        self.metric("shoplens_composer_replica_circuit_state", &labels)
            .await
    }
}

#[tokio::test]
async fn calls_are_spread_over_the_healthy_replicas() {
    let shop = spawn_shop().await;
    let second = replica(&shop, "customer").await;
    let mut cfg = config(&shop);
    cfg.cache.enabled = false;
    cfg.services.customer = vec![shop.doubles.customer.url.clone(), second.url.clone()].into();
    let composer = spawn_composer(&shop, cfg, false).await;
    let s = shop.seed().await;
    let token = customer_token(&s.customer_id);
    for _ in 0..10 {
        let body = composer.summary_ok(&s.order_id, &token).await;
        assert_eq!(body["customer"]["status"], "ok", "{body}");
        assert_eq!(body["degraded"], false, "{body}");
    }
    // One customer read per summary, the two replicas in turn.
    assert_eq!((shop.doubles.customer.hits(), second.hits()), (5, 5));
    for url in [&shop.doubles.customer.url, &second.url] {
        assert_eq!(composer.replica_state("customer", url).await, 0.0);
    }
}

#[tokio::test]
async fn a_dead_replica_is_ejected_and_the_answers_stay_whole_until_every_replica_fails() {
    let shop = spawn_shop().await;
    let dead = closed_port().await;
    let mut cfg = config(&shop);
    cfg.cache.enabled = false;
    cfg.breaker.failure_threshold = 2;
    cfg.breaker.open_ms = 60_000;
    let live = &shop.doubles.payment;
    cfg.services.payment = vec![live.url.clone(), dead.clone()].into();
    let composer = spawn_composer(&shop, cfg, false).await;
    let s = shop.seed().await;
    let token = customer_token(&s.customer_id);
    for _ in 0..8 {
        let body = composer.summary_ok(&s.order_id, &token).await;
        assert_eq!(body["payment"]["status"], "ok", "{body}");
        assert_eq!(body["degraded"], false, "{body}");
    }
    // Every other read went to the dead replica until its second refusal ejected it; each
    // refused read was retried on the live one at once.
    assert_eq!(live.hits(), 8, "every read answered by the live replica");
    let payment = ["service=\"payment\""];
    let errors = composer
        .metric(
            "shoplens_composer_downstream_calls_total",
            &["service=\"payment\"", "outcome=\"error\""],
        )
        .await;
    assert_eq!(
        errors, 2.0,
        "the dead replica was called twice, then ejected"
    );
    assert_eq!(
        composer
            .metric("shoplens_composer_retries_total", &payment)
            .await,
        2.0
    );
    assert_eq!(composer.replica_state("payment", &dead).await, 1.0);
    assert_eq!(composer.replica_state("payment", &live.url).await, 0.0);
    assert_eq!(
        composer
            .metric("shoplens_composer_circuit_state", &payment)
            .await,
        0.0,
        "the service is up while one replica is"
    );

    // The last replica fails too: then the service's circuit opens, as one URL's did, and
    // the section is unavailable without a call.
    live.set(Mode::Fail);
    for _ in 0..2 {
        let body = composer.summary_ok(&s.order_id, &token).await;
        assert_eq!(body["payment"]["status"], "unavailable", "{body}");
    }
    assert_eq!(composer.replica_state("payment", &live.url).await, 1.0);
    assert_eq!(
        composer
            .metric("shoplens_composer_circuit_state", &payment)
            .await,
        1.0
    );
    let hits = live.hits();
    let body = composer.summary_ok(&s.order_id, &token).await;
    assert_eq!(body["payment"]["status"], "unavailable", "{body}");
    let reason = body["payment"]["reason"].as_str().unwrap();
    assert!(reason.contains("circuit"), "{body}");
    assert_eq!(live.hits(), hits, "every circuit open: no call");
    assert_eq!(
        body["shipping"]["status"], "ok",
        "other services unaffected"
    );
}

#[tokio::test]
async fn a_stopped_replica_gets_calls_again_when_it_comes_back() {
    let shop = spawn_shop().await;
    let second = replica(&shop, "shipping").await;
    let (second_url, at) = (second.url.clone(), second.addr);
    let mut cfg = config(&shop);
    cfg.cache.enabled = false;
    cfg.breaker.failure_threshold = 1;
    cfg.breaker.open_ms = 300;
    cfg.services.shipping = vec![shop.doubles.shipping.url.clone(), second_url.clone()].into();
    let composer = spawn_composer(&shop, cfg, false).await;
    let s = shop.seed().await;
    shop.ship(&s.order_id, "Bremen").await;
    let token = customer_token(&s.customer_id);
    for _ in 0..4 {
        composer.summary_ok(&s.order_id, &token).await;
    }
    assert_eq!(second.hits(), 2);

    drop(second); // the replica stops
    tokio::time::sleep(Duration::from_millis(50)).await;
    for _ in 0..4 {
        let body = composer.summary_ok(&s.order_id, &token).await;
        assert_eq!(body["shipping"]["data"]["location"], "Bremen", "{body}");
        assert_eq!(body["degraded"], false, "{body}");
    }
    assert_eq!(composer.replica_state("shipping", &second_url).await, 1.0);

    // Back on its port: past the open interval its turn is a probe, which it answers.
    let back = Double::start_at(shop.url("shipping"), at).await;
    tokio::time::sleep(Duration::from_millis(350)).await;
    for _ in 0..6 {
        let body = composer.summary_ok(&s.order_id, &token).await;
        assert_eq!(body["shipping"]["data"]["location"], "Bremen", "{body}");
    }
    assert!(back.hits() >= 2, "back in the turn: {} calls", back.hits());
    assert_eq!(composer.replica_state("shipping", &second_url).await, 0.0);
}
