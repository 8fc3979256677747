//! What makes the engine look like Postgres 16 to a client's catalog queries: `pg_catalog`,
//! `version()` and `current_setting()`. Installed on the server's session (for planning) and
//! on every query worker's (where queries run).

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use datafusion::arrow::array::{Array, Int32Array, ListArray, StringArray, StructArray};
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::ScalarValue;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};
use datafusion::prelude::SessionContext;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::context::{
    PgCatalogContextProvider, Role,
};
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::{
    PgCatalogSchemaProvider, PgCatalogStaticTables, setup_pg_catalog,
};

use super::SERVER_VERSION;
use super::catalog::{CorrectedCatalog, SortedCatalogs, number_objects};
use super::session::current_setting;
use crate::engine::CATALOG;

/// Adds `pg_catalog`, `information_schema`'s Postgres functions, `version()` and
/// `current_setting()` to the session, once (a second server on the same engine reuses them).
/// Every table must be registered before: object ids are given out here.
pub async fn install_catalog(
    ctx: &SessionContext,
    users: &[String],
) -> Result<(), DataFusionError> {
    let catalog = ctx
        .catalog(CATALOG)
        .ok_or_else(|| DataFusionError::Plan(format!("catalog {CATALOG} is missing")))?;
    if catalog.schema("pg_catalog").is_some() {
        return Ok(());
    }
    let roles = CatalogRoles {
        users: users.to_vec(),
    };
    // Registers the functions, types and a `pg_catalog` that lists objects in hash-map
    // order; that schema is replaced by one over the sorted lists.
    setup_pg_catalog(ctx, CATALOG, roles.clone()).map_err(|e| *e)?;
    let pg_catalog = PgCatalogSchemaProvider::try_new(
        SortedCatalogs(ctx.state().catalog_list().clone()),
        static_tables()?,
        roles,
    )?;
    catalog.register_schema(
        "pg_catalog",
        Arc::new(CorrectedCatalog::new(Arc::new(pg_catalog))),
    )?;
    number_objects(ctx).await?;
    ctx.register_udf(ScalarUDF::from(PgVersion::new()));
    ctx.register_udf(ScalarUDF::from(CurrentSetting::new()));
    ctx.register_udf(ScalarUDF::from(TypeIsVisible::new()));
    ctx.register_udf(ScalarUDF::from(PgExpandArray::new()));
    ctx.register_udf(ScalarUDF::from(Format::new()));
    Ok(())
}

/// Postgres's built-in catalog rows (types, functions, ...), read once per process: every
/// session's `pg_catalog` shares them.
fn static_tables() -> Result<Arc<PgCatalogStaticTables>, DataFusionError> {
    static TABLES: OnceLock<Arc<PgCatalogStaticTables>> = OnceLock::new();
    if let Some(tables) = TABLES.get() {
        return Ok(tables.clone());
    }
    let tables = Arc::new(PgCatalogStaticTables::try_new()?);
    Ok(TABLES.get_or_init(|| tables).clone())
}

/// The roles `pg_catalog.pg_roles` lists: the configured users, who can log in and read.
#[derive(Debug, Clone)]
struct CatalogRoles {
    users: Vec<String>,
}

#[async_trait]
impl PgCatalogContextProvider for CatalogRoles {
    async fn roles(&self) -> Vec<String> {
        self.users.clone()
    }

    async fn role(&self, name: &str) -> Option<Role> {
        self.users.iter().any(|u| u == name).then(|| Role {
            name: name.to_owned(),
            is_superuser: false,
            can_login: true,
            can_create_db: false,
            can_create_role: false,
            can_create_user: false,
            can_replication: false,
            grants: vec![],
            inherited_roles: vec![],
        })
    }
}

/// `version()` as Postgres words it (`PostgreSQL 16.0 …`), which is what SQLAlchemy and other
/// drivers parse; it also names the engine.
#[derive(Debug, PartialEq, Eq, Hash)]
struct PgVersion {
    signature: Signature,
}

impl PgVersion {
    fn new() -> PgVersion {
        PgVersion {
            signature: Signature::nullary(Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for PgVersion {
    fn name(&self) -> &str {
        "version"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(
        &self,
        _args: ScalarFunctionArgs,
    ) -> datafusion::error::Result<ColumnarValue> {
        Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(format!(
            "PostgreSQL {SERVER_VERSION} (ShopLens analytics, Apache DataFusion {}) on {}, \
             read-only",
            datafusion::DATAFUSION_VERSION,
            std::env::consts::ARCH,
        )))))
    }
}

/// `pg_type_is_visible(oid)`, which SQLAlchemy's reflection (domains, enums) asks: every
/// type here lives in `pg_catalog`, which is always on the search path, so every type is
/// visible (a NULL oid answers NULL, as in Postgres).
#[derive(Debug, PartialEq, Eq, Hash)]
struct TypeIsVisible {
    signature: Signature,
}

impl TypeIsVisible {
    fn new() -> TypeIsVisible {
        TypeIsVisible {
            signature: Signature::any(1, Volatility::Stable),
        }
    }
}

impl ScalarUDFImpl for TypeIsVisible {
    fn name(&self) -> &str {
        "pg_type_is_visible"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::error::Result<ColumnarValue> {
        match args.args.first() {
            Some(ColumnarValue::Scalar(oid)) => Ok(ColumnarValue::Scalar(ScalarValue::Boolean(
                (!oid.is_null()).then_some(true),
            ))),
            Some(ColumnarValue::Array(oids)) => {
                let visible: datafusion::arrow::array::BooleanArray = (0..oids.len())
                    .map(|i| (!oids.is_null(i)).then_some(true))
                    .collect();
                Ok(ColumnarValue::Array(Arc::new(visible)))
            }
            None => Err(DataFusionError::Plan(
                "pg_type_is_visible takes a type oid".into(),
            )),
        }
    }
}

/// `current_setting(name [, missing_ok])` for the settings tools ask about on connect
/// (`server_version_num`, `search_path`, ...); an unknown name is Postgres's error.
#[derive(Debug, PartialEq, Eq, Hash)]
struct CurrentSetting {
    signature: Signature,
}

impl CurrentSetting {
    fn new() -> CurrentSetting {
        CurrentSetting {
            signature: Signature::one_of(
                vec![TypeSignature::String(1), TypeSignature::Any(2)],
                Volatility::Stable,
            ),
        }
    }
}

impl ScalarUDFImpl for CurrentSetting {
    fn name(&self) -> &str {
        "current_setting"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::error::Result<ColumnarValue> {
        let missing_ok = matches!(
            args.args.get(1),
            Some(ColumnarValue::Scalar(ScalarValue::Boolean(Some(true))))
        );
        let lookup = |name: Option<&str>| -> datafusion::error::Result<Option<String>> {
            let Some(name) = name else { return Ok(None) };
            match current_setting(name) {
                Some(value) => Ok(Some(value.to_owned())),
                None if missing_ok => Ok(None),
                None => Err(DataFusionError::Execution(format!(
                    "unrecognized configuration parameter \"{name}\""
                ))),
            }
        };
        match args.args.first() {
            Some(ColumnarValue::Scalar(name)) => {
                let name = name.try_as_str().ok_or_else(|| {
                    DataFusionError::Plan("current_setting takes a setting name".into())
                })?;
                Ok(ColumnarValue::Scalar(ScalarValue::Utf8(lookup(name)?)))
            }
            Some(ColumnarValue::Array(names)) => {
                let names = datafusion::arrow::compute::cast(names, &DataType::Utf8)?;
                let names = names
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .ok_or_else(|| {
                        DataFusionError::Plan("current_setting takes a setting name".into())
                    })?;
                let values = (0..names.len())
                    .map(|i| lookup((!names.is_null(i)).then(|| names.value(i))))
                    .collect::<datafusion::error::Result<StringArray>>()?;
                Ok(ColumnarValue::Array(Arc::new(values)))
            }
            None => Err(DataFusionError::Plan(
                "current_setting takes a setting name".into(),
            )),
        }
    }
}

/// `_pg_expandarray(a)`: the elements of `a` with their 1-based positions, as a list of
/// `(x, n)` structs; the rewrite of `super::rewrite` unnests it, which gives Postgres's set
/// of records (pgjdbc's primary keys ask for it).
#[derive(Debug, PartialEq, Eq, Hash)]
struct PgExpandArray {
    signature: Signature,
}

impl PgExpandArray {
    fn new() -> PgExpandArray {
        PgExpandArray {
            signature: Signature::any(1, Volatility::Immutable),
        }
    }

    fn element(element: &DataType) -> Field {
        Field::new_list_field(
            DataType::Struct(
                vec![
                    Field::new("x", element.clone(), true),
                    Field::new("n", DataType::Int32, false),
                ]
                .into(),
            ),
            true,
        )
    }
}

impl ScalarUDFImpl for PgExpandArray {
    fn name(&self) -> &str {
        "_pg_expandarray"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> datafusion::error::Result<DataType> {
        match args.first() {
            Some(DataType::List(field)) => {
                Ok(DataType::List(Arc::new(Self::element(field.data_type()))))
            }
            other => Err(DataFusionError::Plan(format!(
                "_pg_expandarray takes an array, not {other:?}"
            ))),
        }
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::error::Result<ColumnarValue> {
        let Some(arg) = args.args.first() else {
            return Err(DataFusionError::Plan(
                "_pg_expandarray takes an array".into(),
            ));
        };
        let array = arg.to_array(args.number_rows)?;
        let list = datafusion::common::cast::as_list_array(&array)?;
        let values = list.values().clone();
        // Each element's position within its own row's slice (elements outside every row
        // keep 0).
        let mut positions = vec![0i32; values.len()];
        for window in list.value_offsets().windows(2) {
            let (start, end) = (window[0] as usize, window[1] as usize);
            for (k, slot) in positions[start..end].iter_mut().enumerate() {
                *slot = i32::try_from(k + 1).unwrap_or(i32::MAX);
            }
        }
        let DataType::Struct(fields) = Self::element(values.data_type()).data_type().clone() else {
            unreachable!("the element is a struct");
        };
        let pairs = StructArray::try_new(
            fields,
            vec![values, Arc::new(Int32Array::from(positions))],
            None,
        )?;
        let expanded = ListArray::try_new(
            Arc::new(Self::element(pairs.fields()[0].data_type())),
            list.offsets().clone(),
            Arc::new(pairs),
            list.nulls().cloned(),
        )?;
        Ok(ColumnarValue::Array(Arc::new(expanded)))
    }
}

/// `format(template, args...)` with Postgres's `%s` (the value as text, NULL as empty),
/// `%I` (an identifier, quoted when needed), `%L` (a literal, quoted; NULL unquoted) and
/// `%%`; Metabase builds type names and `regclass` casts with it.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Format {
    signature: Signature,
}

impl Format {
    fn new() -> Format {
        Format {
            signature: Signature::variadic_any(Volatility::Immutable),
        }
    }
}

/// Formats one row; `None` for a NULL template.
fn format_row(template: Option<&str>, args: &[Option<String>]) -> Result<Option<String>, String> {
    let Some(template) = template else {
        return Ok(None);
    };
    let mut out = String::with_capacity(template.len());
    let mut next = args.iter();
    let mut chars = template.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let spec = chars.next().ok_or("unterminated format() type specifier")?;
        if spec == '%' {
            out.push('%');
            continue;
        }
        let arg = next.next().ok_or("too few arguments for format()")?;
        match (spec, arg) {
            ('s', v) => out.push_str(v.as_deref().unwrap_or("")),
            ('I', Some(v)) => out.push_str(&quote_ident(v)),
            ('I', None) => {
                return Err("null values cannot be formatted as an SQL identifier".into());
            }
            ('L', Some(v)) => {
                out.push('\'');
                out.push_str(&v.replace('\'', "''"));
                out.push('\'');
            }
            ('L', None) => out.push_str("NULL"),
            (other, _) => {
                return Err(format!("unrecognized format() type specifier \"{other}\""));
            }
        }
    }
    Ok(Some(out))
}

/// An identifier as Postgres's `quote_ident` writes it: bare when it is lower case letters,
/// digits and underscores not starting with a digit, double-quoted otherwise.
fn quote_ident(name: &str) -> String {
    let bare = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if bare {
        name.to_owned()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

impl ScalarUDFImpl for Format {
    fn name(&self) -> &str {
        "format"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::error::Result<ColumnarValue> {
        let rows = args.number_rows;
        let columns = args
            .args
            .iter()
            .map(|a| {
                let array = a.to_array(rows)?;
                let text = datafusion::arrow::compute::cast(&array, &DataType::Utf8)?;
                text.as_any()
                    .downcast_ref::<StringArray>()
                    .cloned()
                    .ok_or_else(|| DataFusionError::Plan("format() takes text".into()))
            })
            .collect::<datafusion::error::Result<Vec<StringArray>>>()?;
        let Some((template, values)) = columns.split_first() else {
            return Err(DataFusionError::Plan("format() takes a template".into()));
        };
        let value = |column: &StringArray, i: usize| {
            (!column.is_null(i)).then(|| column.value(i).to_owned())
        };
        let formatted = (0..rows)
            .map(|i| {
                let args: Vec<Option<String>> = values.iter().map(|c| value(c, i)).collect();
                format_row(value(template, i).as_deref(), &args).map_err(DataFusionError::Execution)
            })
            .collect::<datafusion::error::Result<StringArray>>()?;
        Ok(ColumnarValue::Array(Arc::new(formatted)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_follows_postgres() {
        let f = |t: &str, args: &[Option<&str>]| {
            let args: Vec<Option<String>> = args.iter().map(|a| a.map(str::to_owned)).collect();
            format_row(Some(t), &args)
        };
        assert_eq!(f("%s", &[Some("int4")]).unwrap().unwrap(), "int4");
        assert_eq!(
            f("\"%s\".\"%s\"", &[Some("public"), Some("t")])
                .unwrap()
                .unwrap(),
            "\"public\".\"t\""
        );
        assert_eq!(
            f("%I.%I", &[Some("public"), Some("Daily Sales")])
                .unwrap()
                .unwrap(),
            "public.\"Daily Sales\""
        );
        assert_eq!(
            f("%L and %s%%", &[Some("it's"), None]).unwrap().unwrap(),
            "'it''s' and %"
        );
        assert_eq!(f("%L", &[None]).unwrap().unwrap(), "NULL");
        assert!(f("%s %s", &[Some("one")]).is_err(), "too few arguments");
        assert!(f("%x", &[Some("one")]).is_err(), "unknown specifier");
        assert!(f("%I", &[None]).is_err(), "a null identifier");
        assert_eq!(format_row(None, &[]).unwrap(), None);
    }
}
