-- Month rollups of the per-product and per-customer daily tables (readmodel/src/tables.rs:
-- `product_sales_monthly`, `customer_spend_monthly`): the same sums per month (its first
-- day) and id, so that a query over a long range reads whole months from here and only the
-- partial months at its edges from the daily tables (the analytics server chooses this per
-- query). Fed by their own materialized views, exactly as the daily tables are.
--
-- A database created before this migration already holds events the new views never saw:
-- the worker fills the rollups from the raw tables (the aggregate repair, which inserts
-- only differences, so a repeat after a crash adds nothing) before it records the migration.

CREATE TABLE IF NOT EXISTS {db}.product_sales_monthly
(
    month Date,
    product_id String,
    units UInt64,
    revenue Decimal(38, 2),
    order_lines UInt64,
    contributions UInt64
)
ENGINE = SummingMergeTree
ORDER BY (month, product_id);

CREATE TABLE IF NOT EXISTS {db}.customer_spend_monthly
(
    month Date,
    customer_id String,
    orders_paid UInt64,
    revenue Decimal(38, 2),
    contributions UInt64
)
ENGINE = SummingMergeTree
ORDER BY (month, customer_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.mv_product_purchases_product_sales_monthly
TO {db}.product_sales_monthly
AS SELECT
    toStartOfMonth(toDate(toUInt16(intDiv(occurred_at, 86400000)))) AS month,
    product_id,
    toUInt64(sum(quantity)) AS units,
    sum(revenue) AS revenue,
    count() AS order_lines,
    count() AS contributions
FROM {db}.product_purchases
GROUP BY month, product_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.mv_order_status_changes_customer_spend_monthly
TO {db}.customer_spend_monthly
AS SELECT
    toStartOfMonth(toDate(toUInt16(intDiv(occurred_at, 86400000)))) AS month,
    customer_id,
    count() AS orders_paid,
    toDecimal128(0, 2) AS revenue,
    count() AS contributions
FROM {db}.order_status_changes
WHERE to_status = 'Paid'
GROUP BY month, customer_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.mv_product_purchases_customer_spend_monthly
TO {db}.customer_spend_monthly
AS SELECT
    toStartOfMonth(toDate(toUInt16(intDiv(occurred_at, 86400000)))) AS month,
    customer_id,
    toUInt64(0) AS orders_paid,
    sum(revenue) AS revenue,
    count() AS contributions
FROM {db}.product_purchases
GROUP BY month, customer_id;
