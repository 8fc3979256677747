//! Shared test helpers: a read model filled with a synthetic shop stream, an engine over
//! it, and the analytics server on port 0.

#![allow(dead_code)]

use std::sync::Arc;

use shoplens_analytics::config::{AnalyticsConfig, PgConfig};
use shoplens_analytics::embedded::EmbeddedReadModel;
use shoplens_analytics::users::UserConfig;
use shoplens_analytics::{AnalyticsHandle, Engine, QueryConfig};
use shoplens_contract::Envelope;
use shoplens_contract::tables::to_batches;
use shoplens_ingest::embedded::EmbeddedStore;
use shoplens_ingest::sink::{IngestBatch, ReadModelStore, Sink};
use shoplens_kit::identity::{Identity, Role};
use shoplens_readmodel::config::EmbeddedConfig;
use shoplens_test_support::events::{StreamSpec, shop_events};
use tempfile::TempDir;

/// The password test servers' Postgres endpoint accepts (user `shoplens`).
pub const PG_USER: &str = "shoplens";
pub const PG_PASSWORD: &str = "test-pass-1";

/// The default synthetic stream: 200 orders over 60 days from 2025-11-24, crossing a month
/// and a year boundary.
pub fn events() -> Vec<Envelope> {
    shop_events(&StreamSpec::default())
}

/// Applies `events` to `sink` in batches of `chunk` (as the worker would).
pub async fn apply(sink: &Arc<dyn Sink>, events: &[Envelope], chunk: usize) {
    for part in events.chunks(chunk.max(1)) {
        sink.apply(&IngestBatch {
            tables: to_batches(part),
            ..IngestBatch::default()
        })
        .await
        .expect("apply a batch");
    }
}

/// An embedded read model in a fresh directory holding `events` (generation 1, live).
pub async fn embedded_store(events: &[Envelope]) -> TempDir {
    embedded_store_and_sink(events).await.0
}

/// [`embedded_store`], and the sink that can add more events to it.
pub async fn embedded_store_and_sink(events: &[Envelope]) -> (TempDir, Arc<dyn Sink>) {
    // Several applies, so aggregates are several delta files.
    embedded_store_applied(events, 97).await
}

/// [`embedded_store_and_sink`] with `events` applied `chunk` at a time.
pub async fn embedded_store_applied(events: &[Envelope], chunk: usize) -> (TempDir, Arc<dyn Sink>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = EmbeddedStore::open(EmbeddedConfig {
        dir: dir.path().join("readmodel"),
        fsync: false,
        ..EmbeddedConfig::default()
    })
    .expect("open the embedded store");
    let sink = store.open(1).await.expect("open generation 1");
    apply(&sink, events, chunk).await;
    store.set_live(1).await.expect("make generation 1 live");
    (dir, sink)
}

/// The engine's limits in tests: a smaller row limit, and query workers started from the
/// crate's own binary (this test program is not one).
pub fn query_config() -> QueryConfig {
    let mut config = QueryConfig {
        max_rows: 10_000,
        ..QueryConfig::default()
    };
    config.workers.program = env!("CARGO_BIN_EXE_shoplens-analytics").into();
    config.workers.min_idle = 1;
    // Tests run many servers at once on few cores: in SCHED_IDLE (the default) a worker
    // would wait on the neighbouring tests' work. `hostile.rs` checks the default.
    config.workers.idle_class = false;
    // Likewise every test's workers on the same last CPU would queue behind each other
    // (`hostile.rs` checks the default CPU plan).
    config.workers.share_cpus = true;
    // Tests send attack after attack as one user, each to meet its own limit; `hostile.rs`
    // checks the cool-down that would slow such a user down.
    config.workers.cool_down_ms = 0;
    config
}

/// An engine over an embedded read model holding `events`.
pub async fn embedded_engine(events: &[Envelope]) -> (TempDir, Engine) {
    let dir = embedded_store(events).await;
    let engine = embedded_engine_at(&dir, &query_config()).await;
    (dir, engine)
}

pub async fn embedded_engine_at(dir: &TempDir, config: &QueryConfig) -> Engine {
    let model = Arc::new(EmbeddedReadModel::new(dir.path().join("readmodel")));
    Engine::new(model, config).await.expect("engine")
}

/// A running analytics server (HTTP and Postgres on port 0).
pub struct TestApp {
    pub handle: AnalyticsHandle,
    pub url: String,
    /// The server behind a proxy that adds an admin's session cookie to every request: what
    /// a browser signed in to the dashboard sends (for headless Chromium, which cannot be
    /// handed a cookie on its command line).
    pub signed_in_url: String,
    pub pg_port: u16,
    pub client: reqwest::Client,
}

/// The users of test servers: an admin (`PG_USER`), an analyst and a viewer, all with
/// `PG_PASSWORD`.
pub fn test_users() -> Vec<UserConfig> {
    [
        (PG_USER, Role::Admin),
        (ANALYST, Role::Analyst),
        (VIEWER, Role::Viewer),
    ]
    .into_iter()
    .map(|(name, role)| UserConfig {
        name: name.into(),
        role,
        password_hash: shoplens_analytics::users::hash(PG_PASSWORD),
    })
    .collect()
}

pub const ANALYST: &str = "ann-analyst";
pub const VIEWER: &str = "vic-viewer";

pub fn app_config() -> AnalyticsConfig {
    AnalyticsConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        sql: PgConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..PgConfig::default()
        },
        users: test_users(),
        dashboard_refresh_ms: 1_000,
        ..AnalyticsConfig::default()
    }
}

/// A bearer token of `role` for the test servers (which check the development key). A
/// customer's subject is a customer id, everyone else's a name.
pub fn token(role: Role) -> String {
    let subject = if role == Role::Customer {
        "0190f5a4-0000-7000-8000-000000000001".to_owned()
    } else {
        format!("test-{role}")
    };
    shoplens_kit::identity::issue(
        shoplens_kit::identity::DEV_SECRET,
        &Identity::new(subject, role),
        std::time::Duration::from_secs(3600),
    )
}

/// A client whose requests carry a token of `role`.
pub fn client_as(role: Role) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {}", token(role)).parse().unwrap(),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap()
}

pub async fn spawn_app(engine: Engine) -> TestApp {
    spawn_app_with(engine, &app_config()).await
}

pub async fn spawn_app_with(engine: Engine, config: &AnalyticsConfig) -> TestApp {
    let handle = shoplens_analytics::start(config, engine)
        .await
        .expect("start the analytics server");
    TestApp {
        signed_in_url: signed_in_proxy(handle.url(), Role::Admin).await,
        url: handle.url(),
        pg_port: handle.pg_addr().map_or(0, |a| a.port()),
        handle,
        // Most tests are about what the server answers, not who may ask: as an admin.
        client: client_as(Role::Admin),
    }
}

impl TestApp {
    /// A tokio-postgres client (the extended protocol, as JDBC, Npgsql and pgx drivers
    /// speak it) of the Postgres endpoint, signed in as `user` with `PG_PASSWORD`; `extra`
    /// adds connection parameters (`application_name='...'`).
    pub async fn pg_client_as(&self, user: &str, extra: &str) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(
            &format!(
                "host=127.0.0.1 port={} user={user} password={PG_PASSWORD} dbname=shoplens \
                 connect_timeout=10 {extra}",
                self.pg_port
            ),
            tokio_postgres::NoTls,
        )
        .await
        .unwrap_or_else(|e| panic!("{user} connects to the Postgres endpoint: {e}"));
        tokio::spawn(connection);
        client
    }

    pub async fn get_json(&self, path: &str) -> (u16, serde_json::Value) {
        let resp = self
            .client
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .expect("GET");
        let status = resp.status().as_u16();
        (status, resp.json().await.expect("a JSON body"))
    }

    /// `POST /api/v1/sql` with a JSON body; the status and the raw response.
    pub async fn sql(&self, sql: &str, format: &str) -> reqwest::Response {
        self.client
            .post(format!("{}/api/v1/sql?format={format}", self.url))
            .json(&serde_json::json!({ "sql": sql }))
            .send()
            .await
            .expect("POST /api/v1/sql")
    }
}

/// The ClickHouse server of the tests (`SHOPLENS_TEST_CLICKHOUSE_URL`).
pub fn clickhouse_url() -> String {
    std::env::var("SHOPLENS_TEST_CLICKHOUSE_URL").unwrap_or_else(|_| {
        panic!(
            "SHOPLENS_TEST_CLICKHOUSE_URL is not set: run the tests through ./scripts/test.sh, \
             which starts ClickHouse"
        )
    })
}

/// A ClickHouse config whose database base name no other test (or run) uses.
pub fn clickhouse_config(test: &str) -> shoplens_readmodel::config::ClickHouseConfig {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    shoplens_readmodel::config::ClickHouseConfig {
        url: clickhouse_url(),
        database: format!(
            "t_an_{test}_{}_{nanos}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ),
        request_timeout_ms: 20_000,
        // The analytics server reads as the read-only user the test script creates; the
        // ingest store writes as `default`.
        reader_user: std::env::var("SHOPLENS_TEST_CLICKHOUSE_READER").unwrap_or_default(),
        reader_password: std::env::var("SHOPLENS_TEST_CLICKHOUSE_READER_PASSWORD")
            .unwrap_or_default(),
        ..Default::default()
    }
}

/// A ClickHouse read model holding `events` (generation 1, live), written by the ingest
/// store as the worker would; its config.
pub async fn clickhouse_store(
    test: &str,
    events: &[Envelope],
) -> shoplens_readmodel::config::ClickHouseConfig {
    let config = clickhouse_config(test);
    let store = shoplens_ingest::clickhouse::ClickHouseStore::connect(&config)
        .await
        .expect("connect to ClickHouse");
    let sink = store.open(1).await.expect("open generation 1");
    apply(&sink, events, 97).await;
    store.set_live(1).await.expect("make generation 1 live");
    config
}

/// An engine over a ClickHouse read model holding `events`.
pub async fn clickhouse_engine(
    test: &str,
    events: &[Envelope],
) -> (shoplens_readmodel::config::ClickHouseConfig, Engine) {
    let config = clickhouse_store(test, events).await;
    let model = shoplens_analytics::clickhouse::ClickHouseReadModel::connect(&config)
        .await
        .expect("read ClickHouse");
    let engine = Engine::new(Arc::new(model), &query_config())
        .await
        .expect("engine");
    (config, engine)
}

/// A proxy on port 0 in front of `upstream` that adds a session cookie of `role` to every
/// request; its base URL.
pub async fn signed_in_proxy(upstream: String, role: Role) -> String {
    use axum::body::{Body, to_bytes};
    use axum::extract::Request;
    use axum::response::Response;
    let cookie = format!("{}={}", shoplens_kit::access::SESSION_COOKIE, token(role));
    let http = reqwest::Client::new();
    let forward = move |req: Request| {
        let (http, upstream, cookie) = (http.clone(), upstream.clone(), cookie.clone());
        async move {
            let path = req
                .uri()
                .path_and_query()
                .map_or("/".to_owned(), |p| p.to_string());
            let method = req.method().clone();
            let body = to_bytes(req.into_body(), 1 << 20).await.unwrap_or_default();
            let resp = http
                .request(method, format!("{upstream}{path}"))
                .header("cookie", cookie)
                .body(body)
                .send()
                .await
                .expect("the upstream answers");
            let mut out = Response::builder().status(resp.status().as_u16());
            for (k, v) in resp.headers() {
                out = out.header(k.as_str(), v.as_bytes());
            }
            out.body(Body::from(resp.bytes().await.unwrap_or_default()))
                .unwrap()
        }
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, axum::Router::new().fallback(forward)).await;
    });
    format!("http://{addr}")
}
