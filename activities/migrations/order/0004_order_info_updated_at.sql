-- When each customer's view last changed: the gateway's one poller per process
-- asks "what changed since" here and wakes only the event streams of those
-- orders (api/src/live.rs), instead of every stream reading its order itself.
ALTER TABLE order_info ADD COLUMN updated_at BIGINT NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS order_info_by_update ON order_info (updated_at);
