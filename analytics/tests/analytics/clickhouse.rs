//! The ClickHouse back end against the real server at `SHOPLENS_TEST_CLICKHOUSE_URL`: the
//! same answers as the embedded back end for the same events, filters and limits really
//! pushed to ClickHouse, empty tables before a generation is live, a clean error when
//! ClickHouse is down, the sink's freshness, a blue/green switch.

use std::sync::Arc;
use std::time::Duration;

use arrow_array::RecordBatch;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{TableProviderFilterPushDown, col, lit};
use datafusion::prelude::{SessionConfig, SessionContext};
use rust_decimal::Decimal;
use shoplens_analytics::clickhouse::{ClickHouseReadModel, LIVE_TTL};
use shoplens_analytics::engine::Pii;
use shoplens_analytics::{AnalyticsError, Engine, ReadModel, ReadModelError, Table};
use shoplens_contract::tables::RawTable;
use shoplens_contract::{
    CustomerRegistered, CustomerUpdated, Envelope, OrderStatus, OrderStatusChanged, PaymentFailed,
    PaymentRefunded, ProductPriceChanged, ProductPurchased, ShipmentDelivered,
    ShipmentLocationUpdated,
};
use shoplens_ingest::clickhouse::ClickHouseStore;
use shoplens_ingest::embedded::EmbeddedStore;
use shoplens_ingest::sink::{DeadLetter, IngestBatch, ReadModelStore, Sink};
use shoplens_readmodel::config::{ClickHouseConfig, EmbeddedConfig};
use shoplens_readmodel::freshness::Freshness;
use shoplens_readmodel::tables::AggTable;
use tempfile::TempDir;

use crate::support;

/// Every query both back ends must answer identically, each with the fewest rows it must
/// return (so a query that silently matches nothing on both sides fails too).
const PARITY: &[(&str, usize)] = &[
    // Every table whole, in key order.
    ("SELECT * FROM customer_events ORDER BY event_id", 50),
    ("SELECT * FROM product_events ORDER BY event_id", 20),
    ("SELECT * FROM orders ORDER BY event_id", 200),
    ("SELECT * FROM order_status_changes ORDER BY event_id", 400),
    ("SELECT * FROM product_purchases ORDER BY event_id", 200),
    ("SELECT * FROM payment_events ORDER BY event_id", 150),
    ("SELECT * FROM shipment_events ORDER BY event_id", 150),
    ("SELECT * FROM daily_sales ORDER BY day", 55),
    ("SELECT * FROM monthly_sales ORDER BY month", 3),
    ("SELECT * FROM yearly_sales ORDER BY year", 2),
    (
        "SELECT * FROM product_sales_daily ORDER BY day, product_id",
        100,
    ),
    (
        "SELECT * FROM customer_spend_daily ORDER BY day, customer_id",
        100,
    ),
    (
        "SELECT * FROM dead_letters ORDER BY topic, \"partition\", \"offset\"",
        3,
    ),
    ("SELECT * FROM products ORDER BY product_id", 20),
    ("SELECT * FROM customers ORDER BY customer_id", 51),
    // Aggregates over date ranges (the dashboard's shapes).
    (
        "SELECT day, orders_placed, orders_paid, items_sold, revenue FROM daily_sales \
         WHERE day >= DATE '2025-12-01' AND day <= DATE '2025-12-31' ORDER BY day",
        31,
    ),
    (
        "SELECT month, orders_placed, orders_paid, items_sold, revenue FROM monthly_sales \
         WHERE month BETWEEN DATE '2025-12-01' AND DATE '2026-01-01' ORDER BY month",
        2,
    ),
    (
        "SELECT year, orders_placed, revenue FROM yearly_sales \
         WHERE year BETWEEN 2025 AND 2026 ORDER BY year",
        2,
    ),
    (
        "SELECT day, product_id, units, revenue FROM product_sales_daily \
         WHERE units > 2 AND revenue > 100 ORDER BY day, product_id",
        10,
    ),
    (
        "SELECT * FROM customer_spend_daily \
         WHERE orders_paid >= 1 AND day < DATE '2026-01-01' \
           AND customer_id IN ('c00001', 'c00002', 'c00003') \
         ORDER BY day, customer_id",
        1,
    ),
    (
        "SELECT day, revenue FROM daily_sales WHERE NOT (revenue < 500 OR orders_paid = 0) \
         ORDER BY day",
        5,
    ),
    // The dashboard's top products and top customers: aggregates joined with the views.
    (
        "SELECT s.product_id, p.name, p.category, SUM(s.units) AS units, \
                SUM(s.revenue) AS revenue, SUM(s.order_lines) AS order_lines \
         FROM product_sales_daily s LEFT JOIN products p ON s.product_id = p.product_id \
         WHERE s.day >= DATE '2025-12-01' AND s.day <= DATE '2026-01-15' \
         GROUP BY s.product_id, p.name, p.category \
         ORDER BY revenue DESC, s.product_id LIMIT 5",
        5,
    ),
    (
        "SELECT s.customer_id, c.name, c.country, SUM(s.orders_paid) AS orders_paid, \
                SUM(s.revenue) AS revenue \
         FROM customer_spend_daily s LEFT JOIN customers c ON s.customer_id = c.customer_id \
         WHERE s.day >= DATE '2025-11-24' AND s.day <= DATE '2026-01-31' \
         GROUP BY s.customer_id, c.name, c.country \
         ORDER BY revenue DESC, s.customer_id LIMIT 10",
        10,
    ),
    // A month rollup and edge days read as one union of stored rows (`sums_of_keys`):
    // sums, a group's presence without a sum, and a filter on the sums over it.
    (
        "SELECT product_id, SUM(units) AS units, SUM(order_lines) AS order_lines \
         FROM product_sales_daily WHERE day >= DATE '2025-11-10' AND day < DATE '2026-01-20' \
         GROUP BY product_id ORDER BY product_id",
        15,
    ),
    (
        "SELECT DISTINCT customer_id FROM customer_spend_daily \
         WHERE day BETWEEN DATE '2025-11-24' AND DATE '2026-01-31' ORDER BY customer_id",
        10,
    ),
    (
        "SELECT customer_id, SUM(revenue) AS revenue FROM customer_spend_daily \
         WHERE day BETWEEN DATE '2025-11-24' AND DATE '2026-01-31' \
         GROUP BY customer_id HAVING SUM(orders_paid) > 1 ORDER BY customer_id",
        3,
    ),
    (
        "SELECT p.category, SUM(s.revenue) AS revenue FROM product_sales_daily s \
         JOIN products p ON s.product_id = p.product_id AND p.category = 'Garden' \
         GROUP BY p.category",
        1,
    ),
    // Raw tables: strings, decimals, timestamps, IN, IS NULL, NOT, OR.
    (
        "SELECT event_id, order_id, total FROM orders \
         WHERE total >= CAST('150.50' AS DECIMAL(18, 2)) ORDER BY event_id",
        50,
    ),
    (
        "SELECT event_id, total FROM orders WHERE total > 100.5 ORDER BY event_id",
        50,
    ),
    (
        "SELECT event_id, occurred_at FROM orders \
         WHERE occurred_at >= TIMESTAMP '2025-12-24T00:00:00Z' \
           AND occurred_at < TIMESTAMP '2026-01-02T00:00:00Z' ORDER BY event_id",
        10,
    ),
    (
        "SELECT event_id, eta FROM shipment_events \
         WHERE eta > TIMESTAMP '2025-12-15T00:00:00Z' OR eta IS NULL ORDER BY event_id",
        50,
    ),
    (
        "SELECT event_id, event_type, carrier FROM shipment_events \
         WHERE carrier IS NULL ORDER BY event_id",
        2,
    ),
    (
        "SELECT event_id, method, status FROM payment_events \
         WHERE method NOT IN ('card') ORDER BY event_id",
        1,
    ),
    (
        "SELECT event_id, method, status FROM payment_events \
         WHERE NOT (method = 'card' AND status = 'Completed') ORDER BY event_id",
        2,
    ),
    // Long enough to stay an IN list: 18.16 says `NULL NOT IN (..)` is 1, DataFusion NULL.
    (
        "SELECT event_id, method FROM payment_events \
         WHERE method NOT IN ('cash', 'paypal', 'voucher', 'invoice') ORDER BY event_id",
        100,
    ),
    (
        "SELECT event_id, method FROM payment_events \
         WHERE NOT (method IN ('cash', 'paypal', 'voucher', 'invoice') OR amount > 100) \
         ORDER BY event_id",
        10,
    ),
    (
        "SELECT event_id, status, reason, amount FROM payment_events \
         WHERE reason IS NOT NULL OR amount < 20 ORDER BY event_id",
        2,
    ),
    (
        "SELECT event_id, reason FROM payment_events \
         WHERE reason = 'card declined: ''insufficient'' \\ funds' ORDER BY event_id",
        1,
    ),
    (
        "SELECT * FROM order_status_changes \
         WHERE from_status IS NULL AND to_status IN ('Placed', 'Paid') ORDER BY event_id",
        200,
    ),
    (
        "SELECT event_id, from_status, to_status FROM order_status_changes \
         WHERE from_status <> 'Placed' ORDER BY event_id",
        100,
    ),
    (
        "SELECT event_id, product_id, sku, name, price FROM product_events \
         WHERE sku IS NULL OR name BETWEEN 'Product 1' AND 'Product 3' ORDER BY event_id",
        3,
    ),
    (
        "SELECT customer_id, name, country FROM customer_events \
         WHERE name = 'O''Brien \\ \"the\" Ünïcode' OR country IN ('IE', 'GB') ORDER BY event_id",
        13,
    ),
    (
        "SELECT customer_id, name FROM customer_events WHERE name LIKE 'Customer 1%' \
         ORDER BY event_id",
        11,
    ),
    (
        "SELECT event_id, quantity, line_no FROM product_purchases \
         WHERE quantity = 4 AND line_no <> 1 ORDER BY event_id",
        5,
    ),
    (
        "SELECT topic, \"partition\", \"offset\", key, event_id, payload, received_at \
         FROM dead_letters WHERE \"offset\" >= 2 AND event_type IS NULL \
         ORDER BY topic, \"partition\", \"offset\"",
        1,
    ),
    // Counts (no column read), limits (pushed when every filter is), sorts with a limit.
    ("SELECT count(*) FROM orders", 1),
    (
        "SELECT count(*) FROM product_sales_daily WHERE units > 1",
        1,
    ),
    (
        "SELECT count(*), sum(total), min(occurred_at), max(occurred_at) FROM orders \
         WHERE currency = 'EUR'",
        1,
    ),
    (
        "SELECT count(*) FROM (SELECT order_id FROM orders WHERE customer_id <> 'zzz' LIMIT 7)",
        1,
    ),
    (
        "SELECT count(*) FROM (SELECT day FROM product_sales_daily WHERE units > 1 LIMIT 9)",
        1,
    ),
    (
        "SELECT count(*) FROM (SELECT * FROM customer_events LIMIT 3)",
        1,
    ),
    (
        "SELECT order_id, total FROM orders ORDER BY total DESC, order_id LIMIT 5",
        5,
    ),
    // A top-N ranked in ClickHouse by a decimal sum, then by id: of two sums a cent apart
    // whose floats are equal (`extra_events`), the larger one is the top one.
    (
        "SELECT product_id, sum(revenue) AS revenue FROM product_sales_daily \
         GROUP BY product_id ORDER BY revenue DESC, product_id LIMIT 1",
        1,
    ),
];

fn at(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).expect("a time")
}

fn money(s: &str) -> Decimal {
    s.parse().expect("money")
}

/// Events the synthetic stream lacks: NULLs in every nullable column, quotes, backslashes
/// and non-ASCII text.
fn extra_events() -> Vec<Envelope> {
    let t = at(1_765_000_000);
    vec![
        Envelope::at(
            CustomerRegistered {
                customer_id: "c-quote".into(),
                name: "O'Brien \\ \"the\" Ünïcode".into(),
                email: "ob@example.com".into(),
                country: "IE".into(),
            },
            t,
        ),
        Envelope::at(
            CustomerUpdated {
                customer_id: "c00001".into(),
                name: "Renamed Customer".into(),
                email: "renamed@example.com".into(),
                country: "FR".into(),
            },
            t,
        ),
        Envelope::at(
            ProductPriceChanged {
                product_id: "p00001".into(),
                old_price: money("1.00"),
                new_price: money("99.95"),
                currency: "EUR".into(),
            },
            t,
        ),
        Envelope::at(
            PaymentFailed {
                payment_id: "payfail1".into(),
                order_id: "o00000001".into(),
                amount: money("12.34"),
                currency: "EUR".into(),
                method: "paypal".into(),
                reason: "card declined: 'insufficient' \\ funds".into(),
            },
            t,
        ),
        Envelope::at(
            PaymentRefunded {
                payment_id: "payref1".into(),
                order_id: "o00000002".into(),
                amount: money("5.00"),
                currency: "EUR".into(),
                reason: "changed mind".into(),
            },
            t,
        ),
        Envelope::at(
            ShipmentLocationUpdated {
                shipment_id: "s00000003".into(),
                order_id: "o00000003".into(),
                location: "Hub \"North\"".into(),
                eta: at(1_765_100_000),
            },
            t,
        ),
        Envelope::at(
            ShipmentDelivered {
                shipment_id: "s00000003".into(),
                order_id: "o00000003".into(),
                location: "Door".into(),
            },
            t,
        ),
        // Two product sales a cent apart above 2^53 cents, where a float cannot tell them
        // apart; the lower id has the lower revenue.
        big_purchase("p-big-1", "90071992547409.92", t),
        big_purchase("p-big-2", "90071992547409.93", t),
        Envelope::at(
            OrderStatusChanged {
                order_id: "o00000004".into(),
                customer_id: "c00004".into(),
                from: Some(OrderStatus::Shipped),
                to: OrderStatus::Delivered,
            },
            t,
        ),
    ]
}

/// One purchase of `revenue` of product `product_id` (not in the catalogue).
fn big_purchase(product_id: &str, revenue: &str, t: DateTime<Utc>) -> Envelope {
    Envelope::at(
        ProductPurchased {
            order_id: format!("o-{product_id}"),
            line_no: 1,
            customer_id: "c00005".into(),
            product_id: product_id.into(),
            quantity: 1,
            unit_price: money(revenue),
            revenue: money(revenue),
            currency: "EUR".into(),
        },
        t,
    )
}

/// Dead letters with a payload that is not UTF-8, one that is, and NULL ids.
fn dead_letters() -> Vec<DeadLetter> {
    let letter = |offset: u64, payload: &'static [u8], event_id: Option<&str>| DeadLetter {
        topic: "orders".into(),
        partition: 0,
        offset,
        key: format!("o{offset:08}"),
        event_id: event_id.map(str::to_owned),
        event_type: event_id.map(|_| "OrderCreated".to_owned()),
        reason_kind: "malformed_json".into(),
        reason: format!("bad byte at {offset}: 'x' \\ y"),
        payload: Bytes::from_static(payload),
        received_at_ms: 1_765_000_000_000 + offset as i64,
    };
    vec![
        letter(
            1,
            b"{\"order_id\": \"o1\"",
            Some("0199aaaa-0000-7000-8000-000000000001"),
        ),
        letter(2, b"\xff\xfe not utf-8 \x80", None),
        letter(3, b"caf\xc3\xa9 \\ 'quoted'", None),
    ]
}

/// The test's events: the default synthetic stream plus [`extra_events`].
fn all_events() -> Vec<Envelope> {
    let mut events = support::events();
    events.extend(extra_events());
    events
}

async fn fill(sink: &Arc<dyn Sink>, events: &[Envelope], letters: &[DeadLetter]) {
    support::apply(sink, events, 97).await;
    sink.apply(&IngestBatch {
        dead_letters: letters.to_vec(),
        ..IngestBatch::default()
    })
    .await
    .expect("apply dead letters");
}

async fn embedded_with(events: &[Envelope], letters: &[DeadLetter]) -> (TempDir, Engine) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = EmbeddedStore::open(EmbeddedConfig {
        dir: dir.path().join("readmodel"),
        fsync: false,
        ..EmbeddedConfig::default()
    })
    .expect("open the embedded store");
    let sink = store.open(1).await.expect("open generation 1");
    fill(&sink, events, letters).await;
    store.set_live(1).await.expect("make generation 1 live");
    let engine = support::embedded_engine_at(&dir, &support::query_config()).await;
    (dir, engine)
}

async fn clickhouse_store(
    test: &str,
    events: &[Envelope],
    letters: &[DeadLetter],
) -> (ClickHouseConfig, ClickHouseStore, Arc<dyn Sink>) {
    let config = support::clickhouse_config(test);
    let store = ClickHouseStore::connect(&config)
        .await
        .expect("connect to ClickHouse");
    let sink = store.open(1).await.expect("open generation 1");
    fill(&sink, events, letters).await;
    store.set_live(1).await.expect("make generation 1 live");
    (config, store, sink)
}

async fn reader(config: &ClickHouseConfig) -> Arc<ClickHouseReadModel> {
    Arc::new(
        ClickHouseReadModel::connect(config)
            .await
            .expect("read ClickHouse"),
    )
}

async fn engine_over(model: Arc<ClickHouseReadModel>) -> Engine {
    Engine::new(model, &support::query_config())
        .await
        .expect("engine")
}

/// The rows of a query as one batch, as an administrator sees them.
async fn rows(engine: &Engine, sql: &str) -> RecordBatch {
    rows_as(engine, Pii::Visible, sql).await
}

/// The rows of a query as one batch, personal data `pii`.
async fn rows_as(engine: &Engine, pii: Pii, sql: &str) -> RecordBatch {
    let batches = engine
        .collect(pii, sql)
        .await
        .unwrap_or_else(|e| panic!("{} failed on {sql}: {e}", engine.back_end()));
    let schema = batches
        .first()
        .map(|b| b.schema())
        .unwrap_or_else(|| panic!("{} returned no batch at all for {sql}", engine.back_end()));
    concat_batches(&schema, &batches).expect("concat")
}

async fn count(engine: &Engine, sql: &str) -> i64 {
    let batch = rows(engine, sql).await;
    let column = batch.column(0);
    let counts = column
        .as_any()
        .downcast_ref::<arrow_array::Int64Array>()
        .unwrap_or_else(|| panic!("{sql}: not a count: {}", column.data_type()));
    counts.value(0)
}

fn text(batch: &RecordBatch) -> String {
    pretty_format_batches(std::slice::from_ref(batch))
        .expect("format")
        .to_string()
}

#[tokio::test]
async fn both_back_ends_give_identical_answers() {
    let events = all_events();
    let letters = dead_letters();
    let (_dir, embedded) = embedded_with(&events, &letters).await;
    let (config, _store, _sink) = clickhouse_store("parity", &events, &letters).await;
    let clickhouse = engine_over(reader(&config).await).await;
    assert_eq!(clickhouse.back_end(), "clickhouse");
    for (sql, min_rows) in PARITY {
        let expected = rows(&embedded, sql).await;
        let actual = rows(&clickhouse, sql).await;
        assert!(
            expected.num_rows() >= *min_rows,
            "{sql}: only {} rows, expected at least {min_rows}\n{}",
            expected.num_rows(),
            text(&expected)
        );
        assert_eq!(actual.schema(), expected.schema(), "{sql}: schemas differ");
        assert!(
            actual == expected,
            "{sql}: answers differ\nembedded:\n{}\nclickhouse:\n{}",
            text(&expected),
            text(&actual)
        );
    }
    // A few values checked outright, not just alike.
    assert_eq!(count(&clickhouse, "SELECT count(*) FROM orders").await, 200);
    assert_eq!(
        count(
            &clickhouse,
            "SELECT count(*) FROM (SELECT order_id FROM orders WHERE customer_id <> 'zzz' LIMIT 7)"
        )
        .await,
        7
    );
    let letters = rows(
        &clickhouse,
        "SELECT payload FROM dead_letters ORDER BY \"offset\"",
    )
    .await;
    let payloads = text(&letters);
    assert!(
        payloads.contains("\u{FFFD}\u{FFFD} not utf-8 \u{FFFD}"),
        "{payloads}"
    );
    assert!(payloads.contains("café \\ 'quoted'"), "{payloads}");
    let quoted = rows(
        &clickhouse,
        "SELECT name FROM customer_events WHERE name = 'O''Brien \\ \"the\" Ünïcode'",
    )
    .await;
    assert_eq!(quoted.num_rows(), 1, "{}", text(&quoted));

    // Personal data is masked alike on both back ends, and a filter on a masked column
    // tests the redacted value, never the real one ClickHouse holds (no pushdown).
    for sql in [
        "SELECT customer_id, name, email FROM customers ORDER BY customer_id LIMIT 5",
        "SELECT payload, reason FROM dead_letters ORDER BY \"offset\"",
        "SELECT count(*) AS n FROM customer_events WHERE name = 'O''Brien \\ \"the\" Ünïcode'",
        "SELECT count(*) AS n FROM customer_events WHERE email LIKE '%@%'",
    ] {
        let expected = rows_as(&embedded, Pii::Masked, sql).await;
        let actual = rows_as(&clickhouse, Pii::Masked, sql).await;
        assert!(
            actual == expected,
            "{sql}: masked answers differ\nembedded:\n{}\nclickhouse:\n{}",
            text(&expected),
            text(&actual)
        );
        let shown = text(&actual);
        assert!(
            !shown.contains('@') && !shown.contains("Brien"),
            "{sql}: {shown}"
        );
    }
    let masked = text(
        &rows_as(
            &clickhouse,
            Pii::Masked,
            "SELECT name, email FROM customers LIMIT 3",
        )
        .await,
    );
    assert!(masked.contains("(redacted)"), "{masked}");
}

#[tokio::test]
async fn filters_and_limits_are_evaluated_by_clickhouse() {
    let events = support::events();
    let (config, _store, _sink) = clickhouse_store("pushdown", &events, &[]).await;
    let model = reader(&config).await;
    let engine = engine_over(model.clone()).await;
    let database = format!("{}_g1", config.database);

    let plan = |sql: &'static str| {
        let engine = engine.clone();
        async move { text(&rows(&engine, &format!("EXPLAIN {sql}")).await) }
    };
    // Projection, both filters and the limit in the ClickHouse query, no filter left.
    let explained = plan(
        "SELECT order_id FROM orders \
         WHERE customer_id = 'c00001' AND total > CAST('10' AS DECIMAL(18, 2)) LIMIT 3",
    )
    .await;
    let expected = format!(
        "SELECT `order_id` AS c2 FROM {database}.`orders` WHERE (`customer_id` = 'c00001') \
         AND (`total` > toDecimal64('10.00', 2)) LIMIT 3"
    );
    assert!(explained.contains(&expected), "{explained}");
    assert!(!explained.contains("FilterExec"), "{explained}");

    // An aggregate: key filters before the GROUP BY, sum filters after it.
    let explained = plan(
        "SELECT day, units FROM product_sales_daily \
         WHERE day >= DATE '2025-12-01' AND product_id = 'p00002' AND units > 1",
    )
    .await;
    assert!(
        explained.contains(&format!(
            "FROM {database}.`product_sales_daily` WHERE (toInt32(`day`) >= 20423) \
             AND (`product_id` = 'p00002') GROUP BY `day`, `product_id` \
             HAVING sum(`contributions`) != 0) WHERE (c2 > 1)"
        )),
        "{explained}"
    );
    assert!(!explained.contains("FilterExec"), "{explained}");

    // A filter ClickHouse may answer differently stays in DataFusion, and so does the limit.
    let explained =
        plan("SELECT customer_id FROM customer_events WHERE name LIKE 'Customer 1%' LIMIT 2").await;
    assert!(explained.contains("FilterExec"), "{explained}");
    assert!(
        explained.contains(&format!(
            "SELECT `customer_id` AS c3, `name` AS c4 FROM {database}.`customer_events` \
             FORMAT Native"
        )),
        "{explained}"
    );

    // The provider says which filters are exact.
    let provider = model.provider(Table::Raw(RawTable::Orders));
    let like = col("order_id").like(lit("o%"));
    let equal = col("order_id").eq(lit("o00000001"));
    let null_literal = col("order_id").eq(lit(ScalarValue::Utf8(None)));
    let support = provider
        .supports_filters_pushdown(&[&like, &equal, &null_literal])
        .expect("pushdown");
    assert_eq!(
        support,
        vec![
            TableProviderFilterPushDown::Unsupported,
            TableProviderFilterPushDown::Exact,
            TableProviderFilterPushDown::Unsupported,
        ]
    );

    // And the pushed query answers right.
    let batch = rows(
        &engine,
        "SELECT order_id FROM orders WHERE customer_id = 'c00001' ORDER BY order_id LIMIT 3",
    )
    .await;
    let (_dir, embedded) = support::embedded_engine(&events).await;
    let expected = rows(
        &embedded,
        "SELECT order_id FROM orders WHERE customer_id = 'c00001' ORDER BY order_id LIMIT 3",
    )
    .await;
    assert!(batch.num_rows() > 0);
    assert_eq!(batch, expected);
}

#[tokio::test]
async fn whole_sub_plans_run_in_clickhouse() {
    // That they answer as DataFusion would: `analytics/tests/slt/pushdown.slt`.
    let events = support::events();
    let (config, _store, _sink) = clickhouse_store("subplans", &events, &[]).await;
    let clickhouse = engine_over(reader(&config).await).await;
    // The dashboard's top-N: grouped, ranked and cut in ClickHouse; DataFusion sorts the
    // ten rows it gets back and joins their names.
    let database = format!("{}_g1", config.database);
    let explain = |range: &str| {
        let sql = format!(
            "EXPLAIN SELECT product_id, sum(revenue) AS revenue FROM product_sales_daily \
             WHERE {range} GROUP BY product_id ORDER BY revenue DESC, product_id LIMIT 10"
        );
        let clickhouse = clickhouse.clone();
        async move { text(&rows(&clickhouse, &sql).await) }
    };
    // Within one week (Tuesday 6 to Sunday 11 January): summed straight from the stored
    // daily rows, without merging them per (day, product) first.
    let explained = explain("day BETWEEN DATE '2026-01-06' AND DATE '2026-01-11'").await;
    assert!(
        explained.contains(&format!(
            "SELECT `product_id` AS q1_0, sum(`revenue`) AS q1_1 \
             FROM {database}.`product_sales_daily` WHERE (toInt32(`day`) >= 20459) \
             AND (toInt32(`day`) <= 20464) GROUP BY `product_id` HAVING sum(`contributions`) != 0"
        )) && explained.contains("LIMIT 10"),
        "{explained}"
    );
    assert!(!explained.contains("product_sales_monthly"), "{explained}");
    assert!(!explained.contains("product_sales_weekly"), "{explained}");
    assert!(!explained.contains("AggregateExec"), "{explained}");
    // Whole months from the month rollup, the edge days from the daily table, in one
    // statement (`crate::rollup`).
    let explained = explain("day BETWEEN DATE '2025-11-25' AND DATE '2026-01-10'").await;
    for part in [
        format!("FROM {database}.`product_sales_monthly` WHERE (toInt32(`month`) = 20423)"),
        format!(
            "FROM {database}.`product_sales_daily` WHERE (((toInt32(`day`) >= 20417) \
             AND (toInt32(`day`) <= 20422)) OR ((toInt32(`day`) >= 20454) \
             AND (toInt32(`day`) <= 20463)))"
        ),
        "UNION ALL".to_owned(),
        // The two tables' stored rows grouped once, not merged per key first.
        ") GROUP BY q1_0 HAVING sum(q1_n) != 0".to_owned(),
        // The decimal key first as a float: ClickHouse 18.16's fast sort.
        "ORDER BY toFloat64(q3_1) DESC NULLS FIRST, q3_1 DESC NULLS FIRST, q3_0 ASC NULLS LAST \
         LIMIT 10"
            .to_owned(),
    ] {
        assert!(explained.contains(&part), "{part}\n{explained}");
    }
    assert!(!explained.contains("AggregateExec"), "{explained}");
    assert!(
        !explained.contains("GROUP BY `month`") && !explained.contains("GROUP BY `day`"),
        "{explained}"
    );
    // December from the month rollup, the weeks of 24 November, 5 and 12 January from the
    // week rollup, the days left at both ends from the daily table: one statement, its three
    // tables' stored rows grouped once.
    let explained = explain("day BETWEEN DATE '2025-11-20' AND DATE '2026-01-20'").await;
    for part in [
        format!("FROM {database}.`product_sales_monthly` WHERE (toInt32(`month`) = 20423)"),
        format!(
            "FROM {database}.`product_sales_weekly` WHERE ((toInt32(`week`) = 20416) \
             OR ((toInt32(`week`) >= 20458) AND (toInt32(`week`) <= 20465)))"
        ),
        format!("FROM {database}.`product_sales_daily` WHERE"),
        ") GROUP BY q1_0 HAVING sum(q1_n) != 0".to_owned(),
    ] {
        assert!(explained.contains(&part), "{part}\n{explained}");
    }
    // Three branches in the one statement (shown twice: the logical and the physical plan).
    assert!(
        explained
            .lines()
            .filter(|l| l.contains("UNION ALL"))
            .all(|l| l.matches("UNION ALL").count() == 2),
        "{explained}"
    );
    assert!(!explained.contains("AggregateExec"), "{explained}");

    // A filter over an aggregate's sums (HAVING) runs in ClickHouse too.
    let explained = text(
        &rows(
            &clickhouse,
            "EXPLAIN SELECT product_id, sum(units) AS units FROM product_sales_daily \
             GROUP BY product_id HAVING sum(units) > 40",
        )
        .await,
    );
    assert!(
        explained.contains(") WHERE (isNotNull(q1_1) AND ifNull(q1_1 > 40, 0))"),
        "{explained}"
    );
    assert!(!explained.contains("FilterExec"), "{explained}");

    // The dashboard's name look-up for the ids it ranked reads only their events.
    let explained = text(
        &rows(
            &clickhouse,
            "EXPLAIN SELECT customer_id, name, country FROM customers \
             WHERE customer_id IN ('c00001', 'c00002')",
        )
        .await,
    );
    assert!(
        explained.contains(&format!("FROM {database}.`customer_events` WHERE")),
        "{explained}"
    );
}

#[tokio::test]
async fn before_a_generation_is_live_tables_are_empty() {
    // Nothing at all in ClickHouse under this name.
    let config = support::clickhouse_config("nothing");
    let model = reader(&config).await;
    assert_eq!(
        model.freshness().await.expect("freshness"),
        (0, Freshness::default())
    );
    let engine = engine_over(model).await;
    for table in Table::all() {
        let batches = engine
            .collect(Pii::Visible, &format!("SELECT * FROM {}", table.name()))
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", table.name()));
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        assert_eq!(rows, 0, "{}", table.name());
    }
    assert_eq!(count(&engine, "SELECT count(*) FROM orders").await, 0);
    let report = engine.freshness().await.expect("freshness report");
    assert_eq!(report.generation, 0);

    // A generation filled but not yet live: still nothing; live: everything.
    let config = support::clickhouse_config("notlive");
    let store = ClickHouseStore::connect(&config).await.expect("connect");
    let sink = store.open(1).await.expect("open generation 1");
    support::apply(&sink, &support::events(), 97).await;
    let model = reader(&config).await;
    let engine = engine_over(model.clone()).await;
    assert_eq!(count(&engine, "SELECT count(*) FROM orders").await, 0);
    assert_eq!(count(&engine, "SELECT count(*) FROM daily_sales").await, 0);
    assert_eq!(model.freshness().await.expect("freshness").0, 0);
    store.set_live(1).await.expect("make generation 1 live");
    tokio::time::sleep(LIVE_TTL + Duration::from_millis(100)).await;
    assert_eq!(count(&engine, "SELECT count(*) FROM orders").await, 200);
    assert_eq!(model.freshness().await.expect("freshness").0, 1);
}

#[tokio::test]
async fn clickhouse_down_is_an_unavailable_error() {
    // A port nothing listens on.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let config = ClickHouseConfig {
        url: format!("http://127.0.0.1:{port}"),
        database: "shoplens_down".into(),
        request_timeout_ms: 2_000,
        ..ClickHouseConfig::default()
    };
    let model = reader(&config).await;
    assert!(
        matches!(model.freshness().await, Err(ReadModelError::Unavailable(_))),
        "freshness of an unreachable ClickHouse"
    );
    let engine = engine_over(model).await;
    for sql in [
        "SELECT * FROM orders",
        "SELECT day, revenue FROM daily_sales WHERE day > DATE '2025-01-01'",
        "SELECT count(*) FROM products",
    ] {
        match engine.collect(Pii::Visible, sql).await {
            Err(AnalyticsError::ReadModel(ReadModelError::Unavailable(m))) => {
                assert!(m.contains("unreachable"), "{m}");
            }
            other => panic!("{sql}: expected an unavailable read model, got {other:?}"),
        }
    }
    assert!(matches!(
        engine.freshness().await,
        Err(AnalyticsError::ReadModel(ReadModelError::Unavailable(_)))
    ));
}

#[tokio::test]
async fn freshness_is_the_sinks() {
    let events = support::events();
    let (config, _store, sink) = clickhouse_store("freshness", &events, &[]).await;
    let model = reader(&config).await;
    let (generation, freshness) = model.freshness().await.expect("freshness");
    assert_eq!(generation, 1);
    assert_eq!(
        freshness,
        sink.freshness().await.expect("the sink's freshness")
    );
    let newest = events
        .iter()
        .map(|e| e.occurred_at.timestamp_millis())
        .max();
    assert_eq!(freshness.as_of_ms, newest);
    assert!(freshness.visible_at_ms.is_some());
    let report = engine_over(model.clone())
        .await
        .freshness()
        .await
        .expect("report");
    assert_eq!(report.generation, 1);
    // The data version grows with every apply (what the result cache keys on).
    let before = model.watermark().await.expect("watermark").version;
    assert!(before > 0);
    support::apply(&sink, &extra_events(), 1_000).await;
    let after = model.watermark().await.expect("watermark").version;
    assert!(after > before, "data version {before} -> {after}");
}

#[tokio::test]
async fn a_blue_green_switch_is_seen_without_a_restart() {
    let events = support::events();
    let (config, store, _sink) = clickhouse_store("switch", &events, &[]).await;
    let model = reader(&config).await;
    let engine = engine_over(model.clone()).await;
    assert_eq!(count(&engine, "SELECT count(*) FROM orders").await, 200);

    // Generation 2 holds only the first half of the stream; make it live.
    let half: Vec<Envelope> = events[..events.len() / 2].to_vec();
    let orders_in_half = half
        .iter()
        .filter(|e| RawTable::for_event(e.payload.event_type()) == RawTable::Orders)
        .count() as i64;
    let sink = store.open(2).await.expect("open generation 2");
    support::apply(&sink, &half, 50).await;
    store.set_live(2).await.expect("make generation 2 live");
    tokio::time::sleep(LIVE_TTL + Duration::from_millis(100)).await;
    assert_eq!(
        count(&engine, "SELECT count(*) FROM orders").await,
        orders_in_half
    );
    assert_eq!(
        count(
            &engine,
            "SELECT CAST(sum(orders_placed) AS BIGINT) FROM daily_sales"
        )
        .await,
        orders_in_half
    );
    assert_eq!(model.freshness().await.expect("freshness").0, 2);
}

#[tokio::test]
async fn answers_stream_in_batches_of_the_session_size() {
    let events = support::events();
    let (config, _store, _sink) = clickhouse_store("batches", &events, &[]).await;
    let model = reader(&config).await;
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_batch_size(7));
    for table in [
        Table::Raw(RawTable::Orders),
        Table::Agg(AggTable::DailySales),
    ] {
        ctx.register_table(table.name(), model.provider(table))
            .expect("register");
    }
    let batches = ctx
        .sql("SELECT * FROM orders")
        .await
        .expect("plan")
        .collect()
        .await
        .expect("rows");
    assert!(batches.iter().all(|b| b.num_rows() <= 7));
    assert_eq!(
        batches.iter().map(RecordBatch::num_rows).sum::<usize>(),
        200
    );
    assert!(batches.len() >= 200 / 7, "{} batches", batches.len());
    assert!(
        batches
            .iter()
            .all(|b| b.schema() == Table::Raw(RawTable::Orders).schema())
    );

    let daily = ctx
        .sql("SELECT * FROM daily_sales")
        .await
        .expect("plan")
        .collect()
        .await
        .expect("rows");
    assert!(daily.len() > 1, "{} batches", daily.len());
    assert!(
        daily
            .iter()
            .all(|b| b.schema() == Table::Agg(AggTable::DailySales).schema())
    );
}

/// The dashboard API itself, over HTTP, answers the same on both back ends (all but the
/// back end's name and the wall-clock parts of freshness).
#[tokio::test]
async fn the_dashboard_answers_identically_on_both_back_ends() {
    let events = support::events();
    let (_dir, embedded) = support::embedded_engine(&events).await;
    let (_config, clickhouse) = support::clickhouse_engine("dash_parity", &events).await;
    let embedded = support::spawn_app(embedded).await;
    let clickhouse = support::spawn_app(clickhouse).await;
    let range = "from=2025-11-20&to=2026-01-31";
    for view in [
        format!("daily?{range}"),
        format!("top-products?{range}&limit=15"),
        format!("top-products?{range}&category=Books"),
        format!("top-customers?{range}&limit=20"),
        format!("trends?{range}&period=month"),
        format!("trends?{range}&period=year"),
    ] {
        let path = format!("/api/v1/dashboard/{view}");
        let (status_e, mut e) = embedded.get_json(&path).await;
        let (status_c, mut c) = clickhouse.get_json(&path).await;
        assert_eq!((status_e, status_c), (200, 200), "{view}: {e} {c}");
        assert!(!e["rows"].as_array().unwrap().is_empty(), "{view}");
        assert_eq!(e["back_end"], "embedded");
        assert_eq!(c["back_end"], "clickhouse");
        assert_eq!(
            e["freshness"]["as_of_ms"], c["freshness"]["as_of_ms"],
            "{view}"
        );
        for answer in [&mut e, &mut c] {
            let obj = answer.as_object_mut().unwrap();
            obj.remove("back_end");
            obj.remove("freshness");
        }
        assert_eq!(e, c, "{view}");
    }
}

/// The analytics server reads ClickHouse as a read-only user with server-side limits: it
/// answers, and the same user can neither write nor escape its limits.
#[tokio::test]
async fn the_analytics_server_reads_as_a_read_only_user_with_limits() {
    let Ok(reader) = std::env::var("SHOPLENS_TEST_CLICKHOUSE_READER") else {
        eprintln!("skipped: no SHOPLENS_TEST_CLICKHOUSE_READER");
        return;
    };
    let password = std::env::var("SHOPLENS_TEST_CLICKHOUSE_READER_PASSWORD").unwrap_or_default();
    let events = support::events();
    let (config, engine) = support::clickhouse_engine("readonly", &events).await;
    assert_eq!(config.reader().0, reader);
    let orders = rows(&engine, "SELECT count(*) AS n FROM orders").await;
    assert!(orders.num_rows() == 1);
    let http = reqwest::Client::new();
    let ask = |sql: String| {
        let (http, url, reader, password) = (
            http.clone(),
            support::clickhouse_url(),
            reader.clone(),
            password.clone(),
        );
        async move {
            let resp = http
                .post(url)
                .header("X-ClickHouse-User", reader)
                .header("X-ClickHouse-Key", password)
                .body(sql)
                .send()
                .await
                .unwrap();
            (
                resp.status().as_u16(),
                resp.text().await.unwrap_or_default(),
            )
        }
    };
    let db = format!("{}_g1", config.database);
    for write in [
        format!("INSERT INTO {db}.orders (event_id) VALUES ('x')"),
        format!("CREATE TABLE {db}.evil (a UInt8) ENGINE = Memory"),
        format!("DROP TABLE {db}.orders"),
        "SET readonly = 0".to_owned(),
    ] {
        let (status, body) = ask(write.clone()).await;
        assert_ne!(status, 200, "{write}: {body}");
        assert!(
            body.contains("readonly") || body.contains("Cannot"),
            "{write}: {body}"
        );
    }
    for (setting, value) in [
        ("readonly", "1"),
        ("max_execution_time", "60"),
        ("max_result_rows", "100000000"),
    ] {
        let (status, body) = ask(format!(
            "SELECT value FROM system.settings WHERE name = '{setting}'"
        ))
        .await;
        assert_eq!((status, body.trim()), (200, value), "{setting}");
    }
}

/// Analytics servers keep no state of their own: two over the same ClickHouse give the same
/// answers (rows, freshness, data version) before and after the data changes, and the
/// result cache of neither serves an answer older than the other's.
#[tokio::test]
async fn two_analytics_servers_over_one_clickhouse_answer_identically() {
    let events = support::events();
    let (first_half, second_half) = events.split_at(events.len() / 2);
    let config = support::clickhouse_config("two_servers");
    let store = ClickHouseStore::connect(&config).await.unwrap();
    let sink = store.open(1).await.unwrap();
    support::apply(&sink, first_half, 97).await;
    store.set_live(1).await.unwrap();

    let server = || async {
        let model = ClickHouseReadModel::connect(&config).await.unwrap();
        let engine = Engine::new(Arc::new(model), &support::query_config())
            .await
            .unwrap();
        support::spawn_app(engine).await
    };
    let (a, b) = (server().await, server().await);
    let range = "from=2025-11-20&to=2026-01-31";
    let views = [
        format!("daily?{range}"),
        format!("top-products?{range}&limit=15"),
        format!("top-customers?{range}&limit=20"),
        format!("trends?{range}&period=month"),
    ];
    let sql = "SELECT customer_id, count(*) AS n, sum(total) AS spent FROM orders \
               GROUP BY customer_id ORDER BY spent DESC, customer_id LIMIT 20";
    let mut seen = Vec::new();
    for round in 0..2 {
        if round == 1 {
            support::apply(&sink, second_half, 97).await;
        }
        for view in &views {
            let path = format!("/api/v1/dashboard/{view}");
            let (status_a, mut answer_a) = a.get_json(&path).await;
            let (status_b, mut answer_b) = b.get_json(&path).await;
            assert_eq!((status_a, status_b), (200, 200), "{view}");
            assert!(!answer_a["rows"].as_array().unwrap().is_empty(), "{view}");
            seen.push(answer_a["freshness"]["data_version"].clone());
            // The lag is measured at each request; the rest must match.
            for answer in [&mut answer_a, &mut answer_b] {
                answer["freshness"]
                    .as_object_mut()
                    .unwrap()
                    .remove("lag_ms");
            }
            assert_eq!(answer_a, answer_b, "{view}, round {round}");
        }
        let (rows_a, rows_b) = (a.sql(sql, "json").await, b.sql(sql, "json").await);
        assert_eq!(
            (rows_a.status().as_u16(), rows_b.status().as_u16()),
            (200, 200)
        );
        let (mut rows_a, mut rows_b): (serde_json::Value, serde_json::Value) =
            (rows_a.json().await.unwrap(), rows_b.json().await.unwrap());
        for answer in [&mut rows_a, &mut rows_b] {
            if let Some(f) = answer
                .get_mut("freshness")
                .and_then(serde_json::Value::as_object_mut)
            {
                f.remove("lag_ms");
            }
        }
        assert_eq!(rows_a, rows_b, "round {round}");
    }
    // The second round saw the new data, not a cached answer from the first.
    assert_ne!(seen.first(), seen.last(), "{seen:?}");
}
