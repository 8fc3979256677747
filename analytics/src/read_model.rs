//! What the analytics server reads: the read model's tables as DataFusion table providers,
//! whichever back end holds them, and how fresh they are.
//!
//! Both back ends expose the same tables with the same Arrow schemas ([`Table::schema`]), so
//! one SQL text gives the same answer on both. The pre-aggregated tables are exposed
//! *merged*: one row per key, whatever the store keeps underneath (SummingMergeTree parts
//! in ClickHouse, delta files in the embedded store).

use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::TableProvider;
use shoplens_contract::tables::RawTable;
use shoplens_readmodel::config::ReadModelConfig;
use shoplens_readmodel::freshness::Freshness;
use shoplens_readmodel::tables::{AggTable, DEAD_LETTERS, dead_letters_schema};

/// Revenue sums of the merged aggregate tables: exact, and wide enough for any total.
pub const REVENUE_SUM: DataType = DataType::Decimal128(38, 2);

/// A table the analytics server exposes from the read model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    Raw(RawTable),
    Agg(AggTable),
    DeadLetters,
}

impl Table {
    /// Every table, raw tables first.
    pub fn all() -> Vec<Table> {
        RawTable::ALL
            .into_iter()
            .map(Table::Raw)
            .chain(AggTable::ALL.into_iter().map(Table::Agg))
            .chain([Table::DeadLetters])
            .collect()
    }

    pub fn name(self) -> &'static str {
        match self {
            Table::Raw(t) => t.name(),
            Table::Agg(t) => t.name(),
            Table::DeadLetters => DEAD_LETTERS,
        }
    }

    /// The columns every back end serves for this table.
    pub fn schema(self) -> SchemaRef {
        match self {
            Table::Raw(t) => t.schema(),
            Table::Agg(t) => merged_schema(t),
            Table::DeadLetters => dead_letters_schema(),
        }
    }
}

/// A merged aggregate table's schema: [`AggTable::schema`] with `revenue` as
/// [`REVENUE_SUM`].
pub fn merged_schema(table: AggTable) -> SchemaRef {
    let fields: Vec<Field> = table
        .schema()
        .fields()
        .iter()
        .map(|f| {
            if f.name() == "revenue" {
                Field::new("revenue", REVENUE_SUM, false)
            } else {
                f.as_ref().clone()
            }
        })
        .collect();
    Arc::new(Schema::new(fields))
}

/// A read model the analytics server can query.
///
/// Providers resolve the *live* generation when a query scans them, so one registered
/// provider serves for the life of the server, across new data and blue/green rebuilds.
#[async_trait]
pub trait ReadModel: Send + Sync + 'static {
    /// `embedded` or `clickhouse`.
    fn kind(&self) -> &'static str;

    /// How another process opens this same read model (query workers do).
    fn config(&self) -> ReadModelConfig;

    /// The provider of `table`.
    fn provider(&self, table: Table) -> Arc<dyn TableProvider>;

    /// Which state of the read model queries see now.
    async fn watermark(&self) -> Result<Watermark, ReadModelError>;

    /// The live generation (0 before there is one) and its freshness watermark.
    async fn freshness(&self) -> Result<(u32, Freshness), ReadModelError> {
        let w = self.watermark().await?;
        Ok((w.generation, w.freshness))
    }
}

/// One state of the read model: two reads with the same watermark see the same data, so an
/// answer computed at one is the answer at the other (the result cache's key).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Watermark {
    /// The live generation, 0 before there is one.
    pub generation: u32,
    pub freshness: Freshness,
    /// Grows with every change of the generation's data (each back end says how).
    pub version: u64,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ReadModelError {
    /// The store cannot be reached (ClickHouse down) or refused the read.
    #[error("read model unavailable: {0}")]
    Unavailable(String),
    /// The store holds something this version cannot read.
    #[error("read model unreadable: {0}")]
    Corrupt(String),
}

impl From<shoplens_readmodel::Error> for ReadModelError {
    fn from(e: shoplens_readmodel::Error) -> Self {
        match e {
            shoplens_readmodel::Error::Corrupt(m) => ReadModelError::Corrupt(m),
            shoplens_readmodel::Error::Io(e) => ReadModelError::Unavailable(e.to_string()),
        }
    }
}

impl From<ReadModelError> for datafusion::error::DataFusionError {
    fn from(e: ReadModelError) -> Self {
        datafusion::error::DataFusionError::External(Box::new(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_has_a_unique_name_and_merged_revenue_is_wide() {
        let all = Table::all();
        let names: std::collections::HashSet<_> = all.iter().map(|t| t.name()).collect();
        assert_eq!(names.len(), all.len());
        let s = Table::Agg(AggTable::DailySales).schema();
        assert_eq!(
            s.field_with_name("revenue").unwrap().data_type(),
            &REVENUE_SUM
        );
        assert_eq!(s.field(0).name(), "day");
    }
}
