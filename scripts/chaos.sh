#!/usr/bin/env bash
# The fault-injection run (figures in RELIABILITY.md). Starts a stack of its own
# — the Temporal dev server on a state file, NATS with JetStream (the order
# changes' broker; infrastructure like a database: never killed, but a crash of
# it counts as a breach), the payment gateway simulator, one API and one worker
# for every context — on ports of its own with short timeouts,
# and runs baedal-chaos against it: it drives a seeded mix of order lifecycles
# over HTTP while it SIGKILLs and restarts the worker, the API and the Temporal
# server, then checks the gateway's ledger, the read models and the notification
# feeds. Exits non-zero on any breach.
#
#   scripts/chaos.sh            full run on release binaries: 200 orders, the worker
#                               killed twice, the API once, Temporal restarted once
#   scripts/chaos.sh --short    ~36 orders on the debug binaries (`make test` builds
#                               them), each fault once; about two minutes
#
# Other arguments go to baedal-chaos: --seed N (the same seed, the same mix),
# --orders N, --concurrency N, --riders N, --worker-kills N, --api-kills N,
# --temporal-restarts N, --settle-s N. Process logs: target/chaos/logs/.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

short=0
riders=
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --short) short=1 ;;
    --riders) riders=$2; args+=("$1" "$2"); shift ;;
    --riders=*) riders=${1#--riders=}; args+=("$1") ;;
    *) args+=("$1") ;;
  esac
  shift
done

if [ $short = 1 ]; then
  profile=debug
  # Ports apart from `make up` (8080…), the browser test, the benchmark and a full chaos run.
  # Below the kernel's ephemeral range (32768-60999): no outgoing connection
  # can hold one of these ports when a restarted server binds it again.
  api_port=26080 paysim_port=26090 temporal_port=26233 ui_port=26234 nats_port=26422
  riders=${riders:-8}
  defaults=(--orders 36 --concurrency 5 --riders "$riders" --worker-kills 1 --api-kills 1
    --temporal-restarts 1 --settle-s 90)
  export CHAOS_OUT=${CHAOS_OUT:-target/chaos/short-summary.json}
else
  profile=release
  api_port=25080 paysim_port=25090 temporal_port=25233 ui_port=25234 nats_port=25422
  riders=${riders:-12}
  defaults=(--orders 200 --concurrency 8 --riders "$riders" --worker-kills 2 --api-kills 1
    --temporal-restarts 1 --settle-s 180)
  export CHAOS_OUT=${CHAOS_OUT:-target/chaos/summary.json}
fi

build=(cargo build --bins)
[ $profile = release ] && build+=(--release)
missing=0
for b in baedal-api baedal-worker baedal-paysim baedal-chaos; do
  [ -x "target/$profile/$b" ] || missing=1
done
if [ $profile = release ] || [ $missing = 1 ]; then
  log "building ($profile)"
  "${build[@]}"
fi
for b in baedal-api baedal-worker baedal-paysim baedal-chaos; do
  [ -x "target/$profile/$b" ] || { log "target/$profile/$b is missing: build the $profile binaries first"; exit 1; }
done
ensure_temporal

data=$(mktemp -d)
trap 'stop_all; rm -rf "$data"' EXIT
trap 'exit 130' INT TERM

# The run's own copy of the binaries: a rebuild elsewhere during the run must not
# change what a restarted process runs.
mkdir -p "$data/bin" "$data/db" target/chaos/logs
for b in baedal-api baedal-worker baedal-paysim baedal-chaos; do cp "target/$profile/$b" "$data/bin/"; done
bin=$data/bin
export CHAOS_LOGS=target/chaos/logs
rm -f "$CHAOS_LOGS"/*.log

export DATABASE_URL="sqlite:$data/db"
export HTTP_ADDR=127.0.0.1:$api_port PAYSIM_ADDR=127.0.0.1:$paysim_port
# Its own servers, whatever the environment names: with the default task queue
# prefix, a shared NATS would mix this run's streams with another stack's.
unset PAYMENT_GATEWAY_URL BAEDAL_CONTEXTS BAEDAL_TASK_QUEUE_PREFIX NATS_URL
export RUST_LOG=${RUST_LOG:-warn}
export BAEDAL_DEMO=1 BAEDAL_DEMO_RIDERS=$riders
# Two customers place every order of the run: no per-customer limit.
export ORDERS_PER_CUSTOMER=10000000
export SHOP_ACCEPT_TIMEOUT=4s RIDER_OFFER_TIMEOUT=6s RIDER_SEARCH_TIMEOUT=20s RIDER_STALE_AFTER=30m
# The payment reconciliation runs during the run too, and must leave live orders alone.
export RECONCILE_INTERVAL=15s RECONCILE_MIN_AGE=20s

# The Temporal server keeps its state in a file, so a restart on the same port resumes it.
start_temporal_dev "$data/temporal.db" "$temporal_port" "$ui_port" headless
temporal_pid=${PIDS[-1]}
# The streams live in a directory, so a NATS started again there would resume them;
# the run does not kill it, but watches it like every other process.
start_nats "$nats_port" "$data/nats" "$CHAOS_LOGS/nats.log"
start_stack "$bin" >>"$CHAOS_LOGS/stack.log" 2>&1
export CHAOS_URL=http://$HTTP_ADDR CHAOS_PAYSIM_URL=$PAYMENT_GATEWAY_URL
export CHAOS_PIDS="temporal=$temporal_pid,api=$API_PID,worker=$WORKER_PID,paysim=$PAYSIM_PID,nats=$NATS_PID"
# The run kills these on purpose: no "Killed" job notices for them.
disown "$temporal_pid" "$API_PID" "$WORKER_PID" 2>/dev/null || true

log "chaos run ($profile): ${defaults[*]} ${args[*]:-}"
"$bin/baedal-chaos" "${defaults[@]}" "${args[@]}"
