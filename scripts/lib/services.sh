# Start-up of the services the bench and example scripts run on loopback: a throwaway
# PostgreSQL, dtx-coordinator, dtx-sql-proxy and other programs that print "LISTENING <port>",
# with one cleanup that stops them all and removes the scratch folder however the script ends.
# Sourced, not run:
#
#   . "$repo/scripts/lib/services.sh"
#   svc_init my_script                       # SVC_DIR, the EXIT trap; error messages say "my_script:"
#   start_postgres "$SVC_DIR" "shared_buffers = 256MB" ...   # PG_PORT, PG_DATA (extra conf lines)
#   start_coordinator "$build/bin/dtx-coordinator" --admin 127.0.0.1:0   # TC_ADDR, TC_PORT, TC_PID, TC_ADMIN
#   start_proxy "$SVC_DIR/proxy.out" "$build/bin/dtx-sql-proxy" --server ...  # port, SVC_LAST_PID
#   start_pgbouncer "$SVC_DIR" 127.0.0.1 "$PG_PORT"  # pgbouncer in session mode: BOUNCER_PORT, BOUNCER_PID
#
# Everything a function starts is killed at exit (SVC_PIDS), then svc_cleanup_hook runs if the
# script defines it, then PostgreSQL is stopped and SVC_DIR removed. When we are root,
# PostgreSQL's programs run as the postgres user (PostgreSQL refuses root), as
# scripts/with-postgres.sh does. DTX_PG_BIN overrides where PostgreSQL's programs are.

SVC_NAME=${SVC_NAME:-services}
SVC_DIR=""
SVC_PIDS=()
SVC_LAST_PID=""
PG_BIN=${DTX_PG_BIN:-/usr/lib/postgresql/15/bin}
PG_PORT=""
PG_DATA=""
PG_OWNER=""
svc_as_pg=()
if [ "$(id -u)" -eq 0 ]; then
  PG_OWNER=postgres
  svc_as_pg=(runuser -u postgres --)
fi

# svc_init NAME [TEMPLATE]: a fresh scratch folder (owned by the PostgreSQL user when we are
# root, so that the server may live in it) and the EXIT trap.
svc_init() {
  SVC_NAME=$1
  SVC_DIR=$(mktemp -d "/tmp/${2:-dtx-$1}.XXXXXX")
  [ -z "$PG_OWNER" ] || chown "$PG_OWNER:" "$SVC_DIR"
  trap svc_cleanup EXIT
}

svc_cleanup() {
  local p
  for p in "${SVC_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${SVC_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  if declare -F svc_cleanup_hook >/dev/null; then svc_cleanup_hook || true; fi
  if [ -n "$PG_DATA" ] && [ -f "$PG_DATA/postmaster.pid" ]; then
    run_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w stop >/dev/null 2>&1 || true
  fi
  [ -z "$SVC_DIR" ] || rm -rf "$SVC_DIR"
}

# A TCP port free on 127.0.0.1 now.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Runs a PostgreSQL program as the server's user, from a folder that user may enter.
run_pg() { (cd "$SVC_DIR" && "${svc_as_pg[@]}" "$@"); }

# wait_for_port HOST PORT [SECONDS]: until something accepts connections there (default 5 s).
wait_for_port() {
  local i tries=$(( ${3:-5} * 10 ))
  for ((i = 0; i < tries; i++)); do
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "$SVC_NAME: nothing listens on $1:$2" >&2
  return 1
}

# start_postgres DIR [CONF_LINE...]: initdb in DIR/data and start the server on 127.0.0.1 at a
# free port (unix socket in SVC_DIR), with the conf lines appended; sets PG_PORT and PG_DATA.
start_postgres() {
  local dir=$1 line
  shift
  PG_DATA=$dir/data
  PG_PORT=$(free_port)
  run_pg "$PG_BIN/initdb" -D "$PG_DATA" -U postgres -A trust -E UTF8 --locale=C --no-sync >/dev/null
  {
    echo "listen_addresses = '127.0.0.1'"
    echo "port = $PG_PORT"
    echo "unix_socket_directories = '$SVC_DIR'"
    for line in "$@"; do echo "$line"; done
  } >>"$PG_DATA/postgresql.conf"
  run_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$dir/postgres.log" -w start >/dev/null
}

# start_listening OUT CMD [ARGS...]: runs CMD in the background (stdout to OUT, stderr to
# SVC_DIR/stderr.log) until its stdout says "LISTENING <port>"; sets port and SVC_LAST_PID.
start_listening() {
  local out=$1 i
  shift
  : >"$out"
  "$@" >"$out" 2>>"$SVC_DIR/stderr.log" &
  SVC_LAST_PID=$!
  SVC_PIDS+=("$SVC_LAST_PID")
  for i in $(seq 1 200); do
    port=$(sed -n 's/^LISTENING \([0-9]*\)$/\1/p' "$out" | head -1)
    [ -n "$port" ] && return 0
    kill -0 "$SVC_LAST_PID" 2>/dev/null || break
    sleep 0.05
  done
  echo "$SVC_NAME: $out did not start:" >&2
  cat "$SVC_DIR/stderr.log" >&2
  exit 1
}

# wait_for_line FILE PREFIX: the rest of FILE's first line "PREFIX<rest>" (5 s at most).
wait_for_line() {
  local i value
  for i in $(seq 1 100); do
    value=$(sed -n "s/^$2\\(.*\\)\$/\\1/p" "$1" | head -1)
    [ -z "$value" ] || break
    sleep 0.05
  done
  echo "$value"
}

# start_coordinator BIN [FLAGS...]: dtx-coordinator on a free port with its data in SVC_DIR/tc;
# FLAGS add to or override --log-level warn (pass --admin 127.0.0.1:0 for its admin API, or
# --admin "" for none). Sets TC_ADDR, TC_PORT, TC_PID and TC_ADMIN (the admin port, or empty).
start_coordinator() {
  local bin=$1
  shift
  start_listening "$SVC_DIR/tc.out" "$bin" --port 0 --data-dir "$SVC_DIR/tc" --log-level warn "$@"
  TC_PORT=$port
  TC_ADDR=127.0.0.1:$port
  TC_PID=$SVC_LAST_PID
  TC_ADMIN=""
  if grep -q '^ADMIN ' "$SVC_DIR/tc.out" || [[ " $* " == *" --admin 127."* ]]; then
    TC_ADMIN=$(wait_for_line "$SVC_DIR/tc.out" "ADMIN ")
  fi
}

# start_proxy OUT BIN [FLAGS...]: dtx-sql-proxy on a free port; sets port and SVC_LAST_PID.
start_proxy() {
  local out=$1
  shift
  start_listening "$out" "$1" --port 0 "${@:2}"
}

# start_pgbouncer DIR SERVER_HOST SERVER_PORT: Debian's pgbouncer in session mode (one server
# connection per client, as dtx-sql-proxy), auth_type trust, listening on 127.0.0.1 at a free
# port, its files in DIR; run as the PostgreSQL user when we are root. SERVER_HOST may be a socket
# folder. BOUNCER_EXTRA: more lines for its [pgbouncer] section. Sets BOUNCER_PORT and BOUNCER_PID
# (stopped at exit).
start_pgbouncer() {
  local dir=$1 bin
  bin=$(command -v pgbouncer || echo /usr/sbin/pgbouncer)
  [ -x "$bin" ] || { echo "$SVC_NAME: pgbouncer is not installed" >&2; exit 2; }
  BOUNCER_PORT=$(free_port)
  cat >"$dir/pgbouncer.ini" <<CONF
[databases]
postgres = host=$2 port=$3 dbname=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BOUNCER_PORT
unix_socket_dir =
auth_type = trust
auth_file = $dir/userlist.txt
pool_mode = session
max_client_conn = 100
default_pool_size = 20
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
${BOUNCER_EXTRA:-}
CONF
  echo '"postgres" ""' >"$dir/userlist.txt"
  [ -z "$PG_OWNER" ] || chown "$PG_OWNER:" "$dir/pgbouncer.ini" "$dir/userlist.txt"
  run_pg "$bin" -q "$dir/pgbouncer.ini" </dev/null >/dev/null 2>&1 &
  SVC_PIDS+=("$!")
  wait_for_port 127.0.0.1 "$BOUNCER_PORT" || true
  BOUNCER_PID=$(cat "$dir/pgbouncer.pid" 2>/dev/null || echo "")
}

# cpu_layout: the benchmarks' CPUS setting, checked and printed (shared, the default, or split).
# With split it pins the calling shell to cpu 0, so that what it starts afterwards (PostgreSQL,
# pgbench) runs there; the caller pins its own services to cpu 1.
cpu_layout() {
  case ${CPUS:-shared} in
    shared) ;;
    split) [ "$(nproc)" -ge 2 ] || { echo "CPUS=split needs 2 cores" >&2; exit 2; }
      taskset -pc 0 $$ >/dev/null ;;
    *) echo "CPUS is shared or split" >&2; exit 2 ;;
  esac
  echo "${CPUS:-shared}"
}
