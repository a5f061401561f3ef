#!/usr/bin/env bash
# The benchmark (figures in BENCHMARKS.md). Starts its own stack of release
# binaries with test-sized timeouts on ports of its own, drives it with
# target/release/baedal-bench and writes target/bench/summary.json.
#
#   scripts/bench.sh            full run (BENCH_ORDERS=500, BENCH_CONCURRENCY=32)
#   scripts/bench.sh --smoke    a short run on the debug binaries `make test` built;
#                               ends by checking target/bench/smoke-summary.json
#
# BENCH_URL=http://host:port drives a stack that is already running instead
# (then TEMPORAL_ADDRESS and PAYMENT_GATEWAY_URL must point at its Temporal and
# payment gateway, and it must seed at least BENCH_RIDERS riders); per-process
# CPU and memory are not measured then.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

smoke=0
case "${1:-}" in
  --smoke) smoke=1 ;;
  "") ;;
  *) log "usage: scripts/bench.sh [--smoke]"; exit 2 ;;
esac

data=$(mktemp -d)
trap 'stop_all; rm -rf "$data"' EXIT
trap 'exit 130' INT TERM

if [ $smoke = 1 ]; then
  profile=debug
  # Ports apart from `make up` (8080…), the browser test (18080…) and a full bench run.
  # Below the kernel's ephemeral range (32768-60999), so no outgoing connection
  # can hold one of these ports when a server binds it.
  api_port=29080 paysim_port=29090 temporal_port=29233 ui_port=29234 nats_port=29422
  export BENCH_ORDERS=${BENCH_ORDERS:-20} BENCH_CONCURRENCY=${BENCH_CONCURRENCY:-4}
  export BENCH_CEILING_S=${BENCH_CEILING_S:-2} BENCH_WRK_S=${BENCH_WRK_S:-1}
  export BENCH_ORDER_TIMEOUT_S=${BENCH_ORDER_TIMEOUT_S:-120} BENCH_DEADLINE_S=${BENCH_DEADLINE_S:-300}
  export BENCH_OUT=${BENCH_OUT:-target/bench/smoke-summary.json} BENCH_SMOKE=1
else
  profile=release
  api_port=28080 paysim_port=28090 temporal_port=27233 ui_port=28233 nats_port=28422
  export BENCH_OUT=${BENCH_OUT:-target/bench/summary.json}
  log "building (release)"
  cargo build --release --bins
fi
bin=target/$profile
for b in baedal-api baedal-worker baedal-paysim baedal-bench; do
  [ -x "$bin/$b" ] || { log "$bin/$b is missing: build the $profile binaries first"; exit 1; }
done
ensure_wrk

concurrency=${BENCH_CONCURRENCY:-32}
export BENCH_RIDERS=${BENCH_RIDERS:-$((concurrency * 2))}

if [ -z "${BENCH_URL:-}" ]; then
  ensure_temporal
  export DATABASE_URL="sqlite:$data"
  export HTTP_ADDR=127.0.0.1:$api_port PAYSIM_ADDR=127.0.0.1:$paysim_port
  # Its own servers, whatever the environment names (as for the payment gateway).
  unset PAYMENT_GATEWAY_URL BAEDAL_CONTEXTS NATS_URL
  export RUST_LOG=${RUST_LOG:-warn}
  export SHOP_ACCEPT_TIMEOUT=60s RIDER_OFFER_TIMEOUT=20s RIDER_SEARCH_TIMEOUT=60s
  export BAEDAL_DEMO=1
  # The benchmark orders far faster than any customer: no per-customer limit.
  export ORDERS_PER_CUSTOMER=10000000
  export BAEDAL_DEMO_RIDERS=$BENCH_RIDERS
  start_temporal_dev - "$temporal_port" "$ui_port" headless
  temporal_pid=${PIDS[-1]}
  start_nats "$nats_port" "$data/nats"
  start_stack "$bin"
  export BENCH_URL=http://$HTTP_ADDR BENCH_PAYSIM_URL=$PAYMENT_GATEWAY_URL
  export BENCH_PIDS="api=$API_PID,workers=$WORKER_PID,temporal=$temporal_pid,paysim=$PAYSIM_PID,nats=$NATS_PID"
else
  : "${TEMPORAL_ADDRESS:?BENCH_URL needs TEMPORAL_ADDRESS}"
  : "${PAYMENT_GATEWAY_URL:?BENCH_URL needs PAYMENT_GATEWAY_URL}"
fi

log "benchmark: ${BENCH_ORDERS:-500} orders at concurrency $concurrency, $BENCH_RIDERS riders ($profile)"
"$bin/baedal-bench"
if [ $smoke = 1 ]; then
  "$bin/baedal-bench" check "$BENCH_OUT"
fi
