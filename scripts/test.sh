#!/usr/bin/env bash
# Runs the test layers, installing and starting what each needs first (idempotent; slow results
# are cached under $PG_CLUSTER_CACHE). Usage: scripts/test.sh [static|unit|integration|e2e|faults|all]...
# Every layer runs for real or fails saying what is missing: nothing is skipped silently.
#
# `all` prepares everything first (packages, Docker, the toolchain, images), then runs the layers
# in three groups, each group's layers at once, to keep CI within its time budget on 2 cores:
# static + unit + integration (no Docker) + hosts (its own engines), then the e2e passes of every PostgreSQL major, then the
# fault layer alone (it stops the Docker engine). A layer's output is printed when it ends.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib.sh
source scripts/lib.sh

layers=("$@")
[ "${#layers[@]}" -gt 0 ] || layers=(all)
[ "${layers[*]}" != all ] || layers=(static unit integration hosts e2e faults)

bash scripts/provision-node-deps.sh

node_test=(node --import tsx --test --test-reporter=tap)
# e2e runs on every PostgreSQL major we build images for; the fault layer on the first.
read -ra majors <<<"${PG_CLUSTER_E2E_MAJORS:-15 17}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# prepare LAYER — installs and starts what LAYER needs (one layer at a time: apt has one lock).
prepare() {
  case "$1" in
    static | unit) ;;
    integration)
      # Real PostgreSQL server processes on loopback, started by the tests from assets/.
      need_root "the integration layer (it runs the entrypoints as root, as Docker does)"
      apt_install postgresql-15 pgbackrest
      ;;
    hosts)
      # Engines in network namespaces (scripts/hosts.sh), each loaded from the main engine with
      # the node and router images; a real `pulumi up` places a cluster across them.
      need_root "the multi-host layer (network namespaces, dockerd)"
      bash scripts/provision-docker.sh
      bash scripts/provision-toolchain.sh
      local image
      for image in "${majors[0]}" router; do bash scripts/provision-image.sh --local "$image" >/dev/null; done
      ;;
    e2e | faults)
      bash scripts/provision-docker.sh
      # Stops, naming what is missing and its log, unless the CLI and both provider plugins are there.
      bash scripts/provision-toolchain.sh
      # Every major's image and the router's exist either way: the fault layer swaps majors (the
      # version guard). psql (libpq 15) is a client in the switchover and security tests.
      local image
      for image in "${majors[@]}" router; do bash scripts/provision-image.sh --local "$image" >/dev/null; done
      apt_install postgresql-client-15
      if [ "$1" = e2e ]; then
        # The pgAdmin test: its image, and a real browser (Debian's chromium, by playwright-core).
        bash scripts/provision-image.sh --local pgadmin >/dev/null
        apt_install chromium
      fi
      ;;
    *) die "unknown test layer '$1' (static, unit, integration, hosts, e2e, faults, all)" ;;
  esac
}

# start NAME COMMAND... — runs one layer's command in the background, its output to a file.
start() {
  local name="$1"
  shift
  log "layer $name: $*"
  # set +e: a failing layer must still record its status (errexit would end the subshell first).
  (
    set +e
    "$@" >"$work/$name.out" 2>&1
    echo $? >"$work/$name.status"
  ) &
  echo "$name" >>"$work/started"
}

passed=0 failed=0 layer_status=0
# finish — waits for every started layer, prints each one's output in turn and adds its counts
# to the totals (a node:test layer must print its summary and have run a test).
finish() {
  wait
  local name status p f
  while read -r name; do
    status="$(cat "$work/$name.status")"
    log "layer $name ended (exit $status):"
    cat "$work/$name.out"
    layer_status=$((layer_status + status))
    [ "$name" != static ] || continue
    p="$(sed -n 's/^# pass \([0-9]*\)$/\1/p' "$work/$name.out" | tail -n1)"
    f="$(sed -n 's/^# fail \([0-9]*\)$/\1/p' "$work/$name.out" | tail -n1)"
    [ -n "$p" ] || die "layer $name printed no test summary (exit $status): it did not run."
    [ "$p" -gt 0 ] || die "layer $name ran no test."
    passed=$((passed + p))
    failed=$((failed + ${f:-0}))
    [ "$status" = 0 ] || log "layer $name FAILED (exit $status)"
  done <"$work/started"
  rm -f "$work/started"
}

static_checks() {
  local status=0
  npx tsc --noEmit -p . || status=1
  npx eslint . || status=1
  npx prettier --check . >/dev/null || { npx prettier --check . || true; status=1; }
  return "$status"
}

# longest_first FILE... — the files, those that took longest in CI first (node --test starts files
# in the order given as slots free up), then the rest in the order given.
longest_first() {
  # As timed in CI on 2026-11-27, session 11 (s, three at a time): switchover 392, roll 309,
  # faults 237, upgrade 221, recovery 195, cluster 186, bad input 185, pgadmin 160, cli 121,
  # example 93.
  local slow=(e2e/switchover e2e/roll faults/faults e2e/upgrade faults/recovery e2e/cluster
    faults/badInput e2e/pgadmin e2e/cli e2e/example) f s
  for s in "${slow[@]}"; do
    for f in "$@"; do [ "$f" != "tests/$s.test.ts" ] || echo "$f"; done
  done
  for f in "$@"; do
    s="${f#tests/}"
    case " ${slow[*]} " in *" ${s%.test.ts} "*) ;; *) echo "$f" ;; esac
  done
}

# run_layer LAYER — starts LAYER's runs (the e2e layer: one per major, at once; e2e+faults: both
# layers' first-major files in one run).
run_layer() {
  case "$1" in
    static) start static static_checks ;;
    unit) start unit "${node_test[@]}" --test-concurrency=1 tests/unit/*.test.ts ;;
    integration) start integration "${node_test[@]}" --test-concurrency=1 tests/integration/*.test.ts ;;
    hosts)
      # The test brings the hosts up and down; the trap is the backstop should it be killed.
      trap 'bash scripts/hosts.sh down >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
      # shellcheck source=env.sh
      source scripts/env.sh
      start hosts env PG_CLUSTER_E2E_IMAGE="pg-cluster-postgres:${majors[0]}" \
        "${node_test[@]}" --test-concurrency=1 tests/hosts/*.test.ts
      ;;
    e2e | faults | e2e+faults)
      # shellcheck source=env.sh
      source scripts/env.sh
      local first=1 major files
      for major in "${majors[@]}"; do
        if [ "$first" = 1 ]; then
          # The first major's pass and the fault files (which kill nodes and fill disks on their
          # own stacks, each file one suite at a time): one run, three files at a time (each has
          # its own stack, ports and network), the longest first so none starts last. The
          # engine-down test (faults/engine.test.ts) is run_layer faults-engine, alone.
          files=()
          [ "$1" = faults ] || files+=(tests/e2e/*.test.ts)
          [ "$1" = e2e ] || files+=(tests/faults/faults.test.ts tests/faults/recovery.test.ts tests/faults/badInput.test.ts)
          mapfile -t files < <(longest_first "${files[@]}")
          start "$1-pg$major" env PG_CLUSTER_E2E_IMAGE="pg-cluster-postgres:$major" \
            "${node_test[@]}" --test-concurrency=3 "${files[@]}"
        fi
        first=0
      done
      ;;
    e2e-later)
      # Later majors run what depends on the server's major (most files announce themselves
      # and skip on a later major), in the first group: its layers leave the CPU idle at times
      # (the integration layer waits on real servers), the e2e group does not.
      # shellcheck source=env.sh
      source scripts/env.sh
      local major
      for major in "${majors[@]:1}"; do
        start "e2e-pg$major" env PG_CLUSTER_E2E_IMAGE="pg-cluster-postgres:$major" \
          "${node_test[@]}" --test-concurrency=1 tests/e2e/*.test.ts
      done
      ;;
    faults-engine)
      start "faults-engine-pg${majors[0]}" env PG_CLUSTER_E2E_IMAGE="pg-cluster-postgres:${majors[0]}" \
        "${node_test[@]}" --test-concurrency=1 tests/faults/engine.test.ts
      ;;
  esac
}

for layer in "${layers[@]}"; do prepare "$layer"; done
# Three groups, each group's layers at once: those that need no engine (and the hosts layer,
# which has its own, and the e2e passes of later majors); the first major's e2e pass and the
# fault layer; then the one test that stops the engine.
later=()
[[ " ${layers[*]} " != *" e2e "* ]] || [ "${#majors[@]}" -lt 2 ] || later=(e2e-later)
for group in "static unit integration hosts e2e-later" "e2e faults" "faults-engine"; do
  # Both e2e and faults asked for: one run of their first-major files (see run_layer).
  if [ "$group" = "e2e faults" ] && [[ " ${layers[*]} " == *" e2e "* ]] &&
    [[ " ${layers[*]} " == *" faults "* ]]; then
    group="e2e+faults"
  fi
  for layer in "${layers[@]}" e2e+faults "${later[@]}"; do
    [ "$layer" != faults ] || [ "$group" != faults-engine ] || layer=faults-engine
    case " $group " in *" $layer "*) run_layer "$layer" ;; esac
  done
  [ ! -s "$work/started" ] || finish
done

echo "${passed} passed, ${failed} failed"
[ "$layer_status" = 0 ] && [ "$failed" = 0 ]
