//! The analytics server's settings (section `analytics` of the system config).

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use shoplens_kit::config::HttpConfig;

use crate::engine::QueryConfig;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnalyticsConfig {
    /// Run the analytics server in the `shoplens` process (the launcher's switch).
    pub enabled: bool,
    /// The HTTP server: dashboard page and API, `POST /api/v1/sql`, report exports
    /// (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Limits of the HTTP server. Streamed exports are bounded by `query.export_timeout_ms`,
    /// not by `request_timeout_ms` (which covers the time to the first byte).
    pub http: HttpConfig,
    /// The Postgres wire protocol endpoint for BI tools.
    pub sql: PgConfig,
    /// Limits of every query.
    pub query: QueryConfig,
    /// How often the dashboard page refreshes itself (ms).
    pub dashboard_refresh_ms: u64,
}

impl Default for AnalyticsConfig {
    fn default() -> Self {
        AnalyticsConfig {
            enabled: true,
            listen: ([127, 0, 0, 1], 8086).into(),
            http: HttpConfig {
                request_timeout_ms: 15_000,
                ..HttpConfig::default()
            },
            sql: PgConfig::default(),
            query: QueryConfig::default(),
            dashboard_refresh_ms: 5_000,
        }
    }
}

/// The Postgres wire protocol endpoint (`psql`, Grafana, Metabase, Superset connect here).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PgConfig {
    pub enabled: bool,
    /// Port 0 picks a free port.
    pub listen: SocketAddr,
    /// The one user BI tools log in as.
    pub user: String,
    /// Its password; never logged. The built-in development password logs a warning.
    pub password: String,
    /// Connections served at once; more are refused.
    pub max_connections: usize,
}

/// The development password; a server started with it warns.
pub const DEV_PASSWORD: &str = "shoplens";

impl Default for PgConfig {
    fn default() -> Self {
        PgConfig {
            enabled: true,
            listen: ([127, 0, 0, 1], 5433).into(),
            user: "shoplens".into(),
            password: DEV_PASSWORD.into(),
            max_connections: 64,
        }
    }
}

impl std::fmt::Debug for PgConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgConfig")
            .field("enabled", &self.enabled)
            .field("listen", &self.listen)
            .field("user", &self.user)
            .field("password", &"***")
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_never_printed() {
        let config = PgConfig {
            password: "s3cret".into(),
            ..PgConfig::default()
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains(r#"password: "***""#), "{shown}");
    }
}
