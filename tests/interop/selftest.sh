#!/usr/bin/env bash
# Node client against node server, Bolt v1 and v2+CRC. Needs `npm ci` in this folder first.
# Prints the client lines and a last line `N passed, M failed`; exits non-zero on failure.
set -u
cd "$(dirname "$0")"
out=$(mktemp)
node echo_server.js --port 0 >"$out" &
server=$!
trap 'kill -TERM $server 2>/dev/null; wait $server 2>/dev/null; rm -f "$out"' EXIT
for _ in $(seq 50); do grep -q '^LISTENING ' "$out" && break; sleep 0.1; done
port=$(awk '/^LISTENING /{print $2}' "$out")
[ -n "$port" ] || { echo "echo_server did not start"; echo "0 passed, 1 failed"; exit 1; }
passed=0 failed=0
for protocol in v1 v2; do
  while read -r line; do
    case "$line" in
      ok\ *) passed=$((passed + 1)); echo "ok $protocol ${line#ok }" ;;
      FAIL\ *) failed=$((failed + 1)); echo "FAIL $protocol ${line#FAIL }" ;;
    esac
  done < <(node echo_client.js --address "127.0.0.1:$port" --protocol "$protocol")
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -eq 6 ]
