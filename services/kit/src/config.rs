//! Configuration shared by every service, and the layered loader.
//!
//! Layers, later wins: built-in defaults, an optional TOML file, then environment variables
//! `SHOPLENS_SECTION__KEY` (double underscore between levels). Unknown keys are errors.

use std::net::SocketAddr;
use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// Loads `T` from its defaults, an optional TOML file and `SHOPLENS_` environment variables.
pub fn load<T: Serialize + DeserializeOwned + Default>(
    file: Option<&Path>,
) -> Result<T, crate::Error> {
    let mut figment = Figment::from(Serialized::defaults(T::default()));
    if let Some(file) = file {
        if !file.exists() {
            return Err(crate::Error::ConfigFileMissing(file.to_owned()));
        }
        figment = figment.merge(Toml::file(file));
    }
    // SHOPLENS_CONFIG names the file itself (a CLI flag), not a setting; SHOPLENS_TEST_*
    // tell the test suite where its servers are.
    figment = figment.merge(
        Env::prefixed("SHOPLENS_")
            .ignore(&["config"])
            .filter(|key| !key.as_str().to_ascii_lowercase().starts_with("test_"))
            .split("__"),
    );
    Ok(figment.extract()?)
}

/// Limits every HTTP server applies.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Largest accepted request body, in bytes.
    pub body_limit_bytes: usize,
    /// A request taking longer than this gets a 503.
    pub request_timeout_ms: u64,
    /// Requests handled at once; more wait in line.
    pub concurrency_limit: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            body_limit_bytes: 64 * 1024,
            request_timeout_ms: 10_000,
            concurrency_limit: 512,
        }
    }
}

/// How the outbox relay publishes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RelayConfig {
    /// Run the relay (turn off to inspect unpublished outbox rows).
    pub enabled: bool,
    /// Outbox rows published per bus call.
    pub batch_size: u32,
    /// How often to look for rows when not woken by a write. A write wakes its own replica's
    /// relay at once; on PostgreSQL, a write on a replica that does not publish waits for
    /// the publishing replica's next look (half of this on average).
    pub poll_interval_ms: u64,
    /// Longest wait between retries while the bus is down.
    pub max_backoff_ms: u64,
    /// On PostgreSQL, where several replicas share the outbox and one publishes: how often a
    /// standing-by replica tries to take over (the longest an outbox waits after its
    /// publisher died, plus the server noticing the dead session).
    pub takeover_poll_ms: u64,
    /// Published rows older than this are deleted.
    pub retention_hours: u64,
    /// Fault injection for tests: abort the process right after the bus acknowledged this
    /// many batches, before they are marked published.
    pub crash_after_batches: Option<u64>,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            enabled: true,
            batch_size: 500,
            poll_interval_ms: 50,
            max_backoff_ms: 5_000,
            takeover_poll_ms: 1_000,
            retention_hours: 24 * 7,
            crash_after_batches: None,
        }
    }
}

/// What every domain service is configured with.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceConfig {
    /// Address to listen on (port 0 picks a free port).
    pub listen: SocketAddr,
    /// `sqlite://path/to/file.db` (created if missing), `sqlite::memory:`, or
    /// `postgres://user:password@host:port/database` (created if missing and allowed), which
    /// several replicas of the service may share.
    pub database_url: String,
    /// Most connections one replica opens to PostgreSQL.
    pub database_max_connections: u32,
    /// Topic this service's events are published to; empty means the contract's default.
    pub topic: String,
    pub http: HttpConfig,
    pub relay: RelayConfig,
    /// Who may call the service (tokens of role `service` or `admin`), and the key its own
    /// calls to other services are signed with: the root `auth` section, filled in by the
    /// launcher (not configurable per service).
    #[serde(skip)]
    pub auth: crate::identity::AuthConfig,
}

/// The configuration is logged: a PostgreSQL URL's password shows as `***`.
impl std::fmt::Debug for ServiceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceConfig")
            .field("listen", &self.listen)
            .field("database_url", &crate::db::redact(&self.database_url))
            .field("database_max_connections", &self.database_max_connections)
            .field("topic", &self.topic)
            .field("http", &self.http)
            .field("relay", &self.relay)
            .field("auth", &self.auth)
            .finish()
    }
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            listen: "127.0.0.1:0".parse().expect("valid address"),
            database_url: "sqlite::memory:".into(),
            database_max_connections: 10,
            topic: String::new(),
            http: HttpConfig::default(),
            relay: RelayConfig::default(),
            auth: crate::identity::AuthConfig::default(),
        }
    }
}
