#!/usr/bin/env bash
# Configures (once) and builds dtx into build/. Extra arguments go to cmake's configure step.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=${DTX_JOBS:-2}
if [ ! -f build/build.ninja ] || [ $# -gt 0 ]; then
  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=${DTX_BUILD_TYPE:-RelWithDebInfo} "$@"
fi
ninja -C build -j"$jobs"
