#!/usr/bin/env bash
# The coordinator benchmark: full global transactions against dtx-coordinator with its SQLite log
# durable at every commit (synchronous=FULL), the RSS with 100,000 transactions in flight, and the
# time a restart takes to resume them. Builds Release in build-bench/. Loopback only; about 2 min.
# Knobs: DURATION=10 WARMUP=2 CONNS="16 32" INFLIGHT=16 HOLD=100000 TC_THREADS=1 BUILD_DIR=build-bench
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build-bench}
duration=${DURATION:-10}
warmup=${WARMUP:-2}
conns=${CONNS:-"16 32"}
inflight=${INFLIGHT:-16}
hold=${HOLD:-100000}
tc_threads=${TC_THREADS:-1}

cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DDTX_BUILD_TESTS=OFF >/dev/null
ninja -C "$build" -j2 dtx-coordinator dtx-coordinator-bench dtx-rpc-bench dtx-echo-server >/dev/null

data=$(mktemp -d /tmp/dtx-tc-bench.XXXXXX)
out=$data/tc.out
tc_pid=""
cleanup() {
  [ -n "$tc_pid" ] && kill -9 "$tc_pid" 2>/dev/null || true
  [ -n "${echo_pid:-}" ] && kill "$echo_pid" 2>/dev/null || true
  rm -rf "$data"
}
trap cleanup EXIT

start_tc() {
  : >"$out"
  "$build/bin/dtx-coordinator" --port 0 --admin "" --data-dir "$data/log" --io-threads "$tc_threads" \
    --log-level warn >"$out" 2>&1 &
  tc_pid=$!
  for _ in $(seq 600); do grep -q '^LISTENING ' "$out" && break; sleep 0.05; done
  port=$(awk '/^LISTENING /{print $2}' "$out")
}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "== transactions: Begin, 2 x RegisterBranch, Commit, 2 x BranchCommit (SQLite, synchronous=FULL)"
for c in $conns; do
  rm -rf "$data/log"
  start_tc
  "$build/bin/dtx-coordinator-bench" --address "127.0.0.1:$port" --connections "$c" --inflight "$inflight" \
    --duration "$duration" --warmup "$warmup"
  kill "$tc_pid"; wait "$tc_pid" 2>/dev/null || true; tc_pid=""
done

echo "== echo calls/s of the same build (dtx-echo-server, 1 I/O thread; 32 connections x 16 in flight)"
: >"$data/echo.out"
"$build/bin/dtx-echo-server" --host 127.0.0.1 --port 0 --io-threads 1 --log-level warn >"$data/echo.out" 2>&1 &
echo_pid=$!
for _ in $(seq 100); do grep -q '^LISTENING ' "$data/echo.out" && break; sleep 0.05; done
echo_port=$(awk '/^LISTENING /{print $2}' "$data/echo.out")
"$build/bin/dtx-rpc-bench" --address "127.0.0.1:$echo_port" --target dtx --connections 32 --inflight 16 \
  --duration "$duration" --warmup "$warmup" | head -3
kill "$echo_pid"; wait "$echo_pid" 2>/dev/null || true; echo_pid=""

echo "== $hold transactions in flight (begun, two branches each, not decided)"
rm -rf "$data/log"
start_tc
rss_idle=$(awk '/VmRSS/{print $2}' /proc/$tc_pid/status)
"$build/bin/dtx-coordinator-bench" --address "127.0.0.1:$port" --connections 16 --inflight 64 --hold "$hold" \
  --coordinator-pid "$tc_pid"
echo "coordinator RSS idle: ${rss_idle} kB"
echo "== kill -9, then restart with $hold unfinished transactions in the log"
kill -9 "$tc_pid"; wait "$tc_pid" 2>/dev/null || true; tc_pid=""
t0=$(date +%s.%N)
start_tc
t1=$(date +%s.%N)
echo "restart to serving (recovery of $hold transactions): $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b - a}') s; RSS after: $(awk '/VmRSS/{print $2}' /proc/$tc_pid/status) kB"
