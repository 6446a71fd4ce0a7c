#!/usr/bin/env bash
# examples/at-order from start to end, on loopback with ephemeral ports: creates the three
# databases (with a unique prefix) on a PostgreSQL server, starts dtx-coordinator and
# dtx-sql-proxy in AT mode, places the scripted orders (and RANDOM_ORDERS random ones), runs the
# CHECK, then stops everything and drops the databases.
#
#   examples/at-order/run_example.sh [BUILD_DIR]        (default build)
#
# The server is DTX_TEST_PG_URI (postgresql://user@host:port/db, as scripts/with-postgres.sh
# exports it); without it the script exits 77 (skipped), or 1 when DTX_REQUIRE_POSTGRES is set.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "${1:-$here/../../build}" && pwd)
random_orders=${RANDOM_ORDERS:-20}

if [ -z "${DTX_TEST_PG_URI:-}" ]; then
  echo "run_example: DTX_TEST_PG_URI is not set (run under scripts/with-postgres.sh)" >&2
  [ -n "${DTX_REQUIRE_POSTGRES:-}" ] && exit 1
  exit 77
fi
# postgresql://user@host:port/db
rest=${DTX_TEST_PG_URI#*://}
export PGUSER=${rest%%@*}
rest=${rest#*@}
export PGHOST=${rest%%:*}
rest=${rest#*:}
export PGPORT=${rest%%/*}
prefix="at_order_$$"
export ORDERS_DB=${prefix}_orders STOCK_DB=${prefix}_stock ACCOUNTS_DB=${prefix}_accounts

. "$here/../../scripts/lib/services.sh"
svc_init run_example dtx-at-order
dir=$SVC_DIR
svc_cleanup_hook() {
  for db in "$ORDERS_DB" "$STOCK_DB" "$ACCOUNTS_DB"; do
    psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
  done
}

# 1. The databases and their tables, straight on PostgreSQL (before the proxy serves them).
for part in orders stock accounts; do
  db_var=${part^^}_DB
  psql -X -q -v ON_ERROR_STOP=1 -d postgres -c "CREATE DATABASE ${!db_var}"
  psql -X -q -v ON_ERROR_STOP=1 -d "${!db_var}" -f "$here/schema-$part.sql" 2>&1 | grep -v 'does not exist, skipping' || true
done

# 2. The coordinator.
start_coordinator "$build/bin/dtx-coordinator" --admin 127.0.0.1:0
tc_port=$TC_PORT
tc_admin=$TC_ADMIN

# 3. The proxy in AT mode, one --resource per database.
uri() { echo "postgresql://$PGUSER@$PGHOST:$PGPORT/$1"; }
start_proxy "$dir/proxy.out" "$build/bin/dtx-sql-proxy" --admin "" --server "$PGHOST:$PGPORT" \
  --coordinator "127.0.0.1:$tc_port" --log-level warn \
  --resource "$ORDERS_DB=$(uri "$ORDERS_DB")" \
  --resource "$STOCK_DB=$(uri "$STOCK_DB")" \
  --resource "$ACCOUNTS_DB=$(uri "$ACCOUNTS_DB")"
export PROXY_HOST=127.0.0.1 PROXY_PORT=$port

# 4. The client, then the check.
"$here/place_orders.sh" --random "$random_orders" --placed "$dir/placed.txt"
"$here/check.sh" --placed "$dir/placed.txt" --admin "127.0.0.1:$tc_admin"
