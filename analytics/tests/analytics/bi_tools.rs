//! BI tools against the Postgres endpoint: for each tool, the statements its driver sends on
//! connect and while browsing schemas (tables, then a table's columns), with the tool's real
//! query texts, over the protocol the driver uses (psycopg2, psqlODBC and Npgsql's type
//! loading send simple queries; pgjdbc and pgx the extended protocol). Every statement must
//! get an answer, and the browsing must show the tables (`orders`, `daily_sales`) and their
//! columns. Tools connect as an analyst, the role BI tools get.
//!
//! Texts are taken as the tools send them; where a driver binds a placeholder (`?`, `$1`,
//! `%(name)s`) the test binds the same value (or, for psycopg2, which interpolates on the
//! client, writes the literal in), as noted above each set.

use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, SimpleQueryMessage};

use crate::support::{self, TestApp};

async fn app() -> (tempfile::TempDir, TestApp) {
    let events = support::events();
    let (dir, engine) = support::embedded_engine(&events).await;
    (dir, support::spawn_app(engine).await)
}

/// Connects as the analyst, naming the application as the tool does in its startup packet.
async fn connect(app: &TestApp, application_name: &str) -> Client {
    app.pg_client_as(
        support::ANALYST,
        &format!("application_name='{application_name}'"),
    )
    .await
}

/// Rows of a simple-protocol query string (every statement in it), as text; panics with the
/// statement if the server refuses it.
async fn simple(client: &Client, sql: &str) -> Vec<Vec<Option<String>>> {
    let messages = client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("refused: {sql}\n{e:?}"));
    messages
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(
                (0..row.len())
                    .map(|i| row.get(i).map(str::to_owned))
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

/// An extended-protocol statement (Parse with the driver's parameter types, Bind, Execute),
/// as pgjdbc and pgx send it; the rows' text columns by name.
async fn extended(
    client: &Client,
    sql: &str,
    params: &[(&(dyn ToSql + Sync), Type)],
) -> Vec<tokio_postgres::Row> {
    client
        .query_typed(sql, params)
        .await
        .unwrap_or_else(|e| panic!("refused: {sql}\n{e:?}"))
}

fn text(row: &tokio_postgres::Row, column: &str) -> String {
    row.try_get::<_, String>(column)
        .unwrap_or_else(|e| panic!("column {column}: {e:?}"))
}

/// The column of each row (simple protocol).
fn column(rows: &[Vec<Option<String>>], i: usize) -> Vec<String> {
    rows.iter()
        .map(|r| r.get(i).cloned().flatten().unwrap_or_default())
        .collect()
}

fn assert_tables(tables: &[String], tool: &str) {
    for table in ["orders", "daily_sales"] {
        assert!(
            tables.iter().any(|t| t == table),
            "{tool} does not see table {table}: {tables:?}"
        );
    }
}

fn assert_order_columns(columns: &[String], tool: &str) {
    for column in ["order_id", "customer_id", "total"] {
        assert!(
            columns.iter().any(|c| c == column),
            "{tool} does not see orders.{column}: {columns:?}"
        );
    }
}

// Metabase (pgjdbc, extended protocol), syncing a database. Sources:
// - pgjdbc/pgjdbc pgjdbc/src/main/java/org/postgresql/core/v3/ConnectionFactoryImpl.java
//   (`SET extra_float_digits = 3`, `SET application_name = '...'` after startup);
// - metabase/metabase src/metabase/driver/postgres.clj (`get-tables-sql`, `enum-types`,
//   `describe-fields-sql`, `describe-fks-sql`, `db-default-timezone`) as HoneySQL renders
//   them, and pgjdbc/pgjdbc .../jdbc/PgDatabaseMetaData.java (getSchemas, getColumns,
//   getPrimaryKeys) which Metabase's sql-jdbc sync calls; texts and bound values as logged
//   by a Postgres 16 during a Metabase v0.62 sync (the same texts are in
//   datafusion-contrib/datafusion-postgres tests/metabase.rs). Bound values are bound with
//   the types pgjdbc sends (Long: int8, String: varchar).
const METABASE_CONNECT: &[&str] = &[
    "SET extra_float_digits = 3",
    "SET application_name = 'Metabase v0.62.1.5 [d4fe74c4-96c3-4812-b3ae-35e513752b13]'",
    "SELECT 1",
    "SHOW TRANSACTION ISOLATION LEVEL",
    "select current_catalog",
    "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL READ UNCOMMITTED",
    "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL READ COMMITTED",
];

const METABASE_SCHEMAS: &str = r#"SELECT nspname AS "TABLE_SCHEM", current_database() AS "TABLE_CATALOG" FROM pg_catalog.pg_namespace  WHERE nspname <> 'pg_toast' AND (nspname !~ '^pg_temp_'  OR nspname = (pg_catalog.current_schemas(true))[1]) AND (nspname !~ '^pg_toast_temp_'  OR nspname = replace((pg_catalog.current_schemas(true))[1], 'pg_temp_', 'pg_toast_temp_'))  ORDER BY "TABLE_SCHEM""#;

const METABASE_PRIVILEGES: &str = r#"with table_privileges as (
	 select
	   NULL as role,
	   t.schemaname as schema,
	   t.objectname as table,
	   pg_catalog.has_any_column_privilege(current_user, '"' || replace(t.schemaname, '"', '""') || '"' || '.' || '"' || replace(t.objectname, '"', '""') || '"',  'update') as update,
	   pg_catalog.has_any_column_privilege(current_user, '"' || replace(t.schemaname, '"', '""') || '"' || '.' || '"' || replace(t.objectname, '"', '""') || '"',  'select') as select,
	   pg_catalog.has_any_column_privilege(current_user, '"' || replace(t.schemaname, '"', '""') || '"' || '.' || '"' || replace(t.objectname, '"', '""') || '"',  'insert') as insert,
	   pg_catalog.has_table_privilege(     current_user, '"' || replace(t.schemaname, '"', '""') || '"' || '.' || '"' || replace(t.objectname, '"', '""') || '"',  'delete') as delete
	 from (
	   select schemaname, tablename as objectname from pg_catalog.pg_tables
	   union
	   select schemaname, viewname as objectname from pg_catalog.pg_views
	   union
	   select schemaname, matviewname as objectname from pg_catalog.pg_matviews
	 ) t
	 where t.schemaname !~ '^pg_'
	   and t.schemaname <> 'information_schema'
	   and pg_catalog.has_schema_privilege(current_user, t.schemaname, 'usage')
	)
	select t.*
	from table_privileges t"#;

const METABASE_TABLES: &str = r#"SELECT "n"."nspname" AS "schema", "c"."relname" AS "name", CASE "c"."relkind" WHEN 'r' THEN 'TABLE' WHEN 'p' THEN 'PARTITIONED TABLE' WHEN 'v' THEN 'VIEW' WHEN 'f' THEN 'FOREIGN TABLE' WHEN 'm' THEN 'MATERIALIZED VIEW' ELSE NULL END AS "type", "d"."description" AS "description", NULLIF("stat"."n_live_tup", $1) AS "estimated_row_count" FROM "pg_catalog"."pg_class" AS "c" INNER JOIN "pg_catalog"."pg_namespace" AS "n" ON "c"."relnamespace" = "n"."oid" LEFT JOIN "pg_catalog"."pg_description" AS "d" ON ("c"."oid" = "d"."objoid") AND ("d"."objsubid" = $2) AND ("d"."classoid" = 'pg_class'::regclass) LEFT JOIN "pg_stat_user_tables" AS "stat" ON ("n"."nspname" = "stat"."schemaname") AND ("c"."relname" = "stat"."relname") WHERE ("c"."relnamespace" = "n"."oid") AND ("n"."nspname" !~ $3) AND ("n"."nspname" <> $4) AND c.relkind in ('r', 'p', 'v', 'f', 'm') AND ("n"."nspname" IN ($5)) ORDER BY "type" ASC, "schema" ASC, "name" ASC"#;

const METABASE_ENUMS: &str = "SELECT nspname, typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE t.oid IN (SELECT DISTINCT enumtypid FROM pg_enum e)";

const METABASE_FIELDS: &str = r#"SELECT "c"."column_name" AS "name", CASE WHEN "c"."udt_schema" IN ('public', 'pg_catalog') THEN FORMAT('%s', "c"."udt_name") ELSE FORMAT('"%s"."%s"', "c"."udt_schema", "c"."udt_name") END AS "database-type", "c"."ordinal_position" - 1 AS "database-position", "c"."table_schema" AS "table-schema", "c"."table_name" AS "table-name", "pk"."column_name" IS NOT NULL AS "pk?", COL_DESCRIPTION(CAST(CAST(FORMAT('%I.%I', CAST("c"."table_schema" AS TEXT), CAST("c"."table_name" AS TEXT)) AS REGCLASS) AS OID), "c"."ordinal_position") AS "field-comment", (("column_default" IS NULL) OR (LOWER("column_default") = 'null')) AND ("is_nullable" = 'NO') AND NOT ((("column_default" IS NOT NULL) AND ("column_default" LIKE '%nextval(%')) OR ("is_identity" <> 'NO')) AS "database-required", "column_default" AS "database-default", (("column_default" IS NOT NULL) AND ("column_default" LIKE '%nextval(%')) OR ("is_identity" <> 'NO') AS "database-is-auto-increment", "is_generated" = $1 AS "database-is-generated", "is_nullable" = 'YES' AS "database-is-nullable" FROM "information_schema"."columns" AS "c" LEFT JOIN (SELECT "tc"."table_schema", "tc"."table_name", "kc"."column_name" FROM "information_schema"."table_constraints" AS "tc" INNER JOIN "information_schema"."key_column_usage" AS "kc" ON ("tc"."constraint_name" = "kc"."constraint_name") AND ("tc"."table_schema" = "kc"."table_schema") AND ("tc"."table_name" = "kc"."table_name") WHERE "tc"."constraint_type" = 'PRIMARY KEY') AS "pk" ON ("c"."table_schema" = "pk"."table_schema") AND ("c"."table_name" = "pk"."table_name") AND ("c"."column_name" = "pk"."column_name") WHERE c.table_schema !~ '^information_schema|catalog_history|pg_' AND ("c"."table_schema" IN ($2)) UNION ALL SELECT "pa"."attname" AS "name", CASE WHEN "ptn"."nspname" IN ('public', 'pg_catalog') THEN FORMAT('%s', "pt"."typname") ELSE FORMAT('"%s"."%s"', "ptn"."nspname", "pt"."typname") END AS "database-type", "pa"."attnum" - 1 AS "database-position", "pn"."nspname" AS "table-schema", "pc"."relname" AS "table-name", FALSE AS "pk?", NULL AS "field-comment", FALSE AS "database-required", NULL AS "database-default", FALSE AS "database-is-auto-increment", FALSE AS "database-is-generated", FALSE AS "database-is-nullable" FROM "pg_catalog"."pg_class" AS "pc" INNER JOIN "pg_catalog"."pg_namespace" AS "pn" ON "pn"."oid" = "pc"."relnamespace" INNER JOIN "pg_catalog"."pg_attribute" AS "pa" ON "pa"."attrelid" = "pc"."oid" INNER JOIN "pg_catalog"."pg_type" AS "pt" ON "pt"."oid" = "pa"."atttypid" INNER JOIN "pg_catalog"."pg_namespace" AS "ptn" ON "ptn"."oid" = "pt"."typnamespace" WHERE ("pc"."relkind" = 'm') AND ("pa"."attnum" >= 1) AND ("pn"."nspname" IN ($3)) ORDER BY "table-schema" ASC, "table-name" ASC, "database-position" ASC"#;

const PGJDBC_COLUMNS: &str = "SELECT * FROM (SELECT current_database() AS current_database, n.nspname,c.relname,a.attname,a.atttypid,a.attnotnull  OR (t.typtype = 'd' AND t.typnotnull) AS attnotnull,a.atttypmod,a.attlen,t.typtypmod,row_number() OVER (PARTITION BY a.attrelid ORDER BY a.attnum) AS attnum, nullif(a.attidentity, '') as attidentity,nullif(a.attgenerated, '') as attgenerated,pg_catalog.pg_get_expr(def.adbin, def.adrelid) AS adsrc,dsc.description,t.typbasetype,t.typtype  FROM pg_catalog.pg_namespace n  JOIN pg_catalog.pg_class c ON (c.relnamespace = n.oid)  JOIN pg_catalog.pg_attribute a ON (a.attrelid=c.oid)  JOIN pg_catalog.pg_type t ON (a.atttypid = t.oid)  LEFT JOIN pg_catalog.pg_attrdef def ON (a.attrelid=def.adrelid AND a.attnum = def.adnum)  LEFT JOIN pg_catalog.pg_description dsc ON (c.oid=dsc.objoid AND a.attnum = dsc.objsubid)  LEFT JOIN pg_catalog.pg_class dc ON (dc.oid=dsc.classoid AND dc.relname='pg_class')  LEFT JOIN pg_catalog.pg_namespace dn ON (dc.relnamespace=dn.oid AND dn.nspname='pg_catalog')  WHERE c.relkind in ('r','p','v','f','m') and a.attnum > 0 AND NOT a.attisdropped  AND n.nspname LIKE $1 AND c.relname LIKE $2) c WHERE true  ORDER BY nspname,c.relname,attnum";

const PGJDBC_PRIMARY_KEYS: &str = r#"SELECT        result.TABLE_CAT AS "TABLE_CAT",        result.TABLE_SCHEM AS "TABLE_SCHEM",        result.TABLE_NAME AS "TABLE_NAME",        result.COLUMN_NAME AS "COLUMN_NAME",        result.KEY_SEQ AS "KEY_SEQ",        result.PK_NAME AS "PK_NAME"FROM      (SELECT current_database() AS TABLE_CAT, n.nspname AS TABLE_SCHEM,   ct.relname AS TABLE_NAME, a.attname AS COLUMN_NAME,   (information_schema._pg_expandarray(i.indkey)).n AS KEY_SEQ, ci.relname AS PK_NAME,   information_schema._pg_expandarray(i.indkey) AS KEYS, a.attnum AS A_ATTNUM, i.indnkeyatts as KEY_COUNT FROM pg_catalog.pg_class ct   JOIN pg_catalog.pg_attribute a ON (ct.oid = a.attrelid)   JOIN pg_catalog.pg_namespace n ON (ct.relnamespace = n.oid)   JOIN pg_catalog.pg_index i ON ( a.attrelid = i.indrelid)   JOIN pg_catalog.pg_class ci ON (ci.oid = i.indexrelid) WHERE true  AND n.nspname = $1 AND ct.relname = $2 AND i.indisprimary  ) result where  result.A_ATTNUM = (result.KEYS).x AND result.KEY_SEQ <= KEY_COUNT  ORDER BY result.table_name, result.pk_name, result.key_seq"#;

const METABASE_FKS: &str = r#"SELECT "fk_ns"."nspname" AS "fk-table-schema", "fk_table"."relname" AS "fk-table-name", "fk_column"."attname" AS "fk-column-name", "pk_ns"."nspname" AS "pk-table-schema", "pk_table"."relname" AS "pk-table-name", "pk_column"."attname" AS "pk-column-name" FROM "pg_constraint" AS "c" INNER JOIN "pg_class" AS "fk_table" ON "c"."conrelid" = "fk_table"."oid" INNER JOIN "pg_namespace" AS "fk_ns" ON "c"."connamespace" = "fk_ns"."oid" INNER JOIN "pg_attribute" AS "fk_column" ON "c"."conrelid" = "fk_column"."attrelid" INNER JOIN "pg_class" AS "pk_table" ON "c"."confrelid" = "pk_table"."oid" INNER JOIN "pg_namespace" AS "pk_ns" ON "pk_table"."relnamespace" = "pk_ns"."oid" INNER JOIN "pg_attribute" AS "pk_column" ON "c"."confrelid" = "pk_column"."attrelid" WHERE fk_ns.nspname !~ '^information_schema|catalog_history|pg_' AND ("c"."contype" = 'f'::char) AND ("fk_column"."attnum" = ANY(c.conkey)) AND ("pk_column"."attnum" = ANY(c.confkey)) AND ("fk_ns"."nspname" IN ($1)) ORDER BY "fk-table-schema" ASC, "fk-table-name" ASC"#;

#[tokio::test]
async fn metabase_connects_and_syncs_the_tables_and_their_fields() {
    let (_dir, app) = app().await;
    let client = connect(&app, "Metabase").await;
    for sql in METABASE_CONNECT {
        extended(&client, sql, &[]).await;
    }
    let schemas = extended(&client, METABASE_SCHEMAS, &[]).await;
    let schemas: Vec<String> = schemas.iter().map(|r| text(r, "TABLE_SCHEM")).collect();
    assert!(schemas.iter().any(|s| s == "public"), "{schemas:?}");

    let privileges = extended(&client, METABASE_PRIVILEGES, &[]).await;
    let selectable: Vec<String> = privileges
        .iter()
        .filter(|r| r.get::<_, Option<bool>>("select") == Some(true))
        .map(|r| text(r, "table"))
        .collect();
    assert_tables(&selectable, "Metabase (table privileges)");

    let zero = 0i64;
    let tables = extended(
        &client,
        METABASE_TABLES,
        &[
            (&zero, Type::INT8),
            (&zero, Type::INT8),
            (&"^pg_", Type::VARCHAR),
            (&"information_schema", Type::VARCHAR),
            (&"public", Type::VARCHAR),
        ],
    )
    .await;
    let names: Vec<String> = tables.iter().map(|r| text(r, "name")).collect();
    assert_tables(&names, "Metabase");
    assert!(
        tables
            .iter()
            .all(|r| matches!(text(r, "type").as_str(), "TABLE" | "VIEW")),
        "Metabase syncs tables and views only"
    );

    let timezone = extended(&client, "show timezone", &[]).await;
    assert_eq!(timezone.len(), 1);
    extended(&client, METABASE_ENUMS, &[]).await;

    let columns = extended(
        &client,
        PGJDBC_COLUMNS,
        &[(&"public", Type::VARCHAR), (&"orders", Type::VARCHAR)],
    )
    .await;
    let columns: Vec<String> = columns.iter().map(|r| text(r, "attname")).collect();
    assert_order_columns(&columns, "Metabase (pgjdbc getColumns)");

    // A question on the table, as Metabase's query processor writes it.
    let count = extended(
        &client,
        "-- Metabase\nSELECT COUNT(*) AS \"count\" FROM \"public\".\"orders\"",
        &[],
    )
    .await;
    assert!(count[0].get::<_, i64>("count") > 0);
}

// Metabase's describe-fields joins information_schema.table_constraints and
// key_column_usage and reads columns' udt_name (rewritten: `pg::rewrite`), pgjdbc's
// getPrimaryKeys expands pg_index.indkey with information_schema._pg_expandarray, and
// describe-fks compares pg_attribute.attnum with ANY(c.conkey): no ShopLens table has a key,
// so both key queries answer no rows and no field is a primary key.
#[tokio::test]
async fn metabase_describes_the_fields_and_primary_keys() {
    let (_dir, app) = app().await;
    let client = connect(&app, "Metabase").await;
    let fks = extended(&client, METABASE_FKS, &[(&"public", Type::VARCHAR)]).await;
    assert!(fks.is_empty(), "no foreign keys");
    let pks = extended(
        &client,
        PGJDBC_PRIMARY_KEYS,
        &[(&"public", Type::VARCHAR), (&"orders", Type::VARCHAR)],
    )
    .await;
    assert!(pks.is_empty(), "no primary keys");
    let fields = extended(
        &client,
        METABASE_FIELDS,
        &[
            (&"ALWAYS", Type::VARCHAR),
            (&"public", Type::VARCHAR),
            (&"public", Type::VARCHAR),
        ],
    )
    .await;
    let order_fields: Vec<String> = fields
        .iter()
        .filter(|r| text(r, "table-name") == "orders")
        .map(|r| text(r, "name"))
        .collect();
    assert_order_columns(&order_fields, "Metabase");
    // Postgres type names, as Metabase maps them to its own types.
    let types: Vec<String> = fields
        .iter()
        .filter(|r| text(r, "table-name") == "orders")
        .map(|r| text(r, "database-type"))
        .collect();
    assert!(types.iter().any(|t| t == "text"), "{types:?}");
    assert!(
        types.iter().any(|t| t == "timestamptz" || t == "date"),
        "{types:?}"
    );
    assert!(
        fields
            .iter()
            .all(|r| r.get::<_, Option<bool>>("pk?") == Some(false)),
        "no field is a primary key"
    );
}

// DBeaver 25 (pgjdbc, extended protocol): connect, open the navigator, expand `public`, open
// a table's columns. Sources: dbeaver/dbeaver
// plugins/org.jkiss.dbeaver.ext.postgresql/src/org/jkiss/dbeaver/ext/postgresql/model/
// (PostgreDataSource, PostgreDatabase, PostgreSchema: `SELECT current_schema(),session_user`,
// the pg_namespace, pg_class and pg_attribute caches), captured from DBeaver 25.1.5 in
// datafusion-contrib/datafusion-postgres tests/dbeaver.rs; the column query as DBeaver
// 25.3 sends it (pg_stat_activity). DBeaver binds `c.relnamespace=?` and `c.oid=?` with
// setLong (int8); the capture had the value written in, the test binds it as DBeaver does.
const DBEAVER_CONNECT: &[&str] = &[
    "SET extra_float_digits = 3",
    "SET application_name = 'PostgreSQL JDBC Driver'",
    "SET application_name = 'DBeaver 25.1.5 - Main <shoplens>'",
    "SELECT current_schema(),session_user",
    "SELECT n.oid,n.*,d.description FROM pg_catalog.pg_namespace n LEFT OUTER JOIN pg_catalog.pg_description d ON d.objoid=n.oid AND d.objsubid=0 AND d.classoid='pg_namespace'::regclass ORDER BY nspname",
    "SELECT n.nspname = ANY(current_schemas(true)), n.nspname, t.typname FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON t.typnamespace = n.oid WHERE t.oid = 1034",
    "SHOW search_path",
    "SELECT db.oid,db.* FROM pg_catalog.pg_database db WHERE datname='shoplens'",
    "SELECT * FROM pg_catalog.pg_settings where name='standard_conforming_strings'",
    "SELECT version()",
    "SELECT * FROM pg_catalog.pg_enum WHERE 1<>1 LIMIT 1",
    "SELECT reltype FROM pg_catalog.pg_class WHERE 1<>1 LIMIT 1",
    "SELECT t.oid,t.*,c.relkind,format_type(nullif(t.typbasetype, 0), t.typtypmod) as base_type_name, d.description FROM pg_catalog.pg_type t LEFT OUTER JOIN pg_catalog.pg_type et ON et.oid=t.typelem LEFT OUTER JOIN pg_catalog.pg_class c ON c.oid=t.typrelid LEFT OUTER JOIN pg_catalog.pg_description d ON t.oid=d.objoid WHERE t.typname IS NOT NULL AND (c.relkind IS NULL OR c.relkind = 'c') AND (et.typcategory IS NULL OR et.typcategory <> 'C')",
];

const DBEAVER_TABLES: &str = "SELECT c.oid,c.*,d.description,pg_catalog.pg_get_expr(c.relpartbound, c.oid) as partition_expr,  pg_catalog.pg_get_partkeydef(c.oid) as partition_key \nFROM pg_catalog.pg_class c\nLEFT OUTER JOIN pg_catalog.pg_description d ON d.objoid=c.oid AND d.objsubid=0 AND d.classoid='pg_class'::regclass\nWHERE c.relnamespace=$1 AND c.relkind not in ('i','I','c')";

const DBEAVER_COLUMNS: &str = "SELECT c.relname,a.*,pg_catalog.pg_get_expr(ad.adbin, ad.adrelid, true) as def_value,dsc.description,dep.objid\nFROM pg_catalog.pg_attribute a\nINNER JOIN pg_catalog.pg_class c ON (a.attrelid=c.oid)\nLEFT OUTER JOIN pg_catalog.pg_attrdef ad ON (a.attrelid=ad.adrelid AND a.attnum = ad.adnum)\nLEFT OUTER JOIN pg_catalog.pg_description dsc ON (c.oid=dsc.objoid AND a.attnum = dsc.objsubid)\nLEFT OUTER JOIN pg_depend dep on dep.refobjid = a.attrelid AND dep.deptype = 'i' and dep.refobjsubid = a.attnum and dep.classid = dep.refclassid\nWHERE NOT a.attisdropped AND c.relkind not in ('i','I','c') AND c.oid=$1\nORDER BY a.attnum";

/// An `oid` column, whatever integer type the endpoint gives it.
fn oid(row: &tokio_postgres::Row, column: &str) -> i64 {
    if let Ok(v) = row.try_get::<_, u32>(column) {
        return i64::from(v);
    }
    if let Ok(v) = row.try_get::<_, i32>(column) {
        return i64::from(v);
    }
    row.try_get::<_, i64>(column)
        .unwrap_or_else(|e| panic!("column {column}: {e:?}"))
}

#[tokio::test]
async fn dbeaver_connects_and_browses_the_tables_and_their_columns() {
    let (_dir, app) = app().await;
    let client = connect(&app, "PostgreSQL JDBC Driver").await;
    let mut namespaces = Vec::new();
    for sql in DBEAVER_CONNECT {
        let rows = extended(&client, sql, &[]).await;
        if sql.contains("FROM pg_catalog.pg_namespace n LEFT OUTER JOIN") {
            namespaces = rows;
        }
    }
    let public = namespaces
        .iter()
        .find(|r| text(r, "nspname") == "public")
        .map(|r| oid(r, "oid"))
        .expect("DBeaver sees the public schema");

    let tables = extended(&client, DBEAVER_TABLES, &[(&public, Type::INT8)]).await;
    let names: Vec<String> = tables.iter().map(|r| text(r, "relname")).collect();
    assert_tables(&names, "DBeaver");
    let orders = tables
        .iter()
        .find(|r| text(r, "relname") == "orders")
        .map(|r| oid(r, "oid"))
        .expect("orders");

    let columns = extended(&client, DBEAVER_COLUMNS, &[(&orders, Type::INT8)]).await;
    let columns: Vec<String> = columns.iter().map(|r| text(r, "attname")).collect();
    assert_order_columns(&columns, "DBeaver");
}

// Grafana's PostgreSQL data source (Go, pgx v5). Sources: grafana/grafana
// pkg/tsdb/grafana-postgresql-datasource/pgx/handler_checkhealth.go ("Save & test" pings the
// pool: pgx's Ping sends the simple query `-- ping`), and
// public/app/plugins/datasource/grafana-postgresql-datasource/postgresMetaQuery.ts
// (`getVersion`, `getTimescaleDBVersion`, `showTables()`, `getSchema('orders')`), which the
// backend runs with pgx (extended protocol).
const GRAFANA_SEARCH_PATH: &str = r#"
          quote_ident(table_schema) IN (
          SELECT
            CASE WHEN trim(s[i]) = '"$user"' THEN user ELSE trim(s[i]) END
          FROM
            generate_series(
              array_lower(string_to_array(current_setting('search_path'),','),1),
              array_upper(string_to_array(current_setting('search_path'),','),1)
            ) as i,
            string_to_array(current_setting('search_path'),',') s
          )"#;

fn grafana_show_tables() -> String {
    format!(
        r#"SELECT
    CASE WHEN {c}
      THEN quote_ident(table_name)
      ELSE quote_ident(table_schema) || '.' || quote_ident(table_name)
    END AS "table"
    FROM information_schema.tables
    WHERE quote_ident(table_schema) NOT IN ('information_schema',
                             'pg_catalog',
                             '_timescaledb_cache',
                             '_timescaledb_catalog',
                             '_timescaledb_internal',
                             '_timescaledb_config',
                             'timescaledb_information',
                             'timescaledb_experimental')
    ORDER BY CASE WHEN {c} THEN 0 ELSE 1 END, 1"#,
        c = GRAFANA_SEARCH_PATH
    )
}

fn grafana_get_schema(table: &str) -> String {
    let t = format!("'{}'", table.replace('\'', "''"));
    format!(
        r#"SELECT quote_ident(column_name) AS "column", data_type AS "type"
    FROM information_schema.columns
    WHERE
      CASE WHEN array_length(parse_ident({t}),1) = 2
        THEN quote_ident(table_schema) = (parse_ident({t}))[1]
          AND quote_ident(table_name) = (parse_ident({t}))[2]
        ELSE quote_ident(table_name) = {t}
          AND {c}
      END"#,
        c = GRAFANA_SEARCH_PATH
    )
}

#[tokio::test]
async fn grafana_tests_the_data_source_and_lists_tables_and_columns() {
    let (_dir, app) = app().await;
    let client = connect(&app, "").await;
    simple(&client, "-- ping").await;
    let version = extended(
        &client,
        "SELECT current_setting('server_version_num')::int/100 as version",
        &[],
    )
    .await;
    // Grafana reads the number whatever its integer width.
    let version = version[0]
        .try_get::<_, i32>("version")
        .map(i64::from)
        .or_else(|_| version[0].try_get::<_, i64>("version"))
        .expect("a version number");
    assert_eq!(version, 1600);
    let timescale = extended(
        &client,
        "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'",
        &[],
    )
    .await;
    assert!(timescale.is_empty(), "no TimescaleDB here");

    // As on real Postgres (search_path `"$user", public`): the tables of a schema on the
    // search path are listed by their bare names.
    let tables = extended(&client, &grafana_show_tables(), &[]).await;
    let tables: Vec<String> = tables.iter().map(|r| text(r, "table")).collect();
    assert_tables(&tables, "Grafana");
    let orders = tables.iter().find(|t| *t == "orders").expect("orders");

    let columns = extended(&client, &grafana_get_schema(orders), &[]).await;
    let columns: Vec<String> = columns.iter().map(|r| text(r, "column")).collect();
    assert_order_columns(&columns, "Grafana");
}

// Superset (SQLAlchemy 1.4's postgresql dialect over psycopg2: the simple protocol, values
// interpolated by the client; psycopg2 opens a transaction before the first statement and
// the pool rolls it back). Sources: sqlalchemy/sqlalchemy
// lib/sqlalchemy/dialects/postgresql/base.py (`_get_server_version_info`,
// `_get_default_schema_name`, `get_isolation_level`, `_set_backslash_escapes`,
// `get_schema_names`, `get_table_names`, `get_table_oid`, `get_columns`, `_load_domains`,
// `_load_enums`, `get_pk_constraint`) and psycopg/psycopg2 lib/extras.py
// (`HstoreAdapter.get_oids`); texts as a Postgres server logged them for SQLAlchemy 1.4.
const SQLALCHEMY_CONNECT: &[&str] = &[
    "BEGIN",
    "select pg_catalog.version()",
    "select current_schema()",
    "show transaction isolation level",
    "show standard_conforming_strings",
    "ROLLBACK",
    "BEGIN",
    "SELECT t.oid, typarray\nFROM pg_type t JOIN pg_namespace ns\n    ON typnamespace = ns.oid\nWHERE typname = 'hstore';\n",
];

const SQLALCHEMY_SCHEMAS: &str = "\n            SELECT nspname\n            FROM pg_namespace\n            WHERE nspname NOT LIKE 'pg_%'\n            ORDER BY nspname\n        ";

const SQLALCHEMY_TABLES: &str = "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind in ('r', 'p')";

// SQLAlchemy 2.0 (`get_table_names` without a schema), as psycopg2 renders it.
const SQLALCHEMY2_TABLES: &str = "SELECT pg_catalog.pg_class.relname FROM pg_catalog.pg_class JOIN pg_catalog.pg_namespace ON pg_catalog.pg_namespace.oid = pg_catalog.pg_class.relnamespace WHERE pg_catalog.pg_class.relkind = ANY (ARRAY['r', 'p']) AND pg_catalog.pg_class.relpersistence != 't' AND pg_catalog.pg_table_is_visible(pg_catalog.pg_class.oid) AND pg_catalog.pg_namespace.nspname != 'pg_catalog'";

const SQLALCHEMY_TABLE_OID: &str = "\nSELECT c.oid\nFROM pg_catalog.pg_class c\nLEFT JOIN pg_catalog.pg_namespace n \nON n.oid = c.relnamespace\nWHERE (n.nspname = 'public')\nAND c.relname = 'orders' AND c.relkind in\n('r', 'v', 'm', 'f', 'p')\n";

fn sqlalchemy_columns(table_oid: &str) -> String {
    format!(
        "\nSELECT \n  a.attname,\n  pg_catalog.format_type(a.atttypid, a.atttypmod),\n  (\n    SELECT pg_catalog.pg_get_expr(d.adbin, d.adrelid)\n    FROM pg_catalog.pg_attrdef d\n    WHERE d.adrelid = a.attrelid AND d.adnum = a.attnum\n    AND a.atthasdef\n  ) AS DEFAULT,\n  a.attnotnull,\n  a.attrelid as table_oid,\n  pgd.description as comment,\n  a.attgenerated as generated,\n  (\n    SELECT json_build_object(\n        'always', a.attidentity = 'a',\n        'start', s.seqstart,\n        'increment', s.seqincrement,\n        'minvalue', s.seqmin,\n        'maxvalue', s.seqmax,\n        'cache', s.seqcache,\n        'cycle', s.seqcycle)\n    FROM pg_catalog.pg_sequence s\n    JOIN pg_catalog.pg_class c on s.seqrelid = c.\"oid\"\n    WHERE c.relkind = 'S'\n    AND a.attidentity != ''\n    AND s.seqrelid = pg_catalog.pg_get_serial_sequence(\n        a.attrelid::regclass::text, a.attname\n    )::regclass::oid\n        ) as identity_options\n    FROM pg_catalog.pg_attribute a\n    LEFT JOIN pg_catalog.pg_description pgd ON (\n        pgd.objoid = a.attrelid AND pgd.objsubid = a.attnum)\n    WHERE a.attrelid = '{table_oid}'\n    AND a.attnum > 0 AND NOT a.attisdropped\n    ORDER BY a.attnum\n"
    )
}

const SQLALCHEMY_AFTER_COLUMNS: &[&str] = &[
    "\nSELECT \n  t.typname as \"name\",\n  pg_catalog.format_type(t.typbasetype, t.typtypmod) as \"attype\",\n  not t.typnotnull as \"nullable\",\n  t.typdefault as \"default\",\n  pg_catalog.pg_type_is_visible(t.oid) as \"visible\",\n  n.nspname as \"schema\"\nFROM pg_catalog.pg_type t\nLEFT JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace\nWHERE t.typtype = 'd'\n",
    "\nSELECT \nt.typname as \"name\",\n-- no enum defaults in 8.4 at least\n-- t.typdefault as \"default\",\npg_catalog.pg_type_is_visible(t.oid) as \"visible\",\nn.nspname as \"schema\",\ne.enumlabel as \"label\"\nFROM pg_catalog.pg_type t\nLEFT JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace\nLEFT JOIN pg_catalog.pg_enum e ON t.oid = e.enumtypid\nWHERE t.typtype = 'e'\nORDER BY \"schema\", \"name\", e.oid\n",
];

fn sqlalchemy_primary_key(table_oid: &str) -> String {
    format!(
        "\nSELECT a.attname\nFROM pg_attribute a JOIN (\nSELECT unnest(ix.indkey) attnum,\ngenerate_subscripts(ix.indkey, 1) ord\nFROM pg_index ix\nWHERE ix.indrelid = '{table_oid}' AND ix.indisprimary\n) k ON a.attnum=k.attnum\nWHERE a.attrelid = '{table_oid}' \nORDER BY k.ord\n"
    )
}

#[tokio::test]
async fn superset_sqlalchemy_connects_and_inspects_the_tables_and_their_columns() {
    let (_dir, app) = app().await;
    let client = connect(&app, "").await;
    simple(&client, "ROLLBACK").await;
    for sql in SQLALCHEMY_CONNECT {
        let rows = simple(&client, sql).await;
        if sql.contains("version()") {
            let version = rows[0][0].clone().unwrap_or_default();
            assert!(version.starts_with("PostgreSQL 16"), "{version}");
        }
    }
    let schemas = simple(&client, SQLALCHEMY_SCHEMAS).await;
    assert!(column(&schemas, 0).contains(&"public".to_owned()));
    assert_tables(
        &column(&simple(&client, SQLALCHEMY_TABLES).await, 0),
        "SQLAlchemy 1.4",
    );
    assert_tables(
        &column(&simple(&client, SQLALCHEMY2_TABLES).await, 0),
        "SQLAlchemy 2.0",
    );
    let table_oid = simple(&client, SQLALCHEMY_TABLE_OID).await;
    let table_oid = table_oid
        .first()
        .and_then(|r| r[0].clone())
        .expect("SQLAlchemy finds the table's oid");
    let columns = simple(&client, &sqlalchemy_columns(&table_oid)).await;
    assert_order_columns(&column(&columns, 0), "SQLAlchemy");
    for sql in SQLALCHEMY_AFTER_COLUMNS {
        simple(&client, sql).await;
    }
    simple(&client, "ROLLBACK").await;
}

// SQLAlchemy's primary-key reflection unnests pg_index.indkey beside
// generate_subscripts(ix.indkey, 1) (rewritten: `pg::rewrite`); no table has one.
#[tokio::test]
async fn superset_sqlalchemy_reflects_the_primary_key() {
    let (_dir, app) = app().await;
    let client = connect(&app, "").await;
    let table_oid = simple(&client, SQLALCHEMY_TABLE_OID).await;
    let table_oid = table_oid
        .first()
        .and_then(|r| r[0].clone())
        .expect("SQLAlchemy finds the table's oid");
    let keys = simple(&client, &sqlalchemy_primary_key(&table_oid)).await;
    assert!(keys.is_empty(), "no primary key: {keys:?}");
}

// Tableau's PostgreSQL connector (psqlODBC, the simple protocol, UseDeclareFetch: results are
// read through a cursor named after the statement handle). Sources:
// postgresql-interfaces/psqlodbc connection.c (`set DateStyle to 'ISO'`,
// `set extra_float_digits to 2`, `show transaction_isolation`, the `lo` type probe),
// info.c (`SQLTables`' pg_class listing) and statement.c / results.c
// (`declare "SQL_CUR..." cursor with hold for ...`, `fetch n in "SQL_CUR..."`,
// `close "SQL_CUR..."`).
const TABLEAU_CONNECT: &[&str] = &[
    "set DateStyle to 'ISO'",
    "set extra_float_digits to 2",
    "show transaction_isolation",
    "select oid, typbasetype from pg_type where typname = 'lo'",
];

const TABLEAU_TABLES: &str = "select relname, nspname, relkind from pg_catalog.pg_class c, pg_catalog.pg_namespace n where relkind in ('r', 'v', 'm', 'f', 'p') and nspname not in ('pg_catalog', 'information_schema', 'pg_toast', 'pg_temp_1') and n.oid = relnamespace order by nspname, relname";

#[tokio::test]
async fn tableau_lists_tables_and_reads_through_cursors() {
    let (_dir, app) = app().await;
    let client = connect(&app, "").await;
    for sql in TABLEAU_CONNECT {
        simple(&client, sql).await;
    }
    let tables = simple(&client, TABLEAU_TABLES).await;
    assert_tables(&column(&tables, 0), "Tableau");

    // The columns of a table: Tableau reads the row description of an empty answer.
    let cursor = "SQL_CUR0x7f8a5c0123a0";
    simple(&client, "BEGIN").await;
    let empty = client
        .simple_query(&format!(
            "declare \"{cursor}\" cursor with hold for SELECT * FROM \"public\".\"orders\" WHERE 1=0;fetch 100 in \"{cursor}\""
        ))
        .await
        .unwrap_or_else(|e| panic!("refused: declare/fetch {e:?}"));
    let columns: Vec<String> = empty
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::RowDescription(columns) => {
                Some(columns.iter().map(|c| c.name().to_owned()).collect())
            }
            _ => None,
        })
        .expect("the fetch describes its columns");
    assert_order_columns(&columns, "Tableau");
    simple(&client, &format!("close \"{cursor}\"")).await;
    simple(&client, "COMMIT").await;

    // An extract: pages of rows until the cursor is drained.
    let cursor = "SQL_CUR0x7f8a5c0456b0";
    simple(&client, "BEGIN").await;
    simple(
        &client,
        &format!(
            "declare \"{cursor}\" cursor with hold for SELECT \"orders\".\"order_id\" AS \"order_id\", \"orders\".\"total\" AS \"total\" FROM \"public\".\"orders\" \"orders\""
        ),
    )
    .await;
    let (mut pages, mut rows) = (0, 0);
    loop {
        let page = simple(&client, &format!("fetch 100 in \"{cursor}\"")).await;
        if page.is_empty() {
            break;
        }
        pages += 1;
        rows += page.len();
        assert!(pages < 10_000, "the cursor never ends");
    }
    let count = simple(&client, "SELECT count(*) FROM orders").await;
    assert_eq!(Some(rows.to_string()), count[0][0], "{pages} pages");
    simple(&client, &format!("close \"{cursor}\"")).await;
    simple(&client, "COMMIT").await;
}

// Power BI Desktop's PostgreSQL connector is built on Npgsql, whose first connection to a
// database loads its types in one simple-protocol batch (version, pg_type with pg_range's
// subtypes and multiranges, composite fields, pg_enum labels). Source: npgsql/npgsql
// src/Npgsql/PostgresDatabaseInfo.cs (`LoadBackendTypes`, `GenerateLoadTypesQuery` with
// ranges and multiranges for a server >= 14, `GenerateLoadCompositeTypesQuery`,
// `GenerateLoadEnumFieldsQuery` with enumsortorder; table composites not loaded, the
// default).
const NPGSQL_LOAD_TYPES: &str = "SELECT version();

SELECT ns.nspname, t.oid, t.typname, t.typtype, t.typnotnull, t.elemtypoid
FROM (
    -- Arrays have typtype=b - this subquery identifies them by their typreceive and converts their typtype to a
    -- We first do this for the type (innerest-most subquery), and then for its element type
    -- This also returns the array element, range subtype and domain base type as elemtypoid
    SELECT
        typ.oid, typ.typnamespace, typ.typname, typ.typtype, typ.typrelid, typ.typnotnull, typ.relkind,
        elemtyp.oid AS elemtypoid, elemtyp.typname AS elemtypname, elemcls.relkind AS elemrelkind,
        CASE WHEN elemproc.proname='array_recv' THEN 'a' ELSE elemtyp.typtype END AS elemtyptype
    FROM (
        SELECT typ.oid, typnamespace, typname, typrelid, typnotnull, relkind, typelem AS elemoid,
            CASE WHEN proc.proname='array_recv' THEN 'a' ELSE typ.typtype END AS typtype,
            CASE
                WHEN proc.proname='array_recv' THEN typ.typelem
                WHEN typ.typtype='r' THEN rngsubtype
                WHEN typ.typtype='m' THEN (SELECT rngtypid FROM pg_range WHERE rngmultitypid = typ.oid)
                WHEN typ.typtype='d' THEN typ.typbasetype
            END AS elemtypoid
        FROM pg_type AS typ
        LEFT JOIN pg_class AS cls ON (cls.oid = typ.typrelid)
        LEFT JOIN pg_proc AS proc ON proc.oid = typ.typreceive
        LEFT JOIN pg_range ON (pg_range.rngtypid = typ.oid)
    ) AS typ
    LEFT JOIN pg_type AS elemtyp ON elemtyp.oid = elemtypoid
    LEFT JOIN pg_class AS elemcls ON (elemcls.oid = elemtyp.typrelid)
    LEFT JOIN pg_proc AS elemproc ON elemproc.oid = elemtyp.typreceive
) AS t
JOIN pg_namespace AS ns ON (ns.oid = typnamespace)
WHERE
    typtype IN ('b', 'r', 'm', 'e', 'd') OR -- Base, range, multirange, enum, domain
    (typtype = 'c' AND relkind='c') OR -- User-defined free-standing composites (not table composites) by default
    (typtype = 'p' AND typname IN ('record', 'void')) OR -- Some special supported pseudo-types
    (typtype = 'a' AND (  -- Array of...
        elemtyptype IN ('b', 'r', 'm', 'e', 'd') OR -- Array of base, range, multirange, enum, domain
        (elemtyptype = 'p' AND elemtypname IN ('record', 'void')) OR -- Arrays of special supported pseudo-types
        (elemtyptype = 'c' AND elemrelkind='c') -- Array of user-defined free-standing composites (not table composites) by default
    ))
ORDER BY CASE
       WHEN typtype IN ('b', 'e', 'p') THEN 0           -- First base types, enums, pseudo-types
       WHEN typtype = 'r' THEN 1                        -- Ranges after
       WHEN typtype = 'm' THEN 2                        -- Multiranges after
       WHEN typtype = 'c' THEN 3                        -- Composites after
       WHEN typtype = 'd' AND elemtyptype <> 'a' THEN 4 -- Domains over non-arrays after
       WHEN typtype = 'a' THEN 5                        -- Arrays after
       WHEN typtype = 'd' AND elemtyptype = 'a' THEN 6  -- Domains over arrays last
END;

-- Load field definitions for (free-standing) composite types
SELECT typ.oid, att.attname, att.atttypid
FROM pg_type AS typ
JOIN pg_namespace AS ns ON (ns.oid = typ.typnamespace)
JOIN pg_class AS cls ON (cls.oid = typ.typrelid)
JOIN pg_attribute AS att ON (att.attrelid = typ.typrelid)
WHERE
  (typ.typtype = 'c' AND cls.relkind='c') AND
  attnum > 0 AND     -- Don't load system attributes
  NOT attisdropped
ORDER BY typ.oid, att.attnum;

-- Load enum fields
SELECT pg_type.oid, enumlabel
FROM pg_enum
JOIN pg_type ON pg_type.oid=enumtypid
ORDER BY oid, enumsortorder;
";

// Npgsql's correlated scalar subquery over pg_range and its pg_proc joins on regproc
// columns are rewritten (`pg::rewrite`).
#[tokio::test]
async fn power_bi_npgsql_loads_its_types() {
    let (_dir, app) = app().await;
    let client = connect(&app, "PowerBI").await;
    let messages = client
        .simple_query(NPGSQL_LOAD_TYPES)
        .await
        .unwrap_or_else(|e| panic!("Npgsql's type loading is refused: {e:?}"));
    // Four answers, as Npgsql reads them: the version, the types, composite fields, enum
    // labels (each a row description, its rows, a command complete).
    let completes = messages
        .iter()
        .filter(|m| matches!(m, SimpleQueryMessage::CommandComplete(_)))
        .count();
    assert_eq!(completes, 4, "{messages:?}");
    let mut answer = 0;
    let mut types = Vec::new();
    for m in &messages {
        match m {
            SimpleQueryMessage::CommandComplete(_) => answer += 1,
            SimpleQueryMessage::Row(row) if answer == 0 => {
                assert!(row.get(0).unwrap_or_default().starts_with("PostgreSQL 16"));
            }
            SimpleQueryMessage::Row(row) if answer == 1 => {
                // Npgsql parses oid and typtype; both must be there and well formed.
                let oid = row.get(1).expect("an oid");
                assert!(oid.parse::<u32>().is_ok_and(|o| o > 0), "oid {oid}");
                assert_eq!(row.get(3).map(str::len), Some(1), "typtype");
                types.push(row.get(2).unwrap_or_default().to_owned());
            }
            _ => {}
        }
    }
    for t in [
        "int4",
        "int8",
        "text",
        "numeric",
        "timestamp",
        "date",
        "bool",
    ] {
        assert!(types.iter().any(|n| n == t), "Npgsql misses type {t}");
    }
}

/// Power BI's navigator reads the tables and a table's columns from information_schema
/// (through Npgsql). These two texts are not captured from Power BI: they are the
/// information_schema listing an ADO.NET navigator reads.
#[tokio::test]
async fn power_bi_browses_the_tables_and_their_columns() {
    let (_dir, app) = app().await;
    let client = connect(&app, "PowerBI").await;
    let tables = simple(
        &client,
        "select TABLE_SCHEMA, TABLE_NAME, TABLE_TYPE from INFORMATION_SCHEMA.tables where TABLE_SCHEMA not in ('information_schema', 'pg_catalog') order by TABLE_SCHEMA, TABLE_NAME",
    )
    .await;
    assert_tables(&column(&tables, 1), "Power BI");
    let columns = simple(
        &client,
        "select COLUMN_NAME, ORDINAL_POSITION, IS_NULLABLE, DATA_TYPE from INFORMATION_SCHEMA.columns where TABLE_SCHEMA = 'public' and TABLE_NAME = 'orders' order by ORDINAL_POSITION",
    )
    .await;
    assert_order_columns(&column(&columns, 0), "Power BI");
}

/// Browsing never shows an analyst personal data: what a tool reads through a cursor is
/// masked for analysts as everywhere else.
#[tokio::test]
async fn a_tools_cursor_reads_personal_data_masked_for_analysts() {
    let (_dir, app) = app().await;
    let client = connect(&app, "").await;
    simple(&client, "BEGIN").await;
    simple(
        &client,
        "declare \"SQL_CUR1\" cursor with hold for SELECT email FROM customers",
    )
    .await;
    let rows = simple(&client, "fetch 100 in \"SQL_CUR1\"").await;
    assert!(!rows.is_empty());
    assert!(
        column(&rows, 0).iter().all(|e| !e.contains('@')),
        "an analyst read an email address through a cursor: {rows:?}"
    );
    simple(&client, "close \"SQL_CUR1\"").await;
    simple(&client, "COMMIT").await;
}

/// A correlated scalar subquery over the shop's tables answers over Postgres as over HTTP
/// (the borrowed compatibility parser would have made it NULL).
#[tokio::test]
async fn a_correlated_subquery_over_the_shops_tables_is_answered_not_nulled() {
    let (_dir, app) = app().await;
    let client = connect(&app, "").await;
    let rows = simple(
        &client,
        "SELECT c.customer_id, (SELECT count(*) FROM orders o WHERE o.customer_id = c.customer_id) AS n \
         FROM customers c ORDER BY n DESC, c.customer_id LIMIT 1",
    )
    .await;
    let n: i64 = rows[0][1]
        .as_deref()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a count, not NULL: {rows:?}"));
    assert!(n > 0, "the busiest customer has orders: {rows:?}");
}
