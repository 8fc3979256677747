//! Corrections to the borrowed `pg_catalog` where BI tools need Postgres's column types and
//! stable object ids.
//!
//! Object ids: the borrowed catalog numbers schemas and tables from a counter, in the order
//! its tables first meet them, and the session's name maps (hash maps) list them in an
//! order that changes with every process. Each query worker is its own process, so a tool
//! that read `orders`' oid from one worker and asked a second for that oid's columns got
//! another table's (DBeaver browses this way). [`SortedCatalogs`] lists names sorted, and
//! [`number_objects`] numbers every object once, in that order, before any client query.
//!
//! Column types: the catalog (datafusion-pg-catalog) stores `pg_index.indkey` and
//! `pg_constraint.conkey` (and their siblings) as text, so `unnest(ix.indkey)`
//! (SQLAlchemy's primary-key reflection) and `attnum = ANY(c.conkey)` (Metabase's foreign
//! keys) are refused while planning. No ShopLens table has an index or a constraint, so the corrected tables are
//! empty, with the array columns Postgres has (`int2vector`/`int2[]` as a list of Int16).

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{CatalogProviderList, SchemaProvider, TableProvider};
use datafusion::datasource::{MemTable, TableType};
use datafusion::error::{DataFusionError, Result};
use datafusion::prelude::SessionContext;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::catalog_info::CatalogInfo;

/// The session's catalogs, schemas and tables as the borrowed `pg_catalog` sees them, each
/// list sorted by name: the same objects are listed in the same order in every process.
#[derive(Debug, Clone)]
pub struct SortedCatalogs(pub Arc<dyn CatalogProviderList>);

fn sorted(mut names: Vec<String>) -> Vec<String> {
    names.sort_unstable();
    names
}

#[async_trait]
impl CatalogInfo for SortedCatalogs {
    async fn catalog_names(&self) -> Result<Vec<String>> {
        Ok(sorted(self.0.catalog_names().await?))
    }

    async fn schema_names(&self, catalog_name: &str) -> Result<Option<Vec<String>>> {
        Ok(self.0.schema_names(catalog_name).await?.map(sorted))
    }

    async fn table_names(&self, catalog: &str, schema: &str) -> Result<Option<Vec<String>>> {
        Ok(self.0.table_names(catalog, schema).await?.map(sorted))
    }

    async fn table_schema(
        &self,
        catalog: &str,
        schema: &str,
        table: &str,
    ) -> Result<Option<SchemaRef>> {
        self.0.table_schema(catalog, schema, table).await
    }

    async fn table_type(
        &self,
        catalog: &str,
        schema: &str,
        table: &str,
    ) -> Result<Option<TableType>> {
        self.0.table_type(catalog, schema, table).await
    }
}

/// Numbers every catalog, schema and table of `ctx` before a client asks: `pg_class` meets
/// them all, catalog by catalog and schema by schema, in [`SortedCatalogs`]' order. Left to
/// the first client query, the numbering would follow whichever catalog table it read
/// first (`pg_namespace` numbers schemas only, `pg_attribute` tables only).
pub async fn number_objects(ctx: &SessionContext) -> Result<()> {
    ctx.sql("SELECT count(*) FROM pg_catalog.pg_class")
        .await?
        .collect()
        .await?;
    Ok(())
}

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

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::RecordBatch;
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::prelude::SessionConfig;

    use super::*;
    use crate::engine::{CATALOG, SCHEMA};

    /// A session like a worker's, its tables registered in the given order.
    async fn session(tables: &[&str]) -> SessionContext {
        let config = SessionConfig::new()
            .with_default_catalog_and_schema(CATALOG, SCHEMA)
            .with_information_schema(true);
        let ctx = SessionContext::new_with_config(config);
        for table in tables {
            let columns: Vec<Field> = (0..table.len() % 3 + 1)
                .map(|c| Field::new(format!("{table}_{c}"), DataType::Int64, true))
                .collect();
            let schema = Arc::new(Schema::new(columns));
            let provider = MemTable::try_new(schema, vec![vec![]]).expect("table");
            ctx.register_table(*table, Arc::new(provider))
                .expect("register");
        }
        crate::pg::install_catalog(&ctx, &["analyst".to_owned()])
            .await
            .expect("pg_catalog");
        ctx
    }

    async fn answer(ctx: &SessionContext, sql: &str) -> String {
        let batches: Vec<RecordBatch> = ctx
            .sql(sql)
            .await
            .expect("plan")
            .collect()
            .await
            .expect("run");
        pretty_format_batches(&batches).expect("format").to_string()
    }

    const OIDS: &str = "SELECT c.oid, n.nspname, c.relname, n.oid AS nspoid \
        FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON c.relnamespace = n.oid \
        ORDER BY n.nspname, c.relname";
    const COLUMNS: &str = "SELECT attrelid, attnum, attname FROM pg_catalog.pg_attribute \
        WHERE attrelid IN (SELECT oid FROM pg_catalog.pg_class WHERE relnamespace = \
        (SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = 'public')) \
        ORDER BY attrelid, attnum";

    /// Two processes (here two sessions, each with its own name maps and counter) that
    /// registered the same tables in another order, and whose first client queries read
    /// different catalog tables, give every schema, table and column the same oid.
    #[tokio::test]
    async fn every_process_gives_an_object_the_same_oid() {
        let names = [
            "orders",
            "payments",
            "daily_sales",
            "customers",
            "shipments",
            "products",
        ];
        let mut reversed = names;
        reversed.reverse();
        let one = session(&names).await;
        let other = session(&reversed).await;
        // What each is asked first differs: the columns (which meet tables only), or the
        // schemas.
        answer(
            &one,
            "SELECT attrelid, attname FROM pg_catalog.pg_attribute",
        )
        .await;
        answer(&other, "SELECT oid, nspname FROM pg_catalog.pg_namespace").await;
        assert_eq!(answer(&one, COLUMNS).await, answer(&other, COLUMNS).await);
        let oids = answer(&one, OIDS).await;
        assert_eq!(oids, answer(&other, OIDS).await);
        assert!(oids.contains("| public "), "{oids}");
        assert!(oids.contains("orders"), "{oids}");
    }
}
