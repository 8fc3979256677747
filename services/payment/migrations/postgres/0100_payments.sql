-- The same table as migrations/sqlite; text compares bytewise (COLLATE "C") as SQLite's does.
-- Money is stored as the decimal's text ("19.99"), never as a float.
CREATE TABLE payments (
    id             TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    order_id       TEXT COLLATE "C" NOT NULL,
    status         TEXT COLLATE "C" NOT NULL CHECK (status IN ('Pending', 'Success', 'Failed', 'Refunded')),
    method         TEXT COLLATE "C" NOT NULL,
    amount         TEXT COLLATE "C" NOT NULL,
    currency       TEXT COLLATE "C" NOT NULL,
    failure_reason TEXT COLLATE "C",
    created_at     TEXT COLLATE "C" NOT NULL,
    updated_at     TEXT COLLATE "C" NOT NULL
);
CREATE INDEX payments_by_order ON payments (order_id, created_at);
