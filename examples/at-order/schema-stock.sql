-- The stock database of examples/at-order: what the shop has on its shelves.
-- received is what came into the shop and never changes; qty + sold = received always.
DROP TABLE IF EXISTS stock;
CREATE TABLE stock (
  item     text          PRIMARY KEY,
  price    numeric(10,2) NOT NULL,
  received integer       NOT NULL,
  qty      integer       NOT NULL CHECK (qty >= 0),  -- on the shelf: an order cannot take more
  sold     integer       NOT NULL DEFAULT 0);
INSERT INTO stock (item, price, received, qty) VALUES
  ('widget', 5.00, 20, 20),
  ('gadget', 25.00, 3, 3),
  ('gizmo', 40.00, 5, 5);
DROP TABLE IF EXISTS dtx_undo_log;  -- a fresh run: dtx-sql-proxy creates it when it starts
