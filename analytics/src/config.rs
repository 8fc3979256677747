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
    /// Reconciliation against the services' own figures (`GET /api/v1/reconcile`).
    pub reconcile: ReconcileConfig,
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
            reconcile: ReconcileConfig::default(),
        }
    }
}

/// Where reconciliation gets the source of truth: the composer's ledger
/// (`/api/v1/sales/ledger`, admin only), which sums the services' own data. The all-in-one
/// `shoplens` process fills in its composer's URL and signing secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReconcileConfig {
    /// The composer's base URL; empty: reconciliation is not configured (503).
    pub composer_url: String,
    /// An admin bearer token for the composer (`shoplens token --admin`). A secret: never
    /// logged. Used when set; otherwise tokens are signed with `composer_secret`.
    pub composer_token: String,
    /// The composer's token-signing secret (`composer.auth.secret`), to sign a short-lived
    /// admin token per request. A secret: never logged.
    pub composer_secret: String,
    /// How long fetching the ledger may take (ms); the composer has its own deadline.
    pub timeout_ms: u64,
    /// Differences listed in a report at most (all are counted).
    pub max_differences: usize,
}

impl Default for ReconcileConfig {
    fn default() -> Self {
        ReconcileConfig {
            composer_url: String::new(),
            composer_token: String::new(),
            composer_secret: String::new(),
            timeout_ms: 12_000,
            max_differences: 1_000,
        }
    }
}

impl ReconcileConfig {
    /// Whether a reconciliation can run: a composer and a way to authenticate to it.
    pub fn is_configured(&self) -> bool {
        let has_credentials = !self.composer_token.is_empty() || !self.composer_secret.is_empty();
        !self.composer_url.is_empty() && has_credentials
    }
}

impl std::fmt::Debug for ReconcileConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redact = |s: &str| if s.is_empty() { "" } else { "***" };
        f.debug_struct("ReconcileConfig")
            .field("composer_url", &self.composer_url)
            .field("composer_token", &redact(&self.composer_token))
            .field("composer_secret", &redact(&self.composer_secret))
            .field("timeout_ms", &self.timeout_ms)
            .field("max_differences", &self.max_differences)
            .finish()
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

    #[test]
    fn reconcile_secrets_are_never_printed() {
        let config = ReconcileConfig {
            composer_url: "http://127.0.0.1:8080".into(),
            composer_token: "tok-s3cret".into(),
            composer_secret: "sign-s3cret".into(),
            ..ReconcileConfig::default()
        };
        let shown = format!(
            "{:?}",
            AnalyticsConfig {
                reconcile: config.clone(),
                ..AnalyticsConfig::default()
            }
        );
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("http://127.0.0.1:8080"), "{shown}");
        assert!(config.is_configured());
        assert!(!ReconcileConfig::default().is_configured());
    }
}
