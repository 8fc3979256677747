//! Personal data: customer names and e-mail addresses (and dead letters' payloads, which are
//! whole events) are visible to administrators only. Every other reader gets sessions whose
//! tables show those columns as `(redacted)`, on every path (SQL over HTTP and Postgres,
//! exports, the dashboard, the `customers` view, which reads `customer_events`).
//!
//! The masking is a table provider wrapper ([`MaskedTable`]), so no query shape can get
//! around it: the masked column's real values never leave the scan, and a filter on a masked
//! column is never pushed into the scan (where it would test the real value): it runs above,
//! on the redacted one.

use std::sync::Arc;

use arrow_schema::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::datasource::TableType;
use datafusion::error::Result;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{Column, Literal};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::projection::ProjectionExec;
use serde::{Deserialize, Serialize};
use shoplens_contract::tables::RawTable;

use crate::read_model::Table;

/// What a masked value reads as.
pub const REDACTED: &str = "(redacted)";

/// Whether a reader may see personal data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Pii {
    /// Administrators.
    Visible,
    /// Everyone else (the safe default).
    #[default]
    Masked,
}

/// The personal columns of `table`.
pub fn personal_columns(table: Table) -> &'static [&'static str] {
    match table {
        Table::Raw(RawTable::Customers) => &["name", "email"],
        Table::DeadLetters => &["payload", "reason"],
        _ => &[],
    }
}

/// `inner` with its personal columns redacted.
pub fn masked(table: Table, inner: Arc<dyn TableProvider>) -> Arc<dyn TableProvider> {
    let schema = inner.schema();
    let columns: Vec<usize> = personal_columns(table)
        .iter()
        .filter_map(|name| schema.index_of(name).ok())
        .collect();
    if columns.is_empty() {
        return inner;
    }
    Arc::new(MaskedTable { inner, columns })
}

/// A table whose `columns` read as [`REDACTED`] (they are all text).
#[derive(Debug)]
pub struct MaskedTable {
    inner: Arc<dyn TableProvider>,
    columns: Vec<usize>,
}

impl MaskedTable {
    fn touches_masked(&self, expr: &Expr) -> bool {
        let schema = self.inner.schema();
        expr.column_refs().iter().any(|c| {
            schema
                .index_of(c.name())
                .is_ok_and(|i| self.columns.contains(&i))
        })
    }
}

#[async_trait]
impl TableProvider for MaskedTable {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        // Filters on masked columns stay above the scan: they see the redacted value.
        let allowed: Vec<&Expr> = filters
            .iter()
            .copied()
            .filter(|f| !self.touches_masked(f))
            .collect();
        let mut inner = self.inner.supports_filters_pushdown(&allowed)?.into_iter();
        Ok(filters
            .iter()
            .map(|f| {
                if self.touches_masked(f) {
                    TableProviderFilterPushDown::Unsupported
                } else {
                    inner
                        .next()
                        .unwrap_or(TableProviderFilterPushDown::Unsupported)
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let filters: Vec<Expr> = filters
            .iter()
            .filter(|f| !self.touches_masked(f))
            .cloned()
            .collect();
        let plan = self.inner.scan(state, projection, &filters, limit).await?;
        let table_columns: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..self.inner.schema().fields().len()).collect(),
        };
        let out = plan.schema();
        let exprs: Vec<(Arc<dyn PhysicalExpr>, String)> = table_columns
            .iter()
            .enumerate()
            .map(|(i, table_column)| {
                let name = out.field(i).name().clone();
                let expr: Arc<dyn PhysicalExpr> = if self.columns.contains(table_column) {
                    Arc::new(Literal::new(ScalarValue::Utf8(Some(REDACTED.to_owned()))))
                } else {
                    Arc::new(Column::new(&name, i))
                };
                (expr, name)
            })
            .collect();
        Ok(Arc::new(ProjectionExec::try_new(exprs, plan)?))
    }
}
