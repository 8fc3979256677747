-- The raw event tables: one row per event, columns exactly those of the contract's Arrow
-- schemas (shoplens_contract::tables::RawTable). Times are Int64 milliseconds since the Unix
-- epoch (UTC), money Decimal(18, 2). ORDER BY event_id: UUIDv7 ids sort by time, and the
-- ingest worker's "which of these ids are already stored" lookup reads a narrow key range.
-- No partition key, so one INSERT of one batch is one part: atomic.

CREATE TABLE IF NOT EXISTS {db}.customer_events
(
    event_id String,
    occurred_at Int64,
    event_type String,
    customer_id String,
    name String,
    email String,
    country String
)
ENGINE = MergeTree
ORDER BY event_id;

CREATE TABLE IF NOT EXISTS {db}.product_events
(
    event_id String,
    occurred_at Int64,
    event_type String,
    product_id String,
    sku Nullable(String),
    name Nullable(String),
    category Nullable(String),
    price Decimal(18, 2),
    currency String
)
ENGINE = MergeTree
ORDER BY event_id;

CREATE TABLE IF NOT EXISTS {db}.orders
(
    event_id String,
    occurred_at Int64,
    order_id String,
    customer_id String,
    line_count Int32,
    item_count Int32,
    total Decimal(18, 2),
    currency String
)
ENGINE = MergeTree
ORDER BY event_id;

CREATE TABLE IF NOT EXISTS {db}.order_status_changes
(
    event_id String,
    occurred_at Int64,
    order_id String,
    customer_id String,
    from_status Nullable(String),
    to_status String
)
ENGINE = MergeTree
ORDER BY event_id;

CREATE TABLE IF NOT EXISTS {db}.product_purchases
(
    event_id String,
    occurred_at Int64,
    order_id String,
    line_no Int32,
    customer_id String,
    product_id String,
    quantity Int32,
    unit_price Decimal(18, 2),
    revenue Decimal(18, 2),
    currency String
)
ENGINE = MergeTree
ORDER BY event_id;

CREATE TABLE IF NOT EXISTS {db}.payment_events
(
    event_id String,
    occurred_at Int64,
    event_type String,
    payment_id String,
    order_id String,
    status String,
    amount Nullable(Decimal(18, 2)),
    currency String,
    method Nullable(String),
    reason Nullable(String)
)
ENGINE = MergeTree
ORDER BY event_id;

CREATE TABLE IF NOT EXISTS {db}.shipment_events
(
    event_id String,
    occurred_at Int64,
    event_type String,
    shipment_id String,
    order_id String,
    carrier Nullable(String),
    location String,
    eta Nullable(Int64)
)
ENGINE = MergeTree
ORDER BY event_id;
