//! The analytics server's settings (section `analytics` of the system config).

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use shoplens_kit::config::HttpConfig;
use shoplens_kit::identity::AuthConfig;

use crate::engine::QueryConfig;
use crate::users::UserConfig;

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
    /// The business users who sign in to the dashboard page and connect over Postgres, with
    /// their roles and password hashes (see `crate::users`). The default is one development
    /// admin (`shoplens`/`shoplens`), refused beyond loopback.
    #[serde(deserialize_with = "crate::users::users")]
    pub users: Vec<UserConfig>,
    /// How long a dashboard sign-in lasts (seconds).
    pub session_ttl_secs: u64,
    /// Who may call the API (bearer tokens) and the key sessions are signed with: the root
    /// `auth` section, filled in by the program that runs the server (not configurable here).
    #[serde(skip)]
    pub auth: AuthConfig,
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
            users: crate::users::default_users(),
            session_ttl_secs: 8 * 3600,
            auth: AuthConfig::default(),
        }
    }
}

/// Where reconciliation gets the source of truth: the composer's ledger
/// (`/api/v1/sales/ledger`), which sums the services' own data. The server calls it with
/// its own service identity (a token of role `service` signed with `auth.secret`), or with
/// `composer_token` when set (a deployment whose servers only verify an identity provider's
/// tokens).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReconcileConfig {
    /// The composer's base URL; empty: reconciliation is not configured (503).
    pub composer_url: String,
    /// A bearer token for the composer's ledger (role `service` suffices). A secret: never
    /// logged.
    pub composer_token: String,
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
            timeout_ms: 12_000,
            max_differences: 1_000,
        }
    }
}

impl ReconcileConfig {
    /// Whether a reconciliation can run: a composer to ask.
    pub fn is_configured(&self) -> bool {
        !self.composer_url.is_empty()
    }
}

impl std::fmt::Debug for ReconcileConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redact = |s: &str| if s.is_empty() { "" } else { "***" };
        f.debug_struct("ReconcileConfig")
            .field("composer_url", &self.composer_url)
            .field("composer_token", &redact(&self.composer_token))
            .field("timeout_ms", &self.timeout_ms)
            .field("max_differences", &self.max_differences)
            .finish()
    }
}

/// The Postgres wire protocol endpoint (`psql`, Grafana, Metabase, Superset connect here as
/// one of `analytics.users`: analysts and admins).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PgConfig {
    pub enabled: bool,
    /// Port 0 picks a free port.
    pub listen: SocketAddr,
    /// Connections served at once; more are refused.
    pub max_connections: usize,
}

impl Default for PgConfig {
    fn default() -> Self {
        PgConfig {
            enabled: true,
            listen: ([127, 0, 0, 1], 5433).into(),
            max_connections: 64,
        }
    }
}

impl AnalyticsConfig {
    /// Refuses what would let others in, naming the key: the built-in development key or a
    /// user with the development password on a server listening beyond loopback, a key
    /// shorter than 32 bytes, an unreadable password hash.
    pub fn check_exposure(&self) -> Result<(), String> {
        let users = crate::users::Users::new(&self.users)?;
        let mut listens = vec![self.listen];
        if self.sql.enabled {
            listens.push(self.sql.listen);
        }
        for listen in listens {
            self.auth.check_exposure(listen)?;
            let dev = users.with_dev_password();
            if !dev.is_empty() && !listen.ip().is_loopback() {
                return Err(format!(
                    "analytics.users: {} has the built-in development password, and the server \
                     would listen on {listen}, beyond loopback: configure your own users \
                     (`shoplens-analytics hash-password`)",
                    dev.join(", ")
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_never_printed() {
        let config = ReconcileConfig {
            composer_url: "http://127.0.0.1:8080".into(),
            composer_token: "tok-s3cret".into(),
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
        assert!(!shown.contains("pbkdf2"), "{shown}");
        assert!(shown.contains("http://127.0.0.1:8080"), "{shown}");
        assert!(config.is_configured());
        assert!(!ReconcileConfig::default().is_configured());
    }

    #[test]
    fn the_development_key_and_password_stay_on_loopback() {
        let local = AnalyticsConfig::default();
        assert!(local.check_exposure().is_ok());
        let exposed = AnalyticsConfig {
            listen: ([0, 0, 0, 0], 8086).into(),
            ..AnalyticsConfig::default()
        };
        let e = exposed.check_exposure().unwrap_err();
        assert!(e.contains("auth.secret"), "{e}");
        let mut own_key = exposed.clone();
        own_key.auth.secret = "0123456789abcdef0123456789abcdef".into();
        let e = own_key.check_exposure().unwrap_err();
        assert!(
            e.contains("analytics.users") && e.contains("shoplens"),
            "{e}"
        );
        own_key.users = vec![UserConfig {
            name: "alice".into(),
            role: shoplens_kit::identity::Role::Analyst,
            password_hash: crate::users::hash("a long password"),
        }];
        assert!(own_key.check_exposure().is_ok());
        let mut short = own_key.clone();
        short.auth.secret = "short".into();
        assert!(short.check_exposure().unwrap_err().contains("32"));
    }
}
