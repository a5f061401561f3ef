-- The catalogue (shops and menus) and the owner's read model, OrderDtl.
CREATE TABLE IF NOT EXISTS shops (
    id       TEXT PRIMARY KEY,
    name     TEXT NOT NULL,
    lat      DOUBLE PRECISION NOT NULL,
    lon      DOUBLE PRECISION NOT NULL,
    owner_id TEXT NOT NULL,
    position BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS menu_items (
    id       TEXT PRIMARY KEY,
    shop_id  TEXT NOT NULL,
    name     TEXT NOT NULL,
    price    BIGINT NOT NULL,             -- integer KRW
    position BIGINT NOT NULL
);
-- One row per order; `version` only grows, so a late or repeated write of an
-- older state never overwrites a newer one.
CREATE TABLE IF NOT EXISTS order_dtl (
    order_id  TEXT PRIMARY KEY,
    shop_id   TEXT NOT NULL,
    status    TEXT NOT NULL,
    doc       TEXT NOT NULL,              -- OrderDtl as served (JSON)
    version   BIGINT NOT NULL,
    placed_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS order_dtl_by_shop ON order_dtl (shop_id, placed_at);

INSERT INTO shops (id, name, lat, lon, owner_id, position) VALUES
    ('shop1', '강남 치킨 Gangnam Chicken', 37.4979, 127.0276, 'owner1', 1),
    ('shop2', '홍대 떡볶이 Hongdae Tteokbokki', 37.5563, 126.9220, 'owner2', 2)
ON CONFLICT (id) DO NOTHING;
INSERT INTO menu_items (id, shop_id, name, price, position) VALUES
    ('shop1-fried', 'shop1', '후라이드 치킨 Fried chicken', 18000, 1),
    ('shop1-yangnyeom', 'shop1', '양념 치킨 Yangnyeom chicken', 19000, 2),
    ('shop1-cola', 'shop1', '콜라 Cola', 2000, 3),
    ('shop2-tteokbokki', 'shop2', '떡볶이 Tteokbokki', 5000, 1),
    ('shop2-sundae', 'shop2', '순대 Sundae', 4500, 2),
    ('shop2-twigim', 'shop2', '튀김 Twigim', 3500, 3)
ON CONFLICT (id) DO NOTHING;
