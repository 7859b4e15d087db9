#!/usr/bin/env bash
# `npm run bench`: provisions what the benchmark needs, then runs bench/bench.ts (see its header).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib.sh
source scripts/lib.sh
bash scripts/provision-node-deps.sh
bash scripts/provision-docker.sh --compose
apt_install postgresql-15
bash scripts/provision-image.sh --local 15 >/dev/null
bash scripts/provision-image.sh --local router >/dev/null
bash scripts/provision-toolchain.sh
# shellcheck source=env.sh
source scripts/env.sh
exec node --import tsx bench/bench.ts
