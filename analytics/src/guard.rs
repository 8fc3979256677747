//! Per-query limits enforced inside DataFusion's execution: a deadline and a row limit.
//!
//! [`GuardRule`] is the last physical optimizer rule of a session; it wraps the root of
//! every plan in a [`GuardExec`], so the limits hold on every path that executes SQL (the
//! HTTP endpoint, the Postgres wire protocol, exports) without each path remembering to
//! apply them. Memory is bounded separately, by the session's memory pool.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, PhysicalExpr,
    PlanProperties, SendableRecordBatchStream,
};
use futures::StreamExt;

/// The limits of one query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryLimits {
    /// From the start of execution to the last row.
    pub timeout: Duration,
    /// At most this many result rows; `None`: no limit (exports).
    pub max_rows: Option<u64>,
}

/// Why a query was stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuardError {
    #[error("query exceeded its time limit of {} ms", .0.as_millis())]
    Timeout(Duration),
    #[error(
        "query returned more than {0} rows; add a LIMIT or a narrower WHERE, or use the export endpoint"
    )]
    TooManyRows(u64),
    /// The query's worker used up its CPU time (set by the server, see `crate::isolation`).
    #[error("query exceeded its CPU time limit of {0} s")]
    CpuTime(u64),
}

impl GuardError {
    /// The guard error inside `e`, if the query was stopped by one.
    pub fn find(e: &DataFusionError) -> Option<&GuardError> {
        match e.find_root() {
            DataFusionError::External(inner) => inner.downcast_ref::<GuardError>(),
            _ => None,
        }
    }
}

/// Wraps every plan's root in a [`GuardExec`].
#[derive(Debug)]
pub struct GuardRule {
    pub limits: QueryLimits,
}

impl PhysicalOptimizerRule for GuardRule {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if (plan.as_ref() as &dyn std::any::Any)
            .downcast_ref::<GuardExec>()
            .is_some()
        {
            return Ok(plan);
        }
        Ok(Arc::new(GuardExec::new(plan, self.limits)))
    }

    fn name(&self) -> &str {
        "shoplens_query_guard"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Passes its input's rows through until the deadline or the row limit, then fails the
/// query with a [`GuardError`]. One output partition, so the row count is exact.
#[derive(Debug)]
pub struct GuardExec {
    input: Arc<dyn ExecutionPlan>,
    limits: QueryLimits,
    properties: Arc<PlanProperties>,
}

impl GuardExec {
    pub fn new(input: Arc<dyn ExecutionPlan>, limits: QueryLimits) -> GuardExec {
        let input: Arc<dyn ExecutionPlan> = if input.output_partitioning().partition_count() > 1 {
            Arc::new(CoalescePartitionsExec::new(input))
        } else {
            input
        };
        let properties = input.properties().clone();
        GuardExec {
            input,
            limits,
            properties,
        }
    }
}

impl DisplayAs for GuardExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "GuardExec: timeout={}ms, max_rows={:?}",
            self.limits.timeout.as_millis(),
            self.limits.max_rows
        )
    }
}

impl ExecutionPlan for GuardExec {
    fn name(&self) -> &'static str {
        "GuardExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return Err(DataFusionError::Internal(
                "GuardExec takes exactly one child".into(),
            ));
        }
        Ok(Arc::new(GuardExec::new(
            children.swap_remove(0),
            self.limits,
        )))
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        let schema = input.schema();
        let limits = self.limits;
        let deadline = tokio::time::Instant::now() + limits.timeout;
        let stream = futures::stream::unfold(
            (input, 0u64, false),
            move |(mut input, mut rows, stopped)| async move {
                if stopped {
                    return None;
                }
                let stop = |e: GuardError| DataFusionError::External(Box::new(e));
                match tokio::time::timeout_at(deadline, input.next()).await {
                    Err(_) => Some((
                        Err(stop(GuardError::Timeout(limits.timeout))),
                        (input, rows, true),
                    )),
                    Ok(None) => None,
                    Ok(Some(Err(e))) => Some((Err(e), (input, rows, true))),
                    Ok(Some(Ok(batch))) => {
                        rows += batch.num_rows() as u64;
                        match limits.max_rows {
                            Some(max) if rows > max => {
                                Some((Err(stop(GuardError::TooManyRows(max))), (input, rows, true)))
                            }
                            _ => Some((Ok(batch), (input, rows, false))),
                        }
                    }
                }
            },
        );
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}
