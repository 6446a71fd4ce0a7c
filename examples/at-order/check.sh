#!/usr/bin/env bash
# The CHECK of examples/at-order: once the coordinator has nothing unfinished and the undo logs
# are empty, the three databases must agree with each other, straight from PostgreSQL:
#   stock:    for every item, qty + sold = received, and sold = the quantity of its orders;
#   accounts: sum(balance) = sum(deposited); each customer's balance = deposited - what their
#             orders cost; the shop's balance = what all orders cost; every amount = qty x price;
#   orders:   the ids are exactly those the client saw committed (with --placed FILE);
#   no undo-log rows are left in any of the three databases.
# Prints "CHECK OK ..." and exits 0, or "CHECK FAILED: ..." and exits 1.
#
#   examples/at-order/check.sh [--placed FILE] [--admin host:port] [--wait SECONDS]
#
# --admin is the coordinator's HTTP admin (to wait until it lists no transaction); --wait (30)
# bounds the waiting. Environment: PGHOST (127.0.0.1), PGPORT (5432), PGUSER (postgres),
# ORDERS_DB, STOCK_DB, ACCOUNTS_DB (orders, stock, accounts): PostgreSQL itself, not the proxy.
set -euo pipefail

export PGHOST=${PGHOST:-127.0.0.1} PGPORT=${PGPORT:-5432} PGUSER=${PGUSER:-postgres}
orders_db=${ORDERS_DB:-orders}
stock_db=${STOCK_DB:-stock}
accounts_db=${ACCOUNTS_DB:-accounts}
placed_file="" admin="" wait_s=30
while [ $# -gt 0 ]; do
  case "$1" in
    --placed) placed_file=$2; shift 2 ;;
    --admin) admin=$2; shift 2 ;;
    --wait) wait_s=$2; shift 2 ;;
    *) echo "usage: $0 [--placed FILE] [--admin host:port] [--wait SECONDS]" >&2; exit 2 ;;
  esac
done

sql() { psql -X -A -t -q -v ON_ERROR_STOP=1 -d "$1" -c "$2"; }
fail() { echo "CHECK FAILED: $*"; exit 1; }

undo_rows() {
  local n total=0
  for db in "$orders_db" "$stock_db" "$accounts_db"; do
    n=$(sql "$db" "SELECT count(*) FROM dtx_undo_log WHERE log_status = 0")
    total=$((total + n))
  done
  echo "$total"
}
unfinished() {
  [ -n "$admin" ] || { echo 0; return; }
  curl -sf "http://$admin/api/v1/transactions" |
    python3 -c 'import json, sys; print(len(json.load(sys.stdin)["transactions"]))'
}

# Phase 2 runs asynchronously (commit cleanup is batched): wait for it.
deadline=$((SECONDS + wait_s))
while :; do
  open=$(unfinished) left=$(undo_rows)
  [ "$open" -eq 0 ] && [ "$left" -eq 0 ] && break
  [ $SECONDS -lt $deadline ] || fail "after ${wait_s}s the coordinator still lists $open transaction(s) and $left undo row(s) are left"
  sleep 0.2
done

# The orders, as VALUES lists for the other two databases.
sold=$(sql "$orders_db" "SELECT coalesce(string_agg(format('(%L, %s)', item, n), ', '), '(NULL::text, 0)')
                         FROM (SELECT item, sum(qty) AS n FROM orders GROUP BY item) s")
spent=$(sql "$orders_db" "SELECT coalesce(string_agg(format('(%s, %s)', customer, total), ', '), '(NULL::integer, 0)')
                          FROM (SELECT customer, sum(amount) AS total FROM orders GROUP BY customer) s")
lines=$(sql "$orders_db" "SELECT coalesce(string_agg(format('(%s, %L, %s, %s)', id, item, qty, amount), ', '), '(NULL::bigint, NULL::text, 0, 0)')
                          FROM orders")
count=$(sql "$orders_db" "SELECT count(*) FROM orders")
revenue=$(sql "$orders_db" "SELECT coalesce(sum(amount), 0) FROM orders")

bad=$(sql "$stock_db" "SELECT coalesce(string_agg(format('%s: qty %s + sold %s, received %s, ordered %s', s.item, s.qty,
                                                         s.sold, s.received, coalesce(o.n, 0)), '; '), '')
                       FROM stock s LEFT JOIN (VALUES $sold) AS o(item, n) ON o.item = s.item
                       WHERE s.qty + s.sold <> s.received OR s.sold <> coalesce(o.n, 0)")
[ -z "$bad" ] || fail "stock: $bad"
bad=$(sql "$stock_db" "SELECT coalesce(string_agg(format('order %s: %s x %s for %s', o.id, o.qty, o.item, o.amount), '; '), '')
                       FROM (VALUES $lines) AS o(id, item, qty, amount) LEFT JOIN stock s ON s.item = o.item
                       WHERE o.id IS NOT NULL AND (s.item IS NULL OR o.amount <> o.qty * s.price)")
[ -z "$bad" ] || fail "orders priced wrongly: $bad"

bad=$(sql "$accounts_db" "SELECT coalesce(string_agg(format('%s (%s): balance %s, deposited %s, ordered %s', a.owner, a.id,
                                                            a.balance, a.deposited, coalesce(o.total, 0)), '; '), '')
                          FROM accounts a LEFT JOIN (VALUES $spent) AS o(customer, total) ON o.customer = a.id
                          WHERE a.id <> 0 AND a.balance <> a.deposited - coalesce(o.total, 0)")
[ -z "$bad" ] || fail "accounts: $bad"
shop=$(sql "$accounts_db" "SELECT balance FROM accounts WHERE id = 0")
[ "$(sql "$accounts_db" "SELECT $shop = $revenue")" = t ] || fail "the shop holds $shop, its orders cost $revenue"
money=$(sql "$accounts_db" "SELECT sum(balance) FROM accounts")
[ "$(sql "$accounts_db" "SELECT sum(balance) = sum(deposited) FROM accounts")" = t ] ||
  fail "money: balances sum to $money, deposits to $(sql "$accounts_db" "SELECT sum(deposited) FROM accounts")"

if [ -n "$placed_file" ]; then
  want=$(sort -n "$placed_file" | paste -sd, -)
  have=$(sql "$orders_db" "SELECT coalesce(string_agg(id::text, ',' ORDER BY id), '') FROM orders")
  [ "$want" = "$have" ] || fail "the orders table holds [$have], the client saw [$want] committed"
fi

echo "CHECK OK orders=$count revenue=$revenue money=$money"
