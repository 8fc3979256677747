//! The read model's tables beyond the raw event tables: the pre-aggregated tables the
//! dashboard reads, the dead-letter table and the freshness log, as Arrow schemas.
//!
//! Both stores hold exactly these tables with exactly these meanings, beside the raw tables
//! of [`shoplens_contract::tables::RawTable`]; ClickHouse keeps the aggregates with
//! materialized views (`sql/`), the embedded store with [`crate::aggregate`]. A parity test
//! checks they agree.
//!
//! What the aggregates count (all days are UTC calendar days of the event's `occurred_at`):
//! - `orders_placed`: `OrderCreated` events;
//! - `orders_paid`: `OrderStatusChanged` events with `to_status = 'Paid'`;
//! - `items_sold`, `units`: the `quantity` of `ProductPurchased` events;
//! - `revenue`: the `revenue` of `ProductPurchased` events (gross: refunds are not
//!   subtracted; they are in `payment_events`);
//! - `order_lines`: `ProductPurchased` events.
//!
//! Revenue is summed across currencies as is: the shop sells in one currency.

use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use shoplens_contract::tables::MONEY;

/// The raw event tables: their columns are defined once, beside the code that fills them
/// from an event, in the contract crate (`shoplens_contract::tables`); re-exported here so
/// every table of the read model is reachable from this module.
pub use shoplens_contract::tables::RawTable;

/// A pre-aggregated table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AggTable {
    /// Per day: orders placed and paid, items sold, revenue.
    DailySales,
    /// Per day and product: units, revenue, order lines.
    ProductSalesDaily,
    /// Per day and customer: orders paid, revenue (for top customers).
    CustomerSpendDaily,
    /// Per month (its first day): as `DailySales`.
    MonthlySales,
    /// Per year: as `DailySales`.
    YearlySales,
    /// Per month (its first day) and product: as `ProductSalesDaily`. A rollup: long ranges
    /// read it for their whole months (the analytics server chooses it per query).
    ProductSalesMonthly,
    /// Per month (its first day) and customer: as `CustomerSpendDaily`. A rollup, as
    /// `ProductSalesMonthly`.
    CustomerSpendMonthly,
}

impl AggTable {
    pub const ALL: [AggTable; 7] = [
        AggTable::DailySales,
        AggTable::ProductSalesDaily,
        AggTable::CustomerSpendDaily,
        AggTable::MonthlySales,
        AggTable::YearlySales,
        AggTable::ProductSalesMonthly,
        AggTable::CustomerSpendMonthly,
    ];

    pub fn name(self) -> &'static str {
        match self {
            AggTable::DailySales => "daily_sales",
            AggTable::ProductSalesDaily => "product_sales_daily",
            AggTable::CustomerSpendDaily => "customer_spend_daily",
            AggTable::MonthlySales => "monthly_sales",
            AggTable::YearlySales => "yearly_sales",
            AggTable::ProductSalesMonthly => "product_sales_monthly",
            AggTable::CustomerSpendMonthly => "customer_spend_monthly",
        }
    }

    /// For a month rollup: the daily table it sums by month (its rows are that table's rows
    /// with `day` replaced by the first day of its month, summed per key). The embedded
    /// store derives a rollup from that table's deltas rather than storing it.
    pub fn rolls_up(self) -> Option<AggTable> {
        match self {
            AggTable::ProductSalesMonthly => Some(AggTable::ProductSalesDaily),
            AggTable::CustomerSpendMonthly => Some(AggTable::CustomerSpendDaily),
            _ => None,
        }
    }

    /// The month rollup of this daily table, if it has one.
    pub fn rollup(self) -> Option<AggTable> {
        AggTable::ALL
            .into_iter()
            .find(|t| t.rolls_up() == Some(self))
    }

    /// How many leading columns form the key; the rest are sums.
    pub fn key_columns(self) -> usize {
        match self {
            AggTable::ProductSalesDaily
            | AggTable::CustomerSpendDaily
            | AggTable::ProductSalesMonthly
            | AggTable::CustomerSpendMonthly => 2,
            _ => 1,
        }
    }

    pub fn schema(self) -> SchemaRef {
        let count = |name: &str| Field::new(name, DataType::UInt64, false);
        let money = |name: &str| Field::new(name, MONEY, false);
        let day = Field::new("day", DataType::Date32, false);
        let month = Field::new("month", DataType::Date32, false);
        let sales = || {
            vec![
                count("orders_placed"),
                count("orders_paid"),
                count("items_sold"),
                money("revenue"),
            ]
        };
        let product = |period: Field| {
            vec![
                period,
                Field::new("product_id", DataType::Utf8, false),
                count("units"),
                money("revenue"),
                count("order_lines"),
            ]
        };
        let customer = |period: Field| {
            vec![
                period,
                Field::new("customer_id", DataType::Utf8, false),
                count("orders_paid"),
                money("revenue"),
            ]
        };
        let fields = match self {
            AggTable::DailySales => [vec![day], sales()].concat(),
            AggTable::ProductSalesDaily => product(day),
            AggTable::CustomerSpendDaily => customer(day),
            AggTable::ProductSalesMonthly => product(month),
            AggTable::CustomerSpendMonthly => customer(month),
            AggTable::MonthlySales => [vec![month], sales()].concat(),
            AggTable::YearlySales => {
                [vec![Field::new("year", DataType::Int32, false)], sales()].concat()
            }
        };
        Arc::new(Schema::new(fields))
    }
}

pub const DEAD_LETTERS: &str = "dead_letters";

/// One row per dead-lettered event (an event the ingest worker could not apply, kept with
/// its bus coordinates, bytes and reason).
pub fn dead_letters_schema() -> SchemaRef {
    let utf8 = |name: &str, nullable| Field::new(name, DataType::Utf8, nullable);
    Arc::new(Schema::new(vec![
        utf8("topic", false),
        Field::new("partition", DataType::Int32, false),
        Field::new("offset", DataType::UInt64, false),
        utf8("key", false),
        utf8("event_id", true),
        utf8("event_type", true),
        utf8("reason_kind", false),
        utf8("reason", false),
        utf8("payload", false),
        Field::new(
            "received_at",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            false,
        ),
    ]))
}
