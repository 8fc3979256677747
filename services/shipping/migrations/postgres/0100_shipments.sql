-- The same table as migrations/sqlite; text compares bytewise (COLLATE "C") as SQLite's does.
CREATE TABLE shipments (
    id         TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    order_id   TEXT COLLATE "C" NOT NULL,
    carrier    TEXT COLLATE "C" NOT NULL,
    status     TEXT COLLATE "C" NOT NULL CHECK (status IN ('Created', 'InTransit', 'Delivered')),
    location   TEXT COLLATE "C" NOT NULL,
    eta        TEXT COLLATE "C" NOT NULL,
    created_at TEXT COLLATE "C" NOT NULL,
    updated_at TEXT COLLATE "C" NOT NULL
);
CREATE INDEX shipments_by_order ON shipments (order_id, created_at);
