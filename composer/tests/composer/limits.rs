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
