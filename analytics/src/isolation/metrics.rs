//! Metrics of the query workers.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use shoplens_kit::metrics::Metrics;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Default)]
pub struct PoolMetrics {
    started: Counter,
    ended: Family<ReasonLabels, Counter>,
    queries: Counter,
    busy: Counter,
}

impl PoolMetrics {
    pub fn register(metrics: &Arc<Metrics>) -> PoolMetrics {
        let m = PoolMetrics::default();
        metrics.register(
            "analytics_query_workers_started",
            "Query worker processes started",
            m.started.clone(),
        );
        metrics.register(
            "analytics_query_workers_ended",
            "Query worker processes ended, by reason (deadline: killed at the query's \
             deadline; abandoned: its client went away; died: it ended by itself, e.g. at its \
             memory or CPU limit; protocol; retired: replaced after its quota of queries)",
            m.ended.clone(),
        );
        metrics.register(
            "analytics_isolated_queries",
            "Ad-hoc queries handed to a query worker",
            m.queries.clone(),
        );
        metrics.register(
            "analytics_queries_refused_busy",
            "Ad-hoc queries refused because too many were running or waiting",
            m.busy.clone(),
        );
        m
    }

    pub fn worker_started(&self) {
        self.started.inc();
    }

    pub fn killed(&self, reason: &str) {
        self.ended
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    pub fn query_started(&self) {
        self.queries.inc();
    }

    pub fn refused_busy(&self) {
        self.busy.inc();
    }
}
