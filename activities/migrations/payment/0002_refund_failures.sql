-- Refunds the gateway refused for good (an answer other than 2xx, 408, 429 or
-- 5xx: the payment is unknown, already refunded, the amount is wrong...). Asking
-- again cannot change the answer, so the reconciliation skips these orders instead
-- of refunding them in a loop; an operator settles them by hand.
CREATE TABLE IF NOT EXISTS refund_failures (
    idempotency_key TEXT PRIMARY KEY,
    order_id        TEXT NOT NULL,
    payment_id      TEXT NOT NULL,
    amount          BIGINT NOT NULL,
    http_status     BIGINT NOT NULL,      -- the gateway's answer, e.g. 404 or 422
    message         TEXT NOT NULL,
    failed_at       BIGINT NOT NULL
);
-- The reconciliation looks up refunds and refusals by order.
CREATE INDEX IF NOT EXISTS refund_failures_by_order ON refund_failures (order_id);
CREATE INDEX IF NOT EXISTS refunds_by_order ON refunds (order_id);
-- ... and scans approved charges by age.
CREATE INDEX IF NOT EXISTS charges_by_outcome ON charges (outcome, updated_at);
