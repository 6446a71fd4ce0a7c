-- The orders database of examples/at-order: one row per order placed (committed).
DROP TABLE IF EXISTS orders;
CREATE TABLE orders (
  id        bigint        PRIMARY KEY,
  customer  integer       NOT NULL,
  item      text          NOT NULL,
  qty       integer       NOT NULL,
  amount    numeric(12,2) NOT NULL,
  xid       text          NOT NULL,  -- the global transaction that placed it
  placed_at timestamptz   NOT NULL DEFAULT now());
DROP TABLE IF EXISTS dtx_undo_log;
