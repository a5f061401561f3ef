-- The spatial index of the nearest-rider search (delivery/nearest.rs): each
-- rider's H3 cell (resolution 8; 0 until the delivery context fills it in for
-- rows from before), and when the rider last reported a position (riders
-- silent longer than RIDER_STALE_AFTER get no offers).
ALTER TABLE riders ADD COLUMN cell BIGINT NOT NULL DEFAULT 0;
ALTER TABLE riders ADD COLUMN located_at BIGINT NOT NULL DEFAULT 0;
UPDATE riders SET located_at = updated_at;
CREATE INDEX IF NOT EXISTS riders_free_by_cell ON riders (cell)
    WHERE available = 1 AND current_order IS NULL;
