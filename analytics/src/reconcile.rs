//! Reconciliation: the read model against the sources of truth. The services' own figures
//! come from the composer's ledger (`/api/v1/sales/ledger`, which pages through every order
//! of the order service); the read model's come from the aggregate tables (`daily_sales`,
//! `product_sales_daily`, `customer_spend_daily` (read through their week and month rollups
//! for the range's whole weeks and months, `crate::rollup`), and `monthly_sales` and
//! `yearly_sales` for the whole months and years inside the range) for the same range. Every field of every day,
//! month, year, product and customer is compared, and each difference is reported with its
//! key.
//!
//! The read model is eventually consistent, so a difference on a busy system may be lag,
//! not loss: the report carries the read model's freshness and the events on the bus it has
//! not applied yet (where known), and the client's `settle` re-checks until the two agree or
//! time runs out. Events still waiting in a service's outbox are not on the bus yet either.
//!
//! This is the one place the analytics server reads anything but the read model, and it
//! does so only through the composer's admin API, never from a service directly.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use shoplens_contract::sales::{
    CustomerSums, DateRange, LedgerReport, Period, ProductSums, Sums, add_records,
};
use shoplens_readmodel::freshness::FreshnessReport;

use crate::AnalyticsError;
use crate::config::ReconcileConfig;
use crate::dashboard::Columns;
use crate::engine::Engine;

/// Which kind of key a difference is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Day,
    /// A whole month inside the range (`monthly_sales`), keyed by its first day.
    Month,
    /// A whole year inside the range (`yearly_sales`).
    Year,
    Product,
    Customer,
    /// Another service's records in one state on one day (`shoplens_contract::sales::
    /// RecordCount`), keyed `{entity} {day} {kind}`: the raw event tables against the
    /// payment, shipping, customer and product services.
    Records,
}

/// One field of one key on which the two sides disagree. Counts are numbers, money is a
/// decimal string; a key one side does not have counts as zero there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Difference {
    pub scope: Scope,
    /// The day (`YYYY-MM-DD`), product id or customer id.
    pub key: String,
    pub field: String,
    pub source_of_truth: Value,
    pub read_model: Value,
}

/// How many keys of each kind were compared (the union of both sides).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checked {
    pub days: usize,
    #[serde(default)]
    pub months: usize,
    #[serde(default)]
    pub years: usize,
    pub products: usize,
    pub customers: usize,
    /// (entity, day, state) keys of the other services' records.
    #[serde(default)]
    pub records: usize,
}

/// The services' side of a report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceOfTruth {
    /// When the composer summed the services' data.
    pub computed_at: DateTime<Utc>,
    pub orders_scanned: u64,
}

/// The outcome of one reconciliation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReconcileReport {
    pub from: NaiveDate,
    pub to: NaiveDate,
    /// Every compared field of every key is equal.
    pub matches: bool,
    /// `embedded` or `clickhouse`.
    pub back_end: String,
    pub source_of_truth: SourceOfTruth,
    /// How fresh the read model was when it was read (`as_of`, `lag_ms`, and `lag_events`:
    /// events on the bus not applied yet, `null` where this server cannot know).
    pub read_model: FreshnessReport,
    pub checked: Checked,
    /// All differences found (the list may be cut short, see `truncated`).
    pub difference_count: usize,
    pub differences: Vec<Difference>,
    pub truncated: bool,
    /// What the outcome means, for an operator (lag or not).
    pub note: String,
}

/// The read model's per-key sums for a range.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReadModelSums {
    pub daily: BTreeMap<NaiveDate, Sums>,
    /// `monthly_sales` of the whole months inside the range, by first day.
    pub monthly: BTreeMap<NaiveDate, Sums>,
    /// `yearly_sales` of the whole years inside the range.
    pub yearly: BTreeMap<i32, Sums>,
    pub products: BTreeMap<String, ProductSums>,
    pub customers: BTreeMap<String, CustomerSums>,
    /// The raw tables' records per (entity, day, state): count and amount.
    pub records: RecordSums,
}

/// How the raw event tables give each service's records, as `RecordCount`s (`shoplens_contract::sales`): per record
/// (its id) the latest event's type, which names its state, the day of that event and the
/// record's amount; or, for customers and products, the day of the event that created
/// them.
struct RecordSource {
    entity: &'static str,
    /// Rows of (day, kind, count, amount).
    sql: &'static str,
    /// Event type → the state the service calls it.
    states: &'static [(&'static str, &'static str)],
}

/// Records per (entity, day, state): their count and amount.
pub type RecordSums = BTreeMap<(String, NaiveDate, String), (u64, Option<Decimal>)>;

const RECORDS: &[RecordSource] = &[
    RecordSource {
        entity: "payments",
        sql: "SELECT CAST(to_timestamp_millis(last_at) AS DATE), kind, \
                arrow_cast(COUNT(*), 'UInt64'), SUM(amount) \
         FROM (SELECT payment_id, MAX(occurred_at) AS last_at, \
                      last_value(event_type ORDER BY occurred_at, event_id) AS kind, \
                      MAX(amount) AS amount \
               FROM payment_events GROUP BY payment_id) AS p \
         GROUP BY 1, 2",
        states: &[
            ("PaymentCompleted", "Success"),
            ("PaymentFailed", "Failed"),
            ("PaymentRefunded", "Refunded"),
        ],
    },
    RecordSource {
        entity: "shipments",
        sql: "SELECT CAST(to_timestamp_millis(last_at) AS DATE), kind, \
                arrow_cast(COUNT(*), 'UInt64'), NULL \
         FROM (SELECT shipment_id, MAX(occurred_at) AS last_at, \
                      last_value(event_type ORDER BY occurred_at, event_id) AS kind \
               FROM shipment_events GROUP BY shipment_id) AS s \
         GROUP BY 1, 2",
        states: &[
            ("ShipmentCreated", "Created"),
            ("ShipmentLocationUpdated", "InTransit"),
            ("ShipmentDelivered", "Delivered"),
        ],
    },
    RecordSource {
        entity: "customers",
        sql: "SELECT CAST(to_timestamp_millis(MIN(occurred_at)) AS DATE), 'registered', \
                arrow_cast(1, 'UInt64'), NULL \
         FROM customer_events WHERE event_type = 'CustomerRegistered' GROUP BY customer_id",
        states: &[],
    },
    RecordSource {
        entity: "products",
        sql: "SELECT CAST(to_timestamp_millis(MIN(occurred_at)) AS DATE), 'created', \
                arrow_cast(1, 'UInt64'), NULL \
         FROM product_events WHERE event_type = 'ProductCreated' GROUP BY product_id",
        states: &[],
    },
];

/// The raw tables' side of the services' `RecordCount`s, for the days of `range`.
pub async fn read_model_records(
    engine: &Engine,
    range: &DateRange,
) -> Result<RecordSums, AnalyticsError> {
    let reads = RECORDS.iter().map(|source| async move {
        let RecordSource {
            entity,
            sql,
            states,
        } = source;
        let stream = engine.export(crate::privacy::Pii::Visible, sql).await?;
        let batches: Vec<arrow_array::RecordBatch> =
            futures::TryStreamExt::try_collect(stream).await?;
        let mut out = Vec::new();
        for b in &batches {
            let c = Columns(b);
            for i in 0..b.num_rows() {
                let day = c.date(0, i);
                if day < range.from || day > range.to {
                    continue;
                }
                let kind = c.string(1, i).unwrap_or_default();
                let kind = states
                    .iter()
                    .find(|(event, _)| *event == kind)
                    .map_or(kind.clone(), |(_, state)| (*state).to_owned());
                let amount = (!b.column(3).is_null(i)).then(|| c.money(3, i));
                out.push(((entity.to_string(), day, kind), (c.u64(2, i), amount)));
            }
        }
        Ok::<_, AnalyticsError>(out)
    });
    let mut records = RecordSums::new();
    for rows in futures::future::try_join_all(reads).await? {
        for (key, (count, amount)) in rows {
            add_records(records.entry(key).or_default(), count, amount);
        }
    }
    Ok(records)
}

/// Fetches the services' ledger and compares the read model with it.
#[derive(Clone)]
pub struct Reconciler {
    config: ReconcileConfig,
    http: reqwest::Client,
    /// The server's own identity, when no token is configured.
    identity: shoplens_kit::identity::ServiceToken,
}

impl Reconciler {
    /// `None` when `config` does not say where the composer is. Calls carry
    /// `config.composer_token`, or a service token of `auth`'s key.
    pub fn new(
        config: &ReconcileConfig,
        auth: &shoplens_kit::identity::AuthConfig,
    ) -> Option<Reconciler> {
        if !config.is_configured() {
            return None;
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.timeout_ms))
            .build()
            .ok()?;
        Some(Reconciler {
            config: config.clone(),
            http,
            identity: shoplens_kit::identity::ServiceToken::new(auth, "analytics"),
        })
    }

    fn token(&self) -> String {
        if self.config.composer_token.is_empty() {
            self.identity.token()
        } else {
            self.config.composer_token.clone()
        }
    }

    /// The services' own figures for `range`.
    pub async fn ledger(&self, range: &DateRange) -> Result<LedgerReport, AnalyticsError> {
        let url = format!(
            "{}/api/v1/sales/ledger?from={}&to={}",
            self.config.composer_url.trim_end_matches('/'),
            range.from,
            range.to
        );
        let failed = |e: &dyn std::fmt::Display| AnalyticsError::SourceOfTruth(e.to_string());
        let resp = self
            .http
            .get(&url)
            .bearer_auth(self.token())
            .send()
            .await
            .map_err(|e| failed(&e))?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            let body: String = body.chars().take(300).collect();
            return Err(failed(&format!("{status}: {body}")));
        }
        resp.json().await.map_err(|e| failed(&e))
    }

    /// Compares the read model behind `engine` with the services for `range`.
    pub async fn reconcile(
        &self,
        engine: &Engine,
        range: DateRange,
    ) -> Result<ReconcileReport, AnalyticsError> {
        // Both sides at (nearly) the same moment, so a quiet shop compares like with like.
        let (ledger, read_model) = tokio::join!(self.ledger(&range), async {
            let freshness = engine.freshness().await?;
            let mut sums = read_model_sums(engine, &range).await?;
            sums.records = read_model_records(engine, &range).await?;
            Ok::<_, AnalyticsError>((freshness, sums))
        });
        let ledger = ledger?;
        let (freshness, sums) = read_model?;
        Ok(report(
            &ledger,
            &sums,
            freshness,
            engine.back_end(),
            self.config.max_differences,
        ))
    }
}

/// The read model's per-day, per-product and per-customer sums for `range`, by SQL over the
/// aggregate tables (the export session: no row limit).
pub async fn read_model_sums(
    engine: &Engine,
    range: &DateRange,
) -> Result<ReadModelSums, AnalyticsError> {
    let collect = |sql: String| async move {
        let stream = engine.export(crate::privacy::Pii::Visible, &sql).await?;
        let batches: Vec<arrow_array::RecordBatch> =
            futures::TryStreamExt::try_collect(stream).await?;
        Ok::<_, AnalyticsError>(batches)
    };
    let r = range.sql("day");
    let (months, years) = whole_periods(range);
    let month_range = match (months.first(), months.last()) {
        (Some(first), Some(last)) => format!("month BETWEEN DATE '{first}' AND DATE '{last}'"),
        _ => "FALSE".to_owned(),
    };
    let year_range = match (years.first(), years.last()) {
        (Some(first), Some(last)) => format!("year BETWEEN {first} AND {last}"),
        _ => "FALSE".to_owned(),
    };
    let (daily, monthly, yearly, products, customers) = tokio::try_join!(
        collect(format!(
            "SELECT day, SUM(orders_placed), SUM(orders_paid), SUM(items_sold), SUM(revenue) \
             FROM daily_sales WHERE {r} GROUP BY day"
        )),
        collect(format!(
            "SELECT month, SUM(orders_placed), SUM(orders_paid), SUM(items_sold), \
                    SUM(revenue) FROM monthly_sales WHERE {month_range} GROUP BY month"
        )),
        collect(format!(
            "SELECT year, SUM(orders_placed), SUM(orders_paid), SUM(items_sold), \
                    SUM(revenue) FROM yearly_sales WHERE {year_range} GROUP BY year"
        )),
        collect(format!(
            "SELECT product_id, SUM(units), SUM(revenue), SUM(order_lines) \
             FROM product_sales_daily WHERE {r} GROUP BY product_id"
        )),
        collect(format!(
            "SELECT customer_id, SUM(orders_paid), SUM(revenue) \
             FROM customer_spend_daily WHERE {r} GROUP BY customer_id"
        )),
    )?;
    let sums = |c: &Columns, i: usize| Sums {
        orders_placed: c.u64(1, i),
        orders_paid: c.u64(2, i),
        items_sold: c.u64(3, i),
        revenue: c.money(4, i),
    };
    let mut out = ReadModelSums::default();
    for b in &daily {
        let c = Columns(b);
        for i in 0..b.num_rows() {
            out.daily.insert(c.date(0, i), sums(&c, i));
        }
    }
    for b in &monthly {
        let c = Columns(b);
        for i in 0..b.num_rows() {
            out.monthly.insert(c.date(0, i), sums(&c, i));
        }
    }
    for b in &yearly {
        let c = Columns(b);
        for i in 0..b.num_rows() {
            out.yearly.insert(c.i32(0, i), sums(&c, i));
        }
    }
    for b in &products {
        let c = Columns(b);
        for i in 0..b.num_rows() {
            out.products.insert(
                c.string(0, i).unwrap_or_default(),
                ProductSums {
                    units: c.u64(1, i),
                    revenue: c.money(2, i),
                    order_lines: c.u64(3, i),
                },
            );
        }
    }
    for b in &customers {
        let c = Columns(b);
        for i in 0..b.num_rows() {
            out.customers.insert(
                c.string(0, i).unwrap_or_default(),
                CustomerSums {
                    orders_paid: c.u64(1, i),
                    revenue: c.money(2, i),
                },
            );
        }
    }
    Ok(out)
}

/// The whole months (their first days) and whole years inside `range`.
pub fn whole_periods(range: &DateRange) -> (Vec<NaiveDate>, Vec<i32>) {
    let whole = |period: Period| {
        let mut start = period.start(range.from);
        if start < range.from {
            start = period.next(start);
        }
        let mut starts = Vec::new();
        while period
            .next(start)
            .pred_opt()
            .is_some_and(|end| end <= range.to)
        {
            starts.push(start);
            start = period.next(start);
        }
        starts
    };
    let years = whole(Period::Year).iter().map(|y| y.year()).collect();
    (whole(Period::Month), years)
}

/// Collects differences, keeping at most `max` of them but counting all.
struct Diffs {
    max: usize,
    count: usize,
    list: Vec<Difference>,
}

impl Diffs {
    fn count(&mut self, scope: Scope, key: &str, field: &str, truth: u64, read: u64) {
        if truth != read {
            self.push(scope, key, field, Value::from(truth), Value::from(read));
        }
    }

    fn money(&mut self, scope: Scope, key: &str, field: &str, truth: Decimal, read: Decimal) {
        // Decimal equality is by value: 7.5 equals 7.50.
        if truth != read {
            let s = |d: Decimal| Value::from(d.normalize().to_string());
            self.push(scope, key, field, s(truth), s(read));
        }
    }

    fn push(&mut self, scope: Scope, key: &str, field: &str, truth: Value, read: Value) {
        self.count += 1;
        if self.list.len() < self.max {
            self.list.push(Difference {
                scope,
                key: key.to_owned(),
                field: field.to_owned(),
                source_of_truth: truth,
                read_model: read,
            });
        }
    }
}

/// The comparison itself: every key either side has, every field.
pub fn report(
    ledger: &LedgerReport,
    read: &ReadModelSums,
    freshness: FreshnessReport,
    back_end: &str,
    max_differences: usize,
) -> ReconcileReport {
    let mut d = Diffs {
        max: max_differences,
        count: 0,
        list: Vec::new(),
    };
    let in_range = |day: &NaiveDate| (ledger.from..=ledger.to).contains(day);
    let truth_days: BTreeMap<NaiveDate, Sums> = ledger
        .daily
        .iter()
        .filter(|r| in_range(&r.day))
        .map(|r| {
            let sums = Sums {
                orders_placed: r.orders_placed,
                orders_paid: r.orders_paid,
                items_sold: r.items_sold,
                revenue: r.revenue,
            };
            (r.day, sums)
        })
        .collect();
    let days: BTreeSet<&NaiveDate> = truth_days
        .keys()
        .chain(read.daily.keys().filter(|d| in_range(d)))
        .collect();
    for day in &days {
        let (t, r) = (
            truth_days.get(day).copied().unwrap_or_default(),
            read.daily.get(day).copied().unwrap_or_default(),
        );
        let key = day.to_string();
        let s = Scope::Day;
        d.count(s, &key, "orders_placed", t.orders_placed, r.orders_placed);
        d.count(s, &key, "orders_paid", t.orders_paid, r.orders_paid);
        d.count(s, &key, "items_sold", t.items_sold, r.items_sold);
        d.money(s, &key, "revenue", t.revenue, r.revenue);
    }
    // Whole months and years: the ledger's days summed, against their own tables.
    let range = DateRange {
        from: ledger.from,
        to: ledger.to,
    };
    let (months, years) = whole_periods(&range);
    let add = |into: &mut Sums, s: &Sums| {
        into.orders_placed += s.orders_placed;
        into.orders_paid += s.orders_paid;
        into.items_sold += s.items_sold;
        into.revenue += s.revenue;
    };
    let mut truth_months: BTreeMap<NaiveDate, Sums> = BTreeMap::new();
    let mut truth_years: BTreeMap<i32, Sums> = BTreeMap::new();
    for (day, sums) in &truth_days {
        let month = Period::Month.start(*day);
        if months.contains(&month) {
            add(truth_months.entry(month).or_default(), sums);
        }
        if years.contains(&day.year()) {
            add(truth_years.entry(day.year()).or_default(), sums);
        }
    }
    let mut periods = |scope: Scope, key: String, t: Sums, r: Sums| {
        d.count(
            scope,
            &key,
            "orders_placed",
            t.orders_placed,
            r.orders_placed,
        );
        d.count(scope, &key, "orders_paid", t.orders_paid, r.orders_paid);
        d.count(scope, &key, "items_sold", t.items_sold, r.items_sold);
        d.money(scope, &key, "revenue", t.revenue, r.revenue);
    };
    for month in &months {
        let t = truth_months.get(month).copied().unwrap_or_default();
        let r = read.monthly.get(month).copied().unwrap_or_default();
        periods(Scope::Month, month.to_string(), t, r);
    }
    for year in &years {
        let t = truth_years.get(year).copied().unwrap_or_default();
        let r = read.yearly.get(year).copied().unwrap_or_default();
        periods(Scope::Year, year.to_string(), t, r);
    }
    let products: BTreeSet<&String> = ledger.products.keys().chain(read.products.keys()).collect();
    for id in &products {
        let t = ledger.products.get(*id).cloned().unwrap_or_default();
        let r = read.products.get(*id).cloned().unwrap_or_default();
        let s = Scope::Product;
        d.count(s, id, "units", t.units, r.units);
        d.money(s, id, "revenue", t.revenue, r.revenue);
        d.count(s, id, "order_lines", t.order_lines, r.order_lines);
    }
    let customers: BTreeSet<&String> = ledger
        .customers
        .keys()
        .chain(read.customers.keys())
        .collect();
    for id in &customers {
        let t = ledger.customers.get(*id).cloned().unwrap_or_default();
        let r = read.customers.get(*id).cloned().unwrap_or_default();
        let s = Scope::Customer;
        d.count(s, id, "orders_paid", t.orders_paid, r.orders_paid);
        d.money(s, id, "revenue", t.revenue, r.revenue);
    }
    let truth_records: RecordSums = ledger
        .records
        .iter()
        .filter(|r| in_range(&r.day))
        .map(|r| {
            (
                (r.entity.clone(), r.day, r.kind.clone()),
                (r.count, r.amount),
            )
        })
        .collect();
    let record_keys: BTreeSet<&(String, NaiveDate, String)> = truth_records
        .keys()
        .chain(read.records.keys().filter(|(_, day, _)| in_range(day)))
        .collect();
    for key in &record_keys {
        let (t, r) = (
            truth_records.get(*key).copied().unwrap_or_default(),
            read.records.get(*key).copied().unwrap_or_default(),
        );
        let name = format!("{} {} {}", key.0, key.1, key.2);
        d.count(Scope::Records, &name, "count", t.0, r.0);
        if t.1.is_some() || r.1.is_some() {
            let zero = Decimal::ZERO;
            d.money(
                Scope::Records,
                &name,
                "amount",
                t.1.unwrap_or(zero),
                r.1.unwrap_or(zero),
            );
        }
    }
    let matches = d.count == 0;
    let note = if matches {
        "the read model matches the services".to_owned()
    } else {
        match freshness.lag_events {
            Some(0) => "the read model has applied every event on the bus, so these \
                        differences are not ingest lag (unless events still wait in a \
                        service's outbox, e.g. while the bus is down)"
                .to_owned(),
            Some(n) => format!(
                "{n} events on the bus are not applied yet: the differences may be ingest \
                 lag; re-check (shoplens reconcile --settle-secs N)"
            ),
            None => "the ingest lag is not known here: a difference may be lag; re-check \
                     (shoplens reconcile --settle-secs N) before calling it loss"
                .to_owned(),
        }
    };
    ReconcileReport {
        from: ledger.from,
        to: ledger.to,
        matches,
        back_end: back_end.to_owned(),
        source_of_truth: SourceOfTruth {
            computed_at: ledger.computed_at,
            orders_scanned: ledger.orders_scanned,
        },
        read_model: freshness,
        checked: Checked {
            days: days.len(),
            months: months.len(),
            years: years.len(),
            products: products.len(),
            customers: customers.len(),
            records: record_keys.len(),
        },
        difference_count: d.count,
        truncated: d.count > d.list.len(),
        differences: d.list,
        note,
    }
}

impl ReconcileReport {
    /// A few lines for an operator: the verdict, what was compared, freshness, and the
    /// first differences.
    pub fn summary(&self, show: usize) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let verdict = if self.matches { "MATCH" } else { "DIFFERENCES" };
        let _ = writeln!(
            out,
            "{verdict}: read model ({}) vs services, {}..{}",
            self.back_end, self.from, self.to
        );
        let _ = writeln!(
            out,
            "  checked {} days, {} whole months, {} whole years, {} products, {} customers, \
             {} record counts of the other services ({} orders scanned at {})",
            self.checked.days,
            self.checked.months,
            self.checked.years,
            self.checked.products,
            self.checked.customers,
            self.checked.records,
            self.source_of_truth.orders_scanned,
            self.source_of_truth.computed_at.to_rfc3339(),
        );
        let lag = match self.read_model.lag_events {
            Some(n) => n.to_string(),
            None => "unknown".to_owned(),
        };
        let _ = writeln!(
            out,
            "  read model as of {} (lag {} ms, {lag} events not applied)",
            self.read_model.as_of.as_deref().unwrap_or("(empty)"),
            self.read_model
                .lag_ms
                .map_or("?".to_owned(), |l| l.to_string()),
        );
        if !self.matches {
            let _ = writeln!(out, "  {} differences:", self.difference_count);
            for x in self.differences.iter().take(show) {
                let _ = writeln!(
                    out,
                    "    {:<8} {:<38} {:<13} services {} read model {}",
                    format!("{:?}", x.scope).to_lowercase(),
                    x.key,
                    x.field,
                    x.source_of_truth,
                    x.read_model
                );
            }
            if self.difference_count > show {
                let _ = writeln!(
                    out,
                    "    ... {} more (--json for the list)",
                    self.difference_count - show
                );
            }
        }
        let _ = writeln!(out, "  {}", self.note);
        out
    }
}

/// The `reconcile` command's exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    Match = 0,
    Differences = 1,
    /// The check could not be made (server down, not configured, bad arguments).
    Error = 2,
}

/// Asks a running analytics server for a report, re-checking every second while it shows
/// differences, for up to `settle` (zero: once). Returns the last report.
pub async fn fetch_settled(
    analytics_url: &str,
    token: &str,
    from: Option<&str>,
    to: Option<&str>,
    settle: Duration,
) -> crate::Result<ReconcileReport> {
    let remote =
        |what: &str, e: &dyn std::fmt::Display| AnalyticsError::Remote(format!("{what}: {e}"));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| remote("cannot build an HTTP client", &e))?;
    let mut query = Vec::new();
    if let Some(f) = from {
        query.push(("from", f));
    }
    if let Some(t) = to {
        query.push(("to", t));
    }
    let url = format!("{}/api/v1/reconcile", analytics_url.trim_end_matches('/'));
    let deadline = tokio::time::Instant::now() + settle;
    loop {
        let resp = http
            .get(&url)
            .bearer_auth(token)
            .query(&query)
            .send()
            .await
            .map_err(|e| {
                remote(
                    &format!("failed to reach the analytics server at {url}"),
                    &e,
                )
            })?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| remote("failed to read the report", &e))?;
        if !status.is_success() {
            let msg = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
            return Err(AnalyticsError::Remote(format!(
                "reconcile failed ({status}): {msg}"
            )));
        }
        let report: ReconcileReport =
            serde_json::from_slice(&body).map_err(|e| remote("failed to parse the report", &e))?;
        if report.matches || tokio::time::Instant::now() >= deadline {
            return Ok(report);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoplens_contract::sales::{DailyRow, RecordCount};

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    fn money(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn freshness(lag: Option<u64>) -> FreshnessReport {
        FreshnessReport {
            generation: 1,
            as_of: None,
            as_of_ms: None,
            visible_at_ms: None,
            lag_ms: None,
            lag_events: lag,
            data_version: None,
        }
    }

    fn ledger() -> LedgerReport {
        LedgerReport {
            computed_at: Utc::now(),
            from: d("2026-01-01"),
            to: d("2026-01-31"),
            orders_scanned: 3,
            daily: vec![DailyRow {
                day: d("2026-01-02"),
                orders_placed: 3,
                orders_paid: 2,
                items_sold: 5,
                revenue: money("15.50"),
            }],
            products: [(
                "p1".to_owned(),
                ProductSums {
                    units: 5,
                    revenue: money("15.50"),
                    order_lines: 2,
                },
            )]
            .into(),
            customers: [(
                "c1".to_owned(),
                CustomerSums {
                    orders_paid: 2,
                    revenue: money("15.50"),
                },
            )]
            .into(),
            records: vec![
                RecordCount {
                    entity: "payments".into(),
                    day: d("2026-01-02"),
                    kind: "Success".into(),
                    count: 2,
                    amount: Some(money("15.50")),
                },
                RecordCount {
                    entity: "customers".into(),
                    day: d("2026-01-01"),
                    kind: "registered".into(),
                    count: 1,
                    amount: None,
                },
            ],
        }
    }

    fn same(l: &LedgerReport) -> ReadModelSums {
        ReadModelSums {
            daily: l
                .daily
                .iter()
                .map(|r| {
                    let s = Sums {
                        orders_placed: r.orders_placed,
                        orders_paid: r.orders_paid,
                        items_sold: r.items_sold,
                        // Another scale, the same value.
                        revenue: money("15.5000"),
                    };
                    (r.day, s)
                })
                .collect(),
            // January 2026 is the one whole month of the range; no whole year.
            monthly: [(
                d("2026-01-01"),
                Sums {
                    orders_placed: 3,
                    orders_paid: 2,
                    items_sold: 5,
                    revenue: money("15.50"),
                },
            )]
            .into(),
            yearly: BTreeMap::new(),
            products: l.products.clone(),
            customers: l.customers.clone(),
            records: l
                .records
                .iter()
                .map(|r| {
                    (
                        (r.entity.clone(), r.day, r.kind.clone()),
                        (r.count, r.amount),
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn a_service_record_count_that_differs_is_named() {
        let l = ledger();
        let mut read = same(&l);
        // A payment counted twice in the raw table, a customer missing from it.
        let key = ("payments".to_owned(), d("2026-01-02"), "Success".to_owned());
        let p = read.records.get_mut(&key).unwrap();
        p.0 += 1;
        p.1 = Some(money("20.00"));
        read.records.remove(&(
            "customers".to_owned(),
            d("2026-01-01"),
            "registered".to_owned(),
        ));
        let r = report(&l, &read, freshness(Some(0)), "clickhouse", 10);
        let keys: Vec<(Scope, &str, &str)> = r
            .differences
            .iter()
            .map(|x| (x.scope, x.key.as_str(), x.field.as_str()))
            .collect();
        assert_eq!(
            keys,
            [
                (Scope::Records, "customers 2026-01-01 registered", "count"),
                (Scope::Records, "payments 2026-01-02 Success", "count"),
                (Scope::Records, "payments 2026-01-02 Success", "amount"),
            ]
        );
        assert_eq!(r.checked.records, 2);
    }

    #[test]
    fn whole_months_and_years_are_the_ones_inside_the_range() {
        let range = |from: &str, to: &str| DateRange {
            from: d(from),
            to: d(to),
        };
        let (months, years) = whole_periods(&range("2025-01-15", "2026-03-31"));
        assert_eq!(months.first(), Some(&d("2025-02-01")));
        assert_eq!(months.last(), Some(&d("2026-03-01")));
        assert_eq!(months.len(), 14);
        assert_eq!(years, Vec::<i32>::new());
        let (months, years) = whole_periods(&range("2024-01-01", "2025-12-31"));
        assert_eq!((months.len(), years), (24, vec![2024, 2025]));
        let (months, years) = whole_periods(&range("2024-02-02", "2024-02-28"));
        assert!(months.is_empty() && years.is_empty());
    }

    #[test]
    fn a_month_that_differs_from_its_days_is_named() {
        let l = ledger();
        let mut read = same(&l);
        read.monthly.get_mut(&d("2026-01-01")).unwrap().items_sold += 1;
        let r = report(&l, &read, freshness(Some(0)), "clickhouse", 10);
        assert!(!r.matches);
        let keys: Vec<(Scope, &str, &str)> = r
            .differences
            .iter()
            .map(|x| (x.scope, x.key.as_str(), x.field.as_str()))
            .collect();
        assert_eq!(keys, [(Scope::Month, "2026-01-01", "items_sold")]);
        // A month missing from the read model is all zeros there.
        read.monthly.clear();
        let r = report(&l, &read, freshness(Some(0)), "clickhouse", 10);
        assert_eq!(r.difference_count, 4);
    }

    #[test]
    fn equal_figures_match() {
        let l = ledger();
        let r = report(&l, &same(&l), freshness(Some(0)), "embedded", 10);
        assert!(r.matches, "{r:?}");
        assert_eq!(r.difference_count, 0);
        assert_eq!(
            r.checked,
            Checked {
                days: 1,
                months: 1,
                years: 0,
                products: 1,
                customers: 1,
                records: 2,
            }
        );
        assert!(r.summary(5).starts_with("MATCH"));
    }

    #[test]
    fn every_difference_names_its_key_and_field() {
        let l = ledger();
        let mut read = same(&l);
        // A double-counted order on the 2nd, an extra day, a product the services never sold,
        // and a customer missing from the read model.
        let day = read.daily.get_mut(&d("2026-01-02")).unwrap();
        day.orders_paid += 1;
        day.revenue += money("2.25");
        read.daily.insert(
            d("2026-01-05"),
            Sums {
                orders_placed: 1,
                ..Sums::default()
            },
        );
        read.products.insert(
            "p9".into(),
            ProductSums {
                units: 1,
                revenue: money("1"),
                order_lines: 1,
            },
        );
        read.customers.clear();
        let r = report(&l, &read, freshness(Some(0)), "embedded", 100);
        assert!(!r.matches);
        let keys: Vec<(Scope, &str, &str)> = r
            .differences
            .iter()
            .map(|x| (x.scope, x.key.as_str(), x.field.as_str()))
            .collect();
        assert_eq!(
            keys,
            [
                (Scope::Day, "2026-01-02", "orders_paid"),
                (Scope::Day, "2026-01-02", "revenue"),
                (Scope::Day, "2026-01-05", "orders_placed"),
                (Scope::Product, "p9", "units"),
                (Scope::Product, "p9", "revenue"),
                (Scope::Product, "p9", "order_lines"),
                (Scope::Customer, "c1", "orders_paid"),
                (Scope::Customer, "c1", "revenue"),
            ]
        );
        assert_eq!(r.differences[1].source_of_truth, "15.5");
        assert_eq!(r.differences[1].read_model, "17.75");
        assert_eq!(r.differences[0].source_of_truth, 2);
        assert_eq!(r.differences[0].read_model, 3);
        assert_eq!(
            r.checked,
            Checked {
                days: 2,
                months: 1,
                years: 0,
                products: 2,
                customers: 1,
                records: 2,
            }
        );
        assert!(r.note.contains("not ingest lag"), "{}", r.note);
        let text = r.summary(3);
        assert!(text.starts_with("DIFFERENCES"), "{text}");
        assert!(
            text.contains("2026-01-02") && text.contains("5 more"),
            "{text}"
        );
        // Capped list, full count; lag is called out.
        let r = report(&l, &read, freshness(Some(7)), "embedded", 2);
        assert_eq!((r.differences.len(), r.difference_count), (2, 8));
        assert!(r.truncated);
        assert!(r.note.contains("7 events"), "{}", r.note);
    }

    #[test]
    fn days_outside_the_range_are_not_compared() {
        let l = ledger();
        let mut read = same(&l);
        read.daily.insert(
            d("2026-02-01"),
            Sums {
                orders_placed: 9,
                ..Sums::default()
            },
        );
        let r = report(&l, &read, freshness(None), "clickhouse", 10);
        assert!(r.matches, "{r:?}");
        assert_eq!(r.checked.days, 1);
    }
}
