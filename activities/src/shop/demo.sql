-- Demo mode's catalogue (BAEDAL_DEMO=1): two shops and their menus, owned by
-- the demo accounts owner1 and owner2. Seeding again changes nothing.
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
