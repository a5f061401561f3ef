-- Riders, live offers and the rider's read model, DeliveryInfo.
CREATE TABLE IF NOT EXISTS riders (
    id            TEXT PRIMARY KEY,
    lat           DOUBLE PRECISION NOT NULL,
    lon           DOUBLE PRECISION NOT NULL,
    available     BIGINT NOT NULL,
    -- The delivery the rider carries. Assignment sets it only where it is NULL,
    -- in one statement, so a rider never holds two.
    current_order TEXT,
    updated_at    BIGINT NOT NULL
);
-- At most one live offer per order and per rider.
CREATE TABLE IF NOT EXISTS offers (
    order_id   TEXT PRIMARY KEY,
    rider_id   TEXT NOT NULL UNIQUE,
    shop       TEXT NOT NULL,             -- {id,name,lat,lon} (JSON)
    distance_m BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS delivery_info (
    order_id   TEXT PRIMARY KEY,
    rider_id   TEXT NOT NULL,
    status     TEXT NOT NULL,
    doc        TEXT NOT NULL,             -- DeliveryInfo as served (JSON)
    version    BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS delivery_info_by_rider ON delivery_info (rider_id, updated_at);
