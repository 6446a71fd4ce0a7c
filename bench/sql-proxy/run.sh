#!/usr/bin/env bash
# pgbench through dtx-sql-proxy against the same PostgreSQL directly and through pgbouncer (session
# mode), in one run, and prints transactions per second with the ratios to direct.
#
#   bench/sql-proxy/run.sh [BUILD_DIR]      (default build-proxy-bench, a Release build)
#
# Each cell is `pgbench -n -c 8 -j 2 -T 20` (SECONDS=.. to change -T), select-only (-S) and TPC-B,
# in simple and prepared query modes. A throwaway PostgreSQL 15 in a temp folder (scale 10), run as
# the postgres user when we are root, as pgbouncer is. SYNC=off (the default) sets
# synchronous_commit = off so that TPC-B measures the path and not the disk; SYNC=on keeps
# PostgreSQL's default (every commit waits for its WAL flush), which the header line names. PROXY_WORKERS sets the proxy's I/O threads (default 2), PROXY_FLAGS adds flags (e.g. "--defer-begin false", or "--busy-poll-us 50" with CPUS=split);
# WORKLOADS="select-only tpc-b" and MODES="simple prepared" choose the cells. ROUNDS=n runs each
# cell n times (direct, proxy, pgbouncer back to back each time) and adds the median ratios: on a
# shared machine a ratio of neighbouring runs is steadier than any one figure. pgbench always
# connects over TCP (127.0.0.1), as a client on another machine would; the proxy and pgbouncer reach
# the server through its Unix-domain socket, as a pooler next to the database does
# (BACKEND=tcp: through 127.0.0.1 instead). CPUS=shared (the default) lets every process use both
# cores; CPUS=split pins PostgreSQL and pgbench to cpu 0 and the proxy and pgbouncer to cpu 1, the
# layout of a proxy on cores of its own: the server gets the same core in the direct runs as in the
# relayed ones, so the ratio is what the hop costs the server, not the proxy's CPU taken from it.
# TLS=1: every pgbench connection uses TLS (sslmode=require), to PostgreSQL directly (ssl = on), to
# the proxy (--tls-cert) and to pgbouncer (client_tls_sslmode); the proxies reach the server in the
# clear, as before. A throwaway self-signed certificate (the openssl program makes it).
# Needs: postgresql, pgbouncer (scripts/setup.sh installs both), a built dtx-sql-proxy.
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build-proxy-bench}
proxy_bin=$build/bin/dtx-sql-proxy
seconds=${SECONDS_PER_RUN:-20}
workers=${PROXY_WORKERS:-2}
sync=${SYNC:-off}
rounds=${ROUNDS:-1}
case $sync in on | off) ;; *) echo "SYNC is on or off" >&2; exit 2 ;; esac
[ -x "$proxy_bin" ] || { echo "no $proxy_bin: cmake -S . -B $build -G Ninja -DCMAKE_BUILD_TYPE=Release && ninja -C $build dtx-sql-proxy" >&2; exit 2; }
command -v pgbouncer >/dev/null || [ -x /usr/sbin/pgbouncer ] || { echo "pgbouncer is not installed" >&2; exit 2; }
pgbouncer_bin=$(command -v pgbouncer || echo /usr/sbin/pgbouncer)

. scripts/lib/services.sh
cpus=$(cpu_layout)  # before anything starts: they inherit cpu 0 under CPUS=split
svc_init run dtx-proxy-bench
bin=$PG_BIN
dir=$SVC_DIR
svc_cleanup_hook() {  # pgbouncer may have forked away from the pid we started
  [ ! -f "$dir/pgbouncer.pid" ] || kill "$(cat "$dir/pgbouncer.pid")" 2>/dev/null || true
}

tls=${TLS:-0}
pg_tls=() proxy_tls=()
case $tls in
  0) ;;
  1)
    command -v openssl >/dev/null || { echo "TLS=1 needs the openssl program" >&2; exit 2; }
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$dir/tls.key" \
      -out "$dir/tls.crt" -days 1 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 2>/dev/null
    chmod 600 "$dir/tls.key"
    [ -z "$PG_OWNER" ] || chown "$PG_OWNER:" "$dir/tls.key" "$dir/tls.crt"
    pg_tls=("ssl = on" "ssl_cert_file = '$dir/tls.crt'" "ssl_key_file = '$dir/tls.key'")
    proxy_tls=(--tls-cert "$dir/tls.crt" --tls-key "$dir/tls.key")
    export BOUNCER_EXTRA="client_tls_sslmode = require
client_tls_cert_file = $dir/tls.crt
client_tls_key_file = $dir/tls.key"
    ;;
  *) echo "TLS is 0 or 1" >&2; exit 2 ;;
esac
start_postgres "$dir" "shared_buffers = 256MB" "synchronous_commit = $sync" "max_connections = 100" \
  "log_min_messages = warning" "${pg_tls[@]}"
pg_port=$PG_PORT
"$bin/pgbench" -h 127.0.0.1 -p "$pg_port" -U postgres -i -s 10 -q postgres >/dev/null 2>&1

backend=${BACKEND:-unix}
case $backend in
  unix) server_addr=$dir:$pg_port bouncer_host=$dir ;;
  tcp) server_addr=127.0.0.1:$pg_port bouncer_host=127.0.0.1 ;;
  *) echo "BACKEND is unix or tcp" >&2; exit 2 ;;
esac
start_proxy "$dir/proxy.out" "$proxy_bin" --admin "" --server "$server_addr" --workers "$workers" \
  --log-level warn "${proxy_tls[@]}" ${PROXY_FLAGS:-}
proxy_port=$port
[ "$cpus" = split ] && taskset -a -pc 1 "$SVC_LAST_PID" >/dev/null

start_pgbouncer "$dir" "$bouncer_host" "$pg_port"
bouncer_port=$BOUNCER_PORT
[ "$cpus" = split ] && [ -n "$BOUNCER_PID" ] && taskset -a -pc 1 "$BOUNCER_PID" >/dev/null

[ "$tls" = 1 ] && export PGSSLMODE=require
tps() {  # port, pgbench flags...
  local port=$1
  shift
  "$bin/pgbench" -h 127.0.0.1 -p "$port" -U postgres -n -c 8 -j 2 -T "$seconds" "$@" postgres 2>/dev/null |
    awk '/^tps = / {printf "%.0f", $3}'
}

echo "pgbench -n -c 8 -j 2 -T $seconds, scale 10, synchronous_commit = $sync; proxies reach the server by $backend; dtx-sql-proxy --workers $workers; pgbouncer $("$pgbouncer_bin" --version | head -1 | awk '{print $2}') session mode; cpus $cpus; $([ "$tls" = 1 ] && echo "clients over TLS" || echo "no TLS")"
[ "$cpus" = split ] && echo "cpus split: PostgreSQL and pgbench on cpu 0, dtx-sql-proxy and pgbouncer on cpu 1"
echo "$(nproc --all) cores, $(date -u +%Y-%m-%dT%H:%MZ), load before: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-22s %10s %10s %10s %8s %8s\n' workload direct dtx-proxy pgbouncer proxy/d bouncer/d
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", (b > 0 ? a / b : 0)}'; }
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{v[NR] = $1} END {print NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
for workload in ${WORKLOADS:-select-only tpc-b}; do
  for mode in ${MODES:-simple prepared}; do
    flags=(-M "$mode")
    [ "$workload" = select-only ] && flags+=(-S)
    pr="" br=""
    for ((r = 0; r < rounds; r++)); do
      d=$(tps "$pg_port" "${flags[@]}")
      p=$(tps "$proxy_port" "${flags[@]}")
      b=$(tps "$bouncer_port" "${flags[@]}")
      pr+=" $(ratio "$p" "$d")" br+=" $(ratio "$b" "$d")"
      printf '%-22s %10s %10s %10s %8s %8s\n' "$workload $mode" "$d" "$p" "$b" "$(ratio "$p" "$d")" "$(ratio "$b" "$d")"
    done
    if [ "$rounds" -gt 1 ]; then
      printf '%-22s %10s %10s %10s %8.2f %8.2f\n' "  median of $rounds" "" "" "" "$(median <<<"$pr")" "$(median <<<"$br")"
    fi
  done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
