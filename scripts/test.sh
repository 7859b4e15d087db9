#!/usr/bin/env bash
# Runs the test layers, installing and starting what each needs first (idempotent; slow results
# are cached under $PG_CLUSTER_CACHE). Usage: scripts/test.sh [static|unit|integration|e2e|faults|all]...
# Every layer runs for real or fails saying what is missing: nothing is skipped silently.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib.sh
source scripts/lib.sh

layers=("$@")
[ "${#layers[@]}" -gt 0 ] || layers=(all)
[ "${layers[*]}" != all ] || layers=(static unit integration e2e faults)

bash scripts/provision-node-deps.sh

passed=0 failed=0
# run_layer NAME COMMAND... — runs one node:test layer and adds its counts to the totals.
run_layer() {
  local name="$1" out status=0
  shift
  out="$(mktemp)"
  log "layer $name: $*"
  "$@" 2>&1 | tee "$out" || status=$?
  local p f
  p="$(sed -n 's/^# pass \([0-9]*\)$/\1/p' "$out" | tail -n1)"
  f="$(sed -n 's/^# fail \([0-9]*\)$/\1/p' "$out" | tail -n1)"
  rm -f "$out"
  [ -n "$p" ] || die "layer $name printed no test summary (exit $status): it did not run."
  [ "$p" -gt 0 ] || die "layer $name ran no test."
  passed=$((passed + p))
  failed=$((failed + ${f:-0}))
  [ "$status" = 0 ] || log "layer $name FAILED (exit $status)"
  layer_status=$((layer_status + status))
}
layer_status=0
node_test=(node --import tsx --test --test-reporter=tap)

for layer in "${layers[@]}"; do
  case "$layer" in
    static)
      log "static checks: tsc --noEmit, eslint, prettier --check"
      npx tsc --noEmit -p . || layer_status=$((layer_status + 1))
      npx eslint . || layer_status=$((layer_status + 1))
      npx prettier --check . >/dev/null || { npx prettier --check . || true; layer_status=$((layer_status + 1)); }
      ;;
    unit)
      run_layer unit "${node_test[@]}" --test-concurrency=1 tests/unit/*.test.ts
      ;;
    integration)
      # Real PostgreSQL server processes on loopback, started by the tests from assets/.
      need_root "the integration layer (it runs the entrypoints as root, as Docker does)"
      apt_install postgresql-15
      run_layer integration "${node_test[@]}" --test-concurrency=1 tests/integration/*.test.ts
      ;;
    e2e | faults)
      bash scripts/provision-docker.sh
      # Stops, naming what is missing and its log, unless the CLI and both provider plugins are there.
      bash scripts/provision-toolchain.sh
      # shellcheck source=env.sh
      source scripts/env.sh
      # e2e runs on every PostgreSQL major we build images for; the fault layer on the first.
      read -ra majors <<<"${PG_CLUSTER_E2E_MAJORS:-15 17}"
      # Every major's image and the router's exist either way: the fault layer swaps majors (the
      # version guard). psql (libpq 15) is a client in the switchover and security tests.
      for image in "${majors[@]}" router; do bash scripts/provision-image.sh --local "$image" >/dev/null; done
      apt_install postgresql-client-15
      if [ "$layer" = e2e ]; then
        # The pgAdmin test: its image, and a real browser (Debian's chromium, by playwright-core).
        bash scripts/provision-image.sh --local pgadmin >/dev/null
        apt_install chromium
      fi
      [ "$layer" = e2e ] || majors=("${majors[0]}")
      for major in "${majors[@]}"; do
        export PG_CLUSTER_E2E_IMAGE="pg-cluster-postgres:$major"
        # One file at a time: two at once saved only 1.4 of 8.6 minutes on 2 cores, and the load
        # made the roll test's read-only client miss one query (docs/design/changes-without-outage.md).
        run_layer "$layer (PostgreSQL $major)" "${node_test[@]}" --test-concurrency=1 \
          tests/"$layer"/*.test.ts
      done
      ;;
    *) die "unknown test layer '$layer' (static, unit, integration, e2e, faults, all)" ;;
  esac
done

echo "${passed} passed, ${failed} failed"
[ "$layer_status" = 0 ] && [ "$failed" = 0 ]
