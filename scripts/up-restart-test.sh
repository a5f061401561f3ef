#!/usr/bin/env bash
# Proves that `make up` can be stopped and started again at once, every time:
# ROUNDS rounds (default 8) of `make up`, /api/health, Temporal and NATS
# answering, every process still running a second later, NATS's streams (in
# data/nats) still there from the rounds before, then Ctrl-C (SIGINT to make's
# process group, as a terminal sends it) and the next `make up` straight away. Every fourth stop is a crash instead (SIGKILL to
# make and scripts/up.sh only, which leaves the servers running), so the next
# start has to stop what the killed run left behind. Ends with a Ctrl-C and
# checks that nothing is left: no process on the ports, data/temporal.db closed.
#
#   scripts/up-restart-test.sh [rounds]
#
# Uses ./data and the ports of `make up` (8080, 8090, 7233, 8233, 8422); refuses to
# start while something answers there. Builds the release binaries first
# (untimed). Logs: target/up-restart/.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

rounds=${1:-${ROUNDS:-8}}
api=http://127.0.0.1:8080
logs=target/up-restart
mkdir -p "$logs"
rm -f "$logs"/round-*.log
ensure_temporal
# make up's own NATS, on 8422 with its store in data/nats, is what is tested.
unset NATS_URL

temporal_up() {
  "$TEMPORAL_BIN" operator cluster health --address 127.0.0.1:7233 >/dev/null 2>&1
}
port_taken() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}
for port in 8080 8090 7233 8233 8422; do
  if port_taken "$port"; then log "port $port is in use: stop what runs there (make up?) first"; exit 1; fi
done

# Job control: each `make up` gets a process group of its own, with SIGINT handled
# as in a terminal (a script's background jobs would otherwise ignore it).
set -m
make_pid=
# Stops the current `make up` as Ctrl-C does and waits for make to return.
ctrl_c() {
  [ -n "$make_pid" ] || return 0
  kill -INT -- "-$make_pid" 2>/dev/null || true
  wait "$make_pid" 2>/dev/null || true
  make_pid=
}
# Kills make and scripts/up.sh at once, as a crash would; their servers live on.
crash() {
  kill -KILL "$make_pid" $(pgrep -P "$make_pid") 2>/dev/null || true
  wait "$make_pid" 2>/dev/null || true
  make_pid=
}
trap ctrl_c EXIT
trap 'exit 130' INT TERM

fail() {
  log "round $round: $*"
  tail -n 20 "$logs/round-$round.log" >&2 || true
  [ -f data/temporal.log ] && tail -n 5 data/temporal.log >&2
  [ -f data/nats.log ] && tail -n 5 data/nats.log >&2
  exit 1
}

# The JetStream streams in make up's store, one "account/streams/name" a line.
nats_streams() {
  (cd data/nats/jetstream 2>/dev/null && find . -mindepth 3 -maxdepth 3 -path './*/streams/*' -type d | sort) || true
}
streams_seen=

profile=${UP_PROFILE:-release}
log "building the $profile binaries"
build=(cargo build --bin baedal-api --bin baedal-worker --bin baedal-paysim)
[ "$profile" = release ] && build+=(--release)
"${build[@]}"

started=$SECONDS
for ((round = 1; round <= rounds; round++)); do
  t0=$(date +%s.%N)
  make up >"$logs/round-$round.log" 2>&1 &
  make_pid=$!
  # Generous: `make up` rebuilds first if a source changed meanwhile.
  limit=900
  deadline=$((SECONDS + limit))
  until grep -q "baedal is up" "$logs/round-$round.log" 2>/dev/null; do
    kill -0 "$make_pid" 2>/dev/null || fail "make up exited before the stack was up"
    [ $SECONDS -lt $deadline ] || fail "not up within ${limit}s"
    sleep 0.2
  done
  up_s=$(awk "BEGIN { print $(date +%s.%N) - $t0 }")
  code=$(curl -s -o /dev/null -w '%{http_code}' "$api/api/health" || true)
  [ "$code" = 200 ] || fail "/api/health answered $code"
  temporal_up || fail "Temporal does not answer"
  port_taken 8422 || fail "NATS does not answer on 8422"
  # A restart keeps the streams: every one an earlier round had is still there.
  streams_now=$(nats_streams)
  missing=$(comm -23 <(printf '%s\n' "$streams_seen" | sed '/^$/d') <(printf '%s\n' "$streams_now" | sed '/^$/d'))
  [ -z "$missing" ] || fail "NATS lost streams across the restart: $missing"
  streams_seen=$streams_now
  [ -s data/up.pids ] || fail "no data/up.pids"
  # Still there a moment later: a worker that dies on start fails the round.
  sleep 1
  while read -r pid name; do
    running "$pid" || fail "$name (pid $pid) exited"
  done <data/up.pids

  t1=$(date +%s.%N)
  if [ $((round % 4)) = 0 ] && [ "$round" -lt "$rounds" ]; then
    how=crash
    crash
  else
    how=ctrl-c
    ctrl_c
  fi
  stop_s=$(awk "BEGIN { print $(date +%s.%N) - $t1 }")
  printf '[up-restart] round %d/%d: up in %.1fs (health 200), stopped by %s in %.1fs\n' \
    "$round" "$rounds" "$up_s" "$how" "$stop_s" >&2
done

# After the last Ctrl-C nothing may be left running.
for port in 8080 8090 7233 8233 8422; do
  if port_taken "$port"; then log "port $port still in use after Ctrl-C"; exit 1; fi
done
if file_busy data/temporal.db; then log "data/temporal.db still open after Ctrl-C"; exit 1; fi
if [ -e data/up.pids ]; then log "data/up.pids left behind after Ctrl-C"; exit 1; fi
log "make up stopped and started again $rounds times in $((SECONDS - started)) s (NATS streams kept: $(printf '%s' "$streams_seen" | grep -c . || true))"
