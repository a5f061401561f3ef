-- The change feed's outbox: one row per recorded version of an order, written in
-- the same transaction as the customer's view. The relay publishes each row to
-- the broker (deduplicated by order id and version) and then deletes it.
CREATE TABLE IF NOT EXISTS order_changes (
    order_id    TEXT NOT NULL,
    version     BIGINT NOT NULL,
    change      TEXT NOT NULL,            -- OrderChange (JSON)
    recorded_at BIGINT NOT NULL,
    PRIMARY KEY (order_id, version)
);
CREATE INDEX IF NOT EXISTS order_changes_by_age ON order_changes (recorded_at);
