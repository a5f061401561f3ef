-- When the owner's view first held each order: the shop context rejects an order
-- its owner has held unanswered for SHOP_ACCEPT_TIMEOUT from then (orders on the
-- change feed), and notes that it has told the order (timeout_told). Rows
-- written before this have 0: their orders time their acceptance themselves.
ALTER TABLE order_dtl ADD COLUMN seen_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE order_dtl ADD COLUMN timeout_told BIGINT NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS order_dtl_unanswered ON order_dtl (status, timeout_told, seen_at);
