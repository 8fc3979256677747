//! Reading a generation back: the aggregate tables merged per key (`GROUP BY` + `sum`, as the
//! SummingMergeTree engine leaves them) into the model's Arrow schemas, and the stored dead
//! letters. What the parity tests and the ingest API's dead-letter listing read.

use std::sync::Arc;

use arrow_array::{
    ArrayRef, Date32Array, Decimal128Array, Int32Array, RecordBatch, StringArray, UInt64Array,
};
use arrow_schema::DataType;
use bytes::Bytes;
use serde::Deserialize;
use shoplens_contract::tables::MONEY;
use shoplens_readmodel::tables::{AggTable, DEAD_LETTERS};

use super::conn::corrupt;
use super::sink::ClickHouseSink;
use crate::sink::{DeadLetter, SinkResult};

fn date32(values: impl Iterator<Item = i32>) -> ArrayRef {
    Arc::new(Date32Array::from_iter_values(values))
}

pub(super) fn money_array(values: impl Iterator<Item = i128>) -> SinkResult<ArrayRef> {
    let DataType::Decimal128(precision, scale) = MONEY else {
        return Err(corrupt("MONEY is not a Decimal128"));
    };
    Ok(Arc::new(
        Decimal128Array::from_iter_values(values)
            .with_precision_and_scale(precision, scale)
            .map_err(|e| corrupt(e.to_string()))?,
    ))
}

fn u64s(values: impl Iterator<Item = u64>) -> ArrayRef {
    Arc::new(UInt64Array::from_iter_values(values))
}

pub(super) fn strings<'a>(values: impl Iterator<Item = &'a str>) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(values))
}

#[derive(::clickhouse::Row, Deserialize)]
struct SalesRow {
    key: i32,
    orders_placed: u64,
    orders_paid: u64,
    items_sold: u64,
    revenue: i128,
}

#[derive(::clickhouse::Row, Deserialize)]
struct ProductRow {
    day: i32,
    product_id: String,
    units: u64,
    revenue: i128,
    order_lines: u64,
}

#[derive(::clickhouse::Row, Deserialize)]
struct CustomerRow {
    day: i32,
    customer_id: String,
    orders_paid: u64,
    revenue: i128,
}

#[derive(::clickhouse::Row, Deserialize)]
struct DeadLetterRow {
    topic: String,
    partition: i32,
    offset: u64,
    key: String,
    event_id: Option<String>,
    event_type: Option<String>,
    reason_kind: String,
    reason: String,
    payload: Vec<u8>,
    received_at: i64,
}

impl ClickHouseSink {
    /// The merged rows of aggregate `table`, one per key. Keys whose rows add up to no
    /// contribution (possible only after a repair took one back) are left out, as the Rust
    /// reference has no such keys.
    pub(super) async fn read_aggregate(&self, table: AggTable) -> SinkResult<RecordBatch> {
        match table {
            AggTable::DailySales => self.sales(table, "day").await,
            AggTable::MonthlySales => self.sales(table, "month").await,
            AggTable::YearlySales => self.sales(table, "year").await,
            AggTable::ProductSalesDaily
            | AggTable::ProductSalesMonthly
            | AggTable::ProductSalesWeekly => {
                let sql = format!(
                    "SELECT toInt32({period}) AS d, product_id, sum(units), sum(revenue), \
                     sum(order_lines) FROM {}.{} GROUP BY d, product_id \
                     HAVING sum(contributions) != 0 ORDER BY d, product_id",
                    self.db,
                    table.name(),
                    period = table.schema().field(0).name(),
                );
                let rows = self
                    .conn
                    .run(&sql, self.conn.client.query(&sql).fetch_all::<ProductRow>())
                    .await?;
                batch(
                    table,
                    vec![
                        date32(rows.iter().map(|r| r.day)),
                        strings(rows.iter().map(|r| r.product_id.as_str())),
                        u64s(rows.iter().map(|r| r.units)),
                        money_array(rows.iter().map(|r| r.revenue))?,
                        u64s(rows.iter().map(|r| r.order_lines)),
                    ],
                )
            }
            AggTable::CustomerSpendDaily
            | AggTable::CustomerSpendMonthly
            | AggTable::CustomerSpendWeekly => {
                let sql = format!(
                    "SELECT toInt32({period}) AS d, customer_id, sum(orders_paid), sum(revenue) \
                     FROM {}.{} GROUP BY d, customer_id \
                     HAVING sum(contributions) != 0 ORDER BY d, customer_id",
                    self.db,
                    table.name(),
                    period = table.schema().field(0).name(),
                );
                let rows = self
                    .conn
                    .run(
                        &sql,
                        self.conn.client.query(&sql).fetch_all::<CustomerRow>(),
                    )
                    .await?;
                batch(
                    table,
                    vec![
                        date32(rows.iter().map(|r| r.day)),
                        strings(rows.iter().map(|r| r.customer_id.as_str())),
                        u64s(rows.iter().map(|r| r.orders_paid)),
                        money_array(rows.iter().map(|r| r.revenue))?,
                    ],
                )
            }
        }
    }

    async fn sales(&self, table: AggTable, key: &str) -> SinkResult<RecordBatch> {
        let sql = format!(
            "SELECT toInt32({key}) AS k, sum(orders_placed), sum(orders_paid), sum(items_sold), \
             sum(revenue) FROM {}.{} GROUP BY k HAVING sum(contributions) != 0 ORDER BY k",
            self.db,
            table.name()
        );
        let rows = self
            .conn
            .run(&sql, self.conn.client.query(&sql).fetch_all::<SalesRow>())
            .await?;
        let keys = rows.iter().map(|r| r.key);
        let key_column: ArrayRef = if table == AggTable::YearlySales {
            Arc::new(Int32Array::from_iter_values(keys))
        } else {
            date32(keys)
        };
        batch(
            table,
            vec![
                key_column,
                u64s(rows.iter().map(|r| r.orders_placed)),
                u64s(rows.iter().map(|r| r.orders_paid)),
                u64s(rows.iter().map(|r| r.items_sold)),
                money_array(rows.iter().map(|r| r.revenue))?,
            ],
        )
    }

    /// Every stored dead letter, in bus order.
    pub(super) async fn read_dead_letters(&self) -> SinkResult<Vec<DeadLetter>> {
        let sql = format!(
            "SELECT topic, partition, offset, key, event_id, event_type, reason_kind, reason, \
             payload, received_at FROM {}.{DEAD_LETTERS} ORDER BY topic, partition, offset",
            self.db
        );
        let rows = self
            .conn
            .run(
                &sql,
                self.conn.client.query(&sql).fetch_all::<DeadLetterRow>(),
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| DeadLetter {
                topic: r.topic,
                partition: r.partition,
                offset: r.offset,
                key: r.key,
                event_id: r.event_id,
                event_type: r.event_type,
                reason_kind: r.reason_kind,
                reason: r.reason,
                payload: Bytes::from(r.payload),
                received_at_ms: r.received_at,
            })
            .collect())
    }
}

fn batch(table: AggTable, columns: Vec<ArrayRef>) -> SinkResult<RecordBatch> {
    RecordBatch::try_new(table.schema(), columns).map_err(|e| corrupt(e.to_string()))
}
