#!/usr/bin/env bash
# Runs the web app's browser test (headless Chromium) against a stack of debug
# binaries with its own dev server, data directory and ports.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
trap stop_all EXIT
ensure_temporal
ensure_browser_deps
data=$(mktemp -d)
export DATABASE_URL="sqlite:$data"
export HTTP_ADDR=127.0.0.1:18080 PAYSIM_ADDR=127.0.0.1:18090
unset PAYMENT_GATEWAY_URL BAEDAL_CONTEXTS NATS_URL
export RUST_LOG=${RUST_LOG:-warn}
export BAEDAL_DEMO=1
export SHOP_ACCEPT_TIMEOUT=60s RIDER_OFFER_TIMEOUT=20s RIDER_SEARCH_TIMEOUT=60s
start_temporal_dev - 17233 18233 headless
start_nats 18422 "$data/nats"
start_stack target/debug
mkdir -p target/screenshots
(cd tests/browser && BAEDAL_URL="http://$HTTP_ADDR" node --test flow.test.mjs)
rm -rf "$data"
