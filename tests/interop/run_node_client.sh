#!/usr/bin/env bash
# A real SOFARPC client (sofa-rpc-node, echo_client.js) against a server, over Bolt v1 and
# v2 with CRC: echo, an application error, an unknown service.
#   run_node_client.sh                      # against the node echo server (a self-check)
#   run_node_client.sh SERVER [ARGS...]     # against a server that takes --port 0 and prints LISTENING <port>
# Prints the client's lines and `N passed, M failed`; exits non-zero on any failure.
set -u
cd "$(dirname "$0")"
server=("$@")
[ ${#server[@]} -gt 0 ] || server=(node echo_server.js)
out=$(mktemp)
"${server[@]}" --port 0 >"$out" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null; rm -f "$out"' EXIT
for _ in $(seq 100); do grep -q '^LISTENING ' "$out" && break; sleep 0.1; done
port=$(awk '/^LISTENING /{print $2}' "$out")
[ -n "$port" ] || { echo "the server did not start: ${server[*]}"; echo "0 passed, 1 failed"; exit 1; }
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
