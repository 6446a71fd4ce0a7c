#!/usr/bin/env bash
# pgbench through dtx-sql-proxy against the same PostgreSQL directly and through pgbouncer (session
# mode), in one run, and prints transactions per second with the ratios to direct.
#
#   bench/sql-proxy/run.sh [BUILD_DIR]      (default build-proxy-bench, a Release build)
#
# Each cell is `pgbench -n -c 8 -j 2 -T 20` (SECONDS=.. to change -T), select-only (-S) and TPC-B,
# in simple and prepared query modes. A throwaway PostgreSQL 15 in a temp folder (scale 10,
# synchronous_commit off so that TPC-B measures the path and not the disk), run as the postgres
# user when we are root, as pgbouncer is. PROXY_WORKERS sets the proxy's I/O threads (default 2);
# WORKLOADS="select-only tpc-b" and MODES="simple prepared" choose the cells.
# Needs: postgresql, pgbouncer (scripts/setup.sh installs both), a built dtx-sql-proxy.
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build-proxy-bench}
proxy_bin=$build/bin/dtx-sql-proxy
seconds=${SECONDS_PER_RUN:-20}
workers=${PROXY_WORKERS:-2}
bin=${DTX_PG_BIN:-/usr/lib/postgresql/15/bin}
[ -x "$proxy_bin" ] || { echo "no $proxy_bin: cmake -S . -B $build -G Ninja -DCMAKE_BUILD_TYPE=Release && ninja -C $build dtx-sql-proxy" >&2; exit 2; }
command -v pgbouncer >/dev/null || [ -x /usr/sbin/pgbouncer ] || { echo "pgbouncer is not installed" >&2; exit 2; }
pgbouncer_bin=$(command -v pgbouncer || echo /usr/sbin/pgbouncer)

as_pg=()
owner=""
if [ "$(id -u)" -eq 0 ]; then
  as_pg=(runuser -u postgres --)
  owner=postgres
fi
dir=$(mktemp -d /tmp/dtx-proxy-bench.XXXXXX)
[ -z "$owner" ] || chown "$owner:" "$dir"
run_pg() { (cd "$dir" && "${as_pg[@]}" "$@"); }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

proxy_pid="" bouncer_pid=""
cleanup() {
  [ -z "$proxy_pid" ] || kill "$proxy_pid" 2>/dev/null || true
  [ ! -f "$dir/pgbouncer.pid" ] || kill "$(cat "$dir/pgbouncer.pid")" 2>/dev/null || true
  [ -z "$bouncer_pid" ] || kill "$bouncer_pid" 2>/dev/null || true
  [ ! -f "$dir/data/postmaster.pid" ] || run_pg "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT

pg_port=$(free_port)
run_pg "$bin/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --locale=C --no-sync >/dev/null
cat >>"$dir/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $pg_port
unix_socket_directories = '$dir'
shared_buffers = 256MB
synchronous_commit = off
max_connections = 100
log_min_messages = warning
CONF
run_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w start >/dev/null
"$bin/pgbench" -h 127.0.0.1 -p "$pg_port" -U postgres -i -s 10 -q postgres >/dev/null 2>&1

proxy_out=$dir/proxy.out
"$proxy_bin" --port 0 --admin "" --server "127.0.0.1:$pg_port" --workers "$workers" --log-level warn >"$proxy_out" &
proxy_pid=$!
for _ in $(seq 100); do grep -q '^LISTENING ' "$proxy_out" && break; sleep 0.1; done
proxy_port=$(awk '/^LISTENING /{print $2}' "$proxy_out")

bouncer_port=$(free_port)
cat >"$dir/pgbouncer.ini" <<CONF
[databases]
postgres = host=127.0.0.1 port=$pg_port dbname=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $bouncer_port
unix_socket_dir =
auth_type = trust
auth_file = $dir/userlist.txt
pool_mode = session
max_client_conn = 100
default_pool_size = 20
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
CONF
echo '"postgres" ""' >"$dir/userlist.txt"
[ -z "$owner" ] || chown "$owner:" "$dir/pgbouncer.ini" "$dir/userlist.txt"
run_pg "$pgbouncer_bin" -q "$dir/pgbouncer.ini" </dev/null >/dev/null 2>&1 &
bouncer_pid=$!
for _ in $(seq 50); do "$bin/pg_isready" -q -h 127.0.0.1 -p "$bouncer_port" && break; sleep 0.1; done

tps() {  # port, pgbench flags...
  local port=$1
  shift
  "$bin/pgbench" -h 127.0.0.1 -p "$port" -U postgres -n -c 8 -j 2 -T "$seconds" "$@" postgres 2>/dev/null |
    awk '/^tps = / {printf "%.0f", $3}'
}

echo "pgbench -n -c 8 -j 2 -T $seconds, scale 10; dtx-sql-proxy --workers $workers; pgbouncer $("$pgbouncer_bin" --version | head -1 | awk '{print $2}') session mode"
echo "$(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ), load before: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-22s %10s %10s %10s %8s %8s\n' workload direct dtx-proxy pgbouncer proxy/d bouncer/d
for workload in ${WORKLOADS:-select-only tpc-b}; do
  for mode in ${MODES:-simple prepared}; do
    flags=(-M "$mode")
    [ "$workload" = select-only ] && flags+=(-S)
    d=$(tps "$pg_port" "${flags[@]}")
    p=$(tps "$proxy_port" "${flags[@]}")
    b=$(tps "$bouncer_port" "${flags[@]}")
    printf '%-22s %10s %10s %10s %8.2f %8.2f\n' "$workload $mode" "$d" "$p" "$b" \
      "$(echo "$p / $d" | awk -F/ '{print $1/$2}')" "$(echo "$b / $d" | awk -F/ '{print $1/$2}')"
  done
done
