#!/usr/bin/env bash
# Builds dtx and runs every test: unit, end-to-end over loopback, interop with real SOFARPC
# peers (node), and a short fuzz run. Extra arguments go to ctest (e.g. -R Bolt).
# REQUIRES: scripts/setup.sh has installed the dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh
if [ ! -d tests/interop/node_modules ]; then
  (cd tests/interop && npm ci --no-audit --no-fund --loglevel=error)
fi
cd build
exec ctest -j2 --output-on-failure --timeout 600 "$@"
