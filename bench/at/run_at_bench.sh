#!/usr/bin/env bash
# AT mode's cost: a TPC-B-like pgbench script where every transaction is a dtx global transaction
# (SELECT dtx.begin(); BEGIN; ...; END; SELECT dtx.commit();) against the same script without the
# dtx lines, both through dtx-sql-proxy in AT mode, in one run. Prints both rates and the ratio
# (the issue's target: at least 0.6).
#
#   bench/at/run_at_bench.sh [BUILD_DIR]        (default build; needs dtx-coordinator, dtx-sql-proxy)
#
# Each run is `pgbench -n -M simple -c 8 -j 2 -T 20 -f <script>` (MODE, CLIENTS, THREADS, SECONDS_PER_RUN
# change them). Three runs:
#   plain   through a proxy started with --check-unbound-writes false (a plain proxy's work);
#   plain   through the AT proxy with its defaults (each unbound write returns its keys, which are checked with the coordinator);
#   global  through the AT proxy: every transaction begins, registers one AT branch and commits
#           at the coordinator, with its undo log written and later deleted.
# Data: pgbench -i -s 10 (1,000,000 accounts), then branches widened to 1,000 and tellers to
# 10,000 rows, so that two of the 8 clients rarely hold the same branch's global lock at once
# (at scale 10 every transaction updates one of 10 branch rows: a global lock conflict for most
# pairs of clients). pgbench_history gets a bigserial primary key (AT needs one).
# A throwaway PostgreSQL 15 in a temp folder (synchronous_commit off, as in bench/sql-proxy, so
# that the figures measure the path rather than the disk); the coordinator keeps its default
# durable SQLite log (TC_FLAGS adds flags, e.g. "--store memory"; PROXY_FLAGS adds flags to both
# proxies, e.g. "--at-keep-prepared false"). PROXY_WORKERS (2) sets the
# proxies' I/O threads. The proxies reach PostgreSQL through its Unix-domain socket, as a proxy
# next to its database would (BACKEND=tcp: through 127.0.0.1); pgbench reaches them over TCP.
# PROFILE=N prints the top N symbols of a perf profile of the AT proxy
# (PROFILE_OF=coordinator: of the coordinator) during the global run; PERF_RECORD_FLAGS and
# PERF_REPORT_FLAGS add to perf's (e.g. "--call-graph dwarf" and "--children"); PGSTAT=N the top N
# statements of that run by PostgreSQL's time; PERF_DATA keeps the profile in that file. ROUNDS=n
# repeats the three runs n times on the same services and prints the median ratios (profile and
# statements of the first round only). SYSCALLS=1 adds, for each run, system calls and context
# switches per transaction (perf stat) of the proxy, the coordinator and the whole machine.
# CPUS=shared (the default) lets every process use both cores; CPUS=split pins PostgreSQL and
# pgbench to cpu 0 and the proxies and the coordinator to cpu 1, the layout of dtx on cores of its
# own: PostgreSQL gets the same core in the plain run as in the global one.
# GLOBAL_SCRIPT=tpcb-global-fn.sql runs the global transactions with a function call in the
# account UPDATE, so that each COMMIT is checked for writes beside the branch's own rows.
# (pg_stat_statements: parse and plan plus execution, per call). Everything on 127.0.0.1.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../.."
build=${1:-build}
seconds=${SECONDS_PER_RUN:-20}
clients=${CLIENTS:-8}
threads=${THREADS:-2}
workers=${PROXY_WORKERS:-2}
rounds=${ROUNDS:-1}
mode=${MODE:-simple}  # pgbench -M: simple, extended or prepared
for b in dtx-coordinator dtx-sql-proxy; do
  [ -x "$build/bin/$b" ] || { echo "no $build/bin/$b: ninja -C $build dtx-coordinator dtx-sql-proxy" >&2; exit 2; }
done
. scripts/lib/services.sh
cpus=$(cpu_layout)  # before anything starts: they inherit cpu 0 under CPUS=split
svc_init run_at_bench dtx-at-bench
bin=$PG_BIN
dir=$SVC_DIR

pg_conf=("shared_buffers = 256MB" "synchronous_commit = off" "max_connections = 100" "log_min_messages = warning")
[ -z "${PGSTAT:-}" ] || pg_conf+=("shared_preload_libraries = 'pg_stat_statements'" "pg_stat_statements.track_planning = on")
start_postgres "$dir" "${pg_conf[@]}"
pg_port=$PG_PORT
psql_pg() { "$bin/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$pg_port" -U postgres -d postgres "$@"; }
"$bin/pgbench" -h 127.0.0.1 -p "$pg_port" -U postgres -i -s 10 -q postgres >/dev/null 2>&1
psql_pg <<'SQL'
INSERT INTO pgbench_branches (bid, bbalance) SELECT g, 0 FROM generate_series(11, 1000) g;
INSERT INTO pgbench_tellers (tid, bid, tbalance) SELECT g, (g - 1) / 10 + 1, 0 FROM generate_series(101, 10000) g;
ALTER TABLE pgbench_history ADD COLUMN hid bigserial PRIMARY KEY;
-- For tpcb-global-fn.sql: a function of no extension, so its transactions get the proxy's check of
-- writes beside their own rows (docs/undo-log.md).
CREATE FUNCTION bench_same(int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT $1';
VACUUM ANALYZE;
SQL

start_coordinator "$build/bin/dtx-coordinator" --admin 127.0.0.1:0 ${TC_FLAGS:-}
tc=$TC_ADDR
tc_pid=$TC_PID
tc_admin=$TC_ADMIN
case ${BACKEND:-unix} in  # how the proxies reach PostgreSQL
  unix) server_addr=$dir:$pg_port resource="postgresql://postgres@/postgres?host=$dir&port=$pg_port" ;;
  tcp) server_addr=127.0.0.1:$pg_port resource="postgresql://postgres@127.0.0.1:$pg_port/postgres" ;;
  *) echo "BACKEND is unix or tcp" >&2; exit 2 ;;
esac
at_flags=(--admin "" --server "$server_addr" --workers "$workers" --log-level warn
          --coordinator "$tc" --resource "postgres=$resource" ${PROXY_FLAGS:-})
start_proxy "$dir/proxy-at.out" "$build/bin/dtx-sql-proxy" "${at_flags[@]}"
at_port=$port
at_pid=$SVC_LAST_PID
start_proxy "$dir/proxy-nocheck.out" "$build/bin/dtx-sql-proxy" "${at_flags[@]}" --check-unbound-writes false
nocheck_port=$port
nocheck_pid=$SVC_LAST_PID
if [ "$cpus" = split ]; then  # dtx on cpu 1, PostgreSQL and pgbench (started from here) on cpu 0
  for p in "$at_pid" "$nocheck_pid" "$tc_pid"; do taskset -a -pc 1 "$p" >/dev/null; done
fi

# CPU time (ms) of a process and its reaped children (the postmaster's children are its backends).
# The machine's idle share (idle + iowait jiffies) since a /proc/stat "cpu" line taken earlier.
cpu_line() { head -1 /proc/stat; }
idle_pct() { awk -v a="$1" -v b="$2" 'BEGIN { n = split(a, x, " "); split(b, y, " "); t = 0
  for (i = 2; i <= n; i++) t += y[i] - x[i]; printf "%d", t ? 100 * ((y[5] - x[5]) + (y[6] - x[6])) / t : 0 }'; }
cpu_ms() { awk -v hz="$(getconf CLK_TCK)" '{print int(($14 + $15 + $16 + $17) * 1000 / hz)}' "/proc/$1/stat"; }
postmaster=$(head -1 "$dir/data/postmaster.pid")

# The coordinator log's commits, batches and fsyncs so far.
log_counters() {
  curl -sf "http://127.0.0.1:$tc_admin/metrics" | awk '/^dtx_log_commits_total / {c = $2}
    /^dtx_log_batches_total / {b = $2} /^dtx_log_syncs_total / {s = $2} END {print c + 0, b + 0, s + 0}'
}

# pgbench on a port with a script, the proxy's pid; prints
# "tps failed aborted latency_ms cpu_us_per_tx(proxy coordinator postgres)".
bench() {
  local out p0 c0 g0 p1 c1 g1 s0
  p0=$(cpu_ms "$3") c0=$(cpu_ms "$tc_pid") g0=$(cpu_ms "$postmaster") s0=$(cpu_line)
  local stats=()
  if [ -n "${SYSCALLS:-}" ]; then  # counted over the pgbench run (less its last half second)
    local who
    for who in proxy:"-p $3" coordinator:"-p $tc_pid" machine:"-a"; do
      perf stat -x, -e raw_syscalls:sys_enter,context-switches -o "$dir/stat.${who%%:*}" ${who#*:} \
        -- sleep "$(awk -v s="$seconds" 'BEGIN {print s - 0.5}')" >/dev/null 2>&1 &
      stats+=($!)
    done
  fi
  out=$("$bin/pgbench" -h 127.0.0.1 -p "$1" -U postgres -n -M "$mode" -c "$clients" -j "$threads" -T "$seconds" \
          -f "$2" postgres 2>&1) || true
  local idle
  idle=$(idle_pct "$s0" "$(cpu_line)")
  echo "$out" >>"$dir/pgbench.log"
  if ((${#stats[@]})); then
    wait "${stats[@]}" || true
    local per=""
    for who in proxy coordinator machine; do  # per transaction: system calls / context switches
      per+=" $who $(awk -F, -v n="$(echo "$out" | awk '/^tps = / {print $3 * ('"$seconds"' - 0.5)}')" '
        /raw_syscalls/ {c = $1} /context-switches/ {w = $1} END {printf "%.1f/%.1f", n ? c / n : 0, n ? w / n : 0}' "$dir/stat.$who")"
    done
    echo "syscalls/context switches per transaction:$per ($2)" >>"$dir/syscalls.log"
  fi
  local tps failed aborted latency
  tps=$(echo "$out" | awk '/^tps = / {printf "%.0f", $3}')
  failed=$(echo "$out" | awk '/^number of failed transactions:/ {print $5}')
  aborted=$(echo "$out" | grep -c 'aborted in command' || true)
  latency=$(echo "$out" | awk '/^latency average = / {print $4}')
  sleep 0.5  # the backends have exited and been reaped
  p1=$(cpu_ms "$3") c1=$(cpu_ms "$tc_pid") g1=$(cpu_ms "$postmaster")
  local n=$(( ${tps:-0} * seconds ))
  [ "$n" -gt 0 ] || n=1
  echo "${tps:-0} ${failed:-?} ${aborted} ${latency:-?} $(( (p1 - p0) * 1000 / n )) $(( (c1 - c0) * 1000 / n )) $(( (g1 - g0) * 1000 / n )) $idle"
}

echo "pgbench -n -M $mode -c $clients -j $threads -T $seconds; accounts 1000000, tellers 10000, branches 1000;" \
  "dtx-sql-proxy --workers $workers --server ${BACKEND:-unix}; coordinator log: ${TC_FLAGS:-SQLite (default)}; cpus $cpus"
[ "$cpus" = shared ] || echo "cpus split: PostgreSQL and pgbench on cpu 0, the proxies and the coordinator on cpu 1"
echo "$(nproc --all) cores, $(date -u +%Y-%m-%dT%H:%MZ), load before: $(cut -d' ' -f1-3 /proc/loadavg)"
aborted_total=0
ratios=()
for round in $(seq 1 "$rounds"); do
  [ "$rounds" = 1 ] || echo "round $round of $rounds"
  read -r plain_tps plain_failed plain_aborted plain_lat plain_cpu_p plain_cpu_c plain_cpu_g plain_idle \
    < <(bench "$nocheck_port" "$here/tpcb-plain.sql" "$nocheck_pid")
  if [ -n "${PROFILE:-}" ] && [ "$round" = 1 ]; then  # perf profile of the AT proxy during the global run
    perf record ${PERF_RECORD_FLAGS:-} -o "${PERF_DATA:-$dir/perf.data}" -p "$([ "${PROFILE_OF:-proxy}" = coordinator ] && echo "$tc_pid" || echo "$at_pid")" -- sleep "$seconds" >/dev/null 2>&1 &
    perf_pid=$!
  fi
  [ -z "${PGSTAT:-}" ] || [ "$round" != 1 ] || psql_pg -c "CREATE EXTENSION IF NOT EXISTS pg_stat_statements; SELECT pg_stat_statements_reset()" >/dev/null
  log0=$(log_counters)
  read -r global_tps global_failed global_aborted global_lat global_cpu_p global_cpu_c global_cpu_g global_idle \
    < <(bench "$at_port" "$here/${GLOBAL_SCRIPT:-tpcb-global.sql}" "$at_pid")
  log1=$(log_counters)
  if [ -n "${PGSTAT:-}" ] && [ "$round" = 1 ]; then  # before the next run adds to the counts
    pgstat=$(psql_pg -P pager=off -c "SELECT calls, plans, round((total_plan_time + total_exec_time)::numeric * 1000 / NULLIF(calls, 0)) AS us_per_call,
        round(total_plan_time::numeric * 1000 / NULLIF(calls, 0)) AS plan_us_per_call,
        round((total_plan_time + total_exec_time)::numeric * 1000 / $((global_tps > 0 ? global_tps * seconds : 1))) AS us_per_tx,
        left(regexp_replace(query, '\\s+', ' ', 'g'), 90) AS query
      FROM pg_stat_statements WHERE query NOT LIKE '%pg_stat_statements%' ORDER BY total_plan_time + total_exec_time DESC LIMIT $PGSTAT")
  fi
  read -r checked_tps checked_failed checked_aborted checked_lat checked_cpu_p checked_cpu_c checked_cpu_g checked_idle \
    < <(bench "$at_port" "$here/tpcb-plain.sql" "$at_pid")
  fmt='%-52s %6s %8s %6s %8s %17s %5s\n'
  printf "$fmt" run tps lat_ms failed aborted "cpu_us/tx p/c/pg" idle%
  printf "$fmt" "plain, proxy with --check-unbound-writes false" "$plain_tps" "$plain_lat" "$plain_failed" \
    "$plain_aborted" "$plain_cpu_p/$plain_cpu_c/$plain_cpu_g" "$plain_idle"
  printf "$fmt" "plain, AT proxy defaults (unbound writes checked)" "$checked_tps" "$checked_lat" "$checked_failed" \
    "$checked_aborted" "$checked_cpu_p/$checked_cpu_c/$checked_cpu_g" "$checked_idle"
  printf "$fmt" "global: dtx.begin(); BEGIN; ...; END; dtx.commit()" "$global_tps" "$global_lat" "$global_failed" \
    "$global_aborted" "$global_cpu_p/$global_cpu_c/$global_cpu_g" "$global_idle"
  if [ -n "${PROFILE:-}" ] && [ "$round" = 1 ]; then
    wait "$perf_pid" || true
    perf report -i "${PERF_DATA:-$dir/perf.data}" --sort dso --stdio 2>/dev/null | grep "%" | head -n 8
    perf report -i "${PERF_DATA:-$dir/perf.data}" ${PERF_REPORT_FLAGS:-} --sort dso,symbol --stdio 2>/dev/null | grep "%" | cut -c1-110 | head -n "$PROFILE"
  fi
  [ -z "${PGSTAT:-}" ] || [ "$round" != 1 ] || echo "$pgstat"
  awk -v a="$log0" -v b="$log1" -v n="$((global_tps * seconds))" 'BEGIN { split(a, x, " "); split(b, y, " "); if (n > 0)
    printf "coordinator log per global transaction: %.2f commits, %.2f batches, %.2f fsyncs\n",
      (y[1] - x[1]) / n, (y[2] - x[2]) / n, (y[3] - x[3]) / n }'
  [ -z "${SYSCALLS:-}" ] || { sed "s|$here/||" "$dir/syscalls.log"; : >"$dir/syscalls.log"; }
  echo "(cpu_us/tx: CPU microseconds per transaction of the proxy / the coordinator / PostgreSQL's processes;" \
    "idle%: the machine's idle share during the run, all cores)"
  awk -v g="$global_tps" -v p="$plain_tps" -v c="$checked_tps" 'BEGIN {
    printf "ratio global / plain = %.2f (target >= 0.6); global / plain with unbound checks = %.2f\n", (p ? g / p : 0), (c ? g / c : 0) }'
  ratios+=("$(awk -v g="$global_tps" -v p="$plain_tps" -v c="$checked_tps" 'BEGIN { printf "%.3f %.3f", (p ? g / p : 0), (p ? c / p : 0) }')")
  aborted_total=$((aborted_total + global_aborted + plain_aborted + checked_aborted))
done
if [ "$rounds" -gt 1 ]; then
  # median, lowest, highest of one column of the ratios
  med() { printf '%s\n' "${ratios[@]}" | cut -d' ' -f"$1" | sort -n |
    awk '{ v[NR] = $1 } END { m = int((NR + 1) / 2); printf "%.2f (range %.2f-%.2f)", v[m], v[1], v[NR] }'; }
  echo "median of $rounds rounds: global / plain = $(med 1); checked unbound / plain = $(med 2)"
fi

# Phase 2 settles: nothing unfinished at the coordinator, the undo log emptied.
for _ in $(seq 1 100); do
  open=$(curl -sf "http://127.0.0.1:$tc_admin/api/v1/transactions" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["transactions"]))' || echo "?")
  undo=$(psql_pg -At -c "SELECT count(*) FROM dtx_undo_log WHERE log_status = 0")
  [ "$open" = 0 ] && [ "$undo" = 0 ] && break
  sleep 0.2
done
echo "after the runs: coordinator lists $open unfinished transaction(s); $undo undo-log row(s) left"
if [ "$aborted_total" != 0 ]; then
  echo "some pgbench clients aborted; the first errors:"
  grep -m 5 'aborted in command\|ERROR' "$dir/pgbench.log" || true
fi
