#!/usr/bin/env bash
# Installs every build and test dependency of dtx from Debian's packages and the npm
# registry, then builds. Safe to run again: it installs only what is missing.
# Usage: scripts/setup.sh [--no-build]
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  build-essential cmake ninja-build ccache pkg-config git
  libboost1.81-dev libprotobuf-dev protobuf-compiler libdeflate-dev
  libspdlog-dev libfmt-dev libcli11-dev nlohmann-json3-dev
  libsqlite3-dev libpq-dev libpg-query-dev libjemalloc-dev libssl-dev
  libgtest-dev libgmock-dev
  clang-14 libclang-rt-14-dev
  postgresql pgbouncer
)
# Node.js and npm for the interop peers: Debian's packages unless a Node.js is already there.
command -v node >/dev/null || packages+=(nodejs)
command -v npm >/dev/null || packages+=(npm)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "setup: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Real SOFARPC peers for the interop tests and the benchmark (versions pinned by the lock file).
if [ -f tests/interop/package-lock.json ]; then
  (cd tests/interop && npm ci --no-audit --no-fund --loglevel=error)
fi

# node-postgres (pg), a real client in the SQL proxy's tests (versions pinned by the lock file).
if [ -f tests/sql-proxy/node/package-lock.json ]; then
  (cd tests/sql-proxy/node && npm ci --no-audit --no-fund --loglevel=error)
fi

[ "${1:-}" = "--no-build" ] && exit 0
exec scripts/build.sh
