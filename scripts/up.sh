#!/usr/bin/env bash
# Runs everything on this machine: Temporal dev server (unless TEMPORAL_ADDRESS is
# given), the payment gateway simulator (unless PAYMENT_GATEWAY_URL is given), the
# workers of BAEDAL_CONTEXTS and the API with the web pages. Ctrl-C stops it all.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
trap stop_all EXIT
trap 'exit 130' INT TERM

mkdir -p data
log "building (release)"
cargo build --release --bins
ensure_temporal

temporal_ui="(external Temporal at ${TEMPORAL_ADDRESS:-}: see its own Web UI)"
if [ -z "${TEMPORAL_ADDRESS:-}" ]; then
  start_temporal_dev data/temporal.db 7233 8233
  temporal_ui=http://127.0.0.1:8233
fi
start_stack target/release

cat >&2 <<MSG

  baedal is up
    web app          http://$HTTP_ADDR/
    API docs         http://$HTTP_ADDR/api/docs
    Temporal Web UI  $temporal_ui
    payment gateway  $PAYMENT_GATEWAY_URL
  demo logins (password demo): customer1 customer2 owner1 owner2 rider1..rider${BAEDAL_DEMO_RIDERS:-6}
  Ctrl-C stops everything.

MSG
wait -n "${PIDS[@]}"
log "a process exited; stopping the rest"
