#!/usr/bin/env bash
# The benchmark (figures in BENCHMARKS.md). Starts its own stack of release
# binaries with test-sized timeouts on ports of its own, drives it with
# target/release/baedal-bench and writes target/bench/summary.json.
#
#   scripts/bench.sh            full run (BENCH_ORDERS=500, BENCH_CONCURRENCY=32)
#   scripts/bench.sh --smoke    a short run on the debug binaries `make test` built;
#                               ends by checking target/bench/smoke-summary.json
#
# After the order lifecycles (one process only), the same stack serves the
# live-updates run: `baedal-bench streams` opens BENCH_STREAMS event streams
# (10,000; the smoke run 200) over BENCH_STREAM_ORDERS orders on the one API,
# idles them, changes every order and times each change to every stream
# (target/bench/streams.json). The full run then measures the nearest-rider
# search with `baedal-bench dispatch` (target/bench/dispatch.json).
#
# BENCH_TOPOLOGY=scaled: the same on the scaled topology instead of one API and
# one worker for every context: Postgres (a fresh database, one schema per
# context), two baedal-api and two baedal-worker per context, each a process of
# its own; the driver spreads its calls over both APIs and, midway, SIGKILLs
# one API and one worker of each context, then runs the chaos run's checks and
# shows which process served what (target/bench/scaled-summary.json; the smoke
# run: 36 orders, target/bench/scaled-smoke-summary.json). The admin URL of
# the Postgres server: BENCH_POSTGRES_URL, else BAEDAL_TEST_POSTGRES_URL, else
# postgres://postgres@127.0.0.1:5432/test.
#
# BENCH_BIN=<dir> runs the binaries in that directory instead of building
# (baedal-api, baedal-worker, baedal-paysim, baedal-bench): a before and an
# after kept aside can then be measured back to back.
#
# BENCH_ONLY=lifecycles stops after the lifecycles (with the ceiling, place
# overhead and read paths): for comparing changes to the order's cost.
#
# BENCH_URL=http://host:port drives a stack that is already running instead
# (then TEMPORAL_ADDRESS and PAYMENT_GATEWAY_URL must point at its Temporal and
# payment gateway, and it must seed at least BENCH_RIDERS riders); per-process
# CPU and memory are not measured then. Not with BENCH_TOPOLOGY=scaled.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

smoke=0
case "${1:-}" in
  --smoke) smoke=1 ;;
  "") ;;
  *) log "usage: scripts/bench.sh [--smoke]"; exit 2 ;;
esac

topology=${BENCH_TOPOLOGY:-single}
case "$topology" in
  single) out=summary ;;
  scaled) out=scaled-summary
    if [ -n "${BENCH_URL:-}" ]; then log "BENCH_TOPOLOGY=scaled starts its own stack: unset BENCH_URL"; exit 2; fi ;;
  *) log "BENCH_TOPOLOGY=$topology: expected single or scaled"; exit 2 ;;
esac
export BENCH_TOPOLOGY=$topology

data=$(mktemp -d)
pg_admin= pg_db= pg_dir= pg_pid=
trap 'stop_all; if [ -n "$pg_db" ]; then drop_database "$pg_admin" "$pg_db"; fi
  stop_postgres_cluster; rm -rf "$data" ${pg_dir:+"$pg_dir"}' EXIT
trap 'exit 130' INT TERM

if [ $smoke = 1 ]; then
  profile=debug
  # Ports apart from `make up` (8080…), the browser test (18080…) and a full bench run.
  # Below the kernel's ephemeral range (32768-60999), so no outgoing connection
  # can hold one of these ports when a server binds it.
  api_port=29080 paysim_port=29090 temporal_port=29233 ui_port=29234 nats_port=29422
  if [ "$topology" = scaled ]; then
    api_port=29180 paysim_port=29190 temporal_port=29333 ui_port=29334 nats_port=29522
    metrics_port=29140 pg_port=29532
    export BENCH_ORDERS=${BENCH_ORDERS:-36} BENCH_CONCURRENCY=${BENCH_CONCURRENCY:-6}
  fi
  export BENCH_ORDERS=${BENCH_ORDERS:-20} BENCH_CONCURRENCY=${BENCH_CONCURRENCY:-4}
  export BENCH_CEILING_S=${BENCH_CEILING_S:-2} BENCH_WRK_S=${BENCH_WRK_S:-1}
  export BENCH_ORDER_TIMEOUT_S=${BENCH_ORDER_TIMEOUT_S:-120} BENCH_DEADLINE_S=${BENCH_DEADLINE_S:-300}
  export BENCH_OUT=${BENCH_OUT:-target/bench/${out/summary/smoke-summary}.json} BENCH_SMOKE=1
else
  profile=release
  api_port=28080 paysim_port=28090 temporal_port=27233 ui_port=28233 nats_port=28422
  if [ "$topology" = scaled ]; then
    api_port=28180 paysim_port=28190 temporal_port=27333 ui_port=28334 nats_port=28522
    metrics_port=28140 pg_port=28532
  fi
  export BENCH_OUT=${BENCH_OUT:-target/bench/$out.json}
  if [ -z "${BENCH_BIN:-}" ]; then
    log "building (release)"
    cargo build --release --bins
  fi
fi
bin=${BENCH_BIN:-target/$profile}
for b in baedal-api baedal-worker baedal-paysim baedal-bench; do
  [ -x "$bin/$b" ] || { log "$bin/$b is missing: build the $profile binaries first"; exit 1; }
done
ensure_wrk

concurrency=${BENCH_CONCURRENCY:-32}
if [ $smoke = 1 ]; then
  export BENCH_STREAMS=${BENCH_STREAMS:-200} BENCH_STREAM_ORDERS=${BENCH_STREAM_ORDERS:-20}
  export BENCH_STREAMS_IDLE_S=${BENCH_STREAMS_IDLE_S:-2}
  export BENCH_STREAMS_OUT=${BENCH_STREAMS_OUT:-target/bench/smoke-streams.json}
fi
export BENCH_STREAMS=${BENCH_STREAMS:-10000} BENCH_STREAMS_OUT=${BENCH_STREAMS_OUT:-target/bench/streams.json}
# One descriptor per stream in the driver and in the API, and some to spare.
fds=$(ulimit -Hn)
if [ "$fds" != unlimited ]; then
  ulimit -n "$fds"
  if [ "$BENCH_STREAMS" -gt $((fds - 1000)) ]; then
    log "this shell allows $fds open files per process: BENCH_STREAMS lowered from $BENCH_STREAMS to $((fds - 1000))"
    export BENCH_STREAMS=$((fds - 1000))
  fi
fi
export BENCH_RIDERS=${BENCH_RIDERS:-$((concurrency * 2))}

if [ -z "${BENCH_URL:-}" ]; then
  ensure_temporal
  export DATABASE_URL="sqlite:$data"
  export HTTP_ADDR=127.0.0.1:$api_port PAYSIM_ADDR=127.0.0.1:$paysim_port
  # Its own servers, whatever the environment names (as for the payment gateway).
  unset PAYMENT_GATEWAY_URL BAEDAL_CONTEXTS NATS_URL BAEDAL_TASK_QUEUE_PREFIX METRICS_ADDR
  export RUST_LOG=${RUST_LOG:-warn}
  export RIDER_OFFER_TIMEOUT=20s RIDER_SEARCH_TIMEOUT=60s
  # The driver reports its riders' positions once, at the start.
  export RIDER_STALE_AFTER=2h
  # The live-updates run keeps its orders waiting for the owner while it
  # opens its streams and idles them; and it opens up to 10,000 streams, as
  # two customers, on one API.
  export SHOP_ACCEPT_TIMEOUT=10m SSE_STREAMS_PER_USER=10000 SSE_STREAMS_MAX=20000
  export BAEDAL_DEMO=1
  # The benchmark orders far faster than any customer: no per-customer limit.
  export ORDERS_PER_CUSTOMER=10000000
  export BAEDAL_DEMO_RIDERS=$BENCH_RIDERS
  start_temporal_dev - "$temporal_port" "$ui_port" headless
  temporal_pid=${PIDS[-1]}
  start_nats "$nats_port" "$data/nats"
  if [ "$topology" = scaled ]; then
    ensure_psql
    pg_admin=${BENCH_POSTGRES_URL:-${BAEDAL_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}}
    # Each API holds a pool of up to 10 connections per store (6 stores), each
    # worker one of 10: up to 220 connections under the full run's load. The
    # smoke run's stayed below 80. A server that allows fewer (Postgres'
    # default is 100) is left alone, and a server of its own is started.
    need=250
    [ $smoke = 1 ] && need=100
    max=$("$PSQL_BIN" -Atq "$pg_admin" -c "SHOW max_connections") ||
      { log "cannot reach Postgres at $pg_admin (set BENCH_POSTGRES_URL)"; exit 1; }
    if [ "$max" -lt "$need" ]; then
      if [ -n "${BENCH_POSTGRES_URL:-}" ]; then
        log "$pg_admin allows $max connections; the scaled topology needs up to $need here"; exit 1
      fi
      log "$pg_admin allows $max connections, fewer than the $need the scaled topology may open: starting a Postgres server of its own on 127.0.0.1:$pg_port (max_connections=300)"
      pg_dir=$(mktemp -d)
      start_postgres_cluster "$pg_dir" "$pg_port" 300
      pg_admin=postgres://postgres@127.0.0.1:$pg_port/postgres
      # Its own server: its CPU and memory are measured like the stack's.
      pg_pid=$(head -1 "$pg_dir/data/postmaster.pid")
    fi
    drop_stale_databases "$pg_admin" baedal_bench_p
    pg_db=baedal_bench_p$$
    DATABASE_URL=$(create_database "$pg_admin" "$pg_db")
    # Every process of the deployment reads the same keys.
    export DATABASE_URL PAYLOAD_KEY_FILE=$data/payload.key AUTH_SIGNING_KEY_FILE=$data/auth-signing.key
    # The payment reconciliation runs during the run (as in the chaos run):
    # a charge whose order was never established is refunded before the checks.
    export RECONCILE_INTERVAL=15s RECONCILE_MIN_AGE=20s
    logs=target/bench/${out%summary}logs
    [ $smoke = 1 ] && logs=target/bench/${out%summary}smoke-logs
    rm -rf "$logs"
    log "scaled topology on Postgres (${DATABASE_URL%%@*}@…/$pg_db): 2 APIs, 2 workers per context; logs in $logs"
    start_scaled_stack "$bin" "$api_port" "$metrics_port" "$logs"
    export BENCH_URLS=$SCALED_URLS BENCH_PAYSIM_URL=$PAYMENT_GATEWAY_URL
    export BENCH_WORKER_METRICS=$SCALED_METRICS
    export BENCH_PIDS="$SCALED_PIDS,temporal=$temporal_pid,paysim=$PAYSIM_PID,nats=$NATS_PID${pg_pid:+,postgres=$pg_pid}"
    # The run kills some of these on purpose: no "Killed" job notices for them.
    for p in $(tr ',' '\n' <<<"$SCALED_PIDS" | cut -d= -f2); do disown "$p" 2>/dev/null || true; done
  else
    start_stack "$bin"
    export BENCH_URL=http://$HTTP_ADDR BENCH_PAYSIM_URL=$PAYMENT_GATEWAY_URL
    export BENCH_PIDS="api=$API_PID,workers=$WORKER_PID,temporal=$temporal_pid,paysim=$PAYSIM_PID,nats=$NATS_PID"
  fi
else
  : "${TEMPORAL_ADDRESS:?BENCH_URL needs TEMPORAL_ADDRESS}"
  : "${PAYMENT_GATEWAY_URL:?BENCH_URL needs PAYMENT_GATEWAY_URL}"
fi

log "benchmark: ${BENCH_ORDERS:-500} orders at concurrency $concurrency, $BENCH_RIDERS riders ($profile, topology $topology)"
"$bin/baedal-bench"
if [ $smoke = 1 ]; then
  "$bin/baedal-bench" check "$BENCH_OUT"
fi
only=${BENCH_ONLY:-}
case "$only" in
  ""|lifecycles) ;;
  *) log "BENCH_ONLY=$only: expected lifecycles (or unset)"; exit 2 ;;
esac
if [ "$topology" = single ] && [ -z "$only" ]; then
  log "live updates: $BENCH_STREAMS event streams on one API"
  "$bin/baedal-bench" streams >/dev/null
  if [ $smoke = 1 ]; then
    "$bin/baedal-bench" check-streams "$BENCH_STREAMS_OUT"
  else
    log "live updates: $BENCH_STREAMS_OUT"
  fi
fi
if [ $smoke = 0 ] && [ "$topology" = single ] && [ -z "$only" ]; then
  stop_all
  trap 'exit 130' INT TERM
  log "dispatch: the nearest-rider search with 1,000 / 10,000 / 100,000 riders"
  "$bin/baedal-bench" dispatch >/dev/null
  log "dispatch: ${BENCH_DISPATCH_OUT:-target/bench/dispatch.json}"
fi
