#!/usr/bin/env bash
# Fuzzes the API from its own OpenAPI document (schemathesis, from PyPI) as a
# logged-in customer against a stack of debug binaries with its own dev server,
# data directory and ports: no answer may be a server error, nor a status code
# or media type the document does not list for that operation.
#   FUZZ_EXAMPLES (default 20 per operation and phase), FUZZ_SEED (default fixed)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
trap stop_all EXIT
ensure_temporal
ensure_schemathesis
data=$(mktemp -d)
export DATABASE_URL="sqlite:$data"
export HTTP_ADDR=127.0.0.1:28080 PAYSIM_ADDR=127.0.0.1:28090
unset PAYMENT_GATEWAY_URL BAEDAL_CONTEXTS NATS_URL
export RUST_LOG=${RUST_LOG:-error} BAEDAL_DEMO=1
start_temporal_dev - 27233 28233 headless
start_nats 27422 "$data/nats"
start_stack target/debug
token=$(curl -fsS -H 'content-type: application/json' \
  -d '{"username":"customer1","password":"demo"}' "http://$HTTP_ADDR/api/auth/login" |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])')
log "fuzzing http://$HTTP_ADDR/api/openapi.json as customer1"
mkdir -p target/fuzz
schemathesis --no-color run "http://$HTTP_ADDR/api/openapi.json" \
  --header "Authorization: Bearer $token" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance \
  --phases examples,coverage,fuzzing \
  --max-examples "${FUZZ_EXAMPLES:-20}" \
  --seed "${FUZZ_SEED:-20261202}" \
  --report junit --report-dir target/fuzz \
  --request-timeout 30
rm -rf "$data"
