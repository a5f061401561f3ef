-- The customer's read model, OrderInfo, and the idempotency keys of placements.
CREATE TABLE IF NOT EXISTS order_info (
    order_id    TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL,
    shop_id     TEXT NOT NULL,
    status      TEXT NOT NULL,
    doc         TEXT NOT NULL,            -- OrderInfo as served (JSON)
    version     BIGINT NOT NULL,          -- only grows; older writes are ignored
    placed_at   BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS order_info_by_customer ON order_info (customer_id, placed_at);

-- Same key and same body: the same order. The body hash tells a retry from a
-- different order reusing a key (422).
CREATE TABLE IF NOT EXISTS placements (
    customer_id     TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    body_hash       TEXT NOT NULL,
    order_id        TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    PRIMARY KEY (customer_id, idempotency_key)
);
