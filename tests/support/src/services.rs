//! Helpers for tests that start real services: a temporary directory with a real embedded
//! event log, a config pointing at a fresh database in it, a reader of published events, and
//! [`TestService`]: one real service plus a JSON client for it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::Value;

use shoplens_bus::{EmbeddedLog, EmbeddedLogConfig, EventSource};
use shoplens_contract::Envelope;

use shoplens_kit::ServiceHandle;
use shoplens_kit::config::ServiceConfig;

/// A scratch directory holding an embedded log and service databases; removed on drop.
pub struct TestEnv {
    pub dir: tempfile::TempDir,
    pub log: EmbeddedLog,
}

impl TestEnv {
    pub fn new() -> TestEnv {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = EmbeddedLog::open(EmbeddedLogConfig {
            dir: dir.path().join("log"),
            fsync: false,
        })
        .expect("open embedded log");
        TestEnv { dir, log }
    }

    pub fn bus(&self) -> Arc<dyn shoplens_bus::EventBus> {
        Arc::new(self.log.clone())
    }

    /// A config on port 0 with its own database: the file `NAME.db`, or (when the tests run
    /// on PostgreSQL, see [`services_database`]) a fresh database of the test server.
    pub fn service_config(&self, name: &str) -> ServiceConfig {
        ServiceConfig {
            database_url: self.database_url(name),
            relay: shoplens_kit::config::RelayConfig {
                poll_interval_ms: 20,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// The URL of this environment's database `name`: the same one every time it is asked.
    pub fn database_url(&self, name: &str) -> String {
        match services_database() {
            ServicesDb::Sqlite => {
                format!(
                    "sqlite://{}",
                    self.dir.path().join(format!("{name}.db")).display()
                )
            }
            ServicesDb::Postgres(server) => postgres_database(&server, self.dir.path(), name),
        }
    }

    /// Every event on `topic` so far, decoded (waits until at least `at_least` arrived, up to
    /// 10 s, then returns what there is).
    pub async fn events(&self, topic: &str, at_least: usize) -> Vec<Envelope> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let group = format!("test-{}", uuid::Uuid::now_v7());
            let mut consumer = self.log.consumer(&group, &[topic]).expect("consumer");
            let mut out = Vec::new();
            loop {
                let batch = consumer.poll(10_000, Duration::ZERO).await.expect("poll");
                if batch.is_empty() {
                    break;
                }
                out.extend(
                    batch
                        .iter()
                        .map(|r| Envelope::decode(&r.payload).expect("valid event")),
                );
            }
            if out.len() >= at_least || tokio::time::Instant::now() > deadline {
                return out;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Default for TestEnv {
    fn default() -> Self {
        TestEnv::new()
    }
}

/// The database the services' tests run on.
pub enum ServicesDb {
    /// A file per service in the test's scratch directory (the default).
    Sqlite,
    /// A database per service on the PostgreSQL server at this URL (its own database is the
    /// maintenance one; the tests create theirs beside it).
    Postgres(String),
}

/// `SHOPLENS_TEST_SERVICES_DB=postgres` runs the services of every test on the PostgreSQL
/// server at `SHOPLENS_TEST_POSTGRES_URL` (the test script starts one and runs the services'
/// and end-to-end suites once more so); unset, on SQLite.
pub fn services_database() -> ServicesDb {
    match std::env::var("SHOPLENS_TEST_SERVICES_DB").as_deref() {
        Ok("postgres") => ServicesDb::Postgres(std::env::var("SHOPLENS_TEST_POSTGRES_URL").expect(
            "SHOPLENS_TEST_SERVICES_DB=postgres needs SHOPLENS_TEST_POSTGRES_URL (scripts/servers.sh starts a server)",
        )),
        Ok("sqlite") | Ok("") | Err(_) => ServicesDb::Sqlite,
        Ok(other) => panic!("SHOPLENS_TEST_SERVICES_DB must be sqlite or postgres, not {other}"),
    }
}

/// The URL of database `name` of the test whose scratch directory is `scope`, on `server`:
/// named after both, so every process of one test finds the same database, and two tests
/// never share one. The services create it on first use.
pub fn postgres_database(server: &str, scope: &std::path::Path, name: &str) -> String {
    // Of the directory: stable, short, a valid identifier.
    let hash = shoplens_kit::db::stable_hash(scope.as_os_str().as_encoded_bytes());
    let mut url = reqwest::Url::parse(server).expect("SHOPLENS_TEST_POSTGRES_URL is a URL");
    url.set_path(&format!("t{hash:016x}_{name}"));
    url.to_string()
}

/// A client whose requests carry a service token signed with `auth`'s key (what another
/// ShopLens server sends).
pub fn authorized_client(auth: &shoplens_kit::identity::AuthConfig) -> reqwest::Client {
    let token = shoplens_kit::identity::ServiceToken::new(auth, "test");
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        token
            .header()
            .parse()
            .expect("a token is a valid header value"),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("a reqwest client with a default header always builds")
}

/// One real service started on port 0 in its own [`TestEnv`], with a JSON client for it
/// (its requests carry a service token).
pub struct TestService {
    pub env: TestEnv,
    pub url: String,
    pub http: reqwest::Client,
    pub handle: ServiceHandle,
}

impl TestService {
    /// Starts a service named `name` (its database is `NAME.db`) with `start`, e.g.
    /// `|config, bus| async move { payment_service::start(&config, bus).await }`.
    pub async fn start<F, Fut>(name: &str, start: F) -> TestService
    where
        F: FnOnce(ServiceConfig, Arc<dyn shoplens_bus::EventBus>) -> Fut,
        Fut: Future<Output = Result<ServiceHandle, shoplens_kit::Error>>,
    {
        let env = TestEnv::new();
        let config = env.service_config(name);
        let http = authorized_client(&config.auth);
        let handle = start(config, env.bus()).await.expect("start the service");
        TestService {
            url: handle.url(),
            env,
            http,
            handle,
        }
    }

    /// Sends `req`; the status and the JSON body (`Null` when the body is not JSON).
    pub async fn send(&self, req: RequestBuilder) -> (StatusCode, Value) {
        let resp = req.send().await.expect("send the request");
        (resp.status(), resp.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(self.http.get(format!("{}{path}", self.url)))
            .await
    }

    /// Sends `body` as-is with a JSON content type (so tests can send malformed JSON), and
    /// an `Idempotency-Key` when `key` is given.
    pub async fn send_json(
        &self,
        method: Method,
        path: &str,
        body: &str,
        key: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.url))
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(key) = key {
            req = req.header(shoplens_kit::idempotency::HEADER, key);
        }
        self.send(req).await
    }

    pub async fn post(&self, path: &str, body: &str, key: Option<&str>) -> (StatusCode, Value) {
        self.send_json(Method::POST, path, body, key).await
    }

    /// How many rows `table` of the service's database holds.
    pub async fn count_rows(&self, table: &str) -> i64 {
        sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(&self.handle.db().reader)
            .await
            .expect("count rows")
    }
}

/// Loads `url` in a real headless Chromium with `extra` flags (`--dump-dom`,
/// `--screenshot=...`), lets the page run for 5 s of virtual time, and returns what Chromium
/// printed. The local time zone is UTC, so clock times on a page are predictable. Panics
/// (the test fails, never skips) when no Chromium is installed, when it fails, or when it
/// takes longer than `limit`.
pub async fn headless_chromium(url: &str, extra: &[String], limit: Duration) -> String {
    let profile = tempfile::tempdir().expect("a Chromium profile dir");
    let mut cmd = tokio::process::Command::new(chromium());
    cmd.env("TZ", "UTC")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            // Without these Chromium keeps trying the network, which this machine refuses.
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(url)
        .kill_on_drop(true);
    let out = tokio::time::timeout(limit, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("Chromium did not finish within {limit:?}"))
        .expect("Chromium ran");
    assert!(
        out.status.success(),
        "Chromium failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The Chromium binary on `PATH` (`scripts/test.sh` installs Debian's `chromium`).
fn chromium() -> String {
    for candidate in ["chromium", "chromium-browser", "google-chrome"] {
        let found = std::process::Command::new("which")
            .arg(candidate)
            .output()
            .is_ok_and(|o| o.status.success());
        if found {
            return candidate.to_owned();
        }
    }
    panic!(
        "Chromium is not installed: the page tests need a headless browser \
         (`apt-get update && apt-get install -y chromium`, as scripts/test.sh does)"
    );
}
