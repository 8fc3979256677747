//! The execution plan of one ClickHouse scan: one partition whose stream sends the query on
//! its first poll and then decodes one batch per poll, converted to the exposed types.

use std::fmt;
use std::sync::Arc;

use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{
    Boundedness, ChildrenPropertiesMode, EmissionType, ReplaceChildrenOptions,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    SendableRecordBatchStream,
};

use super::client::Inner;
use super::reader::Reader;
use super::scan::ScanQuery;
use crate::read_model::Table;

/// Streams one ClickHouse query's rows as record batches.
pub(super) struct ClickHouseExec {
    model: Arc<Inner>,
    /// The table a scan reads; `None` for a pushed-down query (`super::pushdown`).
    table: Option<Table>,
    query: Arc<ScanQuery>,
    properties: Arc<PlanProperties>,
}

impl ClickHouseExec {
    pub(super) fn new(model: Arc<Inner>, table: Table, query: ScanQuery) -> ClickHouseExec {
        Self::with(model, Some(table), query)
    }

    /// A pushed-down query (`super::pushdown`).
    pub(super) fn pushed(model: Arc<Inner>, query: ScanQuery) -> ClickHouseExec {
        Self::with(model, None, query)
    }

    fn with(model: Arc<Inner>, table: Option<Table>, query: ScanQuery) -> ClickHouseExec {
        let properties = PlanProperties::new(
            EquivalenceProperties::new(query.output.clone()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        ClickHouseExec {
            model,
            table,
            query: Arc::new(query),
            properties: Arc::new(properties),
        }
    }
}

impl fmt::Debug for ClickHouseExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClickHouseExec")
            .field("table", &self.table.map(Table::name))
            .field("sql", &self.query.sql)
            .finish()
    }
}

impl DisplayAs for ClickHouseExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        match self.table {
            Some(table) => write!(
                f,
                "ClickHouseExec: table={}, sql={}",
                table.name(),
                self.query.sql
            ),
            None => write!(f, "ClickHouseExec: sql={}", self.query.sql),
        }
    }
}

impl ExecutionPlan for ClickHouseExec {
    fn name(&self) -> &'static str {
        "ClickHouseExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if !children.is_empty() {
            return Err(DataFusionError::Internal(
                "ClickHouseExec has no children".into(),
            ));
        }
        Ok(self)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(DataFusionError::Internal(format!(
                "ClickHouseExec has one partition, not {partition}"
            )));
        }
        let batch_size = context.session_config().batch_size().max(1);
        let model = self.model.clone();
        let query = self.query.clone();

        // The request goes out on the first poll; each later poll decodes one batch.
        let stream = futures::stream::try_unfold(None, move |reader: Option<Reader>| {
            let model = model.clone();
            let query = query.clone();
            async move {
                let mut reader = match reader {
                    Some(r) => r,
                    None => Reader::open(&model, &query, batch_size).await?,
                };
                match reader.next_batch().await? {
                    Some(batch) => Ok(Some((query.convert(batch)?, Some(reader)))),
                    None => Ok(None),
                }
            }
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.query.output.clone(),
            stream,
        )))
    }
}
