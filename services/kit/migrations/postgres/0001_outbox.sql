-- The transactional outbox: every state change writes its events here in the same
-- transaction; the relay publishes rows in `seq` order and stamps `published_at` only after
-- the bus acknowledged them. The same tables as migrations/sqlite; text compares bytewise
-- (COLLATE "C") as SQLite's does.
--
-- `seq` is not commit order here (several connections write at once), but per aggregate it
-- is: a change reads its record FOR UPDATE before it writes its events, so the next change of
-- that record takes its `seq` after this one committed.
CREATE TABLE IF NOT EXISTS outbox (
    seq          BIGSERIAL PRIMARY KEY,
    event_id     TEXT COLLATE "C" NOT NULL UNIQUE,
    topic        TEXT COLLATE "C" NOT NULL,
    aggregate_id TEXT COLLATE "C" NOT NULL,
    event_type   TEXT COLLATE "C" NOT NULL,
    payload      BYTEA NOT NULL,
    created_at   TEXT COLLATE "C" NOT NULL,
    published_at TEXT COLLATE "C"
);
CREATE INDEX IF NOT EXISTS outbox_unpublished ON outbox (seq) WHERE published_at IS NULL;

-- Responses to writes made with an Idempotency-Key, replayed when the client retries.
CREATE TABLE IF NOT EXISTS idempotency_keys (
    scope        TEXT COLLATE "C" NOT NULL,
    key          TEXT COLLATE "C" NOT NULL,
    request_hash TEXT COLLATE "C" NOT NULL,
    status       BIGINT NOT NULL,
    body         BYTEA  NOT NULL,
    created_at   TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (scope, key)
);
