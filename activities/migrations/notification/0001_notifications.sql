-- The feed every role reads, and the outbox the webhook relay drains. Both are
-- keyed by orderId:status:recipient, so a repeated announcement writes nothing.
CREATE TABLE IF NOT EXISTS notifications (
    dedupe_key TEXT PRIMARY KEY,
    recipient  TEXT NOT NULL,
    order_id   TEXT NOT NULL,
    status     TEXT NOT NULL,
    text       TEXT NOT NULL,
    at         BIGINT NOT NULL,
    seq        BIGINT NOT NULL            -- orders the feed within one order
);
CREATE INDEX IF NOT EXISTS notifications_by_recipient ON notifications (recipient, at);
CREATE TABLE IF NOT EXISTS outbox (
    dedupe_key      TEXT PRIMARY KEY,
    payload         TEXT NOT NULL,        -- the webhook body (JSON)
    attempts        BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    delivered_at    BIGINT
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (delivered_at, next_attempt_at);
