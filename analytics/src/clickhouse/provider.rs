//! The `TableProvider` of one ClickHouse table: it resolves the live generation at every
//! scan (an empty plan before there is one), tells DataFusion which filters ClickHouse
//! evaluates exactly, and plans a [`ClickHouseExec`] of the scan's query.

use std::fmt;
use std::sync::Arc;

use arrow_schema::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;

use super::client::Inner;
use super::exec::ClickHouseExec;
use super::filter::translate;
use super::layout::Layout;
use super::scan::build_scan;
use crate::read_model::Table;

/// One table of the ClickHouse read model; resolves the live generation at every scan.
pub(super) struct ClickHouseTable {
    pub(super) model: Arc<Inner>,
    pub(super) table: Table,
    pub(super) schema: SchemaRef,
}

impl fmt::Debug for ClickHouseTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClickHouseTable({})", self.table.name())
    }
}

#[async_trait]
impl TableProvider for ClickHouseTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    /// `Exact` for what ClickHouse evaluates exactly as DataFusion would (see the module
    /// docs); the rest DataFusion applies itself.
    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        let layout = Layout::new(self.table)?;
        Ok(filters
            .iter()
            .map(|f| match translate(&layout, f) {
                Some(_) => TableProviderFilterPushDown::Exact,
                None => TableProviderFilterPushDown::Unsupported,
            })
            .collect())
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let Some(generation) = self.model.live().await? else {
            let schema = match projection {
                Some(p) => Arc::new(self.schema.project(p)?),
                None => self.schema.clone(),
            };
            return Ok(Arc::new(EmptyExec::new(schema)));
        };
        let query = build_scan(
            self.table,
            &self.model.database(generation),
            projection.map(Vec::as_slice),
            filters,
            limit,
        )?;
        Ok(Arc::new(ClickHouseExec::new(
            self.model.clone(),
            self.table,
            query,
        )))
    }
}
