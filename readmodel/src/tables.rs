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
    /// Per week (its Monday) and product: as `ProductSalesDaily`. A rollup: a range's whole
    /// weeks outside its whole months read it.
    ProductSalesWeekly,
    /// Per week (its Monday) and customer: as `CustomerSpendDaily`. A rollup, as
    /// `ProductSalesWeekly`.
    CustomerSpendWeekly,
}

/// The period a rollup sums its daily table by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Grain {
    /// Monday to Sunday (ISO weeks; ClickHouse's `toMonday`).
    Week,
    /// A calendar month.
    Month,
}

impl Grain {
    /// The first day of the period holding `day` (both `Date32`).
    pub fn start(self, day: i32) -> i32 {
        match self {
            Grain::Week => crate::aggregate::week_of(day),
            Grain::Month => crate::aggregate::month_of(day),
        }
    }

    /// The first day of the period after the one holding `day`.
    pub fn next(self, day: i32) -> i32 {
        match self {
            Grain::Week => match crate::aggregate::week_of(day) {
                // The first week of 1970 is clamped (see `week_of`): the week of Monday
                // 29 December 1969 ends on the 31st, and the next one starts on the 5th.
                -3 => 0,
                0 => 4,
                week => week.saturating_add(7),
            },
            // Every month is at most 31 days long: 31 days on is in the next month.
            Grain::Month => {
                crate::aggregate::month_of(crate::aggregate::month_of(day).saturating_add(31))
            }
        }
    }
}

impl AggTable {
    pub const ALL: [AggTable; 9] = [
        AggTable::DailySales,
        AggTable::ProductSalesDaily,
        AggTable::CustomerSpendDaily,
        AggTable::MonthlySales,
        AggTable::YearlySales,
        AggTable::ProductSalesMonthly,
        AggTable::CustomerSpendMonthly,
        AggTable::ProductSalesWeekly,
        AggTable::CustomerSpendWeekly,
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
            AggTable::ProductSalesWeekly => "product_sales_weekly",
            AggTable::CustomerSpendWeekly => "customer_spend_weekly",
        }
    }

    /// For a rollup: the daily table it sums by its [`AggTable::grain`] (its rows are that
    /// table's rows with `day` replaced by the first day of its period, summed per key). The
    /// embedded store derives a rollup from that table's deltas rather than storing it.
    pub fn rolls_up(self) -> Option<AggTable> {
        match self {
            AggTable::ProductSalesMonthly | AggTable::ProductSalesWeekly => {
                Some(AggTable::ProductSalesDaily)
            }
            AggTable::CustomerSpendMonthly | AggTable::CustomerSpendWeekly => {
                Some(AggTable::CustomerSpendDaily)
            }
            _ => None,
        }
    }

    /// For a rollup: the period it sums by.
    pub fn grain(self) -> Option<Grain> {
        match self {
            AggTable::ProductSalesMonthly | AggTable::CustomerSpendMonthly => Some(Grain::Month),
            AggTable::ProductSalesWeekly | AggTable::CustomerSpendWeekly => Some(Grain::Week),
            _ => None,
        }
    }

    /// The rollup of this daily table by `grain`, if it has one.
    pub fn rollup(self, grain: Grain) -> Option<AggTable> {
        AggTable::ALL
            .into_iter()
            .find(|t| t.rolls_up() == Some(self) && t.grain() == Some(grain))
    }

    /// How many leading columns form the key; the rest are sums.
    pub fn key_columns(self) -> usize {
        match self {
            AggTable::ProductSalesDaily
            | AggTable::CustomerSpendDaily
            | AggTable::ProductSalesMonthly
            | AggTable::CustomerSpendMonthly
            | AggTable::ProductSalesWeekly
            | AggTable::CustomerSpendWeekly => 2,
            _ => 1,
        }
    }

    pub fn schema(self) -> SchemaRef {
        let count = |name: &str| Field::new(name, DataType::UInt64, false);
        let money = |name: &str| Field::new(name, MONEY, false);
        let day = Field::new("day", DataType::Date32, false);
        let month = Field::new("month", DataType::Date32, false);
        let week = Field::new("week", DataType::Date32, false);
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
            AggTable::ProductSalesWeekly => product(week),
            AggTable::CustomerSpendWeekly => customer(week),
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
