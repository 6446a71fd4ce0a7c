#!/usr/bin/env bash
# The client of examples/at-order, in plain SQL through psql and dtx-sql-proxy: each order is one
# global transaction over three databases.
#
#   on the orders connection (kept open):  SELECT dtx.begin('place-order')        -> xid
#   on a stock connection:                 SET dtx.xid = xid; UPDATE stock ...     (a local transaction)
#   on an accounts connection:             SET dtx.xid = xid; BEGIN; UPDATE accounts x2; COMMIT
#   on the orders connection:              INSERT INTO orders ...                  (a local transaction)
#   on the orders connection:              SELECT dtx.commit()   or   SELECT dtx.rollback()
#
# A step the database refuses (CHECK qty >= 0: out of stock; CHECK balance >= 0: not enough money)
# ends the order with dtx.rollback(), which undoes the steps that had already committed locally.
# Some orders are cancelled by the client after every step succeeded, and are rolled back too.
#
#   examples/at-order/place_orders.sh [--random N] [--seed S] [--placed FILE]
#
# Without --random it places the eight scripted orders below and exits 1 if any ends otherwise
# than the script expects. --random N adds N random orders (their outcome is whatever the data
# says). --placed FILE writes the ids of the orders that committed, one a line.
# Environment: PROXY_HOST (127.0.0.1), PROXY_PORT (6433), PGUSER (postgres), ORDERS_DB (orders),
# STOCK_DB (stock), ACCOUNTS_DB (accounts).
set -euo pipefail

host=${PROXY_HOST:-127.0.0.1}
port=${PROXY_PORT:-6433}
export PGUSER=${PGUSER:-postgres}
orders_db=${ORDERS_DB:-orders}
stock_db=${STOCK_DB:-stock}
accounts_db=${ACCOUNTS_DB:-accounts}
random_orders=0
seed=1
placed_file=""
while [ $# -gt 0 ]; do
  case "$1" in
    --random) random_orders=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --placed) placed_file=$2; shift 2 ;;
    *) echo "usage: $0 [--random N] [--seed S] [--placed FILE]" >&2; exit 2 ;;
  esac
done
[ -z "$placed_file" ] || : >"$placed_file"

psql_args=(-X -A -t -q -h "$host" -p "$port")

# The orders connection stays open for the whole run: each global transaction begins and ends on it.
coproc ORDERS { psql "${psql_args[@]}" -d "$orders_db" 2>&1; }
# Runs SQL on the orders connection; prints its output (rows, or the error).
on_orders() {
  printf '%s\n\\echo __done__\n' "$1" >&"${ORDERS[1]}"
  local line out=""
  while IFS= read -r line <&"${ORDERS[0]}"; do
    [ "$line" = __done__ ] && break
    out+="$line"$'\n'
  done
  printf '%s' "${out%$'\n'}"
}

# Runs a psql script on a new connection to database $1 (variables after it: -v name=value),
# stopping at the first error; prints its output, returns psql's exit status.
on_new_connection() {
  local db=$1
  shift
  psql "${psql_args[@]}" -v ON_ERROR_STOP=1 -d "$db" "$@" 2>&1
}

placed=0
rolled_back=0
unexpected=0

# place ID CUSTOMER ITEM QTY INTENT EXPECT
#   INTENT: buy | cancel (the client rolls back after every step succeeded)
#   EXPECT: placed | out-of-stock | no-money | cancelled | any
place() {
  local id=$1 customer=$2 item=$3 qty=$4 intent=$5 expect=$6
  local xid out amount="" outcome="" status

  xid=$(on_orders "SELECT dtx.begin('place-order', 30000);")
  if [[ ! "$xid" =~ ^[A-Za-z0-9_.:/@-]+$ ]]; then
    echo "ORDER $id: dtx.begin() failed: $xid" >&2
    exit 1
  fi

  # 1. Take the goods off the shelf (one statement: a local transaction of its own).
  if out=$(on_new_connection "$stock_db" -v xid="$xid" -v item="$item" -v qty="$qty" <<'SQL'
SET dtx.xid = :'xid';
UPDATE stock SET qty = qty - :qty, sold = sold + :qty WHERE item = :'item' RETURNING price * :qty;
SQL
  ); then
    amount=$out
    [ -n "$amount" ] || outcome="no-such-item"
  elif [[ "$out" == *stock_qty_check* ]]; then
    outcome="out-of-stock"
  else
    outcome="stock-error: $out"
  fi

  # 2. Move the money from the customer to the shop (two statements in one local transaction).
  if [ -z "$outcome" ]; then
    if ! out=$(on_new_connection "$accounts_db" -v xid="$xid" -v amount="$amount" -v customer="$customer" <<'SQL'
SET dtx.xid = :'xid';
BEGIN;
UPDATE accounts SET balance = balance - :amount WHERE id = :customer;
UPDATE accounts SET balance = balance + :amount WHERE id = 0;
COMMIT;
SQL
    ); then
      if [[ "$out" == *accounts_balance_check* ]]; then outcome="no-money"; else outcome="accounts-error: $out"; fi
    fi
  fi

  # 3. Record the order, on the connection that began the global transaction.
  if [ -z "$outcome" ]; then
    out=$(on_orders "INSERT INTO orders (id, customer, item, qty, amount, xid) VALUES ($id, $customer, '$item', $qty, $amount, '$xid');")
    [ -z "$out" ] || outcome="orders-error: $out"
  fi

  if [ -z "$outcome" ] && [ "$intent" = buy ]; then
    status=$(on_orders "SELECT dtx.commit();")
    if [ "$status" = Committed ]; then
      outcome="placed"
      placed=$((placed + 1))
      [ -z "$placed_file" ] || echo "$id" >>"$placed_file"
    else
      outcome="commit-failed: $status"
    fi
  else
    [ -n "$outcome" ] || outcome="cancelled"
    status=$(on_orders "SELECT dtx.rollback();")
    rolled_back=$((rolled_back + 1))
    if [ "$status" != Rollbacked ]; then outcome="$outcome, rollback-failed: $status"; fi
  fi

  printf 'ORDER %-3s customer %s %2s x %-6s %8s  %-13s %s -> %s\n' "$id" "$customer" "$qty" "$item" \
    "${amount:--}" "$outcome" "$xid" "$status"
  if [ "$expect" != any ] && [ "$outcome" != "$expect" ]; then
    echo "UNEXPECTED: order $id should have ended '$expect'" >&2
    unexpected=$((unexpected + 1))
  elif [ "$expect" = any ] && [[ "$outcome" == *error* || "$outcome" == *failed* ]]; then
    unexpected=$((unexpected + 1))
  fi
}

#     id customer item   qty intent expect
place 1  1        widget 2   buy    placed        # ann pays 10.00
place 2  2        gadget 1   buy    placed        # bob pays 25.00
place 3  3        gadget 5   buy    out-of-stock  # 2 gadgets left
place 4  3        gizmo  1   buy    no-money      # cy has 30.00; the stock step is undone
place 5  1        widget 3   buy    placed        # ann pays 15.00
place 6  2        widget 1   cancel cancelled     # every step done, then rolled back
place 7  3        gadget 2   buy    no-money      # 50.00 > 30.00
place 8  3        widget 6   buy    placed        # cy pays 30.00, down to 0.00

RANDOM=$seed
items=(widget gadget gizmo)
for ((n = 0; n < random_orders; n++)); do
  intent=buy
  [ $((RANDOM % 10)) -ne 0 ] || intent=cancel
  place $((100 + n)) $((1 + RANDOM % 3)) "${items[RANDOM % 3]}" $((1 + RANDOM % 3)) "$intent" any
done

echo "DONE placed=$placed rolled_back=$rolled_back unexpected=$unexpected"
[ "$unexpected" -eq 0 ]
