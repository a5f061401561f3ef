#!/usr/bin/env bash
# Provisions what the tests need (Temporal CLI, nats-server, Chromium,
# playwright-core, wrk, schemathesis, psql)
# and runs every test: unit, end-to-end against real Temporal dev servers, replay,
# make up's restart loop, a short chaos run, an API fuzz run, browser, and the
# benchmark's smoke runs (one process for everything; the scaled topology).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
started=$SECONDS
cargo --version; rustc --version; node --version; python3 --version

ensure_temporal
# Exports NATS_SERVER_BIN: the harness (tests/src/lib.rs) starts that binary for
# each test binary's JetStream server, unless NATS_URL names one.
ensure_nats
ensure_browser_deps
ensure_wrk
ensure_schemathesis
ensure_psql
export BAEDAL_TEST_POSTGRES_URL=${BAEDAL_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}
export RUST_BACKTRACE=1

log "compose file: docker-compose accepts it, and every variable it sets is one a binary reads"
bash scripts/compose-check.sh
# The check must refuse a variable no binary reads.
bogus=$(mktemp --suffix=.yml)
sed 's/^      RECONCILE_MIN_AGE: 2m$/&\n      RECONCILE_EVERY: 5m/' temporal-compose.yml > "$bogus"
if bash scripts/compose-check.sh "$bogus" >/dev/null 2>&1; then
  log "compose-check accepted RECONCILE_EVERY, which no binary reads"; rm -f "$bogus"; exit 1
fi
rm -f "$bogus"

log "building"
cargo build --workspace --bins --tests
mkdir -p target
log "running the Rust tests"
cargo test --workspace --no-fail-fast -- --test-threads=2 2>&1 | tee target/rust-tests.log
rust=$(awk '/^test result:/ {n += $4} END {print n + 0}' target/rust-tests.log)

log "make up stopped and started again, six times (one of them a crash), on the debug binaries"
UP_PROFILE=debug bash scripts/up-restart-test.sh 6

log "chaos, short: ~36 orders while the worker, the API and Temporal crash; checks money, views, riders, notifications"
bash scripts/chaos.sh --short

log "API fuzz run from the OpenAPI document: no server error, no undocumented status or media type"
bash scripts/fuzz.sh

log "browser test: starting a stack"
bash scripts/browser-test.sh 2>&1 | tee target/browser-tests.log
browser=$(awk '/^# pass / {n += $3} END {print n + 0}' target/browser-tests.log)

log "benchmark smoke run (asserts the summary's shape and that nothing is lost, never a timing)"
bash scripts/bench.sh --smoke

log "benchmark smoke run, scaled: 2 APIs and 2 workers per context on Postgres, one of each killed midway; the chaos run's checks, and both of each pair served"
BENCH_TOPOLOGY=scaled bash scripts/bench.sh --smoke

log "all tests passed in $((SECONDS - started)) s: $rust Rust, $browser browser, 1 restart loop, 1 chaos run, 1 API fuzz run, 2 benchmark smokes (one process for everything, scaled)"
echo "tests: $((rust + browser + 5)) passed, 0 failed"
