#!/usr/bin/env bash
# Runs a command beside a throwaway PostgreSQL 15 server, then stops the server and deletes it.
#
#   scripts/with-postgres.sh CMD [ARGS...]
#
# The server lives in a fresh temporary folder, listens on 127.0.0.1 at a free port and on a unix
# socket in that folder, and trusts every local connection. fsync stays on: the log store tests
# check durability across a crash. CMD runs with:
#   DTX_TEST_PG_URI   postgresql://postgres@127.0.0.1:PORT/dtx_test
#   DTX_TEST_PG_BIN   the PostgreSQL programs (pg_ctl, psql, ...)
#   DTX_TEST_PG_DATA  the data directory, so a crash test can stop and start the server with pg_ctl
#   DTX_TEST_PG_LOG   the server's log file (pass it to pg_ctl start -l)
#   DTX_TEST_PG_USER  the OS user the server runs as when it is not us (postgres when we are root,
#                     since PostgreSQL refuses to run as root), else empty
#   DTX_TEST_PG_SOCKET_DIR  the folder of the server's Unix-domain socket (.s.PGSQL.PORT)
# The script exits with CMD's status, and stops the server and removes the folder however it ends.
# DTX_PG_BIN overrides where the PostgreSQL programs are.
set -euo pipefail

if [ $# -eq 0 ]; then
  echo "usage: $0 CMD [ARGS...]" >&2
  exit 2
fi

bin=${DTX_PG_BIN:-/usr/lib/postgresql/15/bin}
if [ ! -x "$bin/pg_ctl" ]; then
  echo "with-postgres: no PostgreSQL in $bin (scripts/setup.sh installs Debian's postgresql)" >&2
  exit 2
fi

pg_user=""
as_pg=()
if [ "$(id -u)" -eq 0 ]; then
  pg_user=postgres
  as_pg=(runuser -u postgres --)
fi

dir=$(mktemp -d /tmp/dtx-pg.XXXXXX)
data=$dir/data
log=$dir/postgres.log
touch "$log"
if [ -n "$pg_user" ]; then chown "$pg_user:" "$dir" "$log"; fi

# Runs a PostgreSQL program as the server's user, from a folder that user may enter.
pg() { (cd "$dir" && "${as_pg[@]}" "$@"); }

cleanup() {
  if [ -f "$data/postmaster.pid" ]; then
    pg "$bin/pg_ctl" -D "$data" -m fast -w stop >/dev/null 2>&1 || true
  fi
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if ! pg "$bin/initdb" -D "$data" -U postgres -A trust -E UTF8 --locale=C --no-sync --no-instructions \
    >"$dir/initdb.log" 2>&1; then
  cat "$dir/initdb.log" >&2
  exit 1
fi

# Settings go into the configuration file so that they hold across a pg_ctl stop/start by a test.
cat >>"$data/postgresql.conf" <<EOF

# scripts/with-postgres.sh
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir'
fsync = on
synchronous_commit = on
shared_buffers = 16MB
max_connections = 200
wal_level = minimal
max_wal_senders = 0
log_min_messages = warning
log_line_prefix = '%m [%p] '
EOF

# A free port below the kernel's ephemeral range (where outgoing connections take theirs): one
# that nobody listens on; if another process takes it before the server binds, try another.
started=""
for _ in 1 2 3 4 5 6 7 8; do
  port=$((20000 + RANDOM % 12000))
  if [ -n "$(ss -Htan "sport = :$port" 2>/dev/null)" ]; then continue; fi
  echo "port = $port" >>"$data/postgresql.conf"
  if pg "$bin/pg_ctl" -D "$data" -l "$log" -w -t 60 start >>"$dir/pg_ctl.out" 2>&1; then
    started=1
    break
  fi
done
if [ -z "$started" ]; then
  echo "with-postgres: PostgreSQL did not start:" >&2
  cat "$dir/pg_ctl.out" "$log" >&2
  exit 1
fi

pg "$bin/createdb" -h "$dir" -p "$port" -U postgres dtx_test

export DTX_TEST_PG_URI="postgresql://postgres@127.0.0.1:$port/dtx_test"
export DTX_TEST_PG_BIN="$bin"
export DTX_TEST_PG_DATA="$data"
export DTX_TEST_PG_LOG="$log"
export DTX_TEST_PG_USER="$pg_user"
export DTX_TEST_PG_SOCKET_DIR="$dir"

set +e
"$@"
status=$?
set -e
exit "$status"
