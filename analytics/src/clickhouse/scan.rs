//! One scan as a ClickHouse query: the SQL selecting the projected columns with the pushed
//! filters and limit (`GROUP BY` + `sum` for an aggregate), and how the decoded rows become
//! the exposed Arrow types.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::UInt64Type;
use arrow_array::{ArrayRef, RecordBatch, RecordBatchOptions, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::compute::cast;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::Expr;

use super::client::corrupt;
use super::filter::{Placement, translate};
use super::layout::{Kind, Layout, alias};
use crate::read_model::Table;

/// One scan of one table as a ClickHouse query.
#[derive(Debug, Clone)]
pub(super) struct ScanQuery {
    pub(super) sql: String,
    /// `sql` without its `FORMAT` (what a pushed-down query selects from).
    pub(super) body: String,
    /// The columns of the answer as decoded.
    pub(super) wire: SchemaRef,
    /// The exposed columns the scan returns (`projected` of [`Table::schema`]).
    pub(super) output: SchemaRef,
    /// Per output column, its ClickHouse form.
    pub(super) kinds: Vec<Kind>,
    /// No column wanted (`count(*)`): the query returns the row count instead of rows.
    pub(super) count_only: bool,
    /// An aggregate's stored rows as the scan reads them before merging them, when nothing
    /// but the merge comes after (no filter on a sum, no limit): `FROM .. WHERE ..`.
    pub(super) unmerged_from: Option<String>,
}

/// The ClickHouse SQL of a scan of `table` in `database`: the columns of `projection` (all
/// if `None`), only rows passing every filter of `filters` (each must be one
/// `supports_filters_pushdown` accepts as `Exact`), at most `limit` rows. Public so the
/// pushdown can be seen and tested.
pub fn scan_sql(
    table: Table,
    database: &str,
    projection: Option<&[usize]>,
    filters: &[Expr],
    limit: Option<usize>,
) -> DfResult<String> {
    Ok(build_scan(table, database, projection, filters, limit)?.sql)
}

pub(super) fn build_scan(
    table: Table,
    database: &str,
    projection: Option<&[usize]>,
    filters: &[Expr],
    limit: Option<usize>,
) -> DfResult<ScanQuery> {
    let layout = Layout::new(table)?;
    let schema = table.schema();
    let projection: Vec<usize> = match projection {
        Some(p) => p.to_vec(),
        None => (0..layout.cols.len()).collect(),
    };
    if let Some(bad) = projection.iter().find(|&&i| i >= layout.cols.len()) {
        return Err(DataFusionError::Internal(format!(
            "table `{}` has no column {bad}",
            table.name()
        )));
    }
    let output = Arc::new(schema.project(&projection)?);
    let mut base_where = Vec::new();
    let mut merged_where = Vec::new();
    let mut merged_reads = Vec::new();
    for f in filters {
        match translate(&layout, f) {
            Some(Placement::Base(sql)) => base_where.push(sql),
            Some(Placement::Merged(sql, used)) => {
                merged_where.push(sql);
                merged_reads.extend(used);
            }
            None => {
                return Err(DataFusionError::Internal(format!(
                    "filter `{f}` on `{}` cannot be evaluated by ClickHouse",
                    table.name()
                )));
            }
        }
    }
    let count_only = projection.is_empty();
    let select = |columns: &[usize], expr: &dyn Fn(usize) -> String| -> String {
        if columns.is_empty() {
            // Rows without columns (for a count): any constant.
            "1 AS c".to_owned()
        } else {
            columns
                .iter()
                .map(|&i| format!("{} AS {}", expr(i), alias(i)))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    let conjunction = |parts: &[String]| -> String {
        if parts.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", parts.join(" AND "))
        }
    };
    let from = format!("{database}.`{}`", table.name());
    let unmerged_from = (layout.is_agg() && merged_where.is_empty() && limit.is_none())
        .then(|| format!("{from}{}", conjunction(&base_where)));
    let limit = limit.map(|n| format!(" LIMIT {n}")).unwrap_or_default();
    let body = if layout.is_agg() {
        let keys: Vec<String> = layout
            .cols
            .iter()
            .filter(|c| c.key)
            .map(|c| format!("`{}`", c.name))
            .collect();
        let group = format!(
            " GROUP BY {} HAVING sum(`contributions`) != 0",
            keys.join(", ")
        );
        if merged_where.is_empty() {
            format!(
                "SELECT {} FROM {from}{}{group}{limit}",
                select(&projection, &|i| layout.read_expr(i)),
                conjunction(&base_where)
            )
        } else {
            let mut inner: Vec<usize> = projection.iter().copied().chain(merged_reads).collect();
            inner.sort_unstable();
            inner.dedup();
            let outer = if projection.is_empty() {
                select(&projection, &alias)
            } else {
                // Plain aliases: `c1 AS c1` would be a cyclic alias to ClickHouse.
                projection
                    .iter()
                    .map(|&i| alias(i))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            format!(
                "SELECT {outer} FROM (SELECT {} FROM {from}{}{group}){}{limit}",
                select(&inner, &|i| layout.read_expr(i)),
                conjunction(&base_where),
                conjunction(&merged_where)
            )
        }
    } else {
        format!(
            "SELECT {} FROM {from}{}{limit}",
            select(&projection, &|i| layout.read_expr(i)),
            conjunction(&base_where)
        )
    };
    let (sql, wire) = if count_only {
        (
            format!("SELECT count() AS n FROM ({body}) FORMAT Native"),
            Arc::new(Schema::new(vec![Field::new("n", DataType::UInt64, false)])),
        )
    } else {
        let fields: Vec<Field> = projection.iter().map(|&i| layout.wire_field(i)).collect();
        (
            format!("{body} FORMAT Native"),
            Arc::new(Schema::new(fields)),
        )
    };
    Ok(ScanQuery {
        sql,
        body,
        wire,
        output,
        kinds: projection.iter().map(|&i| layout.cols[i].kind).collect(),
        count_only,
        unmerged_from,
    })
}

impl ScanQuery {
    /// A decoded batch as the exposed columns.
    pub(super) fn convert(&self, batch: RecordBatch) -> DfResult<RecordBatch> {
        if self.count_only {
            let counts = batch
                .columns()
                .first()
                .and_then(|c| c.as_primitive_opt::<UInt64Type>())
                .ok_or_else(|| {
                    DataFusionError::Internal("the count came back without a number".into())
                })?;
            let rows: u64 = counts.iter().flatten().sum();
            let rows = usize::try_from(rows)
                .map_err(|_| DataFusionError::Internal(format!("{rows} rows")))?;
            return Ok(RecordBatch::try_new_with_options(
                self.output.clone(),
                vec![],
                &RecordBatchOptions::new().with_row_count(Some(rows)),
            )?);
        }
        let columns = batch
            .columns()
            .iter()
            .zip(&self.kinds)
            .zip(self.output.fields())
            .map(|((column, kind), field)| match kind {
                Kind::Bytes => unhex(column),
                // Dates and times from their numbers, counts to `Int64`, decimals to the
                // precision DataFusion gives them.
                _ if column.data_type() != field.data_type() => {
                    Ok(cast(column, field.data_type())?)
                }
                _ => Ok(column.clone()),
            })
            .collect::<DfResult<Vec<ArrayRef>>>()?;
        Ok(RecordBatch::try_new(self.output.clone(), columns)?)
    }
}

/// ClickHouse's `hex(..)` of bytes back to the bytes, as text the way the embedded store
/// keeps them (`String::from_utf8_lossy`).
fn unhex(column: &ArrayRef) -> DfResult<ArrayRef> {
    let hex = column.as_string_opt::<i32>().ok_or_else(|| {
        DataFusionError::Internal(format!("hex column is {}", column.data_type()))
    })?;
    let digit = |b: u8| -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    };
    let decoded = hex
        .iter()
        .map(|v| {
            v.map(|s| {
                let s = s.as_bytes();
                if s.len() % 2 != 0 {
                    return None;
                }
                let bytes = s
                    .chunks_exact(2)
                    .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
                    .collect::<Option<Vec<u8>>>()?;
                Some(String::from_utf8_lossy(&bytes).into_owned())
            })
            .map(|s| s.ok_or(()))
            .transpose()
        })
        .collect::<Result<StringArray, ()>>()
        .map_err(|()| {
            DataFusionError::External(Box::new(corrupt("ClickHouse sent malformed hex")))
        })?;
    Ok(Arc::new(decoded))
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::json::ReaderBuilder;
    use datafusion::common::ScalarValue;
    use datafusion::logical_expr::{col, lit};
    use shoplens_contract::tables::RawTable;
    use shoplens_readmodel::tables::AggTable;

    use super::*;

    fn money(cents: i128) -> Expr {
        lit(ScalarValue::Decimal128(Some(cents), 18, 2))
    }

    fn day(d: i32) -> Expr {
        lit(ScalarValue::Date32(Some(d)))
    }

    const ORDERS: Table = Table::Raw(RawTable::Orders);

    #[test]
    fn raw_scans_select_the_projection_with_filters_and_limit() {
        let sql = scan_sql(
            ORDERS,
            "shop_g2",
            Some(&[2, 6]),
            &[
                col("customer_id").eq(lit("c1")),
                col("total").gt(money(100)),
            ],
            Some(5),
        )
        .unwrap();
        assert_eq!(
            sql,
            "SELECT `order_id` AS c2, `total` AS c6 FROM shop_g2.`orders` \
             WHERE (`customer_id` = 'c1') AND (`total` > toDecimal64('1.00', 2)) LIMIT 5 \
             FORMAT Native"
        );
        let all = scan_sql(ORDERS, "d", None, &[], None).unwrap();
        assert!(
            all.starts_with("SELECT `event_id` AS c0, `occurred_at` AS c1,"),
            "{all}"
        );
        assert!(!all.contains("WHERE") && !all.contains("LIMIT"), "{all}");
        assert_eq!(
            scan_sql(ORDERS, "d", Some(&[]), &[], Some(3)).unwrap(),
            "SELECT count() AS n FROM (SELECT 1 AS c FROM d.`orders` LIMIT 3) FORMAT Native"
        );
        assert!(scan_sql(ORDERS, "d", Some(&[99]), &[], None).is_err());
        assert!(scan_sql(ORDERS, "d", None, &[col("order_id").like(lit("x"))], None).is_err());
    }

    #[test]
    fn aggregates_are_merged_and_filtered_before_or_after_the_group_by() {
        let daily = Table::Agg(AggTable::DailySales);
        let sql = scan_sql(
            daily,
            "d",
            Some(&[0, 4]),
            &[col("day").gt_eq(day(20_000))],
            Some(10),
        )
        .unwrap();
        assert_eq!(
            sql,
            "SELECT toInt32(`day`) AS c0, sum(`revenue`) AS c4 FROM d.`daily_sales` \
             WHERE (toInt32(`day`) >= 20000) GROUP BY `day` HAVING sum(`contributions`) != 0 \
             LIMIT 10 FORMAT Native"
        );
        let products = Table::Agg(AggTable::ProductSalesDaily);
        let sql = scan_sql(
            products,
            "d",
            Some(&[1]),
            &[
                col("product_id").eq(lit("p1")),
                col("units").gt(lit(2u64)).or(col("day").eq(day(3))),
            ],
            None,
        )
        .unwrap();
        assert_eq!(
            sql,
            "SELECT c1 FROM (SELECT toInt32(`day`) AS c0, `product_id` AS c1, sum(`units`) AS c2 \
             FROM d.`product_sales_daily` WHERE (`product_id` = 'p1') \
             GROUP BY `day`, `product_id` HAVING sum(`contributions`) != 0) \
             WHERE ((c2 > 2) OR (c0 = 3)) FORMAT Native"
        );
        let count = scan_sql(
            products,
            "d",
            Some(&[]),
            &[col("units").gt(lit(2u64))],
            None,
        )
        .unwrap();
        assert_eq!(
            count,
            "SELECT count() AS n FROM (SELECT 1 AS c FROM (SELECT sum(`units`) AS c2 \
             FROM d.`product_sales_daily` GROUP BY `day`, `product_id` \
             HAVING sum(`contributions`) != 0) WHERE (c2 > 2)) FORMAT Native"
        );
    }

    #[test]
    fn decoded_rows_become_the_exposed_types() {
        let query = build_scan(Table::DeadLetters, "d", Some(&[8, 9]), &[], None).unwrap();
        let mut decoder = ReaderBuilder::new(query.wire.clone())
            .with_strict_mode(true)
            .build_decoder()
            .unwrap();
        decoder
            .decode(b"{\"c8\":\"7B6FFF\",\"c9\":\"1700000000123\"}\n{\"c8\":\"\",\"c9\":-5}\n")
            .unwrap();
        let batch = query.convert(decoder.flush().unwrap().unwrap()).unwrap();
        assert_eq!(batch.schema(), query.output);
        let payload = batch.column(0).as_string::<i32>();
        assert_eq!(payload.value(0), "{o\u{FFFD}");
        assert_eq!(payload.value(1), "");
        let at = batch
            .column(1)
            .as_primitive::<datafusion::arrow::datatypes::TimestampMillisecondType>();
        assert_eq!(at.value(0), 1_700_000_000_123);
        assert_eq!(at.value(1), -5);

        let daily = build_scan(Table::Agg(AggTable::DailySales), "d", None, &[], None).unwrap();
        let mut decoder = ReaderBuilder::new(daily.wire.clone())
            .with_strict_mode(true)
            .build_decoder()
            .unwrap();
        decoder
            .decode(
                b"{\"c0\":20454,\"c1\":\"18446744073709551615\",\"c2\":0,\"c3\":3,\
                  \"c4\":12345678901234567890123.45}\n",
            )
            .unwrap();
        let batch = daily.convert(decoder.flush().unwrap().unwrap()).unwrap();
        assert_eq!(batch.schema(), Table::Agg(AggTable::DailySales).schema());
        let rendered = datafusion::arrow::util::pretty::pretty_format_batches(&[batch])
            .unwrap()
            .to_string();
        assert!(rendered.contains("2026-01-01"), "{rendered}");
        assert!(rendered.contains("18446744073709551615"), "{rendered}");
        assert!(
            rendered.contains("12345678901234567890123.45"),
            "{rendered}"
        );

        // A field nobody asked for (an exception object) is an error, not a row.
        let mut decoder = ReaderBuilder::new(daily.wire.clone())
            .with_strict_mode(true)
            .build_decoder()
            .unwrap();
        let err = decoder
            .decode(b"{\"exception\":\"Code: 241\"}\n")
            .and_then(|_| decoder.flush());
        assert!(err.is_err());
    }
}
