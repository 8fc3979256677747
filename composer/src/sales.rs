//! Live sales figures composed from the services at request time: the API-composition
//! answer to the sales dashboard, and the services' side of a reconciliation.
//!
//! There is no shortcut: a sales figure for a range needs every order that was placed or
//! paid in it, and only the order service knows them, so this pages through *all* orders
//! (`GET /api/v1/orders?all=true`, oldest first), sums them into a [`Ledger`], then asks the
//! product and customer services for the names (and categories) it shows. Its cost grows
//! with the shop's whole history; that is the point of measuring it against the CQRS
//! read model, which answers the same questions from pre-aggregated tables.
//!
//! The figures follow the read model's definitions ([`shoplens_contract::sales`]): placed on
//! the day of `created_at`, paid and sold on the day of `paid_at`. Sums never mix with
//! cached data: nothing here is cached, and a range is answered whole or not at all (503).

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, NaiveDate, Utc};
use futures::StreamExt;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use shoplens_contract::Service;
use shoplens_contract::sales::{
    CustomerRow, DailyRow, DateRange, Period, ProductRow, RecordCount, Sums, TrendRow, trend_rows,
};
pub use shoplens_contract::sales::{CustomerSums, LedgerReport, ProductSums};
use shoplens_kit::ApiError;
use tokio::time::Instant;

use crate::downstream::{Downstream, FetchError};

/// Orders per page of the scan (the order service allows up to 1,000).
pub const SCAN_PAGE: u32 = 500;
/// Ids per batch look-up of names (the product and customer services allow 100).
const NAME_BATCH: usize = 100;
/// Batch look-ups of names in flight at once.
const NAME_CONCURRENCY: usize = 4;

#[derive(Deserialize)]
struct ScanLine {
    product_id: String,
    quantity: i64,
    line_total: Decimal,
}

#[derive(Deserialize)]
struct ScanOrder {
    customer_id: String,
    lines: Vec<ScanLine>,
    created_at: DateTime<Utc>,
    #[serde(default)]
    paid_at: Option<DateTime<Utc>>,
}

#[derive(Deserialize)]
struct ScanPage {
    orders: Vec<ScanOrder>,
    next_cursor: Option<String>,
}

/// The sums of every order of the shop that falls in a range, by day, product and customer
/// (plus by month and year over the whole history, for trends).
#[derive(Debug, Default)]
pub struct Ledger {
    pub daily: BTreeMap<NaiveDate, Sums>,
    pub products: BTreeMap<String, ProductSums>,
    pub customers: BTreeMap<String, CustomerSums>,
    /// Keyed by the first day of the month or year; every order, whatever the range.
    pub months: BTreeMap<NaiveDate, Sums>,
    pub years: BTreeMap<NaiveDate, Sums>,
    pub orders_scanned: u64,
    pub pages: u64,
}

impl Ledger {
    fn add(&mut self, range: &DateRange, order: &ScanOrder) {
        self.orders_scanned += 1;
        let in_range = |d: NaiveDate| (range.from..=range.to).contains(&d);
        let placed = order.created_at.date_naive();
        let mut periods = |day: NaiveDate, f: &dyn Fn(&mut Sums)| {
            f(self.months.entry(Period::Month.start(day)).or_default());
            f(self.years.entry(Period::Year.start(day)).or_default());
            if in_range(day) {
                f(self.daily.entry(day).or_default());
            }
        };
        periods(placed, &|s| s.orders_placed += 1);
        let Some(paid_at) = order.paid_at else { return };
        let paid = paid_at.date_naive();
        let units: u64 = order.lines.iter().map(|l| l.quantity.max(0) as u64).sum();
        let revenue: Decimal = order.lines.iter().map(|l| l.line_total).sum();
        periods(paid, &|s| {
            s.orders_paid += 1;
            s.items_sold += units;
            s.revenue += revenue;
        });
        if !in_range(paid) {
            return;
        }
        for line in &order.lines {
            let p = self.products.entry(line.product_id.clone()).or_default();
            p.units += line.quantity.max(0) as u64;
            p.revenue += line.line_total;
            p.order_lines += 1;
        }
        let c = self.customers.entry(order.customer_id.clone()).or_default();
        c.orders_paid += 1;
        c.revenue += revenue;
    }
}

/// Why live sales could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum SalesError {
    #[error("the order service could not be read: {0}")]
    Orders(FetchError),
    #[error("the {0} service's ledger could not be read: {1}")]
    Records(&'static str, FetchError),
    #[error(
        "the live computation did not finish within its {deadline_ms} ms deadline after \
         {orders} orders"
    )]
    Deadline { deadline_ms: u64, orders: u64 },
}

impl From<SalesError> for ApiError {
    fn from(e: SalesError) -> Self {
        ApiError::Unavailable {
            code: "sales_unavailable",
            message: e.to_string(),
        }
    }
}

/// Pages through every order and sums those placed or paid in `range`.
pub async fn ledger(
    downstream: &Downstream,
    range: &DateRange,
    deadline: Instant,
    deadline_ms: u64,
) -> Result<Ledger, SalesError> {
    let mut ledger = Ledger::default();
    let mut after: Option<String> = None;
    loop {
        if Instant::now() >= deadline {
            return Err(SalesError::Deadline {
                deadline_ms,
                orders: ledger.orders_scanned,
            });
        }
        let path = match &after {
            Some(a) => format!("/api/v1/orders?all=true&limit={SCAN_PAGE}&after={a}"),
            None => format!("/api/v1/orders?all=true&limit={SCAN_PAGE}"),
        };
        let page: ScanPage = downstream
            .get_within(Service::Order, &path, deadline, None)
            .await
            .map_err(|e| match e {
                FetchError::Unavailable(_) if Instant::now() >= deadline => SalesError::Deadline {
                    deadline_ms,
                    orders: ledger.orders_scanned,
                },
                e => SalesError::Orders(e),
            })?;
        ledger.pages += 1;
        for order in &page.orders {
            ledger.add(range, order);
        }
        match page.next_cursor {
            Some(next) => after = Some(next),
            None => return Ok(ledger),
        }
    }
}

/// What the dashboard asks for.
#[derive(Debug, Clone)]
pub struct SalesQuery {
    pub range: DateRange,
    pub limit: usize,
    pub category: Option<String>,
    pub period: Period,
}

/// The four dashboard views, computed live.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LiveDashboard {
    /// When the computation started: the figures are as of this instant (live).
    pub computed_at: DateTime<Utc>,
    pub from: NaiveDate,
    pub to: NaiveDate,
    /// Orders read from the order service, and in how many pages.
    pub orders_scanned: u64,
    pub pages: u64,
    /// `false` when the product or customer service could not give every name (the
    /// figures are still whole; only names and categories are missing).
    pub names_complete: bool,
    pub daily: Vec<DailyRow>,
    pub top_products: Vec<ProductRow>,
    pub top_customers: Vec<CustomerRow>,
    pub trends: Vec<TrendRow>,
}

#[derive(Deserialize)]
struct NamedProduct {
    id: String,
    name: String,
    category: String,
}

#[derive(Deserialize)]
struct ProductNames {
    products: Vec<NamedProduct>,
}

#[derive(Deserialize)]
struct NamedCustomer {
    id: String,
    name: String,
    country: String,
}

#[derive(Deserialize)]
struct CustomerNames {
    customers: Vec<NamedCustomer>,
}

/// Batch look-ups of `ids` (100 per call, a few at once); `None` if any call failed.
async fn look_up<T, R>(
    downstream: &Downstream,
    svc: Service,
    path: &str,
    ids: &[&String],
    deadline: Instant,
    rows: impl Fn(T) -> Vec<R>,
) -> (Vec<R>, bool)
where
    T: serde::de::DeserializeOwned,
{
    // URLs first: the futures then borrow nothing but `downstream`.
    let urls: Vec<String> = ids
        .chunks(NAME_BATCH)
        .map(|chunk| {
            let joined: Vec<&str> = chunk.iter().map(|s| s.as_str()).collect();
            format!("{path}?ids={}", joined.join(","))
        })
        .collect();
    let calls = urls
        .into_iter()
        .map(|url| async move { downstream.get_within::<T>(svc, &url, deadline, None).await });
    let mut stream = futures::stream::iter(calls).buffer_unordered(NAME_CONCURRENCY);
    let (mut out, mut complete) = (Vec::new(), true);
    while let Some(result) = stream.next().await {
        match result {
            Ok(batch) => out.extend(rows(batch)),
            Err(e) => {
                tracing::warn!(service = %svc, error = %e, "names missing from live sales");
                complete = false;
            }
        }
    }
    (out, complete)
}

/// Ranks by revenue, highest first, ties by id (as the read model's dashboard does).
fn ranked<'a, T>(
    sums: impl Iterator<Item = (&'a String, &'a T)>,
    revenue: impl Fn(&T) -> Decimal,
) -> Vec<(&'a String, &'a T)> {
    let mut v: Vec<_> = sums.collect();
    v.sort_by(|a, b| revenue(b.1).cmp(&revenue(a.1)).then_with(|| a.0.cmp(b.0)));
    v
}

/// Money with (at least) two decimals, as the read model prints it.
fn money(d: Decimal) -> Decimal {
    let mut d = d;
    if d.scale() < 2 {
        d.rescale(2);
    }
    d
}

/// The four dashboard views for `q`, computed from the services now.
pub async fn dashboard(
    downstream: &Downstream,
    q: &SalesQuery,
    deadline: Instant,
    deadline_ms: u64,
) -> Result<LiveDashboard, SalesError> {
    let computed_at = Utc::now();
    let ledger = ledger(downstream, &q.range, deadline, deadline_ms).await?;
    let range = q.range;
    let daily = range
        .from
        .iter_days()
        .take_while(|d| *d <= range.to)
        .map(|day| {
            let s = ledger.daily.get(&day).copied().unwrap_or_default();
            DailyRow {
                day,
                orders_placed: s.orders_placed,
                orders_paid: s.orders_paid,
                items_sold: s.items_sold,
                revenue: money(s.revenue),
            }
        })
        .collect();

    // Names (and, for a category filter, the categories of every product sold).
    let by_revenue = ranked(ledger.products.iter(), |p| p.revenue);
    let wanted: Vec<&String> = match q.category {
        Some(_) => by_revenue.iter().map(|(id, _)| *id).collect(),
        None => by_revenue.iter().take(q.limit).map(|(id, _)| *id).collect(),
    };
    let top_customers = ranked(ledger.customers.iter(), |c| c.revenue);
    let top_customers = &top_customers[..q.limit.min(top_customers.len())];
    let customer_ids: Vec<&String> = top_customers.iter().map(|(id, _)| *id).collect();
    let ((products, products_ok), (customers, customers_ok)) = tokio::join!(
        look_up(
            downstream,
            Service::Product,
            "/api/v1/products",
            &wanted,
            deadline,
            |b: ProductNames| b.products
        ),
        look_up(
            downstream,
            Service::Customer,
            "/api/v1/customers",
            &customer_ids,
            deadline,
            |b: CustomerNames| b.customers
        ),
    );
    let products: HashMap<String, NamedProduct> =
        products.into_iter().map(|p| (p.id.clone(), p)).collect();
    let customers: HashMap<String, NamedCustomer> =
        customers.into_iter().map(|c| (c.id.clone(), c)).collect();

    let top_products = by_revenue
        .iter()
        .filter(|(id, _)| match &q.category {
            Some(c) => products.get(*id).is_some_and(|p| &p.category == c),
            None => true,
        })
        .take(q.limit)
        .enumerate()
        .map(|(i, (id, s))| ProductRow {
            rank: i + 1,
            product_id: (*id).clone(),
            name: products.get(*id).map(|p| p.name.clone()),
            category: products.get(*id).map(|p| p.category.clone()),
            units: s.units,
            revenue: money(s.revenue),
            order_lines: s.order_lines,
        })
        .collect();
    let top_customers = top_customers
        .iter()
        .enumerate()
        .map(|(i, (id, s))| CustomerRow {
            rank: i + 1,
            customer_id: (*id).clone(),
            name: customers.get(*id).map(|c| c.name.clone()),
            country: customers.get(*id).map(|c| c.country.clone()),
            orders_paid: s.orders_paid,
            revenue: money(s.revenue),
        })
        .collect();
    let periods = match q.period {
        Period::Month => &ledger.months,
        Period::Year => &ledger.years,
    };
    let periods: BTreeMap<NaiveDate, Sums> = periods
        .iter()
        .map(|(k, s)| {
            let mut s = *s;
            s.revenue = money(s.revenue);
            (*k, s)
        })
        .collect();
    Ok(LiveDashboard {
        computed_at,
        from: range.from,
        to: range.to,
        orders_scanned: ledger.orders_scanned,
        pages: ledger.pages,
        names_complete: products_ok && customers_ok,
        daily,
        top_products,
        top_customers,
        trends: trend_rows(q.period, range.from, range.to, &periods),
    })
}

/// The other services' records per day and state in `range` (their `/api/v1/ledger`), all
/// asked at once.
async fn record_counts(
    downstream: &Downstream,
    range: &DateRange,
    deadline: Instant,
) -> Result<Vec<RecordCount>, SalesError> {
    let path = format!("/api/v1/ledger?from={}&to={}", range.from, range.to);
    let services = [
        Service::Payment,
        Service::Shipping,
        Service::Customer,
        Service::Product,
    ];
    let answers = futures::future::join_all(services.iter().map(|svc| {
        let path = path.clone();
        async move {
            downstream
                .get_within::<Vec<RecordCount>>(*svc, &path, deadline, None)
                .await
                .map_err(|e| SalesError::Records(svc.as_str(), e))
        }
    }))
    .await;
    let mut records = Vec::new();
    for answer in answers {
        records.extend(answer?);
    }
    Ok(records)
}

/// The ledger of `range` as a report.
pub async fn ledger_report(
    downstream: &Downstream,
    range: &DateRange,
    deadline: Instant,
    deadline_ms: u64,
) -> Result<LedgerReport, SalesError> {
    let computed_at = Utc::now();
    let (l, records) = tokio::try_join!(
        ledger(downstream, range, deadline, deadline_ms),
        record_counts(downstream, range, deadline),
    )?;
    Ok(LedgerReport {
        records,
        computed_at,
        from: range.from,
        to: range.to,
        orders_scanned: l.orders_scanned,
        daily: l
            .daily
            .iter()
            .map(|(day, s)| DailyRow {
                day: *day,
                orders_placed: s.orders_placed,
                orders_paid: s.orders_paid,
                items_sold: s.items_sold,
                revenue: money(s.revenue),
            })
            .collect(),
        products: l
            .products
            .into_iter()
            .map(|(k, mut v)| {
                v.revenue = money(v.revenue);
                (k, v)
            })
            .collect(),
        customers: l
            .customers
            .into_iter()
            .map(|(k, mut v)| {
                v.revenue = money(v.revenue);
                (k, v)
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoplens_contract::sales::ZERO_MONEY;

    fn order(created: &str, paid: Option<&str>, lines: &[(&str, i64, &str)]) -> ScanOrder {
        ScanOrder {
            customer_id: "c1".into(),
            lines: lines
                .iter()
                .map(|(p, q, t)| ScanLine {
                    product_id: (*p).into(),
                    quantity: *q,
                    line_total: t.parse().unwrap(),
                })
                .collect(),
            created_at: created.parse().unwrap(),
            paid_at: paid.map(|p| p.parse().unwrap()),
        }
    }

    #[test]
    fn orders_count_on_their_placed_and_paid_days() {
        let range = DateRange {
            from: "2026-01-02".parse().unwrap(),
            to: "2026-01-31".parse().unwrap(),
        };
        let mut l = Ledger::default();
        // Placed before the range, paid in it: paid and sold count, placed does not.
        l.add(
            &range,
            &order(
                "2026-01-01T23:59:59Z",
                Some("2026-01-02T00:00:01Z"),
                &[("p1", 2, "10.00"), ("p2", 1, "5.50")],
            ),
        );
        // Placed in the range, never paid.
        l.add(
            &range,
            &order("2026-01-03T10:00:00Z", None, &[("p1", 1, "5")]),
        );
        assert_eq!(l.orders_scanned, 2);
        let jan2 = l.daily[&"2026-01-02".parse::<NaiveDate>().unwrap()];
        assert_eq!(
            (jan2.orders_placed, jan2.orders_paid, jan2.items_sold),
            (0, 1, 3)
        );
        assert_eq!(jan2.revenue.to_string(), "15.50");
        assert_eq!(l.daily[&"2026-01-03".parse().unwrap()].orders_placed, 1);
        assert!(!l.daily.contains_key(&"2026-01-01".parse().unwrap()));
        assert_eq!(l.products["p1"].units, 2);
        assert_eq!(l.products["p1"].order_lines, 1);
        assert_eq!(l.customers["c1"].orders_paid, 1);
        // Months count everything, whatever the range.
        let jan = l.months[&"2026-01-01".parse().unwrap()];
        assert_eq!((jan.orders_placed, jan.orders_paid), (2, 1));
    }

    #[test]
    fn ranking_is_by_revenue_then_id_and_money_has_cents() {
        let mut m = BTreeMap::new();
        for (id, r) in [("b", "5"), ("a", "5"), ("c", "7.5")] {
            m.insert(
                id.to_owned(),
                CustomerSums {
                    orders_paid: 1,
                    revenue: r.parse().unwrap(),
                },
            );
        }
        let order: Vec<_> = ranked(m.iter(), |c| c.revenue)
            .into_iter()
            .map(|(id, _)| id.as_str())
            .collect();
        assert_eq!(order, ["c", "a", "b"]);
        assert_eq!(money("7.5".parse().unwrap()).to_string(), "7.50");
        assert_eq!(money(ZERO_MONEY).to_string(), "0.00");
    }
}
