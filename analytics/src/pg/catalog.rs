//! Corrections to the borrowed `pg_catalog` where BI tools need Postgres's column types.
//!
//! The catalog (datafusion-pg-catalog) stores `pg_index.indkey` and `pg_constraint.conkey`
//! (and their siblings) as text, so `unnest(ix.indkey)` (SQLAlchemy's primary-key
//! reflection) and `attnum = ANY(c.conkey)` (Metabase's foreign keys) are refused while
//! planning. No ShopLens table has an index or a constraint, so the corrected tables are
//! empty, with the array columns Postgres has (`int2vector`/`int2[]` as a list of Int16).

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::datasource::MemTable;
use datafusion::error::{DataFusionError, Result};

/// The columns that are arrays of attribute numbers in Postgres, per catalog table.
const ATTNUM_ARRAYS: &[(&str, &[&str])] = &[
    ("pg_index", &["indkey", "indoption"]),
    ("pg_constraint", &["conkey", "confkey", "confdelsetcols"]),
];

/// `pg_catalog` as borrowed, with the tables of [`ATTNUM_ARRAYS`] replaced.
#[derive(Debug)]
pub struct CorrectedCatalog {
    inner: Arc<dyn SchemaProvider>,
}

impl CorrectedCatalog {
    pub fn new(inner: Arc<dyn SchemaProvider>) -> CorrectedCatalog {
        CorrectedCatalog { inner }
    }
}

/// An empty table of `original`'s columns, `arrays` turned into lists of Int16.
fn corrected(original: &Schema, arrays: &[&str]) -> Result<Arc<dyn TableProvider>> {
    let fields: Vec<Field> = original
        .fields()
        .iter()
        .map(|f| {
            if arrays.contains(&f.name().as_str()) {
                Field::new(
                    f.name(),
                    DataType::List(Arc::new(Field::new_list_field(DataType::Int16, true))),
                    true,
                )
            } else {
                f.as_ref().clone()
            }
        })
        .collect();
    let schema = Arc::new(Schema::new(fields));
    Ok(Arc::new(MemTable::try_new(schema, vec![vec![]])?))
}

#[async_trait]
impl SchemaProvider for CorrectedCatalog {
    fn table_names(&self) -> Vec<String> {
        self.inner.table_names()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>, DataFusionError> {
        let table = self.inner.table(name).await?;
        let arrays = ATTNUM_ARRAYS
            .iter()
            .find(|(t, _)| *t == name)
            .map(|(_, columns)| *columns);
        match (table, arrays) {
            (Some(table), Some(arrays)) => Ok(Some(corrected(&table.schema(), arrays)?)),
            (table, _) => Ok(table),
        }
    }

    fn table_exist(&self, name: &str) -> bool {
        self.inner.table_exist(name)
    }

    fn register_table(
        &self,
        name: String,
        table: Arc<dyn TableProvider>,
    ) -> Result<Option<Arc<dyn TableProvider>>> {
        self.inner.register_table(name, table)
    }

    fn deregister_table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        self.inner.deregister_table(name)
    }
}
