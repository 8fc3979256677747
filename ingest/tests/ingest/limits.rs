//! The ingest API's HTTP limits: an oversized request body is refused with 413 and a JSON
//! error, and a refused `POST /api/v1/rebuild` starts no rebuild.

use reqwest::StatusCode;
use shoplens_ingest::startup::{IngestConfig, embedded_sources, start};

use crate::support::*;

#[tokio::test]
async fn an_oversized_body_gets_413_and_a_json_error() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(&dir.path().join("log"));
    let store = embedded_store(&dir.path().join("readmodel"));
    let mut config = IngestConfig {
        listen: ([127, 0, 0, 1], 0).into(),
        ..Default::default()
    };
    config.http.body_limit_bytes = 1024;
    let topics = vec!["shop.orders".to_owned()];
    let handle = start(&config, store, embedded_sources(log, topics))
        .await
        .unwrap();
    let client = crate::support::client_as(shoplens_kit::identity::Role::Admin);
    for (method, path) in [
        (reqwest::Method::POST, "/api/v1/rebuild"),
        (reqwest::Method::GET, "/api/v1/status"),
    ] {
        let resp = client
            .request(method, format!("{}{path}", handle.url()))
            .body(vec![b'x'; 4096])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE, "{path}");
        let json: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(json["code"], "payload_too_large", "{path}: {json}");
    }
    let latest = client
        .get(format!("{}/api/v1/rebuild", handle.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        latest.status(),
        StatusCode::NOT_FOUND,
        "the refused POST started a rebuild: {}",
        latest.text().await.unwrap_or_default()
    );
    handle.stop().await;
}
