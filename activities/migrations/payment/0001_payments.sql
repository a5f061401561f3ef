-- What this platform asked of the payment gateway, and what came back: the
-- ledger that proves nobody is charged twice.
CREATE TABLE IF NOT EXISTS charges (
    idempotency_key TEXT PRIMARY KEY,
    order_id        TEXT NOT NULL,
    amount          BIGINT NOT NULL,
    outcome         TEXT NOT NULL,        -- APPROVED | DECLINED | UNAVAILABLE
    payment_id      TEXT,
    updated_at      BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS refunds (
    idempotency_key TEXT PRIMARY KEY,
    order_id        TEXT NOT NULL,
    payment_id      TEXT NOT NULL,
    amount          BIGINT NOT NULL,
    refunded_at     BIGINT NOT NULL
);
-- The gateway circuit breaker, one row shared by every API and worker process.
CREATE TABLE IF NOT EXISTS breaker (
    name          TEXT PRIMARY KEY,
    state         TEXT NOT NULL,          -- closed | open | half_open
    failures      BIGINT NOT NULL,
    opened_at     BIGINT NOT NULL,
    probe_started BIGINT NOT NULL
);
INSERT INTO breaker (name, state, failures, opened_at, probe_started)
VALUES ('gateway', 'closed', 0, 0, 0) ON CONFLICT (name) DO NOTHING;
