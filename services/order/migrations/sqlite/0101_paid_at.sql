-- When the order became Paid: the day its sales count on (the same instant as its
-- `OrderStatusChanged(Paid)` and `ProductPurchased` events). NULL until then; orders paid
-- before this column existed keep NULL.
ALTER TABLE orders ADD COLUMN paid_at TEXT;
-- The all-orders listing pages by id (UUIDv7, creation order); the primary key serves it.
