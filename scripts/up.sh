#!/usr/bin/env bash
# Runs everything on this machine: Temporal dev server (unless TEMPORAL_ADDRESS is
# given), NATS with JetStream for the order changes (unless NATS_URL is given; on
# 127.0.0.1:8422, its streams in data/nats), the payment gateway simulator (unless
# PAYMENT_GATEWAY_URL is given), the workers of BAEDAL_CONTEXTS and the API with
# the web pages. Ctrl-C stops it all and returns once every process has exited,
# so `make up` can start again at once.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

mkdir -p data
# What this run started, one "pid program" a line: if the run is killed before it
# can stop them, the next run stops them (stop_leftovers).
PID_FILE=data/up.pids

stop_up() {
  trap '' INT TERM HUP
  # The API and the worker first, then the servers they talk to (NATS, Temporal).
  local apps=() pid
  for pid in "${API_PID:-}" "${WORKER_PID:-}" "${PAYSIM_PID:-}"; do
    if [ -n "$pid" ]; then apps+=("$pid"); fi
  done
  if [ ${#apps[@]} -gt 0 ]; then stop_pids "${apps[@]}"; fi
  stop_all
  if [ "$holds_lock" = 1 ]; then rm -f "$PID_FILE"; fi
}
holds_lock=0
trap stop_up EXIT
trap 'exit 130' INT TERM HUP

# One run at a time on ./data. A run that is still stopping holds the lock until
# its processes are gone; the processes themselves never hold it (spawn closes
# it), so a run killed outright frees it and leaves the rest to stop_leftovers.
exec 9>data/up.lock
if command -v flock >/dev/null && ! flock -n 9; then
  log "waiting for the previous run to stop"
  if ! flock -w 60 9; then
    log "another 'make up' is running on ./data (pids: $(tr '\n' ' ' <"$PID_FILE" 2>/dev/null)); stop it first"
    exit 1
  fi
fi
holds_lock=1
stop_leftovers "$PID_FILE"

# The debug profile by default: the one `make test` builds too, so neither
# compiles the workspace again after the other (password hashing is optimised
# in it; see Cargo.toml). UP_PROFILE=release runs the release binaries, as the
# benchmark and the chaos run do.
profile=${UP_PROFILE:-debug}
log "building ($profile)"
if [ "$profile" = release ]; then
  # Only what runs here: the benchmark and chaos tools have their own scripts.
  build=(cargo build --release --bin baedal-api --bin baedal-worker --bin baedal-paysim)
else
  # Exactly what `make test` builds first: built with the tests' dependencies
  # and features once, the workspace is not compiled again by `make test`.
  build=(cargo build --workspace --bins --tests)
fi
"${build[@]}"
ensure_temporal

# The demo accounts, shops and riders (BAEDAL_DEMO=0 starts with none).
export BAEDAL_DEMO=${BAEDAL_DEMO:-1}

temporal_ui="(external Temporal at ${TEMPORAL_ADDRESS:-}: see its own Web UI)"
if [ -z "${TEMPORAL_ADDRESS:-}" ]; then
  # Payloads rest sealed in Temporal; the UI reads them through the gateway.
  export TEMPORAL_UI_CODEC_ENDPOINT=${TEMPORAL_UI_CODEC_ENDPOINT:-http://${HTTP_ADDR:-127.0.0.1:8080}/api/codec}
  start_temporal_dev data/temporal.db 7233 8233
  temporal_ui=http://127.0.0.1:8233
fi
# The order changes' stream lives in data/nats: kept across restarts like the rest of ./data.
start_nats 8422 data/nats data/nats.log
start_stack "target/$profile"

cat >&2 <<MSG

  baedal is up
    web app          http://$HTTP_ADDR/
    API docs         http://$HTTP_ADDR/api/docs
    Temporal Web UI  $temporal_ui
    payment gateway  $PAYMENT_GATEWAY_URL
    NATS (JetStream) $NATS_URL
$(if [ "$BAEDAL_DEMO" = 1 ]; then echo "  demo logins (password demo): customer1 customer2 owner1 owner2 rider1..rider${BAEDAL_DEMO_RIDERS:-6}"; fi)
  Ctrl-C stops everything.

MSG
status=0
wait -n "${PIDS[@]}" || status=$?
log "a process exited (status $status); stopping the rest"
exit $((status == 0 ? 1 : status))
