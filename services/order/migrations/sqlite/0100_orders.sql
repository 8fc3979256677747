CREATE TABLE orders (
    id          TEXT PRIMARY KEY NOT NULL,
    customer_id TEXT NOT NULL,
    status      TEXT NOT NULL,
    total       TEXT NOT NULL,
    currency    TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
-- Order ids are UUIDv7, so id order is creation order: newest first is `id DESC`.
CREATE INDEX orders_by_customer ON orders (customer_id, id DESC);

CREATE TABLE order_lines (
    order_id   TEXT    NOT NULL REFERENCES orders (id),
    line_no    INTEGER NOT NULL,
    product_id TEXT    NOT NULL,
    quantity   INTEGER NOT NULL,
    unit_price TEXT    NOT NULL,
    PRIMARY KEY (order_id, line_no)
);
