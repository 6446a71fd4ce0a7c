-- The accounts database of examples/at-order: customers' money and the shop's (id 0).
-- deposited is the money each one put in and never changes: sum(balance) = sum(deposited).
DROP TABLE IF EXISTS accounts;
CREATE TABLE accounts (
  id        integer       PRIMARY KEY,
  owner     text          NOT NULL,
  deposited numeric(12,2) NOT NULL,
  balance   numeric(12,2) NOT NULL CHECK (balance >= 0));  -- an order cannot overdraw
INSERT INTO accounts (id, owner, deposited, balance) VALUES
  (0, 'shop', 0, 0),
  (1, 'ann', 100.00, 100.00),
  (2, 'bob', 60.00, 60.00),
  (3, 'cy', 30.00, 30.00);
DROP TABLE IF EXISTS dtx_undo_log;
