-- The delivery context times offers for orders on the change feed: once an offer
-- is past expires_at it tells the order (offer_lapsed) and notes it here.
ALTER TABLE offers ADD COLUMN lapse_told BIGINT NOT NULL DEFAULT 0;
