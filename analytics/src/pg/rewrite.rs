//! Postgres spellings BI tools use in their schema browsing that DataFusion plans
//! differently, rewritten to what means the same here.
//!
//! Before the borrowed compatibility parser sees the text ([`before_compatibility`]):
//! - Grafana's "is this schema on the search path" subquery (`string_to_array` over
//!   `current_setting('search_path')`, indexed by `generate_series`) is the list of the
//!   search path's schemas.
//! - A scalar subquery in a select list over no catalog table is kept from the parser's
//!   rule that turns correlated ones into NULL.
//!
//! After its own rules, on every statement ([`postgres_spellings`]):
//! - `generate_subscripts(a, 1)` (a set-returning function in the select list, expanding in
//!   step with `unnest(a)` beside it) becomes `unnest(range(1, cardinality(a) + 1))`.
//! - `_pg_expandarray(a)` (pgjdbc's primary keys: a set of `(x, n)` records) becomes
//!   `unnest(_pg_expandarray(a))` over the list the `_pg_expandarray` function returns.
//! - `(record).field` becomes `get_field(record, 'field')`.
//! - `information_schema.table_constraints` and `key_column_usage` (Metabase's primary
//!   keys), which DataFusion's `information_schema` does not have, become empty tables of
//!   their Postgres columns: no ShopLens table has a constraint.
//! - `information_schema.columns` gains the Postgres columns it lacks (`udt_name`, ...).
//! - A correlated scalar subquery of a plain column, `(SELECT c FROM t WHERE t.k = o.k)`,
//!   takes `max(c)`, which DataFusion wants to know it yields at most one row.
//! - `pg_proc.oid = pg_type.typreceive` (and the other `regproc` columns) compares the
//!   function's name, which is what the borrowed catalog stores there.
//! - `col_description(table, column)` is NULL: no ShopLens column has a comment.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    AccessExpr, BinaryOperator, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr,
    ObjectName, Query, SelectItem, SetExpr, Statement, TableFactor, Value, VisitMut, VisitorMut,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

/// The empty stand-ins of `information_schema` views DataFusion lacks: name and columns.
const EMPTY_VIEWS: &[(&str, &str)] = &[
    (
        "table_constraints",
        "constraint_catalog, constraint_schema, constraint_name, table_catalog, \
         table_schema, table_name, constraint_type, is_deferrable, initially_deferred, \
         enforced, nulls_distinct",
    ),
    (
        "key_column_usage",
        "constraint_catalog, constraint_schema, constraint_name, table_catalog, \
         table_schema, table_name, column_name, ordinal_position, \
         position_in_unique_constraint",
    ),
];

/// Rewrites `statement` in place (see the module's list).
pub fn postgres_spellings(statement: &mut Statement) {
    let _ = statement.visit(&mut Spellings);
}

/// The SQL text as the borrowed compatibility parser must see it, or as it is (unparsed)
/// when nothing applies:
/// - Grafana's search-path test rewritten ([`in_search_path`]); the parser would replace
///   it with one that is always false.
/// - A scalar subquery in a select list that reads no catalog table is parenthesized once
///   more: the parser replaces every correlated one with NULL (meant for tools' catalog
///   queries DataFusion cannot plan), which over the shop's tables would be a wrong answer
///   where the HTTP endpoint gives the right one.
pub fn before_compatibility(sql: &str) -> std::borrow::Cow<'_, str> {
    let lower = sql.to_ascii_lowercase();
    let search_path =
        lower.contains("current_setting('search_path')") && lower.contains("string_to_array");
    let subquery = lower
        .match_indices("select")
        .any(|(at, _)| lower[..at].trim_end().ends_with('('));
    if !search_path && !subquery {
        return sql.into();
    }
    let Ok(mut statements) = Parser::parse_sql(&PostgreSqlDialect {}, sql) else {
        return sql.into();
    };
    let mut pass = BeforeCompatibility { changed: false };
    for statement in &mut statements {
        let _ = statement.visit(&mut pass);
    }
    if !pass.changed {
        return sql.into();
    }
    statements
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(";\n")
        .into()
}

struct BeforeCompatibility {
    changed: bool,
}

impl VisitorMut for BeforeCompatibility {
    type Break = ();

    fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        if let SetExpr::Select(select) = query.body.as_mut() {
            for item in &mut select.projection {
                let (SelectItem::UnnamedExpr(expr) | SelectItem::ExprWithAlias { expr, .. }) = item
                else {
                    continue;
                };
                if let Expr::Subquery(subquery) = expr
                    && !reads_catalog(subquery)
                {
                    *expr = Expr::Nested(Box::new(expr.clone()));
                    self.changed = true;
                }
            }
        }
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        if let Some(in_path) = in_search_path(expr) {
            *expr = in_path;
            self.changed = true;
        }
        ControlFlow::Continue(())
    }
}

/// Whether `query` reads a `pg_catalog` or `information_schema` table (or a `pg_*` one,
/// which the parser resolves in `pg_catalog`).
fn reads_catalog(query: &Query) -> bool {
    struct Catalog(bool);
    impl datafusion::sql::sqlparser::ast::Visitor for Catalog {
        type Break = ();
        fn pre_visit_relation(&mut self, name: &ObjectName) -> ControlFlow<()> {
            let name = name.to_string().to_ascii_lowercase();
            let table = name
                .rsplit('.')
                .next()
                .unwrap_or_default()
                .trim_matches('"');
            if name.contains("pg_catalog")
                || name.contains("information_schema")
                || table.starts_with("pg_")
            {
                self.0 = true;
            }
            ControlFlow::Continue(())
        }
    }
    let mut catalog = Catalog(false);
    let _ = datafusion::sql::sqlparser::ast::Visit::visit(query, &mut catalog);
    catalog.0
}

struct Spellings;

impl VisitorMut for Spellings {
    type Break = ();

    fn post_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
        if let TableFactor::Table { name, alias, .. } = factor
            && let Some(view) = stand_in(name)
        {
            let alias = alias
                .as_ref()
                .map_or_else(|| last_ident(name), |a| a.name.to_string());
            if let Some(derived) = derived_table(&view, &alias) {
                *factor = derived;
            }
        }
        ControlFlow::Continue(())
    }

    // After the children: a replacement is not visited again.
    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        if let Some(access) = field_access(expr) {
            *expr = access;
            return ControlFlow::Continue(());
        }
        if let Expr::Subquery(query) = expr {
            at_most_one_row(query);
            return ControlFlow::Continue(());
        }
        if let Expr::BinaryOp {
            left,
            op: BinaryOperator::Eq,
            right,
        } = expr
        {
            proc_by_name(left, right);
            proc_by_name(right, left);
            return ControlFlow::Continue(());
        }
        let Expr::Function(function) = expr else {
            return ControlFlow::Continue(());
        };
        let name = last_ident(&function.name).to_ascii_lowercase();
        let args = plain_args(&function.args);
        let replacement = match (name.as_str(), args.as_slice()) {
            ("generate_subscripts", [array, dim]) if is_one(dim) => parse_expr(&format!(
                "unnest(range(1, CAST(cardinality({array}) AS BIGINT) + 1))"
            )),
            // No ShopLens column has a comment; its arguments (often a `regclass` cast of
            // a built name) need not run.
            ("col_description", [_, _]) => parse_expr("CAST(NULL AS VARCHAR)"),
            ("_pg_expandarray", [array]) => {
                parse_expr(&format!("unnest(_pg_expandarray({array}))"))
            }
            _ => None,
        };
        if let Some(replacement) = replacement {
            *expr = Expr::Nested(Box::new(replacement));
        }
        ControlFlow::Continue(())
    }
}

/// `(record).field` (a field of a composite value, as Postgres writes it) as
/// `get_field(record, 'field')`, which DataFusion plans for any struct expression.
fn field_access(expr: &Expr) -> Option<Expr> {
    let Expr::CompoundFieldAccess { root, access_chain } = expr else {
        return None;
    };
    let mut sql = root.to_string();
    for access in access_chain {
        match access {
            AccessExpr::Dot(Expr::Identifier(field)) => {
                sql = format!("get_field({sql}, '{}')", field.value.replace('\'', "''"));
            }
            _ => return None,
        }
    }
    parse_expr(&sql)
}

/// `information_schema.columns` with the Postgres columns DataFusion's lacks (the type's
/// `udt_name`, `is_identity`, `is_generated`, ...), which Metabase reads.
const COLUMNS: &str = "SELECT *, 'pg_catalog' AS udt_schema, \
     CASE \
       WHEN data_type IN ('Utf8', 'LargeUtf8', 'Utf8View') THEN 'text' \
       WHEN data_type IN ('Int64', 'UInt32') THEN 'int8' \
       WHEN data_type IN ('Int32', 'UInt16') THEN 'int4' \
       WHEN data_type IN ('Int16', 'Int8', 'UInt8') THEN 'int2' \
       WHEN data_type = 'Boolean' THEN 'bool' \
       WHEN data_type IN ('Float64') THEN 'float8' \
       WHEN data_type IN ('Float32', 'Float16') THEN 'float4' \
       WHEN data_type = 'Date32' OR data_type = 'Date64' THEN 'date' \
       WHEN data_type LIKE 'Timestamp%UTC%' OR data_type LIKE 'Timestamp%+00:00%' THEN 'timestamptz' \
       WHEN data_type LIKE 'Timestamp%' THEN 'timestamp' \
       WHEN data_type LIKE 'Decimal%' OR data_type = 'UInt64' THEN 'numeric' \
       WHEN data_type LIKE 'List%' THEN '_text' \
       ELSE 'text' END AS udt_name, \
     'NO' AS is_identity, CAST(NULL AS VARCHAR) AS identity_generation, \
     'NEVER' AS is_generated, CAST(NULL AS VARCHAR) AS generation_expression, \
     'YES' AS is_updatable \
     FROM information_schema.columns";

/// A scalar subquery that picks a plain column, `(SELECT c FROM ... WHERE ...)`, as
/// `(SELECT max(c) ...)`: Postgres checks at run time that it yields at most one row,
/// DataFusion wants that shown by an aggregate when it is correlated (Npgsql's type loading
/// looks up a multirange's range so). Same answer whenever Postgres gives one.
fn at_most_one_row(query: &mut Query) {
    let SetExpr::Select(select) = query.body.as_mut() else {
        return;
    };
    let plain_group_by =
        matches!(&select.group_by, GroupByExpr::Expressions(e, m) if e.is_empty() && m.is_empty());
    if select.projection.len() != 1
        || select.distinct.is_some()
        || select.having.is_some()
        || !plain_group_by
        || query.limit_clause.is_some()
    {
        return;
    }
    let column = match &mut select.projection[0] {
        SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => e,
        _ => return,
    };
    if matches!(column, Expr::Identifier(_) | Expr::CompoundIdentifier(_))
        && let Some(max) = parse_expr(&format!("max({column})"))
    {
        *column = max;
    }
}

/// `x IN (SELECT ... FROM generate_series(...) AS i, string_to_array(current_setting(
/// 'search_path'), ',') s)` (Grafana's test for "is this schema on the search path") as
/// `x IN ('public', ...)`: the schemas of the search path (`"$user"` names no schema here).
fn in_search_path(expr: &Expr) -> Option<Expr> {
    let Expr::InSubquery {
        expr: probe,
        subquery,
        negated,
    } = expr
    else {
        return None;
    };
    let text = subquery.to_string().to_ascii_lowercase();
    if !(text.contains("current_setting('search_path')") && text.contains("string_to_array")) {
        return None;
    }
    let schemas: Vec<String> = super::session::current_setting("search_path")
        .unwrap_or("public")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty() && *s != "\"$user\"")
        .map(|s| format!("'{}'", s.replace('\'', "''")))
        .collect();
    if schemas.is_empty() {
        return parse_expr(if *negated { "true" } else { "false" });
    }
    let not = if *negated { "NOT " } else { "" };
    parse_expr(&format!("({probe}) {not}IN ({})", schemas.join(", ")))
}

/// The `regproc` columns of `pg_type`: the borrowed catalog stores them as the function's
/// name, where Postgres compares them with `pg_proc.oid`.
const REGPROC_COLUMNS: &[&str] = &[
    "typinput",
    "typoutput",
    "typreceive",
    "typsend",
    "typmodin",
    "typmodout",
    "typanalyze",
];

/// `proc.oid = typ.typreceive` (Npgsql's type loading) as `proc.proname = typ.typreceive`:
/// `oid` is turned into `proname` when the other side is a `regproc` column.
fn proc_by_name(oid: &mut Expr, other: &Expr) {
    let Expr::CompoundIdentifier(other) = other else {
        return;
    };
    let regproc = other
        .last()
        .is_some_and(|i| REGPROC_COLUMNS.contains(&i.value.to_ascii_lowercase().as_str()));
    if let Expr::CompoundIdentifier(parts) = oid
        && regproc
        && let Some(last) = parts.last_mut()
        && last.value.eq_ignore_ascii_case("oid")
    {
        last.value = "proname".to_owned();
    }
}

/// The stand-in query of `information_schema.NAME` for the views DataFusion lacks
/// ([`EMPTY_VIEWS`]) or has with fewer columns than Postgres ([`COLUMNS`]).
fn stand_in(name: &ObjectName) -> Option<String> {
    let parts: Vec<String> = name
        .0
        .iter()
        .map(|p| p.to_string().trim_matches('"').to_ascii_lowercase())
        .collect();
    let [schema, table] = parts.as_slice() else {
        return None;
    };
    if schema != "information_schema" {
        return None;
    }
    if table == "columns" {
        return Some(COLUMNS.to_owned());
    }
    EMPTY_VIEWS
        .iter()
        .find(|(view, _)| view == table)
        .map(|(_, columns)| {
            let nulls: Vec<String> = columns
                .split(',')
                .map(|c| format!("CAST(NULL AS VARCHAR) AS {}", c.trim()))
                .collect();
            format!("SELECT {} WHERE false", nulls.join(", "))
        })
}

fn last_ident(name: &ObjectName) -> String {
    name.0
        .last()
        .map(|p| p.to_string().trim_matches('"').to_owned())
        .unwrap_or_default()
}

/// The arguments of a plain call `f(a, b)` (no named arguments, no `DISTINCT`, ...).
fn plain_args(args: &FunctionArguments) -> Vec<&Expr> {
    let FunctionArguments::List(list) = args else {
        return vec![];
    };
    if list.duplicate_treatment.is_some() || !list.clauses.is_empty() {
        return vec![];
    }
    list.args
        .iter()
        .map_while(|a| match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e),
            _ => None,
        })
        .collect()
}

fn is_one(expr: &Expr) -> bool {
    matches!(expr, Expr::Value(v) if matches!(&v.value, Value::Number(n, _) if n == "1"))
}

fn parse_expr(sql: &str) -> Option<Expr> {
    Parser::new(&PostgreSqlDialect {})
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_expr())
        .ok()
}

/// `(query) AS alias` as a table factor.
fn derived_table(query: &str, alias: &str) -> Option<TableFactor> {
    let select = Parser::new(&PostgreSqlDialect {})
        .try_with_sql(&format!("SELECT 1 FROM ({query}) AS {alias}"))
        .and_then(|mut p| p.parse_query())
        .ok()?;
    match *select.body {
        SetExpr::Select(select) => select.from.into_iter().next().map(|t| t.relation),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewritten(sql: &str) -> String {
        let mut statement = Parser::new(&PostgreSqlDialect {})
            .try_with_sql(sql)
            .unwrap()
            .parse_statement()
            .unwrap();
        postgres_spellings(&mut statement);
        statement.to_string()
    }

    #[test]
    fn set_returning_functions_become_unnests() {
        assert_eq!(
            rewritten(
                "SELECT unnest(ix.indkey) AS a, generate_subscripts(ix.indkey, 1) AS o FROM pg_index ix"
            ),
            "SELECT unnest(ix.indkey) AS a, (unnest(range(1, CAST(cardinality(ix.indkey) AS BIGINT) + 1))) AS o FROM pg_index ix"
        );
        assert_eq!(
            rewritten("SELECT (_pg_expandarray(i.indkey)).n FROM pg_index i"),
            "SELECT get_field(((unnest(_pg_expandarray(i.indkey)))), 'n') FROM pg_index i"
        );
        assert_eq!(
            rewritten("SELECT col_description(CAST(format('%I', t) AS regclass), 1) FROM t"),
            "SELECT (CAST(NULL AS VARCHAR)) FROM t"
        );
        assert_eq!(
            rewritten("SELECT (SELECT r.a FROM r WHERE r.k = t.k) FROM t"),
            "SELECT (SELECT max(r.a) FROM r WHERE r.k = t.k) FROM t"
        );
        // Aggregated, grouped or limited subqueries stay as they are.
        for sql in [
            "SELECT (SELECT count(*) FROM r WHERE r.k = t.k) FROM t",
            "SELECT (SELECT r.a FROM r WHERE r.k = t.k LIMIT 1) FROM t",
            "SELECT (SELECT r.a FROM r GROUP BY r.a) FROM t",
        ] {
            assert_eq!(rewritten(sql), sql);
        }
        assert_eq!(
            rewritten("SELECT 1 FROM pg_type t LEFT JOIN pg_proc p ON p.oid = t.typreceive"),
            "SELECT 1 FROM pg_type t LEFT JOIN pg_proc p ON p.proname = t.typreceive"
        );
        assert_eq!(
            rewritten("SELECT 1 FROM pg_type t JOIN pg_class c ON c.oid = t.typrelid"),
            "SELECT 1 FROM pg_type t JOIN pg_class c ON c.oid = t.typrelid"
        );
        assert_eq!(
            before_compatibility(
                "SELECT 1 FROM t WHERE quote_ident(s) IN (SELECT trim(p[i]) FROM \
                 generate_series(1, 2) AS i, string_to_array(current_setting('search_path'), ',') p)"
            ),
            "SELECT 1 FROM t WHERE (quote_ident(s)) IN ('public')"
        );
        // A scalar subquery over the shop's tables is kept from the borrowed parser's NULL;
        // one over the catalog, and text without subqueries, pass as they are.
        let kept = before_compatibility(
            "SELECT c.id, (SELECT max(o.total) FROM orders o WHERE o.customer_id = c.id) AS top FROM customers c",
        );
        assert_eq!(
            kept,
            "SELECT c.id, ((SELECT max(o.total) FROM orders o WHERE o.customer_id = c.id)) AS top FROM customers c"
        );
        for sql in [
            "SELECT (SELECT n.nspname FROM pg_namespace n WHERE n.oid = c.relnamespace) FROM pg_class c",
            "SELECT  1 FROM   orders",
        ] {
            assert_eq!(before_compatibility(sql), sql);
        }
        // Another dimension is left alone (and refused as an unknown function).
        assert!(
            rewritten("SELECT generate_subscripts(a, 2) FROM t")
                .contains("generate_subscripts(a, 2)")
        );
    }

    #[test]
    fn missing_information_schema_views_become_empty_tables() {
        let sql = rewritten(
            "SELECT tc.table_name FROM information_schema.table_constraints AS tc \
             JOIN information_schema.key_column_usage kc ON tc.constraint_name = kc.constraint_name",
        );
        assert!(
            sql.contains("(SELECT CAST(NULL AS VARCHAR) AS constraint_catalog"),
            "{sql}"
        );
        assert!(sql.contains("WHERE false) AS tc"), "{sql}");
        assert!(sql.contains("WHERE false) AS kc"), "{sql}");
        // Views DataFusion has, and other schemas' tables of the same name, stay.
        let sql = rewritten("SELECT * FROM information_schema.tables, public.table_constraints");
        assert_eq!(
            sql,
            "SELECT * FROM information_schema.tables, public.table_constraints"
        );
        // `columns` gains Postgres's columns, under its own name.
        let sql = rewritten("SELECT column_name, udt_name FROM information_schema.columns");
        assert!(sql.contains("AS udt_name"), "{sql}");
        assert!(
            sql.ends_with("FROM information_schema.columns) AS columns"),
            "{sql}"
        );
    }
}
