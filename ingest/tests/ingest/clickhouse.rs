//! The ClickHouse sink and store against the real server at `SHOPLENS_TEST_CLICKHOUSE_URL`:
//! exactly-once apply, aggregates equal to the Rust reference, dead letters, freshness,
//! positions, migrations and generations. Each test uses its own database base name.

use arrow_array::RecordBatch;
use bytes::Bytes;
use chrono::{DateTime, TimeZone, Utc};
use rust_decimal::Decimal;
use shoplens_bus::Position;
use shoplens_contract::tables::RawTable;
use shoplens_contract::tables::to_batches;
use shoplens_contract::{
    CustomerRegistered, Envelope, OrderCreated, OrderLine, OrderStatus, OrderStatusChanged,
    PaymentCompleted, ProductCreated, ProductPurchased, ShipmentCreated,
};
use shoplens_ingest::IngestError;
use shoplens_ingest::clickhouse::{ClickHouseStore, MIGRATIONS, migration_statements};
use shoplens_ingest::sink::{ApplyReport, DeadLetter, IngestBatch, ReadModelStore, Sink};
use shoplens_readmodel::aggregate::Aggregates;
use shoplens_readmodel::config::ClickHouseConfig;
use shoplens_readmodel::tables::AggTable;

fn url() -> String {
    std::env::var("SHOPLENS_TEST_CLICKHOUSE_URL").unwrap_or_else(|_| {
        panic!(
            "SHOPLENS_TEST_CLICKHOUSE_URL is not set: run the tests through ./scripts/test.sh, \
             which starts ClickHouse"
        )
    })
}

fn config(test: &str) -> ClickHouseConfig {
    ClickHouseConfig {
        url: url(),
        database: format!("t_{test}_{}", uuid::Uuid::now_v7().simple()),
        request_timeout_ms: 10_000,
        ..ClickHouseConfig::default()
    }
}

async fn store(test: &str) -> ClickHouseStore {
    ClickHouseStore::connect(&config(test))
        .await
        .expect("connect to ClickHouse")
}

fn at(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, 59, 59).unwrap()
}

fn money(s: &str) -> Decimal {
    s.parse().unwrap()
}

/// An order placed, paid and bought at `when`: OrderCreated, status changes (Placed, Paid,
/// Shipped), one ProductPurchased per line.
fn order(
    when: DateTime<Utc>,
    order_id: &str,
    customer: &str,
    lines: &[(&str, i32, &str)],
    paid: bool,
) -> Vec<Envelope> {
    let lines: Vec<OrderLine> = lines
        .iter()
        .enumerate()
        .map(|(i, (product, quantity, price))| OrderLine {
            line_no: i as i32 + 1,
            product_id: (*product).into(),
            quantity: *quantity,
            unit_price: money(price),
        })
        .collect();
    let total: Decimal = lines
        .iter()
        .map(|l| l.unit_price * Decimal::from(l.quantity))
        .sum();
    let mut events = vec![
        Envelope::at(
            OrderCreated {
                order_id: order_id.into(),
                customer_id: customer.into(),
                lines: lines.clone(),
                total,
                currency: "EUR".into(),
            },
            when,
        ),
        Envelope::at(
            OrderStatusChanged {
                order_id: order_id.into(),
                customer_id: customer.into(),
                from: None,
                to: OrderStatus::Placed,
            },
            when,
        ),
    ];
    if paid {
        events.push(Envelope::at(
            OrderStatusChanged {
                order_id: order_id.into(),
                customer_id: customer.into(),
                from: Some(OrderStatus::Placed),
                to: OrderStatus::Paid,
            },
            when,
        ));
        for l in &lines {
            events.push(Envelope::at(
                ProductPurchased {
                    order_id: order_id.into(),
                    line_no: l.line_no,
                    customer_id: customer.into(),
                    product_id: l.product_id.clone(),
                    quantity: l.quantity,
                    unit_price: l.unit_price,
                    revenue: l.unit_price * Decimal::from(l.quantity),
                    currency: "EUR".into(),
                },
                when,
            ));
        }
        events.push(Envelope::at(
            OrderStatusChanged {
                order_id: order_id.into(),
                customer_id: customer.into(),
                from: Some(OrderStatus::Paid),
                to: OrderStatus::Shipped,
            },
            when,
        ));
    }
    events
}

/// Orders over several days, a month end, a year end and two years; several products and
/// customers; unpaid orders; plus events of the tables no aggregate reads.
fn data_set() -> Vec<Envelope> {
    let mut events = Vec::new();
    events.extend(order(
        at(2025, 12, 31, 23),
        "o1",
        "alice",
        &[("p1", 2, "9.99"), ("p2", 1, "100.00")],
        true,
    ));
    events.extend(order(
        at(2026, 1, 1, 0),
        "o2",
        "bob",
        &[("p1", 1, "9.99")],
        true,
    ));
    events.extend(order(
        at(2026, 1, 1, 12),
        "o3",
        "alice",
        &[("p3", 5, "0.01")],
        false,
    ));
    events.extend(order(
        at(2026, 1, 31, 23),
        "o4",
        "carol",
        &[("p2", 3, "100.00"), ("p3", 1, "0.01")],
        true,
    ));
    events.extend(order(
        at(2026, 2, 1, 0),
        "o5",
        "bob",
        &[("p1", 10, "9.99")],
        true,
    ));
    events.extend(order(
        at(2026, 2, 1, 0),
        "o6",
        "alice",
        &[("p2", 1, "99999.99")],
        true,
    ));
    events.extend(order(
        at(2026, 11, 25, 10),
        "o7",
        "dave",
        &[("p4", 1, "0.00")],
        true,
    ));
    events.extend(order(
        at(2026, 11, 25, 11),
        "o8",
        "carol",
        &[("p1", 1, "9.99")],
        false,
    ));
    // A free item bought without a Paid change that day: a customer key whose sums are all
    // zero, which the reference keeps (and SummingMergeTree would drop without
    // `contributions`).
    events.push(Envelope::at(
        ProductPurchased {
            order_id: "o9".into(),
            line_no: 1,
            customer_id: "erin".into(),
            product_id: "p4".into(),
            quantity: 1,
            unit_price: money("0.00"),
            revenue: money("0.00"),
            currency: "EUR".into(),
        },
        at(2026, 3, 3, 3),
    ));
    events.push(Envelope::at(
        CustomerRegistered {
            customer_id: "alice".into(),
            name: "Alice".into(),
            email: "alice@example.com".into(),
            country: "DE".into(),
        },
        at(2025, 12, 1, 8),
    ));
    events.push(Envelope::at(
        ProductCreated {
            product_id: "p1".into(),
            sku: "SKU-1".into(),
            name: "Pen".into(),
            category: "office".into(),
            price: money("9.99"),
            currency: "EUR".into(),
        },
        at(2025, 12, 1, 8),
    ));
    events.push(Envelope::at(
        PaymentCompleted {
            payment_id: "pay1".into(),
            order_id: "o1".into(),
            amount: money("119.98"),
            currency: "EUR".into(),
            method: "card".into(),
        },
        at(2025, 12, 31, 23),
    ));
    events.push(Envelope::at(
        ShipmentCreated {
            shipment_id: "s1".into(),
            order_id: "o1".into(),
            carrier: "DHL".into(),
            location: "Berlin".into(),
            eta: at(2026, 1, 3, 12),
        },
        at(2026, 1, 1, 9),
    ));
    events
}

fn batch_of(events: &[Envelope]) -> IngestBatch {
    IngestBatch {
        tables: to_batches(events),
        ..IngestBatch::default()
    }
}

fn reference(events: &[Envelope]) -> Aggregates {
    let batches = to_batches(events);
    Aggregates::from_raw(batches.iter().map(|(t, b)| (*t, b))).unwrap()
}

fn rows_in(events: &[Envelope], table: RawTable) -> u64 {
    events
        .iter()
        .filter(|e| RawTable::for_event(e.event_type()) == table)
        .count() as u64
}

/// Every raw count and every aggregate table equals the reference for `events`.
async fn assert_read_model(sink: &dyn Sink, events: &[Envelope]) {
    for table in RawTable::ALL {
        assert_eq!(
            sink.raw_row_count(table).await.unwrap(),
            rows_in(events, table),
            "raw rows of {}",
            table.name()
        );
    }
    let expected = reference(events);
    for table in AggTable::ALL {
        let got: RecordBatch = sink.aggregate(table).await.unwrap();
        let want = expected.to_record_batch(table);
        assert!(
            want.num_rows() > 0,
            "{} is empty in the reference",
            table.name()
        );
        assert_eq!(got, want, "aggregate {}", table.name());
    }
}

fn dead_letter(offset: u64, key: &str, payload: &[u8]) -> DeadLetter {
    DeadLetter {
        topic: "orders".into(),
        partition: 1,
        offset,
        key: key.into(),
        event_id: offset.is_multiple_of(2).then(|| format!("id-{offset}")),
        event_type: None,
        reason_kind: "malformed_json".into(),
        reason: format!("bad bytes at offset {offset}"),
        payload: Bytes::copy_from_slice(payload),
        received_at_ms: 1_700_000_000_000 + offset as i64,
    }
}

#[tokio::test]
async fn aggregates_equal_the_rust_reference_and_each_event_counts_once() {
    let store = store("agg").await;
    let sink = store.open(1).await.unwrap();
    let events = data_set();
    let (first, second) = events.split_at(20);

    let report = sink.apply(&batch_of(first)).await.unwrap();
    assert_eq!(
        report,
        ApplyReport {
            rows_written: 20,
            duplicates_skipped: 0,
            dead_letters_written: 0
        }
    );
    assert_read_model(&*sink, first).await;

    // The same batch again: nothing new.
    let report = sink.apply(&batch_of(first)).await.unwrap();
    assert_eq!(
        report,
        ApplyReport {
            rows_written: 0,
            duplicates_skipped: 20,
            dead_letters_written: 0
        }
    );

    // Old and new events mixed: only the new ones count.
    let mixed: Vec<Envelope> = first[10..].iter().chain(second).cloned().collect();
    let report = sink.apply(&batch_of(&mixed)).await.unwrap();
    assert_eq!(report.rows_written, second.len());
    assert_eq!(report.duplicates_skipped, 10);
    assert_read_model(&*sink, &events).await;

    // And the whole set once more, after background merges may have run.
    let report = sink.apply(&batch_of(&events)).await.unwrap();
    assert_eq!(report.rows_written, 0);
    assert_eq!(report.duplicates_skipped, events.len());
    assert_read_model(&*sink, &events).await;

    // Fully merged (SummingMergeTree's merges sum, and drop all-zero rows), still the same.
    let client = clickhouse::Client::default()
        .with_url(url())
        .with_validation(false);
    for table in AggTable::ALL {
        let sql = format!(
            "OPTIMIZE TABLE {}.{} FINAL",
            store.database(1),
            table.name()
        );
        client.query(&sql).execute().await.unwrap();
    }
    assert_read_model(&*sink, &events).await;

    store.drop_generation(1).await.unwrap();
}

#[tokio::test]
async fn dead_letters_are_stored_once_and_park_their_keys() {
    let store = store("dead").await;
    let sink = store.open(1).await.unwrap();
    let binary = [0xff, 0x00, b'{', 0x80];
    let mut batch = IngestBatch {
        dead_letters: vec![
            dead_letter(7, "order-2", &binary),
            dead_letter(3, "order-1", b"{not json"),
        ],
        ..IngestBatch::default()
    };
    let mut other_topic = dead_letter(3, "cust-9", b"x");
    other_topic.topic = "customers".into();
    other_topic.event_type = Some("CustomerUpdated".into());
    other_topic.reason_kind = "parked".into();
    batch.dead_letters.push(other_topic.clone());
    assert_eq!(sink.apply(&batch).await.unwrap().dead_letters_written, 3);

    // Again, plus one new: only the new one is stored.
    batch.dead_letters.push(dead_letter(8, "order-2", b"late"));
    let report = sink.apply(&batch).await.unwrap();
    assert_eq!(report.dead_letters_written, 1);
    assert_eq!(report.rows_written, 0);

    let stored = sink.dead_letters().await.unwrap();
    assert_eq!(
        stored,
        vec![
            other_topic,
            dead_letter(3, "order-1", b"{not json"),
            dead_letter(7, "order-2", &binary),
            dead_letter(8, "order-2", b"late"),
        ]
    );
    assert_eq!(
        sink.parked_keys().await.unwrap(),
        vec![
            ("customers".to_owned(), "cust-9".to_owned()),
            ("orders".to_owned(), "order-1".to_owned()),
            ("orders".to_owned(), "order-2".to_owned()),
        ]
    );
}

#[tokio::test]
async fn freshness_and_positions_follow_the_newest_data() {
    let store = store("fresh").await;
    let sink = store.open(3).await.unwrap();
    let f = sink.freshness().await.unwrap();
    assert_eq!((f.as_of_ms, f.visible_at_ms), (None, None));
    assert!(sink.stored_positions().await.unwrap().is_empty());

    let pos = |topic: &str, partition, next_offset| Position {
        topic: topic.into(),
        partition,
        next_offset,
    };
    let late = order(at(2026, 3, 2, 10), "o1", "a", &[("p", 1, "1.00")], true);
    let early = order(at(2026, 3, 1, 10), "o2", "b", &[("p", 1, "1.00")], true);
    let mut batch = batch_of(&late);
    batch.positions = vec![pos("orders", 0, 10), pos("orders", 1, 4)];
    let before = Utc::now().timestamp_millis();
    sink.apply(&batch).await.unwrap();
    let after = Utc::now().timestamp_millis();
    let f = sink.freshness().await.unwrap();
    assert_eq!(f.as_of_ms, Some(at(2026, 3, 2, 10).timestamp_millis()));
    let visible = f.visible_at_ms.unwrap();
    assert!(
        (before..=after).contains(&visible),
        "{visible} not in {before}..={after}"
    );

    // Older events and lower positions move neither watermark.
    let mut batch = batch_of(&early);
    batch.positions = vec![pos("orders", 0, 8), pos("payments", 0, 2)];
    sink.apply(&batch).await.unwrap();
    let f2 = sink.freshness().await.unwrap();
    assert_eq!(f2, f);
    assert_eq!(
        sink.stored_positions().await.unwrap(),
        vec![
            pos("orders", 0, 10),
            pos("orders", 1, 4),
            pos("payments", 0, 2)
        ]
    );

    // A second sink on the same generation (a restarted worker) sees the same and advances.
    let again = store.open(3).await.unwrap();
    assert_eq!(again.freshness().await.unwrap(), f);
    let newer = order(at(2026, 3, 3, 10), "o3", "c", &[("p", 1, "1.00")], false);
    again.apply(&batch_of(&newer)).await.unwrap();
    assert_eq!(
        again.freshness().await.unwrap().as_of_ms,
        Some(at(2026, 3, 3, 10).timestamp_millis())
    );
}

#[tokio::test]
async fn migrations_are_idempotent_across_opens_and_store_instances() {
    let config = config("migr");
    let store = ClickHouseStore::connect(&config).await.unwrap();
    let second = ClickHouseStore::connect(&config).await.unwrap();
    // Two stores open the same generation at once, then once more each.
    let (a, b) = tokio::join!(store.open(1), second.open(1));
    let (a, b) = (a.unwrap(), b.unwrap());
    let events = order(at(2026, 5, 5, 5), "o1", "a", &[("p", 2, "3.50")], true);
    assert_eq!(
        a.apply(&batch_of(&events)).await.unwrap().rows_written,
        events.len()
    );
    let c = store.open(1).await.unwrap();
    let _ = second.open(1).await.unwrap();
    // Data survived re-opening, and every sink sees it once.
    assert_read_model(&*b, &events).await;
    assert_read_model(&*c, &events).await;
    assert_eq!(
        c.apply(&batch_of(&events))
            .await
            .unwrap()
            .duplicates_skipped,
        events.len()
    );
}

#[tokio::test]
async fn generations_are_databases_and_one_of_them_is_live() {
    let store = store("gen").await;
    assert_eq!(store.live().await.unwrap(), None);
    assert_eq!(store.live_database().await.unwrap(), None);
    assert!(store.generations().await.unwrap().is_empty());

    let one = store.open(1).await.unwrap();
    let two = store.open(2).await.unwrap();
    let events = order(at(2026, 6, 1, 1), "o1", "a", &[("p", 1, "1.00")], true);
    one.apply(&batch_of(&events)).await.unwrap();
    assert_eq!(store.generations().await.unwrap(), vec![1, 2]);
    // Generations are independent copies.
    assert_eq!(two.raw_row_count(RawTable::Orders).await.unwrap(), 0);

    store.set_live(1).await.unwrap();
    assert_eq!(store.live().await.unwrap(), Some(1));
    assert_eq!(
        store.live_database().await.unwrap(),
        Some(store.database(1))
    );
    store.set_live(2).await.unwrap();
    assert_eq!(store.live().await.unwrap(), Some(2));
    // Another store instance (the analytics server) reads the same pointer.
    let reader = ClickHouseStore::connect(&ClickHouseConfig {
        database: store.meta_database().trim_end_matches("_meta").to_owned(),
        ..config("unused")
    })
    .await
    .unwrap();
    assert_eq!(reader.live().await.unwrap(), Some(2));

    // The live generation cannot be dropped; the other one can.
    let err = store.drop_generation(2).await.unwrap_err();
    assert!(matches!(err, IngestError::Corrupt(_)), "{err}");
    store.drop_generation(1).await.unwrap();
    assert_eq!(store.generations().await.unwrap(), vec![2]);
    // An unknown generation cannot be made live.
    assert!(store.set_live(9).await.is_err());
    assert_eq!(store.live().await.unwrap(), Some(2));
    store.set_live(2).await.unwrap();
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // The listener is dropped: nothing listens on the port any more.
    let config = ClickHouseConfig {
        url: format!("http://127.0.0.1:{port}"),
        request_timeout_ms: 2_000,
        ..config("down")
    };
    let err = ClickHouseStore::connect(&config).await.unwrap_err();
    assert!(matches!(err, IngestError::Unavailable(_)), "{err}");

    // A server that refuses the write (here: the generation was dropped under the sink) is
    // unavailable too: the worker backs off and retries.
    let store = store("down2").await;
    let sink = store.open(1).await.unwrap();
    store.drop_generation(1).await.unwrap();
    let events = order(at(2026, 6, 1, 1), "o1", "a", &[("p", 1, "1.00")], true);
    let err = sink.apply(&batch_of(&events)).await.unwrap_err();
    assert!(matches!(err, IngestError::Unavailable(_)), "{err}");
}

/// The one gap of the design, closed: raw rows stored while a view's insert never happened
/// (simulated by detaching the view), and an apply that never finished in the journal. The
/// next sink to apply repairs the aggregates from the raw tables.
#[tokio::test]
async fn an_interrupted_apply_is_repaired_from_the_raw_tables() {
    let config = config("repair");
    let store = ClickHouseStore::connect(&config).await.unwrap();
    let sink = store.open_sink(1).await.unwrap();
    let db = sink.database().to_owned();
    let client = clickhouse::Client::default()
        .with_url(config.url.clone())
        .with_validation(false);
    let run = |sql: String| {
        let client = client.clone();
        async move { client.query(&sql).execute().await.unwrap() }
    };

    let events = data_set();
    let (a, rest) = events.split_at(15);
    let (b, c) = rest.split_at(15);
    sink.apply(&batch_of(a)).await.unwrap();
    run(format!(
        "DETACH TABLE {db}.mv_product_purchases_daily_sales"
    ))
    .await;
    run(format!("DETACH TABLE {db}.mv_orders_yearly_sales")).await;
    sink.apply(&batch_of(b)).await.unwrap();
    run(format!(
        "ATTACH TABLE {db}.mv_product_purchases_daily_sales"
    ))
    .await;
    run(format!("ATTACH TABLE {db}.mv_orders_yearly_sales")).await;
    run(format!(
        "INSERT INTO {db}.apply_journal VALUES ('crashed', 0, 0, '')"
    ))
    .await;
    let so_far: Vec<Envelope> = a.iter().chain(b).cloned().collect();
    let want = reference(&so_far);
    let daily = sink.aggregate(AggTable::DailySales).await.unwrap();
    assert_ne!(
        daily,
        want.to_record_batch(AggTable::DailySales),
        "the gap was not simulated"
    );

    // A restarted worker's sink repairs before its first apply.
    let restarted = store.open(1).await.unwrap();
    restarted.apply(&batch_of(c)).await.unwrap();
    assert_read_model(&*restarted, &events).await;
    // Nothing left to correct, and the journal is settled.
    assert_eq!(sink.repair_aggregates().await.unwrap(), 0);
    let again = store.open(1).await.unwrap();
    assert_eq!(
        again.apply(&batch_of(&events)).await.unwrap().rows_written,
        0
    );
    assert_read_model(&*again, &events).await;
}

/// The gap as ClickHouse really shows it: the raw part is committed, then a view's insert
/// fails (a view that throws, pushed before the aggregate views), and the apply returns an
/// error. The worker's retry of the same batch skips the stored rows as duplicates, and the
/// same sink repairs the aggregates first, so each event still counts exactly once.
#[tokio::test]
async fn a_view_that_fails_after_the_raw_insert_is_repaired_on_retry() {
    let config = config("viewfail");
    let store = ClickHouseStore::connect(&config).await.unwrap();
    let sink = store.open_sink(1).await.unwrap();
    let db = sink.database().to_owned();
    let client = clickhouse::Client::default()
        .with_url(config.url.clone())
        .with_validation(false);
    let run = |sql: String| {
        let client = client.clone();
        async move { client.query(&sql).execute().await.unwrap() }
    };

    let events = data_set();
    let (a, b) = events.split_at(12);
    sink.apply(&batch_of(a)).await.unwrap();
    run(format!("CREATE TABLE {db}.fault (x UInt8) ENGINE = Log")).await;
    run(format!(
        "CREATE MATERIALIZED VIEW {db}.mv_a_fault TO {db}.fault \
         AS SELECT throwIf(count() > 0) AS x FROM {db}.orders"
    ))
    .await;
    let err = sink.apply(&batch_of(b)).await.unwrap_err();
    assert!(matches!(err, IngestError::Unavailable(_)), "{err}");
    run(format!("DROP TABLE {db}.mv_a_fault")).await;
    // The raw orders went in although the apply failed, and the aggregates are short.
    let orders = sink.raw_row_count(RawTable::Orders).await.unwrap();
    assert_eq!(orders, rows_in(&events, RawTable::Orders));
    let yearly = sink.aggregate(AggTable::YearlySales).await.unwrap();
    assert_ne!(
        yearly,
        reference(&events).to_record_batch(AggTable::YearlySales),
        "the gap was not simulated"
    );

    let report = sink.apply(&batch_of(b)).await.unwrap();
    assert_eq!(report.rows_written + report.duplicates_skipped, b.len());
    assert!(report.duplicates_skipped > 0, "{report:?}");
    assert_read_model(&sink, &events).await;
    let newest = events
        .iter()
        .map(|e| e.occurred_at.timestamp_millis())
        .max();
    assert_eq!(sink.freshness().await.unwrap().as_of_ms, newest);
}

/// A generation written before the month rollups existed (migrations up to 0003 recorded,
/// events stored) gets them, and the week rollups of 0006, filled from its raw tables when a
/// worker opens it (`assert_read_model` compares every aggregate table).
#[tokio::test]
async fn a_database_from_before_the_month_rollups_gets_them_filled_when_opened() {
    let config = config("rollups");
    let store = ClickHouseStore::connect(&config).await.unwrap();
    let events = data_set();
    let current = store.open_sink(1).await.unwrap();
    current.apply(&batch_of(&events)).await.unwrap();
    let client = clickhouse::Client::default()
        .with_url(config.url.clone())
        .with_validation(false);
    let run = |sql: String| {
        let client = client.clone();
        async move { client.query(&sql).execute().await.unwrap() }
    };

    // Generation 2 as an older worker left it, holding the same events.
    let (from, old) = (
        current.database().to_owned(),
        format!("{}_g2", config.database),
    );
    run(format!("CREATE DATABASE {old}")).await;
    run(format!(
        "CREATE TABLE {old}.schema_migrations (version String, applied_at Int64) \
         ENGINE = MergeTree ORDER BY version"
    ))
    .await;
    let (before, rollups) = MIGRATIONS.split_at(3);
    assert_eq!(rollups[0].0, "0004_month_rollups");
    for (version, text) in before {
        for statement in migration_statements(text, &old) {
            run(statement).await;
        }
        run(format!(
            "INSERT INTO {old}.schema_migrations VALUES ('{version}', 0)"
        ))
        .await;
    }
    for table in RawTable::ALL {
        let name = table.name();
        run(format!(
            "INSERT INTO {old}.{name} SELECT * FROM {from}.{name}"
        ))
        .await;
    }

    let upgraded = store.open_sink(2).await.unwrap();
    assert_eq!(upgraded.database(), old);
    assert_read_model(&upgraded, &events).await;
    // Filling is the aggregate repair: run again, it finds nothing to add.
    assert_eq!(upgraded.repair_aggregates().await.unwrap(), 0);
    let reopened = store.open_sink(2).await.unwrap();
    assert_read_model(&reopened, &events).await;
}

fn at_offset(partition: i32, next_offset: u64) -> Position {
    Position {
        topic: "orders".into(),
        partition,
        next_offset,
    }
}

/// Two writers of one generation (a rebalance, or a paused worker that wakes up): once the
/// second claims a partition, the first one's writes store nothing (not its rows, not its
/// positions) and its apply says it was fenced off; the new owner sees the first one's
/// stored position and applies the rest, each event once.
#[tokio::test]
async fn a_writer_whose_partition_was_claimed_stores_nothing_more() {
    let store = store("fence").await;
    let first = store.open_sink(1).await.unwrap();
    let second = store.open_sink(1).await.unwrap();
    let both = vec![("orders".to_owned(), 0), ("orders".to_owned(), 1)];
    let events = data_set();
    let (a, rest) = events.split_at(15);
    let (b, c) = rest.split_at(15);

    assert!(first.claim(&both).await.unwrap().is_empty());
    let mut batch = batch_of(a);
    batch.positions = vec![at_offset(0, 10), at_offset(1, 5)];
    first.apply(&batch).await.unwrap();

    let stored = second.claim(&both[..1]).await.unwrap();
    assert_eq!(stored, vec![at_offset(0, 10)]);

    let mut late = batch_of(b);
    late.positions = vec![at_offset(0, 20)];
    let err = first.apply(&late).await.unwrap_err();
    assert!(matches!(err, IngestError::Fenced(_)), "{err}");
    assert_read_model(&first, a).await;
    assert_eq!(
        first.stored_positions().await.unwrap(),
        vec![at_offset(0, 10), at_offset(1, 5)]
    );

    let report = second.apply(&late).await.unwrap();
    assert_eq!(report.rows_written, b.len());
    second.apply(&batch_of(c)).await.unwrap();
    assert_read_model(&second, &events).await;
    assert_eq!(
        second.stored_positions().await.unwrap(),
        vec![at_offset(0, 20), at_offset(1, 5)]
    );

    // Claiming again (its next assignment) lets the first writer write again; what it
    // replays is found stored.
    first.claim(&both[1..]).await.unwrap();
    let replay = first.apply(&batch_of(&events)).await.unwrap();
    assert_eq!(replay.rows_written, 0);
    assert_eq!(replay.duplicates_skipped, events.len());
    // Both claims hold now: neither writer is fenced off by the other.
    second.apply(&batch_of(c)).await.unwrap();
    assert_read_model(&second, &events).await;
}

/// An apply left unfinished by a writer that has since been fenced off is repaired by the
/// next writer, which first fences off everyone (its correction inserts are fenced too) and
/// then asks to be claimed again; an unfinished apply of a writer that still holds its
/// partitions is left alone (it may still be running).
#[tokio::test]
async fn an_unfinished_apply_of_a_fenced_off_writer_is_repaired_by_the_next() {
    let config = config("fencerepair");
    let store = ClickHouseStore::connect(&config).await.unwrap();
    let first = store.open_sink(1).await.unwrap();
    let db = first.database().to_owned();
    let client = clickhouse::Client::default()
        .with_url(config.url.clone())
        .with_validation(false);
    let run = |sql: String| {
        let client = client.clone();
        async move { client.query(&sql).execute().await.unwrap() }
    };
    let both = vec![("orders".to_owned(), 0), ("orders".to_owned(), 1)];
    let events = data_set();
    let (a, rest) = events.split_at(15);
    let (b, c) = rest.split_at(15);

    first.claim(&both).await.unwrap();
    first.apply(&batch_of(a)).await.unwrap();
    // The gap: the raw rows of `b` stored, a view's rows missing, no done mark.
    run(format!("DETACH TABLE {db}.mv_orders_yearly_sales")).await;
    first.apply(&batch_of(b)).await.unwrap();
    run(format!("ATTACH TABLE {db}.mv_orders_yearly_sales")).await;
    let token = client
        .query(&format!("SELECT any(token) FROM {db}.owners"))
        .fetch_one::<String>()
        .await
        .unwrap();
    run(format!(
        "INSERT INTO {db}.apply_journal VALUES ('crashed', 0, 0, '{token}')"
    ))
    .await;

    // While the first writer holds its partitions, a second writer of other partitions
    // leaves its apply alone.
    let second = store.open_sink(1).await.unwrap();
    second.claim(&[("orders".to_owned(), 2)]).await.unwrap();
    second.apply(&batch_of(&[])).await.unwrap();
    assert_ne!(
        second.aggregate(AggTable::YearlySales).await.unwrap(),
        reference(&events[..30]).to_record_batch(AggTable::YearlySales),
        "repaired while its writer may still be running"
    );

    // The first writer is fenced off (a rebalance): the next apply repairs, then asks to
    // be claimed again.
    second.claim(&both).await.unwrap();
    let err = second.apply(&batch_of(c)).await.unwrap_err();
    assert!(matches!(err, IngestError::Fenced(_)), "{err}");
    assert_read_model(&second, &events[..30]).await;
    second.claim(&both).await.unwrap();
    second.apply(&batch_of(c)).await.unwrap();
    assert_read_model(&second, &events).await;
}
