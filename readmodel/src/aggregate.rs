//! The pre-aggregated tables of [`crate::tables::AggTable`] computed in Rust, for the embedded
//! store (its writer, and the reader that merges its stored deltas): pure functions from raw
//! Arrow batches to aggregate *deltas*, and the ordered maps that hold and merge them.
//!
//! The numbers must be the ones ClickHouse's materialized views give for the same events (a
//! parity test compares them), so the definitions here follow [`crate::tables`] to the letter:
//! - a day is `floor(occurred_at_ms / 86_400_000)` (a UTC calendar day, `Date32`); a month is
//!   the first day of its month (`Date32`); a year is the calendar year (`Int32`);
//! - `orders` rows count `orders_placed`; `order_status_changes` rows with
//!   `to_status = "Paid"` count `orders_paid` (per day, and per day and customer);
//!   `product_purchases` rows add `quantity` to `items_sold`/`units`, `revenue` to `revenue`,
//!   and 1 to `order_lines`; the customer's revenue is the revenue of their purchases.
//!
//! Money is kept as `i128` cents (the raw value of a `Decimal128(18, 2)`), so sums are exact.
//! Only rows that are new to the store may be fed in: the aggregates count every row they see.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use arrow_array::{
    Array, ArrayRef, Date32Array, Decimal128Array, Int32Array, RecordBatch, StringArray,
    TimestampMillisecondArray, UInt64Array,
};
use arrow_schema::DataType;
use chrono::{Datelike, NaiveDate};
use shoplens_contract::tables::{MONEY, OCCURRED_AT, RawTable};

use crate::tables::AggTable;

/// Milliseconds in a UTC day.
pub const MS_PER_DAY: i64 = 86_400_000;

/// Days from 0001-01-01 (chrono's "days from CE" origin, day 1) to 1970-01-01 (Date32's 0).
const EPOCH_DAYS_FROM_CE: i32 = 719_163;

/// The `to_status` that counts an order as paid.
pub const PAID: &str = "Paid";

/// A raw or aggregate batch lacks a column this module reads, or holds a value it cannot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AggregateError(String);

type Result<T, E = AggregateError> = std::result::Result<T, E>;

/// The UTC day (`Date32`: days since 1970-01-01) of a time in ms since the Unix epoch.
pub fn day_of(ms: i64) -> i32 {
    // Dates before 1970 round down too (floor, not truncation), as ClickHouse's `toDate`.
    ms.div_euclid(MS_PER_DAY) as i32
}

fn date_of(day: i32) -> NaiveDate {
    // A day past chrono's range (a hostile date literal) reads as its last or first day.
    day.checked_add(EPOCH_DAYS_FROM_CE)
        .and_then(NaiveDate::from_num_days_from_ce_opt)
        .unwrap_or(if day > 0 {
            NaiveDate::MAX
        } else {
            NaiveDate::MIN
        })
}

/// The first day of the month of `day` (both `Date32`).
pub fn month_of(day: i32) -> i32 {
    let date = date_of(day);
    date.with_day(1).unwrap_or(date).num_days_from_ce() - EPOCH_DAYS_FROM_CE
}

/// The Monday of the week of `day` (both `Date32`; 1970-01-01 was a Thursday), except that
/// the first days of 1970 (Thursday 1 to Sunday 4 January) are a week of their own starting
/// on 1 January, as in ClickHouse, whose `Date` starts there (`toMonday` clamps to it).
pub fn week_of(day: i32) -> i32 {
    if (0..4).contains(&day) {
        return 0;
    }
    day.saturating_sub((i64::from(day) + 3).rem_euclid(7) as i32)
}

/// The calendar year of `day` (`Date32`).
pub fn year_of(day: i32) -> i32 {
    date_of(day).year()
}

/// The sums of `daily_sales`, `monthly_sales` and `yearly_sales`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SalesSums {
    pub orders_placed: u64,
    pub orders_paid: u64,
    pub items_sold: u64,
    /// Cents.
    pub revenue: i128,
}

impl SalesSums {
    fn add(&mut self, other: &SalesSums) {
        self.orders_placed += other.orders_placed;
        self.orders_paid += other.orders_paid;
        self.items_sold += other.items_sold;
        self.revenue += other.revenue;
    }
}

/// The sums of `product_sales_daily`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProductSums {
    pub units: u64,
    /// Cents.
    pub revenue: i128,
    pub order_lines: u64,
}

impl ProductSums {
    fn add(&mut self, other: &ProductSums) {
        self.units += other.units;
        self.revenue += other.revenue;
        self.order_lines += other.order_lines;
    }
}

/// The sums of `customer_spend_daily`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CustomerSums {
    pub orders_paid: u64,
    /// Cents.
    pub revenue: i128,
}

impl CustomerSums {
    fn add(&mut self, other: &CustomerSums) {
        self.orders_paid += other.orders_paid;
        self.revenue += other.revenue;
    }
}

/// The state (or a delta) of every aggregate table, ordered by key.
///
/// Keys: `daily_sales` by day, `product_sales_daily` by (day, product id),
/// `customer_spend_daily` by (day, customer id), `monthly_sales` by the month's first day,
/// `yearly_sales` by year, the rollups by (the first day of their week or month, id). A key
/// is present only if some row contributed to it.
///
/// A rollup is its daily table summed by its grain: [`Aggregates::from_raw`] and
/// [`Aggregates::add_raw`] (the reference a store is compared with) fill both; a store's
/// writer keeps the daily tables alone ([`Aggregates::from_raw_daily`],
/// [`Aggregates::merge_record_batch`]), and readers derive the rollups
/// ([`Aggregates::roll_up`]).
///
/// A product or customer id is held once however many days and months it has rows on (an
/// [`Id`] shared through the state's interner): a year of a thousand customers is a
/// thousand strings, not one per (day, customer).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Aggregates {
    pub daily_sales: BTreeMap<i32, SalesSums>,
    pub product_sales_daily: BTreeMap<(i32, Id), ProductSums>,
    pub customer_spend_daily: BTreeMap<(i32, Id), CustomerSums>,
    pub monthly_sales: BTreeMap<i32, SalesSums>,
    pub yearly_sales: BTreeMap<i32, SalesSums>,
    pub product_sales_monthly: BTreeMap<(i32, Id), ProductSums>,
    pub customer_spend_monthly: BTreeMap<(i32, Id), CustomerSums>,
    pub product_sales_weekly: BTreeMap<(i32, Id), ProductSums>,
    pub customer_spend_weekly: BTreeMap<(i32, Id), CustomerSums>,
    ids: Interner,
}

/// A product or customer id in an aggregate key.
pub type Id = Arc<str>;

/// The ids an [`Aggregates`] holds, each once. Not part of its value: two states with the
/// same rows are equal whatever their interners hold.
#[derive(Debug, Clone, Default)]
struct Interner(HashSet<Id, foldhash::fast::RandomState>);

impl Interner {
    fn get(&mut self, id: &str) -> Id {
        if let Some(held) = self.0.get(id) {
            return held.clone();
        }
        let id: Id = Arc::from(id);
        self.0.insert(id.clone());
        id
    }
}

impl PartialEq for Interner {
    fn eq(&self, _: &Interner) -> bool {
        true
    }
}

impl Eq for Interner {}

impl Aggregates {
    pub fn new() -> Aggregates {
        Aggregates::default()
    }

    /// The delta that the given new raw rows contribute.
    pub fn from_raw<'a>(
        tables: impl IntoIterator<Item = (RawTable, &'a RecordBatch)>,
    ) -> Result<Aggregates> {
        let mut delta = Aggregates::new();
        for (table, batch) in tables {
            delta.add_raw(table, batch)?;
        }
        Ok(delta)
    }

    /// What the read model must hold for `events`, each event id counted once: the
    /// reference tests and reconciliation compare a sink with.
    pub fn of_events<'a>(
        events: impl IntoIterator<Item = &'a shoplens_contract::Envelope>,
    ) -> Aggregates {
        let mut seen = std::collections::HashSet::new();
        let unique = events.into_iter().filter(|e| seen.insert(e.event_id));
        let batches = shoplens_contract::tables::to_batches(unique);
        Aggregates::from_raw(batches.iter().map(|(t, b)| (*t, b)))
            .expect("`to_batches` builds the raw schemas")
    }

    /// The delta that the given new raw rows contribute to the stored tables, without the
    /// rollups (derived from the daily tables by whoever reads them, [`Aggregates::roll_up`]):
    /// what a store's writer keeps and writes.
    pub fn from_raw_daily<'a>(
        tables: impl IntoIterator<Item = (RawTable, &'a RecordBatch)>,
    ) -> Result<Aggregates> {
        let mut delta = Aggregates::new();
        for (table, batch) in tables {
            delta.add_raw_to(table, batch, false)?;
        }
        Ok(delta)
    }

    /// Adds what the rows of one raw batch contribute, rollups included. Tables that feed
    /// no aggregate are ignored. On error nothing has been added.
    pub fn add_raw(&mut self, table: RawTable, batch: &RecordBatch) -> Result<()> {
        self.add_raw_to(table, batch, true)
    }

    /// As [`Aggregates::add_raw`]; the rollups only if `rollups`.
    fn add_raw_to(&mut self, table: RawTable, batch: &RecordBatch, rollups: bool) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let name = table.name();
        match table {
            RawTable::Orders => {
                let at = timestamps(batch, name, OCCURRED_AT)?;
                for i in 0..batch.num_rows() {
                    self.add_sales(
                        day_of(at.value(i)),
                        &SalesSums {
                            orders_placed: 1,
                            ..SalesSums::default()
                        },
                    );
                }
            }
            RawTable::OrderStatusChanges => {
                let at = timestamps(batch, name, OCCURRED_AT)?;
                let customer = strings(batch, name, "customer_id")?;
                let to_status = strings(batch, name, "to_status")?;
                for i in 0..batch.num_rows() {
                    if to_status.value(i) != PAID {
                        continue;
                    }
                    let day = day_of(at.value(i));
                    self.add_sales(
                        day,
                        &SalesSums {
                            orders_paid: 1,
                            ..SalesSums::default()
                        },
                    );
                    self.add_customer(
                        day,
                        customer.value(i),
                        &CustomerSums {
                            orders_paid: 1,
                            revenue: 0,
                        },
                        rollups,
                    );
                }
            }
            RawTable::ProductPurchases => {
                let at = timestamps(batch, name, OCCURRED_AT)?;
                let customer = strings(batch, name, "customer_id")?;
                let product = strings(batch, name, "product_id")?;
                let quantity = int32s(batch, name, "quantity")?;
                let revenue = money(batch, name, "revenue")?;
                if let Some(i) = (0..batch.num_rows()).find(|&i| quantity.value(i) < 0) {
                    return Err(AggregateError(format!(
                        "table `{name}`: negative `quantity` {} in row {i}",
                        quantity.value(i)
                    )));
                }
                for i in 0..batch.num_rows() {
                    let day = day_of(at.value(i));
                    let units = quantity.value(i) as u64;
                    let cents = revenue.value(i);
                    self.add_sales(
                        day,
                        &SalesSums {
                            items_sold: units,
                            revenue: cents,
                            ..SalesSums::default()
                        },
                    );
                    self.add_product(
                        day,
                        product.value(i),
                        &ProductSums {
                            units,
                            revenue: cents,
                            order_lines: 1,
                        },
                        rollups,
                    );
                    self.add_customer(
                        day,
                        customer.value(i),
                        &CustomerSums {
                            orders_paid: 0,
                            revenue: cents,
                        },
                        rollups,
                    );
                }
            }
            RawTable::Customers | RawTable::Products | RawTable::Payments | RawTable::Shipments => {
            }
        }
        Ok(())
    }

    fn add_sales(&mut self, day: i32, sums: &SalesSums) {
        self.daily_sales.entry(day).or_default().add(sums);
        self.monthly_sales
            .entry(month_of(day))
            .or_default()
            .add(sums);
        self.yearly_sales.entry(year_of(day)).or_default().add(sums);
    }

    /// Adds to a day and product, and (if `rollups`) to its week and month.
    fn add_product(&mut self, day: i32, id: &str, sums: &ProductSums, rollups: bool) {
        let id = self.ids.get(id);
        for rollup in PRODUCT_ROLLUPS.into_iter().filter(|_| rollups) {
            let start = period_of(rollup, day);
            add_at(
                self.products_mut(rollup),
                start,
                &id,
                sums,
                ProductSums::add,
            );
        }
        add_at(
            &mut self.product_sales_daily,
            day,
            &id,
            sums,
            ProductSums::add,
        );
    }

    /// Adds to a day and customer, and (if `rollups`) to its week and month.
    fn add_customer(&mut self, day: i32, id: &str, sums: &CustomerSums, rollups: bool) {
        let id = self.ids.get(id);
        for rollup in CUSTOMER_ROLLUPS.into_iter().filter(|_| rollups) {
            let start = period_of(rollup, day);
            add_at(
                self.customers_mut(rollup),
                start,
                &id,
                sums,
                CustomerSums::add,
            );
        }
        add_at(
            &mut self.customer_spend_daily,
            day,
            &id,
            sums,
            CustomerSums::add,
        );
    }

    /// Adds a delta (or another state) key by key.
    pub fn merge(&mut self, delta: &Aggregates) {
        fn add<K: Ord + Clone, V: Default>(
            to: &mut BTreeMap<K, V>,
            from: &BTreeMap<K, V>,
            add: impl Fn(&mut V, &V),
        ) {
            for (k, v) in from {
                add(to.entry(k.clone()).or_default(), v);
            }
        }
        fn add_by_id<V: Default>(
            ids: &mut Interner,
            to: &mut BTreeMap<(i32, Id), V>,
            from: &BTreeMap<(i32, Id), V>,
            add: impl Fn(&mut V, &V),
        ) {
            for ((period, id), v) in from {
                match to.get_mut(&(*period, id.clone())) {
                    Some(held) => add(held, v),
                    None => add(to.entry((*period, ids.get(id))).or_default(), v),
                }
            }
        }
        add(&mut self.daily_sales, &delta.daily_sales, SalesSums::add);
        add(
            &mut self.monthly_sales,
            &delta.monthly_sales,
            SalesSums::add,
        );
        add(&mut self.yearly_sales, &delta.yearly_sales, SalesSums::add);
        for table in [AggTable::ProductSalesDaily]
            .into_iter()
            .chain(PRODUCT_ROLLUPS)
        {
            let (ids, to) = self.products_mut_with_ids(table);
            add_by_id(ids, to, delta.products(table), ProductSums::add);
        }
        for table in [AggTable::CustomerSpendDaily]
            .into_iter()
            .chain(CUSTOMER_ROLLUPS)
        {
            let (ids, to) = self.customers_mut_with_ids(table);
            add_by_id(ids, to, delta.customers(table), CustomerSums::add);
        }
    }

    /// A per-product table (daily or a rollup); any other table is read as the daily one.
    fn products(&self, table: AggTable) -> &BTreeMap<(i32, Id), ProductSums> {
        match table {
            AggTable::ProductSalesMonthly => &self.product_sales_monthly,
            AggTable::ProductSalesWeekly => &self.product_sales_weekly,
            _ => &self.product_sales_daily,
        }
    }

    fn products_mut(&mut self, table: AggTable) -> &mut BTreeMap<(i32, Id), ProductSums> {
        self.products_mut_with_ids(table).1
    }

    fn products_mut_with_ids(
        &mut self,
        table: AggTable,
    ) -> (&mut Interner, &mut BTreeMap<(i32, Id), ProductSums>) {
        let map = match table {
            AggTable::ProductSalesMonthly => &mut self.product_sales_monthly,
            AggTable::ProductSalesWeekly => &mut self.product_sales_weekly,
            _ => &mut self.product_sales_daily,
        };
        (&mut self.ids, map)
    }

    /// A per-customer table (daily or a rollup); any other table is read as the daily one.
    fn customers(&self, table: AggTable) -> &BTreeMap<(i32, Id), CustomerSums> {
        match table {
            AggTable::CustomerSpendMonthly => &self.customer_spend_monthly,
            AggTable::CustomerSpendWeekly => &self.customer_spend_weekly,
            _ => &self.customer_spend_daily,
        }
    }

    fn customers_mut(&mut self, table: AggTable) -> &mut BTreeMap<(i32, Id), CustomerSums> {
        self.customers_mut_with_ids(table).1
    }

    fn customers_mut_with_ids(
        &mut self,
        table: AggTable,
    ) -> (&mut Interner, &mut BTreeMap<(i32, Id), CustomerSums>) {
        let map = match table {
            AggTable::CustomerSpendMonthly => &mut self.customer_spend_monthly,
            AggTable::CustomerSpendWeekly => &mut self.customer_spend_weekly,
            _ => &mut self.customer_spend_daily,
        };
        (&mut self.ids, map)
    }

    /// Adds the rows of a batch of `rollup`'s daily table ([`AggTable::rolls_up`]) to
    /// `rollup` alone, each at the start of its week or month: how a reader derives a rollup
    /// from stored daily deltas without keeping the daily table too.
    pub fn roll_up(&mut self, rollup: AggTable, daily: &RecordBatch) -> Result<()> {
        let Some(source) = rollup.rolls_up() else {
            return Err(AggregateError(format!(
                "`{}` is not a rollup",
                rollup.name()
            )));
        };
        // The batch is read whole before anything is added: on error nothing is.
        let name = source.name();
        if source == AggTable::ProductSalesDaily {
            for ((day, id), sums) in product_rows(daily, name, "day")? {
                let (ids, to) = self.products_mut_with_ids(rollup);
                let id = ids.get(id);
                add_at(to, period_of(rollup, day), &id, &sums, ProductSums::add);
            }
        } else {
            for ((day, id), sums) in customer_rows(daily, name, "day")? {
                let (ids, to) = self.customers_mut_with_ids(rollup);
                let id = ids.get(id);
                add_at(to, period_of(rollup, day), &id, &sums, CustomerSums::add);
            }
        }
        Ok(())
    }

    /// Whether no row of any table is present.
    pub fn is_empty(&self) -> bool {
        AggTable::ALL.iter().all(|t| self.len(*t) == 0)
    }

    /// The number of rows (keys) of one table.
    pub fn len(&self, table: AggTable) -> usize {
        match table {
            AggTable::DailySales => self.daily_sales.len(),
            AggTable::ProductSalesDaily => self.product_sales_daily.len(),
            AggTable::CustomerSpendDaily => self.customer_spend_daily.len(),
            AggTable::MonthlySales => self.monthly_sales.len(),
            AggTable::YearlySales => self.yearly_sales.len(),
            AggTable::ProductSalesMonthly => self.product_sales_monthly.len(),
            AggTable::CustomerSpendMonthly => self.customer_spend_monthly.len(),
            AggTable::ProductSalesWeekly => self.product_sales_weekly.len(),
            AggTable::CustomerSpendWeekly => self.customer_spend_weekly.len(),
        }
    }

    /// One table's rows in its [`AggTable::schema`], sorted by key.
    pub fn to_record_batch(&self, table: AggTable) -> RecordBatch {
        self.rows_of(table, 0, usize::MAX)
    }

    /// Up to `len` rows of one table from row `start` (in key order), in its
    /// [`AggTable::schema`]: a big table written piece by piece.
    pub fn rows_of(&self, table: AggTable, start: usize, len: usize) -> RecordBatch {
        let columns: Vec<ArrayRef> = match table {
            AggTable::DailySales | AggTable::MonthlySales | AggTable::YearlySales => {
                let map = match table {
                    AggTable::DailySales => &self.daily_sales,
                    AggTable::MonthlySales => &self.monthly_sales,
                    _ => &self.yearly_sales,
                };
                let keys = map.keys().copied().skip(start).take(len);
                let key: ArrayRef = if table == AggTable::YearlySales {
                    Arc::new(Int32Array::from_iter_values(keys))
                } else {
                    Arc::new(Date32Array::from_iter_values(keys))
                };
                let values: Vec<&SalesSums> = map.values().skip(start).take(len).collect();
                sales_columns(key, &values)
            }
            AggTable::ProductSalesDaily
            | AggTable::ProductSalesMonthly
            | AggTable::ProductSalesWeekly => {
                let m: Vec<(&(i32, Id), &ProductSums)> =
                    self.products(table).iter().skip(start).take(len).collect();
                let (keys, values) = (|| m.iter().map(|e| e.0), || m.iter().map(|e| e.1));
                vec![
                    Arc::new(Date32Array::from_iter_values(keys().map(|k| k.0))),
                    Arc::new(StringArray::from_iter_values(keys().map(|k| &*k.1))),
                    Arc::new(UInt64Array::from_iter_values(values().map(|v| v.units))),
                    money_array(values().map(|v| v.revenue)),
                    Arc::new(UInt64Array::from_iter_values(
                        values().map(|v| v.order_lines),
                    )),
                ]
            }
            AggTable::CustomerSpendDaily
            | AggTable::CustomerSpendMonthly
            | AggTable::CustomerSpendWeekly => {
                let m: Vec<(&(i32, Id), &CustomerSums)> =
                    self.customers(table).iter().skip(start).take(len).collect();
                let (keys, values) = (|| m.iter().map(|e| e.0), || m.iter().map(|e| e.1));
                vec![
                    Arc::new(Date32Array::from_iter_values(keys().map(|k| k.0))),
                    Arc::new(StringArray::from_iter_values(keys().map(|k| &*k.1))),
                    Arc::new(UInt64Array::from_iter_values(
                        values().map(|v| v.orders_paid),
                    )),
                    money_array(values().map(|v| v.revenue)),
                ]
            }
        };
        RecordBatch::try_new(table.schema(), columns)
            .expect("aggregate columns always match their schema")
    }

    /// Adds the rows of a batch in `table`'s [`AggTable::schema`] (as written by
    /// [`Aggregates::to_record_batch`]), e.g. a stored delta, to `table` alone (a daily
    /// table's rollups are derived with [`Aggregates::roll_up`]). On error nothing has been
    /// added.
    pub fn merge_record_batch(&mut self, table: AggTable, batch: &RecordBatch) -> Result<()> {
        let name = table.name();
        let mut delta = Aggregates::new();
        match table {
            AggTable::DailySales | AggTable::MonthlySales | AggTable::YearlySales => {
                let keys: Vec<i32> = if table == AggTable::YearlySales {
                    int32s(batch, name, "year")?.values().to_vec()
                } else {
                    let key = if table == AggTable::DailySales {
                        "day"
                    } else {
                        "month"
                    };
                    dates(batch, name, key)?.values().to_vec()
                };
                let placed = uint64s(batch, name, "orders_placed")?;
                let paid = uint64s(batch, name, "orders_paid")?;
                let items = uint64s(batch, name, "items_sold")?;
                let revenue = money(batch, name, "revenue")?;
                let map = match table {
                    AggTable::DailySales => &mut delta.daily_sales,
                    AggTable::MonthlySales => &mut delta.monthly_sales,
                    _ => &mut delta.yearly_sales,
                };
                for (i, key) in keys.into_iter().enumerate() {
                    map.entry(key).or_default().add(&SalesSums {
                        orders_placed: placed.value(i),
                        orders_paid: paid.value(i),
                        items_sold: items.value(i),
                        revenue: revenue.value(i),
                    });
                }
            }
            AggTable::ProductSalesDaily => {
                for ((day, id), sums) in product_rows(batch, name, "day")? {
                    delta.add_product(day, id, &sums, false);
                }
            }
            AggTable::ProductSalesMonthly | AggTable::ProductSalesWeekly => {
                let period = table.schema().field(0).name().clone();
                for ((start, id), sums) in product_rows(batch, name, &period)? {
                    let (ids, to) = delta.products_mut_with_ids(table);
                    let id = ids.get(id);
                    add_at(to, start, &id, &sums, ProductSums::add);
                }
            }
            AggTable::CustomerSpendDaily => {
                for ((day, id), sums) in customer_rows(batch, name, "day")? {
                    delta.add_customer(day, id, &sums, false);
                }
            }
            AggTable::CustomerSpendMonthly | AggTable::CustomerSpendWeekly => {
                let period = table.schema().field(0).name().clone();
                for ((start, id), sums) in customer_rows(batch, name, &period)? {
                    let (ids, to) = delta.customers_mut_with_ids(table);
                    let id = ids.get(id);
                    add_at(to, start, &id, &sums, CustomerSums::add);
                }
            }
        }
        self.merge(&delta);
        Ok(())
    }
}

/// The rollups of `product_sales_daily` and of `customer_spend_daily`.
const PRODUCT_ROLLUPS: [AggTable; 2] =
    [AggTable::ProductSalesMonthly, AggTable::ProductSalesWeekly];
const CUSTOMER_ROLLUPS: [AggTable; 2] = [
    AggTable::CustomerSpendMonthly,
    AggTable::CustomerSpendWeekly,
];

/// The first day of `rollup`'s period holding `day`.
fn period_of(rollup: AggTable, day: i32) -> i32 {
    rollup.grain().map_or(day, |g| g.start(day))
}

/// The rows of a batch of a per-product table, keyed by (`period` column, product id).
fn product_rows<'a>(
    batch: &'a RecordBatch,
    name: &str,
    period: &str,
) -> Result<Vec<((i32, &'a str), ProductSums)>> {
    let period = dates(batch, name, period)?;
    let product = strings(batch, name, "product_id")?;
    let units = uint64s(batch, name, "units")?;
    let revenue = money(batch, name, "revenue")?;
    let lines = uint64s(batch, name, "order_lines")?;
    Ok((0..batch.num_rows())
        .map(|i| {
            let sums = ProductSums {
                units: units.value(i),
                revenue: revenue.value(i),
                order_lines: lines.value(i),
            };
            ((period.value(i), product.value(i)), sums)
        })
        .collect())
}

/// The rows of a batch of a per-customer table, keyed by (`period` column, customer id).
fn customer_rows<'a>(
    batch: &'a RecordBatch,
    name: &str,
    period: &str,
) -> Result<Vec<((i32, &'a str), CustomerSums)>> {
    let period = dates(batch, name, period)?;
    let customer = strings(batch, name, "customer_id")?;
    let paid = uint64s(batch, name, "orders_paid")?;
    let revenue = money(batch, name, "revenue")?;
    Ok((0..batch.num_rows())
        .map(|i| {
            let sums = CustomerSums {
                orders_paid: paid.value(i),
                revenue: revenue.value(i),
            };
            ((period.value(i), customer.value(i)), sums)
        })
        .collect())
}

/// Adds `sums` at (`period`, `id`).
fn add_at<V: Default>(
    map: &mut BTreeMap<(i32, Id), V>,
    period: i32,
    id: &Id,
    sums: &V,
    add: impl Fn(&mut V, &V),
) {
    add(map.entry((period, id.clone())).or_default(), sums);
}

fn sales_columns(key: ArrayRef, values: &[&SalesSums]) -> Vec<ArrayRef> {
    vec![
        key,
        Arc::new(UInt64Array::from_iter_values(
            values.iter().map(|v| v.orders_placed),
        )),
        Arc::new(UInt64Array::from_iter_values(
            values.iter().map(|v| v.orders_paid),
        )),
        Arc::new(UInt64Array::from_iter_values(
            values.iter().map(|v| v.items_sold),
        )),
        money_array(values.iter().map(|v| v.revenue)),
    ]
}

fn money_array(cents: impl Iterator<Item = i128>) -> ArrayRef {
    let DataType::Decimal128(precision, scale) = MONEY else {
        unreachable!("MONEY is a Decimal128")
    };
    Arc::new(
        Decimal128Array::from_iter_values(cents)
            .with_precision_and_scale(precision, scale)
            .expect("MONEY's precision and scale are valid"),
    )
}

/// A non-null column of the given type, or an error naming the table and column.
fn column<'a, T: Array + 'static>(
    batch: &'a RecordBatch,
    table: &str,
    name: &str,
    expected: &str,
) -> Result<&'a T> {
    let col = batch
        .column_by_name(name)
        .ok_or_else(|| AggregateError(format!("table `{table}`: no column `{name}`")))?;
    let typed = col.as_any().downcast_ref::<T>().ok_or_else(|| {
        AggregateError(format!(
            "table `{table}`: column `{name}` is {}, expected {expected}",
            col.data_type()
        ))
    })?;
    if typed.null_count() > 0 {
        return Err(AggregateError(format!(
            "table `{table}`: column `{name}` holds nulls"
        )));
    }
    Ok(typed)
}

fn timestamps<'a>(
    batch: &'a RecordBatch,
    table: &str,
    name: &str,
) -> Result<&'a TimestampMillisecondArray> {
    column(batch, table, name, "Timestamp(ms)")
}

fn strings<'a>(batch: &'a RecordBatch, table: &str, name: &str) -> Result<&'a StringArray> {
    column(batch, table, name, "Utf8")
}

fn int32s<'a>(batch: &'a RecordBatch, table: &str, name: &str) -> Result<&'a Int32Array> {
    column(batch, table, name, "Int32")
}

fn uint64s<'a>(batch: &'a RecordBatch, table: &str, name: &str) -> Result<&'a UInt64Array> {
    column(batch, table, name, "UInt64")
}

fn dates<'a>(batch: &'a RecordBatch, table: &str, name: &str) -> Result<&'a Date32Array> {
    column(batch, table, name, "Date32")
}

/// A money column: its raw values are cents only at [`MONEY`]'s scale.
fn money<'a>(batch: &'a RecordBatch, table: &str, name: &str) -> Result<&'a Decimal128Array> {
    let col: &Decimal128Array = column(batch, table, name, "Decimal128")?;
    if col.data_type() != &MONEY {
        return Err(AggregateError(format!(
            "table `{table}`: column `{name}` is {}, expected {MONEY}",
            col.data_type()
        )));
    }
    Ok(col)
}

#[cfg(test)]
mod tests {
    use super::*;

    use arrow_array::Decimal128Array;
    use arrow_array::builder::{Decimal128Builder, StringBuilder};

    /// 2026-11-25T10:00:00Z and friends.
    const NOV_25: i64 = 1_795_600_800_000;
    const NOV_30_LATE: i64 = 1_796_083_199_999; // 2026-11-30T23:59:59.999Z
    const DEC_01: i64 = 1_796_083_200_000; // 2026-12-01T00:00:00Z
    const JAN_01_2027: i64 = 1_798_761_600_000;

    fn ts(ms: &[i64]) -> ArrayRef {
        Arc::new(TimestampMillisecondArray::from(ms.to_vec()).with_timezone("UTC"))
    }

    fn utf8(v: &[&str]) -> ArrayRef {
        Arc::new(StringArray::from(v.to_vec()))
    }

    fn ids(n: usize) -> ArrayRef {
        utf8(&vec!["00000000-0000-7000-8000-000000000000"; n])
    }

    fn cents(v: &[i128]) -> ArrayRef {
        Arc::new(
            Decimal128Array::from(v.to_vec())
                .with_precision_and_scale(18, 2)
                .unwrap(),
        )
    }

    fn orders(at: &[i64]) -> RecordBatch {
        let n = at.len();
        RecordBatch::try_new(
            RawTable::Orders.schema(),
            vec![
                ids(n),
                ts(at),
                utf8(&vec!["o"; n]),
                utf8(&vec!["c"; n]),
                Arc::new(Int32Array::from(vec![1; n])),
                Arc::new(Int32Array::from(vec![1; n])),
                cents(&vec![100; n]),
                utf8(&vec!["EUR"; n]),
            ],
        )
        .unwrap()
    }

    fn status_changes(rows: &[(i64, &str, &str)]) -> RecordBatch {
        let n = rows.len();
        let mut from = StringBuilder::new();
        for _ in 0..n {
            from.append_null();
        }
        RecordBatch::try_new(
            RawTable::OrderStatusChanges.schema(),
            vec![
                ids(n),
                ts(&rows.iter().map(|r| r.0).collect::<Vec<_>>()),
                utf8(&vec!["o"; n]),
                utf8(&rows.iter().map(|r| r.1).collect::<Vec<_>>()),
                Arc::new(from.finish()),
                utf8(&rows.iter().map(|r| r.2).collect::<Vec<_>>()),
            ],
        )
        .unwrap()
    }

    /// (occurred_at, customer, product, quantity, revenue cents)
    fn purchases(rows: &[(i64, &str, &str, i32, i128)]) -> RecordBatch {
        let n = rows.len();
        let mut revenue = Decimal128Builder::new().with_data_type(MONEY);
        for r in rows {
            revenue.append_value(r.4);
        }
        RecordBatch::try_new(
            RawTable::ProductPurchases.schema(),
            vec![
                ids(n),
                ts(&rows.iter().map(|r| r.0).collect::<Vec<_>>()),
                utf8(&vec!["o"; n]),
                Arc::new(Int32Array::from_iter_values(1..=n as i32)),
                utf8(&rows.iter().map(|r| r.1).collect::<Vec<_>>()),
                utf8(&rows.iter().map(|r| r.2).collect::<Vec<_>>()),
                Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| r.3))),
                cents(&vec![0; n]),
                Arc::new(revenue.finish()),
                utf8(&vec!["EUR"; n]),
            ],
        )
        .unwrap()
    }

    fn date(y: i32, m: u32, d: u32) -> i32 {
        NaiveDate::from_ymd_opt(y, m, d).unwrap().num_days_from_ce() - EPOCH_DAYS_FROM_CE
    }

    #[test]
    fn days_months_and_years_are_utc_calendar_units() {
        assert_eq!(day_of(0), 0);
        assert_eq!(day_of(MS_PER_DAY - 1), 0);
        assert_eq!(day_of(-1), -1);
        assert_eq!(day_of(NOV_25), date(2026, 11, 25));
        assert_eq!(day_of(NOV_30_LATE), date(2026, 11, 30));
        assert_eq!(day_of(DEC_01), date(2026, 12, 1));
        assert_eq!(month_of(date(2026, 11, 30)), date(2026, 11, 1));
        assert_eq!(month_of(date(2024, 2, 29)), date(2024, 2, 1));
        assert_eq!(month_of(-1), date(1969, 12, 1));
        // Weeks start on Monday: 2026-11-30 was one, 1970-01-01 a Thursday.
        assert_eq!(week_of(date(2026, 11, 30)), date(2026, 11, 30));
        assert_eq!(week_of(date(2026, 12, 6)), date(2026, 11, 30));
        assert_eq!(week_of(date(2026, 12, 7)), date(2026, 12, 7));
        assert_eq!(week_of(-1), date(1969, 12, 29));
        assert_eq!(week_of(-4), date(1969, 12, 22));
        // ClickHouse's first week: its `Date` cannot hold 29 December 1969.
        assert_eq!(week_of(0), 0);
        assert_eq!(week_of(3), 0);
        assert_eq!(week_of(4), date(1970, 1, 5));
        assert_eq!(year_of(date(2026, 12, 31)), 2026);
        assert_eq!(year_of(day_of(JAN_01_2027)), 2027);
    }

    #[test]
    fn deltas_count_exactly_what_the_model_defines() {
        let o = orders(&[NOV_25, NOV_25 + 1000, DEC_01]);
        let s = status_changes(&[
            (NOV_30_LATE, "alice", "Paid"),
            (NOV_30_LATE, "bob", "Placed"),
            (DEC_01, "alice", "Paid"),
            (DEC_01, "bob", "Cancelled"),
        ]);
        let p = purchases(&[
            (NOV_30_LATE, "alice", "p1", 2, 1998),
            (NOV_30_LATE, "alice", "p2", 1, 500),
            (DEC_01, "alice", "p1", 3, 2997),
            (JAN_01_2027, "bob", "p1", 1, 999),
        ]);
        let agg = Aggregates::from_raw([
            (RawTable::Orders, &o),
            (RawTable::OrderStatusChanges, &s),
            (RawTable::ProductPurchases, &p),
        ])
        .unwrap();

        let sales = |placed, paid, items, revenue| SalesSums {
            orders_placed: placed,
            orders_paid: paid,
            items_sold: items,
            revenue,
        };
        let daily: Vec<_> = agg.daily_sales.iter().map(|(k, v)| (*k, *v)).collect();
        assert_eq!(
            daily,
            vec![
                (date(2026, 11, 25), sales(2, 0, 0, 0)),
                (date(2026, 11, 30), sales(0, 1, 3, 2498)),
                (date(2026, 12, 1), sales(1, 1, 3, 2997)),
                (date(2027, 1, 1), sales(0, 0, 1, 999)),
            ]
        );
        let monthly: Vec<_> = agg.monthly_sales.iter().map(|(k, v)| (*k, *v)).collect();
        assert_eq!(
            monthly,
            vec![
                (date(2026, 11, 1), sales(2, 1, 3, 2498)),
                (date(2026, 12, 1), sales(1, 1, 3, 2997)),
                (date(2027, 1, 1), sales(0, 0, 1, 999)),
            ]
        );
        let yearly: Vec<_> = agg.yearly_sales.iter().map(|(k, v)| (*k, *v)).collect();
        assert_eq!(
            yearly,
            vec![(2026, sales(3, 2, 6, 5495)), (2027, sales(0, 0, 1, 999))]
        );
        let product = |units, revenue, order_lines| ProductSums {
            units,
            revenue,
            order_lines,
        };
        let products: Vec<_> = agg
            .product_sales_daily
            .iter()
            .map(|((d, p), v)| (*d, &**p, *v))
            .collect();
        assert_eq!(
            products,
            vec![
                (date(2026, 11, 30), "p1", product(2, 1998, 1)),
                (date(2026, 11, 30), "p2", product(1, 500, 1)),
                (date(2026, 12, 1), "p1", product(3, 2997, 1)),
                (date(2027, 1, 1), "p1", product(1, 999, 1)),
            ]
        );
        let customer = |orders_paid, revenue| CustomerSums {
            orders_paid,
            revenue,
        };
        let customers: Vec<_> = agg
            .customer_spend_daily
            .iter()
            .map(|((d, c), v)| (*d, &**c, *v))
            .collect();
        assert_eq!(
            customers,
            vec![
                (date(2026, 11, 30), "alice", customer(1, 2498)),
                (date(2026, 12, 1), "alice", customer(1, 2997)),
                (date(2027, 1, 1), "bob", customer(0, 999)),
            ]
        );
        // The month rollups: November's two days of p1 and alice are one month row.
        let products_monthly: Vec<_> = agg
            .product_sales_monthly
            .iter()
            .map(|((m, p), v)| (*m, &**p, *v))
            .collect();
        assert_eq!(
            products_monthly,
            vec![
                (date(2026, 11, 1), "p1", product(2, 1998, 1)),
                (date(2026, 11, 1), "p2", product(1, 500, 1)),
                (date(2026, 12, 1), "p1", product(3, 2997, 1)),
                (date(2027, 1, 1), "p1", product(1, 999, 1)),
            ]
        );
        let customers_monthly: Vec<_> = agg
            .customer_spend_monthly
            .iter()
            .map(|((m, c), v)| (*m, &**c, *v))
            .collect();
        assert_eq!(
            customers_monthly,
            vec![
                (date(2026, 11, 1), "alice", customer(1, 2498)),
                (date(2026, 12, 1), "alice", customer(1, 2997)),
                (date(2027, 1, 1), "bob", customer(0, 999)),
            ]
        );
        // The week rollup: Monday 30 November and Tuesday 1 December are one week; Friday
        // 1 January 2027 is in the week of Monday 28 December.
        let customers_weekly: Vec<_> = agg
            .customer_spend_weekly
            .iter()
            .map(|((w, c), v)| (*w, &**c, *v))
            .collect();
        assert_eq!(
            customers_weekly,
            vec![
                (date(2026, 11, 30), "alice", customer(2, 5495)),
                (date(2026, 12, 28), "bob", customer(0, 999)),
            ]
        );
    }

    #[test]
    fn a_table_read_in_pieces_is_the_whole_table() {
        let p = purchases(&[
            (NOV_25, "a", "p1", 2, 200),
            (DEC_01, "b", "p2", 1, 50),
            (DEC_01, "a", "p1", 1, 100),
        ]);
        let o = orders(&[NOV_25, DEC_01]);
        let agg = Aggregates::from_raw([(RawTable::ProductPurchases, &p), (RawTable::Orders, &o)])
            .unwrap();
        for table in AggTable::ALL {
            let whole = agg.to_record_batch(table);
            let pieces: Vec<RecordBatch> = (0..whole.num_rows() + 2)
                .step_by(2)
                .map(|start| agg.rows_of(table, start, 2))
                .collect();
            let joined = arrow_select::concat::concat_batches(&whole.schema(), &pieces).unwrap();
            assert_eq!(joined, whole, "{}", table.name());
            assert_eq!(agg.rows_of(table, whole.num_rows(), 5).num_rows(), 0);
        }
    }

    #[test]
    fn a_state_holds_each_id_once_across_days_and_deltas() {
        let mut state = Aggregates::new();
        for (at, customer) in [(NOV_25, "a"), (DEC_01, "a"), (DEC_01, "b")] {
            let p = purchases(&[(at, customer, "p1", 1, 100)]);
            state.merge(&Aggregates::from_raw([(RawTable::ProductPurchases, &p)]).unwrap());
        }
        let held: Vec<&Id> = state
            .customer_spend_daily
            .keys()
            .chain(state.customer_spend_monthly.keys())
            .filter(|(_, id)| &**id == "a")
            .map(|(_, id)| id)
            .collect();
        assert_eq!(held.len(), 4, "two days and two months of customer a");
        assert!(held.iter().all(|id| Arc::ptr_eq(id, held[0])));
        let p1: Vec<&Id> = state.product_sales_daily.keys().map(|(_, id)| id).collect();
        assert!(p1.iter().all(|id| Arc::ptr_eq(id, p1[0])));
    }

    #[test]
    fn merging_deltas_equals_aggregating_everything_at_once() {
        let p1 = purchases(&[(NOV_25, "a", "p1", 2, 200), (DEC_01, "b", "p2", 1, 50)]);
        let p2 = purchases(&[(NOV_25, "a", "p1", 5, 500)]);
        let o = orders(&[NOV_25]);
        let mut merged = Aggregates::from_raw([(RawTable::ProductPurchases, &p1)]).unwrap();
        merged.merge(&Aggregates::from_raw([(RawTable::ProductPurchases, &p2)]).unwrap());
        merged.merge(&Aggregates::from_raw([(RawTable::Orders, &o)]).unwrap());
        let all = Aggregates::from_raw([
            (RawTable::ProductPurchases, &p1),
            (RawTable::Orders, &o),
            (RawTable::ProductPurchases, &p2),
        ])
        .unwrap();
        assert_eq!(merged, all);
        assert_eq!(
            merged.daily_sales[&day_of(NOV_25)],
            SalesSums {
                orders_placed: 1,
                orders_paid: 0,
                items_sold: 7,
                revenue: 700
            }
        );
    }

    #[test]
    fn record_batches_have_the_model_schema_sorted_by_key_and_round_trip() {
        let p = purchases(&[
            (DEC_01, "zed", "p9", 1, 12345),
            (NOV_25, "amy", "p2", 2, 1),
            (NOV_25, "amy", "p10", 4, 7),
        ]);
        let s = status_changes(&[(NOV_25, "amy", "Paid")]);
        let agg = Aggregates::from_raw([
            (RawTable::ProductPurchases, &p),
            (RawTable::OrderStatusChanges, &s),
        ])
        .unwrap();

        let batch = agg.to_record_batch(AggTable::ProductSalesDaily);
        assert_eq!(batch.schema(), AggTable::ProductSalesDaily.schema());
        let days = batch
            .column(0)
            .as_any()
            .downcast_ref::<Date32Array>()
            .unwrap();
        let products = batch
            .column(1)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        let keys: Vec<_> = (0..batch.num_rows())
            .map(|i| (days.value(i), products.value(i)))
            .collect();
        let (nov, dec) = (day_of(NOV_25), day_of(DEC_01));
        assert_eq!(keys, vec![(nov, "p10"), (nov, "p2"), (dec, "p9")]);
        let revenue = batch
            .column(3)
            .as_any()
            .downcast_ref::<Decimal128Array>()
            .unwrap();
        assert_eq!(revenue.value_as_string(2), "123.45");

        let daily = agg.to_record_batch(AggTable::DailySales);
        assert_eq!(daily.schema(), AggTable::DailySales.schema());
        assert_eq!(daily.num_rows(), 2);
        let yearly = agg.to_record_batch(AggTable::YearlySales);
        assert_eq!(yearly.schema(), AggTable::YearlySales.schema());
        let years = yearly
            .column(0)
            .as_any()
            .downcast_ref::<Int32Array>()
            .unwrap();
        assert_eq!(years.values().to_vec(), vec![2026]);

        // Every table comes back from the stored tables' rows, the rollups rolled up from
        // their daily tables'; a stored table's rows add to it alone.
        let mut back = Aggregates::new();
        for table in AggTable::ALL.into_iter().filter(|t| t.rolls_up().is_none()) {
            back.merge_record_batch(table, &agg.to_record_batch(table))
                .unwrap();
        }
        for rollup in PRODUCT_ROLLUPS.into_iter().chain(CUSTOMER_ROLLUPS) {
            assert_eq!(back.len(rollup), 0, "{}", rollup.name());
            let daily = agg.to_record_batch(rollup.rolls_up().unwrap());
            back.roll_up(rollup, &daily).unwrap();
        }
        assert_eq!(back, agg);
        // And on its own, from its own rows or its daily table's.
        for rollup in PRODUCT_ROLLUPS.into_iter().chain(CUSTOMER_ROLLUPS) {
            let rows = agg.to_record_batch(rollup);
            assert_eq!(rows.schema(), rollup.schema());
            let mut own = Aggregates::new();
            own.merge_record_batch(rollup, &rows).unwrap();
            let mut rolled = Aggregates::new();
            let daily = agg.to_record_batch(rollup.rolls_up().unwrap());
            rolled.roll_up(rollup, &daily).unwrap();
            assert_eq!(rolled, own);
            assert_eq!(rolled.to_record_batch(rollup), rows);
            assert_eq!(rolled.len(rollup.rolls_up().unwrap()), 0);
        }
        assert!(
            Aggregates::new()
                .roll_up(AggTable::DailySales, &daily)
                .is_err()
        );
    }

    #[test]
    fn a_writers_delta_holds_the_stored_tables_alone() {
        let p = purchases(&[(NOV_25, "a", "p1", 2, 200), (DEC_01, "b", "p2", 1, 50)]);
        let o = orders(&[NOV_25, DEC_01]);
        let raw = [(RawTable::ProductPurchases, &p), (RawTable::Orders, &o)];
        let all = Aggregates::from_raw(raw).unwrap();
        let daily = Aggregates::from_raw_daily(raw).unwrap();
        for table in AggTable::ALL {
            if table.rolls_up().is_some() {
                assert!(all.len(table) > 0, "{}", table.name());
                assert_eq!(daily.len(table), 0, "{}", table.name());
            } else {
                assert_eq!(
                    daily.to_record_batch(table),
                    all.to_record_batch(table),
                    "{}",
                    table.name()
                );
            }
        }
    }

    #[test]
    fn tables_without_aggregates_contribute_nothing_and_bad_batches_are_errors() {
        let empty = RecordBatch::new_empty(RawTable::Payments.schema());
        let agg = Aggregates::from_raw([(RawTable::Payments, &empty)]).unwrap();
        assert!(agg.is_empty());

        // An orders batch handed in as purchases lacks `quantity`.
        let o = orders(&[NOV_25]);
        let err = Aggregates::from_raw([(RawTable::ProductPurchases, &o)]).unwrap_err();
        assert!(err.to_string().contains("`product_id`"), "{err}");
        let err = Aggregates::new()
            .merge_record_batch(AggTable::DailySales, &o)
            .unwrap_err();
        assert!(err.to_string().contains("daily_sales"), "{err}");
    }
}
