-- Week rollups of the per-product and per-customer daily tables (readmodel/src/tables.rs:
-- `product_sales_weekly`, `customer_spend_weekly`): the same sums per week (its Monday,
-- `toMonday`) and id. A query over a range reads its whole months from the month rollups,
-- the whole weeks left at its edges from here, and only the days left over from the daily
-- tables (the analytics server chooses this per query), so a 30-day or one-year ranking
-- reads a few rows per id whatever the shop's daily traffic. Fed by their own materialized
-- views, exactly as the daily tables are; a database created before this migration is
-- filled from the raw tables before the migration is recorded, as for 0004.

CREATE TABLE IF NOT EXISTS {db}.product_sales_weekly
(
    week Date,
    product_id String,
    units UInt64,
    revenue Decimal(38, 2),
    order_lines UInt64,
    contributions UInt64
)
ENGINE = SummingMergeTree
ORDER BY (week, product_id);

CREATE TABLE IF NOT EXISTS {db}.customer_spend_weekly
(
    week Date,
    customer_id String,
    orders_paid UInt64,
    revenue Decimal(38, 2),
    contributions UInt64
)
ENGINE = SummingMergeTree
ORDER BY (week, customer_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.mv_product_purchases_product_sales_weekly
TO {db}.product_sales_weekly
AS SELECT
    toMonday(toDate(toUInt16(intDiv(occurred_at, 86400000)))) AS week,
    product_id,
    toUInt64(sum(quantity)) AS units,
    sum(revenue) AS revenue,
    count() AS order_lines,
    count() AS contributions
FROM {db}.product_purchases
GROUP BY week, product_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.mv_order_status_changes_customer_spend_weekly
TO {db}.customer_spend_weekly
AS SELECT
    toMonday(toDate(toUInt16(intDiv(occurred_at, 86400000)))) AS week,
    customer_id,
    count() AS orders_paid,
    toDecimal128(0, 2) AS revenue,
    count() AS contributions
FROM {db}.order_status_changes
WHERE to_status = 'Paid'
GROUP BY week, customer_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.mv_product_purchases_customer_spend_weekly
TO {db}.customer_spend_weekly
AS SELECT
    toMonday(toDate(toUInt16(intDiv(occurred_at, 86400000)))) AS week,
    customer_id,
    toUInt64(0) AS orders_paid,
    sum(revenue) AS revenue,
    count() AS contributions
FROM {db}.product_purchases
GROUP BY week, customer_id;
