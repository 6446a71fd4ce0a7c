#!/usr/bin/env bash
# Builds the libFuzzer targets with clang and runs each for a while over its seed corpus.
#   scripts/fuzz.sh [SECONDS [TARGET...]]   (default 60 s, every target: bolt pgwire at_sql; CI runs each briefly)
# New inputs found go to build-fuzz/corpus/<target>, not into the committed seed corpus.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
targets=("${@:2}")
[ ${#targets[@]} -gt 0 ] || targets=(bolt pgwire at_sql)
cmake -S . -B build-fuzz -G Ninja -DDTX_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_COMPILER=clang-14 -DCMAKE_CXX_COMPILER=clang++-14 >/dev/null
ninja -C build-fuzz -j2 bolt_decode_fuzz pgwire_decode_fuzz at_sql_fuzz
binary() { case "$1" in at_sql) echo at_sql_fuzz ;; *) echo "${1}_decode_fuzz" ;; esac; }
for target in "${targets[@]}"; do
  work=build-fuzz/corpus/$target
  mkdir -p "$work"
  echo "fuzz: $(binary "$target") for ${seconds}s"
  build-fuzz/bin/$(binary "$target") -max_total_time="$seconds" -print_final_stats=1 -artifact_prefix=build-fuzz/ \
    "$work" tests/fuzz/corpus/$target 2>&1 | tail -n 12
done
