#!/usr/bin/env bash
# Checks a compose file (default: temporal-compose.yml) without starting it:
#   1. `docker-compose config -q` accepts it;
#   2. every environment variable set on a baedal service (api, paysim,
#      worker-*) is one its binary reads: the names passed to the config lookup
#      in activities/src/config.rs (get/dur/num/flag) or to std::env::var in the
#      binary's own sources, plus RUST_LOG;
#   3. every worker service's --context names real contexts (workflows/src/lib.rs)
#      and each of them has a worker service.
# Exits non-zero, naming each problem.
#
#   scripts/compose-check.sh [compose-file]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

repo=$PWD
compose_file=${1:-temporal-compose.yml}
[ -f "$compose_file" ] || { log "compose-check: no file $compose_file"; exit 2; }
compose_file=$(cd "$(dirname "$compose_file")" && pwd)/$(basename "$compose_file")

# Sets COMPOSE to a docker-compose command: docker-compose on PATH, else the
# `docker compose` plugin, else Debian's docker-compose installed as root.
ensure_docker_compose() {
  if command -v docker-compose >/dev/null; then
    COMPOSE=(docker-compose)
  elif command -v docker >/dev/null && docker compose version >/dev/null 2>&1; then
    COMPOSE=(docker compose)
  elif [ "$(id -u)" = 0 ] && [ -f /etc/debian_version ] && command -v apt-get >/dev/null; then
    log "installing Debian's docker-compose (to validate the compose file)"
    apt-get update -qq >/dev/null || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null || true
    hash -r
    command -v docker-compose >/dev/null && COMPOSE=(docker-compose)
  fi
  if [ -z "${COMPOSE+x}" ]; then
    log "docker-compose not found: install it (Debian: apt-get install docker-compose) or the docker compose plugin"
    return 1
  fi
  log "using $("${COMPOSE[@]}" version --short 2>/dev/null || "${COMPOSE[@]}" --version) (${COMPOSE[*]})"
}

# Sets PY to a python3 that has PyYAML (Debian's docker-compose brings python3-yaml).
ensure_pyyaml() {
  local candidate
  for candidate in python3 /usr/bin/python3; do
    if command -v "$candidate" >/dev/null && "$candidate" -c 'import yaml' 2>/dev/null; then
      PY=$candidate
      return 0
    fi
  done
  log "no python3 with PyYAML found: install it (Debian: apt-get install python3-yaml)"
  return 1
}

ensure_docker_compose
ensure_pyyaml

normalized=$(mktemp)
trap 'rm -f "$normalized"' EXIT

# Relative paths in the file (build context, ./deploy mounts) are the repo's,
# wherever the file being checked lives.
log "compose-check: docker-compose config -q on $compose_file"
if ! "${COMPOSE[@]}" -f "$compose_file" --project-directory "$repo" config -q; then
  log "compose-check: FAILED: docker-compose does not accept $compose_file"
  exit 1
fi
"${COMPOSE[@]}" -f "$compose_file" --project-directory "$repo" config >"$normalized"

"$PY" - "$repo" "$normalized" <<'PY'
import pathlib
import re
import shlex
import sys

import yaml

repo = pathlib.Path(sys.argv[1])
config = yaml.safe_load(open(sys.argv[2])) or {}
services = config.get("services") or {}

# Names passed to the config lookup (get/dur/num/flag in config.rs) or to
# std::env::var / var_os.
LOOKUP = re.compile(r'\b(?:get|dur|num|flag|var|var_os)\(\s*"([A-Z][A-Z0-9_]*)"')


def read_in(*paths):
    names = set()
    for rel in paths:
        p = repo / rel
        files = [p] if p.is_file() else sorted(p.rglob("*.rs"))
        for f in files:
            names.update(LOOKUP.findall(f.read_text()))
    return names


config_rs = read_in("activities/src/config.rs")
if not config_rs:
    sys.exit("compose-check: found no variable names in activities/src/config.rs: has its lookup changed?")
# RUST_LOG: tracing's EnvFilter::try_from_default_env in every main.rs.
reads = {
    # The gateway links the worker crate (its Temporal client and codec).
    "baedal-api": config_rs | read_in("api/src", "worker/src") | {"RUST_LOG"},
    "baedal-worker": config_rs | read_in("worker/src") | {"RUST_LOG"},
    "baedal-paysim": read_in("paysim/src") | {"RUST_LOG"},
}

lib_rs = (repo / "workflows/src/lib.rs").read_text()
contexts = re.findall(r'Context::[A-Za-z]+\s*=>\s*"([a-z]+)"', lib_rs)
if not contexts:
    sys.exit("compose-check: found no contexts in workflows/src/lib.rs (Context::name)")
contexts = list(dict.fromkeys(contexts))


def as_list(command):
    if command is None:
        return []
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]


def env_names(environment):
    if not environment:
        return []
    if isinstance(environment, dict):
        return list(environment)
    return [str(e).split("=", 1)[0] for e in environment]


baedal_image = (services.get("api") or {}).get("image")
problems = []
covered = {}
checked = 0
for name, svc in sorted(services.items()):
    svc = svc or {}
    is_baedal = name in ("api", "paysim") or name.startswith("worker-") or (
        baedal_image is not None and svc.get("image") == baedal_image
    )
    if not is_baedal:
        continue
    checked += 1
    command = as_list(svc.get("command")) or ["baedal-api"]  # the image's CMD
    binary = pathlib.PurePath(command[0]).name
    if binary not in reads:
        problems.append(f"service {name} runs {command[0]!r}, not one of {', '.join(sorted(reads))}")
        continue
    for var in env_names(svc.get("environment")):
        if var not in reads[binary]:
            problems.append(f"service {name} sets {var}, which {binary} does not read")
    if binary != "baedal-worker":
        if name.startswith("worker-"):
            problems.append(f"service {name} runs {binary}, not baedal-worker")
        continue
    lists = []
    args = command[1:]
    for i, arg in enumerate(args):
        if arg in ("--context", "--contexts"):
            if i + 1 < len(args):
                lists.append(args[i + 1])
            else:
                problems.append(f"service {name}: {arg} without a list")
        elif arg.startswith("--context="):
            lists.append(arg.split("=", 1)[1])
    if not lists:
        problems.append(f"service {name} runs baedal-worker without --context (it would run every context)")
    for part in ",".join(lists).split(","):
        ctx = part.strip()
        if not ctx:
            continue
        if ctx in contexts:
            covered.setdefault(ctx, []).append(name)
        else:
            problems.append(f"service {name}: --context {ctx!r} is not a context ({', '.join(contexts)})")

for ctx in contexts:
    if ctx not in covered:
        problems.append(f"no worker service runs context {ctx!r}")

if checked == 0:
    problems.append("no baedal service (api, paysim, worker-*) in the file")

if problems:
    for p in problems:
        print(f"compose-check: {p}", file=sys.stderr)
    print(f"compose-check: FAILED ({len(problems)} problem(s))", file=sys.stderr)
    sys.exit(1)
for ctx in contexts:
    print(f"compose-check: context {ctx}: {', '.join(covered[ctx])}", file=sys.stderr)
print(f"compose-check: ok: {checked} baedal services, every variable read by its binary", file=sys.stderr)
PY
