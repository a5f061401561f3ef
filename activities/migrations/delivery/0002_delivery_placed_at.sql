-- A rider's deliveries are listed a page at a time, newest order first, by a key
-- that never changes (updated_at does). Rows written before this have 0: they
-- list last, by order id.
ALTER TABLE delivery_info ADD COLUMN placed_at BIGINT NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS delivery_info_by_rider_placed ON delivery_info (rider_id, placed_at);
