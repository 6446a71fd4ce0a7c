#!/usr/bin/env bash
# A longer soak of AT mode end to end: tests/at-e2e (concurrent transfers between two databases
# through dtx-sql-proxy, kill -9 of the proxy and of the coordinator, then money conservation,
# ledger agreement and an empty undo log) with long phases, repeated.
#
#   bench/at/run_at_soak.sh [BUILD_DIR] [SECONDS_PER_PHASE] [REPEAT]     (default build 60 5)
#
# Needs BUILD_DIR/bin/at_e2e_test (ninja -C BUILD_DIR at_e2e_test); starts its own throwaway
# PostgreSQL (scripts/with-postgres.sh). Each repetition takes about 4 x SECONDS_PER_PHASE.
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build}
seconds=${2:-60}
repeat=${3:-5}
[ -x "$build/bin/at_e2e_test" ] || { echo "no $build/bin/at_e2e_test: ninja -C $build at_e2e_test" >&2; exit 2; }
export DTX_AT_E2E_SECONDS=$seconds DTX_REQUIRE_POSTGRES=1
exec scripts/with-postgres.sh "$build/bin/at_e2e_test" --gtest_repeat="$repeat" --gtest_break_on_failure
