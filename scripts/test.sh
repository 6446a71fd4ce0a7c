#!/usr/bin/env bash
# Builds dtx and runs every test under ctest: unit tests, end-to-end tests over loopback, the log
# stores against a real PostgreSQL (started here, in a temp folder, by scripts/with-postgres.sh),
# crash tests that SIGKILL real processes, interop with real SOFARPC peers (node), and a short
# fuzz run. Extra arguments go to ctest (e.g. -R Bolt).
# REQUIRES: scripts/setup.sh has installed the dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh
if [ ! -d tests/interop/node_modules ]; then
  (cd tests/interop && npm ci --no-audit --no-fund --loglevel=error)
fi
if [ ! -d tests/sql-proxy/node/node_modules ]; then
  (cd tests/sql-proxy/node && npm ci --no-audit --no-fund --loglevel=error)
fi
export DTX_REQUIRE_POSTGRES=1  # the PostgreSQL tests fail, not skip, without their server
exec scripts/with-postgres.sh ctest --test-dir build -j2 --output-on-failure --timeout 600 "$@"
