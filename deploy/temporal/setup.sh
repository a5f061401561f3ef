#!/usr/bin/env bash
# One-shot set-up of the Temporal namespace baedal uses (temporal-compose.yml,
# service temporal-setup): waits for the namespace auto-setup creates, registers
# the search attributes the order workflow sets, and waits until the frontend
# accepts them in a query. Safe to run again.
set -euo pipefail
ns=${TEMPORAL_NAMESPACE:-default}
attrs=(OrderStatus ShopId CustomerId RiderId RefundStatus)

# wait_for <what> <tries> <command...>: runs the command every 2 s until it succeeds.
wait_for() {
  local what=$1 tries=$2
  shift 2
  for ((i = 1; i <= tries; i++)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 2
  done
  echo "temporal-setup: gave up waiting for $what" >&2
  return 1
}

echo "temporal-setup: namespace $ns on $TEMPORAL_ADDRESS"
wait_for "namespace $ns" 90 temporal operator namespace describe --namespace "$ns"

listed=$(temporal operator search-attribute list --namespace "$ns")
for name in "${attrs[@]}"; do
  if grep -qw "$name" <<<"$listed"; then
    echo "temporal-setup: search attribute $name already registered"
  else
    temporal operator search-attribute create --namespace "$ns" --name "$name" --type Keyword
    echo "temporal-setup: registered search attribute $name (Keyword)"
  fi
done

# The frontend caches search attributes: a workflow started before it knows
# them would be refused. A query naming all of them succeeds once it does.
query=$(printf '%s="" AND ' "${attrs[@]}")
query=${query% AND }
wait_for "the frontend to accept the search attributes" 90 \
  temporal workflow list --namespace "$ns" --query "$query" --limit 1
echo "temporal-setup: done"
