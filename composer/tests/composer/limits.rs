//! The composer's own HTTP limits: an oversized request body is refused with 413 and the
//! JSON error every endpoint promises, before any downstream call (none of its endpoints
//! takes a body, so the limit must not depend on a handler reading one).

use reqwest::StatusCode;
use shoplens_composer::ComposerConfig;

use crate::support::customer_token;

#[tokio::test]
async fn an_oversized_body_gets_413_and_a_json_error() {
    let mut config = ComposerConfig::default();
    config.auth.secret = crate::support::SECRET.into();
    config.http.body_limit_bytes = 1024;
    // Nothing listens there: a call downstream would fail, not answer.
    config.services.order = "http://127.0.0.1:9".into();
    let handle = shoplens_composer::start(&config, None).await.unwrap();
    let client = reqwest::Client::new();
    for (path, token) in [
        ("/api/v1/orders/o1/summary", Some(customer_token("c1"))),
        ("/health", None),
    ] {
        let mut req = client
            .get(format!("{}{path}", handle.url()))
            .body(vec![b'x'; 4096]);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE, "{path}");
        let json: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(json["code"], "payload_too_large", "{path}: {json}");
        assert!(json["error"].as_str().unwrap().contains("1024"), "{json}");
    }
    // Within the limit the same request is served.
    let resp = client
        .get(format!("{}/health", handle.url()))
        .body(vec![b'x'; 512])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    handle.stop().await;
}

/// A request that outlives `http.request_timeout_ms` is cut off with a 503 and the JSON
/// error, whatever the composer's own deadline says; with `http.concurrency_limit = 1` a
/// second request waits in line for the first instead of running beside it.
#[tokio::test]
async fn the_request_timeout_and_the_concurrency_limit_apply() {
    // An "order service" that accepts connections and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut config = ComposerConfig::default();
    config.auth.secret = crate::support::SECRET.into();
    config.services.order = format!("http://{}", silent.local_addr().unwrap()).into();
    config.deadline_ms = 30_000;
    config.call_timeout_ms = 30_000;
    config.http.request_timeout_ms = 300;
    config.http.concurrency_limit = 1;
    let handle = shoplens_composer::start(&config, None).await.unwrap();
    let client = reqwest::Client::new();
    let url = handle.url();
    let order = uuid::Uuid::now_v7();
    let summary = {
        let client = client.clone();
        let url = format!("{url}/api/v1/orders/{order}/summary");
        tokio::spawn(async move {
            let resp = client
                .get(url)
                .bearer_auth(crate::support::admin_token())
                .send()
                .await
                .unwrap();
            let done = std::time::Instant::now();
            (
                resp.status(),
                resp.json::<serde_json::Value>().await.unwrap(),
                done,
            )
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let health = client.get(format!("{url}/health")).send().await.unwrap();
    let health_done = std::time::Instant::now();
    assert_eq!(health.status(), StatusCode::OK);
    let (status, body, summary_done) = summary.await.unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["code"], "timeout", "{body}");
    assert!(
        health_done >= summary_done,
        "the second request ran beside the first despite a limit of one"
    );
    drop(silent);
    handle.stop().await;
}
