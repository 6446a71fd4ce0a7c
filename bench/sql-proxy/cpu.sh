#!/usr/bin/env bash
# The proxy's CPU per transaction: pgbench directly and through dtx-sql-proxy, alternating, with
# the proxy's user+system CPU time (from /proc/<pid>/stat) divided by the transactions it relayed.
# On a noisy shared machine this is steadier than transactions per second.
#
#   bench/sql-proxy/cpu.sh BUILD_DIR [PROXY_FLAG...]    e.g. cpu.sh build-rb --workers 1
#
# Each cell is `pgbench -n -c 8 -j 2 -T $SECONDS_PER_RUN` (default 10); ROUNDS (default 2) repeats
# direct+proxy; WORKLOADS="select-only tpc-b", MODES="simple prepared" choose the cells.
# Prints per cell: direct tps, proxy tps, ratio, proxy CPU microseconds per transaction, and the same
# for pgbouncer (session mode) next to it. Both reach the server through its Unix-domain socket
# (BACKEND=tcp: through 127.0.0.1). SYNC=off (default) or on: PostgreSQL's synchronous_commit.
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build-proxy-bench}
shift || true
proxy_bin=$build/bin/dtx-sql-proxy
seconds=${SECONDS_PER_RUN:-10}
rounds=${ROUNDS:-2}
sync=${SYNC:-off}
case $sync in on | off) ;; *) echo "SYNC is on or off" >&2; exit 2 ;; esac
[ -x "$proxy_bin" ] || { echo "no $proxy_bin" >&2; exit 2; }

. scripts/lib/services.sh
svc_init cpu dtx-proxy-cpu
bin=$PG_BIN
start_postgres "$SVC_DIR" "shared_buffers = 256MB" "synchronous_commit = $sync" "max_connections = 100" \
  "log_min_messages = warning"
"$bin/pgbench" -h 127.0.0.1 -p "$PG_PORT" -U postgres -i -s 10 -q postgres >/dev/null 2>&1
case ${BACKEND:-unix} in
  unix) server_addr=$SVC_DIR:$PG_PORT bouncer_host=$SVC_DIR ;;
  tcp) server_addr=127.0.0.1:$PG_PORT bouncer_host=127.0.0.1 ;;
  *) echo "BACKEND is unix or tcp" >&2; exit 2 ;;
esac
start_proxy "$SVC_DIR/proxy.out" "$proxy_bin" --admin "" --server "$server_addr" --log-level warn "$@"
proxy_pid=$SVC_LAST_PID
proxy_port=$port
svc_cleanup_hook() { [ ! -f "$SVC_DIR/pgbouncer.pid" ] || kill "$(cat "$SVC_DIR/pgbouncer.pid")" 2>/dev/null || true; }
start_pgbouncer "$SVC_DIR" "$bouncer_host" "$PG_PORT"
tick=$(getconf CLK_TCK)

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
txns() {  # port, flags...: prints "tps transactions"
  local port=$1
  shift
  "$bin/pgbench" -h 127.0.0.1 -p "$port" -U postgres -n -c 8 -j 2 -T "$seconds" "$@" postgres 2>/dev/null |
    awk '/^tps = / {tps = $3} /number of transactions actually processed/ {n = $NF; sub(/\/.*/, "", n)} END {printf "%.0f %d\n", tps, n}'
}

echo "proxy flags: --server $server_addr $*; pgbench -n -c 8 -j 2 -T $seconds; synchronous_commit = $sync; $(date -u +%H:%MZ) load $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-22s %8s %8s %6s %10s %8s %6s %10s\n' cell direct proxy ratio cpu_us/tx bouncer ratio cpu_us/tx
per_tx() { awk -v c="$1" -v t="$tick" -v n="$2" 'BEGIN {print (n > 0 ? c / t * 1e6 / n : 0)}'; }
for workload in ${WORKLOADS:-select-only tpc-b}; do
  for mode in ${MODES:-simple prepared}; do
    flags=(-M "$mode")
    [ "$workload" = select-only ] && flags+=(-S)
    for ((r = 0; r < rounds; r++)); do
      read -r d _ < <(txns "$PG_PORT" "${flags[@]}")
      c0=$(cpu_ticks "$proxy_pid")
      read -r p n < <(txns "$proxy_port" "${flags[@]}")
      c1=$(cpu_ticks "$proxy_pid")
      b0=$(cpu_ticks "$BOUNCER_PID")
      read -r b m < <(txns "$BOUNCER_PORT" "${flags[@]}")
      b1=$(cpu_ticks "$BOUNCER_PID")
      printf '%-22s %8s %8s %6.2f %10.1f %8s %6.2f %10.1f\n' "$workload $mode" "$d" "$p" \
        "$(awk -v a="$p" -v b="$d" 'BEGIN {print a / b}')" "$(per_tx $((c1 - c0)) "$n")" \
        "$b" "$(awk -v a="$b" -v b="$d" 'BEGIN {print a / b}')" "$(per_tx $((b1 - b0)) "$m")"
    done
  done
done
