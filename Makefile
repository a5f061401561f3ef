.PHONY: up test bench chaos fuzz fmt lint record-histories clean-data

up:            ## build and run everything (web on :8080, Temporal Web UI on :8233)
	bash scripts/up.sh

test:          ## every test: unit, end-to-end, replay, browser, benchmark smokes (one process, scaled)
	bash scripts/test.sh

bench:         ## the benchmark (figures in BENCHMARKS.md); BENCH_TOPOLOGY=scaled: 2 APIs, 2 workers per context on Postgres, one of each killed midway
	bash scripts/bench.sh

fuzz:          ## schemathesis over /api/openapi.json as a customer: no 5xx, no undocumented status
	bash scripts/fuzz.sh

chaos:         ## 200 orders while the worker, API and Temporal crash; checks money, read models, notifications (RELIABILITY.md)
	bash scripts/chaos.sh

fmt:
	cargo fmt --all

lint:
	cargo clippy --all-targets -- -D warnings

record-histories:  ## re-record tests/histories/*.json from real runs
	RECORD_HISTORIES=1 TEMPORAL_BIN=$${TEMPORAL_BIN:-$$(command -v temporal)} cargo test -p baedal-tests --test order_flow --test saga_paths --test races --test operator

clean-data:
	rm -rf ./data
