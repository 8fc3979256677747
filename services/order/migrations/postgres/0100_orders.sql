-- The same tables as migrations/sqlite; text compares bytewise (COLLATE "C") as SQLite's does.
CREATE TABLE orders (
    id          TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    customer_id TEXT COLLATE "C" NOT NULL,
    status      TEXT COLLATE "C" NOT NULL,
    total       TEXT COLLATE "C" NOT NULL,
    currency    TEXT COLLATE "C" NOT NULL,
    created_at  TEXT COLLATE "C" NOT NULL,
    updated_at  TEXT COLLATE "C" NOT NULL
);
-- Order ids are UUIDv7, so id order is creation order: newest first is `id DESC`.
CREATE INDEX orders_by_customer ON orders (customer_id, id DESC);

CREATE TABLE order_lines (
    order_id   TEXT COLLATE "C" NOT NULL REFERENCES orders (id),
    line_no    BIGINT NOT NULL,
    product_id TEXT COLLATE "C" NOT NULL,
    quantity   BIGINT NOT NULL,
    unit_price TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (order_id, line_no)
);
