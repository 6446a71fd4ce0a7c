#!/usr/bin/env bash
# TCC transfers per second end to end (client -> two bank participants -> dtx-coordinator, the
# TCC fence on, every database durable), beside the same transfers as plain local transactions
# of the same two banks without the coordinator. Prints both rates and their ratio.
#
#   bench/tcc/run_tcc_bench.sh [BUILD_DIR] [SECONDS] [CONCURRENCY]
#
# BUILD_DIR (default build) needs dtx-coordinator, dtx-tcc-bank and dtx-tcc-transfer
# (`ninja -C BUILD_DIR dtx-tcc-bench` builds them). Everything runs on loopback in a temp folder,
# removed at the end. DTX_BENCH_BANK_DB=postgresql://... puts both banks in PostgreSQL schemas
# of that server instead of SQLite files (each bank gets the schema bank_a / bank_b, created).
# DTX_BENCH_TC_FLAGS adds coordinator flags (e.g. "--store memory"); DTX_BENCH_BANK_FLAGS adds
# bank flags (e.g. "--report-phase-one-done false").
set -euo pipefail
build=${1:-build}
seconds=${2:-20}
concurrency=${3:-16}
bin=$(cd "$build/bin" && pwd)
. "$(dirname "$0")/../../scripts/lib/services.sh"
svc_init run_tcc_bench dtx-tcc-bench
dir=$SVC_DIR

start_coordinator "$bin/dtx-coordinator" --admin "" ${DTX_BENCH_TC_FLAGS:-}
tc=$TC_ADDR
db_a="$dir/bank-a.db"
db_b="$dir/bank-b.db"
if [ -n "${DTX_BENCH_BANK_DB:-}" ]; then
  psql "$DTX_BENCH_BANK_DB" -qc "DROP SCHEMA IF EXISTS bank_a CASCADE; DROP SCHEMA IF EXISTS bank_b CASCADE;
                                 CREATE SCHEMA bank_a; CREATE SCHEMA bank_b" >/dev/null
  sep='?'
  case "$DTX_BENCH_BANK_DB" in *\?*) sep='&' ;; esac
  db_a="${DTX_BENCH_BANK_DB}${sep}options=-csearch_path%3Dbank_a"
  db_b="${DTX_BENCH_BANK_DB}${sep}options=-csearch_path%3Dbank_b"
fi
accounts=1000
start_listening "$dir/a.out" "$bin/dtx-tcc-bank" --name bank-a --db "$db_a" --coordinator "$tc" --port 0 \
  --accounts $accounts --initial-balance 1000000 --threads "$concurrency" ${DTX_BENCH_BANK_FLAGS:-}
bank_a=127.0.0.1:$port
start_listening "$dir/b.out" "$bin/dtx-tcc-bank" --name bank-b --db "$db_b" --coordinator "$tc" --port 0 \
  --accounts $accounts --initial-balance 1000000 --threads "$concurrency" ${DTX_BENCH_BANK_FLAGS:-}
bank_b=127.0.0.1:$port

common=(--bank-a "$bank_a" --bank-b "$bank_b" --accounts $accounts --seconds "$seconds" --concurrency "$concurrency")
echo "== TCC (coordinator, fence on), $concurrency in flight, ${seconds}s"
tcc=$("$bin/dtx-tcc-transfer" --coordinator "$tc" "${common[@]}")
echo "$tcc"
echo "== plain local transactions (no coordinator), $concurrency in flight, ${seconds}s"
plain=$("$bin/dtx-tcc-transfer" --plain true "${common[@]}")
echo "$plain"
rate() { sed -n 's/.* rate=\([0-9.]*\).*/\1/p' <<<"$1"; }
echo "$tcc$plain" | grep -q "CHECK OK" || { echo "run_tcc_bench: a balance check failed" >&2; exit 1; }
awk -v t="$(rate "$tcc")" -v p="$(rate "$plain")" \
  'BEGIN { printf "RESULT tcc=%.0f/s plain=%.0f/s ratio=%.2f (TCC reaches %.0f%% of plain)\n", t, p, t / p, 100 * t / p }'
