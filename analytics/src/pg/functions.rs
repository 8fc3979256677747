//! What makes the engine look like Postgres 16 to a client's catalog queries: `pg_catalog`,
//! `version()` and `current_setting()`. Installed on the server's session (for planning) and
//! on every query worker's (where queries run).

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{Array, StringArray};
use datafusion::arrow::datatypes::DataType;
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
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::setup_pg_catalog;

use super::SERVER_VERSION;
use super::session::current_setting;
use crate::engine::CATALOG;

/// Adds `pg_catalog`, `information_schema`'s Postgres functions, `version()` and
/// `current_setting()` to the session, once (a second server on the same engine reuses them).
pub fn install_catalog(ctx: &SessionContext, users: &[String]) -> Result<(), DataFusionError> {
    let catalog = ctx
        .catalog(CATALOG)
        .ok_or_else(|| DataFusionError::Plan(format!("catalog {CATALOG} is missing")))?;
    if catalog.schema("pg_catalog").is_some() {
        return Ok(());
    }
    setup_pg_catalog(
        ctx,
        CATALOG,
        CatalogRoles {
            users: users.to_vec(),
        },
    )
    .map_err(|e| *e)?;
    ctx.register_udf(ScalarUDF::from(PgVersion::new()));
    ctx.register_udf(ScalarUDF::from(CurrentSetting::new()));
    ctx.register_udf(ScalarUDF::from(TypeIsVisible::new()));
    Ok(())
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
