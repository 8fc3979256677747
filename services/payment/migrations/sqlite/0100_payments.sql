-- Money is stored as the decimal's text ("19.99"), never as a float.
CREATE TABLE payments (
    id             TEXT PRIMARY KEY NOT NULL,
    order_id       TEXT NOT NULL,
    status         TEXT NOT NULL CHECK (status IN ('Pending', 'Success', 'Failed', 'Refunded')),
    method         TEXT NOT NULL,
    amount         TEXT NOT NULL,
    currency       TEXT NOT NULL,
    failure_reason TEXT,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL
);
CREATE INDEX payments_by_order ON payments (order_id, created_at);
