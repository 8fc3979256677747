-- Money is stored as the decimal's text ("19.99"), never as a float.
CREATE TABLE products (
    id          TEXT PRIMARY KEY NOT NULL,
    sku         TEXT NOT NULL UNIQUE,
    name        TEXT NOT NULL,
    description TEXT NOT NULL,
    category    TEXT NOT NULL,
    image_url   TEXT,
    price       TEXT NOT NULL,
    currency    TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
