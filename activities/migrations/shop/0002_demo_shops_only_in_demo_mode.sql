-- The two demo shops are seeded by demo mode (BAEDAL_DEMO=1, src/shop/demo.sql),
-- no longer by the schema: take back those that 0001 inserted, unless orders
-- were already placed with them (a store that ran demo mode before keeps them).
DELETE FROM menu_items
WHERE shop_id IN ('shop1', 'shop2')
  AND shop_id NOT IN (SELECT shop_id FROM order_dtl);
DELETE FROM shops
WHERE id IN ('shop1', 'shop2')
  AND id NOT IN (SELECT shop_id FROM order_dtl);
