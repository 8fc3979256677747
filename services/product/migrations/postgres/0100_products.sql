-- The same table as migrations/sqlite; text compares bytewise (COLLATE "C") as SQLite's does.
-- Money is stored as the decimal's text ("19.99"), never as a float.
CREATE TABLE products (
    id          TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    sku         TEXT COLLATE "C" NOT NULL UNIQUE,
    name        TEXT COLLATE "C" NOT NULL,
    description TEXT COLLATE "C" NOT NULL,
    category    TEXT COLLATE "C" NOT NULL,
    image_url   TEXT COLLATE "C",
    price       TEXT COLLATE "C" NOT NULL,
    currency    TEXT COLLATE "C" NOT NULL,
    created_at  TEXT COLLATE "C" NOT NULL,
    updated_at  TEXT COLLATE "C" NOT NULL
);
