CREATE TABLE shipments (
    id         TEXT PRIMARY KEY NOT NULL,
    order_id   TEXT NOT NULL,
    carrier    TEXT NOT NULL,
    status     TEXT NOT NULL CHECK (status IN ('Created', 'InTransit', 'Delivered')),
    location   TEXT NOT NULL,
    eta        TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX shipments_by_order ON shipments (order_id, created_at);
