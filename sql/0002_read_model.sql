-- The read model around the raw tables: dead letters, the worker's stored positions, the
-- freshness log, and the five pre-aggregated tables (readmodel/src/tables.rs) with the
-- materialized views that feed them from the raw tables.
--
-- Aggregate tables are SummingMergeTree: every INSERT into a raw table makes its views add
-- one partial-sum row per key; background merges add them up eventually, so readers always
-- `SELECT key, sum(..) .. GROUP BY key`. `contributions` counts the raw rows behind a row: it
-- is never 0, so a merge never drops a key whose sums are all 0 (SummingMergeTree removes
-- all-zero rows), and the key stays visible as in the Rust reference (readmodel/src/aggregate.rs).
-- Revenue sums are Decimal(38, 2) (what sum() of a Decimal(18, 2) gives): exact, no overflow.
--
-- A day is the UTC day of occurred_at (ms): toDate(toUInt16(intDiv(occurred_at, 86400000)))
-- takes the day number, independent of the server's time zone (toDate of a UInt16 is a day
-- number on every version; toDate of a larger integer would be read as a Unix timestamp).

CREATE TABLE IF NOT EXISTS {db}.dead_letters
(
    topic String,
    partition Int32,
    offset UInt64,
    key String,
    event_id Nullable(String),
    event_type Nullable(String),
    reason_kind String,
    reason String,
    payload String,
    received_at Int64
)
ENGINE = MergeTree
ORDER BY (topic, partition, offset);

-- One row per (topic, partition) per apply; the stored position is the max next_offset.
CREATE TABLE IF NOT EXISTS {db}.positions
(
    topic String,
    partition Int32,
    next_offset UInt64,
    applied_at Int64
)
ENGINE = MergeTree
ORDER BY (topic, partition);

-- One row per apply that advanced the watermark: as_of_ms is the newest occurred_at stored so
-- far, visible_at_ms the wall-clock time its apply finished its inserts.
CREATE TABLE IF NOT EXISTS {db}.freshness
(
    as_of_ms Int64,
    visible_at_ms Int64
)
ENGINE = MergeTree
ORDER BY as_of_ms;

CREATE TABLE IF NOT EXISTS {db}.daily_sales
(
    day Date,
    orders_placed UInt64,
    orders_paid UInt64,
    items_sold UInt64,
    revenue Decimal(38, 2),
    contributions UInt64
)
ENGINE = SummingMergeTree
ORDER BY day;

CREATE TABLE IF NOT EXISTS {db}.monthly_sales
(
    month Date,
    orders_placed UInt64,
    orders_paid UInt64,
    items_sold UInt64,
    revenue Decimal(38, 2),
    contributions UInt64
)
ENGINE = SummingMergeTree
ORDER BY month;

CREATE TABLE IF NOT EXISTS {db}.yearly_sales
(
    year Int32,
    orders_placed UInt64,
    orders_paid UInt64,
    items_sold UInt64,
    revenue Decimal(38, 2),
    contributions UInt64
)
ENGINE = SummingMergeTree
ORDER BY year;

CREATE TABLE IF NOT EXISTS {db}.product_sales_daily
(
    day Date,
    product_id String,
    units UInt64,
    revenue Decimal(38, 2),
    order_lines UInt64,
    contributions UInt64
)
ENGINE = SummingMergeTree
ORDER BY (day, product_id);

CREATE TABLE IF NOT EXISTS {db}.customer_spend_daily
(
    day Date,
    customer_id String,
    orders_paid UInt64,
    revenue Decimal(38, 2),
    contributions UInt64
)
ENGINE = SummingMergeTree
ORDER BY (day, customer_id);

-- orders: orders_placed.
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.mv_orders_daily_sales
TO {db}.daily_sales
AS SELECT
    toDate(toUInt16(intDiv(occurred_at, 86400000))) AS day,
    count() AS orders_placed,
    toUInt64(0) AS orders_paid,
    toUInt64(0) AS items_sold,
    toDecimal128(0, 2) AS revenue,
    count() AS contributions
FROM {db}.orders
GROUP BY day;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.mv_orders_monthly_sales
TO {db}.monthly_sales
AS SELECT
    toStartOfMonth(toDate(toUInt16(intDiv(occurred_at, 86400000)))) AS month,
    count() AS orders_placed,
    toUInt64(0) AS orders_paid,
    toUInt64(0) AS items_sold,
    toDecimal128(0, 2) AS revenue,
    count() AS contributions
FROM {db}.orders
GROUP BY month;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.mv_orders_yearly_sales
TO {db}.yearly_sales
AS SELECT
    toInt32(toYear(toDate(toUInt16(intDiv(occurred_at, 86400000))))) AS year,
    count() AS orders_placed,
    toUInt64(0) AS orders_paid,
    toUInt64(0) AS items_sold,
    toDecimal128(0, 2) AS revenue,
    count() AS contributions
FROM {db}.orders
GROUP BY year;

-- order_status_changes to 'Paid': orders_paid, per day and per day and customer.
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.mv_order_status_changes_daily_sales
TO {db}.daily_sales
AS SELECT
    toDate(toUInt16(intDiv(occurred_at, 86400000))) AS day,
    toUInt64(0) AS orders_placed,
    count() AS orders_paid,
    toUInt64(0) AS items_sold,
    toDecimal128(0, 2) AS revenue,
    count() AS contributions
FROM {db}.order_status_changes
WHERE to_status = 'Paid'
GROUP BY day;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.mv_order_status_changes_monthly_sales
TO {db}.monthly_sales
AS SELECT
    toStartOfMonth(toDate(toUInt16(intDiv(occurred_at, 86400000)))) AS month,
    toUInt64(0) AS orders_placed,
    count() AS orders_paid,
    toUInt64(0) AS items_sold,
    toDecimal128(0, 2) AS revenue,
    count() AS contributions
FROM {db}.order_status_changes
WHERE to_status = 'Paid'
GROUP BY month;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.mv_order_status_changes_yearly_sales
TO {db}.yearly_sales
AS SELECT
    toInt32(toYear(toDate(toUInt16(intDiv(occurred_at, 86400000))))) AS year,
    toUInt64(0) AS orders_placed,
    count() AS orders_paid,
    toUInt64(0) AS items_sold,
    toDecimal128(0, 2) AS revenue,
    count() AS contributions
FROM {db}.order_status_changes
WHERE to_status = 'Paid'
GROUP BY year;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.mv_order_status_changes_customer_spend_daily
TO {db}.customer_spend_daily
AS SELECT
    toDate(toUInt16(intDiv(occurred_at, 86400000))) AS day,
    customer_id,
    count() AS orders_paid,
    toDecimal128(0, 2) AS revenue,
    count() AS contributions
FROM {db}.order_status_changes
WHERE to_status = 'Paid'
GROUP BY day, customer_id;

-- product_purchases: items sold, units, revenue, order lines; the customer's revenue.
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.mv_product_purchases_daily_sales
TO {db}.daily_sales
AS SELECT
    toDate(toUInt16(intDiv(occurred_at, 86400000))) AS day,
    toUInt64(0) AS orders_placed,
    toUInt64(0) AS orders_paid,
    toUInt64(sum(quantity)) AS items_sold,
    sum(revenue) AS revenue,
    count() AS contributions
FROM {db}.product_purchases
GROUP BY day;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.mv_product_purchases_monthly_sales
TO {db}.monthly_sales
AS SELECT
    toStartOfMonth(toDate(toUInt16(intDiv(occurred_at, 86400000)))) AS month,
    toUInt64(0) AS orders_placed,
    toUInt64(0) AS orders_paid,
    toUInt64(sum(quantity)) AS items_sold,
    sum(revenue) AS revenue,
    count() AS contributions
FROM {db}.product_purchases
GROUP BY month;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.mv_product_purchases_yearly_sales
TO {db}.yearly_sales
AS SELECT
    toInt32(toYear(toDate(toUInt16(intDiv(occurred_at, 86400000))))) AS year,
    toUInt64(0) AS orders_placed,
    toUInt64(0) AS orders_paid,
    toUInt64(sum(quantity)) AS items_sold,
    sum(revenue) AS revenue,
    count() AS contributions
FROM {db}.product_purchases
GROUP BY year;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.mv_product_purchases_product_sales_daily
TO {db}.product_sales_daily
AS SELECT
    toDate(toUInt16(intDiv(occurred_at, 86400000))) AS day,
    product_id,
    toUInt64(sum(quantity)) AS units,
    sum(revenue) AS revenue,
    count() AS order_lines,
    count() AS contributions
FROM {db}.product_purchases
GROUP BY day, product_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.mv_product_purchases_customer_spend_daily
TO {db}.customer_spend_daily
AS SELECT
    toDate(toUInt16(intDiv(occurred_at, 86400000))) AS day,
    customer_id,
    toUInt64(0) AS orders_paid,
    sum(revenue) AS revenue,
    count() AS contributions
FROM {db}.product_purchases
GROUP BY day, customer_id;
