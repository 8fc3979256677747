//! How each exposed column is stored in ClickHouse and read back: its ClickHouse form, the
//! expression a scan selects for it (an aggregate's sums summed) and the type the JSON
//! decoder reads it as.

use arrow_schema::{DataType, Field, TimeUnit};
use datafusion::error::{DataFusionError, Result as DfResult};

use crate::read_model::Table;

/// A column's ClickHouse form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// `String` -> Utf8.
    Str,
    /// Bytes shown as text (the dead letters' `payload`): read as `hex(..)` and made UTF-8
    /// lossily, as the embedded store does; never filtered in ClickHouse, whose bytes may
    /// differ from that text.
    Bytes,
    Int32,
    /// A sum of `Int32`s or a count, computed in ClickHouse (no stored column has it).
    Int64,
    UInt64,
    /// `Int64` milliseconds -> Timestamp(ms, UTC).
    Millis,
    /// `Date` -> Date32, read and compared as its day number (`toInt32`), which also
    /// covers literals outside `Date`'s range.
    Date,
    /// `Decimal(p, s)`: `wide` when p > 18 (`Decimal128` rather than `Decimal64`).
    Decimal {
        wide: bool,
        scale: i8,
    },
}

impl Kind {
    /// The type a column of this kind is read as before it becomes its exposed type.
    pub(super) fn wire_type(self) -> DataType {
        match self {
            Kind::Str | Kind::Bytes => DataType::Utf8,
            Kind::Int32 | Kind::Date => DataType::Int32,
            Kind::UInt64 => DataType::UInt64,
            Kind::Int64 | Kind::Millis => DataType::Int64,
            Kind::Decimal { wide, scale } => {
                DataType::Decimal128(if wide { 38 } else { 18 }, scale)
            }
        }
    }
}

#[derive(Debug, Clone)]
pub(super) struct Col {
    pub(super) name: String,
    pub(super) kind: Kind,
    pub(super) nullable: bool,
    /// A key column of an aggregate (or any column of a raw table): readable before the
    /// GROUP BY. The others are sums.
    pub(super) key: bool,
}

/// A table's columns in its exposed order (or a pushed sub-plan's: no table).
#[derive(Debug, Clone)]
pub(super) struct Layout {
    pub(super) table: Option<Table>,
    pub(super) cols: Vec<Col>,
}

impl Layout {
    pub(super) fn new(table: Table) -> DfResult<Layout> {
        let schema = table.schema();
        let keys = match table {
            Table::Agg(t) => t.key_columns(),
            _ => schema.fields().len(),
        };
        let cols = schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let kind = match f.data_type() {
                    DataType::Utf8 if table == Table::DeadLetters && f.name() == "payload" => {
                        Kind::Bytes
                    }
                    DataType::Utf8 => Kind::Str,
                    DataType::Int32 => Kind::Int32,
                    DataType::UInt64 => Kind::UInt64,
                    DataType::Date32 => Kind::Date,
                    DataType::Timestamp(TimeUnit::Millisecond, _) => Kind::Millis,
                    DataType::Decimal128(p, s) => Kind::Decimal {
                        wide: *p > 18,
                        scale: *s,
                    },
                    other => {
                        return Err(DataFusionError::Internal(format!(
                            "table `{}`: column `{}` has type {other}, which the ClickHouse \
                             back end does not read",
                            table.name(),
                            f.name()
                        )));
                    }
                };
                Ok(Col {
                    name: f.name().clone(),
                    kind,
                    nullable: f.is_nullable(),
                    key: i < keys,
                })
            })
            .collect::<DfResult<Vec<_>>>()?;
        Ok(Layout {
            table: Some(table),
            cols,
        })
    }

    pub(super) fn is_agg(&self) -> bool {
        matches!(self.table, Some(Table::Agg(_)))
    }

    pub(super) fn index(&self, name: &str) -> Option<usize> {
        self.cols.iter().position(|c| c.name == name)
    }

    /// The column as stored, in the form it is read and compared in (before any GROUP BY).
    pub(super) fn base_expr(&self, i: usize) -> String {
        let c = &self.cols[i];
        match c.kind {
            Kind::Date => format!("toInt32(`{}`)", c.name),
            Kind::Bytes => format!("hex(`{}`)", c.name),
            _ => format!("`{}`", c.name),
        }
    }

    /// What the scan selects for column `i`: an aggregate's sums are summed.
    pub(super) fn read_expr(&self, i: usize) -> String {
        if self.is_agg() && !self.cols[i].key {
            format!("sum(`{}`)", self.cols[i].name)
        } else {
            self.base_expr(i)
        }
    }

    /// The column as the answer names it, and its type once converted (`ScanQuery::convert`).
    pub(super) fn wire_field(&self, i: usize) -> Field {
        let c = &self.cols[i];
        Field::new(alias(i), c.kind.wire_type(), c.nullable)
    }
}

/// The name column `i` goes by in the SQL we send: never one of the tables' own column
/// names, so ClickHouse never confuses an alias with a column (`sum(x) AS x`).
pub(super) fn alias(i: usize) -> String {
    format!("c{i}")
}

#[cfg(test)]
mod tests {
    use shoplens_readmodel::tables::AggTable;

    use super::*;

    #[test]
    fn every_table_has_a_layout() {
        for table in Table::all() {
            let layout = Layout::new(table).unwrap();
            assert_eq!(layout.cols.len(), table.schema().fields().len());
        }
        let letters = Layout::new(Table::DeadLetters).unwrap();
        let payload = letters.index("payload").unwrap();
        assert_eq!(letters.cols[payload].kind, Kind::Bytes);
        assert_eq!(letters.read_expr(payload), "hex(`payload`)");
        let daily = Layout::new(Table::Agg(AggTable::DailySales)).unwrap();
        assert_eq!(daily.read_expr(0), "toInt32(`day`)");
        assert_eq!(daily.read_expr(4), "sum(`revenue`)");
        assert_eq!(
            daily.cols[4].kind,
            Kind::Decimal {
                wide: true,
                scale: 2
            }
        );
    }
}
