//! The analytics server's own Prometheus metrics, beside the kit's HTTP metrics.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use shoplens_kit::metrics::{HistogramFamily, Metrics, latency_histogram};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueryLabels {
    pub view: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ViewLabels {
    pub view: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuditLabels {
    pub surface: String,
    pub role: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SurfaceLabels {
    pub surface: String,
}

#[derive(Clone)]
pub struct AnalyticsMetrics {
    /// Every audited query (SQL and exports) by surface, role and outcome.
    pub audited: Family<AuditLabels, Counter>,
    /// Bytes of answers sent, by surface.
    pub audited_bytes: Family<SurfaceLabels, Counter>,
    /// Dashboard views and SQL queries by outcome (`ok` or `error`).
    pub queries: Family<QueryLabels, Counter>,
    pub query_duration: HistogramFamily<ViewLabels>,
    /// Exports started (HTTP).
    pub exports: Counter,
}

impl AnalyticsMetrics {
    pub fn register(metrics: &Arc<Metrics>) -> AnalyticsMetrics {
        let m = AnalyticsMetrics {
            audited: Family::default(),
            audited_bytes: Family::default(),
            queries: Family::default(),
            query_duration: Family::new_with_constructor(latency_histogram),
            exports: Counter::default(),
        };
        metrics.register(
            "analytics_queries",
            "Dashboard views and SQL queries by view and outcome",
            m.queries.clone(),
        );
        metrics.register(
            "analytics_query_duration_seconds",
            "Dashboard view and SQL query latency",
            m.query_duration.clone(),
        );
        metrics.register(
            "analytics_exports",
            "Report exports started over HTTP",
            m.exports.clone(),
        );
        metrics.register(
            "analytics_audited_queries",
            "SQL queries and exports by surface (http, export, pg), role and outcome",
            m.audited.clone(),
        );
        metrics.register(
            "analytics_audited_bytes",
            "Bytes of SQL answers and exports sent, by surface",
            m.audited_bytes.clone(),
        );
        m
    }

    /// Counts one audited query (see `crate::audit`).
    pub fn audited(&self, surface: &str, role: &str, outcome: &str, bytes: u64) {
        self.audited
            .get_or_create(&AuditLabels {
                surface: surface.to_owned(),
                role: role.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
        self.audited_bytes
            .get_or_create(&SurfaceLabels {
                surface: surface.to_owned(),
            })
            .inc_by(bytes);
    }

    pub fn observe(&self, view: &str, ok: bool, took: Duration) {
        self.queries
            .get_or_create(&QueryLabels {
                view: view.to_owned(),
                outcome: if ok { "ok" } else { "error" }.to_owned(),
            })
            .inc();
        self.query_duration
            .get_or_create(&ViewLabels {
                view: view.to_owned(),
            })
            .observe(took.as_secs_f64());
    }
}
